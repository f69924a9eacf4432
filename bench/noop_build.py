"""Benchmark: a warm no-op `clipbuild build SPECIES` beside a bare `emerge --usepkgonly --pretend` of the same
package sets, run in the same build root with the same configuration, in the same process.

    .venv/bin/python bench/noop_build.py [SPECIES] [--runs N] [--workdir DIR]

Builds the species first if its sets are not built yet (that first build is not timed). Prints seconds per run
(median of N) and the ratio: how much a no-op clipbuild costs next to Portage merely resolving the sets.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from clipbuild.cli.main import main
from clipbuild.core.executor import Executor
from clipbuild.core.project import find_project
from clipbuild.core.run import run
from clipbuild.gentoo.buildroot import Mount, ensure
from clipbuild.gentoo.portage_config import REPO_PATH
from clipbuild.spec.profile import resolve
from clipbuild.stages.build import EmergeSet
from clipbuild.stages.pipeline import STEP_KINDS, compile_plan


def clipbuild_build(workdir: Path, species: str) -> float:
    started = time.perf_counter()
    try:
        main(["--workdir", str(workdir), "build", species])
    except SystemExit as exc:
        if exc.code:
            raise
    return time.perf_counter() - started


def clipbuild_process(workdir: Path, species: str) -> float:
    """The same as a user runs it: a new process, interpreter start-up and imports included."""
    started = time.perf_counter()
    run([Path(sys.executable).with_name("clipbuild"), "--workdir", workdir, "build", species])
    return time.perf_counter() - started


def bare_emerge(workdir: Path, species: str) -> float:
    """emerge --usepkgonly --pretend of every set, from the binpkgs clipbuild built, into an empty ROOT."""
    project = find_project()
    plan = compile_plan(resolve(project, species), project)
    executor = Executor(workdir, STEP_KINDS, project_root=project.root)
    sdk = ensure()
    started = time.perf_counter()
    for step in plan.steps:
        if step.kind != EmergeSet.name:
            continue
        out = executor.output(species, step.id)
        with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as tmp:
            mounts = [Mount(out / "portage", "/etc/portage"), Mount(project.root / step.options["overlay"], REPO_PATH),
                      Mount(out / "binpkgs", "/var/cache/binpkgs"), Mount(Path(root), "/build/root", writable=True),
                      Mount(Path(tmp), "/var/tmp", writable=True)]
            env = {"ROOT": "/build/root", "PORTAGE_REPOSITORIES": step.options["config"]["repos.conf/clip.conf"]}
            sdk.run([sdk.emerge, "--usepkgonly", "--pretend", "--color=n", "--nospinner", *step.options["atoms"]],
                    mounts, env)
    return time.perf_counter() - started


def main_bench() -> None:
    from benchargs import parse

    args = parse(__doc__, runs=5)
    print(f"warming up: clipbuild build {args.species} (builds what is missing)", file=sys.stderr)
    clipbuild_build(args.workdir, args.species)
    rows = {
        f"no-op clipbuild build {args.species}, in process": [clipbuild_build(args.workdir, args.species)
                                                              for _ in range(args.runs)],
        f"no-op clipbuild build {args.species}, as a command": [clipbuild_process(args.workdir, args.species)
                                                                for _ in range(args.runs)],
        "bare emerge --usepkgonly --pretend of the same sets": [bare_emerge(args.workdir, args.species)
                                                                for _ in range(args.runs)],
    }
    medians = {name: statistics.median(times) for name, times in rows.items()}
    for name, times in rows.items():
        print(f"{name}: {medians[name]:.3f} s (median of {args.runs}; min {min(times):.3f}, max {max(times):.3f})")
    baseline = medians["bare emerge --usepkgonly --pretend of the same sets"]
    for name in list(rows)[:2]:
        print(f"ratio {name.removeprefix('no-op clipbuild build ' + args.species + ', ')} / bare emerge: "
              f"{medians[name] / baseline:.3f}")


if __name__ == "__main__":
    main_bench()
