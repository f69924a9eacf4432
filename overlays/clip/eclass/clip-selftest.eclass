# @ECLASS: clip-selftest.eclass
# @BLURB: ship a package's boot self-test, run inside the booted system by clip-selftest (app-clip/clip-sysinfo)
# @DESCRIPTION:
# What an image claims about its programs is proven by running them inside the booted system (docs/image.md,
# "Self-tests at boot"). Call clip-selftest_install in src_install: it ships ${FILESDIR}/selftest as
# /usr/libexec/clip-selftest/${PN}. At boot, clip-selftest runs every file there before clip-sysinfo --check
# prints the marker, and the host's `clipbuild vm --check` requires each test the booted slot ships to report
# "ok". A self-test is a busybox sh script that:
#  - prints first one line saying what it proved (shown on the console), e.g. the program's version;
#  - exercises the package for real (a round trip through the kernel, a key generated and used), not only
#    --version, where the package can be exercised without the network or secrets;
#  - exits non-zero on any failure (use `set -e`), leaves nothing behind outside ${CLIP_SELFTEST_TMP} (a
#    private folder on /run), and restores any kernel state it changed (tables, XFRM states);
#  - may print "marker: KEY=VALUE" lines (no spaces) to name what the system runs in the boot marker.

clip-selftest_install() {
	exeinto /usr/libexec/clip-selftest
	newexe "${FILESDIR}/selftest" "${PN}"
}
