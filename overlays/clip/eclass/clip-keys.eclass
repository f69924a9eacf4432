# @ECLASS: clip-keys.eclass
# @BLURB: install the trust store clipbuild rendered from the plan's trust policy
# @DESCRIPTION:
# clipbuild renders the trust policy the image is verified with (the development PKI's, or the release policy)
# as /etc/clip_update/keys/: policy.yaml, certs_dev/ and certs_ctrl/ (the CAs), crl_dev/ and crl_ctrl/ (the
# CRLs), where CLIP OS 4 kept its keys; its build step mounts the result read-only at ${CLIP_KEYS_TREE}.
# Packages inheriting this eclass install that tree, and clipbuild keys their binary packages on its digest, so
# a new CRL or policy rebuilds them and nothing else.

clip-keys_src_install() {
	[[ -n ${CLIP_KEYS_TREE} && -f ${CLIP_KEYS_TREE}/etc/clip_update/keys/policy.yaml ]] ||
		die "CLIP_KEYS_TREE is not set: build this package with clipbuild build (it renders the trust store)"
	cp -R --preserve=mode "${CLIP_KEYS_TREE}"/. "${ED}"/ || die "copying the rendered trust store failed"
	find "${ED}"/etc/clip_update/keys -type d -exec chmod 0755 {} + || die
	find "${ED}"/etc/clip_update/keys -type f -exec chmod 0644 {} + || die
}

EXPORT_FUNCTIONS src_install
