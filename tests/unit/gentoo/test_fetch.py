"""Distfiles: Manifest parsing, verification, mirrors, and failures that say what to do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clipbuild.core import errors
from clipbuild.core.errors import InputError
from clipbuild.gentoo import fetch


def _manifest_line(name: str, data: bytes) -> str:
    return (f"DIST {name} {len(data)} BLAKE2B {hashlib.blake2b(data).hexdigest()} "
            f"SHA512 {hashlib.sha512(data).hexdigest()}\n")


@pytest.fixture
def overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "proj" / "overlays" / "clip"
    (root / "app-clip" / "tool").mkdir(parents=True)
    (root / "app-clip" / "tool" / "Manifest").write_text(_manifest_line("tool-1.0.tar.gz", b"good bytes"))
    return root


def test_the_shipped_overlay_declares_busybox(project):
    dists = fetch.read_manifests(project.root / "overlays" / "clip")
    busybox = dists["busybox-1.35.0.tar.bz2"]
    assert busybox.size == 2480624 and set(busybox.hashes) == {"BLAKE2B", "SHA512"}


def test_malformed_manifest_line_is_named(overlay):
    (overlay / "app-clip" / "tool" / "Manifest").write_text("DIST tool-1.0.tar.gz big SHA512 00\n")
    with pytest.raises(InputError, match=r"clip/app-clip/tool/Manifest:1: malformed DIST line"):
        fetch.read_manifests(overlay)


def test_fetch_from_a_directory_mirror_verifies_and_stores(overlay, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tool-1.0.tar.gz").write_bytes(b"good bytes")
    dists = fetch.read_manifests(overlay).values()
    assert fetch.fetch(dists, [str(mirror)], tmp_path, say=lambda m: None) == ["tool-1.0.tar.gz"]
    assert (fetch.store_dir() / "tool-1.0.tar.gz").read_bytes() == b"good bytes"
    assert fetch.fetch(dists, [str(mirror)], tmp_path, say=lambda m: None) == []  # already there
    assert fetch.missing_or_bad(dists) == []


def test_wrong_content_is_refused_and_the_next_mirror_tried(overlay, tmp_path):
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()
    (bad / "tool-1.0.tar.gz").write_bytes(b"evil bytes")
    (good / "tool-1.0.tar.gz").write_bytes(b"good bytes")
    dists = fetch.read_manifests(overlay).values()
    fetch.fetch(dists, ["dir:bad", "dir:good"], tmp_path, say=lambda m: None)
    assert (fetch.store_dir() / "tool-1.0.tar.gz").read_bytes() == b"good bytes"


def test_no_mirror_has_it_lists_every_attempt(overlay, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tool-1.0.tar.gz").write_bytes(b"evil")
    with pytest.raises(errors.FetchError) as exc:
        fetch.fetch(fetch.read_manifests(overlay).values(), ["dir:bad", "dir:nowhere", "ftp:x"], tmp_path,
                    say=lambda m: None)
    text = "\n".join(exc.value.lines())
    assert "could not fetch tool-1.0.tar.gz" in text
    assert "store: missing" in text
    assert "dir:bad: wrong content: size 4, Manifest says 10" in text
    assert "dir:nowhere: not there" in text and "ftp:x: unknown mirror kind 'ftp'" in text
    assert not (fetch.store_dir() / "tool-1.0.tar.gz").exists()


def test_a_tampered_store_file_is_detected(overlay, tmp_path):
    fetch.store_dir().mkdir(parents=True)
    (fetch.store_dir() / "tool-1.0.tar.gz").write_bytes(b"evil bytes")  # same size, other bytes
    [(_dist, why)] = fetch.missing_or_bad(fetch.read_manifests(overlay).values())
    assert why.startswith("wrong content: BLAKE2B ")


def test_a_build_refuses_to_start_without_its_distfiles(overlay):
    from clipbuild.core.errors import StepError
    from clipbuild.stages.build import _check_distfiles

    with pytest.raises(StepError) as exc:
        _check_distfiles("build/clip-core", overlay, "client")
    assert exc.value.lines() == [
        "step build/clip-core failed: distfiles are missing or wrong; builds never download",
        "  tool-1.0.tar.gz: missing",
        "  hint: run clipbuild fetch client",
    ]
