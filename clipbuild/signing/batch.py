"""Controller batches: a plain directory of developer-signed packages that travels to the controller's
(possibly offline) machine and back. Countersigning is all or nothing: every developer signature is verified
first, and one failure refuses the whole batch, listing each failure; otherwise every package is
countersigned and the batch gets a report (batch-report.json and batch-report.txt)."""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

from clipbuild.core import safefile
from clipbuild.core.errors import BatchRefused, InputError
from clipbuild.core.run import run
from clipbuild.signing.signer import SigningKey, Staged, check_fit, commit, mapped, sign_staged, stage
from clipbuild.signing.trust import Policy, Verdict, hash_of, verify_developer

REPORT = "batch-report"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    file: str
    package: str
    version: str
    sha256_before: str
    sha256_after: str
    developer: str
    developer_fingerprint: str
    controller: str
    controller_fingerprint: str


def _failure_lines(failures: list[Verdict]) -> list[str]:
    out = []
    for verdict in failures:
        out.append(f"  {Path(verdict.path).name}:")
        out += [f"    {reason}" for reason in verdict.reasons]
    return out


def packages(batch: Path) -> list[Path]:
    debs = sorted(batch.glob("*.deb"))
    if not debs:
        raise InputError(f"{batch}: no .deb packages in this batch")
    return debs


def _check(staged: Staged, policy: Policy) -> Verdict:
    with mapped(staged) as view:
        verdict = verify_developer(view, policy, path=str(staged.path), digests=staged.digests(view))
    for warning in verdict.warnings:
        log.warning("%s: %s", staged.path, warning)
    return verdict


def countersign(batch: Path, signer: SigningKey, policy: Policy) -> list[Row]:
    """Check then sign the same bytes: each package is copied privately first (links, FIFOs and directories
    refused; the copy hashed as it is written), its developer signature checked on that copy, and that copy
    countersigned, fsynced and renamed in; the renames are synced to disk before the report is written."""
    check_fit(signer, "controller", policy.controller)
    staged: list[Staged] = []
    try:
        algorithms = _digests_needed(signer, policy)
        for deb in packages(batch):
            staged.append(stage(deb, algorithms))
        verdicts = [_check(s, policy) for s in staged]
        failures = [v for v in verdicts if not v.ok]
        if failures:
            raise BatchRefused(f"batch {batch} refused: {len(failures)} package(s) fail the developer check; "
                               "nothing was countersigned", detail=_failure_lines(failures))
        rows = [_countersign_one(s, v, signer) for s, v in zip(staged, verdicts, strict=True)]
        for item in staged:
            commit(item)
    finally:
        for item in staged:
            item.discard()
    safefile.sync_directory(batch)
    write_report(batch, rows)
    return rows


def _digests_needed(signer: SigningKey, policy: Policy) -> set[str]:
    """What copying should hash: the controller's digest, and the developers', guessed from their CAs' own (a
    CA signs with the digest it was signed with, as `pki init` does); a wrong guess costs one more read."""
    names = {hash_of(signer.cert)}
    for ca in policy.developer.cas:
        with suppress(ValueError):
            names.add(hash_of(ca))
    return names


def _countersign_one(staged: Staged, verdict: Verdict, signer: SigningKey) -> Row:
    try:
        fields = run(["dpkg-deb", "--field", staged.tmp, "Package", "Version"]).stdout
    except UnicodeDecodeError:
        raise BatchRefused(f"{staged.path}: its control fields are not UTF-8 text; nothing was countersigned") \
            from None
    values = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    signed = sign_staged(staged, "controller", signer)
    dev = verdict.signers[0]
    return Row(staged.path.name, values.get("Package", "?"), values.get("Version", "?"), signed.sha256_before,
               signed.sha256_after, dev.subject, dev.fingerprint, signer.cert.subject.rfc4514_string(),
               sha256(signer.cert_der).hexdigest())


def write_report(batch: Path, rows: list[Row]) -> None:
    data = json.dumps([asdict(r) for r in rows], indent=2) + "\n"
    lines = [f"{len(rows)} packages countersigned by {rows[0].controller if rows else '-'}", ""]
    for r in rows:
        lines += [f"{r.package} {r.version} ({r.file})", f"  developer  {r.developer}",
                  f"  sha256 before {r.sha256_before}", f"  sha256 after  {r.sha256_after}"]
    for suffix, text in ((".json", data), (".txt", "\n".join(lines) + "\n")):
        safefile.write_atomic(batch / f"{REPORT}{suffix}", text.encode())
