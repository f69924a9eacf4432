# The CLIP kernel: Debian's Linux 6.1 source tree (linux-source-6.1), the project's patch series and
# configuration fragments (see clip-kernel.eclass). Everything built in: no modules, no initramfs.
EAPI=8

inherit clip-kernel

DESCRIPTION="Hardened Linux kernel of the CLIP system"
HOMEPAGE="https://www.kernel.org/"
# Debian's linux-source-6.1 ships this tarball (fetch: debian-binary mirror); no upstream URI.
SRC_URI="linux-source-6.1.tar.xz"
S="${WORKDIR}/linux-source-6.1"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
RESTRICT="fetch mirror strip"
