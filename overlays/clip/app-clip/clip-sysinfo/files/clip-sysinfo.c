/*
 * clip-sysinfo: say what a CLIP system booted, and check that it booted the way CLIP requires.
 *
 * Prints one line: species and version (/etc/shared/clip-release), the A/B slot (clip.slot= on the kernel
 * command line), whether / is mounted read-only and from which device, the device-mapper target under / and
 * its state (asked from the kernel with the DM_TABLE_STATUS ioctl: "verity" and "V" when every block read so
 * far matched the hash tree, "C" once one did not), the verity root hash, and the number of jails configured
 * under /etc/jails, and the version of the zlib it runs with (libz.so.1, loaded from the system by musl's
 * dynamic loader). With --check it exits 1 unless the root is read-only on an intact verity target, the slot
 * is known, jails are configured, the zlib loaded is the one it was built against and every package self-test
 * clip-selftest ran at boot passed (its summary, /run/clip/selftest/summary, must exist and list no failure),
 * and every configured jail is either running and proven from inside or rendered idle (clip-jails' summary,
 * /run/clip/jails/summary); it prints CLIP_BOOT_OK when all holds, with the number of self-tests passed, the
 * jails proven out of those configured (jails=7/8) and the KEY=VALUE words the tests
 * asked for (/run/clip/selftest/marker, e.g. the IPsec stack), else CLIP_BOOT_FAILED and why.
 *
 * Before the marker it prints the boot path's proof, the CLIP_UEFI line (firmware, Secure Boot, lockdown, the
 * entry systemd-boot booted, TPM PCRs: clip-efi.c). With --check, once every check passed and before
 * CLIP_BOOT_OK, it blesses the entry systemd-boot is counting tries of (clip-bless.c) and prints CLIP_BLESSED
 * or CLIP_BLESS_FAILED: a failure to bless is shown but does not fail a good boot.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "clip-efi.h"

#define LINE 4096

static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static void cmdline_value(const char *key, char *out, size_t len)
{
	char cmdline[LINE];
	size_t klen = strlen(key);
	snprintf(out, len, "unknown");
	if (read_line("/proc/cmdline", cmdline, sizeof(cmdline)) != 0)
		return;
	for (char *save = NULL, *tok = strtok_r(cmdline, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (strncmp(tok, key, klen) == 0 && tok[klen] == '=')
			snprintf(out, len, "%s", tok + klen + 1);
	}
}

/* Finds the mount of "/" in /proc/mounts: its device and whether "ro" is among its options. */
static int root_mount(char *device, size_t len, int *read_only)
{
	char line[LINE];
	int found = -1;
	FILE *f = fopen("/proc/mounts", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char dev[LINE], dir[LINE], type[256], opts[LINE];
		if (sscanf(line, "%4095s %4095s %255s %4095s", dev, dir, type, opts) != 4 || strcmp(dir, "/") != 0)
			continue;
		snprintf(device, len, "%s", dev);
		*read_only = strncmp(opts, "ro", 2) == 0 && (opts[2] == ',' || opts[2] == '\0');
		found = 0; /* the last mount on / wins, as the kernel shows it */
	}
	fclose(f);
	return found;
}

/* The first device-mapper target of the device holding "/": its type, and its status (table == 0) or its
 * table line (table == 1). */
static int dm_root(int table, char *type, size_t tlen, char *text, size_t len)
{
	union {
		struct dm_ioctl io;
		char buf[16384];
	} u;
	struct stat st;
	if (stat("/", &st) != 0)
		return -1;
	int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	memset(&u, 0, sizeof(u));
	u.io.version[0] = DM_VERSION_MAJOR;
	u.io.data_size = sizeof(u);
	u.io.data_start = sizeof(struct dm_ioctl);
	u.io.dev = st.st_dev;
	u.io.flags = table ? DM_STATUS_TABLE_FLAG : 0;
	int rc = ioctl(fd, DM_TABLE_STATUS, &u.io);
	close(fd);
	if (rc != 0 || u.io.target_count < 1 || (u.io.flags & DM_BUFFER_FULL_FLAG))
		return -1;
	struct dm_target_spec *spec = (struct dm_target_spec *)(u.buf + u.io.data_start);
	snprintf(type, tlen, "%.*s", DM_MAX_TYPE_NAME, spec->target_type);
	snprintf(text, len, "%s", (char *)(spec + 1));
	return 0;
}

/* The verity root hash: the 9th word of the table line (version data hash dbs hbs blocks start alg HASH). */
static void verity_root_hash(char *out, size_t len)
{
	char type[DM_MAX_TYPE_NAME + 1], table[LINE];
	snprintf(out, len, "none");
	if (dm_root(1, type, sizeof(type), table, sizeof(table)) != 0 || strcmp(type, "verity") != 0)
		return;
	char *save = NULL, *tok = strtok_r(table, " ", &save);
	for (int i = 0; tok && i < 8; i++)
		tok = strtok_r(NULL, " ", &save);
	if (tok)
		snprintf(out, len, "%s", tok);
}

static int count_jails(void)
{
	int n = 0;
	DIR *d = opendir("/etc/jails");
	if (!d)
		return 0;
	for (struct dirent *e = readdir(d); e; e = readdir(d))
		if (e->d_name[0] != '.' && e->d_type == DT_DIR)
			n++;
	closedir(d);
	return n;
}

#define JAILS_SUMMARY "/run/clip/jails/summary"

/* Reads clip-jails' summary: the number of jails running and proven from inside ("ok NAME"), with *idle the
 * number rendered but not started ("idle NAME"); -1 with `why` set when the summary is missing, names a failed
 * jail, or does not account for every configured jail. */
static int jails_proven(int configured, int *idle, char *why, size_t len)
{
	char line[LINE];
	int ok = 0;
	*idle = 0;
	FILE *f = fopen(JAILS_SUMMARY, "re");
	if (!f) {
		snprintf(why, len, "the jails were not started (no %s)", JAILS_SUMMARY);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "ok ", 3) == 0) {
			ok++;
		} else if (strncmp(line, "idle ", 5) == 0) {
			(*idle)++;
		} else {
			if (strncmp(line, "failed ", 7) == 0)
				snprintf(why, len, "jail %.300s", line + 7);
			else
				snprintf(why, len, "%s: unexpected line \"%.200s\"", JAILS_SUMMARY, line);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	if (ok + *idle != configured) {
		snprintf(why, len, "%d jails configured under /etc/jails, %d reported by clip-jails", configured, ok + *idle);
		return -1;
	}
	return ok;
}

#define SELFTEST_DIR "/run/clip/selftest"

/* Reads clip-selftest's summary: the number of tests passed, or -1 with `why` set (no summary: the tests did
 * not run or did not finish; a line "failed NAME"; a line of another form). */
static int selftests_passed(char *why, size_t len)
{
	char line[LINE];
	int passed = 0;
	FILE *f = fopen(SELFTEST_DIR "/summary", "re");
	if (!f) {
		snprintf(why, len, "the package self-tests did not run (no %s/summary)", SELFTEST_DIR);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "ok ", 3) == 0) {
			passed++;
		} else {
			if (strncmp(line, "failed ", 7) == 0)
				snprintf(why, len, "self-test %.200s failed (%s/%.200s.log)", line + 7, SELFTEST_DIR, line + 7);
			else
				snprintf(why, len, "%s/summary: unexpected line \"%.200s\"", SELFTEST_DIR, line);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return passed;
}

/* The words the self-tests asked for in the marker: KEY=VALUE, letters, digits and ._/+:- only, at most 16
 * of them; anything else is dropped (the marker is one line the host parses). */
static void selftest_words(char *out, size_t len)
{
	char line[LINE];
	size_t used = 0;
	int n = 0;
	out[0] = '\0';
	FILE *f = fopen(SELFTEST_DIR "/marker", "re");
	if (!f)
		return;
	while (n < 16 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *eq = strchr(line, '=');
		if (!eq || eq == line || line[strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                                          "0123456789._/+:=-")] != '\0')
			continue;
		int w = snprintf(out + used, len - used, " %s", line);
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
		n++;
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	char release[256] = "unknown", slot[32], device[LINE] = "unknown", target[DM_MAX_TYPE_NAME + 1] = "none";
	char state[LINE] = "-", root_hash[256];
	int read_only = 0, check = argc > 1 && strcmp(argv[1], "--check") == 0;

	if (argc > 1 && !check) {
		fprintf(stderr, "usage: %s [--check]\n", argv[0]);
		return 2;
	}
	read_line("/etc/shared/clip-release", release, sizeof(release));
	cmdline_value("clip.slot", slot, sizeof(slot));
	root_mount(device, sizeof(device), &read_only);
	dm_root(0, target, sizeof(target), state, sizeof(state));
	verity_root_hash(root_hash, sizeof(root_hash));
	int jails = count_jails();

	printf("clip-sysinfo: release=\"%s\" slot=%s root=%s device=%s target=%s state=%s roothash=%s jails=%d "
	       "zlib=%s\n", release, slot, read_only ? "ro" : "rw", device, target, state, root_hash, jails, zlibVersion());
	efi_report();
	if (!check)
		return 0;
	const char *why = NULL;
	if (!read_only)
		why = "the root is not read-only";
	else if (strcmp(target, "verity") != 0)
		why = "the root is not on a dm-verity target";
	else if (strcmp(state, "V") != 0)
		why = "dm-verity reports corruption";
	else if (strcmp(slot, "unknown") == 0)
		why = "no clip.slot= on the kernel command line";
	else if (jails == 0)
		why = "no jails under /etc/jails";
	else if (strcmp(zlibVersion(), ZLIB_VERSION) != 0)
		why = "the zlib loaded is not the one clip-sysinfo was built against";
	char selftest_why[LINE] = "", jails_why[LINE] = "", words[LINE];
	int passed = why ? 0 : selftests_passed(selftest_why, sizeof(selftest_why));
	if (passed < 0)
		why = selftest_why;
	int idle = 0, proven = why ? 0 : jails_proven(jails, &idle, jails_why, sizeof(jails_why));
	if (proven < 0)
		why = jails_why;
	if (why) {
		printf("CLIP_BOOT_FAILED %s\n", why);
		return 1;
	}
	selftest_words(words, sizeof(words));
	bless_boot();
	printf("CLIP_BOOT_OK slot=%s release=\"%s\" roothash=%s zlib=%s selftests=%d jails=%d/%d%s\n", slot, release,
	       root_hash, zlibVersion(), passed, proven, jails, words);
	return 0;
}
