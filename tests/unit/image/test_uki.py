"""Unified kernel images: sections where the stub expects them, reproducible, signed as a whole."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from clipbuild.core.run import run
from clipbuild.image import uki
from clipbuild.signing import secureboot

pytestmark = pytest.mark.skipif(not uki.STUB.is_file() or shutil.which("faketime") is None,
                                reason="systemd-boot-efi and faketime are host packages (make setup)")


def _build(tmp_path: Path, name: str, cmdline: str = "root=/dev/dm-0 ro") -> Path:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(bytes(range(256)) * 400)
    scratch = tmp_path / f"scratch-{name}"
    scratch.mkdir()
    out = tmp_path / f"{name}.efi"
    uki.build(uki.UkiParts(kernel, cmdline, "ID=clip\n"), out, scratch, 1_700_000_000)
    return out


def test_sections_follow_the_stub_page_aligned(tmp_path: Path) -> None:
    listing = run(["objdump", "-h", _build(tmp_path, "a")]).stdout
    found = {name: int(vma, 16) for name, _, vma in uki.SECTION.findall(listing)}
    assert list(found)[-3:] == [".osrel", ".cmdline", ".linux"]
    assert all(found[n] % uki.ALIGN == 0 for n in (".osrel", ".cmdline", ".linux"))
    assert found[".osrel"] >= max(v for n, v in found.items() if n not in (".osrel", ".cmdline", ".linux"))


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    assert _build(tmp_path, "a").read_bytes() == _build(tmp_path, "b").read_bytes()
    assert _build(tmp_path, "c", "root=/dev/dm-0 rw").read_bytes() != _build(tmp_path, "d").read_bytes()


def test_os_release_names_the_slot_and_version() -> None:
    text = uki.os_release('ID=clip\nPRETTY_NAME="x"\nIMAGE_VERSION=1\n', release="CLIP 4.5.0", slot="b",
                          version="4.5.1")
    assert re.findall(r"^(\w+)=", text, re.MULTILINE) == ["ID", "PRETTY_NAME", "IMAGE_VERSION", "CLIP_SLOT"]
    assert "IMAGE_VERSION=4.5.1\n" in text and "CLIP_SLOT=b\n" in text and '"CLIP 4.5.0 (slot b)"' in text


def test_signed_uki_verifies_and_a_flipped_cmdline_byte_does_not(tmp_path: Path) -> None:
    keys = secureboot.init(tmp_path / "keys", "test")
    signed = tmp_path / "signed.efi"
    secureboot.sign(_build(tmp_path, "a"), signed, keys, 1_700_000_000)
    assert secureboot.verify(signed, keys.cert("db"))[0]
    data = bytearray(signed.read_bytes())
    at = data.index(b"root=/dev/dm-0 ro")
    data[at] ^= 0x20
    (tmp_path / "bad.efi").write_bytes(bytes(data))
    assert not secureboot.verify(tmp_path / "bad.efi", keys.cert("db"))[0]
