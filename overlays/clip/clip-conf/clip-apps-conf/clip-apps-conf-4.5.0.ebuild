# CLIP apps configuration: the exact versions of the live-updated packages
# Like CLIP OS 4's clip-conf packages: RDEPEND pins exact versions, under species USE conditionals; the
# update repository of this (distribution, part) holds exactly these versions.
EAPI=8

DESCRIPTION="CLIP apps configuration: the exact versions of the live-updated packages"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="core-rm clip-gtw"

RDEPEND="
"

src_install() {
	# Apps packages install below CPREFIX (/usr/local, the /mounts/usr partition seen from the core).
	echo "${PVR}" > "${T}/clip-apps-release" || die
	insinto "${CPREFIX:-/usr/local}/share/clip"
	doins "${T}/clip-apps-release"
}
