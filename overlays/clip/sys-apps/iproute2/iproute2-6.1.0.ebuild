# iproute2's ip (with ip xfrm, the IPsec policy and state commands the gateway and client tunnels need) and
# ss, from the upstream release tarball (Debian's iproute2 6.1.0-3 .orig is kernel.org's file: its watch file
# fetches it and checks upstream's signature, no repack), a PIE on musl (clip-toolchain.eclass) with the
# profile's hardened flags. No optional library: iproute2's configure would
# pick up libmnl (extended netlink error messages; its source is not in the pinned archive yet), libelf and
# libbpf (eBPF loading, for tc), SELinux, libcap, libtirpc and xtables when pkg-config finds them; none is
# wanted, and each would add a library to the image. tc, bridge, devlink and the other tools are left out.
EAPI=8

inherit clip-selftest clip-toolchain

DESCRIPTION="Kernel routing and traffic control utilities: ip (with ip xfrm) and ss"
HOMEPAGE="https://wiki.linuxfoundation.org/networking/iproute2"
SRC_URI="https://www.kernel.org/pub/linux/utils/net/iproute2/${P}.tar.xz"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"

src_configure() {
	# iproute2's own configure script (not autoconf) writes config.mk. PKG_CONFIG=false: every optional library
	# it looks up through pkg-config stays off even when another package of the set has put one into the ROOT,
	# so what ip links never depends on the order emerge builds the set in. Its compile checks (setns,
	# name_to_handle_at, strlcpy: musl has all three) use CC, the eclass's musl compiler.
	PKG_CONFIG=false AR=ar ./configure --prefix=/usr --libdir=/usr/lib --libbpf_force off || die "configure failed"
	cat config.mk
	# The two libraries configure finds without pkg-config (libatm, Berkeley DB) must not be there either.
	if grep -E '^(HAVE_[A-Z_]+|TC_CONFIG_ATM):=y' config.mk; then
		die "iproute2's configure found an optional library (above): this ebuild builds without them"
	fi
}

ipr_make() {
	# CC on the command line: the top Makefile sets CC := gcc after reading config.mk. CCOPTS (iproute2's own
	# "-O2 -pipe") is emptied: the Makefile appends the profile's CFLAGS from the environment to every compile,
	# and every link takes LDFLAGS. Only the folders of ip and ss (and the libraries they link) are built.
	emake V=1 CC="${CC}" AR=ar CCOPTS= SUBDIRS="lib ip misc" "$@"
}

src_compile() {
	ipr_make
}

src_install() {
	# /sbin, iproute2's own SBINDIR (busybox no longer installs its own ip there). rtmon, routel and misc's
	# other tools (nstat, ifstat, lnstat, rtacct) are built with ss's folder but not installed.
	into /
	dosbin ip/ip misc/ss
	# The name tables ip reads (routing tables, protocols, scopes, realms, DS fields, link groups); ip works
	# without them, by number.
	insinto /etc/iproute2
	doins etc/iproute2/{rt_tables,rt_protos,rt_scopes,rt_realms,rt_dsfield,group,nl_protos}
	# At boot: an ESP tunnel state and policy through ip xfrm into the kernel, in a namespace of its own.
	clip-selftest_install
}
