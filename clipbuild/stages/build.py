"""The build stage: every (distribution, part) package set of a species built with emerge into its own ROOT.

One step per set (`build/clip-core`, `build/clip-apps`, `build/rm-core`, `build/rm-apps`). A step's key covers
the build root recipe, the rendered Portage configuration and every file of the overlay, so an unchanged
species is a cached no-op. Inside a step that must run, each package is keyed on its own inputs
(clipbuild.gentoo.binpkgs): packages found in the store are installed from their binpkgs, the others built from
source. Output of a step:

    portage/        the rendered /etc/portage, readable for debugging
    binpkgs/        PKGDIR: the set's gpkg binpkgs and their Packages index
    root/           the ROOT the set was merged into
    logs/           emerge.log and one build log per package (logs/build/)
    packages.json   each package: cpv, key, built, reused (from the local store) or fetched (from a binhost), why
                    it was built, and its seconds in emerge
    compiles.json   where this run's compiles went (only with distcc hosts or a compiler cache): compiles per
                    distcc host and here, fallbacks, ccache hits local/remote and misses (clipbuild.gentoo.offload)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from clipbuild.core.digest import sha256_file, tree_digest
from clipbuild.core.errors import StepError, ToolError
from clipbuild.core.paths import cache_dir
from clipbuild.core.plan import PlanSettings, SourceFile, Step, StepContext, StepKind
from clipbuild.core.project import OVERLAY, Project
from clipbuild.gentoo import binhost, binpkgs, buildroot, fetch, offload, scaleout
from clipbuild.gentoo.buildroot import BuildRoot, Mount, Recipe
from clipbuild.gentoo.emerge import Emerge, build_deps, log_tail, parse_failure
from clipbuild.gentoo.guest import KCONFIG
from clipbuild.gentoo.portage_config import CCACHE_DIR, REPO_PATH, host_conf, render
from clipbuild.spec.model import Profile

JAILS = "jails"  # the render-jails step, read by the clip/core set
JAILS_MOUNT = "/build/jails"
KEYS = "keys"  # the render-keys step (the trust store), read by the clip/core set
KEYS_MOUNT = "/build/keys"
# Rendered trees the clip/core set reads: step id -> (mount point, environment variable). A package inheriting
# clip-<step id>.eclass installs the tree and is keyed on its digest.
RENDERED_TREES = {JAILS: (JAILS_MOUNT, "CLIP_JAILS_TREE"), KEYS: (KEYS_MOUNT, "CLIP_KEYS_TREE")}
KERNEL_DIR = "kernel-patches"  # the project's patch series and configuration fragments, read by clip/core
KERNEL_MOUNT = "/build/kernel-patches"
KCONFIG_MOUNT = "/build/clipbuild/kconfig.py"
SET_ROOT = "/build/roots/set"  # the ROOT (and SYSROOT) of the set inside the build root


@dataclass(frozen=True)
class EmergeOptions:
    species: str
    dist: str
    part: str
    atoms: tuple[str, ...]
    config: dict[str, str] = field(default_factory=dict)  # /etc/portage files, host.conf excepted
    profile_link: str = ""
    overlay: str = OVERLAY
    recipe: dict[str, Any] = field(default_factory=dict)
    kernel_fragments: tuple[str, ...] = ()  # for the core set: the profile's kernel configuration fragments

    @property
    def set_name(self) -> str:
        return f"{self.species}/{self.dist}-{self.part}"


class EmergeSet(StepKind):
    name = "emerge-set"
    version = 2  # 2: SYSROOT=ROOT
    Options = EmergeOptions
    outputs = ("binpkgs/Packages", "root", "packages.json", "portage/make.conf/00-profile.conf")
    tools = ("bwrap",)

    def parse_options(self, options: dict[str, Any]) -> EmergeOptions:
        recipe = dict(options["recipe"])
        recipe["packages"] = tuple(recipe.get("packages", ()))
        return EmergeOptions(**{**options, "atoms": tuple(options["atoms"]), "recipe": recipe,
                                 "kernel_fragments": tuple(options.get("kernel_fragments", ()))})

    def run(self, ctx: StepContext) -> None:
        opts: EmergeOptions = ctx.options
        sdk = buildroot.ensure(Recipe(**opts.recipe), say=ctx.progress)
        overlay = ctx.source(opts.overlay)
        _check_distfiles(ctx.step.id, overlay, opts.species)
        portage_dir = _write_config(ctx.out / "portage", opts)
        for sub in ("binpkgs", "root", "logs"):
            (ctx.out / sub).mkdir()
        (ctx.scratch / "tmp").mkdir()
        mounts = [Mount(portage_dir, "/etc/portage"), Mount(overlay, REPO_PATH),
                  Mount(fetch.store_dir(), "/var/cache/distfiles"),
                  Mount(ctx.out / "binpkgs", "/var/cache/binpkgs", writable=True),
                  Mount(ctx.out / "root", SET_ROOT, writable=True),
                  Mount(ctx.out / "logs", "/var/log/portage", writable=True),
                  Mount(ctx.scratch / "tmp", "/var/tmp", writable=True)]
        # SYSROOT=ROOT: a package's DEPEND (the C library, the libraries it links) is installed into the set's ROOT
        # before it builds, and clip-toolchain.eclass compiles against ${ESYSROOT}, never the build root's glibc.
        env = {"ROOT": SET_ROOT, "SYSROOT": SET_ROOT, "PORTAGE_REPOSITORIES": opts.config["repos.conf/clip.conf"]}
        extra: dict[str, str] = {}
        for step_id, (mount, variable) in RENDERED_TREES.items():  # jails, trust store: clip-jails, clip-keys
            if step_id in ctx.inputs:
                tree = ctx.inputs[step_id] / "tree"
                mounts.append(Mount(tree, mount))
                env[variable] = mount
                extra[step_id] = tree_digest(list(tree.rglob("*")), tree)
        if opts.kernel_fragments:  # the kernel's patches, fragments and checker, for clip-kernel.eclass
            patches = ctx.source(KERNEL_DIR)
            compiler_cache = compiler_cache_dir()  # ccache: how fast, never what (not keyed)
            compiler_cache.mkdir(parents=True, exist_ok=True)
            mounts += [Mount(patches, KERNEL_MOUNT), Mount(KCONFIG, KCONFIG_MOUNT),
                       Mount(compiler_cache, CCACHE_DIR, writable=True)]
            env.update({"CLIP_KERNEL_DIR": KERNEL_MOUNT, "CLIP_KERNEL_FRAGMENTS": " ".join(opts.kernel_fragments),
                        "CLIP_KCONFIG": KCONFIG_MOUNT})
            extra["kernel"] = " ".join([tree_digest(list(patches.rglob("*")), patches),
                                        sha256_file(KCONFIG), *opts.kernel_fragments])
        emerge = Emerge(sdk, mounts, env)
        plan = _key_packages(emerge, opts, overlay, sdk, extra)
        pulled = _pull(ctx, plan)
        seeded = _seed(plan, ctx.out / "binpkgs")
        if seeded:
            sdk.run(["emaint", "--fix", "binhost"], mounts, env)
        reasons = _reasons(ctx, plan, seeded, pulled, opts.set_name)
        scale = scaleout.from_env() if reasons else scaleout.ScaleOut()  # nothing to compile: no relay, no tools
        with offload.offload(scale, local_jobs(), ctx.progress) as way_out:
            try:
                seconds, counts = _emerge_counted(ctx, emerge, opts, len(plan), way_out)
            finally:
                _store_new_binpkgs(ctx.out / "binpkgs", plan, seeded, opts.set_name)
        _write_report(ctx.out / "packages.json", plan, reasons, seconds, pulled)
        if counts:
            (ctx.out / COMPILES).write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
            for line in offload.summary(counts) + offload.problems(counts):
                ctx.progress(line)


def _pull(ctx: StepContext, plan: list[binpkgs.PackageKey]) -> binhost.Pulled | None:
    """With a binhost in the run's settings: the packages the local store lacks and the binhost has under the
    same key, downloaded and verified into the local store (here, in clipbuild's process: emerge's sandbox
    stays without network)."""
    if not ctx.settings.get("binhost"):
        return None
    remote = binhost.Remote.parse(ctx.settings["binhost"])
    return binhost.pull(plan, remote, ctx.scratch / "binhost", ctx.progress)


def _reasons(ctx: StepContext, plan: list[binpkgs.PackageKey], seeded: set[str], pulled: binhost.Pulled | None,
             set_name: str) -> dict[str, str]:
    """Why each package not seeded from the store is built (a binhost's refusal first); said as progress."""
    reasons = {}
    for pkg in plan:
        if pkg.cpv not in seeded:
            refusal = pulled.why_not(pkg.cpv) if pulled else ""
            reasons[pkg.cpv] = "; ".join(filter(None, [refusal, binpkgs.why_rebuilt(pkg, set_name)]))
    fetched = f", {len(pulled.fetched)} of them fetched from the binhost" if pulled else ""
    ctx.progress(f"{len(plan)} packages: {len(seeded)} from the package store{fetched}, {len(reasons)} to build")
    for cpv, reason in reasons.items():
        ctx.progress(f"to build: {cpv} ({reason})")
    return reasons


COMPILES = "compiles.json"


def local_jobs() -> int:
    return len(os.sched_getaffinity(0))


def _emerge_counted(ctx: StepContext, emerge: Emerge, opts: EmergeOptions, total: int,
                    way_out: offload.Offload | None) -> tuple[dict[str, float], dict[str, Any]]:
    """The set's emerge, through the distcc hosts and ccache remote when configured; its seconds per package and
    the counts of where its compiles went (none without distcc hosts or a compiler cache)."""
    cached = any(m.dest == CCACHE_DIR for m in emerge.mounts)
    if way_out is not None:
        (ctx.out / "portage" / "make.conf" / "91-scale-out.conf").write_text(
            "# How fast, not what: not part of any cache key (clipbuild build --distcc/--ccache-remote).\n"
            + way_out.make_conf)
        emerge = replace(emerge, mounts=[*emerge.mounts, *way_out.mounts], env={**emerge.env, **way_out.env},
                         usr_lib=way_out.usr_lib, prefix=way_out.prefix)

    def ccache_stats() -> dict[str, int]:
        env = {**emerge.env, "CCACHE_DIR": CCACHE_DIR}
        return offload.ccache_counters(lambda argv: emerge.sdk.run(argv, emerge.mounts, env).stdout) if cached else {}

    before = ccache_stats()
    seconds = _emerge(ctx, emerge, opts, total)
    if way_out is None and not cached:
        return seconds, {}
    after = ccache_stats()
    if way_out is None:
        return seconds, {"ccache": offload.ccache_delta(before, after)}
    return seconds, way_out.counts(ctx.out / "logs", before, after)


def compiler_cache_dir() -> Path:
    """The kernel build's ccache folder: $CLIPBUILD_CCACHE, else ~/.cache/clipbuild/ccache."""
    return Path(os.environ["CLIPBUILD_CCACHE"]) if os.environ.get("CLIPBUILD_CCACHE") else cache_dir() / "ccache"


def _check_distfiles(step_id: str, overlay: Path, species: str) -> None:
    problems = fetch.missing_or_bad(fetch.read_manifests(overlay).values())
    if problems:
        raise StepError(step_id, "distfiles are missing or wrong; builds never download",
                        detail=[f"  {dist.name}: {why}" for dist, why in problems],
                        hint=f"run clipbuild fetch {species}")


def _write_config(target: Path, opts: EmergeOptions) -> Path:
    for relative, content in {**opts.config, "make.conf/90-host.conf": host_conf()}.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (target / "make.profile").symlink_to(opts.profile_link)
    return target


# The overlay's profiles/ files that describe the overlay without changing what any package build produces: the
# list of valid categories and the descriptions of USE flags. Adding a category or describing a flag rebuilds
# nothing; the profile's make.defaults, package.* files, eapi and the rest still key every package.
PROFILE_BOOKKEEPING = ("profiles/categories", "profiles/use.desc")


def profile_digest(overlay: Path) -> str:
    """The digest of the overlay's profiles/ that keys every package (PROFILE_BOOKKEEPING left out)."""
    files = [p for p in (overlay / "profiles").rglob("*")
             if p.relative_to(overlay).as_posix() not in PROFILE_BOOKKEEPING]
    return tree_digest(files, overlay)


def _key_packages(emerge: Emerge, opts: EmergeOptions, overlay: Path, sdk: BuildRoot,
                  extra: dict[str, str]) -> list[binpkgs.PackageKey]:
    """Each package's key; `extra` digests (the rendered jails, the trust store) count only for packages
    inheriting the eclass clip-<name>, so a jail change rebuilds clip-jails and a CRL change clip-update-keys,
    nothing else."""
    items = emerge.merge_list(opts.atoms)
    meta = emerge.metadata([i.cpv for i in items])
    shared = {
        "profile": profile_digest(overlay),
        "make_conf": _build_digest(opts.config["make.conf/00-profile.conf"]),
        "package_config": _build_digest("".join(
            v for k, v in sorted(opts.config.items()) if k.startswith("package."))),
        "build_root": sdk.key,
    }
    keys: dict[str, str] = {}
    plan = []
    for item in items:
        deps = build_deps(meta[item.cpv], item.use, [i.cpv for i in items])
        category = item.cpv.split("/", 1)[0]
        pn = binpkgs.pn_of(item.cpv)
        components = binpkgs.package_components(item.cpv, list(item.use), overlay / category / pn, overlay,
                                                meta[item.cpv]["inherited"], shared,
                                                {d: keys[d] for d in deps if d in keys})
        components["pn"] = pn
        for name, digest in extra.items():
            if f"clip-{name}" in meta[item.cpv]["inherited"]:
                components[name] = digest
        pkg = binpkgs.PackageKey(item.cpv, components)
        keys[item.cpv] = pkg.key
        plan.append(pkg)
    return plan


# make.conf lines that do not change what a package build produces: comments; USE, which enters each package's
# key as its own effective flags; CLIP's DEB_* packaging variables, read when the .deb is made, never by an
# ebuild's build phases. So a package shared by several sets or species is built once.
_NOT_BUILD_INPUTS = ("#", "USE=", "DEB_")


def _build_digest(text: str) -> str:
    kept = "\n".join(line for line in text.splitlines() if not line.startswith(_NOT_BUILD_INPUTS))
    return hashlib.sha256(kept.encode()).hexdigest()


def _seed(plan: list[binpkgs.PackageKey], pkgdir: Path) -> set[str]:
    """Put every binpkg the store has for this plan into PKGDIR; returns their CPVs."""
    seeded = set()
    for pkg in plan:
        stored = binpkgs.lookup(pkg)
        if stored is None:
            continue
        target = pkgdir / pkg.category / pkg.components["pn"] / f"{pkg.pf}-1.gpkg.tar"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(stored, target)
        except OSError:
            shutil.copyfile(stored, target)
        seeded.add(pkg.cpv)
    return seeded


def _emerge(ctx: StepContext, emerge: Emerge, opts: EmergeOptions, total: int) -> dict[str, float]:
    """Runs the set's emerge; returns the seconds each package took, from its "Emerging" line to the next
    package's (or the end): fetch-free unpack, build, binpkg and merge."""
    started: dict[str, float] = {}

    def event(what: str, n: int, count: int, cpv: str) -> None:
        if what in ("Emerging", "Emerging binary"):
            verb = "building" if what == "Emerging" else "installing binpkg of"
            ctx.progress(f"[{n}/{count}] {verb} {cpv}")
            started[cpv] = time.monotonic()

    try:
        emerge.build(opts.atoms, event, ctx.log)
        return _durations(started, time.monotonic())
    except ToolError as exc:
        failure = parse_failure(exc)
        if failure is None:
            raise StepError(ctx.step.id, "emerge failed before building any package",
                            detail=exc.lines()[1:], sandbox=exc.sandbox) from None
        relative = failure.log.removeprefix("/var/log/portage/")
        tail = log_tail(ctx.out / "logs" / relative)
        raise StepError(ctx.step.id, f"{failure.cpv} failed in the {failure.phase} phase",
                        detail=[f"  last {len(tail)} lines of its log:", *(f"    {t}" for t in tail)],
                        output_log=f"logs/{relative}" if relative else "", sandbox=exc.sandbox) from None


def _durations(started: dict[str, float], end: float) -> dict[str, float]:
    """Each package's seconds, from its start to the next one's start (the last: to `end`)."""
    order = sorted(started.items(), key=lambda item: item[1])
    ends = [t for _, t in order[1:]] + [end]
    return {cpv: round(stop - start, 1) for (cpv, start), stop in zip(order, ends, strict=True)}


def _store_new_binpkgs(pkgdir: Path, plan: list[binpkgs.PackageKey], seeded: set[str], set_name: str) -> None:
    """Keep every binpkg built by this run in the store, even when a later package failed."""
    for pkg in plan:
        if pkg.cpv in seeded:
            binpkgs.remember(pkg, set_name)
            continue
        built = sorted((pkgdir / pkg.category / pkg.components["pn"]).glob(f"{pkg.pf}-*.gpkg.tar"))
        if built:
            binpkgs.save(pkg, built[-1], set_name)


def _write_report(path: Path, plan: list[binpkgs.PackageKey], reasons: dict[str, str],
                  seconds: dict[str, float], pulled: binhost.Pulled | None = None) -> None:
    """packages.json: each package's status: built (here), reused (from the local store) or fetched (from the
    binhost, then installed from the local store), why it was built, its seconds in emerge."""
    fetched = set(pulled.fetched) if pulled else set()
    rows = [{"cpv": pkg.cpv, "key": pkg.key, "status": _status(pkg.cpv, reasons, fetched),
             "reason": reasons.get(pkg.cpv, ""), "seconds": seconds.get(pkg.cpv, 0.0)} for pkg in plan]
    path.write_text(json.dumps(rows, indent=2) + "\n")


def _status(cpv: str, reasons: dict[str, str], fetched: set[str]) -> str:
    return "built" if cpv in reasons else "fetched" if cpv in fetched else "reused"


def _tree_sources(project: Project, relative: str) -> tuple[SourceFile, ...]:
    files = sorted(p for p in (project.root / relative).rglob("*") if p.is_file())
    return tuple(SourceFile(p.relative_to(project.root).as_posix(), sha256_file(p)) for p in files)


def overlay_sources(project: Project) -> tuple[SourceFile, ...]:
    return _tree_sources(project, OVERLAY)


def kernel_sources(project: Project) -> tuple[SourceFile, ...]:
    """kernel-patches/ and the fragment checker: what the core set's kernel build reads besides the overlay."""
    return (*_tree_sources(project, KERNEL_DIR), SourceFile("clipbuild:kconfig.py", sha256_file(KCONFIG)))


def plan_build(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    recipe = settings.buildroot or asdict(buildroot.DEFAULT_RECIPE)
    sources = overlay_sources(project)
    steps = []
    for dist, part, pset in profile.packages.sets():
        config = render(profile, dist, part, pset)
        files = {k: v for k, v in config.files.items() if k != "make.conf/90-host.conf"}
        options = EmergeOptions(profile.species, dist, part, pset.atoms, files, config.profile_link,
                                OVERLAY, recipe)
        core = (dist, part) == ("clip", "core")
        reads = (((JAILS,) if profile.jails else ()) + (KEYS,)) if core else ()
        if core:
            options = replace(options, kernel_fragments=profile.kernel.fragments)
        step_sources = sources + kernel_sources(project) if core else sources
        steps.append(EmergeSet.step(f"build/{dist}-{part}", options, inputs=reads, sources=step_sources,
                                    description=f"emerge {' '.join(pset.atoms)} into ROOT ({dist}/{part})"))
    return steps
