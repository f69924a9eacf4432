/* clip-jail: CLIP's jail manager (the role of util-vserver's vsctl), on Linux namespaces.
 * Reads /etc/jails/NAME/ (as rendered by clipbuild), refuses anything it cannot realise exactly (fail closed),
 * and starts, stops, enters, reports on and probes one jail. Only musl, no other library.
 * Usage: clip-jail [--etc DIR] [--run DIR] [--cgroup DIR] NAME check|start|stop|status|enter|probe [-- ARGS]
 * --etc (default /etc), --run (/run/clip/jails), --cgroup (/sys/fs/cgroup/clip-jails) exist so that the unit
 * tests can run jails on the build machine inside a user namespace; the image uses the defaults.
 * Exit: 0 ok, 1 runtime failure, 2 configuration or usage error, 3 not running (status, enter, probe).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MS_NOSYMFOLLOW
#define MS_NOSYMFOLLOW 256
#endif
#ifndef ST_NOSYMFOLLOW
#define ST_NOSYMFOLLOW 0x2000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define CGROUP2_MAGIC 0x63677270
#ifndef CLIP_JAIL_PROBE /* the test suite compiles its own path in */
#define CLIP_JAIL_PROBE "/usr/libexec/clip-jail/probe"
#endif
#define MAXM 32
#define MAXA 4
#define MAXARG 32
#define NCAPS 41 /* Linux 6.1: CAP_CHOWN=0 .. CAP_CHECKPOINT_RESTORE=40 */

static const char *capnames[NCAPS] = {
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE"};

enum { F_FAKEINIT = 1, F_HIDE_MOUNT = 2, F_HIDE_VINFO = 4, F_VIRT_UPTIME = 8 };
enum { N_HIDE_NETIF = 1, N_NO_SP = 2 };
enum { O_PIDNS = 1, O_NETNS = 2 };

struct mnt {
	char src[PATH_MAX], dst[PATH_MAX], data[64];
	const char *file;
	int line, tmpfs, internal;
	unsigned long flags;
};
struct jail {
	char name[33], dir[PATH_MAX], root[PATH_MAX], hostname[64], cmdbuf[1024], *argv[MAXARG + 1];
	char cleanup[16][256];
	int context, naddr, ncleanup, nmnt, hascmd, fl_fakeinit_line;
	uint32_t addr[MAXA], mask[MAXA];
	uint64_t caps;
	unsigned cflags, nflags, nsopts;
	struct mnt m[MAXM]; /* in mount order: root bind, fstab.internal, rest of fstab.external */
	char sshaddr[16];
	int sshport;
};

static const char *etc = "/etc", *run = "/run/clip/jails", *cgdir = "/sys/fs/cgroup/clip-jails";
static const char *jname;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("clip-jail: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}
/* A configuration error: file and line, exit 2. */
#define CFG(j, f, l, ...) cfgerr(j, f, l, __VA_ARGS__)
static void cfgerr(const struct jail *j, const char *f, int l, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
static void cfgerr(const struct jail *j, const char *f, int l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "clip-jail: %s/%s:%d: ", j->dir, f, l);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* Calls fn on every meaningful line of DIR/FILE (not blank, not a # comment); returns -1 if the file is absent. */
typedef void (*linefn)(struct jail *, const char *file, int line, char *text);
static int each_line(struct jail *j, const char *file, linefn fn)
{
	char path[PATH_MAX + 64], buf[4096];
	snprintf(path, sizeof path, "%s/%s", j->dir, file);
	FILE *fp = fopen(path, "re");
	if (!fp) {
		if (errno == ENOENT)
			return -1;
		CFG(j, file, 0, "cannot open: %s", strerror(errno));
	}
	int n = 0;
	while (fgets(buf, sizeof buf, fp)) {
		n++;
		size_t len = strlen(buf);
		if (len && buf[len - 1] == '\n')
			buf[--len] = 0;
		else if (!feof(fp))
			CFG(j, file, n, "line too long (at most %zu bytes)", sizeof buf - 2);
		if (strchr(buf, '\r') || strchr(buf, '\t'))
			CFG(j, file, n, "carriage return or tab (the renderer writes single spaces)");
		if (!len || buf[0] == '#')
			continue;
		fn(j, file, n, buf);
	}
	if (ferror(fp))
		CFG(j, file, n, "read error: %s", strerror(errno));
	fclose(fp);
	return 0;
}

static int one_seen;
static char one_val[1024];
static void l_one(struct jail *j, const char *f, int l, char *t)
{
	if (one_seen++)
		CFG(j, f, l, "more than one line (this file holds one value)");
	if (strlen(t) >= sizeof one_val)
		CFG(j, f, l, "value too long");
	strcpy(one_val, t);
}
/* Reads a one-value file; returns its line number, 0 if absent (error if mandatory). */
static int read_one(struct jail *j, const char *f, int mandatory)
{
	one_seen = 0;
	one_val[0] = 0;
	if (each_line(j, f, l_one) < 0 || !one_seen) {
		if (mandatory)
			CFG(j, f, 0, "missing or empty (mandatory file)");
		return 0;
	}
	return 1;
}

/* Absolute, no "..", ".", "//" component, no trailing "/", no blank. */
static int bad_path(const char *p)
{
	if (p[0] != '/' || strlen(p) >= PATH_MAX - 256 || strstr(p, "//") || strpbrk(p, " \t\n"))
		return 1;
	if (strstr(p, "/../") || strstr(p, "/./"))
		return 1;
	size_t n = strlen(p);
	if ((n > 1 && p[n - 1] == '/') || (n >= 3 && !strcmp(p + n - 3, "/..")) || (n >= 2 && !strcmp(p + n - 2, "/.")))
		return 1;
	return 0;
}

static void l_addr(struct jail *j, const char *f, int l, char *t)
{
	char *slash = strchr(t, '/');
	struct in_addr a, m;
	if (j->naddr >= MAXA)
		CFG(j, f, l, "more than %d addresses", MAXA);
	if (!slash)
		CFG(j, f, l, "'%s': expected a.b.c.d/m.m.m.m", t);
	*slash = 0;
	if (inet_pton(AF_INET, t, &a) != 1)
		CFG(j, f, l, "'%s': not an IPv4 address (a.b.c.d)", t);
	if (inet_pton(AF_INET, slash + 1, &m) != 1)
		CFG(j, f, l, "'%s': not a netmask (m.m.m.m)", slash + 1);
	uint32_t inv = ~ntohl(m.s_addr);
	if (inv & (inv + 1))
		CFG(j, f, l, "'%s': netmask not contiguous (e.g. 255.255.255.0)", slash + 1);
	j->addr[j->naddr] = a.s_addr;
	j->mask[j->naddr++] = m.s_addr;
}

static void l_bcaps(struct jail *j, const char *f, int l, char *t)
{
	for (int i = 0; i < NCAPS; i++)
		if (!strncmp(t, "CAP_", 4) && !strcmp(t + 4, capnames[i])) {
			if (j->caps & (1ULL << i))
				CFG(j, f, l, "%s listed twice", t);
			j->caps |= 1ULL << i;
			return;
		}
	CFG(j, f, l, "'%s': not a Linux 6.1 capability (CAP_CHOWN .. CAP_CHECKPOINT_RESTORE)", t);
}
static void l_ccaps(struct jail *j, const char *f, int l, char *t)
{
	CFG(j, f, l, "'%s': util-vserver context capabilities have no Linux counterpart; the file must be empty", t);
}
static void l_cflags(struct jail *j, const char *f, int l, char *t)
{
	static const char *k[] = {"fakeinit", "hide_mount", "hide_vinfo", "virt_uptime"};
	for (unsigned i = 0; i < 4; i++)
		if (!strcmp(t, k[i])) {
			if (j->cflags & (1u << i))
				CFG(j, f, l, "%s listed twice", t);
			j->cflags |= 1u << i;
			if (i == 0)
				j->fl_fakeinit_line = l;
			return;
		}
	if (!strncmp(t, "virt_", 5))
		CFG(j, f, l, "'%s': util-vserver only: no Linux namespace virtualises it; remove it", t);
	CFG(j, f, l, "'%s': unknown flag (fakeinit, hide_mount, hide_vinfo, virt_uptime)", t);
}
static int hide_netif_line, no_sp_line;
static void l_nflags(struct jail *j, const char *f, int l, char *t)
{
	if (!strcmp(t, "hide_netif") && !(j->nflags & N_HIDE_NETIF)) {
		j->nflags |= N_HIDE_NETIF;
		hide_netif_line = l;
	} else if (!strcmp(t, "no_sp") && !(j->nflags & N_NO_SP)) {
		j->nflags |= N_NO_SP;
		no_sp_line = l;
	} else
		CFG(j, f, l, "'%s': unknown or repeated flag (hide_netif, no_sp)", t);
}
static void l_nsopts(struct jail *j, const char *f, int l, char *t)
{
	unsigned b = !strcmp(t, "pid") ? O_PIDNS : !strcmp(t, "net") ? O_NETNS : 0;
	if (!strcmp(t, "user"))
		CFG(j, f, l, "'user': user namespaces: not supported by this manager");
	if (!b)
		CFG(j, f, l, "'%s': unknown namespace option (pid, net; mnt, ipc, uts, cgroup are always made)", t);
	if (j->nsopts & b)
		CFG(j, f, l, "%s listed twice", t);
	j->nsopts |= b;
}
static void l_cleanup(struct jail *j, const char *f, int l, char *t)
{
	if (j->ncleanup >= 16 || strlen(t) >= 256 || strchr(t, ' '))
		CFG(j, f, l, "'%s': too many or too long patterns, or a blank in one", t);
	strcpy(j->cleanup[j->ncleanup++], t);
}

static int fstab_internal;
static void l_fstab(struct jail *j, const char *f, int l, char *t)
{
	char *w[7];
	int n = 0;
	for (char *s = strtok(t, " "); s; s = strtok(NULL, " "))
		if (n < 7)
			w[n++] = s;
		else
			n++;
	if (n != 6)
		CFG(j, f, l, "%d fields: expected 'src dst type options 0 0'", n);
	if (strcmp(w[4], "0") || strcmp(w[5], "0"))
		CFG(j, f, l, "dump and pass fields must be '0 0'");
	if (j->nmnt >= MAXM)
		CFG(j, f, l, "more than %d mounts", MAXM);
	int first = !fstab_internal && j->nmnt == 0;
	struct mnt *m = &j->m[j->nmnt];
	memset(m, 0, sizeof *m);
	m->file = fstab_internal ? "fstab.internal" : "fstab.external";
	m->line = l;
	m->internal = fstab_internal;
	if (!strcmp(w[2], "proc") || !strcmp(w[0], "proc"))
		CFG(j, f, l, "proc: the manager mounts /proc itself; remove this line");
	if (!strcmp(w[2], "tmpfs")) {
		if (strcmp(w[0], "tmpfs") || fstab_internal)
			CFG(j, f, l, "a tmpfs has source 'tmpfs' (and only in fstab.external)");
		m->tmpfs = 1;
	} else if (strcmp(w[2], "none"))
		CFG(j, f, l, "type '%s': only 'none' (a bind) and 'tmpfs'", w[2]);
	else if (bad_path(w[0]))
		CFG(j, f, l, "source '%s': not a clean absolute path", w[0]);
	if (bad_path(w[1]))
		CFG(j, f, l, "destination '%s': not a clean absolute path (no .., no //, no trailing /)", w[1]);
	if (first && strcmp(w[1], "/"))
		CFG(j, f, l, "the first line must bind the jail's root source on / (SRC / none bind,ro,...)");
	if (!first && !strcmp(w[1], "/"))
		CFG(j, f, l, "only the first line of fstab.external may mount on / (it would shadow the root)");
	if (!strcmp(w[1], "/proc"))
		CFG(j, f, l, "/proc: the manager mounts it itself");
	for (int i = 0; i < j->nmnt; i++)
		if (!strcmp(j->m[i].dst, w[1]))
			CFG(j, f, l, "%s mounted twice (%s:%d): the second would shadow the first", w[1], j->m[i].file,
			    j->m[i].line);
	strcpy(m->src, w[0]);
	strcpy(m->dst, w[1]);
	int bind = 0, ro = 0, rw = 0;
	for (char *o = strtok(w[3], ","); o; o = strtok(NULL, ",")) {
		static const char *fl[] = {"nosuid", "nodev", "noexec", "nosymfollow"};
		static const unsigned long fv[] = {MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOSYMFOLLOW};
		int done = 0;
		for (int i = 0; i < 4; i++)
			if (!strcmp(o, fl[i])) {
				if (m->flags & fv[i])
					CFG(j, f, l, "option %s repeated", o);
				m->flags |= fv[i];
				done = 1;
			}
		if (done)
			continue;
		int *seen = !strcmp(o, "bind") ? &bind : !strcmp(o, "ro") ? &ro : !strcmp(o, "rw") ? &rw : NULL;
		if (seen && (*seen)++)
			CFG(j, f, l, "option '%s' repeated", o);
		if (seen)
			continue;
		if (m->tmpfs && (!strncmp(o, "size=", 5) || !strncmp(o, "mode=", 5))) {
			const char *v = o + 5;
			size_t k = strspn(v, o[0] == 's' ? "0123456789" : "01234567");
			int ok = o[0] == 's' ? k > 0 && k < 12 && (!v[k] || (strchr("kmg", v[k]) && !v[k + 1]))
					     : k >= 3 && k <= 4 && !v[k];
			if (!ok || strlen(m->data) + strlen(o) + 2 > sizeof m->data)
				CFG(j, f, l, "'%s': expected size=N[kmg] or mode=OCTAL", o);
			if (m->data[0])
				strcat(m->data, ",");
			strcat(m->data, o);
			continue;
		}
		if (!strcmp(o, "nolock"))
			CFG(j, f, l, "'nolock': no Linux bind mount can disable locks; remove it");
		if (!strcmp(o, "rbind"))
			CFG(j, f, l, "'rbind': it would import every mount below the source; use bind");
		if (!strcmp(o, "exec") || !strcmp(o, "suid") || !strcmp(o, "dev"))
			CFG(j, f, l, "'%s': not written by the renderer (omit no%s instead)", o, o);
		CFG(j, f, l, "'%s': unknown option (bind, ro, rw, nosuid, nodev, noexec, nosymfollow; tmpfs: size=, mode=)", o);
	}
	if (ro && rw)
		CFG(j, f, l, "both ro and rw");
	if (ro)
		m->flags |= MS_RDONLY;
	if (m->tmpfs && bind)
		CFG(j, f, l, "a tmpfs is not a bind");
	if (!m->tmpfs && !bind)
		CFG(j, f, l, "type none needs option bind (a path source is a bind)");
	j->nmnt++;
}

static void l_ssh(struct jail *j, const char *f, int l, char *t)
{
	char a[64], k[256];
	int port;
	struct in_addr ia;
	if (j->sshport)
		CFG(j, f, l, "more than one line");
	if (sscanf(t, "%63s %d %255s", a, &port, k) != 3 || inet_pton(AF_INET, a, &ia) != 1 || port < 1 ||
	    port > 65535 || k[0] != '/')
		CFG(j, f, l, "expected 'ADDR PORT HOSTKEY'");
	strcpy(j->sshaddr, a);
	j->sshport = port;
}

static int valid_name(const char *n)
{
	size_t k = strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789_");
	return k >= 1 && k <= 32 && !n[k];
}

static void parse(struct jail *j, const char *name)
{
	static const char *known[] = {"context", "root", "addr", "cmd", "hostname", "bcaps", "ccaps", "cflags",
				      "nflags", "nsopts", "nscleanup", "fstab.external", "fstab.internal", "ssh",
				      "veriexec.ctx", "veriexec.level"};
	memset(j, 0, sizeof *j);
	strcpy(j->name, name);
	snprintf(j->dir, sizeof j->dir, "%s/jails/%s", etc, name);
	DIR *d = opendir(j->dir);
	if (!d)
		die(2, "%s: %s (no such jail?)", j->dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		unsigned i = 0;
		while (i < sizeof known / sizeof *known && strcmp(known[i], e->d_name))
			i++;
		if (i == sizeof known / sizeof *known)
			CFG(j, e->d_name, 0, "unknown file (fail closed: remove it or teach clip-jail what it means)");
	}
	closedir(d);
	char *end;
	read_one(j, "context", 1);
	long c = strtol(one_val, &end, 10);
	if (*end || one_val[0] < '1' || one_val[0] > '9' || c < 1 || c > 65535)
		CFG(j, "context", 1, "'%s': expected a decimal 1..65535", one_val);
	j->context = (int)c;
	read_one(j, "root", 1);
	if (bad_path(one_val) || !strcmp(one_val, "/"))
		CFG(j, "root", 1, "'%s': absolute path without .., //, trailing /", one_val);
	strcpy(j->root, one_val);
	if (each_line(j, "addr", l_addr) < 0 || !j->naddr)
		CFG(j, "addr", 0, "missing or empty (mandatory: 1..4 a.b.c.d/m.m.m.m)");
	read_one(j, "cmd", 1);
	if (strcmp(one_val, "<invalid>")) {
		int n = 0;
		strcpy(j->cmdbuf, one_val);
		if (j->cmdbuf[0] != '/')
			CFG(j, "cmd", 1, "'%s': an absolute path then arguments, or <invalid>", one_val);
		for (char *s = j->cmdbuf;; s++) {
			if (n >= MAXARG)
				CFG(j, "cmd", 1, "more than %d words", MAXARG);
			j->argv[n++] = s;
			s = strchr(s, ' ');
			if (!s)
				break;
			*s = 0;
			if (s[1] == ' ' || s[1] == 0 || s == j->argv[n - 1])
				CFG(j, "cmd", 1, "empty word (words are separated by single spaces, no quoting)");
		}
		j->hascmd = 1;
	}
	strcpy(j->hostname, name);
	if (read_one(j, "hostname", 0)) {
		size_t k = strspn(one_val, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
		if (one_val[k] || k < 1 || k > 63)
			CFG(j, "hostname", 1, "'%s': 1..63 characters of [A-Za-z0-9._-]", one_val);
		strcpy(j->hostname, one_val);
	}
	each_line(j, "bcaps", l_bcaps);
	each_line(j, "ccaps", l_ccaps);
	each_line(j, "cflags", l_cflags);
	hide_netif_line = no_sp_line = 0;
	each_line(j, "nflags", l_nflags);
	each_line(j, "nsopts", l_nsopts);
	each_line(j, "nscleanup", l_cleanup);
	if ((j->cflags & F_FAKEINIT) && !(j->nsopts & O_PIDNS))
		CFG(j, "cflags", j->fl_fakeinit_line, "fakeinit requires pid in nsopts (the init is pid 1 of its own pid namespace)");
	if ((j->nflags & N_HIDE_NETIF) && !(j->nsopts & O_NETNS))
		CFG(j, "nflags", hide_netif_line, "hide_netif requires net in nsopts (only an own network namespace hides the host's interfaces)");
	if ((j->nflags & N_NO_SP) && (j->caps & (1ULL << CAP_NET_ADMIN)))
		CFG(j, "nflags", no_sp_line, "no_sp with CAP_NET_ADMIN in bcaps: NET_ADMIN may set per-socket IPsec policy; drop one");
	fstab_internal = 0;
	if (each_line(j, "fstab.external", l_fstab) < 0 || j->nmnt == 0)
		CFG(j, "fstab.external", 0, "missing or empty (its first line binds the jail's root on /)");
	/* fstab.internal goes right after the root bind: parse it into the tail, then rotate into place. */
	int next = j->nmnt;
	fstab_internal = 1;
	each_line(j, "fstab.internal", l_fstab);
	int ni = j->nmnt - next;
	if (ni) {
		struct mnt tmp[MAXM];
		memcpy(tmp, &j->m[1], (size_t)(next - 1) * sizeof *tmp);
		memmove(&j->m[1], &j->m[next], (size_t)ni * sizeof *tmp);
		memcpy(&j->m[1 + ni], tmp, (size_t)(next - 1) * sizeof *tmp);
	}
	each_line(j, "ssh", l_ssh);
}

static void print_plan(const struct jail *j)
{
	printf("jail %s context %d root %s hostname %s\n", j->name, j->context, j->root, j->hostname);
	printf("namespaces mnt uts ipc cgroup%s%s%s\n", j->nsopts & O_PIDNS ? " pid" : "", j->nsopts & O_NETNS ? " net" : "",
	       j->cflags & F_VIRT_UPTIME ? " time" : "");
	printf("init %s\n", j->cflags & F_FAKEINIT ? "clip-jail-init as pid 1" : "clip-jail-init (no own pid namespace)");
	for (int i = 0; i < j->nmnt; i++) {
		const struct mnt *m = &j->m[i];
		printf("mount %s%s on %s%s %s%s%s%s%s%s%s%s (%s:%d)\n", m->internal ? j->root : "", m->src, j->root,
		       strcmp(m->dst, "/") ? m->dst : "", m->tmpfs ? "tmpfs" : "bind",
		       m->flags & MS_RDONLY ? ",ro" : ",rw", m->flags & MS_NOSUID ? ",nosuid" : "",
		       m->flags & MS_NODEV ? ",nodev" : "", m->flags & MS_NOEXEC ? ",noexec" : "",
		       m->flags & MS_NOSYMFOLLOW ? ",nosymfollow" : "", m->data[0] ? "," : "", m->data, m->file, m->line);
	}
	printf("mount proc on %s/proc proc,rw,nosuid,nodev,noexec\n", j->root);
	printf("caps 0x%llx", (unsigned long long)j->caps);
	for (int i = 0; i < NCAPS; i++)
		if (j->caps & (1ULL << i))
			printf(" CAP_%s", capnames[i]);
	printf("\n");
	for (int i = 0; i < j->naddr; i++) {
		char a[16], m[16];
		inet_ntop(AF_INET, &j->addr[i], a, sizeof a);
		inet_ntop(AF_INET, &j->mask[i], m, sizeof m);
		printf("addr %s/%s on %s lo\n", a, m, j->nsopts & O_NETNS ? "the jail's" : "the host's");
	}
	printf("cmd ");
	if (!j->hascmd)
		printf("<invalid> (init only)\n");
	for (int i = 0; j->hascmd && j->argv[i]; i++)
		printf("%s%c", j->argv[i], j->argv[i + 1] ? ' ' : '\n');
}

/* ---- runtime helpers ---- */
static int report_fd = -1; /* the jail init's CLOEXEC pipe to the manager */
/* Fails a setup step: inside the jail child, the message goes to the manager; otherwise to stderr. */
static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	if (report_fd >= 0) {
		if (write(report_fd, buf, (size_t)n) < 0)
			_exit(1);
		_exit(1);
	}
	fprintf(stderr, "clip-jail: %s: %s\n", jname, buf);
	exit(1);
}
#define TRY(expr, ...)                                                                                                 \
	do {                                                                                                           \
		if ((expr) < 0)                                                                                        \
			fail(__VA_ARGS__);                                                                             \
	} while (0)

/* Reads from fd until end of file or len - 1 bytes, retrying on EINTR; the text is NUL-terminated. Returns its
 * length (a read error ends it early: what was read so far is kept). */
static size_t read_all(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;
	while (got < len - 1 && (n = read(fd, buf + got, len - 1 - got)) != 0) {
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0)
			got += (size_t)n;
	}
	buf[got] = 0;
	return got;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	int e = errno;
	if (close(fd) < 0 || n != (ssize_t)strlen(s)) {
		errno = n < 0 ? e : EIO;
		return -1;
	}
	return 0;
}
static int mkdir_p(const char *p, mode_t mode)
{
	char b[PATH_MAX];
	snprintf(b, sizeof b, "%s", p);
	for (char *s = b + 1;; s++) {
		if (*s == '/' || !*s) {
			char c = *s;
			*s = 0;
			if (mkdir(b, mode) < 0 && errno != EEXIST)
				return -1;
			if (!c)
				return 0;
			*s = c;
		}
	}
}

static int read_pid(const struct jail *j)
{
	char p[PATH_MAX], b[32] = {0};
	snprintf(p, sizeof p, "%s/%s.pid", run, j->name);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	long pid = n > 0 ? strtol(b, NULL, 10) : 0;
	return pid > 1 && pid < INT_MAX ? (int)pid : 0;
}
static int ns_id(int pid, const char *ns, unsigned long *id)
{
	char p[64], l[64] = {0};
	if (pid)
		snprintf(p, sizeof p, "/proc/%d/ns/%s", pid, ns);
	else
		snprintf(p, sizeof p, "/proc/self/ns/%s", ns);
	ssize_t n = readlink(p, l, sizeof l - 1);
	char *b = n > 0 ? strchr(l, '[') : NULL;
	if (!b)
		return -1;
	*id = strtoul(b + 1, NULL, 10);
	return 0;
}
/* The jail's init pid if it runs (pid file, alive, named clip-jail-init, in its own pid namespace), else 0. */
static int running(const struct jail *j)
{
	int pid = read_pid(j);
	char p[64], comm[32] = {0};
	if (!pid || kill(pid, 0) < 0)
		return 0;
	snprintf(p, sizeof p, "/proc/%d/comm", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, comm, sizeof comm - 1);
	close(fd);
	if (n <= 0 || strcmp(comm, "clip-jail-init\n"))
		return 0;
	unsigned long a, b;
	if (j->nsopts & O_PIDNS) {
		if (ns_id(pid, "pid", &a) < 0)
			return errno == EACCES ? pid : 0; /* unprivileged status: cannot see more */
		if (ns_id(0, "pid", &b) < 0 || a == b)
			return 0;
	}
	return pid;
}

/* Host lo aliases for a jail without its own netns: label lo:CONTEXT_I, so that stop finds its own. */
static void lo_label(const struct jail *j, int i, int host, char *out)
{
	if (host)
		snprintf(out, IFNAMSIZ, "lo:%d_%d", j->context, i);
	else
		snprintf(out, IFNAMSIZ, "lo:%d", i);
}
static void net_setup(const struct jail *j, int host)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq r;
	TRY(s, "socket: %s", strerror(errno));
	memset(&r, 0, sizeof r);
	strcpy(r.ifr_name, "lo");
	TRY(ioctl(s, SIOCGIFFLAGS, &r), "lo flags: %s", strerror(errno));
	r.ifr_flags |= IFF_UP | IFF_RUNNING;
	TRY(ioctl(s, SIOCSIFFLAGS, &r), "lo up: %s", strerror(errno));
	for (int i = 0; i < j->naddr; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&r.ifr_addr;
		memset(&r, 0, sizeof r);
		lo_label(j, i, host, r.ifr_name);
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = j->addr[i];
		if (ioctl(s, SIOCSIFADDR, &r) < 0) {
			if (host && errno == EEXIST)
				continue; /* already on the host's lo: idempotent */
			fail("address on %s: %s", r.ifr_name, strerror(errno));
		}
		sin->sin_addr.s_addr = j->mask[i];
		TRY(ioctl(s, SIOCSIFNETMASK, &r), "netmask on %s: %s", r.ifr_name, strerror(errno));
		TRY(ioctl(s, SIOCGIFFLAGS, &r), "flags of %s: %s", r.ifr_name, strerror(errno));
		r.ifr_flags |= IFF_UP;
		TRY(ioctl(s, SIOCSIFFLAGS, &r), "%s up: %s", r.ifr_name, strerror(errno));
	}
	close(s);
}
static void host_net_remove(const struct jail *j)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0 || (j->nsopts & O_NETNS))
		goto out;
	for (int i = 0; i < j->naddr; i++) {
		struct ifreq r;
		memset(&r, 0, sizeof r);
		lo_label(j, i, 1, r.ifr_name);
		if (ioctl(s, SIOCGIFFLAGS, &r) < 0)
			continue; /* not ours or already gone */
		r.ifr_flags &= ~IFF_UP; /* taking an alias down deletes its address */
		if (ioctl(s, SIOCSIFFLAGS, &r) < 0)
			fprintf(stderr, "clip-jail: %s: remove %s: %s\n", jname, r.ifr_name, strerror(errno));
	}
out:
	if (s >= 0)
		close(s);
}

/* Opens PATH below the jail root fd as the jail will see it (symlinks resolved inside the root, never out). */
static int open_in(int rootfd, const char *path)
{
	struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	return (int)syscall(SYS_openat2, rootfd, path[1] ? path + 1 : ".", &how, sizeof how);
}
static void check_flags(const struct mnt *m, int fd, const char *what)
{
	struct statvfs sv;
	static const unsigned long ms[] = {MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOSYMFOLLOW};
	static const unsigned long st[] = {ST_RDONLY, ST_NOSUID, ST_NODEV, ST_NOEXEC, ST_NOSYMFOLLOW};
	static const char *nm[] = {"ro", "nosuid", "nodev", "noexec", "nosymfollow"};
	TRY(fstatvfs(fd, &sv), "statvfs %s (%s:%d): %s", what, m->file, m->line, strerror(errno));
	for (int i = 0; i < 5; i++)
		if (!(m->flags & ms[i]) != !(sv.f_flag & st[i]))
			fail("mount %s (%s:%d): kernel %s %s", what, m->file, m->line,
			     sv.f_flag & st[i] ? "added" : "did not apply", nm[i]);
}
static void do_mounts(const struct jail *j)
{
	char p[64];
	int rootfd = -1;
	for (int i = 0; i < j->nmnt; i++) {
		const struct mnt *m = &j->m[i];
		int src = -1, dst;
		struct stat ss, ds;
		if (i == 0)
			dst = open(j->root, O_PATH | O_CLOEXEC | O_DIRECTORY);
		else
			dst = open_in(rootfd, m->dst);
		TRY(dst, "mount point %s (%s:%d): %s", m->dst, m->file, m->line, strerror(errno));
		TRY(fstat(dst, &ds), "stat %s: %s", m->dst, strerror(errno));
		if (!m->tmpfs) {
			src = m->internal ? open_in(rootfd, m->src) : open(m->src, O_PATH | O_CLOEXEC);
			TRY(src, "source %s (%s:%d): %s", m->src, m->file, m->line, strerror(errno));
			TRY(fstat(src, &ss), "stat %s: %s", m->src, strerror(errno));
			if (S_ISDIR(ss.st_mode) != S_ISDIR(ds.st_mode) || (!S_ISDIR(ss.st_mode) && !S_ISREG(ss.st_mode)))
				fail("mount %s (%s:%d): source and mount point must both be directories or both files",
				     m->dst, m->file, m->line);
			snprintf(p, sizeof p, "/proc/self/fd/%d", src);
			char t[64];
			snprintf(t, sizeof t, "/proc/self/fd/%d", dst);
			TRY(mount(p, t, NULL, MS_BIND, NULL), "mount %s (%s:%d): %s", m->dst, m->file, m->line, strerror(errno));
		} else {
			if (!S_ISDIR(ds.st_mode))
				fail("mount %s (%s:%d): not a directory", m->dst, m->file, m->line);
			snprintf(p, sizeof p, "/proc/self/fd/%d", dst);
			TRY(mount("tmpfs", p, "tmpfs", m->flags, m->data), "mount %s (%s:%d): %s", m->dst, m->file, m->line,
			    strerror(errno));
		}
		close(dst);
		if (src >= 0)
			close(src);
		/* Reopen: the path now leads into the new mount. */
		if (i == 0) {
			rootfd = open(j->root, O_PATH | O_CLOEXEC | O_DIRECTORY);
			dst = rootfd;
		} else
			dst = open_in(rootfd, m->dst);
		TRY(dst, "reopen %s: %s", m->dst, strerror(errno));
		snprintf(p, sizeof p, "/proc/self/fd/%d", dst);
		if (!m->tmpfs)
			TRY(mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | m->flags, NULL), "remount %s (%s:%d): %s", m->dst,
			    m->file, m->line, strerror(errno));
		check_flags(m, dst, m->dst);
		if (i)
			close(dst);
	}
	int pfd = open_in(rootfd, "/proc");
	TRY(pfd, "mount point /proc: %s", strerror(errno));
	snprintf(p, sizeof p, "/proc/self/fd/%d", pfd);
	TRY(mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount /proc: %s", strerror(errno));
	close(pfd);
	close(rootfd);
}

/* After pivot_root: /proc/self/mountinfo lists exactly the manager's mounts, none another jail's leftover. */
static void verify_mountinfo(const struct jail *j)
{
	FILE *fp = fopen("/proc/self/mountinfo", "re");
	char line[4096], mp[PATH_MAX];
	int seen[MAXM + 1] = {0}, n = 0;
	if (!fp)
		fail("mountinfo: %s", strerror(errno));
	while (fgets(line, sizeof line, fp)) {
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			fail("mountinfo: cannot parse '%s'", line);
		int k = -1;
		for (int i = 0; i < j->nmnt && k < 0; i++)
			if (!strcmp(mp, j->m[i].dst))
				k = i;
		if (k < 0 && !strcmp(mp, "/proc"))
			k = MAXM;
		for (int c = 0; k < 0 && c < j->ncleanup; c++)
			if (!fnmatch(j->cleanup[c], mp, 0))
				fail("mountinfo: %s matches nscleanup pattern %s: a host mount leaked into the jail", mp,
				     j->cleanup[c]);
		if (k < 0 || seen[k]++)
			fail("mountinfo: unexpected mount %s in the jail", mp);
		n++;
	}
	fclose(fp);
	if (n != j->nmnt + 1)
		fail("mountinfo: %d mounts, expected %d", n, j->nmnt + 1);
}

static void drop_privs(const struct jail *j)
{
	char b[16] = {0};
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC), last;
	TRY(fd, "cap_last_cap: %s", strerror(errno));
	TRY(read(fd, b, sizeof b - 1), "cap_last_cap: %s", strerror(errno));
	close(fd);
	last = atoi(b);
	if (last < 40 || last > 63)
		fail("cap_last_cap: unexpected value %s", b);
	TRY(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs: %s", strerror(errno));
	for (int c = 0; c <= last; c++)
		if (!(c < NCAPS && (j->caps & (1ULL << c))))
			TRY(prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "drop capability %d from the bounding set: %s", c,
			    strerror(errno));
	TRY(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient: %s", strerror(errno));
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	for (int i = 0; i < 2; i++)
		d[i].effective = d[i].permitted = d[i].inheritable = (uint32_t)(j->caps >> (32 * i));
	TRY(syscall(SYS_capset, &h, d), "capset: %s", strerror(errno));
}

static char *const clean_env[] = {"PATH=/sbin:/bin:/usr/sbin:/usr/bin", "HOME=/", "TERM=linux", NULL};

/* The jail's init (pid 1 with fakeinit): starts cmd, reports to the manager, then reaps until SIGTERM. */
static void jail_init(const struct jail *j, int logfd, int nullfd)
{
	sigset_t all, old;
	int ep[2];
	TRY(prctl(PR_SET_NAME, "clip-jail-init", 0, 0, 0), "prctl name: %s", strerror(errno));
	sigemptyset(&all);
	sigaddset(&all, SIGCHLD);
	sigaddset(&all, SIGTERM);
	sigaddset(&all, SIGINT);
	TRY(sigprocmask(SIG_BLOCK, &all, &old), "sigprocmask: %s", strerror(errno));
	TRY(pipe2(ep, O_CLOEXEC), "pipe: %s", strerror(errno));
	pid_t cmd = -1;
	if (j->hascmd) {
		cmd = fork();
		TRY(cmd, "fork cmd: %s", strerror(errno));
		if (cmd == 0) {
			int e;
			if (sigprocmask(SIG_SETMASK, &old, NULL) < 0 || setsid() < 0 || dup2(nullfd, 0) < 0 ||
			    dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
				e = errno;
			else {
				execve(j->argv[0], j->argv, clean_env);
				e = errno;
			}
			if (write(ep[1], &e, sizeof e) < 0)
				_exit(127);
			_exit(127);
		}
	}
	close(ep[1]);
	int e = 0;
	ssize_t n = read(ep[0], &e, sizeof e);
	close(ep[0]);
	if (n == (ssize_t)sizeof e)
		fail("cmd %s: %s", j->argv[0], strerror(e));
	if (n < 0)
		fail("cmd %s: reading its exec report: %s", j->argv[0], strerror(errno));
	if (write(report_fd, "OK", 2) != 2)
		_exit(1);
	close(report_fd);
	report_fd = -1;
	if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
		_exit(1);
	close(logfd);
	close(nullfd);
	for (;;) {
		siginfo_t si;
		if (sigwaitinfo(&all, &si) < 0)
			continue;
		if (si.si_signo != SIGCHLD) {
			if (j->nsopts & O_PIDNS)
				kill(-1, SIGKILL); /* everything in the jail's pid namespace */
			else if (cmd > 0)
				kill(-cmd, SIGKILL); /* cmd's session; stop's cgroup.kill does the rest */
			_exit(0);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
}

static void cg_path(const struct jail *j, const char *file, char *out)
{
	snprintf(out, PATH_MAX, "%s/%s%s%s", cgdir, j->name, file ? "/" : "", file ? file : "");
}
static void cg_join(const struct jail *j, int pid)
{
	char p[PATH_MAX], b[32];
	cg_path(j, "cgroup.procs", p);
	snprintf(b, sizeof b, "%d\n", pid);
	TRY(write_file(p, b), "cgroup %s: %s", p, strerror(errno));
}
static int cg_empty(const struct jail *j)
{
	char p[PATH_MAX], b[16];
	cg_path(j, "cgroup.procs", p);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	ssize_t n = read(fd, b, sizeof b);
	close(fd);
	return n == 0;
}

static void cmd_start(const struct jail *j)
{
	char p[PATH_MAX], msg[PATH_MAX + 200] = {0};
	struct statfs sf;
	if (running(j))
		die(1, "%s: already running (pid %d)", j->name, read_pid(j));
	TRY(mkdir_p(run, 0700), "run directory %s: %s", run, strerror(errno));
	snprintf(p, sizeof p, "%s/%s.log", run, j->name);
	int logfd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
	TRY(logfd, "log %s: %s", p, strerror(errno));
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	TRY(nullfd, "/dev/null: %s", strerror(errno));
	if (mkdir(cgdir, 0755) < 0 && errno != EEXIST)
		fail("cgroup %s: %s", cgdir, strerror(errno));
	TRY(statfs(cgdir, &sf), "cgroup %s: %s", cgdir, strerror(errno));
	if (sf.f_type != CGROUP2_MAGIC)
		fail("cgroup %s: not on a cgroup2 filesystem", cgdir);
	cg_path(j, NULL, p);
	if (mkdir(p, 0755) < 0 && (errno != EEXIST || !cg_empty(j)))
		fail("cgroup %s: %s", p, errno == EEXIST ? "exists and holds processes" : strerror(errno));
	if (!(j->nsopts & O_NETNS))
		net_setup(j, 1);
	if (j->cflags & F_VIRT_UPTIME) {
		struct timespec m, b;
		char off[128];
		TRY(unshare(CLONE_NEWTIME), "time namespace: %s", strerror(errno));
		TRY(clock_gettime(CLOCK_MONOTONIC, &m), "clock: %s", strerror(errno));
		TRY(clock_gettime(CLOCK_BOOTTIME, &b), "clock: %s", strerror(errno));
		snprintf(off, sizeof off, "monotonic %lld 0\nboottime %lld 0\n", -(long long)m.tv_sec, -(long long)b.tv_sec);
		TRY(write_file("/proc/self/timens_offsets", off), "timens_offsets: %s", strerror(errno));
	}
	if (j->nsopts & O_PIDNS)
		TRY(unshare(CLONE_NEWPID), "pid namespace: %s", strerror(errno));
	int go[2], rep[2];
	TRY(pipe2(go, O_CLOEXEC), "pipe: %s", strerror(errno));
	TRY(pipe2(rep, O_CLOEXEC), "pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork(); /* with the pid namespace unshared above, the child is its pid 1 */
	TRY(pid, "fork: %s", strerror(errno));
	if (pid == 0) {
		char c;
		close(go[1]);
		close(rep[0]);
		report_fd = rep[1];
		if (read(go[0], &c, 1) != 1)
			_exit(1); /* the manager failed: it kills us */
		close(go[0]);
		TRY(setsid(), "setsid: %s", strerror(errno));
		TRY(unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP |
			    (j->nsopts & O_NETNS ? CLONE_NEWNET : 0)),
		    "unshare: %s", strerror(errno));
		TRY(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make / rprivate: %s", strerror(errno));
		TRY(sethostname(j->hostname, strlen(j->hostname)), "sethostname: %s", strerror(errno));
		if (j->nsopts & O_NETNS)
			net_setup(j, 0);
		do_mounts(j);
		TRY(chdir(j->root), "chdir %s: %s", j->root, strerror(errno));
		TRY(syscall(SYS_pivot_root, ".", "."), "pivot_root %s: %s", j->root, strerror(errno));
		TRY(umount2(".", MNT_DETACH), "detach the old root: %s", strerror(errno));
		TRY(chdir("/"), "chdir /: %s", strerror(errno));
		verify_mountinfo(j);
		drop_privs(j);
		jail_init(j, logfd, nullfd);
		_exit(1);
	}
	close(go[0]);
	close(rep[1]);
	close(logfd);
	close(nullfd);
	cg_path(j, "cgroup.procs", p);
	snprintf(msg, sizeof msg, "%d\n", pid);
	if (write_file(p, msg) < 0) {
		snprintf(msg, sizeof msg, "cgroup %s: %s", p, strerror(errno));
		goto failed;
	}
	if (write(go[1], "g", 1) != 1) {
		snprintf(msg, sizeof msg, "signal the jail init: %s", strerror(errno));
		goto failed;
	}
	close(go[1]);
	read_all(rep[0], msg, sizeof msg);
	close(rep[0]);
	if (strcmp(msg, "OK")) {
		if (!msg[0])
			snprintf(msg, sizeof msg, "the jail init died during setup");
		goto failed;
	}
	char tmp[PATH_MAX + 8], b[32];
	snprintf(p, sizeof p, "%s/%s.pid", run, j->name);
	snprintf(tmp, sizeof tmp, "%s.tmp", p);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	int len = snprintf(b, sizeof b, "%d\n", pid);
	if (fd < 0 || write(fd, b, (size_t)len) != len || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, p) < 0) {
		snprintf(msg, sizeof msg, "pid file %s: %s", p, strerror(errno));
		goto failed;
	}
	printf("clip-jail: %s: started (pid %d)\n", j->name, pid);
	exit(0);
failed:
	fprintf(stderr, "clip-jail: %s: %s\n", j->name, msg);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cg_path(j, NULL, p);
	if (rmdir(p) < 0 && errno != ENOENT)
		fprintf(stderr, "clip-jail: %s: rmdir %s: %s\n", j->name, p, strerror(errno));
	host_net_remove(j);
	exit(1);
}

static void cmd_stop(const struct jail *j)
{
	char p[PATH_MAX];
	cg_path(j, NULL, p);
	if (access(p, F_OK) == 0) {
		cg_path(j, "cgroup.kill", p);
		TRY(write_file(p, "1"), "%s: %s", p, strerror(errno));
		int i = 0;
		for (; i < 100 && !cg_empty(j); i++)
			usleep(50000);
		if (i == 100)
			fail("processes left in the cgroup after 5 s");
		cg_path(j, NULL, p);
		TRY(rmdir(p), "rmdir %s: %s", p, strerror(errno));
	}
	host_net_remove(j);
	snprintf(p, sizeof p, "%s/%s.pid", run, j->name);
	if (unlink(p) < 0 && errno != ENOENT)
		fail("%s: %s", p, strerror(errno));
	printf("clip-jail: %s: stopped\n", j->name);
	exit(0);
}

/* Joins the running jail's namespaces and cgroup; returns the init pid (the caller forks next). */
static const char *nsnames[] = {"cgroup", "ipc", "uts", "net", "pid", "time", "mnt"};
static int join(const struct jail *j)
{
	int pid = running(j), fds[7];
	if (!pid)
		die(3, "%s: not running", j->name);
	for (int i = 0; i < 7; i++) {
		unsigned long a, b;
		char p[64];
		fds[i] = -1;
		if (ns_id(pid, nsnames[i], &a) < 0 || ns_id(0, nsnames[i], &b) < 0)
			fail("namespace %s of pid %d: %s", nsnames[i], pid, strerror(errno));
		if (a == b)
			continue;
		snprintf(p, sizeof p, "/proc/%d/ns/%s", pid, nsnames[i]);
		fds[i] = open(p, O_RDONLY | O_CLOEXEC);
		TRY(fds[i], "%s: %s", p, strerror(errno));
	}
	cg_join(j, getpid());
	for (int i = 0; i < 7; i++)
		if (fds[i] >= 0) {
			TRY(setns(fds[i], 0), "setns %s: %s", nsnames[i], strerror(errno));
			close(fds[i]);
		}
	return pid;
}
static int wait_child(pid_t c)
{
	int st;
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			fail("wait: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
static void cmd_enter(const struct jail *j, char **args)
{
	static char *sh[] = {"/bin/sh", NULL};
	char **av = args && args[0] ? args : sh;
	join(j);
	pid_t c = fork();
	TRY(c, "fork: %s", strerror(errno));
	if (c == 0) {
		TRY(chdir("/"), "chdir /: %s", strerror(errno));
		drop_privs(j);
		/* none of the caller's descriptors but stdin, stdout and stderr follow it into the jail */
		TRY(syscall(SYS_close_range, 3U, ~0U, 0U), "close_range: %s", strerror(errno));
		execve(av[0], av, clean_env);
		fail("exec %s: %s", av[0], strerror(errno));
	}
	exit(wait_child(c));
}

/* ---- probe ---- */
static void cmd_probe(const struct jail *j, int mark)
{
	char *av[256], buf[65536], hex[32], a[40];
	int ac = 0;
	static char pool[1 << 18];
	size_t used = 0;
#define ARG(...)                                                                                                       \
	do {                                                                                                           \
		int len_ = snprintf(pool + used, sizeof pool - used, __VA_ARGS__);                                     \
		if (len_ < 0 || (size_t)len_ >= sizeof pool - used || ac >= 250)                                       \
			fail("probe arguments: too many or too long");                                                 \
		av[ac++] = pool + used;                                                                                \
		used += (size_t)len_ + 1;                                                                              \
	} while (0)
	ARG("probe");
	ARG("--name");
	ARG("%s", j->name);
	if (mark)
		ARG("--mark");
	ARG("--pidns");
	ARG(j->nsopts & O_PIDNS ? "yes" : "no");
	ARG("--netns");
	ARG(j->nsopts & O_NETNS ? "yes" : "no");
	snprintf(hex, sizeof hex, "%016llx", (unsigned long long)j->caps);
	ARG("--caps");
	ARG("%s", hex);
	ARG("--hostname");
	ARG("%s", j->hostname);
	ARG("--mount");
	ARG("/proc");
	for (int i = 0; i < j->nmnt; i++) {
		const struct mnt *m = &j->m[i];
		ARG("--mount");
		ARG("%s", m->dst);
		/* writable and not /dev-like read-only: the probe tries to execute there */
		if (!(m->flags & MS_RDONLY)) {
			ARG("--writable");
			ARG("%s:%s", m->dst, m->flags & MS_NOEXEC ? "noexec" : "exec");
		}
	}
	for (int i = 0; i < j->naddr; i++) {
		inet_ntop(AF_INET, &j->addr[i], a, sizeof a);
		ARG("--addr");
		ARG("%s", a);
	}
	/* Reachability from every jail's ssh file: own endpoint yes, others no. */
	char d[PATH_MAX];
	snprintf(d, sizeof d, "%s/jails", etc);
	DIR *dir = opendir(d);
	struct dirent *e;
	while (dir && (e = readdir(dir)) && ac < 200) {
		char p[PATH_MAX + 300], l[512], ad[64];
		int port;
		if (!valid_name(e->d_name))
			continue;
		snprintf(p, sizeof p, "%s/%s/ssh", d, e->d_name);
		FILE *fp = fopen(p, "re");
		if (!fp)
			continue;
		while (fgets(l, sizeof l, fp))
			if (l[0] != '#' && sscanf(l, "%63s %d", ad, &port) == 2) {
				ARG("--reach");
				ARG("%s:%d:%s", ad, port, strcmp(e->d_name, j->name) ? "no" : "yes");
			}
		fclose(fp);
	}
	if (dir)
		closedir(dir);
	av[ac] = NULL;
	/* The host's namespaces and every other running jail's, read before entering. */
	static const char *nss[] = {"mnt", "pid", "net", "ipc", "uts", "cgroup"};
	unsigned long host[6], other[64][6];
	int nother = 0;
	for (int i = 0; i < 6; i++)
		TRY(ns_id(1, nss[i], &host[i]), "namespace %s of pid 1: %s", nss[i], strerror(errno));
	dir = opendir(run);
	while (dir && (e = readdir(dir)) && nother < 64) {
		char *dot = strrchr(e->d_name, '.');
		struct jail o;
		if (!dot || strcmp(dot, ".pid") || dot - e->d_name > 32)
			continue;
		memset(&o, 0, sizeof o);
		memcpy(o.name, e->d_name, (size_t)(dot - e->d_name));
		if (!strcmp(o.name, j->name) || !valid_name(o.name))
			continue;
		o.nsopts = 0; /* liveness by pid file and comm only */
		int op = running(&o);
		for (int i = 0; op && i < 6; i++)
			if (ns_id(op, nss[i], &other[nother][i]) < 0)
				op = 0;
		if (op)
			nother++;
	}
	if (dir)
		closedir(dir);
	int po = open(CLIP_JAIL_PROBE, O_RDONLY | O_CLOEXEC);
	TRY(po, "%s: %s", CLIP_JAIL_PROBE, strerror(errno));
	int out[2];
	TRY(pipe2(out, O_CLOEXEC), "pipe: %s", strerror(errno));
	int pid = join(j);
	pid_t c = fork();
	TRY(c, "fork: %s", strerror(errno));
	if (c == 0) {
		TRY(dup2(out[1], 1), "dup2: %s", strerror(errno));
		TRY(chdir("/"), "chdir /: %s", strerror(errno));
		drop_privs(j);
		/* the host's probe binary, executed inside the jail: the jail root need not carry it */
		syscall(SYS_execveat, po, "", av, clean_env, AT_EMPTY_PATH);
		fail("exec %s: %s", CLIP_JAIL_PROBE, strerror(errno));
	}
	close(out[1]);
	size_t got = read_all(out[0], buf, sizeof buf);
	int st = wait_child(c);
	/* namespaces: compare the probe's ids with the host's and the other jails' */
	unsigned long id[6];
	int have[6] = {0}, total = 1, passed = 0;
	char first[600] = "", nsline[300] = "", det[600];
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		char nm[16];
		unsigned long v;
		if (sscanf(l, "ns %15s %lu", nm, &v) == 2)
			for (int i = 0; i < 6; i++)
				if (!strcmp(nm, nss[i]))
					id[i] = v, have[i] = 1;
	}
	det[0] = 0;
	for (int i = 0; i < 6 && !det[0]; i++) {
		int own = i == 1 ? !!(j->nsopts & O_PIDNS) : i == 2 ? !!(j->nsopts & O_NETNS) : 1;
		if (!have[i])
			snprintf(det, sizeof det, "the probe did not report its %s namespace", nss[i]);
		else if (own && id[i] == host[i])
			snprintf(det, sizeof det, "%s namespace is the host's", nss[i]);
		else if (!own && id[i] != host[i])
			snprintf(det, sizeof det, "%s namespace should be the host's (not in nsopts)", nss[i]);
		for (int o = 0; own && o < nother && !det[0]; o++)
			if (other[o][i] == id[i])
				snprintf(det, sizeof det, "%s namespace shared with another running jail", nss[i]);
	}
	size_t k = 0;
	for (int i = 0; i < 6; i++)
		k += (size_t)snprintf(nsline + k, sizeof nsline - k, "%s%s:%lu", i ? "," : "", nss[i], have[i] ? id[i] : 0);
	if (det[0]) {
		snprintf(first, sizeof first, "rule=namespaces: %s", det);
		printf("CLIP_JAIL_RULE %s namespaces FAILED: %s\n", j->name, det);
	} else {
		passed++;
		printf("CLIP_JAIL_RULE %s namespaces ok: %s (host and %d other running jail(s) differ where they must)\n",
		       j->name, nsline, nother);
	}
	/* the probe's own rules: "RULE ok|FAILED|skipped DETAIL" (buf was split in place by strtok) */
	for (char *l = buf; l < buf + got; l += strlen(l) + 1) {
		char rule[32], res[16];
		int off = 0;
		if (!strncmp(l, "ns ", 3) || sscanf(l, "%31s %15s %n", rule, res, &off) < 2) {
			if (l[0] && strncmp(l, "ns ", 3))
				printf("  %s\n", l); /* detail line */
			continue;
		}
		int ok = !strcmp(res, "ok") || !strcmp(res, "skipped");
		if (!ok && strcmp(res, "FAILED")) {
			printf("  %s\n", l);
			continue;
		}
		total++;
		passed += ok;
		printf("CLIP_JAIL_RULE %s %s %s: %s\n", j->name, rule, res, l + off);
		if (!ok && !first[0])
			snprintf(first, sizeof first, "rule=%s: %.500s", rule, l + off);
	}
	if (st != 0 && !first[0])
		snprintf(first, sizeof first, "rule=probe: the probe exited with status %d", st);
	if (total < 10 && !first[0])
		snprintf(first, sizeof first, "rule=probe: only %d rules reported (10 expected)", total);
	if (first[0])
		printf("CLIP_JAIL %s FAILED %s\n", j->name, first);
	else
		printf("CLIP_JAIL %s ok pid=%d ns=%s rules=%d/%d\n", j->name, pid, nsline, passed, total);
	exit(first[0] ? 1 : 0);
}

int main(int argc, char **argv)
{
	int i = 1;
	umask(022); /* the pid and log files, the cgroup directory: not writable by others whatever the caller's */
	for (; i + 1 < argc && argv[i][0] == '-' && argv[i][1] == '-'; i += 2) {
		if (!strcmp(argv[i], "--etc"))
			etc = argv[i + 1];
		else if (!strcmp(argv[i], "--run"))
			run = argv[i + 1];
		else if (!strcmp(argv[i], "--cgroup"))
			cgdir = argv[i + 1];
		else
			die(2, "unknown option %s", argv[i]);
	}
	if (argc - i < 2)
		die(2, "usage: clip-jail [--etc DIR] [--run DIR] [--cgroup DIR] NAME check|start|stop|status|enter|probe [--mark] [-- CMD ARGS]");
	jname = argv[i];
	const char *cmd = argv[i + 1];
	char **rest = argv + i + 2;
	if (!valid_name(jname))
		die(2, "'%s': a jail name is 1..32 of [a-z0-9_]", jname);
	static struct jail j;
	int mark = 0;
	if (!strcmp(cmd, "probe") && rest[0] && !strcmp(rest[0], "--mark"))
		mark = 1, rest++;
	if (!strcmp(cmd, "enter") && rest[0] && !strcmp(rest[0], "--"))
		rest++;
	if (rest[0] && strcmp(cmd, "enter"))
		die(2, "%s: unexpected argument %s", cmd, rest[0]);
	if (strcmp(cmd, "check") && strcmp(cmd, "status") && geteuid() != 0)
		die(1, "%s: must run as root", cmd);
	parse(&j, jname);
	if (!strcmp(cmd, "check"))
		print_plan(&j);
	else if (!strcmp(cmd, "status")) {
		int pid = running(&j);
		if (pid)
			printf("%s running pid=%d\n", jname, pid);
		else
			printf("%s stopped\n", jname);
		return pid ? 0 : 3;
	} else if (!strcmp(cmd, "start"))
		cmd_start(&j);
	else if (!strcmp(cmd, "stop"))
		cmd_stop(&j);
	else if (!strcmp(cmd, "enter"))
		cmd_enter(&j, rest);
	else if (!strcmp(cmd, "probe"))
		cmd_probe(&j, mark);
	else
		die(2, "unknown command %s", cmd);
	return 0;
}
