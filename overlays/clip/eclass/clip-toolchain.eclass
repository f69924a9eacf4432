# @ECLASS: clip-toolchain.eclass
# @BLURB: compile and link C against the C library the pipeline built (musl in ${ESYSROOT}), not the build root's
# @DESCRIPTION:
# The build root is Debian's, with Debian's gcc and glibc; the CLIP system runs on the musl that
# sys-libs/musl builds into the package set's ROOT. clipbuild runs emerge with SYSROOT=ROOT (EAPI 7+
# semantics), so a package's DEPEND is installed into the ROOT before it builds, and ${ESYSROOT} is that ROOT.
#
# Inheriting this eclass:
#  - DEPEND on sys-libs/musl and sys-kernel/linux-headers (in ${ESYSROOT} at build time, and part of the binary
#    package's key) and RDEPEND on musl (the .deb's Depends: musl); the headers are build-only;
#  - pkg_setup writes a gcc specs file in the style of musl-gcc, with ${ESYSROOT} in place of musl's prefix,
#    and points CC at a wrapper using it: headers from ${ESYSROOT}/usr/include and gcc's own freestanding
#    headers only (-nostdinc), start files and libraries from ${ESYSROOT}/usr/lib only (ld -nostdlib: none of
#    the build root's library directories is searched), /lib/ld-musl-x86_64.so.1 as the program interpreter
#    (-static-pie: rcrt1.o and no interpreter). The kernel's UAPI headers (linux/, asm/, mtd/...) are in
#    ${ESYSROOT}/usr/include too, beside musl's: sys-kernel/linux-headers installs them there from the kernel's
#    own pinned source tree (DEPEND), so nothing of the build root's headers is reachable. The profile's flags
#    apply (stack protector, stack clash protection, RELRO, BIND_NOW); Debian's gcc makes programs PIE by
#    default, so -pie leaves LDFLAGS (with -shared it would make gcc link a program) and programs stay PIE.
#    musl has no _FORTIFY_SOURCE: the flag would have no effect and is dropped; pkg-config (pkgconf) reads
#    only the .pc files in ${ESYSROOT} and prefixes their paths with it;
#  - pkg_preinst checks every ELF file of the image: programs use musl's loader, and every NEEDED library is
#    in the image itself or in ${EROOT} (never glibc's libc.so.6), so a program linked against the build
#    root by mistake stops the build.

case ${EAPI} in
	7|8) ;;
	*) die "${ECLASS}: EAPI ${EAPI} is not supported (ROOT/SYSROOT semantics need EAPI 7 or later)" ;;
esac

CLIP_LIBC_LOADER=/lib/ld-musl-x86_64.so.1
DEPEND="sys-libs/musl sys-kernel/linux-headers"
RDEPEND=">=sys-libs/musl-1.2.3"

# clip-toolchain_specs: the gcc specs file, for the C library in ${ESYSROOT}
clip-toolchain_specs() {
	local lib=${ESYSROOT}/usr/lib inc=${ESYSROOT}/usr/include
	cat <<-EOT
		%rename cpp_options old_cpp_options

		*cpp_options:
		-nostdinc -isystem ${inc} -isystem include%s %(old_cpp_options)

		*cc1:
		%(cc1_cpu) -nostdinc -isystem ${inc} -isystem include%s

		*link_libgcc:
		-L${lib} -L .%s

		*libgcc:
		libgcc.a%s %:if-exists(libgcc_eh.a%s)

		*startfile:
		%{static-pie: ${lib}/rcrt1.o;!shared: ${lib}/Scrt1.o} ${lib}/crti.o crtbeginS.o%s

		*endfile:
		crtendS.o%s ${lib}/crtn.o

		*link:
		%{static-pie:-static -pie --no-dynamic-linker -z text;!static:-dynamic-linker ${CLIP_LIBC_LOADER}} -nostdlib %{shared:-shared} %{static:-static} %{rdynamic:-export-dynamic}

		*esp_link:


		*esp_options:


		*esp_cpp_options:


	EOT
}

clip-toolchain_pkg_setup() {
	[[ ${MERGE_TYPE} == binary ]] && return
	[[ -f ${ESYSROOT}/usr/lib/libc.so && -f ${ESYSROOT}/usr/include/stdio.h ]] ||
		die "the C library is not in ESYSROOT='${ESYSROOT}': build with clipbuild build (SYSROOT=ROOT)"
	[[ -f ${ESYSROOT}/usr/include/linux/version.h && -f ${ESYSROOT}/usr/include/asm/unistd_64.h ]] ||
		die "the kernel headers (sys-kernel/linux-headers) are not in ESYSROOT='${ESYSROOT}'"
	local dir=${T}/clip-toolchain
	mkdir -p "${dir}" || die
	clip-toolchain_specs > "${dir}/musl.specs" || die
	printf '#!/bin/sh\nexec %s -specs=%s "$@"\n' "${BUILD_CC:-gcc}" "${dir}/musl.specs" > "${dir}/cc" || die
	chmod +x "${dir}/cc" || die
	export CC=${dir}/cc
	export BUILD_CC=${BUILD_CC:-gcc}
	local ldflags=" ${LDFLAGS} "
	export LDFLAGS=$(echo ${ldflags// -pie / })
	export CFLAGS=$(echo ${CFLAGS//-D_FORTIFY_SOURCE=?/})
	export CPPFLAGS=$(echo ${CPPFLAGS//-D_FORTIFY_SOURCE=?/})
	# pkg-config answers from the ROOT's .pc files only, with their paths under ${ESYSROOT}.
	export PKG_CONFIG_LIBDIR=${ESYSROOT}/usr/lib/pkgconfig:${ESYSROOT}/usr/share/pkgconfig
	export PKG_CONFIG_SYSROOT_DIR=${ESYSROOT%/} PKG_CONFIG_PATH=
	einfo "C toolchain: ${CC} (musl in ${ESYSROOT}, loader ${CLIP_LIBC_LOADER})"
}

# clip-toolchain_check_elf DIR: every ELF file under DIR uses musl's loader and finds its NEEDED libraries in
# DIR or ${EROOT}; dies naming the offending files.
clip-toolchain_check_elf() {
	local dir=$1 file interp needed lib bad=()
	while IFS=' ' read -r file; do
		interp=$(scanelf -qF '%i#F' "${file}")
		if [[ -n ${interp} && ${interp} != "${CLIP_LIBC_LOADER}" ]]; then
			bad+=( "${file#${dir}}: interpreter ${interp}" )
		fi
		needed=$(scanelf -qF '%n#F' "${file}")
		for lib in ${needed//,/ }; do
			[[ -e ${dir}/usr/lib/${lib} || -e ${dir}/lib/${lib} || -e ${EROOT%/}/usr/lib/${lib} ||
				-e ${EROOT%/}/lib/${lib} ]] || bad+=( "${file#${dir}}: NEEDED ${lib} is not in the system" )
		done
	done < <(scanelf -RyBF '%F' "${dir}")
	if [[ ${#bad[@]} -gt 0 ]]; then
		eerror "linked against something other than the pipeline's C library:"
		printf '  %s\n' "${bad[@]}" >&2
		die "ELF files not linked against ${CLIP_LIBC_LOADER} and the system's libraries"
	fi
}

clip-toolchain_pkg_preinst() {
	clip-toolchain_check_elf "${ED}"
}

EXPORT_FUNCTIONS pkg_setup pkg_preinst
