# @ECLASS: clip-kernel.eclass
# @BLURB: a CLIP kernel: the project's patch series, configuration fragments checked, reproducible bzImage
# @DESCRIPTION:
# clipbuild mounts the project's kernel-patches/ read-only at ${CLIP_KERNEL_DIR}, names the profile's
# configuration fragments in ${CLIP_KERNEL_FRAGMENTS} (paths relative to the project) and provides its
# fragment checker at ${CLIP_KCONFIG}; it keys the binary package on all of them.
#  - src_prepare applies ${CLIP_KERNEL_DIR}/series in order; a patch that does not apply stops the build,
#    named.
#  - src_configure: tinyconfig, the fragments merged, olddefconfig, then every requested value is checked
#    against the final .config: a dropped, renamed or changed option stops the build, named with its unmet
#    dependency.
#  - src_compile builds bzImage with fixed KBUILD_BUILD_* values, so it is reproducible.
#  - When clipbuild mounts a writable compiler cache at ${CCACHE_DIR}, the compiler runs through ccache:
#    the same sources and flags give the same objects, so only the time changes.
#  - src_install ships /boot/vmlinuz-clip and the final configuration as /boot/config-${PV}-clip.

CLIP_KERNEL_MAKE=( ARCH=x86_64 O="${WORKDIR}/build" KBUILD_BUILD_USER=clip KBUILD_BUILD_HOST=clipbuild
	KBUILD_BUILD_VERSION=1 KBUILD_BUILD_TIMESTAMP="1970-01-01 00:00:00 UTC" HOSTCC="${BUILD_CC:-gcc}" )

# make with the kernel's fixed variables, and ccache in front of the compiler when clipbuild mounted a
# writable compiler cache. Portage disables ccache without FEATURES=ccache (CCACHE_DISABLE): the kernel
# opts in by itself, so no other package's build changes.
clip-kernel_emake() {
	local args=( "${CLIP_KERNEL_MAKE[@]}" )
	if [[ -n ${CCACHE_DIR} && -d ${CCACHE_DIR} && -w ${CCACHE_DIR} ]] && type -P ccache > /dev/null; then
		local -x CCACHE_NODISABLE=1
		args+=( CC="ccache ${CC:-gcc}" )
	fi
	emake "${args[@]}" "$@"
}

clip-kernel_check_environment() {
	[[ -d ${CLIP_KERNEL_DIR} && -f ${CLIP_KERNEL_DIR}/series && -f ${CLIP_KCONFIG} && -n ${CLIP_KERNEL_FRAGMENTS} ]] ||
		die "CLIP_KERNEL_DIR, CLIP_KERNEL_FRAGMENTS and CLIP_KCONFIG are not set: build with clipbuild build"
}

clip-kernel_src_prepare() {
	clip-kernel_check_environment
	default
	local patch
	while read -r patch; do
		[[ -z ${patch} || ${patch} == \#* ]] && continue
		einfo "kernel patch ${patch}"
		if ! patch -p1 --forward --batch -i "${CLIP_KERNEL_DIR}/${patch}" > "${T}/patch.log" 2>&1; then
			cat "${T}/patch.log"
			die "kernel patch ${patch} does not apply (series ${CLIP_KERNEL_DIR}/series)"
		fi
	done < "${CLIP_KERNEL_DIR}/series"
}

clip-kernel_fragments() {
	local fragment
	for fragment in ${CLIP_KERNEL_FRAGMENTS}; do
		echo "${CLIP_KERNEL_DIR}/${fragment#kernel-patches/}"
	done
}

clip-kernel_src_configure() {
	clip-kernel_check_environment
	local fragments=( $(clip-kernel_fragments) )
	clip-kernel_emake -s tinyconfig
	python3 "${CLIP_KCONFIG}" merge "${fragments[@]}" > "${T}/fragment" || die "reading the fragments failed"
	echo "CONFIG_CLIP_BUILD_ID=\"${PVR}\"" >> "${T}/fragment"
	( cd "${WORKDIR}" && "${S}"/scripts/kconfig/merge_config.sh -m -O build build/.config "${T}/fragment" ) \
		> "${T}/merge.log" 2>&1 || { cat "${T}/merge.log"; die "merging the fragments failed"; }
	clip-kernel_emake -s olddefconfig
	python3 "${CLIP_KCONFIG}" check --tree "${S}" --config "${WORKDIR}/build/.config" "${fragments[@]}" ||
		die "kernel configuration: requested values were not kept (listed above)"
}

clip-kernel_src_compile() {
	clip-kernel_emake bzImage
	if [[ -n ${CCACHE_DIR} && -w ${CCACHE_DIR} ]] && type -P ccache > /dev/null; then
		CCACHE_NODISABLE=1 ccache --show-stats
	fi
}

clip-kernel_src_install() {
	insinto /boot
	newins "${WORKDIR}/build/arch/x86/boot/bzImage" vmlinuz-clip
	newins "${WORKDIR}/build/.config" "config-${PV}-clip"
}

EXPORT_FUNCTIONS src_prepare src_configure src_compile src_install
