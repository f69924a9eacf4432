"""The command line as users meet it: help, output formats, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clipbuild import __version__
from clipbuild.cli.context import open_debug_shell
from clipbuild.core.errors import StepError
from clipbuild.core.plan import Step
from clipbuild.core.run import run
from clipbuild.core.sandbox import Sandbox
from tests.conftest import ROOT


def test_version(clipbuild):
    result = clipbuild("--version")
    assert (result.code, result.out) == (0, f"clipbuild, version {__version__}\n")


def test_help_teaches_where_to_start(clipbuild):
    result = clipbuild("--help")
    assert result.code == 0
    for command in ("profile", "plan", "run", "clipbuild profile show client --resolved"):
        assert command in result.out


def test_profile_list(clipbuild):
    result = clipbuild("profile", "list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == ["base", "4.5.0"] and lines[0].endswith("(abstract)")
    assert lines[1].startswith("client") and lines[1].endswith("(inherits base)")
    data = json.loads(clipbuild("profile", "list", "--json").out)
    assert [d["species"] for d in data] == ["base", "client", "gateway"]


def test_show_resolved_says_what_client_inherits_from_base(clipbuild):
    result = clipbuild("profile", "show", "client", "--resolved")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "# client: resolved from profiles/base.yaml, profiles/client.yaml"
    by_text = {line.split("#")[0].strip(): line.rsplit("# ", 1)[-1] for line in lines[2:] if "# " in line}
    assert by_text["version: 4.5.0"] == "profiles/base.yaml:5"
    assert by_text["- update"].startswith("profiles/base.yaml:")
    assert by_text["- rm_h"].startswith("profiles/client.yaml:")
    assert by_text["size: 3GiB"].startswith("profiles/client.yaml:")


def test_show_resolved_json(clipbuild):
    data = json.loads(clipbuild("profile", "show", "gateway", "--resolved", "--json").out)
    assert data["species"] == "gateway" and data["disk"]["size"] == 2 << 30
    assert data["origins"]["disk.partitions[log].grow"].startswith("profiles/gateway.yaml:")


def test_show_as_written(clipbuild):
    result = clipbuild("profile", "show", "gateway")
    assert result.out == (ROOT / "profiles" / "gateway.yaml").read_text()
    assert json.loads(clipbuild("profile", "show", "gateway", "--json").out)["inherits"] == "base"


def test_unknown_species_is_bad_input(clipbuild):
    result = clipbuild("profile", "show", "clinet")
    assert result.code == 2
    assert result.err == "error: profiles/clinet.yaml: no species 'clinet' (did you mean 'client'?)\n"


def test_usage_errors_exit_2(clipbuild):
    assert clipbuild("no-such-command").code == 2
    assert clipbuild("plan").code == 2
    result = clipbuild("run", "client", "--step", "nope")
    assert result.code == 2 and "no step nope in the plan of client" in result.err


def test_validate_ok(clipbuild):
    result = clipbuild("profile", "validate")
    assert result.code == 0
    assert result.out.splitlines() == ["ok  profiles/base.yaml", "ok  profiles/client.yaml",
                                       "ok  profiles/gateway.yaml"]


def test_plan_json_and_explain(clipbuild, tmp_path):
    workdir = str(tmp_path / "work")
    plan = json.loads(clipbuild("plan", "client", "--json").out)
    assert plan["species"] == "client" and plan["steps"][0]["kind"] == "resolve-profile"
    before = json.loads(clipbuild("--workdir", workdir, "plan", "client", "--explain", "--json").out)
    assert [s["reason"] for s in before["status"]] == ["never built"] * 16
    assert clipbuild("--workdir", workdir, "run", "client", "--step", "profile").code == 0
    after = json.loads(clipbuild("--workdir", workdir, "plan", "client", "--explain", "--json").out)
    assert after["status"][0]["reason"] == "cached"
    assert [s["reason"] for s in after["status"][1:]] == ["never built"] * 15


def test_run_reports_progress_as_json_lines(clipbuild, tmp_path):
    result = clipbuild("--workdir", str(tmp_path), "run", "gateway", "--step", "profile", "--json")
    events = [json.loads(line) for line in result.err.splitlines()]
    assert [e["event"] for e in events] == ["plan", "step-start", "step", "done"]
    assert events[2]["status"] == "ran" and events[2]["reason"] == "never built"


def test_a_failed_run_exits_1(clipbuild, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = clipbuild("--workdir", str(blocker), "run", "client", "--step", "profile")
    assert result.code == 1
    assert result.err == f"error: cannot use {blocker} as work directory: Not a directory\n"


def test_installed_console_script():
    script = Path(sys.executable).with_name("clipbuild")
    result = run([script, "profile", "validate", "profiles/client.yaml"], cwd=ROOT)
    assert result.stdout == "ok  profiles/client.yaml\n"
    bad = run([script, "profile", "show", "nope"], cwd=ROOT, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_an_unknown_build_root_is_bad_input(clipbuild):
    result = clipbuild("--sdk", "0123abc", "plan", "client")
    assert result.code == 2 and result.err.startswith("error: no build root 0123abc (cached: ")


def test_an_unexpected_error_is_one_line_with_the_traceback_in_a_log(clipbuild, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path))

    def broken(_project):
        raise FileNotFoundError(2, "No such file or directory", "/somewhere/client.img")

    monkeypatch.setattr("clipbuild.cli.profile.list_profiles", broken)
    result = clipbuild("profile", "list")
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[0] == "error: unexpected FileNotFoundError: [Errno 2] No such file or directory: " \
                       "'/somewhere/client.img'"
    log = lines[1].split("traceback: ")[1].split(" (printed")[0]
    assert "Traceback" in Path(log).read_text() and Path(log).parent == tmp_path / "logs"
    assert "Traceback" not in result.err
    assert "Traceback" in clipbuild("-vv", "profile", "list").err


def test_debug_shell_opens_in_the_failed_command_s_sandbox(tmp_path, capsys):
    marker = tmp_path / "opened"
    sandbox = Sandbox(("sh", "-c", f"echo \"$0\" > {marker}"))  # the shell program lands in $0
    step = Step("build/clip-core", "emerge-set", {})
    open_debug_shell(step, StepError(step.id, "emerge failed", sandbox=sandbox))
    assert marker.read_text() == "bash\n"
    assert "--debug-shell: a shell where it ran" in capsys.readouterr().err
    open_debug_shell(step, StepError(step.id, "it did not produce root"))
    assert "failed outside the build root: no shell to open" in capsys.readouterr().err


def test_a_release_plan_embeds_the_release_trust_store(clipbuild, tmp_path):
    from clipbuild.signing import pki

    pki.init(tmp_path / "pki", b"cli test only")
    policy = str(tmp_path / "pki" / "policy.yaml")
    plan = json.loads(clipbuild("plan", "client", "--release", "--policy", policy, "--json").out)
    keys = next(s for s in plan["steps"] if s["id"] == "keys")
    assert keys["options"]["mode"] == "release" and keys["options"]["policy"] == policy
    assert next(s for s in plan["steps"] if s["id"] == "build/clip-core")["inputs"] == ["jails", "keys"]
    image = next(s for s in plan["steps"] if s["id"] == "image")
    assert image["options"]["policy"] == policy
    dev = json.loads(clipbuild("plan", "client", "--json").out)
    assert next(s for s in dev["steps"] if s["id"] == "keys")["options"]["mode"] == "development"
    # No release policy, and a policy without --release, are refused before anything runs.
    missing = clipbuild("build", "client", "--release", "--offline")
    assert missing.code == 2 and "a release needs a trust policy: give --policy FILE" in missing.err
    assert clipbuild("build", "client", "--policy", policy).code == 2


def test_machine_identities_are_on_the_command_line(clipbuild):
    """`pki ipsec` sits beside the signing PKI, `provision` at the top (tests/unit/signing/test_ipsec.py)."""
    assert "ipsec" in clipbuild("pki", "--help").out
    ipsec = clipbuild("pki", "ipsec", "--help").out
    assert all(f"  {command} " in ipsec for command in ("init", "issue", "revoke", "crl", "list"))
    assert "provision" in clipbuild("--help").out
    help_text = clipbuild("provision", "--help").out
    assert "--conf KEY=VALUE" in help_text and "--dev-pki" in help_text
