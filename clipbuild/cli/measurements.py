"""The `measurements` commands: the controller countersigns the measured-boot predictions of a UEFI-path
image (sign), and anyone checks them (verify)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from clipbuild.cli.context import Options, emit_json, json_option
from clipbuild.cli.image import image_keys, image_path
from clipbuild.cli.signing import passphrase_option, policy_option
from clipbuild.core import safefile
from clipbuild.core.errors import EXIT_FAILED, InputError
from clipbuild.image import inspection, measurements
from clipbuild.signing import envelope, signer, trust

keys_option = click.option("--secureboot-keys", "secureboot_keys",
                           type=click.Path(path_type=Path, file_okay=False, exists=True),
                           help="The Secure Boot key folder of the image, whose certificates its firmware enrolls "
                                "(PCRs are computed again with them) [default: the development set, for a development "
                                "image]. Only the certificates are read.")


@click.group("measurements")
def measurements_group() -> None:
    """Countersigned measured boot: what a genuine boot of each slot of a UEFI-path image measures into the
    TPM (PCR 4, 7, 11), signed by a controller with the image (docs/boot.md)."""


@measurements_group.command("sign")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@policy_option
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="The signed document [default: beside MANIFEST, IMAGE-NAME.measurements.json].")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The image MANIFEST describes [default: the file it names, beside it].")
@keys_option
@passphrase_option
@json_option
def sign_cmd(manifest: Path, key: Path, cert: Path, policy: Path, out: Path | None, image: Path | None,
             secureboot_keys: Path | None, passphrase_file: Path | None, as_json: bool) -> None:
    """Countersign, as the controller, the PCR values each slot of the UEFI-path image MANIFEST describes
    measures (MANIFEST: the manifest published beside the image, IMAGE-NAME.manifest.json).

    \b
    The image is checked first, nothing is signed unless every check holds: its SHA-256 is the manifest's;
    the manifest on its ESP says the same; each slot's unified kernel image on the ESP has the manifest's
    digest and commands the manifest's root hash; each slot's PCRs 4, 7, 11, computed again from the ESP's
    systemd-boot and UKI with the Secure Boot certificates, are the manifest's. A document already at --out
    (the draft clipbuild release wrote) must state the same.
      clipbuild measurements sign OUT/client-4.5.0.manifest.json --out OUT/measurements.json \\
          --key controller.key --cert controller.pem --policy policy.yaml --secureboot-keys sb/
    """
    key_pair = signer.load_signing_key(key, cert, signer.passphrase(passphrase_file))
    loaded = trust.load_policy(policy)
    signer.check_fit(key_pair, measurements.SIGNING_ROLE, loaded.role(measurements.SIGNING_ROLE))
    data = read_manifest(manifest)
    statement = measurements.of_manifest(data, str(manifest))
    image = image or manifest.parent / statement.image_file
    out = out or manifest.parent / f"{Path(statement.image_file).stem}.measurements.json"
    keys = image_keys(image, data, secureboot_keys)
    assert keys is not None  # of_manifest refused an image of the BIOS path
    report = measurements.countersign(statement, image, keys, key_pair, out)
    summary = {"measurements": str(out), "image": str(image), "sha256": statement.image_sha256,
               "slots": statement.pcrs(), "checks": report.to_dict()}
    if as_json:
        emit_json(summary, sort_keys=False)
        return
    click.echo(f"signed {out}: {statement.species} {statement.release}, {statement.image_file} "
               f"(sha256 {statement.image_sha256[:16]}...), slots {', '.join(sorted(statement.slots))}")


def read_manifest(path: Path) -> dict[str, Any]:
    """A published image manifest (bounded, JSON); its shape is checked by `measurements.of_manifest`."""
    try:
        data = json.loads(safefile.read_regular(path, envelope.MAX_BYTES))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not a JSON image manifest ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not an image manifest (a JSON object is expected)")
    return data


@measurements_group.command("verify")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False))
@policy_option
@click.option("--image", help="Also check that this image (a file, or a species' latest image) is the one measured.")
@keys_option
@click.option("--at", "at", type=click.DateTime(), help="Verify as of this time (UTC) instead of now.")
@json_option
@click.pass_obj
def verify_cmd(opts: Options, document: Path, policy: Path, image: str | None, secureboot_keys: Path | None,
               at: dt.datetime | None, as_json: bool) -> None:
    """Check a measurements document: signed by a controller of the policy (issued by its CA, valid, not
    revoked); with --image, also every check `measurements sign` made of the image (its SHA-256, manifest,
    UKIs, root hashes, PCRs computed again). Exit 1 if anything does not hold."""
    found = measurements.read(document)
    problems = measurements.check_signature(found, trust.load_policy(policy),
                                            at.replace(tzinfo=dt.UTC) if at else trust.now())
    report = None
    if image is not None and not problems:  # nothing in an unauthenticated document is worth checking
        path = image_path(opts, image)
        keys = image_keys(path, inspection.read(path).manifest, secureboot_keys)
        report = measurements.check_image(found.statement, path, keys)
    ok = not problems and (report is None or report.ok)
    if as_json:
        emit_json({"measurements": str(document), "ok": ok, "signer": envelope.signer_subject(found.envelope),
                   "signature": problems, "statement": found.statement.to_signed(),
                   "image": report.to_dict() if report else None}, sort_keys=False)
    else:
        click.echo("\n".join(_lines(found, problems, report)))
    if not ok:
        sys.exit(EXIT_FAILED)


def _lines(found: measurements.Signed, problems: list[str], report: inspection.Report | None) -> list[str]:
    statement = found.statement
    lines = [f"{'REFUSED ' if problems else 'ok      '} {found.where}: {statement.species} {statement.release}, "
             f"{statement.image_file} (sha256 {statement.image_sha256[:16]}...), signed by "
             f"{envelope.signer_subject(found.envelope)}", *(f"         {p}" for p in problems)]
    for name, slot in sorted(statement.slots.items()) if not problems else ():
        lines.append(f"  slot {name} {slot.version}: root hash {slot.root_hash[:16]}..., UKI "
                     f"{slot.uki_sha256[:16]}..., " + ", ".join(f"PCR {p} {slot.pcrs[p][:16]}..."
                                                                  for p in measurements.PCRS))
    if report is not None:
        lines.append("image:")
        lines += [f"  {'ok    ' if ok else 'FAILED'} {what}" + (f": {detail}" if detail else "")
                  for what, ok, detail in report.checks]
        lines.append("the image is the one measured" if report.ok else "the image is NOT the one measured")
    return lines


COMMANDS = (measurements_group,)
