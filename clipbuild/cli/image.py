"""The image commands: image (build it), inspect (read it back, --verify), vm (boot it, --check)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from clipbuild.cli.context import Options, emit_json, json_option, release_choices, signing_options
from clipbuild.core.errors import ClipbuildError, InputError, VmCheckError
from clipbuild.core.executor import Executor
from clipbuild.core.sizes import format_size
from clipbuild.image import contents, firmware, inspection, jailproof, measurements, uefi, vm
from clipbuild.image.manifest import SYSTEMD_BOOT, boot_loader, check_shape, image_name
from clipbuild.image.publish import Published, publish
from clipbuild.signing import devpki, secureboot, trust
from clipbuild.signing.devpki import DEVELOPMENT, RELEASE
from clipbuild.spec.profile import resolve, species_path
from clipbuild.stages.image import STEP


@click.command("image")
@click.argument("species")
@signing_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write the image and its manifest [default: WORKDIR/images].")
@click.option("--qcow2", is_flag=True, help="Also write a qcow2 copy.")
@click.option("--zstd", is_flag=True, help="Also write a zstd-compressed copy (.img.zst).")
@click.option("--offline", is_flag=True, help="Do not fetch missing distfiles first; fail instead.")
@json_option
@click.pass_obj
def image_cmd(opts: Options, species: str, release: bool, batches: tuple[Path, ...], policy: Path | None,
              bootloader: str | None, secureboot_keys: Path | None, out_dir: Path | None, qcow2: bool, zstd: bool,
              offline: bool, as_json: bool) -> None:
    """Build the A/B disk image of SPECIES, running every stage that is out of date.

    \b
    Stages: build root, emerge of every package set, CLIP .debs, signatures, jails, then the image:
    every package's two signatures verified against the trust policy, installed with dpkg --root into
    slot A's root (core) and the mounts partition (apps), filesystems and dm-verity built without root,
    SYSLINUX with CLIP's A/B switch, a GPT disk. Slot B starts as a copy of slot A.

    \b
    Development (default): the local development PKI signs and countersigns every package and the image
    says so (os-release VARIANT_ID=dev, manifest "signing": "development").
    Release: --release --batch DIR... takes each package from a countersigned controller batch; it must be
    exactly the package this build made, and pass the release policy.

    \b
    Boot paths (profile boot.bootloader, or --bootloader for this run): syslinux (BIOS, CLIP's A/B switch)
    or systemd-boot (UEFI Secure Boot: per slot a unified kernel image holding the kernel and the slot's
    verity root hash, signed with the db key with systemd-boot; boot counting falls back to the other slot;
    the manifest records the PCR 4/7/11 values each slot's boot measures). docs/boot.md.

    \b
    Examples:
      clipbuild image client
      clipbuild image client --qcow2 --out dist/
      clipbuild image client --release --batch batches/clip-core --batch batches/clip-apps ...
      clipbuild image client --bootloader systemd-boot
      clipbuild vm client --check
    """
    done, _ = build_image(opts, species, release=release, batches=batches, policy=policy, offline=offline,
                          as_json=as_json, out_dir=out_dir or opts.workdir / "images", qcow2=qcow2, zstd=zstd,
                          bootloader=bootloader, secureboot_keys=secureboot_keys)
    manifest = json.loads(done.manifest.read_text())
    if as_json:
        emit_json({"image": str(done.image), "manifest": str(done.manifest), "copies": [str(c) for c in done.copies],
               "sha256": manifest["image"]["sha256"], "signing": manifest["signing"]})
        return
    click.echo(f"{done.image}  ({format_size(manifest['disk']['size'])}, {manifest['signing']} signing, "
               f"sha256 {manifest['image']['sha256'][:16]}...)")
    for copy in done.copies:
        click.echo(f"{copy}")
    click.echo(f"boot it: clipbuild vm {done.image}   check it: clipbuild inspect {done.image} --verify")


def build_image(opts: Options, species: str, *, release: bool, batches: tuple[Path, ...], policy: Path | None,
                offline: bool, as_json: bool, out_dir: Path, bootloader: str | None = None,
                secureboot_keys: Path | None = None, **copies: bool) -> tuple[Published, Executor]:
    """Run the plan up to the image and publish it to `out_dir`: (what was written, the executor)."""
    if batches and not release:
        raise click.UsageError("--batch goes with --release")
    if release and not batches:
        raise click.UsageError("--release needs the countersigned controller batches: --batch DIR (repeatable)")
    plan = opts.plan(species, **release_choices(release, policy, batches, bootloader, secureboot_keys))
    if not offline:
        opts.fetch(species)
    executor, _ = opts.execute(plan, as_json)
    return publish(executor.output(species, STEP), out_dir, **copies), executor


def image_path(opts: Options, name: str) -> Path:
    """IMAGE as a file, or a species name meaning its newest image in WORKDIR/images/ (development
    `<species>-<version>-dev.img` or release `<species>-<version>.img`)."""
    path = Path(name)
    if path.is_file():
        return path
    is_species = "/" not in name and _is_species(opts, name)
    if os.path.lexists(path) and not is_species:
        return path  # anything else there (folder, FIFO, dangling link) is refused by the reader, named
    if is_species:
        profile = resolve(opts.project, name)
        paths = [opts.workdir / "images" / image_name(profile.species, profile.version, mode)
                 for mode in (DEVELOPMENT, RELEASE)]
        found = [p for p in paths if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
        raise InputError(f"no image of {name} yet ({' or '.join(str(p) for p in paths)})")
    raise InputError(f"{name}: no such image file (or species)")


def _is_species(opts: Options, name: str) -> bool:
    try:
        return species_path(opts.project, name).is_file()
    except ClipbuildError:  # not even a species name
        return False


@click.command("inspect")
@click.argument("image")
@click.option("--verify", is_flag=True, help="Re-check the GPT, each slot's dm-verity root and kernel, and "
              "every package's signatures, from the image itself. Exit 1 on any failure.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Trust policy for --verify [default: the development PKI's, for a development image].")
@click.option("--secureboot-keys", "secureboot_keys", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="UEFI images, --verify: the Secure Boot key folder whose db certificate the UKIs and systemd-boot "
                   "must be signed with [default: the development set, for a development image].")
@json_option
@click.pass_obj
def inspect_cmd(opts: Options, image: str, verify: bool, policy: Path | None, secureboot_keys: Path | None,
                as_json: bool) -> None:
    """Show what IMAGE (a file, or a species' latest image) holds: partitions, slots, the active slot,
    packages, signers, development or release; and, read from the active slot's trees and each RM partition,
    every installed package's size and the results of the image's ELF and file-owner checks."""
    found = inspection.read(image_path(opts, image))
    data = found.to_dict()
    data["installed"] = contents.installed(found)
    report = None
    if verify:
        if found.esp is not None:
            found.secureboot_cert = uefi.keys_for(found.manifest, secureboot_keys, str(found.image)).cert("db")
        report = inspection.verify(found, trust.load_policy(image_policy(found.manifest, policy, "--verify of")))
        for tree in data["installed"]:
            report.add(f"{tree['tree']}: ELF hardening, libraries, file owners", tree["ok"],
                       tree.get("error") or "; ".join(f"{f['path']}: {f['rule']}" for f in tree["failures"]))
        data["verify"] = report.to_dict()
    if as_json:
        emit_json(data)
    else:
        click.echo(_format(data))
    if report is not None and not report.ok:
        sys.exit(1)


def image_policy(manifest: dict[str, Any], policy: Path | None, what: str) -> Path:
    """The trust policy for work on an image: --policy, else the development PKI's for a development image;
    `what` names the work in the error a release image without --policy gets."""
    if policy is not None:
        return policy
    if manifest["signing"] == DEVELOPMENT:
        return devpki.location() / "policy.yaml"
    raise InputError(f"{what} a release image needs the release trust policy: --policy FILE")


def _format(data: dict[str, Any]) -> str:
    lines = [f"{data['image']}: {data['release']} ({data['species']} {data['version']}), {data['signing']} image",
             f"active slot: {data['active_slot']}", _boot_line(data["boot"]), "partitions:"]
    for p in data["partitions"]:
        lines.append(f"  {p['number']:>2} {p['label']:<16} {format_size(p['size']):>10}  at "
                     f"{format_size(p['start']):>10}  {p['guid']}")
    lines.append("slots:")
    for slot, info in data["slots"].items():
        role = "active" if slot == data["active_slot"] else "previous-version entry"
        lines.append(f"  {slot}  {info['version']}  root hash {info['root_hash']}  ({role})")
        if "uki" in info:
            pcrs = " ".join(f"PCR{k} {v[:12]}..." for k, v in sorted(info["pcrs"].items(), key=lambda i: int(i[0])))
            lines.append(f"      {info['uki'] or 'no UKI on the ESP'}  {pcrs}")
    lines.append(f"packages ({len(data['packages'])}):")
    for p in data["packages"]:
        lines.append(f"  {p['set']:<10} {p['package']:<18} {p['version']:<10} {p['sha256'][:16]}...")
    lines.append("signers:")
    for s in data["signers"]:
        lines.append(f"  {s['role']:<10} {s['subject']}  {s['fingerprint'][:16]}...")
    lines += _installed_lines(data.get("installed", []))
    if "verify" in data:
        lines.append("verify:")
        for check in data["verify"]["checks"]:
            mark = "ok    " if check["ok"] else "FAILED"
            lines.append(f"  {mark} {check['check']}" + (f": {check['detail']}" if check["detail"] else ""))
        lines.append("verified: every check passed" if data["verify"]["ok"] else "verification FAILED")
    return "\n".join(lines)


def _boot_line(boot: dict[str, Any]) -> str:
    if boot["loader"] != SYSTEMD_BOOT:
        return "boot: BIOS, SYSLINUX with CLIP's A/B switch"
    db = boot.get("secure_boot", {}).get("db", {})
    return (f"boot: UEFI Secure Boot, systemd-boot, signed UKIs; db {db.get('subject', '?')} "
            f"({db.get('sha256', '?')[:16]}...)")


def _installed_lines(trees: list[dict[str, Any]]) -> list[str]:
    lines = ["installed trees (ELF hardening, libraries, file owners):"] if trees else []
    for tree in trees:
        if "error" in tree:
            lines.append(f"  {tree['tree']}: could not be read: {tree['error']}")
            continue
        size = sum(p["installed_size"] for p in tree["packages"])
        verdict = "all pass" if tree["ok"] else f"{len(tree['failures'])} FAILED"
        lines.append(f"  {tree['tree']}: {len(tree['packages'])} packages, {format_size(size)} installed, "
                     f"{tree['elf_files']} ELF files checked: {verdict}")
        lines += [f"    {f['path']} ({', '.join(f['packages']) or 'no package'}): {f['rule']}: {f['message']}"
                  for f in tree["failures"]]
    return lines


@click.command("vm")
@click.argument("image")
@click.option("--check", is_flag=True, help="Boot headless, wait for the boot marker, exit 0 (up) or 1.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --check waits for the marker.")
@click.option("--log", "log_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Console log of --check [default: WORKDIR/vm/<image>.console.log].")
@click.option("--memory", default=512, show_default=True, help="Guest memory in MiB.")
@click.option("--reboots", default=0, show_default=True, type=click.IntRange(0, 10),
              help="With --check: let up to this many boots end in a kernel panic, the machine rebooting as a "
                   "device does (UEFI boot counting then falls back to the other slot).")
@click.option("--secureboot-keys", "secureboot_keys", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="UEFI images: the Secure Boot key folder whose certificates OVMF enrolls [default: the development "
                   "set, for a development image]. Only the certificates are read.")
@click.option("--measurements", "measured", type=click.Path(path_type=Path, dir_okay=False),
              help="With --check, UEFI images: compare the PCRs with this countersigned measurements document (it "
                   "must verify and name this image) instead of the manifest's predictions.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Trust policy for --measurements [default: the development PKI's, for a development image].")
@json_option
@click.pass_obj
def vm_cmd(opts: Options, image: str, check: bool, timeout: float, log_path: Path | None, memory: int,
           reboots: int, secureboot_keys: Path | None, measured: Path | None, policy: Path | None,
           as_json: bool) -> None:
    """Boot IMAGE (a file, or a species' latest image) in QEMU (TCG) on the serial console.

    The disk is opened read-only (snapshot): the image file never changes. Quit with Ctrl-A X.
    With --check: boot headless until the system prints CLIP_BOOT_OK (root read-only on an intact
    dm-verity target, jails configured, slot known, the packages' self-tests passed); CLIP_BOOT_FAILED, a
    kernel panic (a corrupted root block), the timeout, or a self-test the booted slot ships (the image
    manifest's list) that did not report ok, fail. The console is saved either way.

    \b
    An image of the UEFI path (systemd-boot) boots on OVMF with Secure Boot enforcing, the species' keys
    enrolled (a fresh copy of the variables per boot) and an emulated TPM (swtpm); --check also fails when
    the firmware refuses an image ("Access Denied"), when the system does not report Secure Boot on, or when
    a PCR (4, 7, 11) differs from the manifest's prediction for the booted slot, or with --measurements
    from the value the controller countersigned (clipbuild measurements sign) for this image.
    """
    path = image_path(opts, image)
    manifest = image_manifest(path)
    if measured is not None and not check:
        raise click.UsageError("--measurements goes with --check")
    pcrs, source = expected_pcrs(path, manifest, measured, policy)
    with uefi_machine(opts, path, manifest, secureboot_keys) as machine:
        if not check:
            sys.exit(vm.boot(path, memory, machine))
        log_path = log_path or opts.workdir / "vm" / f"{path.name}.console.log"
        slots = dict(manifest["slots"])
        result = vm.check(path, log_path, timeout=timeout, memory_mib=memory,
                          expected={name: info.get("selftests") for name, info in slots.items()},
                          jails={name: [jailproof.Expected.from_dict(j) for j in info["jails"]] if "jails" in info
                                 else None for name, info in slots.items()},
                          uefi=machine, pcrs=pcrs, reboots=reboots, pcrs_source=source)
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        click.echo(f"boot ok in {result.seconds:.1f} s: {result.marker}")
        for failed in result.failed_boots:
            click.echo(f"  an earlier boot failed, the machine rebooted: {failed}")
        if result.uefi is not None and result.uefi.firmware == "uefi":
            click.echo(f"  UEFI: Secure Boot {'on' if result.uefi.secureboot else 'OFF'}, lockdown "
                       f"{result.uefi.lockdown}, entry {result.uefi.entry}, PCR 4/7/11 as {source} predicts")
        if result.blessing is not None and result.blessing.outcome != "none":
            click.echo(f"  boot counting: {result.blessing.old} blessed as {result.blessing.new}"
                       if result.blessing.ok else f"  boot counting: blessing FAILED: {result.blessing.reason}")
        for test in result.selftests:
            click.echo(f"  self-test {test.name}: {'ok' if test.ok else 'FAILED'} in {test.seconds} s: {test.output}")
        for jail in result.jails:
            click.echo(f"  jail {jail.name}: {jail_line(jail)}")
        click.echo(f"console log: {result.log}")
    if not result.ok:
        raise VmCheckError(f"boot check of {path.name} failed after {result.seconds:.1f} s: {result.reason}; "
                           f"console log: {result.log}")


def expected_pcrs(path: Path, manifest: dict[str, Any], measured: Path | None,
                  policy: Path | None) -> tuple[dict[str, dict[str, str]], str]:
    """The PCR values each slot of the image must read, and whose word they are: the manifest's predictions,
    or those of a countersigned measurements document (`measured`) that verifies and names this image."""
    if measured is None:
        return {name: info["pcrs"] for name, info in manifest["slots"].items() if "pcrs" in info}, "the manifest"
    loaded = trust.load_policy(image_policy(manifest, policy, "--measurements of"))
    return measurements.for_image(measured, path, loaded, trust.now()).pcrs(), f"the countersigned {measured.name}"


def jail_line(jail: jailproof.Report) -> str:
    if jail.state == "idle":
        return f"not started: {jail.detail.lstrip(': ')}"
    if jail.state != "ok":
        return f"FAILED: {jail.detail}"
    rules = [r["rule"] for r in jail.rules if r["result"] == "ok"]
    return f"running, proven from inside ({len(rules)} rules: {', '.join(rules)})"


@contextlib.contextmanager
def uefi_machine(opts: Options, path: Path, manifest: dict[str, Any],
                 keys_dir: Path | None) -> Iterator[firmware.Machine | None]:
    """The UEFI machine an image of the UEFI path boots on (None for the BIOS path): OVMF with its Secure Boot
    certificates enrolled (`image_keys`)."""
    keys = image_keys(path, manifest, keys_dir)
    if keys is None:
        yield None
        return
    with firmware.machine(keys, opts.workdir / "vm" / f"{path.name}.uefi") as machine:
        yield machine


def image_keys(path: Path, manifest: dict[str, Any], keys_dir: Path | None) -> secureboot.SecureBootKeys | None:
    """The Secure Boot certificates an image of the UEFI path was signed for (None for the BIOS path): those of
    --secureboot-keys, else the development set for a development image; checked against the image's db."""
    if boot_loader(manifest) != SYSTEMD_BOOT:
        return None
    return uefi.keys_for(manifest, keys_dir, path.name)


def image_manifest(path: Path) -> dict[str, Any]:
    """The image's manifest: what each slot ships (self-tests, jails, PCR predictions) and its boot path; from
    the image itself (a raw image, as updates leave it), or from the manifest published beside a qcow2 copy
    (the same image, converted). A slot whose manifest predates self-tests or jails lacks those keys."""
    if path.suffix == ".qcow2":
        sidecar = path.with_name(f"{path.stem}.manifest.json")
        if not sidecar.is_file():
            raise InputError(f"{sidecar}: missing: the boot check needs the image's manifest to know which "
                             "self-tests must pass", hint="check the raw image, or publish with clipbuild image")
        return check_shape(json.loads(sidecar.read_text()), str(sidecar))
    return inspection.read(path).manifest


COMMANDS = (image_cmd, inspect_cmd, vm_cmd)
