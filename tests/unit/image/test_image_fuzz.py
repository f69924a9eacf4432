"""Fuzzing the GPT reader and the manifest reader: any input ends in a result or one of clipbuild's own
errors, never another exception, and never reads more than its bounds."""

from __future__ import annotations

import contextlib
import json
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ClipbuildError
from clipbuild.image import gpt, inspection
from clipbuild.image.manifest import check_shape
from tests.unit.image.gptcraft import Gpt, entry
from tests.unit.image.test_hostile_images import good_manifest

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
U32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 8, 16, 92, 128, 512, 513, 2**31]))
LBA = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 8192))


@settings(FUZZ, max_examples=100)
@given(header_size=U32, entry_size=U32, count=U32, entries_lba=LBA, first_usable=LBA, last_usable=LBA,
       backup_lba=LBA, file_size=st.integers(0, 4 << 20), firsts=st.lists(st.tuples(LBA, LBA, st.binary(
           max_size=72)), max_size=4))
def test_gpt_headers_with_right_crcs(tmp_path, header_size, entry_size, count, entries_lba, first_usable,
                                     last_usable, backup_lba, file_size, firsts):
    table = Gpt(disk_size=4 << 20, header_size=header_size, entry_size=entry_size % 4096 or 128,
                count=min(count, 64), entries_lba=min(entries_lba, 8192), first_usable=first_usable,
                last_usable=last_usable, backup_lba=backup_lba, file_size=file_size,
                entries=[entry(a, b, label) for a, b, label in firsts])
    image = tmp_path / "fuzz.img"
    try:
        table.write(image)
    except (struct.error, OverflowError, ValueError):
        return  # a value the crafting cannot write: not the reader's input
    _read(image)
    image.unlink()


@FUZZ
@given(st.binary(min_size=0, max_size=4096), st.integers(0, 8192))
def test_random_bytes_after_a_signature(tmp_path, blob, pad):
    image = tmp_path / "fuzz.img"
    header = bytearray(b"EFI PART" + blob[:84].ljust(84, b"\0"))
    size = struct.unpack_from("<I", header, 12)[0]
    if 92 <= size <= 512:
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:size].ljust(size, b"\0"))))
    image.write_bytes(bytes(512) + bytes(header) + blob[84:] + bytes(pad))
    _read(image)


def _read(image) -> None:
    try:
        table = gpt.read_gpt(image)
    except ClipbuildError:
        return
    assert all(isinstance(e.label, str) and e.size > 0 for e in table.entries)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=20)


@FUZZ
@given(JSON)
def test_any_json_is_a_manifest_or_refused(value):
    with contextlib.suppress(ClipbuildError):
        check_shape(value, "m")


@FUZZ
@given(st.data())
def test_a_manifest_with_one_value_replaced(data):
    manifest = good_manifest()
    node, keys = manifest, []
    while isinstance(node, dict | list) and node:
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        keys.append(key)
        if not data.draw(st.booleans()):
            break
        node = node[key]
    target = manifest
    for key in keys[:-1]:
        target = target[key]
    if keys:
        target[keys[-1]] = data.draw(JSON)
    with contextlib.suppress(ClipbuildError):
        check_shape(manifest, "m")


@FUZZ
@given(st.text(max_size=200) | st.builds(lambda v: json.dumps(v), JSON))
def test_manifest_text(tmp_path, text):
    with contextlib.suppress(ClipbuildError):
        inspection._manifest(tmp_path / "disk.img", text)


def test_fuzz_reaches_a_good_table(tmp_path):
    assert gpt.read_gpt(Gpt().write(tmp_path / "disk.img")).entries  # the crafting makes readable tables
