/* clip-jail's in-jail probe: run by `clip-jail NAME probe` inside the jail (its namespaces, capabilities,
 * no_new_privs), it checks what the jail looks like from inside and prints one line per rule:
 * `RULE ok|FAILED|skipped DETAIL`, plus `ns NAME ID` lines the manager compares with the host's.
 * Arguments (from the manager): --name N [--mark] --pidns yes|no --netns yes|no --caps HEX --hostname H
 * --mount DST... --writable DST:noexec|exec... --addr A... --reach ADDR:PORT:yes|no...
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXL 64
static const char *name = "", *caps = "", *host = "", *pidns = "no", *netns = "no";
static const char *mounts[MAXL], *writable[MAXL], *addrs[MAXL], *reach[MAXL];
static int nm, nw, na, nr, mark;

static void rule(const char *r, const char *res, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rule(const char *r, const char *res, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s %s ", r, res);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

static int read_file(const char *p, char *b, size_t n)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t k = read(fd, b, n - 1);
	close(fd);
	if (k < 0)
		return -1;
	b[k] = 0;
	return 0;
}

static void namespaces(void)
{
	static const char *ns[] = {"mnt", "pid", "net", "ipc", "uts", "cgroup"};
	for (int i = 0; i < 6; i++) {
		char p[64], l[64] = {0};
		snprintf(p, sizeof p, "/proc/self/ns/%s", ns[i]);
		char *b = readlink(p, l, sizeof l - 1) > 0 ? strchr(l, '[') : NULL;
		if (b)
			printf("ns %s %lu\n", ns[i], strtoul(b + 1, NULL, 10));
	}
}

/* The number of levels in a process's NSpid line: equal to ours iff it is in our pid namespace. */
static int nspid_depth(const char *pid)
{
	char p[64], b[4096];
	snprintf(p, sizeof p, "/proc/%s/status", pid);
	if (read_file(p, b, sizeof b) < 0)
		return -1;
	char *l = strstr(b, "\nNSpid:");
	if (!l)
		return -1;
	int n = 0;
	for (char *s = l + 7; *s && *s != '\n'; s++)
		if ((*s == ' ' || *s == '\t') && s[1] >= '0' && s[1] <= '9')
			n++;
	return n;
}
static void processes(void)
{
	if (strcmp(pidns, "yes")) {
		rule("processes", "skipped", "no own pid namespace (nsopts lacks pid): the host's processes are visible");
		return;
	}
	char comm[64];
	if (read_file("/proc/1/comm", comm, sizeof comm) < 0 || strcmp(comm, "clip-jail-init\n")) {
		rule("processes", "FAILED", "pid 1 is not clip-jail-init");
		return;
	}
	int own = nspid_depth("self"), n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	if (!d || own < 1) {
		rule("processes", "FAILED", "cannot read /proc");
		return;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		int k = nspid_depth(e->d_name);
		if (k < 0 && errno == ENOENT)
			continue; /* exited meanwhile */
		if (k != own) {
			rule("processes", "FAILED", "process %s is not in the jail's pid namespace", e->d_name);
			closedir(d);
			return;
		}
		n++;
	}
	closedir(d);
	rule("processes", "ok", "%d processes, all in the jail's pid namespace, pid 1 clip-jail-init", n);
}

static void root_readonly(void)
{
	int fd = open("/.clip-probe", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		unlink("/.clip-probe");
		rule("root-readonly", "FAILED", "created /.clip-probe");
	} else if (errno != EROFS)
		rule("root-readonly", "FAILED", "open /.clip-probe: %s (EROFS expected)", strerror(errno));
	else
		rule("root-readonly", "ok", "/ is read-only (EROFS)");
}

static void noexec(void)
{
	for (int i = 0; i < nw; i++) {
		char dst[PATH_MAX], p[PATH_MAX + 64];
		snprintf(dst, sizeof dst, "%s", writable[i]);
		char *c = strrchr(dst, ':');
		if (!c) {
			rule("noexec", "FAILED", "bad argument %s", writable[i]);
			return;
		}
		*c++ = 0;
		int want_exec = !strcmp(c, "exec");
		snprintf(p, sizeof p, "%s/.clip-probe-exec-%d", strcmp(dst, "/") ? dst : "", (int)getpid());
		int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
		if (fd < 0) {
			rule("noexec", "FAILED", "cannot write %s: %s", p, strerror(errno));
			return;
		}
		static const char script[] = "#!/bin/sh\nexit 0\n";
		int ok = write(fd, script, sizeof script - 1) == (ssize_t)sizeof script - 1;
		ok = close(fd) == 0 && ok && chmod(p, 0755) == 0;
		int st = -1, e = 0, ep[2];
		if (ok && pipe2(ep, O_CLOEXEC) == 0) {
			pid_t c2 = fork();
			if (c2 == 0) {
				char *av[] = {p, NULL}, *env[] = {NULL};
				execve(p, av, env);
				e = errno;
				if (write(ep[1], &e, sizeof e) < 0)
					_exit(126);
				_exit(126);
			}
			close(ep[1]);
			if (c2 < 0 || read(ep[0], &e, sizeof e) != (ssize_t)sizeof e)
				e = 0;
			close(ep[0]);
			if (c2 > 0)
				waitpid(c2, &st, 0);
		}
		unlink(p);
		if (!ok)
			rule("noexec", "FAILED", "cannot write the script %s", p);
		else if (!want_exec && e != EACCES)
			rule("noexec", "FAILED", "%s is executable (%s)", dst, e ? strerror(e) : "the script ran");
		else if (want_exec && (e || !WIFEXITED(st) || WEXITSTATUS(st)))
			rule("noexec", "FAILED", "%s should be executable: %s", dst, e ? strerror(e) : "the script failed");
		else
			continue;
		return;
	}
	rule("noexec", "ok", "%d writable mount(s) behave as listed", nw);
}

static void capabilities(void)
{
	char b[4096];
	static const char *f[] = {"CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"};
	unsigned long long want = strtoull(caps, NULL, 16);
	if (read_file("/proc/self/status", b, sizeof b) < 0) {
		rule("capabilities", "FAILED", "/proc/self/status: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < 4; i++) {
		char *l = strstr(b, f[i]);
		unsigned long long v = l ? strtoull(l + strlen(f[i]), NULL, 16) : ~0ULL;
		if (v != (i == 3 ? 0 : want)) {
			rule("capabilities", "FAILED", "%s %llx, expected %llx", f[i], v, i == 3 ? 0 : want);
			return;
		}
	}
	rule("capabilities", "ok", "CapEff=CapPrm=CapBnd=%llx CapAmb=0", want);
}

static void no_new_privs(void)
{
	char b[4096];
	char *l = read_file("/proc/self/status", b, sizeof b) == 0 ? strstr(b, "NoNewPrivs:") : NULL;
	if (l && atoi(l + 11) == 1)
		rule("no-new-privs", "ok", "NoNewPrivs: 1");
	else
		rule("no-new-privs", "FAILED", "NoNewPrivs is not 1");
}

static void mountlist(void)
{
	FILE *fp = fopen("/proc/self/mountinfo", "re");
	char l[4096], mp[PATH_MAX];
	int n = 0;
	if (!fp) {
		rule("mounts", "FAILED", "mountinfo: %s", strerror(errno));
		return;
	}
	while (fgets(l, sizeof l, fp)) {
		int k = -1;
		if (sscanf(l, "%*s %*s %*s %*s %4095s", mp) == 1)
			for (int i = 0; i < nm && k < 0; i++)
				if (!strcmp(mounts[i], mp))
					k = i;
		if (k < 0) {
			rule("mounts", "FAILED", "unexpected mount %s", mp);
			fclose(fp);
			return;
		}
		n++;
	}
	fclose(fp);
	rule("mounts", "ok", "%d mounts, all the manager's", n);
}

static void hostname(void)
{
	struct utsname u;
	if (uname(&u) == 0 && !strcmp(u.nodename, host))
		rule("hostname", "ok", "%s", host);
	else
		rule("hostname", "FAILED", "nodename '%s', expected '%s'", u.nodename, host);
}

/* TCP connect with a 1 s timeout: 1 connected, 0 refused or timed out. */
static int tcp(const char *a, int port)
{
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), r = 0;
	if (fd < 0 || inet_pton(AF_INET, a, &s.sin_addr) != 1)
		return fd < 0 ? 0 : (close(fd), 0);
	if (connect(fd, (struct sockaddr *)&s, sizeof s) == 0)
		r = 1;
	else if (errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int e = 0;
		socklen_t len = sizeof e;
		if (poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0)
			r = 1;
	}
	close(fd);
	return r;
}
static void network(void)
{
	{ /* own netns: on its lo; host netns (IKE): the manager put them on the host's lo */
		struct ifaddrs *ifa, *i;
		if (getifaddrs(&ifa) < 0) {
			rule("network", "FAILED", "getifaddrs: %s", strerror(errno));
			return;
		}
		for (int k = 0; k < na; k++) {
			int found = 0;
			for (i = ifa; i && !found; i = i->ifa_next) {
				char b[16];
				if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
				    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, b, sizeof b) &&
				    !strcmp(b, addrs[k]))
					found = 1;
			}
			if (!found) {
				freeifaddrs(ifa);
				rule("network", "FAILED", "own address %s not configured", addrs[k]);
				return;
			}
		}
		freeifaddrs(ifa);
	}
	for (int k = 0; k < nr; k++) {
		char a[64];
		int port;
		char yn[4];
		if (sscanf(reach[k], "%63[^:]:%d:%3s", a, &port, yn) != 3) {
			rule("network", "FAILED", "bad argument %s", reach[k]);
			return;
		}
		int want = !strcmp(yn, "yes"), got = tcp(a, port);
		for (int t = 1; want && !got && t < 5; t++) { /* the daemon may still be starting */
			sleep(1);
			got = tcp(a, port);
		}
		if (got != want) {
			rule("network", "FAILED", "%s:%d %s", a, port, want ? "unreachable (own endpoint)" : "reachable (another jail's)");
			return;
		}
	}
	rule("network", "ok", "%d own address(es) on %s lo, %d endpoint(s) as expected", na,
	     strcmp(netns, "yes") ? "the host's" : "the jail's", nr);
}

static int walked, found_other;
static void walk(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	if (!d || depth > 64)
		goto out;
	while ((e = readdir(d)) && walked < 20000) {
		char p[PATH_MAX];
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof p, "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name);
		walked++;
		if (!strcmp(p, "/proc") || !strcmp(p, "/sys") || !strcmp(p, "/dev") || lstat(p, &st) < 0)
			continue;
		if (!strncmp(e->d_name, ".clip-probe-", 12) && strcmp(e->d_name + 12, name) &&
		    strncmp(e->d_name, ".clip-probe-exec-", 17)) {
			printf("  another jail's mark: %s\n", p);
			found_other++;
		}
		if (S_ISDIR(st.st_mode))
			walk(p, depth + 1);
	}
out:
	if (d)
		closedir(d);
}
static void homes(void)
{
	if (mark) {
		int writable_home = 0;
		for (int i = 0; i < nw; i++)
			if (!strncmp(writable[i], "/home/user:", 11))
				writable_home = 1;
		if (!writable_home) {
			rule("homes", "skipped", "no writable /home/user to mark");
			return;
		}
		char p[PATH_MAX];
		snprintf(p, sizeof p, "/home/user/.clip-probe-%s", name);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
		int ok = fd >= 0 && write(fd, name, strlen(name)) == (ssize_t)strlen(name);
		if (fd >= 0 && close(fd) < 0)
			ok = 0;
		if (ok)
			rule("homes", "ok", "marked %s", p);
		else
			rule("homes", "FAILED", "cannot write %s: %s", p, strerror(errno));
		return;
	}
	walk("/", 0);
	if (found_other)
		rule("homes", "FAILED", "%d other jail mark(s) visible (paths above)", found_other);
	else if (walked >= 20000) /* fail closed: what was not walked was not proven */
		rule("homes", "FAILED", "more than 20000 entries: the walk stopped before seeing everything");
	else
		rule("homes", "ok", "no other jail's mark among %d entries", walked);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--mark")) {
			mark = 1;
			continue;
		}
		if (!v)
			goto usage;
		i++;
		if (!strcmp(a, "--name"))
			name = v;
		else if (!strcmp(a, "--pidns"))
			pidns = v;
		else if (!strcmp(a, "--netns"))
			netns = v;
		else if (!strcmp(a, "--caps"))
			caps = v;
		else if (!strcmp(a, "--hostname"))
			host = v;
		else if (!strcmp(a, "--mount") && nm < MAXL)
			mounts[nm++] = v;
		else if (!strcmp(a, "--writable") && nw < MAXL)
			writable[nw++] = v;
		else if (!strcmp(a, "--addr") && na < MAXL)
			addrs[na++] = v;
		else if (!strcmp(a, "--reach") && nr < MAXL)
			reach[nr++] = v;
		else
			goto usage;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	namespaces();
	processes();
	root_readonly();
	noexec();
	capabilities();
	no_new_privs();
	mountlist();
	hostname();
	network();
	homes();
	return 0;
usage:
	fprintf(stderr, "probe: bad arguments (run by clip-jail NAME probe)\n");
	return 2;
}
