# CLIP's jail manager (util-vserver's vsctl role) on Linux namespaces, and its in-jail probe: two small C
# programs in files/, written for CLIP (no upstream tarball), built with the profile's hardened flags
# (clip-toolchain.eclass: musl, PIE, RELRO, BIND_NOW, stack protector) as dynamically linked PIEs on musl.
# Security-critical code: every warning is an error, on top of the profile's CFLAGS.
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
	local p
	for p in clip-jail probe; do
		# The probe's path is compiled into the manager (CLIP_JAIL_PROBE): no run-time option chooses which
		# binary root executes inside a jail; the default is the path src_install uses.
		echo ${CC} ${CFLAGS} -Wall -Wextra -Werror ${CPPFLAGS} ${LDFLAGS} -o ${p} ${p}.c
		${CC} ${CFLAGS} -Wall -Wextra -Werror ${CPPFLAGS} ${LDFLAGS} -o ${p} ${p}.c || die "compile ${p} failed"
	done
}

src_install() {
	# Core tools at fixed paths: the boot script calls /sbin/clip-jail, which executes the probe by this path.
	exeinto /sbin
	doexe clip-jail
	exeinto /usr/libexec/clip-jail
	doexe probe
}
