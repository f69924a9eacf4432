"""Fuzzing the trust policy loader and the ar reader: any input ends in a verdict or one of clipbuild's own
errors (ClipbuildError), never another exception."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ClipbuildError
from clipbuild.formats import ar
from clipbuild.signing import pki, trust

from .test_signing import SECRET, VECTORS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FILES = ["developer-ca.pem", "controller-ca.pem", "developer-ca.crl.pem", "controller-ca.crl.pem",
         "developer-1.pem", "policy.yaml", "missing.pem", "", ".", "/", "../pki"]
KEYS = ["ca", "crl", "allow_no_crl", "subject", "subject_ere", "min_validity_days", "other"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(FILES)
           | st.text(max_size=20) | st.sampled_from(["[[:alnum:]]+", "(", "\\d", "[", "CN=.*", "a{99999}"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4),
                      max_leaves=12)
roles = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("policyfuzz") / "pki"
    pki.init(directory, SECRET)
    return directory


def _load(folder: Path, text: bytes) -> None:
    path = folder / "fuzzed.yaml"
    path.write_bytes(text)
    with contextlib.suppress(ClipbuildError):
        trust.load_policy(path)


@FUZZ
@given(st.dictionaries(st.sampled_from(["developer", "controller", "x"]), roles | values, max_size=3))
def test_policy_structures_load_or_fail_cleanly(folder, data):
    _load(folder, yaml.safe_dump(data).encode())


@FUZZ
@given(st.fixed_dictionaries({"developer": roles, "controller": roles}))
def test_two_role_policies_load_or_fail_cleanly(folder, data):
    _load(folder, yaml.safe_dump(data).encode())


@FUZZ
@given(st.binary(max_size=512))
def test_policy_bytes_load_or_fail_cleanly(folder, blob):
    _load(folder, blob)
    _load(folder, (folder / "policy.yaml").read_bytes()[:len(blob) % 600] + blob)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["", "package"]))
def test_ar_reader_raises_only_its_own_errors(blob, what):
    real = (VECTORS / "vectortest_1.0_all.good.deb").read_bytes()
    for data in (blob, ar.MAGIC + blob, real[:len(blob)] + blob, real[:60 * (len(blob) % 8) + 8] + blob):
        with contextlib.suppress(ClipbuildError):
            ar.parse(data, what=what or "archive")


@FUZZ
@given(st.text(alphabet="[]:^$\\()|*+?{}.,=-_ abcCN19alnumdigit", max_size=30))
def test_ere_patterns_translate_or_fail_cleanly(pattern):
    """gen-crypt's subject patterns: translated to Python and compiled, or refused as an InputError."""
    from clipbuild.signing import subjects

    with contextlib.suppress(ClipbuildError):
        subjects.compile_ere(pattern, "fuzz").search("C=FR, O=ANSSI, CN=TEST-DEVELOPER-1")
