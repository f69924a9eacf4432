# The device's trust store: /etc/clip_update/keys/ (policy.yaml, the developer and controller CAs and CRLs), as
# clipbuild rendered it from the trust policy the image is verified with (see clip-keys.eclass). A core update
# shipping a new version of this package rotates the keys: a revoked certificate in a new CRL, a new CA.
EAPI=8

inherit clip-keys

DESCRIPTION="CLIP update trust store: the developer and controller CAs, CRLs and the trust policy"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
