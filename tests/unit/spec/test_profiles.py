"""The shipped species profiles: valid, following the original species, and frozen as golden plans."""

from __future__ import annotations

import json
import os

import pytest

from clipbuild.spec.checks import SLOTTED_MOUNTS
from clipbuild.spec.layout import minimum_disk_size
from clipbuild.spec.profile import list_profiles, resolve, validate_paths
from clipbuild.stages.pipeline import compile_plan
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "data" / "golden"
UPDATE = os.environ.get("CLIPBUILD_UPDATE_GOLDEN") == "1"


def test_every_shipped_profile_is_valid(project):
    assert validate_paths(project, project.species_files()) == {
        "profiles/base.yaml": [], "profiles/client.yaml": [], "profiles/gateway.yaml": []}


def test_species_list(project):
    summary = {s.species: (s.abstract, s.inherits) for s in list_profiles(project)}
    assert summary == {"base": (True, ()), "client": (False, ("base",)), "gateway": (False, ("base",))}


def test_client_is_clip_rm(project):
    client = resolve(project, "client")
    assert client.jails == ("update", "admin", "audit", "user", "ike", "x11", "rm_h", "rm_b")
    assert {"core-rm", "clip-x11", "hardened"} <= set(client.portage.use)
    assert [(d, p) for d, p, _ in client.packages.sets()] == [
        ("clip", "core"), ("clip", "apps"), ("rm", "core"), ("rm", "apps")]
    assert client.packages.rm.core.atoms == ("clip-conf/rm-core-conf",)
    assert {"/vservers/rm_h", "/vservers/rm_b"} <= {p.mount for p in client.disk.partitions}


def test_gateway_is_clip_gtw(project):
    gateway = resolve(project, "gateway")
    assert "rm_h" not in gateway.jails and "clip-gtw" in gateway.portage.use
    assert gateway.packages.rm is None
    grow = [p.name for p in gateway.disk.partitions if p.grow]
    assert grow == ["log"]  # the gateway gives its free space to logs, the client to homes


@pytest.mark.parametrize("species", ["client", "gateway"])
def test_layout_follows_clip(project, species):
    prof = resolve(project, species)
    slotted = {p.mount for p in prof.disk.partitions if p.slots}
    assert slotted == set(SLOTTED_MOUNTS)
    root = next(p for p in prof.disk.partitions if p.mount == "/")
    assert root.verity and "ro" in root.options
    for part in prof.disk.partitions:
        if part.mount in ("/home", "/var/log"):
            assert {"nosuid", "nodev", "noexec"} <= set(part.options)
    assert minimum_disk_size(prof.disk) <= prof.disk.size


MACHINE_VALUES = {"sha256": "<sha256>", "policy_digest": "<sha256>", "policy": "<development PKI>/policy.yaml",
                  "signers": "<development PKI fingerprints>"}


def _without_digests(data):
    """Golden plans keep every option and source path, not the sources' digests (ebuild edits would churn),
    nor what differs between machines (the development PKI's fingerprints and place)."""
    if isinstance(data, dict):
        return {k: MACHINE_VALUES[k] if k in MACHINE_VALUES and v is not None else _without_digests(v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [_without_digests(v) for v in data]
    return data


@pytest.mark.parametrize("species", ["client", "gateway"])
def test_plan_matches_golden(project, species):
    """The resolved plan, frozen. After an intended change: CLIPBUILD_UPDATE_GOLDEN=1 make test."""
    plan = _without_digests(compile_plan(resolve(project, species), project).to_dict())
    path = GOLDEN / f"{species}.plan.json"
    text = json.dumps(plan, indent=2, sort_keys=True) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run CLIPBUILD_UPDATE_GOLDEN=1 make test"
    assert json.loads(path.read_text()) == plan
