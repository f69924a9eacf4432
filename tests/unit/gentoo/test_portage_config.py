"""Portage configuration rendered from the resolved species profiles."""

from __future__ import annotations

from clipbuild.gentoo.portage_config import render
from clipbuild.spec.profile import resolve


def _conf(project, species, dist, part):
    profile = resolve(project, species)
    pset = dict(((d, p), s) for d, p, s in profile.packages.sets())[(dist, part)]
    return render(profile, dist, part, pset, jobs=3)


def test_make_conf_has_the_hardened_flags_and_clip_variables(project):
    make_conf = _conf(project, "client", "clip", "core").files["make.conf/00-profile.conf"]
    for flag in ("-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-fPIE"):
        assert flag in make_conf
    assert 'LDFLAGS="-Wl,-O1 -Wl,-z,relro -Wl,-z,now -pie"' in make_conf
    assert 'DEB_DISTRIBUTION="clip"' in make_conf and 'DEB_PRIORITY="Required"' in make_conf
    assert "CPREFIX" not in make_conf
    assert 'FEATURES="-sandbox -usersandbox buildpkg -news -merge-sync noman noinfo nodoc strict sfperms"' \
        in make_conf
    assert 'BINPKG_FORMAT="gpkg"' in make_conf and 'DEB_IMPACT="0"' in make_conf


def test_apps_parts_install_below_usr_local_with_their_own_use(project):
    conf = _conf(project, "client", "rm", "apps")
    make_conf = conf.files["make.conf/00-profile.conf"]
    assert 'CPREFIX="/usr/local"' in make_conf and 'DEB_PRIORITY="Important"' in make_conf
    assert 'DEB_DISTRIBUTION="rm"' in make_conf
    use = next(line for line in make_conf.splitlines() if line.startswith("USE="))
    assert use.endswith(' core-rm clip-x11 X clip-ssh-client clip-rm"') and "hardened" in use


def test_species_use_differs(project):
    gateway = _conf(project, "gateway", "clip", "core").files["make.conf/00-profile.conf"]
    assert "clip-gtw" in gateway and "core-rm" not in gateway


def test_host_settings_are_apart(project):
    conf = _conf(project, "client", "clip", "core")
    host = conf.files["make.conf/90-host.conf"].splitlines()
    assert 'MAKEOPTS="-j3 -l3"' in host and 'CCACHE_DIR="/var/cache/ccache"' in host
    assert "MAKEOPTS" not in conf.files["make.conf/00-profile.conf"]
    assert "CCACHE" not in conf.files["make.conf/00-profile.conf"]


def test_repos_profile_and_package_files(project, scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        portage:
          package_use: {sys-apps/busybox: [-static]}
          package_mask: [">=sys-apps/busybox-2"]
          package_accept_keywords: {app-clip/clip-sysinfo: ["~amd64"]}
        """)
    conf = _conf(scratch_with_base.project, "s", "clip", "core")
    assert conf.files["package.use/profile"] == "sys-apps/busybox -static\n"
    assert conf.files["package.mask/profile"] == ">=sys-apps/busybox-2\n"
    assert conf.files["package.accept_keywords/profile"] == "app-clip/clip-sysinfo ~amd64\n"
    assert conf.files["repos.conf/clip.conf"].startswith("[DEFAULT]\nmain-repo = clip\n")
    assert conf.profile_link == "/var/db/repos/clip/profiles/clip-build/amd64"
