"""The signing stage: the signed pool of each (distribution, part), `sign/<dist>-<part>`, read by the image.

Development (default): the development PKI (clipbuild.devpki) signs every package as developer, then
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

from clipbuild import clipsig, devpki
from clipbuild.batch import REPORT
from clipbuild.errors import InputError, StepError
from clipbuild.model import Profile
from clipbuild.plan import PlanSettings, Step, StepContext, StepKind, planner, sha256_file, step_kind
from clipbuild.project import Project
from clipbuild.signer import sign_bytes

DEVELOPMENT, RELEASE = "development", "release"


@dataclass(frozen=True)
class SignOptions:
    distribution: str
    part: str
    mode: str
    date: int
    signers: dict[str, str] = field(default_factory=dict)  # development: role -> certificate SHA-256
    batches: dict[str, dict[str, str]] = field(default_factory=dict)  # release: folder -> {file: sha256}


@step_kind
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
    found: dict[str, tuple[Path, str]] = {}
    for folder, digests in opts.batches.items():
        report = {row["file"]: row for row in json.loads((Path(folder) / f"{REPORT}.json").read_text())}
        for name, digest in digests.items():
            path = Path(folder) / name
            if sha256_file(path) != digest:
                raise StepError(ctx.step.id, f"{path} changed since the plan was made; run the command again")
            listed = report.get(name)
            if listed is None or listed["sha256_after"] != digest:
                continue  # not countersigned in this batch (or changed since): not a candidate
            unsigned = _developer_signed_digest(path)
            if unsigned:
                found.setdefault(unsigned, (path, digest))
    rows, missing = [], []
    for row in built:
        match = found.get(row["sha256"])
        if match is None:
            missing.append(row["file"])
            continue
        shutil.copyfile(match[0], ctx.out / "debs" / row["file"])
        ctx.progress(f"{row['file']} from controller batch {match[0].parent}")
        rows.append({"file": row["file"], "unsigned_sha256": row["sha256"], "sha256": match[1],
                     "source": str(match[0].parent)})
    if missing:
        raise StepError(ctx.step.id, f"{len(missing)} package(s) of this build are in no countersigned controller "
                        "batch", detail=[f"  {name}" for name in missing] + [
                            "  a release takes only packages a controller countersigned (clipbuild countersign) "
                            "from exactly these builds; sign them, send the batch, and pass it with --batch"])
    return rows


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


@planner
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
