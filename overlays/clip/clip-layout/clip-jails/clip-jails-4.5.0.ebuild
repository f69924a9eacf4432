# The species' jails: /etc/jails/<name>/ for vsctl, /etc/conf.d/jail-net and the jail trees, as clipbuild
# rendered and checked them from jails/ (see clip-jails.eclass).
EAPI=8

inherit clip-jails

DESCRIPTION="CLIP jail layouts (vsctl configuration and jail trees) of the species"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
