# A CLIP tool in C, built with the profile's hardened flags: reports the booted slot, release and root state.
# A dynamically linked PIE against the system's own libraries (clip-toolchain.eclass): musl's loader and
# libc, and zlib, whose version it reports, so the boot check proves both load from the image.
# Also clip-selftest, which runs the packages' boot self-tests (clip-selftest.eclass) before the check.
EAPI=8

inherit clip-toolchain

DESCRIPTION="Report what a CLIP system booted: release, A/B slot, read-only verity root, jails"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"

DEPEND="sys-libs/zlib"
RDEPEND=">=sys-libs/zlib-1.2.13"

src_unpack() {
	cp "${FILESDIR}/clip-sysinfo.c" "${S}/" || die
}

src_compile() {
	echo ${CC} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} -o clip-sysinfo clip-sysinfo.c -lz
	${CC} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} -o clip-sysinfo clip-sysinfo.c -lz || die "compile failed"
}

src_install() {
	exeinto "${CPREFIX:-/usr}/bin"
	doexe clip-sysinfo
	exeinto "${CPREFIX:-/usr}/sbin"
	doexe "${FILESDIR}/clip-selftest"
}
