"""Property-based tests: the YAML loader and the profile resolver answer any input with issues or a profile,
never with another exception (P10: no traceback, ever). Each test stays under ~10 s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ClipbuildError
from clipbuild.spec import cmdline
from clipbuild.spec.profile import resolve
from clipbuild.spec.yamlnodes import load_file, load_text

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Pieces of YAML that reach the parser's and the converter's corners, joined at random.
TOKENS = ["{", "}", "[", "]", ": ", ":", ", ", "\n", "  ", "- ", "? ", "&a ", "*a", "&b ", "*b", "'", '"', "#",
          "|", ">", "\t", "---\n", "...\n", "%YAML 1.1\n", "%TAG !e! tag:e.org,2000:\n", "!e!x ", "!<tag:x> ",
          "!remove ", "!replace ", "!unknown ", "!!python/object/apply:os.system ", "!!python/name:os.system ",
          "!!int ", "!!bool ", "!!float ", "!!null ", "!!str ", "!!binary ", "!!set ", "!!omap ", "!!map ",
          "!!seq ", "!!merge ", "!!timestamp ", "<<", "=", "~", "null", "true", "0x", "0o7", "0b1", "1:2:3",
          "9" * 60, "1e999", ".inf", ".nan", "2024-13-45", "2024-01-01 25:61:61", "\x00", "\x85", "\ufeff",
          "\U0001f600", "inherits", "base", "../../x", "/etc", "disk", "size", "partitions", "name", "boot",
          "cmdline", "root=/dev/sda", "portage", "profile", "../../../../etc", "jails", "version", "4.5.0",
          "timeout", "abstract", "species", "packages", "clip", "core", "2GiB", "9" * 40 + "GiB", "-1"]

yaml_like = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=400), yaml_like)

leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                 st.sampled_from(TOKENS))
data = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(st.sampled_from(TOKENS[60:]) | st.text(max_size=8),
                                                                 inner, max_size=4)),
                    max_leaves=30)
profile_shaped = st.dictionaries(st.sampled_from(["disk", "boot", "portage", "packages", "jails", "kernel",
                                                  "version", "inherits", "signing", "sources", "abstract"]),
                                 data, max_size=5)


def survives(call: Callable[[], Any]) -> Any:
    """`call()`; the project's own errors are fine answers, anything else fails the test."""
    try:
        return call()
    except ClipbuildError as exc:
        return exc


@FAST
@given(any_text)
def test_the_loader_answers_any_text_with_a_node_or_issues(text):
    node, issues = load_text(text, "f.yaml")
    assert node is not None or issues
    for issue in issues:
        assert str(issue).startswith("f.yaml")
    if node is not None:
        node.plain()


@FAST
@given(st.binary(max_size=600))
def test_the_loader_answers_any_bytes(tmp_path, blob):
    path = tmp_path / "f.yaml"
    path.write_bytes(blob)
    node, issues = load_file(path, "f.yaml")
    assert node is not None or issues


@pytest.fixture
def write_child(scratch_with_base):
    def write(text: str):
        scratch_with_base.write("s", text)
        return survives(lambda: resolve(scratch_with_base.project, "s"))

    return write


@SLOW
@given(yaml_like)
def test_resolving_a_child_of_base_written_from_yaml_pieces(write_child, text):
    write_child("inherits: base\n" + text)


@SLOW
@given(profile_shaped)
def test_resolving_a_child_of_base_with_random_values_at_real_keys(write_child, values):
    text = yaml.safe_dump({"inherits": "base", **values}, allow_unicode=True)
    write_child(text)


@FAST
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(["root", "dm-mod", "dm_mod", ".", "=", "-", "_",
                                                                 "verity", "clip", "init", "rw", "ro", "1", "on"]),
                                                max_size=6).map("".join)))
def test_a_kernel_argument_accepted_is_one_of_the_allowlist(argument):
    if cmdline.refusal(argument) is None:
        assert argument.partition("=")[0].replace("-", "_") in cmdline.ALLOWED
