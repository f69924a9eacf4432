# A CLIP tool in C, built with the profile's hardened flags: reports the booted slot, release and root state.
# A dynamically linked PIE against the system's own libraries (clip-toolchain.eclass): musl's loader and
# libc, and zlib, whose version it reports, so the boot check proves both load from the image.
# Also clip-selftest, which runs the packages' boot self-tests (clip-selftest.eclass) before the check.
# 1.1.0: the UEFI boot path's proof (the CLIP_UEFI line: clip-efi.c) and the blessing of the entry systemd-boot
# counts the tries of, once the check passed (clip-bless.c).
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

CLIP_SYSINFO_SOURCES=( clip-sysinfo.c clip-efi.c clip-bless.c )

src_unpack() {
	cp "${CLIP_SYSINFO_SOURCES[@]/#/${FILESDIR}/}" "${FILESDIR}/clip-efi.h" "${S}/" || die
}

src_compile() {
	echo ${CC} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} -o clip-sysinfo "${CLIP_SYSINFO_SOURCES[@]}" -lz
	${CC} ${CFLAGS} ${CPPFLAGS} ${LDFLAGS} -o clip-sysinfo "${CLIP_SYSINFO_SOURCES[@]}" -lz || die "compile failed"
}

src_install() {
	exeinto "${CPREFIX:-/usr}/bin"
	doexe clip-sysinfo
	exeinto "${CPREFIX:-/usr}/sbin"
	doexe "${FILESDIR}/clip-selftest"
}
