# zlib as a shared library, built from Debian's zlib 1.2.13 source (its .orig tarball is upstream's release
# with the non-free contrib/ files removed, hence the "dfsg" name) against the pipeline's C library
# (clip-toolchain.eclass). Installs /usr/lib/libz.so.1 for the system; the header, libz.a, the libz.so link
# and zlib.pc are for builds only and stay out of the .deb (docs/packaging.md).
EAPI=8

inherit clip-toolchain

DESCRIPTION="Standard (de)compression library"
HOMEPAGE="https://zlib.net/"
# Debian's repacked tarball (fetch: debian mirror, Pins); no upstream file has these bytes.
SRC_URI="zlib_${PV}.dfsg.orig.tar.bz2"
S="${WORKDIR}/zlib-${PV}.dfsg"
LICENSE="ZLIB"
SLOT="0/1"
KEYWORDS="amd64"
RESTRICT="fetch mirror"

src_configure() {
	# zlib's own configure script (not autoconf): CC and the flags come from the environment (the eclass's);
	# without CHOST it takes the plain tool names (ar, ranlib) instead of ${CHOST}-ar, which Debian lacks.
	CHOST= ./configure --prefix=/usr --libdir=/usr/lib --sharedlibdir=/usr/lib --includedir=/usr/include ||
		die "configure failed"
}

src_compile() {
	# The libraries only: zlib's example programs are not part of the system.
	emake libz.a "libz.so.${PV}"
}

src_install() {
	emake DESTDIR="${D}" install
	rm -r "${ED}"/usr/share/man || die  # installed by make, not doman: FEATURES=noman does not see it
}
