/*
 * Blessing the booted entry, the good half of boot counting. systemd-boot 252 boots EFI/Linux/clip-b+3-0.efi,
 * renames it clip-b+2-1.efi before starting it and names it in LoaderBootCountPath
 * (\EFI\Linux\clip-b+2-1.efi); an entry whose tries are used up sorts last, so a slot that keeps failing
 * leaves the machine to the other slot. Once clip-sysinfo --check found the boot good, the entry is renamed
 * without its counter (clip-b.efi), as systemd-bless-boot does, and stays the good one.
 *
 * Run by clip-sysinfo --check itself, after every check passed and before the boot marker, rather than by a
 * separate program rcS would start after the check: only the check knows the boot is good, and the host stops
 * the machine as soon as it reads the marker, so the rename must be on the disk and the ESP unmounted by then.
 *
 * The ESP (GPT label "boot", not mounted by fstab) must be on the disk the verity root was opened from (a
 * partition of that label on another disk is never mounted). It is mounted only for the rename, in a mount
 * namespace of its own (no other process sees it), on a fresh 0700 folder under /run, nosuid, nodev, noexec;
 * the rename stays within EFI/Linux, never replaces a file, and the folder is synced before the unmount. On a
 * UEFI boot, efivarfs must be mounted: without it the counter would read as absent, and say nothing to bless.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "clip-efi.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#ifndef ESP_DEVICE
#define ESP_DEVICE "/dev/disk/by-partlabel/boot"
#endif
#ifndef RUN_DIR
#define RUN_DIR "/run"
#endif
#define ENTRIES "EFI/Linux"
#define PREFIX "\\EFI\\Linux\\"
#define PATH_CHARS "\\ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+._-"
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyz0123456789-"
#define DIGITS "0123456789"
#define NAME_MAX_LEN 64 /* characters of NAME at most */
#define COUNT_MAX_LEN 4 /* digits of a counter at most */

/* Formats the reason of a failure into why; returns -1. */
static int reason(char *why, size_t len, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vsnprintf(why, len, format, args);
	va_end(args);
	return -1;
}

/* Splits exactly \EFI\Linux\NAME+LEFT[-DONE].efi (NAME of [a-z0-9-], the counters decimal) into the file name
 * (`old`) and the blessed one, NAME.efi (`new`); -1 for any other form. */
static int parse_counted(const char *path, char *old, size_t olen, char *new, size_t nlen)
{
	if (strncmp(path, PREFIX, strlen(PREFIX)) != 0)
		return -1;
	const char *file = path + strlen(PREFIX);
	size_t name = strspn(file, NAME_CHARS);
	if (name == 0 || name > NAME_MAX_LEN || file[name] != '+')
		return -1;
	const char *p = file + name + 1;
	size_t left = strspn(p, DIGITS);
	if (left == 0 || left > COUNT_MAX_LEN)
		return -1;
	p += left;
	if (*p == '-') {
		size_t done = strspn(p + 1, DIGITS);
		if (done == 0 || done > COUNT_MAX_LEN)
			return -1;
		p += 1 + done;
	}
	if (strcmp(p, ".efi") != 0)
		return -1;
	int w = snprintf(old, olen, "%s", file), v = snprintf(new, nlen, "%.*s.efi", (int)name, file);
	return w < 0 || (size_t)w >= olen || v < 0 || (size_t)v >= nlen ? -1 : 0;
}

/* In the mounted ESP `mnt`: renames EFI/Linux/old (a regular file) to EFI/Linux/new, which must not exist,
 * and syncs the folder. 0, or -1 with `why`. */
static int rename_entry(const char *mnt, const char *old, const char *new, char *why, size_t len)
{
	char dir[512];
	struct stat st;
	int rc = 0;
	if (snprintf(dir, sizeof(dir), "%s/%s", mnt, ENTRIES) >= (int)sizeof(dir))
		return reason(why, len, "%s/%s: path too long", mnt, ENTRIES);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return reason(why, len, "%s on the ESP: %s", ENTRIES, strerror(errno));
	if (fstatat(dfd, old, &st, AT_SYMLINK_NOFOLLOW) != 0)
		rc = reason(why, len, "%s/%s on the ESP: %s", ENTRIES, old, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		rc = reason(why, len, "%s/%s on the ESP is not a regular file", ENTRIES, old);
	else if (syscall(SYS_renameat2, dfd, old, dfd, new, RENAME_NOREPLACE) != 0)
		rc = reason(why, len, "renaming %s/%s to %s: %s", ENTRIES, old, new, strerror(errno));
	else if (fsync(dfd) != 0)
		rc = reason(why, len, "syncing %s after renaming %s to %s: %s", ENTRIES, old, new, strerror(errno));
	if (close(dfd) != 0 && rc == 0)
		rc = reason(why, len, "closing %s: %s", ENTRIES, strerror(errno));
	return rc;
}

/* The whole disk holding the block device whose sysfs folder (or a link to it) is `sysfs`, by its name: vda
 * for vda1 (a partition's folder is in its disk's and holds a file "partition"), vda for vda. 0, or -1. */
static int disk_of(const char *sysfs, char *out, size_t len)
{
	char path[PATH_MAX], partition[PATH_MAX + 16];
	struct stat st;
	if (!realpath(sysfs, path) || snprintf(partition, sizeof(partition), "%s/partition", path) < 0)
		return -1;
	if (stat(partition, &st) == 0) {
		char *slash = strrchr(path, '/');
		if (!slash || slash == path)
			return -1;
		*slash = '\0';
	} else if (errno != ENOENT) {
		return -1;
	}
	const char *name = strrchr(path, '/');
	int w = name ? snprintf(out, len, "%s", name + 1) : -1;
	return w <= 0 || (size_t)w >= len ? -1 : 0;
}

/* Refuses an ESP that is not on the disk the root was opened from (every device under the dm-verity root of
 * /): a partition labelled "boot" on another disk (a USB stick) is never mounted. 0, or -1 with `why`. */
static int on_root_disk(dev_t esp, char *why, size_t len)
{
	char link[64], slaves[96], under[PATH_MAX], disk[NAME_MAX + 1], root_disk[NAME_MAX + 1];
	struct stat st;
	int rc = 0, n = 0;
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", (unsigned int)major(esp), (unsigned int)minor(esp));
	if (disk_of(link, disk, sizeof(disk)) != 0)
		return reason(why, len, "the disk of the ESP %s is not in sysfs (%s)", ESP_DEVICE, link);
	if (stat("/", &st) != 0)
		return reason(why, len, "/: %s", strerror(errno));
	snprintf(slaves, sizeof(slaves), "/sys/dev/block/%u:%u/slaves", (unsigned int)major(st.st_dev),
	         (unsigned int)minor(st.st_dev));
	DIR *d = opendir(slaves);
	if (!d)
		return reason(why, len, "the devices under the root, %s: %s", slaves, strerror(errno));
	for (struct dirent *e = readdir(d); e && rc == 0; e = readdir(d)) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		if (snprintf(under, sizeof(under), "%s/%s", slaves, e->d_name) >= (int)sizeof(under) ||
		    disk_of(under, root_disk, sizeof(root_disk)) != 0)
			rc = reason(why, len, "the disk of %s/%s is not in sysfs", slaves, e->d_name);
		else if (strcmp(disk, root_disk) != 0)
			rc = reason(why, len, "the ESP %s is on disk %s, the root on %s", ESP_DEVICE, disk, root_disk);
	}
	if (closedir(d) != 0 && rc == 0)
		rc = reason(why, len, "closing %s: %s", slaves, strerror(errno));
	if (rc == 0 && n == 0)
		rc = reason(why, len, "no device under the root (%s is empty)", slaves);
	return rc;
}

/* Mounts the ESP on `mnt`, renames the entry, unmounts. 0, or -1 with `why`. */
static int rename_on_esp(const char *mnt, const char *old, const char *new, char *why, size_t len)
{
	struct stat st;
	if (stat(ESP_DEVICE, &st) != 0)
		return reason(why, len, "the ESP %s: %s", ESP_DEVICE, strerror(errno));
	if (!S_ISBLK(st.st_mode))
		return reason(why, len, "the ESP %s is not a block device", ESP_DEVICE);
	if (on_root_disk(st.st_rdev, why, len) != 0)
		return -1;
	if (mount(ESP_DEVICE, mnt, "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME, "umask=0077") != 0)
		return reason(why, len, "mounting the ESP %s: %s", ESP_DEVICE, strerror(errno));
	int rc = rename_entry(mnt, old, new, why, len);
	if (umount2(mnt, UMOUNT_NOFOLLOW) != 0) {
		if (rc == 0)
			rc = reason(why, len, "renamed %s to %s, but unmounting the ESP failed: %s", old, new, strerror(errno));
	}
	return rc;
}

/* Mounts, renames and unmounts in a mount namespace of this process's own, so that the ESP is never visible
 * to any other process (and goes with the process whatever happens). 0, or -1 with `why`. */
static int bless(const char *old, const char *new, char *why, size_t len)
{
	char mnt[] = RUN_DIR "/clip-bless.XXXXXX";
	if (unshare(CLONE_NEWNS) != 0)
		return reason(why, len, "a private mount namespace: %s", strerror(errno));
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return reason(why, len, "making the mounts private: %s", strerror(errno));
	if (!mkdtemp(mnt))
		return reason(why, len, "a folder under %s: %s", RUN_DIR, strerror(errno));
	int rc = rename_on_esp(mnt, old, new, why, len);
	if (rmdir(mnt) != 0 && rc == 0)
		rc = reason(why, len, "renamed %s to %s, but removing %s failed: %s", old, new, mnt, strerror(errno));
	return rc;
}

int bless_boot(void)
{
	char path[256], old[128], new[128], why[512];
	if (!efi_booted()) {
		printf("CLIP_BLESSED none (no boot counter)\n"); /* BIOS */
		return 0;
	}
	if (!efivars_mounted()) {
		printf("CLIP_BLESS_FAILED efivarfs is not mounted on %s: the boot counter cannot be read\n", EFIVARS);
		return -1;
	}
	int rc = efi_var_string("LoaderBootCountPath", EFI_LOADER, PATH_CHARS, path, sizeof(path));
	if (rc == -ENOENT) {
		printf("CLIP_BLESSED none (no boot counter)\n");
		return 0;
	}
	if (rc != 0)
		snprintf(why, sizeof(why), "LoaderBootCountPath: %s", rc == -EINVAL ?
		         "refused: not a NUL-terminated UTF-16 path of [A-Za-z0-9+._-\\]" : strerror(-rc));
	else if (parse_counted(path, old, sizeof(old), new, sizeof(new)) != 0)
		rc = reason(why, sizeof(why), "LoaderBootCountPath %s: refused, not \\EFI\\Linux\\NAME+LEFT[-DONE].efi "
		            "with NAME of [a-z0-9-]", path);
	else
		rc = bless(old, new, why, sizeof(why));
	if (rc != 0) {
		printf("CLIP_BLESS_FAILED %s\n", why);
		return -1;
	}
	printf("CLIP_BLESSED %s -> %s\n", old, new);
	return 0;
}
