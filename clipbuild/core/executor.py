"""Run a BuildPlan: chained cache keys, atomic commits, resume, and why a step re-ran.

Work directory layout (docs/architecture.md):

    objects/<key>/manifest.json   what went into the key, the outputs and their digests, the time taken
    objects/<key>/out/            the step's output, never modified once committed
    objects/<key>/log.txt         the step's log
    steps/<species>/<step id>     symlink to the object of the step's latest successful run
    failed/<species>/<step id>/   output and log of the step's last failed run, for inspection
    .lock                         one clipbuild run per work directory at a time

A step's key is a SHA-256 over its kind, the kind's code version, its options, its inputs' keys and its source
files' digests, so keys chain: a change re-runs exactly the steps downstream of it. A step builds in
objects/.tmp-<key>-<pid>/ and is renamed into place only when complete; a run killed at any point leaves every
committed object and every steps/ link as they were, and the next run removes the leftovers.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clipbuild import __version__
from clipbuild.core.digest import canonical_json, key_of, sha256_file
from clipbuild.core.errors import CacheError, ClipbuildError, StepError
from clipbuild.core.plan import BuildPlan, Step, StepContext, StepKind, required_tools
from clipbuild.core.run import require

MANIFEST = "manifest.json"
CHEAP_DIGEST = 16 << 20  # declared outputs up to this size are re-hashed before reuse; larger ones size-checked


@dataclass(frozen=True)
class StepStatus:
    """A step's state before running: its key, whether it is cached, and why it must run otherwise."""

    step_id: str
    key: str
    cached: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    step_id: str
    key: str
    status: str  # "cached", "ran" or "failed"
    seconds: float
    reason: str


def key_components(step: Step, version: int, input_keys: Mapping[str, str]) -> dict[str, Any]:
    return {
        "kind": step.kind,
        "version": version,
        "options": step.options,
        "inputs": {name: input_keys[name] for name in step.inputs},
        "sources": {src.path: src.sha256 for src in step.sources},
    }


class Reporter(Protocol):
    """What the executor says while it runs a plan (clipbuild.core.report writes it for people or CI). The
    bodies here say nothing, so `Silent` is the reporter that reports nothing."""

    def plan_started(self, plan: BuildPlan, to_run: int) -> None:
        """A run starts: the plan, and how many of its steps are not cached."""

    def step_started(self, index: int, total: int, step: Step, status: StepStatus) -> None:
        """Step `index` of `total` is looked at: cached, or about to run (`status.reason` says why)."""

    def step_progress(self, step: Step, message: str) -> None:
        """A running step says what it is doing."""

    def step_finished(self, index: int, total: int, step: Step, outcome: Outcome) -> None:
        """A step was reused or ran."""

    def plan_finished(self, outcomes: list[Outcome]) -> None:
        """Every step is done."""


class Silent(Reporter):
    """The reporter of an executor given none."""


class ObjectSource(Protocol):
    """Where committed step objects of other machines can be had (clipbuild.gentoo.stepobjects: a binhost). The
    executor asks it for a step's key before running the step, then checks what it got itself."""

    where: str  # said in the step's outcome: "fetched from <where>"

    def fetch(self, step: Step, key: str, into: Path, scratch: Path) -> bool:
        """Unpack the object of `key` into the folder `into` (absent on entry), `scratch` for downloads; False
        when the source has no such object; raises ClipbuildError when it has one but cannot deliver it."""


class Executor:
    """Runs plans in one work directory, with the step kinds of `kinds` (clipbuild.stages.pipeline.STEP_KINDS
    for the real pipeline)."""

    def __init__(self, workdir: Path, kinds: Mapping[str, type[StepKind]], reporter: Reporter | None = None,
                 project_root: Path | None = None, on_failure: Callable[[Step, ClipbuildError], None] | None = None,
                 settings: Mapping[str, str] | None = None, sources: Iterable[ObjectSource] = ()):
        self.workdir = workdir
        self.project_root = project_root or Path.cwd()
        self.kinds = kinds
        self.reporter = reporter or Silent()
        self.on_failure = on_failure  # called when a step fails, while its output and scratch are still in place
        self.objects = workdir / "objects"
        self.settings = dict(settings or {})  # StepContext.settings of every step run: how fast, never what
        self.sources = list(sources)  # asked, in order, for a step's object before it runs here

    # -- keys and explanations -------------------------------------------------------------------------

    def components(self, plan: BuildPlan) -> dict[str, dict[str, Any]]:
        """Key components of every step, in plan order."""
        keys: dict[str, str] = {}
        out = {}
        for step in plan.steps:
            comps = key_components(step, self._kind(step).version, keys)
            keys[step.id] = key_of(comps)
            out[step.id] = comps
        return out

    def status(self, plan: BuildPlan) -> list[StepStatus]:
        """For each step: cached or not, and why it would run (`clipbuild plan --explain`)."""
        result = []
        declared = {step.id: step.outputs for step in plan.steps}
        for step_id, comps in self.components(plan).items():
            key = key_of(comps)
            cached = (self.objects / key / MANIFEST).is_file() or (self.objects / key).is_dir()
            damage = damaged(self.objects / key, declared[step_id]) if cached else None
            if damage:
                reason = f"its cached output is damaged ({damage})"
            else:
                reason = "cached" if cached else self._why(self._link(plan.species, step_id), comps)
            result.append(StepStatus(step_id, key, cached and not damage, reason))
        return result

    @staticmethod
    def _why(link: Path, comps: Mapping[str, Any]) -> str:
        if not link.is_symlink():
            return "never built"
        previous = _read_manifest(link)
        if previous is None:
            return "its previous output is no longer in the cache"
        return explain_change(previous.get("components", {}), comps)

    # -- running ---------------------------------------------------------------------------------------

    def run(self, plan: BuildPlan) -> list[Outcome]:
        """Run every step whose key is not cached; raise StepError on the first failure."""
        require(*required_tools(plan, self.kinds))
        with self._locked():
            self._remove_leftovers()
            outcomes = []
            statuses = self.status(plan)
            keys = {s.step_id: s.key for s in statuses}
            self.reporter.plan_started(plan, sum(not s.cached for s in statuses))
            for index, (step, status) in enumerate(zip(plan.steps, statuses, strict=True), 1):
                self.reporter.step_started(index, len(plan.steps), step, status)
                if status.cached:
                    self._point_link(self._link(plan.species, step.id), status.key)
                    outcome = Outcome(step.id, status.key, "cached", 0.0, status.reason)
                else:
                    outcome = (self._fetch(plan.species, step, status, keys)
                               or self._execute(plan.species, step, status, keys))
                outcomes.append(outcome)
                self.reporter.step_finished(index, len(plan.steps), step, outcome)
            self.reporter.plan_finished(outcomes)
            return outcomes

    def output(self, species: str, step_id: str) -> Path:
        """The output folder of the latest successful run of a species' step."""
        link = self._link(species, step_id)
        if not link.is_symlink():
            raise CacheError(f"step {step_id} of {species} has no output in {self.workdir} yet")
        return link.resolve() / "out"

    def _execute(self, species: str, step: Step, status: StepStatus, keys: Mapping[str, str]) -> Outcome:
        kind = self._kind(step)()
        self._discard(self.objects / status.key)
        tmp = self.objects / f".tmp-{status.key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "out").mkdir(parents=True)
        (tmp / "scratch").mkdir()
        ctx = StepContext(step=step, options=kind.parse_options(step.options),
                          inputs={name: self.objects / keys[name] / "out" for name in step.inputs},
                          out=tmp / "out", log_path=tmp / "log.txt", scratch=tmp / "scratch",
                          project_root=self.project_root, settings=self.settings,
                          progress=lambda message: self.reporter.step_progress(step, message))
        ctx.log_path.touch()
        started = time.monotonic()
        try:
            kind.run(ctx)
            missing = [name for name in step.outputs if not (ctx.out / name).exists()]
            if missing:
                raise StepError(step.id, f"it did not produce {', '.join(missing)}")
        except ClipbuildError as exc:
            if self.on_failure is not None:
                self.on_failure(step, exc)
            kept = self._keep_failed(species, step.id, tmp)
            if isinstance(exc, StepError):
                exc.log, exc.kept = str(kept / "log.txt"), str(kept / "out")
                raise
            raise StepError(step.id, exc.lines()[0], detail=exc.lines()[1:],
                            log=str(kept / "log.txt"), kept=str(kept / "out")) from exc
        except BaseException:
            self._keep_failed(species, step.id, tmp)
            raise
        seconds = time.monotonic() - started
        shutil.rmtree(tmp / "scratch")
        manifest = {
            "step": step.id,
            "key": status.key,
            "components": key_components(step, kind.version, keys),
            "outputs": _digests(ctx.out, ctx.digests),
            "sizes": _sizes(ctx.out),
            "seconds": round(seconds, 3),
            "clipbuild": __version__,
        }
        _write_json(tmp / MANIFEST, manifest)
        self._commit(tmp, self.objects / status.key)
        self._point_link(self._link(species, step.id), status.key)
        return Outcome(step.id, status.key, "ran", seconds, status.reason)

    def _fetch(self, species: str, step: Step, status: StepStatus, keys: Mapping[str, str]) -> Outcome | None:
        """The step's object taken from the first source that has it and passes `refused`, or None: it runs."""
        wanted = key_components(step, self._kind(step).version, keys)
        for source in self.sources:
            tmp = self.objects / f".tmp-fetch-{status.key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "scratch").mkdir(parents=True)
            try:
                if not source.fetch(step, status.key, tmp / "object", tmp / "scratch"):
                    continue
                problem = refused(tmp / "object", status.key, wanted, step.outputs)
            except ClipbuildError as exc:
                problem = " ".join(exc.lines())
            else:
                if problem is None:
                    self._discard(self.objects / status.key)
                    self._commit(tmp / "object", self.objects / status.key)
                    self._point_link(self._link(species, step.id), status.key)
                    self.reporter.step_progress(step, f"fetched from {source.where} (key {status.key[:16]})")
                    return Outcome(step.id, status.key, "cached", 0.0, f"fetched from {source.where}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self.reporter.step_progress(step, f"{source.where}: object {status.key} refused: {problem}; "
                                              "the step runs here")
        return None

    def _commit(self, tmp: Path, final: Path) -> None:
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / MANIFEST).is_file():  # committed meanwhile by an identical run
                shutil.rmtree(tmp)
                return
            raise
        _fsync_dir(final.parent)

    def check_store(self) -> list[tuple[str, str | None, list[str]]]:
        """Every committed object, fully re-hashed: (key, what is wrong or None, the species/step links that
        point at it and would re-run)."""
        users: dict[str, list[str]] = {}
        steps = self.workdir / "steps"
        for link in sorted(steps.glob("*/**/*")) if steps.is_dir() else []:
            if link.is_symlink():
                users.setdefault(Path(os.readlink(link)).name, []).append(link.relative_to(steps).as_posix())
        return [(obj.name, damaged(obj, full=True), users.get(obj.name, []))
                for obj in sorted(self.objects.glob("[!.]*")) if obj.is_dir()]

    def _discard(self, final: Path) -> None:
        """Remove a damaged object before its step re-runs (renamed away first, so it is never half there)."""
        if final.exists():
            doomed = self.objects / f".tmp-damaged-{final.name}-{os.getpid()}"
            os.rename(final, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def _keep_failed(self, species: str, step_id: str, tmp: Path) -> Path:
        kept = self.workdir / "failed" / species / step_id
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, kept)
        return kept

    def _point_link(self, link: Path, key: str) -> None:
        """Atomically point steps/<species>/<id> at objects/<key>."""
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.objects / key, link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            return
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def _link(self, species: str, step_id: str) -> Path:
        return self.workdir / "steps" / species / step_id

    def _kind(self, step: Step) -> type[StepKind]:
        try:
            return self.kinds[step.kind]
        except KeyError:
            raise CacheError(f"step {step.id}: unknown step kind '{step.kind}'") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot use {self.workdir} as work directory: {exc.strerror}") from None
        with (self.workdir / ".lock").open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                raise CacheError(f"another clipbuild run is using {self.workdir} "
                                 f"({lock.read().strip() or 'pid unknown'})") from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}\n")
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        """Remove what killed runs left: half-built objects and dangling link temporaries."""
        for tmp in self.objects.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        steps = self.workdir / "steps"
        if steps.is_dir():
            for tmp in steps.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def explain_change(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """What differs between two sets of key components, in words."""
    reasons = []
    if previous.get("kind") != current["kind"]:
        reasons.append(f"step kind changed ({previous.get('kind')} -> {current['kind']})")
    elif previous.get("version") != current["version"]:
        reasons.append(f"code of {current['kind']} changed (version {previous.get('version')} -> "
                       f"{current['version']})")
    for path, old, new in _diff(previous.get("options", {}), current["options"], "options"):
        reasons.append(f"{path} changed ({_short(old)} -> {_short(new)})")
    for name in sorted(set(previous.get("inputs", {})) | set(current["inputs"])):
        if previous.get("inputs", {}).get(name) != current["inputs"].get(name):
            reasons.append(f"input {name} changed")
    old_sources, new_sources = previous.get("sources", {}), current["sources"]
    for path in sorted(set(old_sources) | set(new_sources)):
        if path not in old_sources:
            reasons.append(f"new source {path}")
        elif path not in new_sources:
            reasons.append(f"source {path} no longer used")
        elif old_sources[path] != new_sources[path]:
            reasons.append(f"source {path} changed")
    return "; ".join(reasons) or "cache key format changed"


def _diff(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _diff(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{path}.{key}")
    elif old != new:
        yield path, old, new


_ABSENT = "(absent)"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_manifest(object_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((object_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def refused(obj: Path, key: str, wanted: Mapping[str, Any], declared: Iterable[str]) -> str | None:
    """Why an object from elsewhere may not be committed under `key` for a step whose own components are
    `wanted`, or None: its manifest must record the key and components that hash to it, those components must be
    the step's (the object was made from these very inputs), and its outputs must be what the manifest says."""
    manifest = _read_manifest(obj)
    if manifest is None:
        return f"{MANIFEST} is missing or unreadable"
    recorded = manifest.get("components")
    if manifest.get("key") != key or not isinstance(recorded, dict) or key_of(recorded) != key:
        actual = key_of(recorded) if isinstance(recorded, dict) else "none"
        return f"its manifest's components hash to {actual}, not to the key {key}"
    if canonical_json(recorded) != canonical_json(wanted):
        return f"its components are not this step's ({explain_change(recorded, wanted)})"
    missing = [name for name in declared if not (obj / "out" / name).exists()]
    if missing:
        return f"it lacks the step's outputs {', '.join(missing)}"
    unlisted = sorted(_listing(obj / "out") - set(manifest.get("outputs") or {}))
    if unlisted:
        return f"out/{unlisted[0]} is not in its manifest"
    damage = damaged(obj, full=True)
    return f"its outputs are not what its manifest says: {damage}" if damage else None


def damaged(obj: Path, declared: Iterable[str] = (), *, full: bool = False) -> str | None:
    """What is wrong with a committed object, or None: its manifest must read, every output it recorded must
    be there with its recorded size, and each declared output small enough (or every file, with `full`) must
    still have its recorded digest."""
    manifest = _read_manifest(obj)
    if manifest is None or not isinstance(manifest.get("outputs"), dict):
        return f"{MANIFEST} is missing or unreadable"
    sizes = manifest.get("sizes", {})
    out = obj / "out"
    for rel, recorded in manifest["outputs"].items():
        path = out / rel
        if recorded.startswith("symlink:"):
            if not path.is_symlink() or os.readlink(path) != recorded.removeprefix("symlink:"):
                return f"out/{rel} is not the symlink it was"
            continue
        if path.is_symlink() or not path.is_file():
            return f"out/{rel} is missing"
        size = path.stat().st_size
        if rel in sizes and size != sizes[rel]:
            return f"out/{rel} has {size} bytes, {sizes[rel]} when committed"
        check = full or (any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in declared)
                         and size <= CHEAP_DIGEST)
        if check and "sha256:" + sha256_file(path) != recorded:
            return f"out/{rel} was modified since it was committed"
    return None


def _listing(root: Path) -> set[str]:
    """Every file and symlink under `root`, relative to it."""
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_symlink() or not path.is_dir()}


def _sizes(root: Path) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_size
            for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink()}


def _digests(root: Path, known: Mapping[str, str]) -> dict[str, str]:
    """Every output file's digest; `known` ones (the step hashed them already, e.g. a disk image) are reused."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "symlink:" + os.readlink(path)
        elif path.is_file():
            out[rel] = "sha256:" + (known.get(rel) or sha256_file(path))
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a finished object to disk before it becomes visible, so a crash cannot commit a torn one."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))
