# The C library of the CLIP system: musl from the upstream release tarball (Debian's musl 1.2.3-1 .orig is the
# same bytes), built with the profile's hardened flags. It installs the dynamic loader
# /lib/ld-musl-x86_64.so.1 (a link to /usr/lib/libc.so, which is both the loader and the library), the headers,
# the start files and libc.a. Headers, start files and static archives stay in the build's ROOT (the SYSROOT
# the other packages compile against, clip-toolchain.eclass); the .deb leaves them out (docs/packaging.md).
# musl has no _FORTIFY_SOURCE implementation: the profile's -D_FORTIFY_SOURCE=2 has no effect on programs
# built against it (docs/building.md, "The C library").
EAPI=8

DESCRIPTION="Light, fast and simple C library focused on standards-conformance and safety"
HOMEPAGE="https://musl.libc.org/"
SRC_URI="https://musl.libc.org/releases/${P}.tar.gz"
LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
# libc.so is also the dynamic loader, named by path (PT_INTERP), never by soname: programs record NEEDED
# libc.so. musl's build strips crtn.o itself.
QA_SONAME="usr/lib/libc.so"
QA_PRESTRIPPED="usr/lib/crtn.o"

src_configure() {
	# libc.so is a shared object, not a program: the profile's -pie would clash with -shared. musl compiles
	# its shared objects with -fPIC after CFLAGS, so the profile's -fPIE is overridden where it must be;
	# -fstack-protector-strong applies, except to the early start-up and loader code musl builds without it.
	local -x LDFLAGS=" ${LDFLAGS} "
	LDFLAGS=${LDFLAGS// -pie / }
	local -x CFLAGS=${CFLAGS//-D_FORTIFY_SOURCE=?/}
	echo ./configure --prefix=/usr --libdir=/usr/lib --includedir=/usr/include --syslibdir=/lib --disable-wrapper \
		CC="${CC:-gcc}" CFLAGS="${CFLAGS}" LDFLAGS="${LDFLAGS}"
	./configure --prefix=/usr --libdir=/usr/lib --includedir=/usr/include --syslibdir=/lib --disable-wrapper \
		CC="${CC:-gcc}" CFLAGS="${CFLAGS}" LDFLAGS="${LDFLAGS}" || die "configure failed"
}

src_compile() {
	emake
}

src_install() {
	emake DESTDIR="${D}" install
	# A relative link, so the tree is the same wherever it is unpacked (ROOT, image, dpkg --root).
	rm "${ED}"/lib/ld-musl-x86_64.so.1 || die
	dosym -r /usr/lib/libc.so /lib/ld-musl-x86_64.so.1
}
