"""The PCR 4, 7 and 11 values a genuine Secure Boot of a slot produces, predicted offline (SHA-256 bank).

Each PCR starts at 32 zero bytes and is extended with the digest of each event: pcr = sha256(pcr || digest).
The events, as OVMF 2022.11 (EDK II Tcg2Dxe, DxeImageVerificationLib) and systemd 252 (systemd-stub,
systemd-boot) make them (read in their sources, then checked against real boots):

- PCR 4: EV_EFI_ACTION "Calling EFI Application from Boot Option" (at the first ReadyToBoot), EV_SEPARATOR
  (4 zero bytes), then EV_EFI_BOOT_SERVICES_APPLICATION with the Authenticode digest of each PE image the
  firmware's LoadImage verifies: systemd-boot (EFI/BOOT/BOOTX64.EFI), then the UKI. The 252 stub starts the
  kernel with LoadImage too, but under Secure Boot it overrides the firmware's security protocols for that
  call, so the kernel adds no event (without Secure Boot it would).
- PCR 7: EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db, dbx in that order (an absent variable
  is measured with no data), dbt only if present (EDK II's source; no boot here had one), EV_SEPARATOR, then
  one EV_EFI_VARIABLE_AUTHORITY per db entry that verified an image (measured once however many images it
  verified): variable "db" holding that EFI_SIGNATURE_DATA (owner GUID, then the certificate's DER). Each
  digest is sha256 of the whole UEFI_VARIABLE_DATA (vendor GUID, UINT64 name length in UTF-16 units, UINT64
  data length, UTF-16LE name without its NUL, data).
- PCR 11: systemd-stub 252 extends, for each of .linux, .osrel, .cmdline, .initrd, .splash, .dtb, .pcrpkey
  the UKI holds (in that order; .pcrsig never), sha256 of the section name with its NUL, then sha256 of the
  section's VirtualSize bytes in memory (EV_IPL events).

PCR 4 depends on the boot options the firmware tried before the ESP's: each failed one (QEMU's default empty
DVD-ROM drive, a network boot) adds "Returning from EFI Application from Boot Option" and "Calling EFI
Application from Boot Option" again (`earlier_attempts`). A VM that must match a manifest boots its disk first
(`bootindex=0`). PCR 11 is the stub's alone: userspace (systemd-pcrphase) would extend it further.

Checked against the PCRs a guest read from swtpm after real boots of OVMF 2022.11 with enrolled keys, and
against the event logs the firmware kept (tests/data/vectors/measured-boot: slot A, with and without dbx).
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import InputError
from clipbuild.core.run import run
from clipbuild.formats import pe
from clipbuild.signing import secureboot

CALLING_EFI_APPLICATION = b"Calling EFI Application from Boot Option"
RETURNING_FROM_EFI_APPLICATION = b"Returning from EFI Application from Boot Option"
SEPARATOR = bytes(4)
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
OVMF_SECURE_BOOT_ENABLE = "f0a30bc7-af08-4556-99c4-001009c93a44"  # SecureBootEnable: OVMF's own switch
# EFI_SIGNATURE_LIST types: an X.509 certificate
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
POLICY_VARIABLES = (("SecureBoot", EFI_GLOBAL_VARIABLE), ("PK", EFI_GLOBAL_VARIABLE), ("KEK", EFI_GLOBAL_VARIABLE),
                    ("db", EFI_IMAGE_SECURITY_DATABASE), ("dbx", EFI_IMAGE_SECURITY_DATABASE))
OPTIONAL_POLICY_VARIABLES = (("dbt", EFI_IMAGE_SECURITY_DATABASE),)
# systemd 252's unified sections in the order its stub measures them (src/fundamental/tpm-pcr.h).
UNIFIED_SECTIONS = (".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrsig", ".pcrpkey")
UNMEASURED_SECTIONS = (".pcrsig",)
SIGNATURE_LIST = struct.Struct("<16sIII")  # SignatureType, SignatureListSize, SignatureHeaderSize, SignatureSize


@dataclass(frozen=True)
class Prediction:
    pcr4: str
    pcr7: str
    pcr11: str

    def to_dict(self) -> dict[str, str]:
        return {"4": self.pcr4, "7": self.pcr7, "11": self.pcr11}


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def replay(digests: Iterable[bytes]) -> str:
    """The SHA-256 PCR value after extending a reset PCR with `digests` in order, as hex."""
    pcr = bytes(32)
    for digest in digests:
        pcr = sha256(pcr + digest)
    return pcr.hex()


# -- PCR 11: systemd-stub ----------------------------------------------------------------------------------------


def stub_sections(uki: bytes) -> dict[str, bytes]:
    """The unified sections systemd-stub 252 finds in `uki`, each as it measures it.

    The stub matches a section by comparing only the first len(name) bytes of its 8-byte name (pe.c,
    locate_sections), so ".linuxX" would be taken for .linux, and of two matches the later wins. Such an
    image is refused rather than predicted.
    """
    found: dict[str, bytes] = {}
    layout = pe.layout(uki)
    for section, raw_name in zip(layout.sections, layout.raw_names, strict=True):
        for name in UNIFIED_SECTIONS:
            if not raw_name.startswith(name.encode()):
                continue
            if section.name != name:
                raise InputError(f"UKI: section {section.name!r} would be read as {name} by systemd-stub 252, "
                                 "which matches section names by prefix", hint="rename or drop that section")
            if name in found:
                raise InputError(f"UKI: two {name} sections; systemd-stub 252 would use the second",
                                 hint="build the UKI with one of each section")
            found[name] = pe.loaded_bytes(uki, section)
    return {name: found[name] for name in UNIFIED_SECTIONS if found.get(name)}


def pcr11_events(uki: bytes) -> list[bytes]:
    """The digests systemd-stub 252 extends into PCR 11 for `uki`."""
    sections = stub_sections(uki)
    if ".linux" not in sections:
        raise InputError("UKI: no (non-empty) .linux section: systemd-stub would refuse to boot it")
    events = []
    for name, content in sections.items():
        if name not in UNMEASURED_SECTIONS:
            events += [sha256(name.encode() + b"\0"), sha256(content)]
    return events


def pcr11(uki: bytes) -> str:
    return replay(pcr11_events(uki))


# -- PCR 4: the boot applications ---------------------------------------------------------------------------------


def pcr4_events(loaded: Sequence[bytes], *, earlier_attempts: int = 0) -> list[bytes]:
    """The digests the firmware extends into PCR 4 when it starts `loaded` (signed PE images, in load order)
    after `earlier_attempts` boot options that failed."""
    if not loaded:
        raise InputError("PCR 4: no boot application given; the firmware loads at least one")
    if earlier_attempts < 0:
        raise InputError(f"PCR 4: earlier_attempts is {earlier_attempts}; it counts failed boot options (0 or more)")
    retry = [sha256(RETURNING_FROM_EFI_APPLICATION), sha256(CALLING_EFI_APPLICATION)]
    return [sha256(CALLING_EFI_APPLICATION), sha256(SEPARATOR), *retry * earlier_attempts,
            *(pe.authenticode_sha256(image) for image in loaded)]


def pcr4(loaded: Sequence[bytes], *, earlier_attempts: int = 0) -> str:
    return replay(pcr4_events(loaded, earlier_attempts=earlier_attempts))


# -- PCR 7: the Secure Boot policy ---------------------------------------------------------------------------------


def variable_data(guid: str, name: str, data: bytes) -> bytes:
    """A UEFI_VARIABLE_DATA structure, the event data of EV_EFI_VARIABLE_* events."""
    return (uuid.UUID(guid).bytes_le + struct.pack("<QQ", len(name), len(data)) + name.encode("utf-16-le")
            + data)


def signature_entries(esl: bytes, what: str) -> list[tuple[str, str, bytes]]:
    """The (signature type, owner GUID, data) of each entry in EFI_SIGNATURE_LISTs, every size checked."""
    entries, offset = [], 0
    while offset < len(esl):
        if offset + SIGNATURE_LIST.size > len(esl):
            raise InputError(f"{what}: a signature list header at byte {offset} runs past the end ({len(esl)} bytes)")
        kind, list_size, header_size, entry_size = SIGNATURE_LIST.unpack_from(esl, offset)
        body = offset + SIGNATURE_LIST.size + header_size
        end = offset + list_size
        if entry_size < 16 or end > len(esl) or body > end or (end - body) % entry_size:
            raise InputError(f"{what}: malformed signature list at byte {offset} (list size {list_size}, "
                             f"header {header_size}, entry size {entry_size}, {len(esl)} bytes in all)")
        for at in range(body, end, entry_size):
            owner = str(uuid.UUID(bytes_le=esl[at:at + 16]))
            entries.append((str(uuid.UUID(bytes_le=kind)), owner, esl[at + 16:at + entry_size]))
        offset = end
    return entries


def read_variables(vars_file: Path) -> dict[tuple[str, str], bytes]:
    """The variables of an OVMF variable store, by (name, vendor GUID), read by virt-firmware."""
    if not vars_file.is_file():
        raise InputError(f"{vars_file}: no such OVMF variable store")
    with tempfile.TemporaryDirectory(prefix="clipbuild-vars-") as scratch:
        out = Path(scratch) / "vars.json"
        run([secureboot.virt_fw_vars(), "--input", str(vars_file), "--output-json", str(out)])
        try:
            listing = json.loads(out.read_text(encoding="utf-8"))
            return {(v["name"], v["guid"].lower()): bytes.fromhex(v["data"]) for v in listing["variables"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{vars_file}: virt-fw-vars listed it in an unexpected form: {exc}") from None


def secure_boot_state(variables: Mapping[tuple[str, str], bytes], where: str) -> dict[tuple[str, str], bytes]:
    """The policy variables as the firmware holds them at boot, SecureBoot included (a volatile variable
    OVMF sets to 1 when SecureBootEnable is 1 and a PK is enrolled); refuses a store that does not boot
    enforcing."""
    if variables.get(("SecureBootEnable", OVMF_SECURE_BOOT_ENABLE)) != b"\x01":
        raise InputError(f"{where}: Secure Boot is not enabled (SecureBootEnable is not 1)",
                         hint="enrol the keys with virt-fw-vars ... --secure-boot")
    if not variables.get(("PK", EFI_GLOBAL_VARIABLE)):
        raise InputError(f"{where}: no PK enrolled: the firmware would boot in setup mode, not enforcing")
    return {**variables, ("SecureBoot", EFI_GLOBAL_VARIABLE): b"\x01"}


def pcr7_events(variables: Mapping[tuple[str, str], bytes], authority_der: bytes, owner_guid: str,
                where: str = "variable store") -> list[bytes]:
    """The digests OVMF extends into PCR 7: the policy, the separator, the db entry that verified the boot
    applications."""
    state = secure_boot_state(variables, where)
    owner = str(uuid.UUID(owner_guid))
    db = state.get(("db", EFI_IMAGE_SECURITY_DATABASE), b"")
    if (EFI_CERT_X509, owner, authority_der) not in signature_entries(db, f"{where}: db"):
        raise InputError(f"{where}: db holds no X.509 entry with owner {owner} and this certificate: the "
                         "firmware would refuse the boot applications", hint="enrol the db certificate that "
                         "signed systemd-boot and the UKIs, with the same owner GUID")
    events = [sha256(variable_data(guid, name, state.get((name, guid), b""))) for name, guid in POLICY_VARIABLES]
    events += [sha256(variable_data(guid, name, state[(name, guid)]))
               for name, guid in OPTIONAL_POLICY_VARIABLES if (name, guid) in state]
    events.append(sha256(SEPARATOR))
    authority = uuid.UUID(owner).bytes_le + authority_der
    events.append(sha256(variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", authority)))
    return events


def pcr7(vars_file: Path, authority_der: bytes, owner_guid: str) -> str:
    return replay(pcr7_events(read_variables(vars_file), authority_der, owner_guid, str(vars_file)))


def predict(vars_file: Path, loader: bytes, uki: bytes, authority_der: bytes, owner_guid: str, *,
            earlier_attempts: int = 0) -> Prediction:
    """PCRs 4, 7 and 11 after OVMF with `vars_file` boots the signed `loader` (systemd-boot), which boots the
    signed `uki`, both verified by the db certificate `authority_der` enrolled with `owner_guid`."""
    return Prediction(pcr4=pcr4([loader, uki], earlier_attempts=earlier_attempts),
                      pcr7=pcr7(vars_file, authority_der, owner_guid), pcr11=pcr11(uki))
