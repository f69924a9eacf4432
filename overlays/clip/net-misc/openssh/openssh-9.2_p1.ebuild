# OpenSSH portable from the upstream release tarball (Debian bookworm's openssh 1:9.2p1-2+deb12u10 .orig is the
# same bytes: checked against upstream's signature, debian/upstream/signing-key.asc), against the pipeline's
# musl, OpenSSL 3 and zlib (clip-toolchain.eclass). For the system: sshd, the server of CLIP's admin and audit
# jails, and ssh-keygen (host keys are made on the machine, never shipped); the client under USE=clip-ssh-client.
# The configuration is CLIP's own (files/sshd_config, files/ssh_config): key-only, no root login, no
# forwarding. No host key is in the package: host keys are per-machine secrets, provisioned separately.
EAPI=8

inherit clip-selftest clip-toolchain

DESCRIPTION="Secure shell: the sshd server and ssh-keygen; the ssh client with USE=clip-ssh-client"
HOMEPAGE="https://www.openssh.com/"
# Gentoo spells upstream's 9.2p1 as 9.2_p1 (the .deb's version is 9.2p1 again: docs/packaging.md).
MY_P=${PN}-${PV/_p/p}
SRC_URI="https://cdn.openbsd.org/pub/OpenBSD/OpenSSH/portable/${MY_P}.tar.gz"
S="${WORKDIR}/${MY_P}"
LICENSE="BSD GPL-2"
SLOT="0"
KEYWORDS="amd64"
IUSE="clip-ssh-client"

DEPEND="dev-libs/openssl sys-libs/zlib"
# The privilege separation user sshd and its chroot /var/empty come with CLIP's base layout.
RDEPEND=">=dev-libs/openssl-3.0.20 >=sys-libs/zlib-1.2.13"

# Debian's security fixes for the pinned 1:9.2p1-2+deb12u10, in the order of its debian/patches/series, for the
# code this package compiles (sshd, ssh-keygen, ssh, scp, sftp); each file's header says which CVE and what it
# fixes (docs/building.md, "Security fixes from Debian"). Left out of Debian's series: its own features
# (GSSAPI key exchange, whose gssapi.patch also carries the CVE-2026-3497 fix: no Kerberos here; TCP wrappers,
# SELinux role, systemd, the Debian banner, configuration defaults, documentation); the fixes for code not built
# here (CVE-2023-38408 ssh-agent/PKCS#11 and CVE-2023-51384 ssh-agent, CVE-2023-28531 ssh-add smartcards);
# the sntrup761x25519-sha512 alias (a new algorithm name, not a fix); the regress/ test patches (not run).
PATCHES=(
	"${FILESDIR}"/CVE-2023-48795.patch
	"${FILESDIR}"/CVE-2023-51385.patch
	# CVE-2024-6387 (regreSSHion)
	"${FILESDIR}"/Disable-async-signal-unsafe-code-from-the-sshsigdie-.patch
	"${FILESDIR}"/CVE-2025-26465.patch
	"${FILESDIR}"/incorrect-return-values.patch
	# CVE-2025-32728
	"${FILESDIR}"/fix-disable-forwarding.patch
	"${FILESDIR}"/CVE-2025-61984.patch
	"${FILESDIR}"/CVE-2025-61985.patch
	"${FILESDIR}"/CVE-2026-35388.patch
	"${FILESDIR}"/CVE-2026-35385.patch
	"${FILESDIR}"/CVE-2026-35387.patch
	"${FILESDIR}"/CVE-2026-35414.patch
	"${FILESDIR}"/prohibit-comma-in-hostnames.patch
	"${FILESDIR}"/CVE-2026-35386-1.patch
	"${FILESDIR}"/CVE-2026-35386-2.patch
)

src_configure() {
	# Autoconf, told it cross-compiles (host x86_64-pc-linux-musl): the programs it links against the ROOT's
	# musl cannot run in the build root (no musl loader there), so its run tests (the OpenSSL header/library
	# match among them) take their cross-compiling answers instead of failing. Nothing here needs them: the
	# OpenSSL is the one this build just linked. Autoconf then finds no x86_64-pc-linux-musl-ar and uses ar.
	#
	# OpenSSH's own toolchain hardening stays on (its default): it adds what it finds the compiler supports,
	# -fPIE/-pie, -z relro -z now -z noexecstack, -ftrapv, -fzero-call-used-regs=all,
	# -ftrivial-auto-var-init=zero, on top of the profile's flags. (It also adds -D_FORTIFY_SOURCE=2, which does
	# nothing on musl.) Privilege separation: the unprivileged child runs as sshd, chrooted in /var/empty, under
	# the seccomp-bpf sandbox (asked for by name: configure fails rather than fall back to rlimit).
	#
	# Left out: PAM (none in the image yet), Kerberos, LDNS (DNSSEC SSHFP), libedit (sftp line editing), SELinux,
	# Linux audit, FIDO/U2F security keys and PKCS#11 tokens (no helpers), and lastlog/utmp/wtmp, which musl
	# only stubs. X11 forwarding is refused by the configuration (sshd_config).
	local conf=(
		--build=x86_64-pc-linux-gnu --host=x86_64-pc-linux-musl
		--prefix=/usr --sbindir=/sbin --sysconfdir=/etc/ssh --libexecdir=/usr/lib/ssh --localstatedir=/var
		--disable-strip
		--with-privsep-path=/var/empty --with-privsep-user=sshd --with-sandbox=seccomp_filter
		--with-pid-dir=/run
		--without-pam --without-kerberos5 --without-ldns --without-libedit --without-selinux --without-audit
		--disable-security-key --without-security-key-builtin --disable-pkcs11 --without-ssl-engine
		--disable-lastlog --disable-utmp --disable-utmpx --disable-wtmp --disable-wtmpx
	)
	echo ./configure "${conf[@]}"
	./configure "${conf[@]}" || die "configure failed"
	# What configure chose (compiler and linker flags, libraries), in the log; the sandbox and OpenSSL checked.
	grep -E '^(CC|CFLAGS|CPPFLAGS|LDFLAGS|LIBS|CHANNELLIBS|SSHDLIBS) *=' Makefile || die
	grep -q '^#define SANDBOX_SECCOMP_FILTER 1' config.h || die "no seccomp sandbox"
	grep -q '^#define WITH_OPENSSL 1' config.h || die "not built with OpenSSL"
}

src_compile() {
	# Only the programs the system installs (the full build also makes ssh-agent, ssh-add, ssh-keyscan,
	# ssh-keysign, sftp-server and the helpers).
	local targets=( sshd ssh-keygen )
	use clip-ssh-client && targets+=( ssh scp sftp )
	emake "${targets[@]}"
}

src_install() {
	# /sbin/sshd: where CLIP's jail definitions start it (jails/admin.yaml, jails/audit.yaml: cmd).
	into /
	dosbin sshd
	into /usr
	dobin ssh-keygen
	insinto /etc/ssh
	doins "${FILESDIR}"/sshd_config
	if use clip-ssh-client; then
		dobin ssh scp sftp
		doins "${FILESDIR}"/ssh_config
	fi
	# At boot: sshd -t and -T with a throwaway host key (in /run, never kept): CLIP's rules in force.
	clip-selftest_install
}
