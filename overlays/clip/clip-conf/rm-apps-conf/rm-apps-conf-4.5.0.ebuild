# RM apps configuration: the exact versions of the RM jails live-updated packages
# Like CLIP OS 4's clip-conf packages: RDEPEND pins exact versions, under species USE conditionals; the
# update repository of this (distribution, part) holds exactly these versions.
EAPI=8

DESCRIPTION="RM apps configuration: the exact versions of the RM jails live-updated packages"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="core-rm clip-gtw"

RDEPEND="
"

src_install() {
	echo "${PVR}" > "${T}/rm-apps-release" || die
	insinto "${CPREFIX:-/usr/local}/share/clip"
	doins "${T}/rm-apps-release"
}
