"""The packaging stage: each set's binpkgs wrapped as CLIP .debs (`package/clip-core` reads `build/clip-core`).

Output of a step: `debs/<Package>_<Version>_<Arch>.deb` and `debs.json` (file, package, version, sha256).
The date written into the packages is the plan's SOURCE_DATE_EPOCH, so the same binpkgs give the same bytes.

Only what the set's packages need at run time becomes a .deb: the set's atoms (its conf package) and, through
their Depends, everything they pull in. A package the set built only to compile others (a DEPEND such as the
kernel headers) stays in the build's ROOT and is not packaged: nothing on a device would use it, and the update
repository of a set holds exactly what its conf package pins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from portage.dep import Atom

from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.formats import debpkg, depmap, gpkg
from clipbuild.spec.model import Profile


@dataclass(frozen=True)
class PackageOptions:
    distribution: str
    part: str
    date: int
    impact: str = "0"
    urgency: str = "NA"
    roots: tuple[str, ...] = ()  # Debian names of the set's atoms: where the run-time closure starts


class DebSet(StepKind):
    name = "deb-set"
    version = 2
    Options = PackageOptions
    outputs = ("debs", "debs.json")
    tools = ("dpkg-deb", "zstd")

    def run(self, ctx: StepContext) -> None:
        opts: PackageOptions = ctx.options
        (binpkgs,) = ctx.inputs.values()
        deb_options = debpkg.DebOptions(opts.distribution, opts.part, opts.date, impact=opts.impact,
                                        urgency=opts.urgency)
        read = [gpkg.read(path) for path in sorted((binpkgs / "binpkgs").glob("*/*/*.gpkg.tar"))]
        fields = {package.cpv: debpkg.control(package, deb_options, 0) for package, _ in read}
        depends = {f["Package"]: [name for clause in depmap.relation_names(f.get("Depends", "")) for name in clause]
                   for f in fields.values()}
        needed = runtime_closure(depends, opts.roots or tuple(depends))
        rows = []
        for package, image in read:
            if fields[package.cpv]["Package"] not in needed:
                ctx.progress(f"{package.cpv}: build-time only (nothing of the set depends on it at run time), "
                             "not packaged")
                continue
            deb = debpkg.build(package, image, deb_options, ctx.out / "debs")
            ctx.progress(f"{package.cpv} -> {deb.name}")
            rows.append({"file": deb.name, "cpv": package.cpv,
                         "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()})
        (ctx.out / "debs.json").write_text(json.dumps(rows, indent=2) + "\n")


def runtime_closure(depends: Mapping[str, Sequence[str]], roots: Sequence[str]) -> set[str]:
    """The packages `roots` need at run time, themselves included, among those in `depends` (name -> names)."""
    needed: set[str] = set()
    todo = [name for name in roots if name in depends]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [dep for dep in depends[name] if dep in depends]
    return needed


def plan_packages(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    env = profile.portage.env
    steps = []
    for dist, part, pset in profile.packages.sets():
        roots = tuple(depmap.deb_name(Atom(atom).cp.split("/", 1)[1]) for atom in pset.atoms)
        options = PackageOptions(dist, part, settings.source_date_epoch, env.get("DEB_IMPACT", "0"),
                                 env.get("DEB_URGENCY", "NA"), roots)
        steps.append(DebSet.step(f"package/{dist}-{part}", options, inputs=(f"build/{dist}-{part}",),
                                 description=f"wrap the {dist}/{part} binpkgs as CLIP .debs"))
    return steps

