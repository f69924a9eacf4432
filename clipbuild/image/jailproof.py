"""The jails at boot: which ones a slot starts, and what each proved from inside the booted system.

A slot's root holds the rendered jails (/etc/conf.d/jails: CLIP_JAILS_START in CLIP's order, CLIP_JAILS_IDLE and
CLIP_JAIL_IDLE_<name> for those rendered but not started; /etc/jails/NAME/nsopts). At boot clip-jails starts them
with clip-jail and runs its probe in each; every jail prints `CLIP_JAIL NAME ok pid=N ns=mnt:ID,pid:ID,...
rules=K/K` or `CLIP_JAIL NAME FAILED ...` on the console, and `CLIP_JAIL NAME idle: WHY` for one rendered but not
started. The image manifest lists each slot's jails (`jails`), so the host requires every jail meant to start to
report ok, and checks again what each reported: no two jails share a namespace they are meant to own (mount, IPC,
UTS and cgroup always; PID and network as their nsopts say).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core import beneath
from clipbuild.jails.rules import KERNEL_CAPS

CONF = "etc/conf.d/jails"
VARIABLE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="([^"\n]*)"$', re.M)
CAPS = re.compile(r"CapEff=CapPrm=CapBnd=(?P<mask>[0-9a-f]+) CapAmb=(?P<ambient>[0-9a-f]+)")
ALWAYS_OWN = ("mnt", "ipc", "uts", "cgroup")
LINE = re.compile(r"CLIP_JAIL (?P<name>[a-z0-9_]+) (?P<state>ok|FAILED|idle:?)(?P<rest>.*)$")
NS = re.compile(r"\bns=(?P<ns>\S+)")
RULE = re.compile(r"CLIP_JAIL_RULE (?P<name>[a-z0-9_]+) (?P<rule>[a-z-]+) (?P<result>ok|FAILED|skipped):? ?"
                  r"(?P<detail>.*)$")


@dataclass(frozen=True)
class Expected:
    name: str
    start: bool
    nsopts: tuple[str, ...] = ()
    idle: str = ""
    caps: str = ""  # the bounding set its rendered bcaps give, in hex as /proc/PID/status shows it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "nsopts": list(self.nsopts), "idle": self.idle,
                "caps": self.caps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Expected:
        return cls(str(data["name"]), bool(data["start"]), tuple(data.get("nsopts", ())), str(data.get("idle", "")),
                   str(data.get("caps", "")))


@dataclass
class Report:
    name: str
    state: str  # ok, FAILED, idle
    detail: str
    namespaces: dict[str, str] = field(default_factory=dict)
    rules: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shipped(root: Path) -> list[Expected]:
    """The jails a slot's root starts (in order) or leaves idle, with the namespaces each asks for."""
    if not beneath.exists(root, CONF):
        return []
    values = dict(VARIABLE.findall(beneath.read_text(root, CONF)))
    out = []
    for start, key in ((True, "CLIP_JAILS_START"), (False, "CLIP_JAILS_IDLE")):
        for name in values.get(key, "").split():
            opts = _words(root, f"etc/jails/{name}/nsopts")
            mask = sum(1 << KERNEL_CAPS.index(c.removeprefix("CAP_")) for c in _words(root, f"etc/jails/{name}/bcaps")
                       if c.removeprefix("CAP_") in KERNEL_CAPS)
            out.append(Expected(name, start, opts, values.get(f"CLIP_JAIL_IDLE_{name}", ""), f"{mask:x}"))
    return out


def _words(root: Path, path: str) -> tuple[str, ...]:
    text = beneath.read_text(root, path) if beneath.exists(root, path) else ""
    return tuple(w for line in text.splitlines() if not line.startswith("#") for w in line.split())


def collect(lines: Iterable[str]) -> dict[str, Report]:
    """Every jail's report from console lines (the last one of a jail wins), with its rule lines."""
    reports: dict[str, Report] = {}
    rules: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        rule = RULE.search(line)
        if rule:
            rules.setdefault(rule["name"], []).append({k: rule[k] for k in ("rule", "result", "detail")})
            continue
        found = LINE.search(line)
        if not found:
            continue
        state = found["state"].rstrip(":")
        ns = NS.search(found["rest"])
        namespaces = _ids(ns["ns"]) if ns else {}
        reports[found["name"]] = Report(found["name"], state, found["rest"].strip(), namespaces)
    for name, report in reports.items():
        report.rules = rules.get(name, [])
        if not report.namespaces:  # a FAILED line has no ns=: the namespaces rule's detail has the ids
            detail = next((r["detail"] for r in report.rules if r["rule"] == "namespaces"), "")
            report.namespaces = _ids(detail.split(" ")[0])
    return reports


def _ids(text: str) -> dict[str, str]:
    """`mnt:ID,pid:ID,...` as {kind: ID}."""
    return dict(part.split(":", 1) for part in text.split(",") if ":" in part)


def problems(expected: Iterable[Expected], reports: Mapping[str, Report]) -> list[str]:
    """What keeps the slot's jails from counting as running and proven isolated, one phrase each."""
    out = []
    own: dict[str, dict[str, str]] = {}
    for jail in expected:
        report = reports.get(jail.name)
        if not jail.start:
            continue
        if report is None:
            out.append(f"jail {jail.name} did not report")
            continue
        if report.state != "ok":
            out.append(f"jail {jail.name} {report.state}: {report.detail}")
        # The host's own reading of what the jail reported, whatever its verdict: a broken manager may also
        # have broken the probe's verdict, not the facts it read.
        out += _capabilities(jail, report)
        kinds = ALWAYS_OWN + tuple(k for k in ("pid", "net") if k in jail.nsopts)
        for kind in kinds:
            ident = report.namespaces.get(kind)
            if not ident:
                if report.state == "ok":
                    out.append(f"jail {jail.name} reported no {kind} namespace")
            elif ident in own.setdefault(kind, {}):
                out.append(f"jail {jail.name} shares its {kind} namespace {ident} with jail {own[kind][ident]}")
            else:
                own[kind][ident] = jail.name
    return out


def _capabilities(jail: Expected, report: Report) -> list[str]:
    """The capability sets the probe read, against the bounding set the slot's rendered bcaps give."""
    rule = next((r for r in report.rules if r["rule"] == "capabilities"), None)
    found = CAPS.search(rule["detail"]) if rule else None
    if not jail.caps:  # a manifest from before the jails recorded their bounding set
        return []
    if found is None:
        return [f"jail {jail.name} reported no capability sets"] if report.state == "ok" else []
    if int(found["mask"], 16) != int(jail.caps, 16) or found["ambient"] != "0":
        return [f"jail {jail.name} holds capabilities {found['mask']} (ambient {found['ambient']}), its rendered "
                f"bcaps give {jail.caps}"]
    return []
