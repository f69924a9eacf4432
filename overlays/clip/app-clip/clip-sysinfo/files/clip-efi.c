/*
 * clip-sysinfo's UEFI report, the guest's proof of its boot path: whether UEFI firmware started the kernel,
 * Secure Boot and Setup Mode (UEFI variables, read through efivarfs), the kernel's lockdown mode (securityfs),
 * the entry systemd-boot booted (LoaderEntrySelected) and the TPM's SHA-256 PCRs 4 (the boot loader and the
 * unified kernel image), 7 (the Secure Boot policy) and 11 (the kernel image's sections), which the host
 * compares with the values it predicted offline. Nothing here decides the boot: the host does, from the line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "clip-efi.h"

#define VAR_MAX 1024 /* bytes of a variable read at most: 4 of attributes, then its value */
#define ENTRY_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+._-"
#ifndef LOCKDOWN
#define LOCKDOWN "/sys/kernel/security/lockdown"
#endif
#ifndef PCRS
#define PCRS "/sys/class/tpm/tpm0/pcr-sha256"
#endif
#define HEX "0123456789abcdefABCDEF"
#ifndef EFIVARS_MAGIC
#define EFIVARS_MAGIC 0xde5e81e4 /* efivarfs, linux/magic.h; tests give their scratch filesystem's */
#endif

static void refused(const char *what, const char *why)
{
	fprintf(stderr, "clip-sysinfo uefi: %s: %s\n", what, why);
}

/* Reads the whole of the small file `path` (never through a symbolic link) into buf: its size, or -errno;
 * -EFBIG when it holds more than `cap` bytes. */
static ssize_t read_small(const char *path, unsigned char *buf, size_t cap)
{
	unsigned char extra;
	size_t got = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	while ((n = read(fd, got < cap ? buf + got : &extra, got < cap ? cap - got : 1)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || got == cap) {
			int err = n < 0 ? errno : EFBIG;
			close(fd);
			return -err;
		}
		got += (size_t)n;
	}
	if (close(fd) != 0)
		return -errno;
	return (ssize_t)got;
}

/* The value of the UEFI variable NAME-GUID (efivarfs shows 4 bytes of attributes first), moved to the start
 * of buf: its length, or -errno (-ENOENT: no such variable, or not booted by UEFI). */
static ssize_t efi_var(const char *name, const char *guid, unsigned char *buf, size_t cap)
{
	char path[512];
	int w = snprintf(path, sizeof(path), "%s/%s-%s", EFIVARS, name, guid);
	if (w < 0 || (size_t)w >= sizeof(path))
		return -ENAMETOOLONG;
	ssize_t n = read_small(path, buf, cap);
	if (n < 0)
		return n;
	if (n < 4)
		return -EINVAL;
	memmove(buf, buf + 4, (size_t)n - 4);
	return n - 4;
}

int efi_booted(void)
{
	struct stat st;
	return stat(EFI_DIR, &st) == 0 && S_ISDIR(st.st_mode);
}

int efivars_mounted(void)
{
	struct statfs fs;
	return statfs(EFIVARS, &fs) == 0 && (unsigned long)fs.f_type == (unsigned long)EFIVARS_MAGIC;
}

int efi_var_string(const char *name, const char *guid, const char *allowed, char *out, size_t len)
{
	unsigned char buf[VAR_MAX];
	size_t used = 0;
	out[0] = '\0';
	ssize_t n = efi_var(name, guid, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	if (n == 0 || n % 2 != 0)
		return -EINVAL;
	size_t units = (size_t)n / 2;
	for (size_t i = 0; i < units; i++) {
		unsigned int c = buf[2 * i] | (unsigned int)buf[2 * i + 1] << 8;
		if (c == 0) {
			if (i != units - 1)
				return -EINVAL; /* something after the terminating NUL */
			break;
		}
		if (c > 0x7f || !strchr(allowed, (int)c) || used + 1 >= len)
			return -EINVAL;
		out[used++] = (char)c;
	}
	if (used == 0)
		return -EINVAL;
	out[used] = '\0';
	return 0;
}

/* A boolean UEFI global variable (SecureBoot, SetupMode): '0' or '1', '-' when absent or malformed. */
static char efi_flag(const char *name)
{
	unsigned char buf[VAR_MAX];
	ssize_t n = efi_var(name, EFI_GLOBAL, buf, sizeof(buf));
	if (n == 1 && buf[0] <= 1)
		return buf[0] ? '1' : '0';
	if (n != -ENOENT)
		refused(name, n < 0 ? strerror((int)-n) : "not a one-byte 0 or 1");
	return '-';
}

/* The kernel's lockdown mode, the bracketed word of "none [integrity] confidentiality"; "-" without
 * securityfs or lockdown. */
static void lockdown_mode(char *out, size_t len)
{
	unsigned char buf[128];
	snprintf(out, len, "-");
	ssize_t n = read_small(LOCKDOWN, buf, sizeof(buf) - 1);
	if (n < 0) {
		if (n != -ENOENT)
			refused(LOCKDOWN, strerror((int)-n));
		return;
	}
	buf[n] = '\0';
	char *start = strchr((char *)buf, '['), *end = start ? strchr(start, ']') : NULL;
	if (!end) {
		refused(LOCKDOWN, "no bracketed mode");
		return;
	}
	*end = '\0';
	if (strcmp(start + 1, "none") != 0 && strcmp(start + 1, "integrity") != 0 &&
	    strcmp(start + 1, "confidentiality") != 0) {
		refused(LOCKDOWN, "unknown mode");
		return;
	}
	snprintf(out, len, "%s", start + 1);
}

/* SHA-256 PCR `index` of the first TPM as 64 lower-case hex digits (the kernel prints upper case and a new
 * line); "-" without a TPM. `out` holds at least 65 bytes. */
static void pcr(int index, char *out, size_t len)
{
	char path[512];
	unsigned char buf[80];
	snprintf(out, len, "-");
	if (len < 65 || snprintf(path, sizeof(path), PCRS "/%d", index) >= (int)sizeof(path))
		return;
	ssize_t n = read_small(path, buf, sizeof(buf));
	if (n < 0) {
		if (n != -ENOENT)
			refused(path, strerror((int)-n));
		return;
	}
	if (n != 65 || buf[64] != '\n') {
		refused(path, "not 64 hex digits and a new line");
		return;
	}
	for (int i = 0; i < 64; i++) {
		if (buf[i] == '\0' || !strchr(HEX, buf[i])) {
			refused(path, "not 64 hex digits and a new line");
			return;
		}
		out[i] = (char)(buf[i] >= 'A' && buf[i] <= 'F' ? buf[i] - 'A' + 'a' : buf[i]);
	}
	out[64] = '\0';
}

void efi_report(void)
{
	char entry[256], lockdown[32], pcr4[65], pcr7[65], pcr11[65];
	int uefi = efi_booted(), vars = uefi && efivars_mounted();
	if (uefi && !vars)
		refused(EFIVARS, "efivarfs is not mounted there: no UEFI variable can be read");
	char secureboot = vars ? efi_flag("SecureBoot") : '-', setupmode = vars ? efi_flag("SetupMode") : '-';
	int rc = vars ? efi_var_string("LoaderEntrySelected", EFI_LOADER, ENTRY_CHARS, entry, sizeof(entry)) : -ENOENT;
	if (rc != 0) {
		if (rc != -ENOENT)
			refused("LoaderEntrySelected", rc == -EINVAL ? "refused: not a NUL-terminated UTF-16 string of "
			        "[A-Za-z0-9+._-]" : strerror(-rc));
		snprintf(entry, sizeof(entry), "-");
	}
	lockdown_mode(lockdown, sizeof(lockdown));
	pcr(4, pcr4, sizeof(pcr4));
	pcr(7, pcr7, sizeof(pcr7));
	pcr(11, pcr11, sizeof(pcr11));
	printf("CLIP_UEFI firmware=%s secureboot=%c setupmode=%c lockdown=%s entry=%s pcr4=%s pcr7=%s pcr11=%s\n",
	       uefi ? "uefi" : "bios", secureboot, setupmode, lockdown, entry, pcr4, pcr7, pcr11);
}
