# @ECLASS: clip-jails.eclass
# @BLURB: install the jail configuration clipbuild rendered for the species
# @DESCRIPTION:
# clipbuild renders the species' jails (/etc/jails/<name>/ as vsctl reads them, /etc/conf.d/jail-net and the
# jail trees) and checks them against CLIP's isolation rules; its build step mounts the result read-only at
# ${CLIP_JAILS_TREE}. Packages inheriting this eclass install that tree, and clipbuild keys their binary
# packages on its digest.

clip-jails_src_install() {
	[[ -n ${CLIP_JAILS_TREE} && -d ${CLIP_JAILS_TREE}/etc/jails ]] ||
		die "CLIP_JAILS_TREE is not set: build this package with clipbuild build (it renders the jails)"
	cp -R --preserve=mode "${CLIP_JAILS_TREE}"/. "${ED}"/ || die "copying the rendered jails failed"
}

EXPORT_FUNCTIONS src_install
