"""The build root ("SDK"): the isolated tree where Portage runs.

Two kinds, one interface:
- the embedded default: a minimal Debian bookworm root made with mmdebstrap, with the build tools and a pinned
  Portage wheel installed offline into /opt/portage (the platform notes' recipe);
- a Gentoo stage3 tarball, digest-checked before it is unpacked (without root: in a user namespace), using the
  Portage inside it.

Build roots are cached by the key of their recipe under ~/.cache/clipbuild/sdk/<key>/ and shared by every work
directory. Commands run in bubblewrap: the root read-only, only the mounts a caller names writable, the network
unshared unless a caller asks for it, uid 0 inside a user namespace (as root or as an unprivileged user): a
`Sandbox` that clipbuild.core.run puts around the command, so a failure names the command, not bwrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.digest import key_of, sha256_file
from clipbuild.core.errors import BuildRootError, InputError
from clipbuild.core.paths import cache_dir
from clipbuild.core.run import Result, Sandbox, require, run

RECIPE_VERSION = 1  # bump when the way a build root is made changes
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python3-venv", "gcc", "libc6-dev", "make", "patch", "bzip2", "xz-utils", "zstd",
                   "pax-utils", "file", "binutils", "cpio", "bc", "flex", "bison", "libelf-dev", "perl", "ccache",
                   "pkgconf")
PORTAGE_VERSION = "3.0.83"
PORTAGE_WHEEL = f"portage-{PORTAGE_VERSION}-py3-none-any.whl"
PORTAGE_WHEEL_SHA256 = "25de95ad893cdf9abec2bf4d18217b3fc07756989c62d3e74bb1695cdf639402"
# Where the bubblewrap mounts land inside every build root (created empty in the root). /build is a tmpfs in
# every command, so callers may mount anything below it.
MOUNT_POINTS = ("dev", "proc", "tmp", "etc/portage", "var/db/repos/clip", "var/cache/distfiles",
                "var/cache/binpkgs", "var/cache/ccache", "var/log/portage", "build")
PATH_IN_ROOT = "/opt/portage/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what a build root holds; its key names the cached root."""

    kind: str  # "debian" or "stage3"
    suite: str = DEBIAN_SUITE
    packages: tuple[str, ...] = DEBIAN_PACKAGES
    portage: str = PORTAGE_VERSION
    stage3_sha512: str = ""
    version: int = RECIPE_VERSION

    @property
    def key(self) -> str:
        return key_of(self)[:20]


DEFAULT_RECIPE = Recipe("debian")


@dataclass(frozen=True)
class Mount:
    source: Path
    dest: str
    writable: bool = False


@dataclass(frozen=True)
class BuildRoot:
    path: Path
    recipe: Recipe
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def key(self) -> str:
        return self.recipe.key

    @property
    def emerge(self) -> str:
        return "/opt/portage/bin/emerge" if self.recipe.kind == "debian" else "/usr/bin/emerge"

    def portage_env(self) -> dict[str, str]:
        """Environment Portage needs in this root (platform notes §1 for the pip-installed Portage)."""
        env = {"PATH": PATH_IN_ROOT, "HOME": "/root", "LC_ALL": "C.UTF-8", "TERM": "dumb"}
        if self.recipe.kind == "debian":
            env.update({"EPREFIX": "", "PORTAGE_USERNAME": "root", "PORTAGE_GRPNAME": "root"})
        return env

    def sandbox(self, mounts: Sequence[Mount] = (), env: Mapping[str, str] | None = None, *, network: bool = False,
                cwd: str = "/", writable_root: bool = False, usr_lib: Mapping[str, Path] | None = None,
                uid: int = 0) -> Sandbox:
        """The bubblewrap settings of a command in this root (read-only unless `writable_root`). `usr_lib`
        adds directories to /usr/lib (name -> host folder, read-only) without touching the root: /usr/lib is then
        the root's own, entry by entry, plus those."""
        cmd = ["bwrap", "--bind" if writable_root else "--ro-bind", str(self.root), "/", "--dev", "/dev",
               "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/build", "--unshare-all",
               "--die-with-parent", "--clearenv", "--uid", str(uid), "--gid", str(uid), "--chdir", cwd]
        if self.recipe.kind == "debian" and not writable_root:
            cmd += ["--tmpfs", "/opt/portage/var"]  # the "/" vardb of a pip-installed Portage
        if usr_lib:
            cmd += self._usr_lib_view(usr_lib)
        if network:
            cmd += ["--share-net", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        for mount in mounts:
            cmd += ["--bind" if mount.writable else "--ro-bind", str(mount.source), mount.dest]
        for name, value in {**self.portage_env(), **(env or {})}.items():
            cmd += ["--setenv", name, value]
        return Sandbox(tuple(cmd))

    def _usr_lib_view(self, extra: Mapping[str, Path]) -> list[str]:
        args = ["--tmpfs", "/usr/lib"]
        for entry in sorted((self.root / "usr" / "lib").iterdir()):
            if entry.name in extra:
                raise BuildRootError(f"/usr/lib/{entry.name} is already in the build root {self.key}")
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry), f"/usr/lib/{entry.name}"]
            else:
                args += ["--ro-bind", str(entry), f"/usr/lib/{entry.name}"]
        for name, source in sorted(extra.items()):
            args += ["--ro-bind", str(source), f"/usr/lib/{name}"]
        return [*args, "--remount-ro", "/usr/lib"]

    def run(self, argv: Sequence[str], mounts: Sequence[Mount] = (), env: Mapping[str, str] | None = None, *,
            network: bool = False, check: bool = True, capture: bool = True, cwd: str = "/",
            timeout: float | None = None, writable_root: bool = False) -> Result:
        require("bwrap")
        return run(argv, sandbox=self.sandbox(mounts, env, network=network, cwd=cwd, writable_root=writable_root),
                   check=check, capture=capture, timeout=timeout)


def _sdk_dir(recipe: Recipe) -> Path:
    return cache_dir() / "sdk" / recipe.key


def find(recipe: Recipe = DEFAULT_RECIPE) -> BuildRoot | None:
    path = _sdk_dir(recipe)
    info_file = path / "sdk.json"
    if not info_file.is_file():
        return None
    return BuildRoot(path, recipe, json.loads(info_file.read_text()))


def installed() -> list[BuildRoot]:
    roots = []
    for info_file in sorted((cache_dir() / "sdk").glob("*/sdk.json")):
        info = json.loads(info_file.read_text())
        recipe = Recipe(**{**info["recipe"], "packages": tuple(info["recipe"]["packages"])})
        roots.append(BuildRoot(info_file.parent, recipe, info))
    return roots


def by_key(key: str) -> BuildRoot:
    """The cached build root named by `key` (as `clipbuild sdk info` lists them)."""
    for root in installed():
        if root.key == key:
            return root
    known = ", ".join(r.key for r in installed()) or "none"
    raise InputError(f"no build root {key} (cached: {known}); see clipbuild sdk info, or sdk create")


def ensure(recipe: Recipe = DEFAULT_RECIPE, say=print) -> BuildRoot:
    """The build root of `recipe`, made first if it is not cached (only the embedded default can be)."""
    existing = find(recipe)
    if existing is not None:
        return existing
    if recipe.kind != "debian":
        raise InputError("this build root comes from a stage3 tarball: run clipbuild sdk create --stage3 FILE "
                         "--digest sha512:HEX")
    return create_debian(recipe, say)


def _remove_leftovers(sdk_dir: Path) -> None:
    """Half-made or half-removed build roots of processes that no longer run."""
    for leftover in [*sdk_dir.glob(".tmp-*"), *sdk_dir.glob(".doomed-*")]:
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _fresh_tmp(recipe: Recipe) -> Path:
    _remove_leftovers(cache_dir() / "sdk")
    tmp = cache_dir() / "sdk" / f".tmp-{recipe.key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def portage_wheel(say=print) -> Path:
    """The pinned Portage wheel, downloaded once from PyPI and checked against its known digest."""
    wheels = cache_dir() / "wheels"
    wheel = wheels / PORTAGE_WHEEL
    if not wheel.is_file():
        say(f"sdk: downloading {PORTAGE_WHEEL} from PyPI")
        wheels.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
             f"portage=={PORTAGE_VERSION}"])
    digest = sha256_file(wheel)
    if digest != PORTAGE_WHEEL_SHA256:
        wheel.unlink()
        raise BuildRootError(f"{wheel}: sha256 {digest} is not the pinned {PORTAGE_WHEEL_SHA256}; removed it")
    return wheel


def create_debian(recipe: Recipe = DEFAULT_RECIPE, say=print) -> BuildRoot:
    """mmdebstrap a minimal Debian root with the build tools, then install the pinned Portage offline."""
    require("mmdebstrap", "bwrap")
    wheel = portage_wheel(say)
    tmp = _fresh_tmp(recipe)
    started = time.monotonic()
    say(f"sdk: mmdebstrap {recipe.suite} with {len(recipe.packages)} packages (about 30 s)")
    mode = "root" if os.geteuid() == 0 else "unshare"
    # --mode=unshare leaves a directory owned by subordinate ids, which the user can neither write nor remove and
    # bwrap (which maps only the user's own id) shows as nobody's: make a tarball instead and unpack it as the user.
    target = tmp / ("root" if mode == "root" else "root.tar")
    if mode == "unshare":
        require("newuidmap", "newgidmap")
    run(["mmdebstrap", "--variant=minbase", f"--mode={mode}", "--include=" + ",".join(recipe.packages),
         "--aptopt=Acquire::Retries=3", recipe.suite, str(target), DEBIAN_MIRROR], timeout=1800)
    if mode == "unshare":  # device nodes cannot be made without root; bwrap mounts /dev anyway
        (tmp / "root").mkdir()
        run(["tar", "-xpf", str(target), "-C", str(tmp / "root"), "--no-same-owner", "--exclude=./dev/*"])
        target.unlink()
    _prepare_mount_points(tmp / "root", debian=True)
    sdk = BuildRoot(tmp, recipe)
    say(f"sdk: installing Portage {recipe.portage} offline")
    (tmp / "wheels").mkdir()
    shutil.copy(wheel, tmp / "wheels" / wheel.name)
    script = ("set -e; python3 -m venv /opt/portage; "
              f"/opt/portage/bin/pip install -q --no-index --no-deps /wheels/{wheel.name}; "
              "ln -sf /bin/tar /opt/portage/bin/gtar; ln -sfn /etc/portage /opt/portage/etc/portage; "
              "mkdir -p /opt/portage/var")
    (tmp / "root" / "wheels").mkdir()
    sdk.run(["sh", "-c", script], [Mount(tmp / "wheels", "/wheels")], writable_root=True)
    (tmp / "root" / "wheels").rmdir()
    shutil.rmtree(tmp / "wheels")
    return _commit(tmp, recipe, started, say)


def _prepare_mount_points(root: Path, *, debian: bool) -> None:
    for point in MOUNT_POINTS:
        (root / point).mkdir(parents=True, exist_ok=True)
    if debian:
        (root / "opt" / "portage" / "var").mkdir(parents=True, exist_ok=True)


def _commit(tmp: Path, recipe: Recipe, started: float, say) -> BuildRoot:
    sdk = BuildRoot(tmp, recipe)
    versions = sdk.run(["sh", "-c", "dpkg-query -W -f '${Package} ${Version}\\n' 2>/dev/null || "
                        "ls /var/db/pkg/*/ 2>/dev/null"], check=False).stdout.split("\n")
    portage_version = sdk.run([sdk.emerge, "--version"], check=False).stdout.strip()
    info = {"recipe": asdict(recipe), "key": recipe.key, "created": int(time.time()),
            "seconds": round(time.monotonic() - started, 1), "portage": portage_version,
            "packages": [v for v in versions if v]}
    (tmp / "sdk.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    final = _sdk_dir(recipe)
    if final.exists():  # made meanwhile by another run
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    say(f"sdk: ready in {info['seconds']} s at {final}")
    return BuildRoot(final, recipe, info)


def import_stage3(tarball: Path, digest: str, say=print) -> BuildRoot:
    """Check a Gentoo stage3 tarball against `digest` (sha512:HEX), then unpack it in a user namespace."""
    algo, _, expected = digest.partition(":")
    if algo != "sha512" or len(expected) != 128 or any(c not in "0123456789abcdef" for c in expected.lower()):
        raise InputError(f"--digest {digest!r}: expected sha512: followed by 128 hex digits")
    actual = hashlib.sha512()
    with tarball.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            actual.update(chunk)
    if actual.hexdigest() != expected.lower():
        raise InputError(f"{tarball}: sha512 is {actual.hexdigest()}, not the expected {expected.lower()}; "
                         "refusing to unpack it")
    recipe = Recipe("stage3", suite="", packages=(), portage="", stage3_sha512=expected.lower())
    existing = find(recipe)
    if existing is not None:
        return existing
    require("bwrap", "tar")
    tmp = _fresh_tmp(recipe)
    started = time.monotonic()
    (tmp / "root").mkdir()
    say(f"sdk: unpacking {tarball.name} (digest verified)")
    run(["bwrap", "--bind", "/", "/", "--dev", "/dev", "--unshare-user", "--uid", "0", "--gid", "0",
         "tar", "-xpf", str(tarball.resolve()), "-C", str(tmp / "root"), "--xattrs-include=*.*", "--numeric-owner",
         "--no-same-owner" if os.geteuid() != 0 else "--same-owner",
         *(["--exclude=./dev/*"] if os.geteuid() != 0 else [])])  # no mknod in a user namespace
    _prepare_mount_points(tmp / "root", debian=False)
    return _commit(tmp, recipe, started, say)


def destroy(sdk: BuildRoot) -> None:
    doomed = sdk.path.with_name(f".doomed-{sdk.path.name}-{os.getpid()}")
    os.rename(sdk.path, doomed)  # gone from view at once, even if removal is interrupted
    shutil.rmtree(doomed)
