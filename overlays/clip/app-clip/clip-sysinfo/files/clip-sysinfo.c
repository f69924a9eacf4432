/*
 * clip-sysinfo: say what a CLIP system booted, and check that it booted the way CLIP requires.
 *
 * Prints one line: species and version (/etc/shared/clip-release), the A/B slot (clip.slot= on the kernel
 * command line), whether / is mounted read-only and from which device (a device-mapper device for a verity
 * root), and the number of jails configured under /etc/jails. With --check it exits 1 unless the root is
 * read-only on device-mapper and the slot is known, and prints CLIP_BOOT_OK when all holds.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
	char release[256] = "unknown", slot[32], device[LINE] = "unknown";
	int read_only = 0, check = argc > 1 && strcmp(argv[1], "--check") == 0;

	if (argc > 1 && !check) {
		fprintf(stderr, "usage: %s [--check]\n", argv[0]);
		return 2;
	}
	read_line("/etc/shared/clip-release", release, sizeof(release));
	cmdline_value("clip.slot", slot, sizeof(slot));
	root_mount(device, sizeof(device), &read_only);
	int on_dm = strncmp(device, "/dev/dm-", 8) == 0 || strncmp(device, "/dev/mapper/", 12) == 0;

	printf("clip-sysinfo: release=\"%s\" slot=%s root=%s device=%s verity=%s jails=%d\n", release, slot,
	       read_only ? "ro" : "rw", device, on_dm ? "dm" : "none", count_jails());
	if (!check)
		return 0;
	if (!read_only || !on_dm || strcmp(slot, "unknown") == 0) {
		printf("CLIP_BOOT_FAILED\n");
		return 1;
	}
	printf("CLIP_BOOT_OK slot=%s\n", slot);
	return 0;
}
