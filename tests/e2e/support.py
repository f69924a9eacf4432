"""End-to-end support: a copy of the project driven through the installed `clipbuild` command.

One copy per test session (the `e2e_project` fixture in tests/e2e/conftest.py), with its own fresh binary
package store (so the first build compiles everything) and the machine's shared build root and distfiles
(~/.cache/clipbuild). The session fixtures build the client once, then its image, in that order whichever test
asks first, and every test module reuses them: no test depends on the order its file runs in.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from clipbuild.core.run import Result, run

ROOT = Path(__file__).resolve().parents[2]
CLIPBUILD = Path(sys.executable).with_name("clipbuild")
DATE = "1700000000"  # SOURCE_DATE_EPOCH of every e2e run


class Project:
    """A project copy with its own package store and work directory."""

    def __init__(self, base: Path):
        self.root = base / "proj"
        for sub in ("profiles", "jails", "kernel-patches", "overlays"):
            shutil.copytree(ROOT / sub, self.root / sub)
        # CLIPBUILD_E2E_STORE: a warm store to iterate on image or update tests (the build tests then fail:
        # they check that everything is compiled from source).
        self.env = {"CLIPBUILD_BINPKGS": os.environ.get("CLIPBUILD_E2E_STORE") or str(base / "binpkgs")}
        self.workdir = base / "work"

    def clipbuild(self, *args: str, workdir: Path | None = None) -> Result:
        return run([CLIPBUILD, "--project", self.root, "--workdir", workdir or self.workdir, *args],
                   env=self.env, check=False, timeout=1800)

    def build(self, species: str, workdir: Path | None = None) -> dict:
        result = self.clipbuild("build", species, "--json", workdir=workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    def image(self, species: str, *args: str, workdir: Path | None = None) -> dict:
        result = self.clipbuild("image", species, "--json", *args, workdir=workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)


def kernel_version() -> str:
    """The kernel's upstream version, read from its Debian pin (a pin move changes what the tests expect)."""
    from clipbuild.gentoo.pins import read_pins

    return read_pins(ROOT / "overlays" / "clip")["linux-source-6.1.tar.xz"].upstream_version


def sparse_copy(source: str | Path, target: Path) -> Path:
    """A copy of a disk image that keeps its holes: a 3 GiB image holds about 40 MiB of data, and plain copies
    of it in every test would fill the disk."""
    run(["cp", "--sparse=always", source, target])
    return target


def dated_copy(base: Path, store: str, date: int) -> Project:
    """Another project copy sharing `store` (the packages already built), dated `date`."""
    proj = Project(base)
    proj.env.update({"CLIPBUILD_BINPKGS": store, "SOURCE_DATE_EPOCH": str(date)})
    return proj


def bump(proj: Project, version: str) -> None:
    """Release `version` of the copy: baselayout-clip `version` (its clip-release says so), pinned by
    clip-core-conf `version`, clip-update-keys `version` (the trust store, when the overlay has it), and
    clip-apps-conf `version` (its clip-apps-release says so)."""
    overlay = proj.root / "overlays" / "clip"
    apps = overlay / "clip-conf" / "clip-apps-conf"
    shutil.copy(apps / "clip-apps-conf-4.5.0.ebuild", apps / f"clip-apps-conf-{version}.ebuild")
    base = overlay / "clip-layout" / "baselayout-clip"
    shutil.copy(base / "baselayout-clip-4.5.0.ebuild", base / f"baselayout-clip-{version}.ebuild")
    conf = overlay / "clip-conf" / "clip-core-conf"
    text = (conf / "clip-core-conf-4.5.0.ebuild").read_text().replace("baselayout-clip-4.5.0",
                                                                        f"baselayout-clip-{version}")
    keys = overlay / "clip-conf" / "clip-update-keys"
    if (keys / "clip-update-keys-4.5.0.ebuild").exists():
        shutil.copy(keys / "clip-update-keys-4.5.0.ebuild", keys / f"clip-update-keys-{version}.ebuild")
        text = text.replace("clip-update-keys-4.5.0", f"clip-update-keys-{version}")
    (conf / f"clip-core-conf-{version}.ebuild").write_text(text)
    profile = proj.root / "profiles" / "base.yaml"
    profile.write_text(profile.read_text().replace("version: 4.5.0", f"version: {version}"))


def release(proj: Project, *args: str) -> dict:
    result = proj.clipbuild("release", "client", "--json", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def resign(repo: Path, *args: str) -> None:
    """REPO's release metadata described afresh and signed by the development PKI's controller: what a
    controller (or whoever holds its key) signs; `args` are `repo sign-metadata` options."""
    from clipbuild.signing import devpki
    from clipbuild.update import releasemeta

    species = json.loads((repo / releasemeta.METADATA).read_text())["signed"]["species"]
    releasemeta.write_draft(repo, species)
    pki = devpki.ensure()
    signed = run([CLIPBUILD, "repo", "sign-metadata", str(repo), "--key", str(pki.directory / "controller-1.key"),
                  "--cert", str(pki.directory / "controller-1.pem"), "--policy", str(pki.policy_path), *args],
                 env={"CLIPBUILD_PASSPHRASE": devpki.SECRET.decode()}, check=False)
    assert signed.returncode == 0, signed.stderr


def reindex(conf_dir: Path) -> None:
    """A repository's Packages.gz rewritten for its pool as it now is: what someone holding the mirror can do."""
    import gzip

    from clipbuild.update import repository

    stanzas = [repository.stanza(repository.read_package(deb), f"pool/{deb.name}")
               for deb in sorted((conf_dir / "pool").glob("*.deb"))]
    index = next(conf_dir.glob("dists/*/main/binary-*/Packages.gz"))
    index.write_bytes(gzip.compress("\n".join(stanzas).encode(), mtime=0))


def rebuilt(deb: Path, out: Path, scratch: Path, edit) -> None:
    """DEB with its control file edited (`edit(text) -> text`), built as OUT and signed by the development PKI's
    developer then controller: a package both roles signed, as a mistaken or compromised pair would."""
    from clipbuild.signing import devpki
    from clipbuild.signing.signer import sign_bytes

    tree = scratch / "tree"
    run(["dpkg-deb", "-R", deb, tree])
    control = tree / "DEBIAN" / "control"
    control.write_text(edit(control.read_text()))
    run(["dpkg-deb", "--root-owner-group", "--build", tree, out])
    pki = devpki.ensure()
    out.write_bytes(sign_bytes(sign_bytes(out.read_bytes(), "developer", pki.developer), "controller",
                               pki.controller))
