"""Human renderings for the CLI: a resolved profile as YAML annotated with where each value came from, and
plans as tables."""

from __future__ import annotations

from typing import Any

import yaml

from clipbuild.core.executor import StepStatus
from clipbuild.core.plan import BuildPlan
from clipbuild.core.sizes import format_size
from clipbuild.spec.model import PROFILE_SCHEMA, Profile
from clipbuild.spec.schema import ListOf, MapOf, Nullable, Size, Struct, Type

COMMENT_COLUMN = 56


def format_resolved(profile: Profile) -> str:
    """The resolved profile as YAML, each value followed by `# file:line` of the file that set it."""
    lines = [f"# {profile.species}: resolved from {', '.join(profile.files)}",
             "# (values without a comment are defaults)"]
    rows: list[tuple[str, str]] = []
    _struct(PROFILE_SCHEMA, profile, "", 0, rows, first_prefix="")
    for text, path in rows:
        origin = profile.origins.get(path)
        if origin is None:
            lines.append(text)
        else:
            lines.append(f"{text.ljust(COMMENT_COLUMN - 1)} # {origin}")
    return "\n".join(lines) + "\n"


def _scalar(type_: Type, value: Any) -> str:
    if isinstance(_unwrap(type_), Size) and isinstance(value, int):
        return format_size(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _unwrap(type_: Type) -> Type:
    return type_.inner if isinstance(type_, Nullable) else type_


def _struct(type_: Struct, obj: Any, path: str, indent: int, rows: list[tuple[str, str]],
            first_prefix: str) -> None:
    pad = " " * indent
    for position, fld in enumerate(type_.fields()):
        prefix = first_prefix if position == 0 and first_prefix else pad
        _value(fld.metadata["schema"], getattr(obj, fld.name), f"{path}.{fld.name}".lstrip("."), fld.name,
               prefix, indent, rows)


def _value(type_: Type, value: Any, path: str, label: str, prefix: str, indent: int,
           rows: list[tuple[str, str]]) -> None:
    inner = _unwrap(type_)
    head = f"{prefix}{label}:"
    if isinstance(inner, Struct) and value is not None:
        rows.append((head, path))
        _struct(inner, value, path, indent + 2, rows, first_prefix="")
    elif isinstance(inner, ListOf) and value:
        rows.append((head, path))
        item_type = _unwrap(inner.item)
        for index, item in enumerate(value):
            name = getattr(item, "name", None)
            sub = f"{path}[{name if isinstance(name, str) else index}]"
            dash = " " * (indent + 2) + "- "
            if isinstance(item_type, Struct):
                _struct(item_type, item, sub, indent + 4, rows, first_prefix=dash)
            else:
                rows.append((dash + _scalar(item_type, item), sub))
    elif isinstance(inner, MapOf) and value:
        rows.append((head, path))
        for key, item in value.items():
            rows.append((f"{' ' * (indent + 2)}{_scalar(inner.key, key)}: {_scalar(inner.value, item)}",
                         f"{path}.{key}"))
    else:
        empty = {tuple: "[]", dict: "{}"}.get(type(value))
        rows.append((f"{head} {empty or _scalar(type_, value)}", path))


def format_plan(plan: BuildPlan, statuses: list[StepStatus] | None = None) -> str:
    lines = [f"plan for {plan.species} {plan.version}: {len(plan.steps)} steps"]
    by_id = {s.step_id: s for s in statuses or []}
    for index, step in enumerate(plan.steps, 1):
        reads = f" <- {', '.join(step.inputs)}" if step.inputs else ""
        lines.append(f"  {index:>2}. {step.id} [{step.kind}]{reads}")
        if step.description:
            lines.append(f"      {step.description}")
        if step.id in by_id:
            status = by_id[step.id]
            state = "cached" if status.cached else f"will run: {status.reason}"
            lines.append(f"      key {status.key[:16]}  {state}")
    return "\n".join(lines) + "\n"


def format_build_summary(species: str, sets: list[dict[str, Any]], explain: bool) -> str:
    """What `clipbuild build` did: per set cached or run, and in a run set, packages built (with why), reused
    from the local store or fetched from a binhost; then one line saying where the packages came from."""
    lines = []
    for entry in sets:
        packages = entry["packages"]
        if entry["status"] == "cached":
            if explain:
                lines.append(f"{entry['step']}: cached, {len(packages)} packages unchanged")
            continue
        for row in packages if explain else ():
            if row["status"] == "built":
                took = f", {row['seconds']:.0f} s" if row.get("seconds") else ""
                lines.append(f"{entry['step']}: {row['cpv']}: built ({row['reason']}{took})")
            else:
                lines.append(f"{entry['step']}: {row['cpv']}: {_ORIGIN_WORDS[row['status']]}")
    origins = build_origins(sets)
    line = (f"{species}: {origins['compiled_here']} compiled here, {origins['local_store']} from the local package "
            f"store, {origins['binhost']} fetched from the binhost, {origins['cached_sets']} in cached sets")
    line += "".join(f", {value} {words}" for key, words in _MEASURED_ORIGINS if (value := origins[key]) is not None)
    return "\n".join([*lines, line]) + "\n"


_ORIGIN_WORDS = {"reused": "reused from the package store", "fetched": "fetched from the binhost"}
# Counted only when a set ran with distcc hosts or a compiler cache (its compiles.json); None otherwise, and the
# summary line leaves them out.
_MEASURED_ORIGINS = (("distcc_compiled", "compiled on distcc hosts"), ("ccache_hits_local", "local ccache hits"),
                     ("ccache_hits_remote", "remote ccache hits"))


def build_origins(sets: list[dict[str, Any]]) -> dict[str, int | None]:
    """Where a build's packages came from: compiled here, the local package store, a binhost, or sets
    cached whole (their packages not looked at again); and where compiles went (distcc hosts, ccache hits), as
    distcc's and ccache's own statistics say, None when no set measured them."""
    counts: dict[str, int | None] = {"compiled_here": 0, "local_store": 0, "binhost": 0, "cached_sets": 0}
    column = {"built": "compiled_here", "reused": "local_store", "fetched": "binhost"}
    for entry in sets:
        for row in entry["packages"]:
            name = "cached_sets" if entry["status"] == "cached" else column[row["status"]]
            counts[name] = (counts[name] or 0) + 1
    measured = [entry["compiles"] for entry in sets if entry.get("compiles")]
    distcc = [c["distcc"] for c in measured if "distcc" in c]
    caches = [c["ccache"] for c in measured if "ccache" in c]
    counts["distcc_compiled"] = sum(row["compiles"] for d in distcc for row in d["hosts"].values()) if distcc \
        else None
    counts["ccache_hits_local"] = sum(c.get("local_hits", 0) for c in caches) if caches else None
    counts["ccache_hits_remote"] = sum(c.get("remote_hits", 0) for c in caches) if caches else None
    return counts
