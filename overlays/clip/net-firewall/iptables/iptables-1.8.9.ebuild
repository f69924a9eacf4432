# iptables 1.8.9, the legacy xtables backend only, from the upstream release tarball (Debian bookworm's
# iptables 1.8.9-2 .orig is netfilter.org's file byte for byte: its watch file fetches it from there), on musl
# with the profile's hardened flags (clip-toolchain.eclass).
#
# The system's firewall is iptables rather than nftables for now: Debian's archive reachable from the build
# machines answers 404 for the .orig tarballs of libmnl 1.0.4, libnftnl 1.2.4 and nftables 1.0.6, so nftables
# cannot be built from a pinned source (docs/building.md, "Firewall: iptables, not nftables (yet)"). CLIP OS 4
# used iptables too. The legacy backend talks to the kernel's ip_tables/ip6_tables through
# {get,set}sockopt and needs neither libmnl nor libnftnl.
#
# What is installed: xtables-legacy-multi in /usr/sbin with upstream's links (iptables, ip6tables, their
# -save/-restore, the *-legacy names, /usr/bin/iptables-xml), the shared libraries libxtables.so.12,
# libip4tc.so.2 and libip6tc.so.2 in /usr/lib, and the extensions (matches and targets: policy, conntrack,
# multiport, REJECT, LOG...) as plugins the program dlopen()s from /usr/lib/xtables.
EAPI=8

inherit clip-toolchain clip-selftest

DESCRIPTION="Linux kernel (2.4+) firewall, NAT and packet mangling tools (legacy xtables backend)"
HOMEPAGE="https://www.netfilter.org/projects/iptables/"
SRC_URI="https://www.netfilter.org/projects/iptables/files/${P}.tar.xz"
LICENSE="GPL-2"
# The sub-slot follows libxtables' soname (libxtables.so.12).
SLOT="0/12"
KEYWORDS="amd64"

src_prepare() {
	default
	# The extension plugins (extensions/GNUmakefile.in, not libtool) are compiled with "-fPIC ${CFLAGS}":
	# the profile's -fPIE, later on the line, wins, and a shared object made of PIE code does not link
	# ("relocation R_X86_64_PC32 against symbol `xt_params' can not be used when making a shared object").
	# So -fPIC goes after CFLAGS (libtool already puts its -fPIC last for libxtables, libip4tc and libip6tc;
	# the program's objects keep -fPIE).
	# And -fstack-protector-all for the plugins: with -strong, three of them (multiport, sctp, ip6t_srh: 4.2
	# to 5 KiB of code) have no function with a local array or an address-taken local, so no canary, and the
	# image's ELF check (clipbuild/image/elfcheck.py) cannot tell them from an unprotected build. A plugin's
	# code runs only while a rule is parsed or printed, so a canary in every function costs nothing that
	# matters, and every plugin then shows the protector.
	sed -i 's/-DPIC -fPIC ${CFLAGS}/-DPIC ${CFLAGS} -fPIC -fstack-protector-all/' extensions/GNUmakefile.in || die
	grep -qF -- '-DPIC ${CFLAGS} -fPIC -fstack-protector-all' extensions/GNUmakefile.in ||
		die "extensions/GNUmakefile.in: the plugins' flags were not changed"
}

src_configure() {
	local myconf=(
		--libdir=/usr/lib
		--sbindir=/usr/sbin
		# The legacy backend only: nftables' needs libmnl and libnftnl, whose sources are not reachable.
		--disable-nftables
		# Shared libxtables and plugins loaded at run time (econf already passes --disable-static; with
		# static, every extension would be linked into the program instead).
		--enable-shared
		--with-xtlibdir=/usr/lib/xtables
		# Headers and xtables.pc: nothing in the system builds against libxtables.
		--disable-devel
		# No libpcap: no BPF compiler (nfbpf_compile), no SYNPROXY configuration tool (nfsynproxy).
		--disable-bpf-compiler
		--disable-nfsynproxy
		# The connlabel match's plugin needs libnetfilter_conntrack (absent, for the label names): not built.
		--disable-connlabel
		# libipq, the library of the long-gone ip_queue: not built.
		--disable-libipq
	)
	# configure finds libnfnetlink through pkg-config to build nfnl_osf (OS fingerprint loader): not wanted,
	# and pkg-config only sees the ROOT's .pc files (clip-toolchain.eclass), where there is none. The kernel
	# headers it needs are its own copies (include/linux) and the ROOT's (sys-kernel/linux-headers).
	# --host names the C library the programs are for: they run on musl's loader (/lib/ld-musl-x86_64.so.1),
	# which the build root does not have, so autoconf must not try to run what it compiles ("cannot run C
	# compiled programs" with host = build = the profile's x86_64-pc-linux-gnu). With host != build it
	# cross-compiles: no test program is run, and the binutils without a host prefix (ar, ranlib, strip) are
	# taken with a warning, Debian having no x86_64-pc-linux-musl-ar. econf puts this after its own --host.
	econf --build="${CBUILD:-${CHOST}}" --host=x86_64-pc-linux-musl "${myconf[@]}"
	# Nothing optional may have been picked up: each of these automake conditionals must be off ("#").
	local cond
	for cond in ENABLE_NFTABLES ENABLE_STATIC ENABLE_DEVEL ENABLE_BPFC ENABLE_SYNCONF HAVE_LIBNFNETLINK \
			HAVE_LIBNETFILTER_CONNTRACK; do
		grep -qx "S\[\"${cond}_TRUE\"\]=\"#\"" config.status ||
			die "iptables' configure turned ${cond} on: this ebuild builds without it"
	done
	[[ $(sed -n 's/^xtlibdir *= *//p' extensions/GNUmakefile) == /usr/lib/xtables ]] ||
		die "extensions/GNUmakefile does not install the plugins into /usr/lib/xtables"
}

src_compile() {
	# V=1: the extensions' own makefile is silent otherwise, and the log should show every compile line.
	emake V=1
}

src_install() {
	emake DESTDIR="${D}" install
	# Installed by make, not doman: FEATURES=noman does not see them.
	rm -r "${ED}"/usr/share/man || die
	# iptables-apply (and its ip6tables-apply link) is a bash script; the system has no bash.
	rm "${ED}"/usr/sbin/{iptables,ip6tables}-apply || die
	# libtool archives: nothing links through them.
	find "${ED}" -name '*.la' -delete || die
	clip-selftest_install
}
