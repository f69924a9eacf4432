"""The one runner for external programs: missing tools name their Debian package, failures are pasteable."""

from __future__ import annotations

import pytest

from clipbuild.core.errors import ToolError
from clipbuild.core.run import Sandbox, debian_package_for, format_command, host_tools, require, run, run_streaming


def test_output_is_captured_with_a_c_locale():
    result = run(["sh", "-c", 'echo "$LC_ALL"; echo err >&2'])
    assert result.returncode == 0
    assert result.stdout == "C.UTF-8\n" and result.stderr == "err\n"


def test_a_missing_program_names_its_debian_package():
    with pytest.raises(ToolError) as exc:
        run(["sgdisk", "--version"], env={"PATH": "/nonexistent"})
    assert exc.value.lines() == ["required program 'sgdisk' is not installed",
                                 "  hint: install it with: apt-get install gdisk"]


def test_an_unknown_missing_program_says_where_to_declare_it():
    with pytest.raises(ToolError) as exc:
        run(["clipbuild-no-such-tool"])
    assert "add it to clipbuild/host-tools.tsv" in exc.value.hint


def test_require_lists_every_missing_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolError) as exc:
        require("mksquashfs", "veritysetup", "unsquashfs")
    assert exc.value.hint == "install them with: apt-get install cryptsetup-bin squashfs-tools"


def test_a_failure_shows_command_exit_status_and_stderr_tail(tmp_path):
    script = "for i in $(seq 1 50); do echo line$i >&2; done; exit 7"
    with pytest.raises(ToolError) as exc:
        run(["sh", "-c", script], cwd=tmp_path, env={"FOO": "a b"})
    err = exc.value
    assert err.exit_status == 7
    assert err.command == f"cd {tmp_path} && FOO='a b' sh -c '{script}'"
    tail = err.stderr_tail.splitlines()
    assert tail[0] == "line31" and tail[-1] == "line50" and len(tail) == 20


def test_check_false_returns_the_status():
    assert run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_timeout_is_a_tool_error():
    with pytest.raises(ToolError, match=r"did not finish within 0\.2 s"):
        run(["sleep", "5"], timeout=0.2)


def test_format_command_quotes_for_the_shell():
    assert format_command(["echo", "it's"], {"A": "1"}) == "A=1 echo 'it'\"'\"'s'"


def test_host_tools_table_is_well_formed():
    tools = host_tools()
    assert all(t.package and t.purpose for t in tools)
    programs = [t.program for t in tools if t.program != "-"]
    assert len(programs) == len(set(programs)), "a program is listed twice"
    assert debian_package_for("/usr/sbin/mkfs.vfat") == "dosfstools"


def test_run_watch_answers_a_prompt_that_ends_no_line():
    from clipbuild.core.run import run_watch

    seen: list[str] = []
    outcome = run_watch(["sh", "-c", "printf 'Automatic boot in 3 seconds'; read answer; echo \"got $answer\""],
                        lambda line: seen.append(line) or "got" in line, timeout=20,
                        keys=lambda output: b"enter\n" if b"Automatic boot" in output else None)
    assert outcome == ("stopped", None)
    assert seen[-1] == "Automatic boot in 3 secondsgot enter"


def test_a_sandboxed_failure_is_the_program_s_with_the_whole_command_shown():
    sandbox = Sandbox(("env", "-i", "PATH=/usr/bin:/bin"))
    assert run(["sh", "-c", "echo inside"], sandbox=sandbox).stdout == "inside\n"
    with pytest.raises(ToolError) as exc:
        run(["sh", "-c", "echo broken >&2; exit 3"], sandbox=sandbox)
    lines = exc.value.lines()
    assert lines[0] == "sh failed"
    assert lines[1] == "  command: env -i PATH=/usr/bin:/bin sh -c 'echo broken >&2; exit 3'"
    assert "  exit status: 3" in lines and "    broken" in lines
    with pytest.raises(ToolError, match=r"^sh failed$"):
        run_streaming(["sh", "-c", "exit 4"], lambda line: None, sandbox=sandbox)


def test_a_sandbox_that_cannot_start_says_so():
    """bubblewrap reports its own failures as `bwrap: ...`; a wrapper doing the same is named instead."""
    wrapper = Sandbox(("sh", "-c", 'echo "sh: cannot set the sandbox up" >&2; exit 1', "sh"))
    with pytest.raises(ToolError) as exc:
        run(["emerge", "--info"], sandbox=wrapper)
    assert exc.value.lines()[0] == "sh failed to start emerge in its sandbox"


def test_only_the_sandbox_wrapper_must_be_installed_on_the_host():
    with pytest.raises(ToolError, match="required program 'clipbuild-no-such-wrapper' is not installed"):
        run(["sh", "-c", "true"], sandbox=Sandbox(("clipbuild-no-such-wrapper",)))
    assert run(["clipbuild-only-inside"], sandbox=Sandbox(("sh", "-c", "true")), check=False).returncode == 0
