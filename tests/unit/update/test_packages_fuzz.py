"""Fuzzing the Packages index reader: any bytes end in stanzas or a RepositoryError, never another exception."""

from __future__ import annotations

import contextlib
import gzip

from hypothesis import given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ClipbuildError
from clipbuild.update import repository

FUZZ = settings(max_examples=400, deadline=None)
LINES = st.sampled_from(["Package: busybox", "Version: 1.0", "Filename: pool/x.deb", " continued", "\t.", "",
                         "Filename: /etc/passwd", "SHA256: 00", "Package: busybox", ": empty", "x:y", "é: v"])


def _index(raw: bytes) -> None:
    try:
        stanzas = repository.parse_packages(repository.decompress_index(raw, "Packages.gz"), "Packages.gz")
    except ClipbuildError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for s in stanzas for k, v in s.items())


@FUZZ
@given(st.binary(max_size=1024))
def test_random_bytes(blob):
    _index(blob)
    _index(gzip.compress(blob))
    _index(gzip.compress(blob)[:len(blob) // 2])


@FUZZ
@given(st.lists(LINES | st.text(max_size=30), max_size=30))
def test_stanza_like_text(lines):
    _index(gzip.compress("\n".join(lines).encode()))
    with contextlib.suppress(ClipbuildError):
        repository.parse_packages("\n".join(lines), "Packages")
