"""The profile stage: the resolved profile frozen as `profile.json` (step `profile`), what every later stage
and the image manifest cite."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.spec.model import Profile


@dataclass(frozen=True)
class _ProfileOptions:
    profile: dict[str, Any] = field(default_factory=dict)


class ResolveProfile(StepKind):
    """Freeze the resolved profile as profile.json: what every later stage and the image manifest cite."""

    name = "resolve-profile"
    version = 1
    Options = _ProfileOptions
    outputs = ("profile.json",)

    def run(self, ctx: StepContext) -> None:
        text = json.dumps(ctx.options.profile, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (ctx.out / "profile.json").write_text(text, encoding="utf-8")


def plan_profile(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    data = profile.to_dict()
    data.pop("files")
    return [ResolveProfile.step("profile", _ProfileOptions(data),
                                description=f"resolved profile of {profile.species}")]
