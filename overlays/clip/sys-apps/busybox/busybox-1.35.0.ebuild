# BusyBox as the CLIP userland, built from the upstream release tarball with the profile's hardened flags:
# a PIE linked dynamically against the system's musl (clip-toolchain.eclass), or static-pie against it with
# USE=static.
EAPI=8

inherit clip-toolchain

DESCRIPTION="Utilities for rescue and embedded systems"
HOMEPAGE="https://www.busybox.net/"
SRC_URI="https://www.busybox.net/downloads/${P}.tar.bz2"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
IUSE="static"

bb_config() {
	# bb_config NAME y|n: set one option in .config
	sed -i -e "/^CONFIG_$1=/d" -e "/^# CONFIG_$1 is not set/d" .config || die
	if [[ $2 == y ]]; then echo "CONFIG_$1=y" >> .config; else echo "# CONFIG_$1 is not set" >> .config; fi
}

src_configure() {
	emake -s defconfig
	# Not CONFIG_PIE/CONFIG_STATIC: busybox passes their flags to partial links too ("-r and -pie may not be
	# used together"). -fPIE comes with CFLAGS, -static-pie and LDFLAGS go to the final link only.
	bb_config PIE n
	bb_config STATIC n
	bb_config TC n          # needs kernel headers newer than the build root's for CBQ
	bb_config FEATURE_SUID n
	bb_config INSTALL_NO_USR y
	bb_config IP n          # /sbin/ip is iproute2's (sys-apps/iproute2: ip xfrm); ipaddr, iplink... stay
	yes "" | emake -s oldconfig >/dev/null
}

bb_make() {
	# The same variables for build and install: busybox re-links when its command line changes. Its final
	# link reads CFLAGS_busybox, then LDFLAGS from the environment (also used by partial links), so the
	# profile's -pie leaves LDFLAGS and the link mode goes to CFLAGS_busybox.
	# clip-toolchain.eclass took -pie out of LDFLAGS (its compiler makes programs PIE by default).
	local link=-pie
	use static && link=-static-pie
	emake V=1 CC="${CC}" HOSTCC="${BUILD_CC:-gcc}" EXTRA_CFLAGS="${CFLAGS}" \
		CFLAGS_busybox="${link}" SKIP_STRIP=y "$@"
}

src_compile() {
	bb_make busybox
}

src_install() {
	bb_make CONFIG_PREFIX="${ED}" install
}
