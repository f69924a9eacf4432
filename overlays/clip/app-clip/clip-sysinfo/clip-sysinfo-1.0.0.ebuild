# A CLIP tool in C, built with the profile's hardened flags: reports the booted slot, release and root state.
EAPI=8

DESCRIPTION="Report what a CLIP system booted: release, A/B slot, read-only verity root, jails"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="+static"

src_unpack() {
	cp "${FILESDIR}/clip-sysinfo.c" "${S}/" || die
}

src_compile() {
	# static-pie: the embedded default build root packages no C library, so run-time code is self-contained.
	local link=$(usex static -static-pie -pie)
	echo ${CC:-gcc} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} ${link} -o clip-sysinfo clip-sysinfo.c
	${CC:-gcc} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} ${link} -o clip-sysinfo clip-sysinfo.c || die "compile failed"
}

src_install() {
	exeinto "${CPREFIX:-/usr}/bin"
	doexe clip-sysinfo
}
