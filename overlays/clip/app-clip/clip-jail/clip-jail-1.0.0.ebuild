# CLIP's jail manager (util-vserver's vsctl role) on Linux namespaces, and its in-jail probe: two small C
# programs in files/, written for CLIP (no upstream tarball), built with the profile's hardened flags
# (clip-toolchain.eclass: musl, PIE, RELRO, BIND_NOW, stack protector): the manager a PIE on musl, the probe
# static-pie (below).
# Security-critical code: every warning is an error, on top of the profile's CFLAGS. Also clip-jails, the boot
# script rcS runs: it starts the species' jails in CLIP's order and proves each from inside (docs/jails.md).
EAPI=8

inherit clip-toolchain

DESCRIPTION="CLIP jail manager: start, stop, enter, check and probe the jails of /etc/jails"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"

src_unpack() {
	cp "${FILESDIR}/clip-jail.c" "${FILESDIR}/probe.c" "${S}/" || die
}

src_compile() {
	local p link
	for p in clip-jail probe; do
		# The probe is static-pie: the manager executes the host's probe file inside a jail (execveat), so
		# it must not need a loader or libc in the jail's root. The manager is an ordinary PIE on musl.
		# The probe's path is compiled into the manager (CLIP_JAIL_PROBE): no run-time option chooses which
		# binary root executes inside a jail; the default is the path src_install uses.
		link=; [[ ${p} == probe ]] && link=-static-pie
		echo ${CC} ${CFLAGS} -Wall -Wextra -Werror ${CPPFLAGS} ${LDFLAGS} ${link} -o ${p} ${p}.c
		${CC} ${CFLAGS} -Wall -Wextra -Werror ${CPPFLAGS} ${LDFLAGS} ${link} -o ${p} ${p}.c || die "compile ${p} failed"
	done
}

src_install() {
	# Core tools at fixed paths: the boot script calls /sbin/clip-jail, which executes the probe by this path.
	exeinto /sbin
	doexe clip-jail
	exeinto /usr/libexec/clip-jail
	doexe probe
	exeinto /sbin
	doexe "${FILESDIR}/clip-jails"
}
