"""PCR predictions, each checked against something that is not this code: systemd-measure for PCR 11, the
digests sbsign signed and the firmware's published event digests for PCR 4, virt-firmware's measurement code
and event logs recorded by real OVMF boots for PCR 7."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from pathlib import Path

import pytest

from clipbuild.core.errors import InputError
from clipbuild.core.run import run
from clipbuild.image import measure
from clipbuild.signing import secureboot
from tests.unit.formats import pecraft

ROOT = Path(__file__).resolve().parents[3]
RECORDED = ROOT / "tests" / "data" / "vectors" / "measured-boot"
SYSTEMD_MEASURE = Path("/usr/lib/systemd/systemd-measure")
OVMF_VARS = secureboot.OVMF_VARS
# sha256 of the events' data, as OVMF's event log shows them (and as the TCG PC Client spec fixes them)
CALLING = "3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba"
RETURNING = "7044f06303e54fa96c3fcd1a0f11047c03d209074470b1fd60460c9f007e28a6"
SEPARATOR = "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
SECTIONS = {".osrel": b"ID=clip\nIMAGE_VERSION=7\n", ".cmdline": b"console=ttyS0 clip.slot=a ro",
            ".initrd": b"\x1f\x8b initrd " * 300, ".linux": b"MZ kernel " * 3000}


def _virt_fw_vars(*args: str | Path) -> None:
    run([secureboot.virt_fw_vars(), *map(str, args)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    pecraft.need("objcopy", "objdump", "sbsign", "faketime")
    return tmp_path_factory.mktemp("measure")


# -- PCR 11 --------------------------------------------------------------------------------------------------------


def _systemd_measure(folder: Path, sections: dict[str, bytes]) -> str:
    if not SYSTEMD_MEASURE.is_file():
        pytest.skip("needs systemd's systemd-measure")
    args = []
    for name, content in sections.items():
        path = folder / f"measured{name}"
        path.write_bytes(content)
        args.append(f"--{name[1:]}={path}")
    out = run([str(SYSTEMD_MEASURE), "calculate", *args, "--bank=sha256", "--phase=", "--json=short"]).stdout
    (entry,) = json.loads(out)["sha256"]
    assert entry["pcr"] == 11
    return entry["hash"]


@pytest.mark.parametrize("extra", [
    {},
    {".splash": b"BM splash" * 50, ".dtb": b"\xd0\x0d\xfe\xed dtb", ".pcrpkey": b"-----BEGIN PUBLIC KEY-----\n"},
], ids=["base", "splash-dtb-pcrpkey"])
def test_pcr11_is_systemd_measures(folder, extra):
    sections = {**SECTIONS, **extra}
    uki = pecraft.uki(folder, sections, name="pcr11.efi").read_bytes()
    assert measure.pcr11(uki) == _systemd_measure(folder, sections)


def test_pcr11_without_an_initrd(folder):
    sections = {k: v for k, v in SECTIONS.items() if k != ".initrd"}
    uki = pecraft.uki(folder, sections, name="no-initrd.efi").read_bytes()
    assert measure.pcr11(uki) == _systemd_measure(folder, sections)
    assert measure.pcr11(uki) != _systemd_measure(folder, SECTIONS)


def test_pcr11_follows_the_stubs_order_not_the_files(folder):
    """Sections added in another order, a .pcrsig (never measured) and an unknown section change nothing."""
    shuffled = {".linux": SECTIONS[".linux"], ".pcrsig": b'{"sha256": []}', ".initrd": SECTIONS[".initrd"],
                ".uname": b"6.1.0", ".cmdline": SECTIONS[".cmdline"], ".osrel": SECTIONS[".osrel"]}
    uki = pecraft.uki(folder, shuffled, name="shuffled.efi").read_bytes()
    assert measure.pcr11(uki) == _systemd_measure(folder, SECTIONS)


def test_pcr11_events_are_name_then_content(folder):
    uki = pecraft.uki(folder, SECTIONS, name="events.efi").read_bytes()
    events = measure.pcr11_events(uki)
    order = [".linux", ".osrel", ".cmdline", ".initrd"]
    assert events[0::2] == [hashlib.sha256(name.encode() + b"\0").digest() for name in order]
    assert events[1::2] == [hashlib.sha256(SECTIONS[name]).digest() for name in order]


def test_pcr11_refuses_what_the_stub_would_misread(folder):
    with pytest.raises(InputError, match=r"no \(non-empty\) \.linux section"):
        measure.pcr11(pecraft.uki(folder, {".osrel": b"ID=clip\n"}, name="no-linux.efi").read_bytes())
    prefixed = pecraft.uki(folder, {**SECTIONS, ".linuxv2": b"other kernel"}, name="prefixed.efi").read_bytes()
    with pytest.raises(InputError, match=r"'\.linuxv2' would be read as \.linux"):
        measure.pcr11(prefixed)
    twice = bytearray(pecraft.uki(folder, SECTIONS, name="twice.efi").read_bytes())
    at = twice.find(b".osrel\0\0")
    twice[at:at + 8] = b".cmdline"
    with pytest.raises(InputError, match=r"two \.cmdline sections"):
        measure.pcr11(bytes(twice))


# -- PCR 4 ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(folder):
    key = pecraft.keys(folder)
    loader = folder / "systemd-boot.efi"
    loader.write_bytes(pecraft.SYSTEMD_BOOT.read_bytes())
    uki = pecraft.uki(folder, SECTIONS, name="slot.efi")
    return {"key": key, "loader": pecraft.sign(loader, key).read_bytes(), "uki": pecraft.sign(uki, key).read_bytes()}


def test_pcr4_events_are_the_firmwares_then_what_sbsign_signed(signed):
    events = measure.pcr4_events([signed["loader"], signed["uki"]])
    assert [e.hex() for e in events[:2]] == [CALLING, SEPARATOR]
    assert events[2:] == [pecraft.signed_digest(signed["loader"]), pecraft.signed_digest(signed["uki"])]
    pcr = bytes(32)
    for event in events:
        pcr = hashlib.sha256(pcr + event).digest()
    assert measure.pcr4([signed["loader"], signed["uki"]]) == pcr.hex()


def test_pcr4_counts_failed_boot_options(signed):
    events = measure.pcr4_events([signed["loader"], signed["uki"]], earlier_attempts=2)
    assert [e.hex() for e in events[:6]] == [CALLING, SEPARATOR, RETURNING, CALLING, RETURNING, CALLING]
    assert events[6:] == measure.pcr4_events([signed["loader"], signed["uki"]])[2:]
    with pytest.raises(InputError, match="earlier_attempts is -1"):
        measure.pcr4([signed["loader"]], earlier_attempts=-1)
    with pytest.raises(InputError, match="no boot application"):
        measure.pcr4([])


# -- PCR 7 ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enrolled(folder, signed):
    if not OVMF_VARS.is_file():
        pytest.skip("needs Debian's ovmf")
    vars_file = folder / "vars.fd"
    secureboot.enrolled_vars(signed["key"], vars_file)
    return vars_file


def test_pcr7_policy_events_are_virt_firmwares(enrolled, signed):
    virt_measure = pytest.importorskip("virt.firmware.measure")
    edk2 = pytest.importorskip("virt.firmware.varstore.edk2")
    efivar = pytest.importorskip("virt.firmware.efi.efivar")
    varlist = edk2.Edk2VarStore(str(enrolled)).get_varlist()
    theirs = [bytes.fromhex(r["digests"][0]["digest"]) for r in virt_measure.measure_varlist(["sha256"], varlist)]
    key = signed["key"]
    events = measure.pcr7_events(measure.read_variables(enrolled), key.der("db"), key.owner)
    assert events[:-1] == theirs  # SecureBoot, PK, KEK, db, dbx (all present here), separator
    authority = efivar.EfiVar("db", guid=measure.EFI_IMAGE_SECURITY_DATABASE)
    authority.data = uuid.UUID(key.owner).bytes_le + key.der("db")  # one EFI_SIGNATURE_DATA, not a list: set it raw
    assert events[-1].hex() == virt_measure.measure_var(["sha256"], authority, False)["digests"][0]["digest"]
    assert measure.pcr7(enrolled, key.der("db"), key.owner) == virt_measure.calculate_pcrs(
        ["sha256"], [*virt_measure.measure_varlist(["sha256"], varlist),
                     virt_measure.measure_var(["sha256"], authority, False)])[0]["digest"]


def test_pcr7_measures_an_absent_dbx_with_no_data(folder, enrolled, signed):
    """What OVMF does (Tcg2Dxe ReadAndMeasureVariable), unlike virt-firmware, which leaves the event out."""
    no_dbx = folder / "vars-no-dbx.fd"
    _virt_fw_vars("--input", enrolled, "--output", no_dbx, "--delete", "dbx")
    key = signed["key"]
    events = measure.pcr7_events(measure.read_variables(no_dbx), key.der("db"), key.owner)
    empty_dbx = (uuid.UUID(measure.EFI_IMAGE_SECURITY_DATABASE).bytes_le + struct.pack("<QQ", 3, 0)
                 + "dbx".encode("utf-16-le"))
    assert events[4] == hashlib.sha256(empty_dbx).digest()
    assert len(events) == 7


def test_pcr7_refuses_a_store_that_would_not_verify_the_loader(folder, enrolled, signed):
    key = signed["key"]
    with pytest.raises(InputError, match=r"no X\.509 entry with owner"):
        measure.pcr7(enrolled, key.der("db"), str(uuid.uuid4()))
    other = pecraft.keys(folder, "other")
    with pytest.raises(InputError, match=r"no X\.509 entry with owner"):
        measure.pcr7(enrolled, other.der("db"), key.owner)
    setup_mode = folder / "vars-setup.fd"
    _virt_fw_vars("--input", OVMF_VARS, "--output", setup_mode, "--add-db", key.owner, key.cert("db"))
    with pytest.raises(InputError, match="Secure Boot is not enabled"):
        measure.pcr7(setup_mode, key.der("db"), key.owner)
    with pytest.raises(InputError, match="no such OVMF variable store"):
        measure.pcr7(folder / "missing.fd", key.der("db"), key.owner)


def test_signature_lists_are_read_strictly():
    entry = uuid.UUID(measure.EFI_CERT_X509).bytes_le + struct.pack("<III", 28 + 20, 0, 20) + bytes(20)
    assert measure.signature_entries(entry, "db") == [(measure.EFI_CERT_X509, str(uuid.UUID(int=0)), bytes(4))]
    for broken in (entry[:20], entry[:-1], entry[:16] + struct.pack("<III", 28 + 20, 0, 8) + bytes(20)):
        with pytest.raises(InputError, match="db: "):
            measure.signature_entries(broken, "db")


# -- recorded boots -------------------------------------------------------------------------------------------------


def _replay_log(path: Path) -> dict[int, list[tuple[int, bytes]]]:
    """The SHA-256 events of a TCG2 crypto-agile event log (binary_bios_measurements), by PCR."""
    data = path.read_bytes()
    size = struct.unpack_from("<I", data, 28)[0]
    spec = data[32:32 + size]
    algorithms = struct.unpack_from("<I", spec, 24)[0]
    digest_sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(algorithms))
    events: dict[int, list[tuple[int, bytes]]] = {}
    offset = 32 + size
    while offset < len(data):
        pcr, kind, count = struct.unpack_from("<III", data, offset)
        offset += 12
        for _ in range(count):
            alg = struct.unpack_from("<H", data, offset)[0]
            if alg == 0x000B:
                events.setdefault(pcr, []).append((kind, data[offset + 2:offset + 34]))
            offset += 2 + digest_sizes[alg]
        offset += 4 + struct.unpack_from("<I", data, offset)[0]
    return events


@pytest.mark.parametrize("case", ["slot-a", "slot-a-no-dbx"])
def test_pcr7_is_what_a_real_boot_measured(folder, case):
    """Event logs and PCR values read by the guest after real Secure Boots (tests/data/vectors/measured-boot)."""
    if not OVMF_VARS.is_file():
        pytest.skip("needs Debian's ovmf")
    recorded = json.loads((RECORDED / "boots.json").read_text())[case]
    vars_file = folder / f"{case}.fd"
    _virt_fw_vars("--input", OVMF_VARS, "--set-json", RECORDED / recorded["vars"], "--output", vars_file)
    log = _replay_log(RECORDED / f"{case}.eventlog")
    der = (RECORDED / "db.der").read_bytes()
    assert [e for _kind, e in log[7]] == measure.pcr7_events(measure.read_variables(vars_file), der,
                                                             recorded["owner"])
    assert measure.pcr7(vars_file, der, recorded["owner"]) == recorded["read"]["7"]
    # PCR 4: the firmware's two events, then exactly the digests sbsign signed into systemd-boot and the UKI
    assert [e.hex() for _kind, e in log[4]] == [CALLING, SEPARATOR, *recorded["sbsign_digests"]]
    assert measure.replay(e for _kind, e in log[4]) == recorded["read"]["4"]
    # PCR 11: the stub's events, names first, give what systemd-measure computed from the section files
    assert [e for _kind, e in log[11]][0::2] == [hashlib.sha256(n + b"\0").digest()
                                                 for n in (b".linux", b".osrel", b".cmdline", b".initrd")]
    assert measure.replay(e for _kind, e in log[11]) == recorded["systemd_measure_pcr11"] == recorded["read"]["11"]
