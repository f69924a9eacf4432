"""Property-based tests: the package reader and verifier reject random and mutated archives cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core import errors
from clipbuild.formats import ar, clipsig
from clipbuild.signing import pki, signer, trust

from .test_signing import SECRET, VECTORS

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> tuple[bytes, trust.Policy]:
    directory: Path = tmp_path_factory.mktemp("fuzz") / "pki"
    pki.init(directory, SECRET)

    def key(name: str) -> signer.SigningKey:
        return signer.load_signing_key(directory / f"{name}.key", directory / f"{name}.pem", SECRET)

    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    data = signer.sign_bytes(signer.sign_bytes(unsigned, "developer", key("developer-1")), "controller",
                             key("controller-1"))
    return data, trust.load_policy(directory / "policy.yaml")


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused(signed, blob):
    verdict = trust.verify_bytes(blob, signed[1])
    assert not verdict.ok and verdict.reasons


@FUZZ
@given(st.binary(max_size=2048))
def test_random_archives_parse_or_fail_with_arerror(blob):
    for data in (blob, ar.MAGIC + blob):
        try:
            members = ar.parse(data)
        except errors.ArError:
            continue
        assert all(m.data_offset + m.size <= len(data) for m in members)


@FUZZ
@given(st.data())
def test_mutated_packages_never_crash_and_signed_bytes_never_pass(signed, data):
    package, policy = signed
    start = data.draw(st.integers(0, len(package) - 1))
    length = data.draw(st.integers(0, 64))
    replacement = data.draw(st.binary(max_size=64))
    mutated = package[:start] + replacement + package[start + length:]
    verdict = trust.verify_bytes(mutated, policy)
    if mutated != package and verdict.ok:
        # Only meaningless header fields of the last member may change unnoticed, and nothing else moves.
        assert len(mutated) == len(package)
        assert mutated[:clipsig.read_layout(package).ctrl.signed_length] == \
            package[:clipsig.read_layout(package).ctrl.signed_length]
