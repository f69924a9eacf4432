"""Commands for keys, signatures and controller batches: pki, sign, countersign, verify."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import asdict
from pathlib import Path

import click

from clipbuild.cli.context import emit_json, json_option
from clipbuild.core.errors import EXIT_FAILED, InputError
from clipbuild.signing import batch, pki, secureboot, signer, trust
from clipbuild.update import releasemeta, repository

ROLE = click.Choice(["developer", "controller"])
passphrase_option = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False),
    help=f"File holding the key passphrase [default: ${signer.PASSPHRASE_ENV}]. Never on the command line.")
policy_option = click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                             required=True, help="The trust policy file (clipbuild pki init writes one).")


def secret_of(passphrase_file: Path | None) -> bytes:
    secret = signer.passphrase(passphrase_file)
    if not secret:
        raise InputError(f"keys are written encrypted: give --passphrase-file FILE or set {signer.PASSPHRASE_ENV}")
    return secret


@click.group("pki")
def pki_group() -> None:
    """A developer CA and a controller CA with signer certificates, CRLs and a trust policy.

    For tests and first steps; real deployments keep the two CAs on separate, offline machines.
    """


@pki_group.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--curve", type=click.Choice(list(pki.CURVES)), default="p256", show_default=True)
@click.option("--digest", type=click.Choice(list(pki.DIGESTS)), default="sha256", show_default=True,
              help="The CAs sign with it, and so packages are signed over it.")
@passphrase_option
def pki_init(directory: Path, curve: str, digest: str, passphrase_file: Path | None) -> None:
    """Create both CAs, signers developer-1 and controller-1, empty CRLs and DIRECTORY/policy.yaml."""
    files = pki.init(directory, secret_of(passphrase_file), pki.PkiSettings(curve=curve, digest=digest))
    for path in files:
        click.echo(path)


@pki_group.command("issue")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--role", type=ROLE, required=True)
@click.option("--name", required=True, help="Common name and file name, e.g. developer-2.")
@click.option("--days", type=click.IntRange(1), help="Validity [default: 730].")
@passphrase_option
def pki_issue(directory: Path, role: str, name: str, days: int | None, passphrase_file: Path | None) -> None:
    """Issue a new signer certificate and key for ROLE."""
    click.echo(pki.issue(directory, role, name, secret_of(passphrase_file), days=days))


@pki_group.command("revoke")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("certificate", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@passphrase_option
def pki_revoke(directory: Path, certificate: Path, passphrase_file: Path | None) -> None:
    """Revoke CERTIFICATE: its CA's CRL is re-issued with it."""
    role = pki.revoke(directory, certificate, secret_of(passphrase_file))
    click.echo(f"revoked {certificate} ({role}); publish {directory / (role + '-ca.crl.pem')}")


@pki_group.group("secureboot")
def secureboot_group() -> None:
    """UEFI Secure Boot keys (PK, KEK, db; RSA), kept apart from the package-signing PKI.

    \b
    A key set signs systemd-boot and the unified kernel images of the UEFI boot path (docs/boot.md). Development
    images use a development set made on first use in clipbuild's cache; a release needs its own set, whose
    private keys stay outside every build tree: `clipbuild image SPECIES --release --bootloader systemd-boot
    --secureboot-keys DIR` reads the certificates and db.key from DIR and refuses a DIR inside the project or
    the cache. PK.key and KEK.key sign changes to the firmware's keys only: keep them offline.
    """


@secureboot_group.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--organisation", default="clipbuild Secure Boot", show_default=True,
              help="O= of the three certificates (their CN adds the role).")
@click.option("--bits", type=click.Choice([str(b) for b in secureboot.BITS]), default="2048", show_default=True,
              help="RSA key size (OVMF refuses ECDSA Secure Boot keys).")
@click.option("--days", type=click.IntRange(1), default=3650, show_default=True)
@json_option
def secureboot_init(directory: Path, organisation: str, bits: str, days: int, as_json: bool) -> None:
    """Create a Secure Boot key set in DIRECTORY (which must not exist): PK, KEK signed by PK, db signed by KEK,
    and the EFI signature owner GUID."""
    keys = secureboot.init(directory, organisation, bits=int(bits), days=days)
    data = {"directory": str(keys.directory), "owner": keys.owner,
            **{role: {"certificate": str(keys.cert(role)), "subject": keys.subject(role),
                      "sha256": keys.fingerprint(role)} for role in secureboot.ROLES}}
    if as_json:
        emit_json(data)
        return
    for role in secureboot.ROLES:
        click.echo(f"{role:<4} {keys.cert(role)}  sha256 {keys.fingerprint(role)}")
    click.echo(f"owner GUID {keys.owner}; private keys {directory}/*.key (mode 0600): keep PK.key and KEK.key offline")


@click.command("sign")
@click.argument("debs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--role", type=ROLE, required=True)
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Check the certificate against the role's CA and rules before signing.")
@passphrase_option
def sign_cmd(debs: tuple[Path, ...], role: str, key: Path, cert: Path, policy: Path | None,
             passphrase_file: Path | None) -> None:
    """Sign packages in CLIP's format, in place: a developer signs, a controller countersigns.

    Controllers usually sign a whole batch with clipbuild countersign, which checks the developer
    signatures first.

    The signature is appended all or nothing: a failure cuts the package back; a signature interrupted by a
    kill or a power cut is undone by the next sign, countersign or verify of the package, which prints
    "recovered an interrupted signature: FILE back to N bytes" (docs/signing.md).
    """
    key_pair = signer.load_signing_key(key, cert, signer.passphrase(passphrase_file))
    role_policy = trust.load_policy(policy).role(role) if policy else None
    signer.check_fit(key_pair, role, role_policy)
    for deb in debs:
        signed = signer.sign_file(deb, role, key_pair)
        click.echo(f"signed {deb} as {role}: sha256 {signed.sha256_after}")


@click.command("countersign")
@click.argument("batch_dir", metavar="BATCH", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@policy_option
@passphrase_option
@json_option
def countersign_cmd(batch_dir: Path, key: Path, cert: Path, policy: Path, passphrase_file: Path | None,
                    as_json: bool) -> None:
    """Countersign every package of BATCH as the controller, or none of them.

    Every developer signature is verified first against the policy; if one fails, the whole batch is
    refused and each failure listed (exit 1). Otherwise each package is countersigned in place and
    BATCH/batch-report.json and .txt record package, version, sha256 before and after, and both signers.
    A failure cuts every package back; a countersigning interrupted by a kill is undone by the next
    countersign (or verify) of the batch, which prints "recovered an interrupted signature: ...".
    """
    key_pair = signer.load_signing_key(key, cert, signer.passphrase(passphrase_file))
    rows = batch.countersign(batch_dir, key_pair, trust.load_policy(policy))
    if as_json:
        emit_json([asdict(r) for r in rows])
    else:
        click.echo((batch_dir / f"{batch.REPORT}.txt").read_text(), nl=False)


@click.command("verify")
@click.argument("debs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@policy_option
@click.option("--at", "at", type=click.DateTime(), help="Verify as of this time (UTC) instead of now.")
@json_option
def verify_cmd(debs: tuple[Path, ...], policy: Path, at: dt.datetime | None, as_json: bool) -> None:
    """Check both signatures of each package against the trust policy; exit 1 if any is refused.

    Each refusal says which rule failed: missing, extra or reordered members, truncated or oversized
    members, modified bytes, a certificate of the wrong role's CA, a wrong key usage, an expired, not yet
    valid or revoked certificate, a subject that does not match.
    """
    loaded = trust.load_policy(policy)
    when = at.replace(tzinfo=dt.UTC) if at else None
    verdicts = [trust.verify_file(deb, loaded, at=when) for deb in debs]
    if as_json:
        emit_json([v.to_dict() for v in verdicts])
    else:
        for verdict in verdicts:
            if verdict.ok:
                signers = "; ".join(f"{s.role} {s.subject}" for s in verdict.signers)
                click.echo(f"ok       {verdict.path} ({signers})")
            else:
                click.echo(f"REFUSED  {verdict.path}")
                for reason in verdict.reasons:
                    click.echo(f"         {reason}")
    if not all(v.ok for v in verdicts):
        sys.exit(EXIT_FAILED)


@click.group("repo")
def repo_group() -> None:
    """Update repositories in CLIP's layout, from countersigned packages."""


@repo_group.command("publish")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@policy_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Where OUT/<dist>/<conf>/{pool,dists} are written.")
@click.option("--species", help="Also write OUT/release.json, the unsigned release metadata for SPECIES.")
def repo_publish(sources: tuple[Path, ...], policy: Path, out: Path, species: str | None) -> None:
    """Publish countersigned packages (files, or batch directories) as CLIP update repositories.

    One repository per conf package (clip-core-conf, clip-apps-conf, rm-core-conf, rm-apps-conf), holding it
    and exactly the versions it pins. Every package must verify; otherwise nothing is published.
    With --species, OUT/release.json describes them (unsigned); a controller signs it with
    clipbuild repo sign-metadata OUT.
    """
    debs = sorted({deb for src in sources for deb in ([src] if src.is_file() else src.glob("*.deb"))})
    for path in repository.publish(debs, trust.load_policy(policy), out):
        click.echo(path)
    if species:
        click.echo(releasemeta.write_draft(out, species))


@repo_group.command("sign-metadata")
@click.argument("repo", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@policy_option
@click.option("--expires", "expires_days", type=click.IntRange(1, releasemeta.MAX_EXPIRES_DAYS),
              default=releasemeta.DEFAULT_EXPIRES_DAYS, show_default=True,
              help="Days the signed metadata stays valid; devices refuse it after (a mirror cannot freeze them).")
@click.option("--version", "version", type=click.IntRange(1), help="Metadata version [default: the signing time "
              "in seconds since 1970, above the previous one].")
@click.option("--species", help="The species [default: the one REPO/release.json names].")
@passphrase_option
@json_option
def repo_sign_metadata(repo: Path, key: Path, cert: Path, policy: Path, expires_days: int, version: int | None,
                       species: str | None, passphrase_file: Path | None, as_json: bool) -> None:
    """Sign REPO's release metadata as the controller (REPO/release.json): every repository's Packages.gz and
    each package's name, version, size and SHA-256, the release, a version that only grows, an expiry, and
    the policy's current CRLs.

    \b
    The repository must be the one its draft (repo publish --species, or release) describes. Sign again
    before the expiry to keep devices updating (the version grows each time):
      clipbuild repo sign-metadata REPO --key controller.key --cert controller.pem --policy policy.yaml
    """
    key_pair = signer.load_signing_key(key, cert, signer.passphrase(passphrase_file))
    loaded = trust.load_policy(policy)
    signer.check_fit(key_pair, releasemeta.SIGNING_ROLE, loaded.role(releasemeta.SIGNING_ROLE))
    statement = releasemeta.sign_repository(repo, key_pair, loaded, expires_days=expires_days, version=version,
                                            species=species or "")
    summary = {"metadata": str(repo / releasemeta.METADATA), "species": statement.species,
               "release": statement.release, "version": statement.version, "expires": statement.expires,
               "repositories": sorted(statement.repositories)}
    if as_json:
        emit_json(summary, sort_keys=False)
    else:
        click.echo(f"signed {summary['metadata']}: {statement.species} {statement.release}, version "
                   f"{statement.version}, expires {statement.expires}")


COMMANDS = (pki_group, sign_cmd, countersign_cmd, verify_cmd, repo_group)
