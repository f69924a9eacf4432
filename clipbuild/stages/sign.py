"""The signing stage: the signed pool of each (distribution, part), `sign/<dist>-<part>`, read by the image.

Development (default): the development PKI (clipbuild.signing.devpki) signs every package as developer, then
countersigns it as controller, dated SOURCE_DATE_EPOCH; the signatures are deterministic, so the pool is
reproducible on a machine. Release (`clipbuild image --release --batch DIR...`): nothing is signed here; each
package the plan built must be found, developer-signed and countersigned, in a controller batch (a folder
`clipbuild countersign` processed: its batch-report.json lists the file with its countersigned digest). The
match is on the bytes the developer signed, which must be exactly the package this build made.

Both modes only gather packages; the image step verifies every one against the trust policy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import InputError, StepError
from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.formats import clipsig
from clipbuild.signing import devpki, truststore
from clipbuild.signing.batch import REPORT
from clipbuild.signing.devpki import DEVELOPMENT, RELEASE
from clipbuild.signing.signer import sign_bytes
from clipbuild.spec.model import Profile

RELEASE_HINT = ("  a release takes only the packages this build made, as a controller countersigned them "
                "(clipbuild countersign); pass every batch with --batch. Packages for a release are built with "
                "its trust store (clip-update-keys): clipbuild package SPECIES --release --policy FILE")


@dataclass(frozen=True)
class SignOptions:
    distribution: str
    part: str
    mode: str
    date: int
    signers: dict[str, str] = field(default_factory=dict)  # development: role -> certificate SHA-256
    batches: dict[str, dict[str, str]] = field(default_factory=dict)  # release: folder -> {file: sha256}


class SignSet(StepKind):
    name = "sign-set"
    version = 1
    Options = SignOptions
    outputs = ("debs", "signed.json")

    def run(self, ctx: StepContext) -> None:
        opts: SignOptions = ctx.options
        (package_out,) = ctx.inputs.values()
        built = json.loads((package_out / "debs.json").read_text())
        (ctx.out / "debs").mkdir()
        if opts.mode == DEVELOPMENT:
            rows = _sign_development(ctx, opts, package_out, built)
        else:
            rows = _gather_release(ctx, opts, built)
        (ctx.out / "signed.json").write_text(json.dumps(rows, indent=2) + "\n")


def _sign_development(ctx: StepContext, opts: SignOptions, package_out: Path, built: list[dict]) -> list[dict]:
    pki = devpki.ensure()
    if pki.fingerprints() != opts.signers:
        raise StepError(ctx.step.id, f"the development PKI in {pki.directory} changed since the plan was made",
                        detail=["  run the command again"])
    rows = []
    for row in built:
        data = (package_out / "debs" / row["file"]).read_bytes()
        signed = sign_bytes(sign_bytes(data, "developer", pki.developer, opts.date), "controller",
                            pki.controller, opts.date)
        (ctx.out / "debs" / row["file"]).write_bytes(signed)
        ctx.progress(f"signed {row['file']} (development keys)")
        rows.append({"file": row["file"], "unsigned_sha256": row["sha256"],
                     "sha256": hashlib.sha256(signed).hexdigest(), "source": "development PKI"})
    return rows


def _developer_signed_digest(path: Path) -> str | None:
    data = path.read_bytes()
    try:
        layout = clipsig.read_layout(data)
    except ValueError:
        return None
    return hashlib.sha256(data[:layout.deb_end]).hexdigest()


def _gather_release(ctx: StepContext, opts: SignOptions, built: list[dict]) -> list[dict]:
    candidates: dict[str, list[tuple[Path, str, dict | None]]] = {}
    for folder, digests in opts.batches.items():
        report = {row["file"]: row for row in json.loads((Path(folder) / f"{REPORT}.json").read_text())}
        for name, digest in digests.items():
            candidates.setdefault(name, []).append((Path(folder) / name, digest, report.get(name)))
    rows, problems = [], []
    for row in built:
        match, why = _pick(row, candidates.get(row["file"], []))
        if match is None:
            problems.append(f"  {row['file']}: {why}")
            continue
        shutil.copyfile(match, ctx.out / "debs" / row["file"])
        ctx.progress(f"{row['file']} from controller batch {match.parent}")
        rows.append({"file": row["file"], "unsigned_sha256": row["sha256"], "sha256": sha256_file(match),
                     "source": str(match.parent)})
    if problems:
        raise StepError(ctx.step.id, f"{len(problems)} package(s) of this build cannot be taken from the "
                        "controller batches; nothing was installed", detail=[*problems, RELEASE_HINT])
    return rows


def _pick(row: dict, found: list[tuple[Path, str, dict | None]]) -> tuple[Path | None, str]:
    """The batch copy of a built package, or why there is none (the first rule it breaks)."""
    if not found:
        return None, "in no batch given with --batch"
    reasons = []  # a package of the same name may be in several batches (busybox in clip and rm)
    for path, digest, listed in found:
        if sha256_file(path) != digest:
            return None, f"{path} changed since the plan was made; run the command again"
        if listed is None:
            reasons.append(f"{path}: not in the batch report: the controller did not countersign it")
        elif listed["sha256_after"] != digest:
            reasons.append(f"{path}: changed after the controller countersigned it (sha256 {digest[:16]}..., "
                           f"the batch report says {listed['sha256_after'][:16]}...)")
        elif _developer_signed_digest(path) != row["sha256"]:
            reasons.append(f"{path}: not the package this build made (the bytes the developer signed differ)"
                           + _trust_store_hint(row["file"]))
        else:
            return path, ""
    reasons.sort(key=lambda reason: "not the package this build made" in reason)
    return None, reasons[0]


def _trust_store_hint(file: str) -> str:
    if not file.startswith(f"{truststore.PACKAGE}_"):
        return ""
    return ("; the trust store package differs when the packages were built for another trust policy "
            "(development, or another release) than this plan's")


def batch_digests(folders: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Every countersigned batch's packages by digest, for the plan (a changed batch changes the key)."""
    out = {}
    for folder in folders:
        path = Path(folder).resolve()
        if not (path / f"{REPORT}.json").is_file():
            raise InputError(f"{folder}: not a countersigned controller batch (no {REPORT}.json)",
                             )
        out[str(path)] = {deb.name: sha256_file(deb) for deb in sorted(path.glob("*.deb"))}
    return out


def plan_signing(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    if settings.release:
        options = {"mode": RELEASE, "batches": batch_digests(settings.batches)}
    else:
        options = {"mode": DEVELOPMENT, "signers": devpki.ensure().fingerprints()}
    steps = []
    for dist, part, _pset in profile.packages.sets():
        opts = SignOptions(dist, part, date=settings.source_date_epoch, **options)
        steps.append(SignSet.step(f"sign/{dist}-{part}", opts, inputs=(f"package/{dist}-{part}",),
                                  description=f"{options['mode']} signatures of the {dist}/{part} packages"))
    return steps
