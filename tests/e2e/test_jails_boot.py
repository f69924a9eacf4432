"""The jails' proof catches a broken manager: a client whose clip-jail was built with one isolation step taken
out (a copy of its source edited by the test, never a switch in the shipped code) boots, starts its jails, and
fails the boot check naming the jail and the rule, from the probe inside the jail and from the host's own
reading of what each jail reported. The render-time check cannot see either: the jail files are unchanged."""

from __future__ import annotations

import json

import pytest

from tests.e2e.support import Project

MANAGER = "overlays/clip/app-clip/clip-jail/files/clip-jail.c"
SABOTAGE = {
    # The jail init no longer makes a network namespace: every jail shares the machine's network.
    "namespaces": ("(j->nsopts & O_NETNS ? CLONE_NEWNET : 0)", "0"),
    # The bounding set is left whole: capset still limits the effective set, but a jail could regain any
    # capability by executing a file.
    "capabilities": ("TRY(prctl(PR_CAPBSET_DROP, c, 0, 0, 0),", "TRY(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) * c,"),
}


@pytest.fixture(scope="module")
def project(e2e_project: Project, client_build: dict) -> Project:
    return e2e_project


@pytest.mark.parametrize("rule", sorted(SABOTAGE))
def test_a_manager_that_skips_an_isolation_step_fails_the_boot_check(project, rule):
    source = project.root / MANAGER
    original = source.read_text()
    old, new = SABOTAGE[rule]
    assert original.count(old) == 1
    species = f"broken-{rule}"
    (project.root / "profiles" / f"{species}.yaml").write_text(
        "inherits: client\ndescription: the client, with a jail manager missing one isolation step\n")
    try:
        source.write_text(original.replace(old, new))
        image = project.image(species)
    finally:
        source.write_text(original)
    result = project.clipbuild("vm", image["image"], "--check", "--json", "--timeout", "240")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    check = json.loads(result.stdout)
    assert not check["ok"]
    failed = {j["name"]: j for j in check["jails"] if j["state"] == "FAILED"}
    assert "update" in failed, check["jails"]  # the first jail started
    assert f"rule={rule}" in failed["update"]["detail"], failed["update"]
    rules = {r["rule"]: r["result"] for r in failed["update"]["rules"]}
    assert rules[rule] == "FAILED" and rules["root-readonly"] == "ok", rules
    assert f"jail update rule={rule}" in check["marker"] or f"jail update FAILED: rule={rule}" in check["reason"]
    if rule == "namespaces":  # the host's own reading of the ids says the same
        assert "shares its net namespace" in check["reason"] or "rule=namespaces" in check["reason"]
