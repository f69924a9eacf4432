# RM core configuration: the exact versions of the RM jails core packages
# Like CLIP OS 4's clip-conf packages: RDEPEND pins exact versions, under species USE conditionals; the
# update repository of this (distribution, part) holds exactly these versions.
EAPI=8

DESCRIPTION="RM core configuration: the exact versions of the RM jails core packages"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="core-rm clip-gtw"

RDEPEND="
	core-rm? ( =sys-libs/musl-1.2.3 =sys-apps/busybox-1.35.0 )
"

src_install() {
	echo "${PVR}" > "${T}/rm-core-release" || die
	insinto /etc/shared
	doins "${T}/rm-core-release"
}
