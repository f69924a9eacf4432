# CLIP's per-machine network at boot: clip-provision reads the machine's provisioning disk (its identity and
# addresses: clipbuild provision) and prepares the IKE jail's credentials; clip-net brings up the outside link,
# the RM levels' links and the gateway's private segment, has charon load the IPsec connections, and reports
# (docs/network.md). Shell scripts for BusyBox sh, iproute2, iptables and strongSwan's swanctl; written for CLIP.
EAPI=8

DESCRIPTION="CLIP machine provisioning and networks at boot (outside, RM levels, IPsec)"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"

RDEPEND="sys-apps/iproute2 net-firewall/iptables net-vpn/strongswan app-clip/clip-jail"

src_install() {
	exeinto /sbin
	doexe "${FILESDIR}"/clip-provision "${FILESDIR}"/clip-net
}
