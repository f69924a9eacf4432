/*
 * clip-sysinfo's UEFI side: what the firmware and the boot loader say about this boot (clip-efi.c), and
 * blessing the booted entry once the boot check passed (clip-bless.c).
 */
#ifndef CLIP_EFI_H
#define CLIP_EFI_H

#include <stddef.h>

/* The paths are the system's; tests compile them elsewhere (-DEFI_DIR=...). */
#ifndef EFI_DIR
#define EFI_DIR "/sys/firmware/efi"
#endif
#define EFIVARS EFI_DIR "/efivars"
#define EFI_GLOBAL "8be4df61-93ca-11d2-aa0d-00e098032b8c" /* the UEFI specification's variables */
#define EFI_LOADER "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f" /* systemd-boot's (the Boot Loader Interface) */

/* 1 when the kernel was started by UEFI firmware (the kernel then shows /sys/firmware/efi), else 0. */
int efi_booted(void);

/* 1 when efivarfs is mounted on EFIVARS (its filesystem magic), else 0: without it every variable would read
 * as absent. */
int efivars_mounted(void);

/* The string variable NAME-GUID (UTF-16LE, as systemd-boot writes it) as ASCII in `out`: every character must
 * be in `allowed`, at most len - 1 of them, nothing after a terminating NUL. Returns 0, or -ENOENT when the
 * variable does not exist, -EINVAL when it is not such a string (refused), another -errno when it cannot be
 * read. */
int efi_var_string(const char *name, const char *guid, const char *allowed, char *out, size_t len);

/* Prints the line
 *   CLIP_UEFI firmware=uefi|bios secureboot=0|1|- setupmode=0|1|- lockdown=none|integrity|confidentiality|-
 *             entry=ID|- pcr4=HEX|- pcr7=HEX|- pcr11=HEX|-
 * on stdout, "-" for what this boot does not provide (BIOS, no TPM) or what is not well formed; a refused
 * value is also named on stderr. */
void efi_report(void);

/* Blesses the entry systemd-boot booted with a boot counter (LoaderBootCountPath): renames
 * \EFI\Linux\NAME+LEFT[-DONE].efi to NAME.efi on the ESP (GPT label "boot", on the disk the root was opened
 * from), as systemd-bless-boot does, and prints "CLIP_BLESSED OLD -> NEW", "CLIP_BLESSED none (no boot counter)" or "CLIP_BLESS_FAILED WHY". Call it
 * only once the boot was found good. Returns 0 when blessed or nothing to bless, -1 when it failed. */
int bless_boot(void);

#endif
