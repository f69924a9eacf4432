"""Fixtures shared by the signing tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipbuild.signing import pki

from .test_signing import SECRET


@pytest.fixture(scope="module")
def our_pki(tmp_path_factory) -> Path:
    """A PKI made by `pki init`: both CAs, developer-1, controller-1, CRLs, policy.yaml."""
    directory = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(directory, SECRET)
    return directory
