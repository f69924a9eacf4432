"""The two species at work together: a client and a gateway booted side by side on 127.0.0.1 (docs/network.md).
The tunnel comes up by itself, RM_H reaches the private host through it (and the gateway's ESP counters move),
RM_B does not reach it: each machine proves its part on its console, `lab check` reads the proofs."""

from __future__ import annotations

import json

import pytest

from tests.e2e.support import Project


@pytest.fixture(scope="module")
def project(e2e_project: Project, client_image: dict) -> Project:
    e2e_project.image("gateway")
    return e2e_project


def test_rm_h_reaches_the_private_network_only_through_the_gateways_tunnel(project):
    up = project.clipbuild("lab", "up", "client", "gateway", "--lifetime", "900", "--json")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        check = project.clipbuild("lab", "check", "--timeout", "600", "--json")
        assert check.returncode == 0, check.stderr[-3000:] + check.stdout[-3000:]
        found = json.loads(check.stdout)
        machines = {m["name"]: m for m in found["machines"]}
        client, gateway = machines["client"]["proofs"], machines["gateway"]["proofs"]
        assert "CLIP private host 10.99.0.10" in client["RM_H reaches the private host"]
        assert client["RM_B kept off the private network"].startswith("CLIP_LAB rm_b private refused")
        assert "(bytes)" in gateway["ESP traffic through the tunnel"]
        print(f"lab up to a working tunnel and both levels proven: {found['seconds']} s")
    finally:
        down = project.clipbuild("lab", "down")
        assert down.returncode == 0, down.stderr
