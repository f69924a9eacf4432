# OpenSSL 3.0 (LTS) from the upstream release tarball (Debian bookworm's openssl 3.0.20-1~deb12u2 .orig is the
# same bytes: checked against upstream's signature, debian/upstream/signing-key.asc), built against the
# pipeline's musl (clip-toolchain.eclass) with the profile's hardened flags. For the system: libcrypto.so.3,
# libssl.so.3 (OpenSSH, strongSwan), the `openssl` program (on-device checks: certificates, keys, CRLs) and
# /etc/ssl/openssl.cnf. Headers, static archives, the lib*.so links and the .pc files are for builds only and
# stay out of the .deb (docs/packaging.md).
EAPI=8

inherit clip-selftest clip-toolchain

DESCRIPTION="Toolkit for TLS and general-purpose cryptography"
HOMEPAGE="https://www.openssl.org/"
SRC_URI="https://www.openssl.org/source/${P}.tar.gz"
LICENSE="Apache-2.0"
SLOT="0/3"
KEYWORDS="amd64"

# Debian's security fixes for the pinned 3.0.20-1~deb12u2, in the order of its debian/patches/series: its
# bookworm-security upload of June 2026 fixes nine CVEs that upstream's 3.0.20 tarball does not (each patch
# applies to it and changes the code), all in libcrypto. Each file's header says which CVE and what it fixes
# (docs/building.md, "Security fixes from Debian"). Left out of Debian's series: its packaging patches (Debian's
# Configure targets, man sections, no -Bsymbolic, 32-bit x86 assembler PIC, c_rehash, KTLS on non-Linux
# targets, openssl.cnf's provider section), a thread-safety fix of conf_ssl.c (no CVE), and the test-only
# patches (no-tests: the tests are not built).
PATCHES=(
	# CVE-2026-7383
	"${FILESDIR}"/Reject-oversized-inputs-in-ASN1_mbstring_ncopy.patch
	# CVE-2026-9076
	"${FILESDIR}"/cms-kek_unwrap_key-Fix-out-of-bounds-read-in-check-byte-v.patch
	# CVE-2026-34180
	"${FILESDIR}"/Avoid-length-truncation-in-ASN1_STRING_set.patch
	# CVE-2026-34182, with its prerequisite
	"${FILESDIR}"/CMS-Produce-error-when-AEAD-algorithms-are-used-in-envelo.patch
	"${FILESDIR}"/Reject-potentially-forged-encrypted-CMS-AuthEnvelopedData.patch
	# CVE-2026-42766
	"${FILESDIR}"/Fix-potential-NULL-dereference-processing-CMS-PasswordRec.patch
	# CVE-2026-42770
	"${FILESDIR}"/Match-the-local-q-DHX-parameter-against-the-peer-s-q.patch
	# CVE-2026-45445
	"${FILESDIR}"/Apply-the-buffered-IV-on-the-AES-OCB-EVP_Cipher-path.patch
	# CVE-2026-45446
	"${FILESDIR}"/Fix-handling-of-empty-ciphertext-messages-in-AES-SIV.patch
	# CVE-2026-45447
	"${FILESDIR}"/Fix-possible-use-after-free-in-OpenSSL-PKCS7_verify.patch
)

src_configure() {
	# OpenSSL's own Configure (perl, not autoconf): it takes CC (the eclass's musl wrapper), CFLAGS, CPPFLAGS and
	# LDFLAGS from the environment, and the profile's CFLAGS replace its own -O3; its cflags (-pthread -m64 and
	# -Wa,--noexecstack, probed: every assembler object gets a non-executable stack) stay. No CROSS_COMPILE
	# prefix: Debian has no ${CHOST}-ar, plain ar is the right one.
	#
	# What CLIP leaves out, and why:
	#  no-ssl3, no-weak-ssl-ciphers  obsolete protocol and export/RC4-class suites (already off by default in
	#                                3.0: stated so that a change of default cannot bring them back);
	#  no-legacy                     no legacy provider (MD4, DES, RC4, Blowfish, ...): neither OpenSSH (its
	#                                own bcrypt/Blowfish) nor CLIP's IKEv2 with certificates needs it;
	#  no-engine                     ENGINEs are deprecated in 3.0; CLIP's smartcards go through PKCS#11 in
	#                                strongSwan, not through an OpenSSL engine;
	#  no-dso                        nothing to load at run time: with no legacy provider, no engines and no
	#                                FIPS module (no-dso implies no-module, hence no-fips; FIPS is off by
	#                                default anyway), the default and base providers are built into libcrypto;
	#  no-comp                       no TLS compression (CRIME); OpenSSL is not linked against zlib at all;
	#  no-tests                      the test programs are not built (no test suite runs in the package build).
	# Documentation: 3.0 has no `no-docs` option (3.2 has); src_compile and src_install use the _sw targets,
	# which neither build nor install the manual pages.
	# enable-ec_nistp_64_gcc_128: the constant-time 64-bit implementations of P-224/P-256/P-521 (gcc's
	# __int128), faster for ECDH/ECDSA, the curves IKE and SSH use.
	# The profile's -fPIE comes out of CFLAGS: OpenSSL puts CFLAGS after its own -fPIC when it compiles the
	# libraries (LIB_CFLAGS = -fPIC ... $(CFLAGS)), so -fPIE would win and libcrypto/libssl would be built with
	# the executable code model. The openssl program stays PIE: Debian's gcc compiles and links programs as
	# PIE by default (the image assembly checks and the tests check that it is one).
	local -x CFLAGS=${CFLAGS//-fPIE/} CROSS_COMPILE=
	local conf=(
		linux-x86_64 --prefix=/usr --libdir=lib --openssldir=/etc/ssl
		shared no-ssl3 no-weak-ssl-ciphers no-legacy no-engine no-dso no-comp no-tests
		enable-ec_nistp_64_gcc_128
	)
	echo ./Configure "${conf[@]}"
	./Configure "${conf[@]}" || die "Configure failed"
	# What is enabled and disabled, and the flags the build compiles with, in the log.
	perl configdata.pm --options | grep -v '^$' || die
	grep -E '^(CC|CFLAGS|CPPFLAGS|LDFLAGS|CNF_CFLAGS|LIB_CFLAGS|BIN_CFLAGS)=' Makefile || die
}

src_compile() {
	# The libraries and the openssl program only: no modules (no-dso), no perl scripts (c_rehash, CA.pl:
	# the system has no perl), no manual pages.
	# One target per make: each of build_libs and build_programs runs `make depend && make _build_...` in a
	# sub-make of its own, so `make -j2 build_libs build_programs` runs two sub-makes building the same
	# objects at once (seen: "mv: cannot stat 'providers/common/der/libcommon-lib-der_ec_key.d.tmp'").
	emake build_libs
	emake build_programs
}

src_install() {
	emake DESTDIR="${D}" install_sw install_ssldirs
	# Perl scripts (c_rehash, /etc/ssl/misc/CA.pl, tsget.pl): no perl on the system.
	rm "${ED}"/usr/bin/c_rehash || die
	rm -r "${ED}"/etc/ssl/misc || die
	# The pristine copies of the configuration files (openssl.cnf.dist ...): the package is the reference copy.
	rm "${ED}"/etc/ssl/*.dist || die
	# Certificates and private keys are the machine's (CLIP's own PKI, provisioned per machine: no
	# ca-certificates bundle here); the folders exist, private/ readable by root only.
	keepdir /etc/ssl/certs /etc/ssl/private
	fperms 0700 /etc/ssl/private
	# At boot: a P-384 key, a signature made and verified, a tampered message refused, no legacy provider.
	clip-selftest_install
}
