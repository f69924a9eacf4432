"""Countersigned measurements: the PCR values a genuine boot of each slot of a UEFI-path release image
measures, signed by a controller with the image (docs/boot.md, "Measured boot and countersigned measurements").

    OUT/measurements.json   {"signed": STATEMENT, "signatures": [{"certificate", "hash", "signature"}]}

    STATEMENT = {"type": "clipbuild-measurements", "format": 1, "species", "release", "version",
                 "image": {"file", "sha256"},
                 "secure_boot": {"owner", "PK": {"subject", "sha256"}, "KEK": {...}, "db": {...}},
                 "slots": {"a": {"version", "root_hash", "uki_sha256", "pcrs": {"4", "7", "11"}}, ...}}

The statement is made from the image manifest published beside the image (the one embedded on the ESP cannot
name its own image's digest). Before signing, the controller checks it against the image itself
(`check_image`): the image's SHA-256, its embedded manifest, each slot's UKI on the ESP (digest, the root hash
in its signed .cmdline) and, with the Secure Boot certificates the firmware enrolls, each slot's PCRs computed
again from the ESP's own systemd-boot and UKI. A verifier (`vm --check --measurements`, a remote attestation
service) then trusts the controller's signature instead of the builder's manifest.

No date, no version counter: the predictions of a release's image are true for as long as that image exists,
so the same statement signed by the same key gives the same bytes (ECDSA is deterministic). A controller whose
certificate is revoked or expired no longer vouches for them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core import safefile
from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import InputError, NotAFile, SigningError
from clipbuild.image import esp, inspection, measure, uefi
from clipbuild.image.manifest import HEX64, PLAIN, SLOT_NAME, SYSTEMD_BOOT, boot_loader, check_shape
from clipbuild.signing import envelope, secureboot
from clipbuild.signing.signer import SigningKey
from clipbuild.signing.trust import Policy

TYPE = "clipbuild-measurements"
FORMAT = 1
FILE = "measurements.json"  # in a release folder
SIGNING_ROLE = "controller"
PCRS = ("4", "7", "11")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9.+~:-]{1,64}")
_TEXT = re.compile(r"[ -~]{1,512}")  # printable ASCII: a release name, a certificate subject
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY = {"subject": _TEXT, "sha256": HEX64}
# The statement's shape: every object closed (exactly these keys), ("*", NAME, X) a map NAME -> X.
_SLOT = {"version": _VERSION, "root_hash": HEX64, "uki_sha256": HEX64, "pcrs": {p: HEX64 for p in PCRS}}
SHAPE = {"type": str, "format": int, "species": _NAME, "release": _TEXT, "version": _VERSION,
         "image": {"file": PLAIN, "sha256": HEX64},
         "secure_boot": {"owner": _GUID, "PK": _KEY, "KEK": _KEY, "db": _KEY},
         "slots": ("*", SLOT_NAME, _SLOT)}


@dataclass(frozen=True)
class Slot:
    version: str
    root_hash: str
    uki_sha256: str
    pcrs: dict[str, str]  # "4", "7", "11" -> hex SHA-256 bank value


@dataclass(frozen=True)
class Statement:
    species: str
    release: str
    version: str
    image_file: str
    image_sha256: str
    secure_boot: dict[str, Any]  # the manifest's boot.secure_boot: owner GUID, PK/KEK/db subject and sha256
    slots: dict[str, Slot]

    def to_signed(self) -> dict[str, Any]:
        return {"type": TYPE, "format": FORMAT, "species": self.species, "release": self.release,
                "version": self.version, "image": {"file": self.image_file, "sha256": self.image_sha256},
                "secure_boot": self.secure_boot,
                "slots": {name: {"version": s.version, "root_hash": s.root_hash, "uki_sha256": s.uki_sha256,
                                 "pcrs": dict(s.pcrs)} for name, s in sorted(self.slots.items())}}

    def pcrs(self) -> dict[str, dict[str, str]]:
        """Each slot's countersigned PCR values, as `vm.check` takes them."""
        return {name: dict(s.pcrs) for name, s in self.slots.items()}


# -- making and signing ------------------------------------------------------------------------------------


def of_manifest(manifest: dict[str, Any], where: str) -> Statement:
    """The statement for the image a published manifest describes (a UEFI-path image only)."""
    check_shape(manifest, where)
    loader = boot_loader(manifest)
    if loader != SYSTEMD_BOOT:
        raise InputError(f"{where}: an image of the BIOS path (boot loader {loader}): it measures nothing into a "
                         "TPM, there are no measurements to sign",
                         hint="measured boot is the UEFI path's: clipbuild image SPECIES --bootloader systemd-boot")
    image = manifest.get("image")
    if not isinstance(image, dict):
        raise InputError(f"{where}: image: missing: this manifest does not name its image file and digest (the "
                         "copy embedded on the ESP cannot)", hint="give the manifest published beside the image, "
                         "IMAGE-NAME.manifest.json")
    slots = {}
    for name, info in manifest["slots"].items():
        if "uki_sha256" not in info or "pcrs" not in info:
            raise InputError(f"{where}: slots.{name}: no unified kernel image digest or PCR predictions")
        slots[name] = {"version": info["version"], "root_hash": info["root_hash"], "uki_sha256": info["uki_sha256"],
                       "pcrs": info["pcrs"]}
    signed = {"type": TYPE, "format": FORMAT, "species": manifest.get("species"),
              "release": manifest.get("release"), "version": manifest.get("version"),
              "image": {k: image.get(k) for k in ("file", "sha256")},
              "secure_boot": manifest["boot"].get("secure_boot"), "slots": slots}
    return parse(signed, where)


def draft(statement: Statement) -> bytes:
    """The unsigned document: what the controller is asked to sign."""
    return (json.dumps({"signed": statement.to_signed(), "signatures": []}, indent=1, sort_keys=True) + "\n").encode()


def write_draft(statement: Statement, out: Path) -> Path:
    safefile.write_atomic(out, draft(statement))
    return out


def countersign(statement: Statement, image: Path, keys: secureboot.SecureBootKeys, signer: SigningKey,
                out: Path) -> inspection.Report:
    """Sign `statement` into `out` as `signer`, once `image` has passed every check of `check_image` against
    it. A document already at `out` (the release's draft, an earlier signature) must state the same."""
    report = check_image(statement, image, keys)
    if not report.ok:
        failed = [f"{what}: {detail}" if detail else what for what, ok, detail in report.checks if not ok]
        raise SigningError(f"{image}: the image does not bear out the measurements of {out.name}; nothing signed",
                           detail=[f"  {line}" for line in failed],
                           hint="sign the manifest published with this very image")
    _check_previous(out, statement)
    safefile.write_atomic(out, envelope.sign(statement.to_signed(), signer))
    return report


def _check_previous(out: Path, statement: Statement) -> None:
    if not os.path.lexists(out):
        return
    try:
        previous = parse(json.loads(safefile.read_regular(out, envelope.MAX_BYTES))["signed"], str(out))
    except (ValueError, KeyError, TypeError, NotAFile, envelope.EnvelopeError) as exc:
        raise SigningError(f"{out}: cannot read the document already there ({exc}); nothing signed",
                           hint="remove it, or give another --out") from None
    if previous != statement:
        raise SigningError(f"{out}: already states the measurements of another image ({previous.image_file}, "
                           f"{previous.image_sha256[:16]}...); nothing signed", hint="remove it, or give another --out")


# -- reading and verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A measurements document as read: the envelope and its statement, not yet verified."""

    envelope: envelope.Envelope
    statement: Statement
    where: str


def read(path: Path) -> Signed:
    """A signed measurements document (a regular file, not a link, bounded), parsed strictly."""
    try:
        found = envelope.read(envelope.read_file(path), str(path))
    except NotAFile as exc:
        raise InputError(str(exc), hint="clipbuild measurements sign MANIFEST writes one") from None
    return Signed(found, parse(found.signed, str(path)), str(path))


def parse(signed: Any, where: str) -> Statement:
    """The statement, strictly: exactly its keys, each of its type and form; an EnvelopeError names the key."""
    if not isinstance(signed, dict) or (signed.get("type"), signed.get("format")) != (TYPE, FORMAT):
        got = (signed.get("type"), signed.get("format")) if isinstance(signed, dict) else (None, None)
        raise envelope.EnvelopeError(f"{where}: not clipbuild measurements of format {FORMAT} (type {got[0]!r}, "
                                     f"format {got[1]!r})")
    problem = _shape(signed, SHAPE, "signed")
    if problem is None and not signed["slots"]:
        problem = "signed.slots: no slot"
    if problem is not None:
        raise envelope.EnvelopeError(f"{where}: {problem}")
    slots = {name: Slot(s["version"], s["root_hash"], s["uki_sha256"], dict(s["pcrs"]))
             for name, s in signed["slots"].items()}
    image = signed["image"]
    return Statement(signed["species"], signed["release"], signed["version"], image["file"], image["sha256"],
                     signed["secure_boot"], slots)


def _shape(value: Any, spec: Any, path: str) -> str | None:
    if isinstance(spec, re.Pattern):
        if isinstance(value, str) and spec.fullmatch(value):
            return None
        return f"{path}: {str(value)[:80]!r} is not a valid value"
    if isinstance(spec, type):
        ok = isinstance(value, spec) and not (isinstance(value, bool) and spec is not bool)
        return None if ok else f"{path}: {'an integer' if spec is int else 'text'} is expected"
    if not isinstance(value, dict):
        return f"{path}: an object is expected"
    if isinstance(spec, tuple):  # ("*", key form, value spec)
        bad = next((k for k in value if not spec[1].fullmatch(k)), None)
        if bad is not None:
            return f"{path}: {bad[:40]!r} is not a valid name"
        return next((p for k, v in value.items() if (p := _shape(v, spec[2], f"{path}.{k}"))), None)
    missing, extra = sorted(set(spec) - set(value)), sorted(set(value) - set(spec))
    if missing or extra:
        return f"{path}: " + (f"missing {missing[0]}" if missing else f"unknown key {extra[0][:40]!r}")
    return next((p for k, sub in spec.items() if (p := _shape(value[k], sub, f"{path}.{k}"))), None)


def check_signature(found: Signed, policy: Policy, at: dt.datetime) -> list[str]:
    """Every reason the document's signature does not hold for `policy`'s controller role at `at`."""
    return [f"{found.where}: signature refused ({envelope.signer_subject(found.envelope)}): {p}"
            for p in envelope.verify(found.envelope, policy.role(SIGNING_ROLE), at)]


def verified(path: Path, policy: Policy, at: dt.datetime) -> Signed:
    """A document whose controller signature holds, or a SigningError giving every reason it does not."""
    found = read(path)
    problems = check_signature(found, policy, at)
    if problems:
        raise SigningError(problems[0], detail=[f"  {p}" for p in problems[1:]],
                           hint="countersigned measurements come from clipbuild measurements sign (or release)")
    return found


def for_image(path: Path, image: Path, policy: Policy, at: dt.datetime) -> Statement:
    """The statement of a document whose controller signature holds and which measures `image` (its
    SHA-256), else an error saying which."""
    statement = verified(path, policy, at).statement
    if image.suffix == ".qcow2":
        raise InputError(f"{path}: measures the raw image {statement.image_file}, not a qcow2 copy",
                         hint="check the raw image itself")
    digest = sha256_file(image)
    if digest != statement.image_sha256:
        raise InputError(f"{path}: measures {statement.image_file} (SHA-256 {statement.image_sha256[:16]}...), not "
                         f"{image} (SHA-256 {digest[:16]}...)",
                         hint="give the measurements of this image (an updated image is another image)")
    return statement


# -- the image against a statement ------------------------------------------------------------------------


def check_image(statement: Statement, image: Path, keys: secureboot.SecureBootKeys | None) -> inspection.Report:
    """Whether `image` is the one `statement` measures, each check reported: its SHA-256, its embedded
    manifest, each slot's UKI on the ESP (digest, root hash in the signed .cmdline) and, given the Secure Boot
    certificates its firmware enrolls (`keys`), each slot's PCRs computed again from the ESP's files."""
    report = inspection.Report()
    digest = sha256_file(image)
    report.add(f"image {image.name}: SHA-256 is the measured image's ({statement.image_file})",
               digest == statement.image_sha256, "" if digest == statement.image_sha256 else
               f"{digest}, the measurements name {statement.image_sha256}")
    found = inspection.read(image)
    manifest = found.manifest
    if found.esp is None:
        report.add("image of the UEFI path", False, "its boot loader is syslinux: it measures nothing")
        return report
    ours = (manifest["species"], manifest["release"], manifest["version"])
    theirs = (statement.species, statement.release, statement.version)
    report.add("manifest on the ESP: species, release, version", ours == theirs,
               "" if ours == theirs else f"{' '.join(ours)}, the measurements say {' '.join(theirs)}")
    enrolled = manifest["boot"].get("secure_boot")
    report.add("manifest on the ESP: Secure Boot certificates", enrolled == statement.secure_boot)
    same = sorted(manifest["slots"]) == sorted(statement.slots)
    report.add("slots", same, "" if same else f"the image has {', '.join(sorted(manifest['slots']))}, the "
               f"measurements {', '.join(sorted(statement.slots))}")
    if keys is not None:
        facts = uefi.secure_boot_facts(keys)
        report.add(f"Secure Boot certificates {keys.directory}: the measured ones", facts == statement.secure_boot,
                   "" if facts == statement.secure_boot else f"db {facts['db']['sha256'][:16]}..., the "
                   f"measurements name {statement.secure_boot['db']['sha256'][:16]}...")
    with tempfile.TemporaryDirectory(prefix="clipbuild-measurements-") as tmp:
        scratch = Path(tmp)
        firmware = _firmware(found, keys, scratch) if keys is not None else None
        for name, slot in sorted(statement.slots.items()):
            _check_slot(found, name, slot, scratch, report, firmware)
    return report


@dataclass(frozen=True)
class _Firmware:
    """What PCR predictions need besides a UKI: the enrolled variables, the ESP's loader, the db entry."""

    vars_file: Path
    loader: bytes
    keys: secureboot.SecureBootKeys


def _firmware(found: inspection.Inspection, keys: secureboot.SecureBootKeys, scratch: Path) -> _Firmware:
    vars_file, loader = uefi.prediction_inputs(found.mtools(), keys, scratch)
    return _Firmware(vars_file, loader.read_bytes(), keys)


def _check_slot(found: inspection.Inspection, name: str, slot: Slot, scratch: Path, report: inspection.Report,
                firmware: _Firmware | None) -> None:
    info = found.manifest["slots"].get(name)
    if info is None:
        return  # reported with the slots
    said = (info["root_hash"], info.get("uki_sha256"), info.get("pcrs"))
    report.add(f"slot {name}: manifest on the ESP: root hash, UKI digest, PCR predictions",
               said == (slot.root_hash, slot.uki_sha256, slot.pcrs))
    assert found.esp is not None
    entry = found.esp.entries.get(name)
    if entry is None:
        report.add(f"slot {name}: unified kernel image on the ESP", False, f"no {esp.LINUX_DIR}/clip-{name}*.efi")
        return
    data = uefi.uki_bytes(found.mtools(), entry, scratch)
    digest = hashlib.sha256(data).hexdigest()
    report.add(f"slot {name}: {entry.path}: SHA-256 is the measured UKI's", digest == slot.uki_sha256,
               "" if digest == slot.uki_sha256 else digest)
    root_hash = found.esp.root_hashes.get(name, "")
    report.add(f"slot {name}: root hash in the UKI's signed command line is the measured one",
               root_hash == slot.root_hash, "" if root_hash == slot.root_hash else root_hash or "none")
    if firmware is not None:
        again = measure.predict(firmware.vars_file, firmware.loader, data, firmware.keys.der("db"),
                                firmware.keys.owner).to_dict()
        wrong = [f"PCR {p} computes to {again[p]}" for p in PCRS if again[p] != slot.pcrs[p]]
        report.add(f"slot {name}: PCRs 4, 7, 11 computed again from the ESP's files", not wrong, "; ".join(wrong))
