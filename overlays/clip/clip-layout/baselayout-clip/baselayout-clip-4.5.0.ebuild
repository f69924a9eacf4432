# The CLIP directory tree: the core's mount points, CLIP's /mounts layout (clipos4.md §4), jail roots, the boot
# scripts (busybox init: inittab and rcS), os-release and clip-release, and the update rules in the read-only
# root (/etc/admin/clip_download, /etc/admin/clip_install: clipos4.md §3). /etc/fstab is written by the image
# stage from the profile's partitions.
EAPI=8

DESCRIPTION="CLIP base layout: directories, /mounts tree, boot scripts, release files"
HOMEPAGE="https://github.com/clipos-archive"
S="${WORKDIR}"
LICENSE="LGPL-2.1+"
SLOT="0"
KEYWORDS="amd64"
IUSE="core-rm clip-gtw"
REQUIRED_USE="?? ( core-rm clip-gtw )"

clip_release_name() {
	if use core-rm; then echo CLIP-RM; elif use clip-gtw; then echo CLIP-GTW; else echo CLIP; fi
}

src_install() {
	local d
	for d in bin sbin etc/init.d etc/shared etc/jails etc/admin etc/core etc/tcb dev proc sys run tmp root boot \
		home var/log var/pkg mounts update_root user admin audit update x11 ike altroot; do
		keepdir "/${d}"
	done
	# CLIP's /mounts: the apps part (/mounts/usr seen as /usr/local, /mounts/var as /var), jail roots and
	# private trees.
	for d in usr var admin_root audit_root user_root admin_priv audit_priv user_priv update_priv viewers xauth; do
		keepdir "/mounts/${d}"
	done
	if use core-rm; then
		keepdir /vservers/rm_h /vservers/rm_b
	fi
	fperms 1777 /tmp
	# /var/run is /run (FHS 3.0): programs built with /var/run paths (iproute2's named network namespaces) find
	# the tmpfs the boot mounts.
	dosym ../run /var/run
	# The empty, root-owned chroot of sshd's unprivileged child (privilege separation user sshd, in passwd).
	keepdir /var/empty
	fperms 0755 /var/empty

	insinto /etc
	doins "${FILESDIR}"/{passwd,group,inittab}
	exeinto /etc/init.d
	doexe "${FILESDIR}"/rcS
	insinto /etc/clip_update
	doins "${FILESDIR}"/conffiles.list
	insinto /etc/admin/clip_download
	doins "${FILESDIR}"/clip_download_clip.conf
	insinto /etc/admin/clip_install
	doins "${FILESDIR}"/clip_install_clip_{core,apps}.conf
	local name=$(clip_release_name)
	cat > "${T}/os-release" <<-EOT || die
		NAME="${name}"
		ID=clip
		VERSION_ID=${PV}
		PRETTY_NAME="${name} ${PV}"
		HOME_URL="https://github.com/clipos-archive"
	EOT
	doins "${T}/os-release"
	insinto /etc/shared
	echo "${name} ${PVR}" > "${T}/clip-release" || die
	doins "${T}/clip-release"
}
