# strongSwan's IKEv2 daemon (charon), driven by swanctl over the vici interface, with OpenSSL as its only
# crypto provider, built from the upstream release tarball (Debian bookworm's strongswan 5.9.8-5+deb12u5 .orig
# is the same bytes: checked against upstream's signature, debian/upstream/signing-key.asc) against the
# pipeline's musl (clip-toolchain.eclass), plus the Debian security fixes that touch code built here.
#
# What the system gets: /usr/libexec/ipsec/charon, /usr/sbin/swanctl, libstrongswan.so.0, libcharon.so.0 and
# libvici.so.0 in /usr/lib, the plugins in /usr/lib/ipsec/plugins, /etc/strongswan.conf with its strongswan.d/
# snippets, and /etc/swanctl/ with the species' template (USE flags below) and the empty credential folders.
# No secret and no certificate: the machine's credentials are provisioned separately (docs/design.md).
EAPI=8

inherit clip-selftest clip-toolchain

DESCRIPTION="IKEv2 IPsec keying daemon (charon) with swanctl, OpenSSL crypto"
HOMEPAGE="https://www.strongswan.org/"
SRC_URI="https://download.strongswan.org/${P}.tar.bz2"
LICENSE="GPL-2+"
SLOT="0"
KEYWORDS="amd64"
# The species, as CLIP's profiles set them: the gateway answers, the client initiates (metadata.xml). With
# neither, only the common settings are installed and no connection template.
IUSE="core-rm clip-gtw"
REQUIRED_USE="?? ( core-rm clip-gtw )"

DEPEND="dev-libs/openssl"
RDEPEND=">=dev-libs/openssl-3.0.20"

PATCHES=(
	# Debian's security fixes (deb12u5) for code this package compiles; each file's header says which and why.
	# The others of Debian's series touch what is not built here (libtls, EAP methods, libsimaka, libradius,
	# charon-tkm, gmp) or are Debian's packaging (systemd unit, bypass-lan and kernel-libipsec defaults).
	"${FILESDIR}"/0013-pkcs5-pkcs7-Avoid-NULL-pointer-dereference-when-veri.patch
	"${FILESDIR}"/0014-constraints-Case-insensitive-matching-and-reject-exc.patch
	"${FILESDIR}"/0016-identification-Fix-double-free-when-cloning-empty-ID.patch
	# CLIP's: prototypes for capget()/capset(), which --with-capabilities=native calls undeclared.
	"${FILESDIR}"/${P}-capabilities-declare.patch
)

src_configure() {
	# Thread stacks. charon runs its jobs in a pool of worker threads (charon.threads, 16) plus a few of its
	# own (receiver, sender, scheduler, watcher, vici), all made by libstrongswan's thread_create() with
	# pthread_create(..., NULL, ...): strongSwan never sets a stack size, so each thread gets the C library's
	# default, 8 MiB (RLIMIT_STACK) on glibc but 128 KiB on musl 1.2.3. musl raises that default for the whole
	# process from the PT_GNU_STACK size of the program and of the libraries it loads at start-up (ldso's
	# dynlink.c, up to 8 MiB), which `-z stack-size` sets: 1 MiB here, as address space reserved per thread,
	# touched only as used, so about 20 MiB of virtual memory for the daemon, hardly any of it resident.
	local -x LDFLAGS="${LDFLAGS} -Wl,-z,stack-size=1048576"

	# The build root cannot run what the musl toolchain links (its loader, /lib/ld-musl-x86_64.so.1, is in
	# the ROOT, not in the build root), so configure must not try: --host different from --build makes it a
	# cross build, where its two run tests fall back to compile tests (pthread_condattr_setclock: a link
	# check; GCC __sync: "no", harmless: atomics.h uses GCC's __atomic built-ins for gcc >= 4.7). There is
	# no x86_64-pc-linux-musl-ar: configure says so and takes plain ar, the right one.
	local conf=(
		--build=x86_64-pc-linux-gnu --host=x86_64-pc-linux-musl
		--prefix=/usr --sysconfdir=/etc --libexecdir=/usr/libexec --localstatedir=/var
		# The libraries in /usr/lib, the plugins in /usr/lib/ipsec/plugins. strongSwan's default is
		# /usr/lib/ipsec for both, with an RPATH to it in every program; in /usr/lib the loader finds them
		# without one (libtool drops run paths to the system's directories), so no ELF file carries a run
		# path, and the eclass's pkg_preinst check and the image's ELF check find every NEEDED library in
		# /usr/lib. Their names (libstrongswan, libcharon, libvici) clash with nothing.
		--with-ipseclibdir=/usr/lib --with-plugindir=/usr/lib/ipsec/plugins
		# The PID file and the vici socket (unix:///run/charon.vici, swanctl's default too): /run, a
		# run-time tmpfs, rather than /var/run (the core's /var is not writable; neither is in the tree:
		# whoever starts charon provides /run).
		--with-piddir=/run
		# musl has no register_printf_specifier(): strongSwan's own printf implementation (configure would
		# find that too; stated so a change of C library cannot switch it silently).
		--with-printf-hooks=builtin
		# charon drops the capabilities it does not need once started (keeps NET_ADMIN, NET_BIND_SERVICE,
		# NET_RAW ...), with raw capset() calls: no libcap.
		--with-capabilities=native
		--disable-static --disable-dependency-tracking
		# Start from nothing, then name every component: a new strongSwan default cannot slip in.
		--disable-defaults
		# The daemon, IKEv2 only (CLIP's tunnels are IKEv2; no IKEv1, no XAuth), swanctl and its vici
		# interface. Not built: stroke and the ipsec starter/script (swanctl is the interface), pki, the
		# scripts, charon-cmd, charon-systemd (no systemd), conftest.
		--enable-charon --enable-ikev2 --enable-swanctl --enable-vici
		# Crypto: OpenSSL 3 alone (ciphers, AEADs, hashes, HMAC, ECDH, signatures); no gmp, no software
		# AES/SHA/HMAC duplicates. random: the kernel's generator (/dev/urandom, and /dev/random for TRUE) for
		# RNG_STRONG and RNG_TRUE, which charon chooses over OpenSSL's for secrets; nonce makes IKE nonces.
		--enable-openssl --enable-random --enable-nonce
		# kdf: IKEv2's prf and prf+ (RFC 7296) computed with OpenSSL's HMAC. The openssl plugin offers them
		# through OpenSSL's HKDF, but the KDF_PRF constructor's self-check sets an empty HKDF salt, which
		# recent OpenSSL 3.0 releases refuse (EVP_PKEY_CTX_set1_hkdf_salt(ctx, NULL, 0) returns 0: checked on
		# Debian's 3.0.19; strongSwan adapted after 5.9.8, upstream pull request 2829). Without this plugin
		# the first IKE_SA fails, "KDF_PRF with PRF_HMAC_SHA2_384 not supported" (seen here, between two
		# charons of this package). configure adds kdf by itself only when no openssl plugin is built.
		--enable-kdf
		# Credentials: X.509 certificates and CRLs, PEM, PKCS#1 and PKCS#8 keys, raw public keys; X.509 name
		# and policy constraints; revocation (CRLs from /etc/swanctl/x509crl, and OCSP/CRL fetching would
		# need a fetcher plugin, left out: the gateway refuses a client whose CRL says revoked).
		--enable-x509 --enable-pem --enable-pkcs1 --enable-pkcs8 --enable-pubkey
		--enable-constraints --enable-revocation
		# The Linux kernel's XFRM through netlink, and charon's UDP sockets (500/4500).
		--enable-kernel-netlink --enable-socket-default
		# The client installs the DNS servers the gateway sends (musl reads /etc/resolv.conf). The gateway's
		# pool and its attributes come from swanctl.conf through vici (the attr plugin serves strongswan.conf
		# attributes, not needed). updown is off: its default script drives iptables, which CLIP does not
		# ship (its firewall is nftables, set statically).
		$(use_enable core-rm resolve)
		# No backtraces and no leak detective: musl has no backtrace(); they are debugging aids anyway.
	)
	echo ./configure "${conf[@]}"
	# (configure ends by listing the plugins it will build, in the build log)
	./configure "${conf[@]}" || die "configure failed"
}

src_compile() {
	emake
}

src_install() {
	emake DESTDIR="${D}" install
	# Installed by make, not doman (FEATURES=noman does not see them), and strongswan.conf's templates.
	rm -r "${ED}"/usr/share/man "${ED}"/usr/share/strongswan || die
	# libtool archives: nothing links against these libraries with libtool.
	find "${ED}" -name '*.la' -delete || die
	# xfrmi, a helper that creates XFRM interfaces, built with kernel-netlink: iproute2 does the same
	# (`ip link add NAME type xfrm if_id N`), and it links the kernel-netlink plugin as a library, through a
	# run path to /usr/lib/ipsec/plugins, the only one the package would carry.
	rm "${ED}"/usr/libexec/ipsec/xfrmi || die

	# CLIP's settings, then the species' role and connection template in place of upstream's swanctl.conf
	# (all comments).
	insinto /etc/strongswan.d
	newins "${FILESDIR}"/strongswan.d-clip.conf clip.conf
	local role=
	use clip-gtw && role=responder
	use core-rm && role=initiator
	if [[ -n ${role} ]]; then
		newins "${FILESDIR}/clip-role-${role}.conf" clip-role.conf
		insinto /etc/swanctl
		newins "${FILESDIR}/swanctl-${role}.conf" swanctl.conf
	fi
	# The folders `swanctl --load-all` reads credentials from stay, empty, keys readable by root only (as make
	# creates them). All of them, even those for what is not used here (BLISS keys, attribute certificates):
	# swanctl opens each one and reports a missing one as an error on every load.
	keepdir /etc/swanctl/{conf.d,x509,x509ca,x509aa,x509ac,x509ocsp,x509crl,pubkey}
	keepdir /etc/swanctl/{private,rsa,ecdsa,bliss,pkcs8,pkcs12}
	fperms 0750 /etc/swanctl/{private,rsa,ecdsa,bliss,pkcs8,pkcs12}
	# 0640 as upstream installs it: a later conf.d/ file may hold a secrets section.
	fperms 0640 /etc/swanctl/swanctl.conf
	# At boot: charon started in a network namespace of its own, answering swanctl over vici, offering CLIP's
	# proposals from OpenSSL; the boot marker then names the IPsec stack (ipsec=strongSwan/VERSION).
	clip-selftest_install
}
