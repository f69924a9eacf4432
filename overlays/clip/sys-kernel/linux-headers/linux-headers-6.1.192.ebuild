# The kernel's userspace API headers (linux/, asm/, asm-generic/, mtd/...), made with the kernel's own
# `make headers` from the same Debian linux-source-6.1 tarball sys-kernel/clip-kernel builds (same distfile,
# same Manifest line: its Debian pin is clip-kernel's Pins, and `clipbuild distfiles pin sys-kernel/clip-kernel`
# moves both packages). clip-toolchain.eclass DEPENDs on it: every C package compiles against these headers in
# ${ESYSROOT}/usr/include, beside musl's, instead of the build root's Debian linux-libc-dev.
#
# Headers only, and everything under /usr/include stays out of the .deb (docs/packaging.md, "Build-only
# files"): a build-time dependency, as in Gentoo (the C library's DEPEND there), not pinned in clip-core-conf.
EAPI=8

DESCRIPTION="Linux kernel UAPI headers, from the CLIP kernel's source tree"
HOMEPAGE="https://www.kernel.org/"
SRC_URI="linux-source-6.1.tar.xz"
S="${WORKDIR}/linux-source-6.1"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
RESTRICT="fetch mirror strip"

# What `make headers` reads: the top Makefile and kbuild (scripts/), the generic and x86 UAPI trees (include/,
# arch/x86/, whose syscall tables make asm/unistd_*.h), usr/ (the header install rules) and tools/include (the
# x86 relocs helper built by archscripts): 74 MB of the 1.5 GB tree. The xz stream is read whole either way
# (about 7 CPU s), but writing 74 MB instead of 1.5 GB took 13 CPU s instead of 37 (measured on a loaded
# machine: 17-19 s against 14-64 s of wall time, depending on the page cache).
HEADERS_TREE=( Makefile scripts include arch/x86 usr tools/include )

src_unpack() {
	tar -xJf "${DISTDIR}/${A}" -C "${WORKDIR}" "${HEADERS_TREE[@]/#/linux-source-6.1/}" || die "unpacking failed"
}

headers_make() {
	# Build-machine helpers (fixdep, unifdef, relocs) use the build root's compiler: they run here.
	emake -s ARCH=x86_64 HOSTCC="${BUILD_CC:-gcc}" "$@"
}

src_configure() {
	local version
	version=$(headers_make kernelversion) || die
	[[ ${version} == "${PV}" ]] ||
		die "the tarball is Linux ${version}, this ebuild ${PV}: rename the ebuild with the kernel's pin"
}

src_compile() {
	headers_make headers
}

src_install() {
	# `make headers_install` is `make headers` then an rsync of usr/include's *.h files (empty folders pruned);
	# the build root has no rsync, so the same copy is made here.
	dodir /usr
	cd usr || die
	find include -name '*.h' -exec cp --parents -t "${ED}/usr" {} + || die
}
