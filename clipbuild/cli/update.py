"""The release and update commands: a release's image and update repositories; an update applied to an
image file offline, and rolled back."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option, signing_options
from clipbuild.cli.image import build_image, image_path, image_policy
from clipbuild.core.errors import InputError
from clipbuild.image import inspection, measurements, uefi
from clipbuild.image.manifest import SYSTEMD_BOOT, boot_loader
from clipbuild.image.publish import Published
from clipbuild.image.slot import CLIP_SETS, RM_SETS
from clipbuild.signing import devpki, trust
from clipbuild.signing.devpki import DEVELOPMENT
from clipbuild.spec.profile import resolve
from clipbuild.update import apply, releasemeta, repository
from clipbuild.update.rules import Overrides, refuse_on_release


@click.command("release")
@click.argument("species")
@signing_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write the release [default: WORKDIR/release/SPECIES-VERSION].")
@click.option("--offline", is_flag=True, help="Do not fetch missing distfiles first; fail instead.")
@json_option
@click.pass_obj
def release_cmd(opts: Options, species: str, release: bool, batches: tuple[Path, ...], policy: Path | None,
                bootloader: str | None, secureboot_keys: Path | None, out_dir: Path | None, offline: bool,
                as_json: bool) -> None:
    """Make the release of SPECIES at its profile's version: the image, and the signed update repositories
    in CLIP's layout (one per conf package: pool/ and dists/<dist>/main/binary-amd64/Packages.gz).

    \b
    Apply the repositories to an image of an earlier version with:
      clipbuild update apply IMAGE OUT/repo
    """
    profile = resolve(opts.project, species)
    out_dir = out_dir or opts.workdir / "release" / f"{species}-{profile.version}"
    done, executor = build_image(opts, species, release=release, batches=batches, policy=policy,
                                 offline=offline, as_json=as_json, out_dir=out_dir, bootloader=bootloader,
                                 secureboot_keys=secureboot_keys)
    debs = sorted(p for name in (*CLIP_SETS, *RM_SETS) if (executor.workdir / "steps" / species / f"sign/{name}")
                  .exists() for p in (executor.output(species, f"sign/{name}") / "debs").glob("*.deb"))
    policy_path = image_policy(json.loads(done.manifest.read_text()), policy, "publishing")
    loaded = trust.load_policy(policy_path)
    written = repository.publish(debs, loaded, out_dir / "repo")
    metadata = releasemeta.write_draft(out_dir / "repo", species)
    if not release:  # a development release: the development PKI's controller signs its metadata at once
        releasemeta.sign_repository(out_dir / "repo", devpki.ensure().controller, loaded)
    measured = release_measurements(done, out_dir, release, secureboot_keys)
    if as_json:
        emit_json({"image": str(done.image), "manifest": str(done.manifest),
                   "repositories": [str(p) for p in written], "metadata": str(metadata),
                   "metadata_signed": not release, "measurements": str(measured) if measured else None,
                   "measurements_signed": bool(measured) and not release}, sort_keys=False)
        return
    click.echo(f"{done.image}")
    for path in written:
        click.echo(f"{path}")
    click.echo(f"{metadata}" + ("" if not release else " (unsigned: the controller signs it with clipbuild repo "
                                                       f"sign-metadata {out_dir / 'repo'} --key ... --cert ...)"))
    if measured:
        click.echo(f"{measured}" + ("" if not release else " (unsigned: the controller signs it with clipbuild "
                                    f"measurements sign {done.manifest} --out {measured} --key ... --cert ... "
                                    "--secureboot-keys ...)"))


def release_measurements(done: Published, out_dir: Path, release: bool, keys_dir: Path | None) -> Path | None:
    """OUT/measurements.json for a release on the UEFI path (None on the BIOS path): the draft the controller
    signs, signed at once by the development PKI's controller for a development release (its image checked
    with the Secure Boot certificates of `keys_dir`, else the development set)."""
    manifest = json.loads(done.manifest.read_text())
    if boot_loader(manifest) != SYSTEMD_BOOT:
        return None
    statement = measurements.of_manifest(manifest, str(done.manifest))
    target = measurements.write_draft(statement, out_dir / measurements.FILE)
    if not release:
        keys = uefi.keys_for(manifest, keys_dir, str(done.image))
        measurements.countersign(statement, done.image, keys, devpki.ensure().controller, target)
    return target


@click.group("update")
def update_group() -> None:
    """Apply an update repository to an image file offline, or go back to the previous slot."""


@update_group.command("apply")
@click.argument("image")
@click.argument("repo", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Development images only: trust this policy instead of the store the image's root carries.")
@click.option("--max-age", type=click.IntRange(min=0, max=99999), default=None,
              help="Development images only: refuse a conf package released more than this many days ago (0: no "
                   "limit) [default: the image's maximum_age, /etc/admin/clip_download/clip_download_clip.conf].")
@click.option("--allow-high-impact", is_flag=True, default=None,
              help="Development images only: accept packages with Impact 2 or more [default: the image's "
                   "option_install_high_impact_packages, /etc/admin/clip_install/clip_install_clip_*.conf].")
@click.option("--at", "at", type=click.DateTime(),
              help="Development images only: check as of this time (UTC) instead of now (expiry, ages, certificates).")
@click.option("--secureboot-keys", "secureboot_keys", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="UEFI path: the Secure Boot key folder whose db key signs the new slot's kernel image [default: the "
                   "development set, for a development image].")
@json_option
@click.pass_obj
def apply_cmd(opts: Options, image: str, repo: Path, policy: Path | None, max_age: int | None,
              allow_high_impact: bool | None, at: dt.datetime | None, secureboot_keys: Path | None,
              as_json: bool) -> None:
    """Apply the update repositories under REPO to IMAGE (a file, or a species' latest image), in place.

    REPO's signed release metadata (REPO/release.json) is checked before anything else: signed by a
    controller the image trusts, not expired, not older than what the image has accepted, of its species;
    then every file against it (size, digest). Every package is checked next: both signatures, Priority
    and Distribution of its part, Impact, the conf package's Release-Date age, no downgrade, no dependency
    outside the release; the age and impact rules are the ones the image's root carries
    (/etc/admin/clip_download, /etc/admin/clip_install), which --max-age and --allow-high-impact override
    on a development image only. A repository whose core is a release `update rollback` left is not
    applied again: nothing is done until a newer release. Then:

    \b
      core newer: into the inactive slot (new root, dm-verity tree, mounts partition with the local
        configuration carried over, kernel, boot entry), the A/B switch flipped last: an update stopped
        at any point leaves the old slot booting; on the UEFI path the new slot's signed kernel image,
        with three boot tries (docs/boot.md);
      apps newer (core the same): in place on the running slot with CLIP's journal lists, rolled back
        when dpkg fails, the partition backed up beside the image while it is written.

    Back to the previous slot: clipbuild update rollback IMAGE
    """
    path = image_path(opts, image)
    manifest = inspection.read(path).manifest
    overrides = Overrides(max_age, allow_high_impact)
    development = manifest["signing"] == DEVELOPMENT
    refuse_on_release(overrides, development)  # apply() checks the root's say too
    if at is not None and not development:
        raise InputError(f"{path}: --at is for development images: a release image checks dates against the clock")
    outcome = apply.apply(path, repo, trust.load_policy(policy) if policy else None, overrides,
                          progress=lambda message: click.echo(f"update: {message}", err=True),
                          now=at.replace(tzinfo=dt.UTC) if at else None, secureboot_keys=secureboot_keys)
    if as_json:
        emit_json(outcome.to_dict(), sort_keys=False)
        return
    for note in outcome.notes:
        click.echo(f"note: {note}")
    if outcome.rules:
        click.echo(f"rules: {outcome.rules.summary()}")
    if outcome.updated == "nothing":
        click.echo(f"{path.name}: nothing to update (slot {outcome.slot}, {outcome.version})")
    elif outcome.updated == "apps":
        click.echo(f"{path.name}: apps updated in place on slot {outcome.slot}")
    else:
        click.echo(f"{path.name}: core {outcome.previous_version} -> {outcome.version} in slot {outcome.slot}, "
                   f"which boots next; slot {outcome.previous_slot} stays as the previous version")


@update_group.command("rollback")
@click.argument("image")
@click.pass_obj
def rollback_cmd(opts: Options, image: str) -> None:
    """Boot the other slot again (after checking its root against its boot entry)."""
    path = image_path(opts, image)
    old, new, marked = apply.rollback(path)
    click.echo(f"{path.name}: slot {new} is active again (was {old})")
    if marked:
        click.echo(f"{path.name}: release {marked} is marked rolled back: update apply will not apply it again, "
                   "only a newer release")


COMMANDS = (release_cmd, update_group)
