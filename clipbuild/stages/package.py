"""The packaging stage: each set's binpkgs wrapped as CLIP .debs (`package/clip-core` reads `build/clip-core`).

Output of a step: `debs/<Package>_<Version>_<Arch>.deb` and `debs.json` (file, package, version, sha256).
The date written into the packages is the plan's SOURCE_DATE_EPOCH, so the same binpkgs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.formats import debpkg, gpkg
from clipbuild.spec.model import Profile


@dataclass(frozen=True)
class PackageOptions:
    distribution: str
    part: str
    date: int
    impact: str = "0"
    urgency: str = "NA"


class DebSet(StepKind):
    name = "deb-set"
    version = 1
    Options = PackageOptions
    outputs = ("debs", "debs.json")
    tools = ("dpkg-deb", "zstd")

    def run(self, ctx: StepContext) -> None:
        opts: PackageOptions = ctx.options
        (binpkgs,) = ctx.inputs.values()
        deb_options = debpkg.DebOptions(opts.distribution, opts.part, opts.date, impact=opts.impact,
                                        urgency=opts.urgency)
        rows = []
        for path in sorted((binpkgs / "binpkgs").glob("*/*/*.gpkg.tar")):
            package, image = gpkg.read(path)
            deb = debpkg.build(package, image, deb_options, ctx.out / "debs")
            ctx.progress(f"{package.cpv} -> {deb.name}")
            rows.append({"file": deb.name, "cpv": package.cpv,
                         "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()})
        (ctx.out / "debs.json").write_text(json.dumps(rows, indent=2) + "\n")


def plan_packages(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    env = profile.portage.env
    steps = []
    for dist, part, _pset in profile.packages.sets():
        options = PackageOptions(dist, part, settings.source_date_epoch, env.get("DEB_IMPACT", "0"),
                                 env.get("DEB_URGENCY", "NA"))
        steps.append(DebSet.step(f"package/{dist}-{part}", options, inputs=(f"build/{dist}-{part}",),
                                 description=f"wrap the {dist}/{part} binpkgs as CLIP .debs"))
    return steps

