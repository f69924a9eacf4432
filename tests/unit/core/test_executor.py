"""The executor, with step kinds defined here: chained keys, re-running exactly what is downstream of a
change, saying why, atomic commits that survive a kill, failures that keep the previous output."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipbuild.core.errors import CacheError, StepError, ToolError
from clipbuild.core.executor import Executor
from clipbuild.core.plan import BuildPlan, SourceFile, Step, StepContext, StepKind
from clipbuild.core.run import run

RUNS: list[str] = []


@dataclass(frozen=True)
class WriteOptions:
    text: str
    hang_flag: str = ""  # when set: write partial output, create this file, then hang


class Write(StepKind):
    name = "test-write"
    version = 1
    Options = WriteOptions
    outputs = ("data.txt",)

    def run(self, ctx: StepContext) -> None:
        RUNS.append(ctx.step.id)
        ctx.log(f"writing {ctx.options.text!r}")
        if ctx.options.hang_flag:
            (ctx.out / "data.txt").write_text("partial")
            Path(ctx.options.hang_flag).touch()
            time.sleep(600)
        (ctx.out / "data.txt").write_text(ctx.options.text)


@dataclass(frozen=True)
class ConcatOptions:
    separator: str = "+"


class Concat(StepKind):
    """Joins its inputs' data.txt and its source files, in order."""

    name = "test-concat"
    version = 1
    Options = ConcatOptions
    outputs = ("data.txt",)

    def run(self, ctx: StepContext) -> None:
        RUNS.append(ctx.step.id)
        parts = [(path / "data.txt").read_text() for path in ctx.inputs.values()]
        parts += [Path(src.path).read_text() for src in ctx.step.sources]
        (ctx.out / "data.txt").write_text(ctx.options.separator.join(parts))


class Fail(StepKind):
    name = "test-fail"
    version = 1
    Options = ConcatOptions
    outputs = ("data.txt",)

    def run(self, ctx: StepContext) -> None:
        (ctx.out / "data.txt").write_text("half")
        ctx.log("about to fail")
        run(["sh", "-c", "echo 'no space left on device' >&2; exit 3"])


class Forgetful(StepKind):
    name = "test-forgetful"
    version = 1
    Options = ConcatOptions
    outputs = ("data.txt", "other.txt")

    def run(self, ctx: StepContext) -> None:
        (ctx.out / "data.txt").write_text("only one")


KINDS = {k.name: k for k in (Write, Concat, Fail, Forgetful)}


def make_plan(a: str = "A", b: str = "B", *, hang: str = "", sources: tuple[SourceFile, ...] = (),
              extra: tuple[Step, ...] = ()) -> BuildPlan:
    steps = (
        Write.step("a", WriteOptions(a, hang)),
        Write.step("b", WriteOptions(b)),
        Concat.step("c", ConcatOptions(), inputs=("a",), sources=sources),
        Concat.step("d", ConcatOptions("|"), inputs=("c", "b")),
        *extra,
    )
    return BuildPlan("test", "1", steps)


@pytest.fixture
def executor(tmp_path: Path) -> Executor:
    RUNS.clear()
    return Executor(tmp_path / "work", KINDS)


def data(executor: Executor, step_id: str) -> str:
    return (executor.output("test", step_id) / "data.txt").read_text()


def test_first_run_runs_everything_second_run_nothing(executor):
    outcomes = executor.run(make_plan())
    assert [o.status for o in outcomes] == ["ran"] * 4
    assert data(executor, "d") == "A|B"
    RUNS.clear()
    assert [o.status for o in executor.run(make_plan())] == ["cached"] * 4
    assert RUNS == []


def test_a_changed_option_reruns_exactly_the_steps_downstream(executor):
    executor.run(make_plan())
    RUNS.clear()
    plan = make_plan(a="A2")
    assert plan.downstream("a") == ["c", "d"]
    outcomes = {o.step_id: o for o in executor.run(plan)}
    assert RUNS == ["a", "c", "d"]
    assert outcomes["b"].status == "cached"
    assert outcomes["a"].reason == "options.text changed (A -> A2)"
    assert outcomes["c"].reason == "input a changed"
    assert outcomes["d"].reason == "input c changed"
    assert data(executor, "d") == "A2|B"


def test_explain_before_running(executor):
    executor.run(make_plan())
    statuses = {s.step_id: s for s in executor.status(make_plan(b="B2"))}
    assert statuses["a"].cached and statuses["a"].reason == "cached"
    assert statuses["b"].reason == "options.text changed (B -> B2)"
    assert statuses["d"].reason == "input b changed"
    assert statuses["c"].cached


def test_never_built_and_back_to_a_previous_key_is_cached(executor):
    assert {s.reason for s in executor.status(make_plan())} == {"never built"}
    executor.run(make_plan())
    executor.run(make_plan(a="other"))
    RUNS.clear()
    executor.run(make_plan())  # the first objects are still in the cache
    assert RUNS == []
    assert data(executor, "d") == "A|B"


def test_a_changed_source_file_reruns_its_step(executor, tmp_path):
    src = tmp_path / "patch.txt"
    src.write_text("one")
    executor.run(make_plan(sources=(SourceFile.of(src, str(src)),)))
    src.write_text("two")
    RUNS.clear()
    outcomes = {o.step_id: o for o in executor.run(make_plan(sources=(SourceFile.of(src, str(src)),)))}
    assert RUNS == ["c", "d"]
    assert outcomes["c"].reason == f"source {src} changed"
    assert data(executor, "c") == "A+two"


def test_a_new_code_version_reruns_the_kind(executor, tmp_path):
    executor.run(make_plan())

    class Concat2(Concat):
        version = 2

    bumped = Executor(executor.workdir, {**KINDS, "test-concat": Concat2})
    RUNS.clear()
    outcomes = {o.step_id: o for o in bumped.run(make_plan())}
    assert RUNS == ["c", "d"]
    assert outcomes["c"].reason == "code of test-concat changed (version 1 -> 2)"


def _run_in_child(workdir: Path, flag: str) -> None:
    Executor(workdir, KINDS).run(make_plan(a="new", hang=flag))


def test_a_step_killed_midway_leaves_the_previous_output(executor, tmp_path):
    executor.run(make_plan(a="good"))
    good_object = executor.output("test", "a").parent
    flag = tmp_path / "started"
    child = multiprocessing.get_context("fork").Process(target=_run_in_child, args=(executor.workdir, str(flag)))
    child.start()
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert child.is_alive() and time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    # The half-written object exists only under its temporary name; nothing points at it.
    leftovers = list((executor.workdir / "objects").glob(".tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "out" / "data.txt").read_text() == "partial"
    assert executor.output("test", "a").parent == good_object
    assert data(executor, "a") == "good" and data(executor, "d") == "good|B"
    new_key = executor.status(make_plan(a="new"))[0].key
    assert not (executor.workdir / "objects" / new_key).exists()
    # The next run cleans up and completes.
    executor.run(make_plan(a="new"))
    assert data(executor, "d") == "new|B"
    assert not list((executor.workdir / "objects").glob(".tmp-*"))


def test_a_failed_step_keeps_previous_output_and_its_own_for_inspection(executor):
    fail = Fail.step("e", ConcatOptions(), inputs=("d",))
    executor.run(make_plan())
    with pytest.raises(StepError) as exc:
        executor.run(make_plan(a="A2", extra=(fail,)))
    err = exc.value
    assert err.step_id == "e"
    assert str(err) == "step e failed: sh failed"
    assert "  exit status: 3" in err.detail and "    no space left on device" in err.detail
    assert err.detail[0].startswith("  command: sh -c ")
    failed = executor.workdir / "failed" / "test" / "e"
    assert (failed / "out" / "data.txt").read_text() == "half"
    assert "about to fail" in (failed / "log.txt").read_text()
    assert err.log == str(failed / "log.txt")
    # Steps before it committed; the failed one has no steps/ link.
    assert data(executor, "d") == "A2|B"
    with pytest.raises(CacheError):
        executor.output("test", "e")


def test_a_failed_step_is_shown_to_on_failure_while_its_output_is_in_place(tmp_path):
    seen = []

    def on_failure(step, error):
        (out,) = (tmp_path / "work" / "objects").glob(".tmp-*/out")
        seen.append((step.id, error.lines()[0], (out / "data.txt").read_text()))

    plan = BuildPlan("test", "1", (Fail.step("e", ConcatOptions()),))
    with pytest.raises(StepError):
        Executor(tmp_path / "work", KINDS, on_failure=on_failure).run(plan)
    assert seen == [("e", "sh failed", "half")]


def test_a_step_must_produce_its_declared_outputs(executor):
    plan = BuildPlan("test", "1", (Forgetful.step("f", ConcatOptions()),))
    with pytest.raises(StepError, match=r"step f failed: it did not produce other.txt"):
        executor.run(plan)


def test_one_run_per_workdir(executor):
    executor.workdir.mkdir(parents=True)
    with (executor.workdir / ".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 4242\n")
        lock.flush()
        with pytest.raises(CacheError, match=r"another clipbuild run is using .* \(pid 4242\)"):
            executor.run(make_plan())


def test_plans_refuse_inputs_that_come_later_or_twice():
    with pytest.raises(ValueError, match="reads \\['a'\\], which no earlier step produces"):
        BuildPlan("t", "1", (Concat.step("c", ConcatOptions(), inputs=("a",)),))
    with pytest.raises(ValueError, match="two steps have the id 'a'"):
        BuildPlan("t", "1", (Write.step("a", WriteOptions("x")), Write.step("a", WriteOptions("y"))))


def test_manifest_records_inputs_outputs_and_time(executor):
    import json

    executor.run(make_plan())
    manifest = json.loads((executor.output("test", "c").parent / "manifest.json").read_text())
    assert manifest["components"]["kind"] == "test-concat"
    assert manifest["components"]["inputs"] == {"a": executor.status(make_plan())[0].key}
    assert manifest["outputs"]["data.txt"].startswith("sha256:")
    assert manifest["seconds"] >= 0


def test_missing_host_tools_stop_the_run_before_any_step(executor, monkeypatch):
    class NeedsTools(Write):
        tools = ("mksquashfs",)

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolError, match="'mksquashfs' is not installed"):
        Executor(executor.workdir, {**KINDS, "test-write": NeedsTools}).run(make_plan())
    assert RUNS == []


def _object(executor: Executor, step_id: str) -> Path:
    return executor.output("test", step_id).parent


@pytest.mark.parametrize("damage, reason", [
    (lambda out: (out / "data.txt").unlink(), "its cached output is damaged (out/data.txt is missing)"),
    (lambda out: (out / "data.txt").write_text(""), "its cached output is damaged (out/data.txt has 0 bytes, "
                                                      "1 when committed)"),
    (lambda out: (out / "data.txt").write_text("Z"), "its cached output is damaged (out/data.txt was modified "
                                                       "since it was committed)"),
    (lambda out: (out.parent / "manifest.json").write_text("{"), "its cached output is damaged (manifest.json is "
                                                                   "missing or unreadable)"),
])
def test_a_damaged_object_is_reported_and_its_step_reruns(executor, damage, reason):
    executor.run(make_plan())
    damage(_object(executor, "a") / "out")
    RUNS.clear()
    outcomes = {o.step_id: o for o in executor.run(make_plan())}
    assert RUNS == ["a"]  # same key again: everything downstream stays cached
    assert outcomes["a"].status == "ran" and outcomes["a"].reason == reason
    assert data(executor, "d") == "A|B" and data(executor, "a") == "A"
    assert [o.status for o in executor.run(make_plan())] == ["cached"] * 4


def test_cache_check_rehashes_every_object_and_names_the_steps_that_would_rerun(executor):
    executor.run(make_plan())
    assert all(problem is None for _key, problem, _users in executor.check_store())
    big = _object(executor, "d") / "out" / "data.txt"
    big.write_text("A|X")  # same size: only a full re-hash sees it
    [(key, problem, users)] = [r for r in executor.check_store() if r[1]]
    assert key == _object(executor, "d").name and problem == "out/data.txt was modified since it was committed"
    assert users == ["test/d"]


def test_cli_cache_check_exits_1_on_damage(tmp_path, clipbuild):
    executor = Executor(tmp_path / "work", KINDS)
    executor.run(make_plan())
    result = clipbuild("--workdir", str(tmp_path / "work"), "cache", "check")
    assert result.code == 0 and "4 objects checked" in result.out and ", 0 damaged" in result.out
    (executor.output("test", "b") / "data.txt").unlink()
    result = clipbuild("--workdir", str(tmp_path / "work"), "cache", "check")
    assert result.code == 1 and "out/data.txt is missing; would re-run: test/b" in result.out
