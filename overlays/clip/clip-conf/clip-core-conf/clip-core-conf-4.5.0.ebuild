# CLIP core configuration: the exact versions of the core (A/B slot) packages
# Like CLIP OS 4's clip-conf packages: RDEPEND pins exact versions, under species USE conditionals; the
# update repository of this (distribution, part) holds exactly these versions.
EAPI=8

DESCRIPTION="CLIP core configuration: the exact versions of the core (A/B slot) packages"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="core-rm clip-gtw"

RDEPEND="
	=clip-layout/baselayout-clip-4.5.0
	=sys-libs/musl-1.2.3
	=sys-libs/zlib-1.2.13
	=dev-libs/openssl-3.0.20
	=net-misc/openssh-9.2_p1
	=sys-apps/busybox-1.35.0
	=sys-apps/iproute2-6.1.0
	=net-firewall/iptables-1.8.9
	=app-clip/clip-sysinfo-1.1.0
	=app-clip/clip-jail-1.0.0
	=app-clip/clip-net-1.0.0
	=clip-layout/clip-jails-4.5.0
	=clip-conf/clip-update-keys-4.5.0
	=sys-kernel/clip-kernel-6.1.192
	=net-vpn/strongswan-5.9.8
	core-rm? ( =clip-layout/baselayout-clip-4.5.0[core-rm] =net-vpn/strongswan-5.9.8[core-rm] )
	clip-gtw? ( =clip-layout/baselayout-clip-4.5.0[clip-gtw] =net-vpn/strongswan-5.9.8[clip-gtw] )
	core-rm? ( =net-misc/openssh-9.2_p1[clip-ssh-client] )
"

src_install() {
	# The species flags this core was built with, as CLIP recorded them.
	local flags=()
	use core-rm && flags+=( core-rm )
	use clip-gtw && flags+=( clip-gtw )
	echo "${flags[*]}" > "${T}/clip-flags" || die
	insinto /etc/shared
	doins "${T}/clip-flags"
}
