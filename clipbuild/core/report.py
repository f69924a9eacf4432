"""Progress with two faces: a line per step for people, JSON lines for CI (`--json`). Implements the
executor's `Reporter` protocol."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from clipbuild.core.executor import Outcome, StepStatus
from clipbuild.core.plan import BuildPlan, Step


class StreamReporter:
    """Progress written to a stream (none: nothing written), as text or as JSON lines."""

    def __init__(self, stream: IO[str] | None = None, *, as_json: bool = False):
        self.stream = stream
        self.as_json = as_json
        self._started = time.monotonic()

    def _emit(self, text: str, **event: Any) -> None:
        if self.stream is None:
            return
        line = json.dumps(event, sort_keys=True) if self.as_json else text
        self.stream.write(line + "\n")
        self.stream.flush()

    def plan_started(self, plan: BuildPlan, to_run: int) -> None:
        self._started = time.monotonic()
        self._emit(f"{plan.species} {plan.version}: {len(plan.steps)} steps, {to_run} to run",
                   event="plan", species=plan.species, version=plan.version, steps=len(plan.steps),
                   to_run=to_run)

    def step_started(self, index: int, total: int, step: Step, status: StepStatus) -> None:
        if not status.cached:
            self._emit(f"[{index}/{total}] {step.id}: running ({status.reason})", event="step-start",
                       step=step.id, kind=step.kind, reason=status.reason)

    def step_progress(self, step: Step, message: str) -> None:
        self._emit(f"    {step.id}: {message}", event="progress", step=step.id, message=message)

    def step_finished(self, index: int, total: int, step: Step, outcome: Outcome) -> None:
        fetched = f" ({outcome.reason})" if outcome.reason.startswith("fetched from") else ""
        text = (f"[{index}/{total}] {step.id}: cached{fetched}" if outcome.status == "cached"
                else f"[{index}/{total}] {step.id}: {outcome.status} in {outcome.seconds:.1f}s")
        self._emit(text, event="step", step=step.id, kind=step.kind, status=outcome.status,
                   seconds=round(outcome.seconds, 3), key=outcome.key, reason=outcome.reason)

    def plan_finished(self, outcomes: list[Outcome]) -> None:
        ran = sum(o.status == "ran" for o in outcomes)
        cached = sum(o.status == "cached" for o in outcomes)
        seconds = time.monotonic() - self._started
        self._emit(f"done in {seconds:.1f}s: {ran} ran, {cached} cached", event="done", ran=ran,
                   cached=cached, seconds=round(seconds, 3))


def stderr_reporter(as_json: bool) -> StreamReporter:
    return StreamReporter(sys.stderr, as_json=as_json)
