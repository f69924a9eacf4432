"""The release and update commands: a release's image and update repositories; an update applied to an
image file offline, and rolled back."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option, signing_options
from clipbuild.cli.image import build_image, image_path, image_policy
from clipbuild.image import inspection
from clipbuild.image.slot import CLIP_SETS, RM_SETS
from clipbuild.signing import trust
from clipbuild.spec.profile import resolve
from clipbuild.update import apply, repository


@click.command("release")
@click.argument("species")
@signing_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write the release [default: WORKDIR/release/SPECIES-VERSION].")
@click.option("--offline", is_flag=True, help="Do not fetch missing distfiles first; fail instead.")
@json_option
@click.pass_obj
def release_cmd(opts: Options, species: str, release: bool, batches: tuple[Path, ...], policy: Path | None,
                out_dir: Path | None, offline: bool, as_json: bool) -> None:
    """Make the release of SPECIES at its profile's version: the image, and the signed update repositories
    in CLIP's layout (one per conf package: pool/ and dists/<dist>/main/binary-amd64/Packages.gz).

    \b
    Apply the repositories to an image of an earlier version with:
      clipbuild update apply IMAGE OUT/repo
    """
    profile = resolve(opts.project, species)
    out_dir = out_dir or opts.workdir / "release" / f"{species}-{profile.version}"
    done, executor = build_image(opts, species, release=release, batches=batches, policy=policy,
                                 offline=offline, as_json=as_json, out_dir=out_dir)
    debs = sorted(p for name in (*CLIP_SETS, *RM_SETS) if (executor.workdir / "steps" / species / f"sign/{name}")
                  .exists() for p in (executor.output(species, f"sign/{name}") / "debs").glob("*.deb"))
    policy_path = image_policy(json.loads(done.manifest.read_text()), policy, "publishing")
    written = repository.publish(debs, trust.load_policy(policy_path), out_dir / "repo")
    if as_json:
        emit_json({"image": str(done.image), "manifest": str(done.manifest),
                   "repositories": [str(p) for p in written]}, sort_keys=False)
        return
    click.echo(f"{done.image}")
    for path in written:
        click.echo(f"{path}")


@click.group("update")
def update_group() -> None:
    """Apply an update repository to an image file offline, or go back to the previous slot."""


@update_group.command("apply")
@click.argument("image")
@click.argument("repo", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Trust policy [default: the development PKI's, for a development image].")
@click.option("--max-age", default=90, show_default=True,
              help="Refuse a conf package released more than this many days ago (0: no limit).")
@click.option("--allow-high-impact", is_flag=True, help="Accept packages with Impact 2 or more.")
@json_option
@click.pass_obj
def apply_cmd(opts: Options, image: str, repo: Path, policy: Path | None, max_age: int, allow_high_impact: bool,
              as_json: bool) -> None:
    """Apply the update repositories under REPO to IMAGE (a file, or a species' latest image), in place.

    Every package is checked first: both signatures, Priority and Distribution of its part, Impact, the
    conf package's Release-Date age, no downgrade. Then:

    \b
      core newer: into the inactive slot (new root, dm-verity tree, mounts partition with the local
        configuration carried over, kernel, boot entry), the A/B switch flipped last: an update stopped
        at any point leaves the old slot booting;
      apps newer (core the same): in place on the running slot with CLIP's journal lists, rolled back
        when dpkg fails, the partition backed up beside the image while it is written.

    Back to the previous slot: clipbuild update rollback IMAGE
    """
    path = image_path(opts, image)
    found_policy = image_policy(inspection.read(path).manifest, policy, "updating")
    rules = apply.Rules(maximum_age_days=max_age, install_high_impact=allow_high_impact)
    outcome = apply.apply(path, repo, trust.load_policy(found_policy), rules,
                           progress=lambda message: click.echo(f"update: {message}", err=True))
    if as_json:
        emit_json(outcome.to_dict(), sort_keys=False)
        return
    for note in outcome.notes:
        click.echo(f"note: {note}")
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
    old, new = apply.rollback(path)
    click.echo(f"{path.name}: slot {new} is active again (was {old})")


COMMANDS = (release_cmd, update_group)
