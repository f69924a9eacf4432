"""The image stage: an A/B GPT disk image assembled from the signed pools, rootless and reproducible.

Step `image` reads every `sign/<dist>-<part>` pool and:

1. verifies both signatures of every package against the trust policy (the development PKI's, or the
   release policy); one failure stops the build, naming the package and the rule;
2. installs clip/core and clip/apps with `dpkg --root` into one tree, then splits it the way CLIP OS 4 laid it
   out (clipbuild.image.install): the read-only root, the mounts partition (/mounts, /usr/local, /var), /var/log;
   the rm distribution goes into each RM partition (/vservers/rm_h, /vservers/rm_b), with its own database;
3. writes /etc/fstab from the profile's partitions and marks a development image in /etc/os-release;
4. builds every filesystem as a file (clipbuild.image.fsimage) and the root's dm-verity hash tree, fills the boot
   partition (kernels, the A/B syslinux configuration, the manifest) and copies all of it into a GPT disk.

Slot B at first install is a copy of slot A (same packages; its own salt, so its own root hash): the
"version precedente" entry then boots a complete system, and an update (P7) overwrites B first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import InputError, StepError
from clipbuild.core.paths import cache_dir
from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.image import bootloader, fsimage, gpt, install, jailproof, selftests, slot, uefi
from clipbuild.image.manifest import EMBEDDED_MANIFEST, MANIFEST, describe, image_name
from clipbuild.signing import secureboot, trust, truststore
from clipbuild.signing.devpki import DEVELOPMENT, RELEASE
from clipbuild.spec.model import Profile
from clipbuild.stages.keys import trust_policy

STEP = "image"


@dataclass(frozen=True)
class ImageOptions:
    species: str
    version: str
    date: int
    mode: str
    policy: str  # trust policy file (absolute)
    policy_digest: str  # over the policy and every CA and CRL file it names
    disk_size: int
    slices: tuple[dict[str, Any], ...]
    cmdline: tuple[str, ...]
    timeout: int
    sets: tuple[str, ...]
    description: str = ""
    rm_partitions: tuple[str, ...] = field(default=())
    bootloader: str = "syslinux"
    secureboot: str = ""  # systemd-boot: the Secure Boot key folder (development set, or the release one)
    secureboot_digest: str = ""  # over its certificates and owner: the key's share of the step's key

    @property
    def file_name(self) -> str:
        return image_name(self.species, self.version, self.mode)


class AssembleImage(StepKind):
    name = "assemble-image"
    version = 7  # 7: the UEFI path (systemd-boot, signed UKIs, boot counting, PCR predictions)
    Options = ImageOptions
    outputs = (MANIFEST,)
    tools = ("dpkg", "dpkg-deb", "mksquashfs", "veritysetup", "mkfs.ext4", "debugfs", "mkfs.vfat", "mcopy",
             "mmd", "syslinux", "sgdisk", "objcopy", "sbsign", "faketime")

    def parse_options(self, options: dict) -> ImageOptions:
        data = dict(options)
        for key in ("slices", "cmdline", "sets", "rm_partitions"):
            data[key] = tuple(data[key])
        return ImageOptions(**data)

    def run(self, ctx: StepContext) -> None:
        Assembly(ctx, ctx.options).run()


class Assembly:
    """One run of the image step; each method is one stage of the assembly, in order."""

    def __init__(self, ctx: StepContext, opts: ImageOptions):
        self.ctx, self.opts = ctx, opts
        self.slices = [gpt.Slice.from_dict(s) for s in opts.slices]
        self.scratch = ctx.scratch
        self.work = ctx.scratch / "fs"
        self.work.mkdir()

    def run(self) -> None:
        pool = self.verified_pool()
        trees = self.install(pool)
        release = slot.release(trees["root"])
        for tree in trees.values():
            install.normalise_tree(tree, self.opts.date)
        files, slots = self.filesystems(trees)
        manifest = self.manifest(pool, slots, release)
        files["boot"] = self.boot_partition(trees["root"], slots, manifest, release)
        image = self.ctx.out / self.opts.file_name
        self.disk(image, files)
        self.ctx.progress(f"hashing {image.name}")
        digest = sha256_file(image)
        self.ctx.digests[image.name] = digest
        manifest["image"] = {"file": image.name, "size": image.stat().st_size, "sha256": digest}
        (self.ctx.out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    # -- packages --------------------------------------------------------------------------------------

    def verified_pool(self) -> dict[str, list[tuple[Path, trust.Verdict]]]:
        policy = trust.load_policy(Path(self.opts.policy))
        pool: dict[str, list[tuple[Path, trust.Verdict]]] = {}
        failures = []
        for set_name in self.opts.sets:
            debs = sorted((self.ctx.inputs[f"sign/{set_name}"] / "debs").glob("*.deb"))
            for deb in debs:
                verdict = trust.verify_file(deb, policy)
                if not verdict.ok:
                    failures.append(f"  {set_name}/{deb.name}: " + "; ".join(verdict.reasons))
                pool.setdefault(set_name, []).append((deb, verdict))
        if failures:
            raise StepError(self.ctx.step.id, f"{len(failures)} package(s) fail the trust policy "
                            f"{self.opts.policy}; nothing was installed", detail=failures)
        self.ctx.progress(f"{sum(len(v) for v in pool.values())} packages verified (developer and controller)")
        return pool

    def install(self, pool: dict[str, list[tuple[Path, trust.Verdict]]]) -> dict[str, Path]:
        debs = {name: [deb for deb, _ in entries] for name, entries in pool.items()}
        allow = trust.load_policy(Path(self.opts.policy)).special()
        trees = slot.core_trees([d for s in slot.CLIP_SETS for d in debs.get(s, [])], self.scratch, self.ctx.progress,
                                allow)
        check_trust_store(self.ctx.step.id, trees["root"], Path(self.opts.policy), self.opts.species)
        self.ctx.progress(f"trust store {truststore.KEYS_DIR}: the plan's policy")
        rm = [d for s in slot.RM_SETS for d in debs.get(s, [])]
        for name in self.opts.rm_partitions:
            trees[name] = self.scratch / name
            trees[name].mkdir()
            self.ctx.progress(f"dpkg --root: {len(rm)} rm packages into {name}")
            install.install(rm, trees[name], self.scratch / f"dpkg-{name}.log", allow)
            slot.checked(trees[name], f"rm ({name})", self.ctx.progress)
        for part in self.slices:  # shared partitions mounted over the root: /home, /vservers/rm_h, ...
            if not part.slot and part.fs == "ext4" and part.mount and self._tree_for(part, trees) is None:
                name = part.name
                trees[name] = self.scratch / name
                trees[name].mkdir()
        moved = install.split_shared(trees["root"], {p.mount: trees[p.name] for p in self.slices
                                                     if not p.slot and p.name in trees and p.mount})
        for mount in moved:
            self.ctx.progress(f"{mount}: what the packages install there goes onto its partition")
        slot.add_mirror(trees["mounts"], debs)
        slot.configure_root(trees["root"], self.slices, mode=self.opts.mode, species=self.opts.species,
                            version=self.opts.version)
        return trees

    # -- filesystems -----------------------------------------------------------------------------------

    def _slice(self, label: str) -> gpt.Slice:
        return next(s for s in self.slices if s.label == label)

    def filesystems(self, trees: dict[str, Path]) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
        """Every filesystem as a file (by partition label), and each slot's root facts."""
        files: dict[str, Path] = {}
        slots: dict[str, dict[str, Any]] = {}
        for part in self.slices:
            if part.role != "data" or part.fs in ("vfat", "swap"):
                continue
            self.ctx.progress(f"filesystem {part.label} ({part.fs})")
            if part.mount == "/":
                files[part.label] = self._root_fs(part, trees["root"], files)
                slots[part.slot] = self._verity(part, files)
            else:
                files[part.label] = self.work / f"{part.label}.img"
                slot.ext4_filesystem(part, self._tree_for(part, trees), files[part.label], self.opts.date,
                                     self.opts.species)
        kernel = sha256_file(trees["root"] / "boot" / "vmlinuz-clip")
        for info in slots.values():
            info["kernel_sha256"] = kernel
            info["selftests"] = selftests.shipped(trees["root"])
            info["jails"] = [jail.to_dict() for jail in jailproof.shipped(trees["root"])]
        return files, slots

    def _root_fs(self, part: gpt.Slice, tree: Path, files: dict[str, Path]) -> Path:
        """The read-only root; slot B starts as a copy of slot A, so the same filesystem file serves both."""
        built = next((files[p.label] for p in self.slices if p.name == part.name and p.label in files), None)
        if built is not None:
            return built
        out = self.work / f"{part.name}.img"
        slot.root_filesystem(part, tree, out, self.opts.date, self.opts.species)
        return out

    def _verity(self, part: gpt.Slice, files: dict[str, Path]) -> dict[str, Any]:
        label = f"{part.label}_verity"
        files[label] = self.work / f"{label}.img"
        return slot.verity(part, files[part.label], files[label], self.opts.species, self.opts.version)

    def _tree_for(self, part: gpt.Slice, trees: dict[str, Path]) -> Path | None:
        if part.name in trees:
            return trees[part.name]
        return {"/mounts": trees["mounts"], "/var/log": trees["log"]}.get(part.mount or "")

    def boot_partition(self, root: Path, slots: dict[str, dict[str, Any]], manifest: dict[str, Any],
                       release: str) -> Path:
        """The boot partition (the ESP on the UEFI path): its loader's files and the manifest."""
        part = next(s for s in self.slices if s.mount == "/boot")
        uefi_path = self.opts.bootloader == "systemd-boot"
        if uefi_path:
            files = uefi.esp_files(self.ctx.progress, self.esp_settings(), root, slots, manifest, release, self.scratch)
        else:
            files = self.syslinux_files(root, slots, manifest, release)
        embedded = self.scratch / "manifest.json"
        embedded.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        files[EMBEDDED_MANIFEST] = embedded
        out = self.work / f"{part.label}.img"
        volume_id = gpt.stable_guid(self.opts.species, "fs", part.label).replace("-", "")[:8]
        fsimage.vfat(out, part.size, volume_id, "CLIPBOOT", files, self.opts.date)
        if not uefi_path:
            bootloader.install(out, self.opts.date)
        return out

    def syslinux_files(self, root: Path, slots: dict[str, dict[str, Any]], manifest: dict[str, Any],
                       release: str) -> dict[str, Path]:
        names = sorted(slots)
        guids = {s.label: s.guid for s in self.slices}
        configs = bootloader.configs(f"{release} ({self.opts.species})", self.opts.timeout, slots, guids,
                                     self.opts.cmdline)
        for name in names:
            manifest["slots"][name]["cmdline"] = bootloader.slot_boot(name, slots[name], guids).cmdline(
                self.opts.cmdline)
        manifest["boot"] = {"loader": "syslinux"}
        kernels = {name: slot.kernel(root) for name in names}
        return bootloader.files(configs, kernels, names[0], self.scratch)

    def esp_settings(self) -> uefi.EspSettings:
        return uefi.EspSettings({s.label: s.guid for s in self.slices}, self.opts.cmdline,
                                Path(self.opts.secureboot), self.opts.secureboot_digest, self.opts.date, self.work)

    # -- the disk --------------------------------------------------------------------------------------

    def disk(self, image: Path, files: dict[str, Path]) -> None:
        boot = next(s for s in self.slices if s.mount == "/boot")
        self.ctx.progress(f"GPT disk {image.name}, {self.opts.disk_size / 2**30:.1f} GiB sparse")
        gpt.write_table(image, self.opts.disk_size, self.slices, self.opts.species, boot.label)
        gpt.write_mbr_code(image, bootloader.mbr_code())
        for part in self.slices:
            if part.label in files:
                gpt.copy_into(image, part, files[part.label])

    def manifest(self, pool: dict[str, list[tuple[Path, trust.Verdict]]], slots: dict[str, dict[str, Any]],
                 release: str) -> dict[str, Any]:
        opts = self.opts
        return describe(pool, slots, self.slices, release, species=opts.species, version=opts.version,
                        description=opts.description, signing=opts.mode, date=opts.date, disk_size=opts.disk_size)


def check_trust_store(step_id: str, root: Path, policy: Path, species: str) -> None:
    """The trust store clip-update-keys installed in `root` is `policy`, the one this image is verified with
    (same CAs, CRLs, rules, special files): the device's core updates will be verified with it."""
    rebuild = f"rebuild with clipbuild build {species} --release --policy FILE"
    try:
        found = truststore.load(root)
    except InputError as exc:
        raise StepError(step_id, f"the trust store clip-update-keys installs cannot be read: {exc}",
                        hint=rebuild) from None
    differences = truststore.differences(found, trust.load_policy(policy))
    if differences:
        raise StepError(step_id, "the trust store clip-update-keys installs is not the policy this image is "
                        f"verified with: {rebuild}",
                        detail=[f"  image policy: {policy}", *(f"  {line}" for line in differences)],
                        hint=f"for a development image: clipbuild build {species} (the development PKI's store)")


def policy_digest(policy_path: Path) -> str:
    """A digest of the policy file and of every CA and CRL file it names."""
    import yaml

    trust.load_policy(policy_path)  # a malformed policy is refused here, with its file and key
    digest = hashlib.sha256(policy_path.read_bytes())
    data = yaml.safe_load(policy_path.read_text())
    for role in ("developer", "controller"):
        for key in ("ca", "crl"):
            names = data[role].get(key) or []
            for name in [names] if isinstance(names, str) else names:
                path = policy_path.parent / name
                digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def plan_image(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    disk_size, slices = gpt.plan(profile.disk, profile.species)
    sets = tuple(f"{dist}-{part}" for dist, part, _ in profile.packages.sets())
    rm_partitions = tuple(s.name for s in slices if (s.mount or "").startswith("/vservers/"))
    policy = trust_policy(profile, project, settings)
    bootloader = settings.bootloader or profile.boot.bootloader
    keys = secureboot_keys(project, settings) if bootloader == "systemd-boot" else None
    options = ImageOptions(
        species=profile.species, version=profile.version, date=settings.source_date_epoch,
        mode=RELEASE if settings.release else DEVELOPMENT, policy=str(policy),
        policy_digest=policy_digest(policy) if policy.is_file() else "", disk_size=disk_size,
        slices=tuple(s.to_dict() for s in slices), cmdline=tuple(profile.boot.cmdline),
        timeout=profile.boot.timeout, sets=sets, description=profile.description, rm_partitions=rm_partitions,
        bootloader=bootloader, secureboot=str(keys.directory) if keys else "",
        secureboot_digest=keys.digest() if keys else "")
    return [AssembleImage.step(STEP, options, inputs=tuple(f"sign/{s}" for s in sets),
                               description=f"assemble {options.file_name}")]


def secureboot_keys(project: Project, settings: PlanSettings) -> secureboot.SecureBootKeys:
    """The Secure Boot keys of a UEFI image: the development set, or for a release the folder given with
    --secureboot-keys, which must lie outside the project and clipbuild's cache."""
    if not settings.release:
        if settings.secureboot:
            raise InputError("--secureboot-keys goes with --release (development images are signed with the "
                             "development Secure Boot keys)")
        return secureboot.development()
    if not settings.secureboot:
        raise InputError("a release image on the UEFI path needs its Secure Boot keys: --secureboot-keys DIR",
                         hint="the folder holds PK.crt, KEK.crt, db.crt, owner.guid and db.key "
                              "(clipbuild pki secureboot init DIR); keep it outside every build tree")
    keys = secureboot.load(Path(settings.secureboot))
    secureboot.check_outside(keys, project.root, cache_dir())
    return keys
