"""Controller batches: a plain directory of developer-signed packages that travels to the controller's
(possibly offline) machine and back. Countersigning is all or nothing: every developer signature is verified
first, and one failure refuses the whole batch, listing each failure; otherwise every package is
countersigned and the batch gets a report (batch-report.json and batch-report.txt). A failure while signing
cuts every package back; a kill leaves records that the next `countersign` or `verify` undoes."""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path

from clipbuild.core import safefile
from clipbuild.core.errors import BatchRefused, InputError
from clipbuild.core.run import run
from clipbuild.signing import inplace
from clipbuild.signing.inplace import Appending
from clipbuild.signing.signer import SigningKey, Staged, check_fit, commit, mapped, sign_staged, signature_for, stage
from clipbuild.signing.trust import Policy, PrefixDigests, Verdict, hash_of, verify_developer

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
    _warn(verdict)
    return verdict


def _warn(verdict: Verdict) -> None:
    for warning in verdict.warnings:
        log.warning("%s: %s", verdict.path, warning)


@dataclass
class _Batch:
    """The packages of a batch being countersigned: in place (open and locked until the end) or, those with
    hard links, on private copies; each one's developer verdict."""

    in_place: list[Appending] = field(default_factory=list)
    copies: list[Staged] = field(default_factory=list)
    verdicts: dict[Path, Verdict] = field(default_factory=dict)


def countersign(batch: Path, signer: SigningKey, policy: Policy) -> list[Row]:
    """Check then sign the same bytes, all or nothing: each package is opened (links, FIFOs and directories
    refused) and locked, read once for its digests, its developer signature checked on those bytes; when every
    one passes, each is countersigned in place (under core.appendlog's intent records: a kill is undone by the
    next command), or on a private copy renamed in for a package with hard links. Any failure cuts back every
    package appended so far. Everything is on disk before the report is written."""
    check_fit(signer, "controller", policy.controller)
    work = _Batch()
    try:
        algorithms = _digests_needed(signer, policy)
        for deb in packages(batch):
            _read(deb, work, signer, policy, algorithms)
        failures = [v for v in work.verdicts.values() if not v.ok]
        if failures:
            raise BatchRefused(f"batch {batch} refused: {len(failures)} package(s) fail the developer check; "
                               "nothing was countersigned", detail=_failure_lines(failures))
        rows = [_row(deb, work, signer) for deb in work.verdicts]
        inplace.append(work.in_place)
        for item in work.copies:
            commit(item)
    except BaseException:
        inplace.undo(work.in_place)
        raise
    finally:
        for item in work.copies:
            item.discard()
    inplace.finish(work.in_place)
    if work.copies:
        safefile.sync_directory(batch)
    write_report(batch, rows)
    return rows


def _read(deb: Path, work: _Batch, signer: SigningKey, policy: Policy, algorithms: set[str]) -> None:
    """Open, lock and read one package; its verdict, and the countersignature when it passes."""
    item = inplace.open_locked(deb)
    if item is None:
        work.copies.append(stage(deb, algorithms))
        work.verdicts[deb] = _check(work.copies[-1], policy)
        return
    work.in_place.append(item)

    def check_and_sign(view: memoryview, digests: PrefixDigests) -> bytes:
        verdict = verify_developer(view, policy, path=str(deb), digests=digests)
        work.verdicts[deb] = verdict
        return signature_for(view, "controller", signer, digests=digests) if verdict.ok else b""

    inplace.read(item, algorithms, check_and_sign)
    _warn(work.verdicts[deb])


def _digests_needed(signer: SigningKey, policy: Policy) -> set[str]:
    """What the first read should hash: the controller's digest, and the developers', guessed from their CAs'
    own (a CA signs with the digest it was signed with, as `pki init` does); a wrong guess costs one more read."""
    names = {hash_of(signer.cert)}
    for ca in policy.developer.cas:
        with suppress(ValueError):
            names.add(hash_of(ca))
    return names


def _row(deb: Path, work: _Batch, signer: SigningKey) -> Row:
    """The report's row, the package's control fields read before anything is written; a copy is signed here."""
    copy = next((s for s in work.copies if s.path == deb), None)
    try:
        fields = run(["dpkg-deb", "--field", copy.tmp if copy else deb, "Package", "Version"]).stdout
    except UnicodeDecodeError:
        raise BatchRefused(f"{deb}: its control fields are not UTF-8 text; nothing was countersigned") from None
    values = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    if copy is not None:
        signed = sign_staged(copy, "controller", signer)
        before, after = signed.sha256_before, signed.sha256_after
    else:
        item = next(i for i in work.in_place if i.path == deb)
        before, after = item.before.hexdigest(), item.sha256_after()
    dev = work.verdicts[deb].signers[0]
    return Row(deb.name, values.get("Package", "?"), values.get("Version", "?"), before, after, dev.subject,
               dev.fingerprint, signer.cert.subject.rfc4514_string(), sha256(signer.cert_der).hexdigest())


def write_report(batch: Path, rows: list[Row]) -> None:
    data = json.dumps([asdict(r) for r in rows], indent=2) + "\n"
    lines = [f"{len(rows)} packages countersigned by {rows[0].controller if rows else '-'}", ""]
    for r in rows:
        lines += [f"{r.package} {r.version} ({r.file})", f"  developer  {r.developer}",
                  f"  sha256 before {r.sha256_before}", f"  sha256 after  {r.sha256_after}"]
    for suffix, text in ((".json", data), (".txt", "\n".join(lines) + "\n")):
        safefile.write_atomic(batch / f"{REPORT}{suffix}", text.encode())
