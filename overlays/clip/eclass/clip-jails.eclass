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
	# The jails' skeletons are mostly empty directories (mount points, sshd's /var/empty): Portage merges only
	# what holds a file, so each one is kept the Portage way (keepdir's .keep file).
	local dir
	while IFS= read -r -d '' dir; do
		keepdir "${dir#"${ED%/}"}"
	done < <(find "${ED}" -mindepth 1 -type d -empty -print0)
}

EXPORT_FUNCTIONS src_install
