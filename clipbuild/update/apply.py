"""Updates applied to an image file, offline and without root, as a CLIP device applies them (clipos4.md §3).

`apply(IMAGE, REPO)` reads a repository in CLIP's layout (one per conf package: pool + Packages.gz), checks
every package (both signatures; Priority and Distribution match the part; Impact; the conf package's
Release-Date age; no downgrade), then installs the core into the inactive slot: a new root filesystem and
dm-verity tree, a new mounts partition carrying over the local configuration the root's
/etc/clip_update/conffiles.list names, the slot's kernel and boot entry. Only then is the switch flipped
(`extlinux.conf` = `include extlinux_<new>.conf`), as `clip_install_clip_core` did.

Faults: everything before the flip writes only the inactive slot's partitions and its own boot files, so an
update killed at any point, or one that runs out of space (found before anything is written), leaves the
image booting the old slot. A journal beside the image says what was under way; running the same update
again starts over from the beginning.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from clipbuild.core import beneath, safefile
from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ClipbuildError, ImageError, InputError, UpdateRefused
from clipbuild.core.run import run
from clipbuild.image import bootloader, fsimage, inspection, install, jailproof, selftests, slot, uefi
from clipbuild.signing import secureboot, trust, truststore
from clipbuild.signing.devpki import DEVELOPMENT
from clipbuild.spec import cmdline
from clipbuild.update import apps, imageedit, intake, noupdate, releasemeta
from clipbuild.update.repository import CONF, Package, pins, read_package
from clipbuild.update.root import read_root
from clipbuild.update.rules import Overrides, Rules, from_root, overridden

PRIORITY = {"core": "required", "apps": "important"}
CONFFILES = "etc/clip_update/conffiles.list"


@dataclass(frozen=True)
class RepoPart:
    dist: str
    part: str
    conf: Package
    members: tuple[Package, ...]  # the conf package first

    @property
    def name(self) -> str:
        return f"{self.dist}-{self.part}"


def compare_versions(a: str, b: str) -> int:
    """dpkg's ordering: -1, 0 or 1."""
    if run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0:
        return -1
    return 0 if run(["dpkg", "--compare-versions", a, "eq", b], check=False).returncode == 0 else 1


def check_part(part: RepoPart, policy: trust.Policy, installed: dict[str, str], rules: Rules) -> list[str]:
    """Every reason to refuse this part, each naming the package and the rule."""
    reasons = []
    for package in part.members:
        label = f"{part.name}: {package.path.name}"
        verdict = trust.verify_file(package.path, policy)
        reasons += [f"{label}: {reason}" for reason in verdict.reasons]
        fields = package.fields
        if fields.get("Priority", "").lower() != PRIORITY[part.part]:
            reasons.append(f"{label}: Priority {fields.get('Priority', 'missing')}, the {part.part} part takes "
                           f"{PRIORITY[part.part].capitalize()}")
        if fields.get("Distribution", "").lower() != part.dist:
            reasons.append(f"{label}: Distribution {fields.get('Distribution', 'missing')}, not {part.dist}")
        impact = fields.get("Impact", "0").strip()
        if not re.fullmatch(r"[0-9]{1,3}", impact):
            reasons.append(f"{label}: Impact '{impact}' is not a number")
        elif int(impact) >= 2 and not rules.allows_high_impact(part.name):
            reasons.append(f"{label}: Impact {impact} (high) and high-impact packages are not allowed here "
                           f"(option_install_high_impact_packages: {rules.origins.get(part.name, 'default')})")
        old = installed.get(package.name)
        if old is not None and compare_versions(package.version, old) < 0:
            reasons.append(f"{label}: downgrade refused: {package.name} {old} is installed, the repository has "
                           f"{package.version}")
    reasons += _release_date(part, rules)
    return reasons


def _release_date(part: RepoPart, rules: Rules) -> list[str]:
    label = f"{part.name}: {part.conf.path.name}"
    text = part.conf.fields.get("Release-Date")
    if not text:
        return [f"{label}: no Release-Date: a conf package must say when it was released"]
    try:
        released = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return [f"{label}: Release-Date '{text}' is not a date"]
    if released.tzinfo is None:
        return [f"{label}: Release-Date '{text}' has no time zone (RFC 2822: +0000 for UTC)"]
    age = rules.now - released
    if released - rules.now > dt.timedelta(days=1):
        return [f"{label}: Release-Date {text} is in the future"]
    if rules.maximum_age_days and age > dt.timedelta(days=rules.maximum_age_days):
        return [f"{label}: released {age.days} days ago, more than the maximum age of {rules.maximum_age_days} "
                f"days (maximum_age: {rules.origins.get('maximum_age', 'default')})"]
    return []


@dataclass
class Outcome:
    image: Path
    updated: str  # what was done: "core", "apps" or "nothing"
    slot: str  # the slot that is active now
    previous_slot: str
    version: str
    previous_version: str
    notes: list[str] = field(default_factory=list)
    rules: Rules | None = None  # the rules the update was checked against
    metadata: dict[str, Any] = field(default_factory=dict)  # the release metadata accepted

    def to_dict(self) -> dict[str, Any]:
        return {"image": str(self.image), "updated": self.updated, "active_slot": self.slot,
                "previous_slot": self.previous_slot, "version": self.version,
                "previous_version": self.previous_version, "notes": self.notes,
                "rules": self.rules.to_dict() if self.rules else None, "metadata": self.metadata}


def apply(image: Path, repo: Path, policy: trust.Policy | None = None, overrides: Overrides | None = None,
          progress: Callable[[str], None] = lambda message: None, now: dt.datetime | None = None,
          secureboot_keys: Path | None = None) -> Outcome:
    """`overrides` (update apply --max-age, --allow-high-impact) change the rules the running root carries
    only on a development image (rules.overridden); `now` (update apply --at) and `policy` (--policy, instead
    of the trust store of the running root) likewise. On the UEFI path the new slot's UKI is signed with
    `secureboot_keys` (default: the development set, for a development image)."""
    found = inspection.read(image)
    active = found.check_writable()
    notes = [note] if (note := apps.recover(found)) else []
    manifest = found.manifest
    target = next((s for s in sorted(manifest["slots"]) if s != active), None)
    if target is None:
        raise ImageError(f"{image}: the image has a single slot; a core update needs an inactive one")
    _extra(manifest, active)  # the arguments the new entries will carry: checked before anything is written
    keys = uefi.keys_for(manifest, secureboot_keys, str(image)) if found.esp is not None else None
    if (previous := imageedit.read_journal(found)) is not None:
        notes.append(f"an update to slot {previous['target']} ({previous['version']}) was interrupted "
                     f"at '{previous['state']}'; slot {active} was still active; it is applied again from the start")
    with imageedit.scratch(image) as tmp:
        accepted = dataclasses.replace(_take_in(found, repo, policy, overrides or Overrides(), now, tmp), keys=keys)
        notes += accepted.notes
        outcome = _install(found, accepted, target, tmp, progress, notes)
    statement = accepted.signed.statement
    outcome.metadata = {"release": statement.release, "version": statement.version, "expires": statement.expires,
                        "recorded": outcome.updated != "nothing"}
    return outcome


@dataclass(frozen=True)
class _Accepted:
    """An update whose metadata and packages passed every check: what `_install` works from."""

    signed: releasemeta.Signed
    parts: dict[str, RepoPart]
    installed: dict[str, dict[str, str]]
    policy: trust.Policy  # the device's, with the newest CRLs
    rules: Rules
    root_version: str
    marked: str  # the release `update rollback` left, or ""
    notes: list[str]
    keys: secureboot.SecureBootKeys | None = None  # the UEFI path: what signs the new slot's UKI


def _take_in(found: inspection.Inspection, repo: Path, given: trust.Policy | None, overrides: Overrides,
             now: dt.datetime | None, tmp: Path) -> _Accepted:
    """The device's state (from what can be authenticated: its verified root's trust store and rules, its
    signed records), then the signed release metadata, checked before any other file of the repository is
    read, then the repository against it, then every package."""
    image, manifest = found.image, found.manifest
    facts = read_root(found, found.active_slot or "", tmp)
    rules, notes = from_root(facts.tree, image.name, now)
    development = manifest["signing"] == DEVELOPMENT and facts.variant == "dev"  # both say so
    rules = overridden(rules, overrides, development)
    if now is not None and not development:
        raise ImageError(f"{image}: another clock (--at) is for development images: a release image checks dates "
                         "against the clock")
    device = _device_policy(found, facts.tree, given, development)
    signed = releasemeta.read(repo / releasemeta.METADATA)
    policy = releasemeta.fresh_policy(device, signed.statement)  # CRLs sign themselves: taken before the rest
    installed = installed_versions(found, policy, tmp, facts.version)
    marked, marker_notes = noupdate.read(found, tmp)
    seen = newest_seen(found, policy, tmp, facts.tree)
    if problems := releasemeta.check(signed, policy, species=manifest["species"], seen=seen, now=rules.now):
        raise UpdateRefused(f"{repo}: update refused: its release metadata is not accepted; nothing was written to "
                            f"{image.name}", detail=[f"  {p}" for p in problems])
    found_parts = intake.read_repository(repo, signed.statement, tmp / "repository")
    parts = {name: RepoPart(*value) for name, value in found_parts.items()}
    reasons = [r for part in parts.values() for r in check_part(part, policy, installed.get(part.name, {}), rules)]
    reasons += intake.undeclared_dependencies([p for part in parts.values() for p in part.members],
                                              signed.statement, {n for pinned in installed.values() for n in pinned})
    if reasons:
        raise UpdateRefused(f"{repo}: update refused; nothing was written to {image.name}",
                            detail=[f"  {reason}" for reason in reasons])
    return _Accepted(signed, parts, installed, policy, rules, facts.version, marked, notes + marker_notes)


def _device_policy(found: inspection.Inspection, root: Path, given: trust.Policy | None,
                   development: bool) -> trust.Policy:
    """What the device trusts: the store its verified root carries (clip-update-keys, etc/clip_update/keys),
    which a signed core update replaces; a policy given on the command line only on a development image."""
    if given is not None:
        if not development:
            raise ImageError(f"{found.image}: a release image trusts the store in its root "
                             f"(/{truststore.KEYS_DIR}), never a policy given on the command line",
                             hint="rotate keys with a core update that ships a new clip-update-keys")
        return given
    try:
        return truststore.load(root)
    except InputError as exc:
        raise ImageError(f"{found.image}: slot {found.active_slot}'s root has no usable trust store: "
                         f"{exc.lines()[0]}", hint="an image made before clip-update-keys existed: rebuild it, or "
                         "give --policy (development images)") from exc


def _install(found: inspection.Inspection, accepted: _Accepted, target: str, tmp: Path,
             progress: Callable[[str], None], notes: list[str]) -> Outcome:
    image, manifest, parts, installed = found.image, found.manifest, accepted.parts, accepted.installed
    active, rules = found.active_slot or "", accepted.rules
    core, new_apps = parts.get("clip-core"), parts.get("clip-apps")
    old_version = manifest["slots"][active]["version"]
    if core is not None and (held := noupdate.holding(accepted.marked, core.conf.version, accepted.root_version,
                                                      compare_versions)):
        return Outcome(image, "nothing", active, target, old_version, old_version, [*notes, held], rules)
    kept = _Kept(installed, accepted.policy)
    if core is None or compare_versions(core.conf.version,
                                        installed.get("clip-core", {}).get(core.conf.name, "0")) == 0:
        if new_apps is None or compare_versions(new_apps.conf.version,
                                                installed.get("clip-apps", {}).get(new_apps.conf.name, "0")) == 0:
            return Outcome(image, "nothing", active, target, old_version, old_version,
                           [*notes, "the core and the apps in the repository are the ones installed"], rules)
        kept.agrees(manifest, active, "clip-apps")  # the apps lists follow the manifest
        progress(f"apps {new_apps.conf.name} {new_apps.conf.version} on the running slot {active}")
        info = apps.apply_apps(found, new_apps.members, tmp, progress, accepted.policy.special(),
                               record=accepted.signed.raw)
        imageedit.write_manifest(found, {**manifest, "slots": {**manifest["slots"], active: info},
                                         "packages": info["packages"]}, tmp)
        return Outcome(image, "apps", active, target, old_version, old_version, notes, rules)
    progress(f"core {old_version} -> {core.conf.version} into slot {target}")
    _apply_core(found, parts, target, tmp, progress, kept, accepted)
    return Outcome(image, "core", target, active, core.conf.version, old_version, notes, rules)


def newest_seen(found: inspection.Inspection, policy: trust.Policy, scratch: Path,
                root: Path) -> releasemeta.Seen | None:
    """The newest release metadata this image accepted: the record in the running root (dm-verity checked,
    written with the core it came with) and those in each slot's mounts partition (written by every update;
    each must be genuine, signed by a controller of the device's policy, else the image was edited)."""
    active = found.active_slot or ""
    records = {}
    if beneath.exists(root, releasemeta.RECORD_ROOT):
        where = f"slot {active}'s root: /{releasemeta.RECORD_ROOT}"
        records["root"] = releasemeta.read_record(beneath.read_bytes(root, releasemeta.RECORD_ROOT), where, policy)
    for name in sorted(found.manifest["slots"]):
        copied = imageedit.Ext4(found, f"mounts_{name}", scratch).copy(f"/{releasemeta.RECORD_MOUNTS}")
        if os.path.lexists(copied):
            where = f"mounts_{name}: /{releasemeta.RECORD_MOUNTS}"
            if copied.is_symlink() or not copied.is_file():
                raise ImageError(f"{found.image}: {where} is not a regular file: the image was edited")
            records[name] = releasemeta.read_record(safefile.read_regular(copied, 4 << 20), where, policy)
    floor, running = records.get("root"), records.get(active)
    if floor is not None and (running is None or running.version < floor.version):
        raise ImageError(f"{found.image}: mounts_{active} has {'no record' if running is None else 'version '}"
                         f"{'' if running is None else running.version} of the release metadata, below the "
                         f"running root's {floor.version}: lowered by someone with the disk; refused before any "
                         "write", hint="restore the image from a copy")
    return max(records.values(), key=lambda r: r.version, default=None)


CONF_FILE = re.compile(r"(clip|rm)-(core|apps)-conf(-[bh])?_[A-Za-z0-9.+~:%_-]+\.deb")


def installed_versions(found: inspection.Inspection, policy: trust.Policy, scratch: Path,
                       core_version: str) -> dict[str, dict[str, str]]:
    """Per set, package -> version the running slot has installed, from what can be authenticated, never from
    the boot partition's manifest: the core's version is the running root's (etc/os-release IMAGE_VERSION),
    read once the root verifies against the root hash its boot entry hands the kernel; each set's packages are
    the pins of its conf package, signed (both signatures against `policy`), in the slot's local mirror: for
    the core the one of the root's version (`core_version`: root.read_root), for the others the newest signed
    one."""
    active = found.active_slot or ""
    out: dict[str, dict[str, str]] = {}
    signed, refused = _signed_confs(found, active, policy, scratch)
    for name, confs in signed.items():
        if name == "clip-core-conf":
            chosen = next((c for c in confs if c.version == core_version), None)
        else:
            chosen = max(confs, key=functools.cmp_to_key(lambda a, b: compare_versions(a.version, b.version)))
        if chosen is not None:
            match = CONF.fullmatch(name)
            out[f"{match['dist']}-{match['part']}"] = {name: chosen.version, **dict(pins(chosen))}
    if "clip-core-conf" not in out.get("clip-core", {}):
        raise ImageError(f"{found.image}: slot {active}'s root is core {core_version}, but its local mirror holds no "
                         f"signed clip-core-conf {core_version}; cannot tell what is installed, refused before any "
                         "write", detail=[f"  {line}" for line in refused],
                         hint="is --policy the policy the image was made with? else restore the image from a copy")
    return out


def _signed_confs(found: inspection.Inspection, active: str, policy: trust.Policy,
                  scratch: Path) -> tuple[dict[str, list[Package]], list[str]]:
    """The conf packages of the slot's local mirror whose signatures verify, by package name; and why the
    others were left out. Revocation aside: a key revoked since it signed the running system does not make
    that system unknown (the rotation drill: N's packages were countersigned by the controller N+1 revokes);
    what gets installed is checked in full."""
    installed = trust.revocation_aside(policy)
    mounts = imageedit.Ext4(found, f"mounts_{active}", scratch)
    out: dict[str, list[Package]] = {}
    refused: list[str] = []
    for dist in ("clip", "rm"):
        for name in mounts.names(f"/var/pkg/mirrors/{dist}"):
            if not CONF_FILE.fullmatch(name):
                continue
            deb = mounts.copy(f"/var/pkg/mirrors/{dist}/{name}")
            verdict = None if deb.is_symlink() or not deb.is_file() else trust.verify_bytes(
                safefile.read_regular(deb, trust.MAX_PACKAGE_BYTES), installed, path=str(deb))
            if verdict is None or not verdict.ok:
                refused.append(f"{dist}/{name}: {'; '.join(verdict.reasons) if verdict else 'not a file'}")
                continue
            package = read_package(deb)
            if CONF.fullmatch(package.name):
                out.setdefault(package.name, []).append(package)
    return out, refused


@dataclass
class _Built:
    """A new slot, built and not yet written: filesystem files by partition label, its manifest entry."""

    files: dict[str, Path]
    info: dict[str, Any]
    kernel: Path
    release: str
    os_release: str = ""  # the new root's /etc/os-release (the UEFI path's UKI carries it)


@dataclass(frozen=True)
class _Kept:
    """What the packages a core update keeps from the running slot are checked against: the versions the
    running slot has installed (installed_versions) and the trust policy."""

    installed: dict[str, dict[str, str]]
    policy: trust.Policy

    def check(self, set_name: str, debs: list[Path]) -> list[Path]:
        """`debs` (named by the manifest) if each is signed and together they are exactly what is installed."""
        found = {}
        for deb in debs:
            if not (verdict := trust.verify_file(deb, self.policy)).ok:
                raise ImageError(f"{deb.name}: kept from the running slot's mirror, but: {'; '.join(verdict.reasons)}")
            package = read_package(deb)
            found[package.name] = package.version
        self._same(set_name, found)
        return debs

    def agrees(self, manifest: dict[str, Any], active: str, set_name: str) -> None:
        """The manifest's entries of `set_name` for the running slot are exactly what is installed."""
        entries = inspection.slot_packages(manifest, active)
        self._same(set_name, {e["package"]: e["version"] for e in entries if e["set"] == set_name})

    def _same(self, set_name: str, listed: dict[str, str]) -> None:
        if listed != self.installed.get(set_name, {}):
            raise ImageError(f"{set_name}: the packages the manifest names ({_listing(listed)}) are not the ones the "
                             f"running slot's signed conf package pins ({_listing(self.installed.get(set_name, {}))});"
                             " refused before any write", hint="the boot partition was edited: restore the image")


def _listing(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) or "none"


def _apply_core(found: inspection.Inspection, parts: dict[str, RepoPart], target: str, scratch: Path,
                progress: Callable[[str], None], kept: _Kept, accepted: _Accepted) -> None:
    try:
        built = _build_core(found, parts, target, scratch, progress, kept, accepted)
    except ClipbuildError as exc:
        raise ImageError(f"update not applied: {exc.lines()[0]}", hint=f"nothing was written: "
                         f"{found.image.name} still boots slot {found.active_slot}; fix the cause and run the "
                         "same command again") from exc
    _write_core(found, built, target, scratch, accepted.keys)


def _build_core(found: inspection.Inspection, parts: dict[str, RepoPart], target: str, scratch: Path,
                progress: Callable[[str], None], kept: _Kept, accepted: _Accepted) -> _Built:
    manifest = found.manifest
    active = found.active_slot or ""
    slices = found.slices()
    by_label = {s.label: s for s in slices}
    old_mounts = imageedit.Ext4(found, f"mounts_{active}", scratch)
    old_mirror = old_mounts.copy("/var/pkg/mirrors")
    pool = {name: [p.path for p in part.members] for name, part in parts.items()}
    # Sets not in the repository (apps, the RM levels, which update in their own jails): the packages the
    # running slot has installed, by name from the manifest, each signed (revocation checked: a key revoked
    # since stops them) and together exactly what the running slot's signed conf packages pin; the mirror
    # also keeps older ones for rollback.
    for name, files in _installed_files(manifest, active, ("clip-apps", *slot.RM_SETS)).items():
        if name not in pool:
            pool[name] = kept.check(name, [old_mirror / name.split("-")[0] / file for file in files])
    version = parts["clip-core"].conf.version
    trees = slot.core_trees([d for s in slot.CLIP_SETS for d in pool[s]], scratch / "new", progress,
                             accepted.policy.special())
    _carry_configuration(old_mounts, trees)
    slot.add_mirror(trees["mounts"], pool)
    # The release metadata this core came with: its version is the floor of what the new slot accepts.
    for tree, path in ((trees["root"], releasemeta.RECORD_ROOT), (trees["mounts"], releasemeta.RECORD_MOUNTS)):
        beneath.mkdir(tree, PurePosixPath(path).parent)
        beneath.write_bytes(tree, path, accepted.signed.raw)
    slot.configure_root(trees["root"], slices, mode=manifest["signing"], species=manifest["species"],
                        version=version)
    date = manifest["source_date_epoch"]
    for tree in trees.values():
        install.normalise_tree(tree, date)
    root_part, mounts_part = by_label[f"root_{target}"], by_label[f"mounts_{target}"]
    files = {root_part.label: scratch / "root.img", f"{root_part.label}_verity": scratch / "verity.img",
             mounts_part.label: scratch / "mounts.img"}
    progress(f"filesystems of slot {target}")
    slot.root_filesystem(root_part, trees["root"], files[root_part.label], date, manifest["species"])
    info = slot.verity(root_part, files[root_part.label], files[f"{root_part.label}_verity"],
                       manifest["species"], version)
    slot.ext4_filesystem(mounts_part, trees["mounts"], files[mounts_part.label], date, manifest["species"])
    kernel = slot.kernel(trees["root"])
    info["kernel_sha256"] = sha256_file(kernel)
    info["packages"] = imageedit.package_entries(pool)
    info["release"] = slot.release(trees["root"])
    info["selftests"] = selftests.shipped(trees["root"])
    info["jails"] = [jail.to_dict() for jail in jailproof.shipped(trees["root"])]
    return _Built(files, info, kernel, info["release"], beneath.read_text(trees["root"], "etc/os-release"))


def _write_core(found: inspection.Inspection, built: _Built, target: str, scratch: Path,
                keys: secureboot.SecureBootKeys | None) -> None:
    """The inactive slot written first, the switch last (see the module's docstring for why)."""
    manifest, image, info, files = found.manifest, found.image, built.info, built.files
    active = found.active_slot or ""
    slices = found.slices()
    by_label = {s.label: s for s in slices}
    version, date = info["version"], manifest["source_date_epoch"]
    slots = {**manifest["slots"], target: info}
    journal = imageedit.Journal(found, target, version)
    journal.step("writing the partitions of the inactive slot")
    for label, source in files.items():
        imageedit.replace_partition(image, by_label[label], source)
    guids = {s.label: s.guid for s in slices}
    if found.esp is not None:
        _write_uefi_entry(found, built, target, guids, scratch, keys, journal)
        return
    journal.step("writing the inactive slot's kernel and boot entries")
    boot = found.mtools()
    fsimage.vfat_replace(boot, bootloader.kernel_name(target), built.kernel, date)
    title = f"{built.release} ({manifest['species']})"
    configs = bootloader.configs(title, _timeout(found, active, scratch), slots, guids, _extra(manifest, active))
    imageedit.write_boot_file(boot, f"{bootloader.DIRECTORY}/{bootloader.slot_config_name(target)}",
                              configs[target], scratch, date)
    journal.step("switching to the new slot")
    imageedit.write_boot_file(boot, bootloader.SWITCH, bootloader.switch_config(target), scratch, date)
    journal.step("updating the previous slot's entries and the manifest")
    imageedit.write_boot_file(boot, f"{bootloader.DIRECTORY}/{bootloader.slot_config_name(active)}",
                              configs[active], scratch, date)
    info["cmdline"] = bootloader.slot_boot(target, info, guids).cmdline(_extra(manifest, active))
    new_manifest = {**manifest, "slots": slots, "active_slot": target, "version": version, "release": built.release,
                    "packages": info["packages"]}
    imageedit.write_manifest(found, new_manifest, scratch)
    noupdate.clear(found)  # a newer release than the one rolled back is installed
    journal.done()


def _write_uefi_entry(found: inspection.Inspection, built: _Built, target: str, guids: dict[str, str], scratch: Path,
                      keys: secureboot.SecureBootKeys | None, journal: imageedit.Journal) -> None:
    """The UEFI path: the new slot's signed UKI replaces the slot's old one on the ESP, trying (boot counting):
    writing it is the switch, since systemd-boot boots the newest version with tries left."""
    manifest, info, active = found.manifest, built.info, found.active_slot or ""
    assert keys is not None
    journal.step("writing the inactive slot's signed kernel image (the switch)")
    settings = uefi.EspSettings(guids, _extra(manifest, active), keys.directory, keys.digest(),
                                manifest["source_date_epoch"], scratch)
    uefi.install_slot(found.mtools(), target, info, built.kernel, built.os_release, built.release, settings, keys)
    journal.step("updating the manifest")
    slots = {**manifest["slots"], target: info}
    new_manifest = {**manifest, "slots": slots, "active_slot": target, "version": info["version"],
                    "release": built.release, "packages": info["packages"]}
    imageedit.write_manifest(found, new_manifest, scratch)
    noupdate.clear(found)
    journal.done()


def rollback(image: Path) -> tuple[str, str, str]:
    """Make the other slot active again, once its root verifies against its boot entry: (from, to, the release
    marked rolled back or ""). Going back from a newer core marks it (noupdate) before the switch; going
    forward again removes the mark."""
    found = inspection.read(image)
    active = found.check_writable()
    apps.recover(found)
    other = next((s for s in sorted(found.manifest["slots"]) if s != active), None)
    if other is None:
        raise ImageError(f"{image}: no other slot to go back to")
    report = inspection.Report()
    with imageedit.scratch(image) as tmp:
        inspection.verify_slot(found, other, found.manifest["slots"][other], tmp, report)
        if not report.ok:
            failed = "; ".join(f"{what}: {detail}" for what, ok, detail in report.checks if not ok)
            raise ImageError(f"{image}: slot {other} does not verify, not switching to it ({failed})")
        boot = found.mtools()
        date = found.manifest["source_date_epoch"]
        info = found.manifest["slots"][other]
        marked = noupdate.rolled_back(found.manifest["slots"][active]["version"], info["version"], compare_versions)
        if marked:
            noupdate.mark(found, marked, tmp)
        else:
            noupdate.clear(found)
        if found.esp is not None:
            uefi.switch_to(boot, found.esp, other)
        else:
            imageedit.write_boot_file(boot, bootloader.SWITCH, bootloader.switch_config(other), tmp, date)
        manifest = {**found.manifest, "active_slot": other, "version": info["version"],
                    "release": info.get("release", found.manifest["release"]),
                    "packages": info.get("packages", found.manifest["packages"])}
        imageedit.write_manifest(found, manifest, tmp)
    return active, other, marked


# -- helpers -------------------------------------------------------------------------------------------


def _installed_files(manifest: dict[str, Any], slot_name: str, sets: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in inspection.slot_packages(manifest, slot_name):
        if entry["set"] in sets:
            out.setdefault(entry["set"], []).append(entry["file"])
    return out


def _carry_configuration(old_mounts: imageedit.Ext4, trees: dict[str, Path]) -> None:
    """The local configuration the new root's conffiles.list names (paths on /mounts), copied from the
    active slot's mounts partition, replacing what the packages installed."""
    if not beneath.exists(trees["root"], CONFFILES):
        return
    for line in beneath.read_text(trees["root"], CONFFILES).splitlines():
        path = line.strip()
        if not path or path.startswith("#"):
            continue
        if not path.startswith("/mounts/") or ".." in path.split("/"):
            raise ImageError(f"{CONFFILES}: '{path}' is not a path under /mounts")
        relative = path.removeprefix("/mounts")
        copied = old_mounts.copy(relative)
        if os.path.lexists(copied):
            target = PurePosixPath(relative.lstrip("/"))
            beneath.remove_tree(trees["mounts"], target)
            beneath.mkdir(trees["mounts"], target.parent)
            beneath.replace(copied.parent, copied.name, trees["mounts"], target)


def _timeout(found: inspection.Inspection, active: str, scratch: Path) -> int:
    text = inspection.read_boot_file(found.image, found.boot().start,
                                     f"{bootloader.DIRECTORY}/{bootloader.slot_config_name(active)}", scratch)
    found_timeout = re.search(r"^TIMEOUT ([0-9]{1,6})\s*$", text, re.MULTILINE)
    return int(found_timeout.group(1)) if found_timeout else 30


def _extra(manifest: dict[str, Any], active: str) -> tuple[str, ...]:
    """The profile's own kernel arguments, as the active slot's entry carries them."""
    words = manifest["slots"][active].get("cmdline", "").split('" ', 1)[-1].split()
    ours = ("dm-mod.waitfor=", "root=", "rootfstype=", "ro", "clip.slot=", *uefi.UEFI_ARGUMENTS)
    extra = tuple(w for w in words if not any(w == o or (o.endswith("=") and w.startswith(o)) for o in ours))
    if refused := [reason for word in extra if (reason := cmdline.refusal(word))]:
        raise ImageError(f"slot {active}'s kernel arguments in the manifest on the boot partition: {refused[0]}; "
                         "refused before any write", hint="the boot partition was edited: restore the image")
    return extra
