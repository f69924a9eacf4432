"""The device's trust store: the trust policy an image (and its core updates) verify packages with, as files
under etc/clip_update/keys/ of the root, where CLIP OS 4 kept its keys.

    etc/clip_update/keys/policy.yaml          the policy (trust.load_policy's schema), paths relative to it
    etc/clip_update/keys/certs_dev/*.pem      the developer CAs      certs_ctrl/*.pem  the controller CAs
    etc/clip_update/keys/crl_dev/*.pem        the developer CRLs     crl_ctrl/*.pem    the controller CRLs

`render` turns a policy file into that tree, canonically: certificates and CRLs re-encoded as PEM from what
trust.load_policy accepted, numbered in the order of their DER SHA-256 (ca-1.pem, crl-1.pem...);
policy.yaml written with sorted keys and every setting explicit. So the same policy gives the same bytes, and
a changed CA, CRL or rule gives other bytes. `load` reads the tree back from an installed root and refuses
anything outside the keys folder (a link anywhere in it, a name with `..` or an absolute path, a name the
folder does not hold). `canonical` is the policy's content without its file names, for comparing two stores.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from clipbuild.core import beneath, safefile
from clipbuild.core.errors import InputError, NotAFile
from clipbuild.signing import trust
from clipbuild.signing.trust import Policy, RolePolicy

KEYS_DIR = "etc/clip_update/keys"
PACKAGE = "clip-update-keys"  # the core package that installs the store (clip-conf/clip-update-keys)
POLICY_FILE = "policy.yaml"
FOLDERS = {"developer": ("certs_dev", "crl_dev"), "controller": ("certs_ctrl", "crl_ctrl")}
HEADER = b"# The device's trust store, rendered by clipbuild (clipbuild.signing.truststore): do not edit.\n"


def _pems(folder: str, stem: str, pem: dict[bytes, bytes]) -> dict[str, bytes]:
    """`folder/stem-N.pem` for each distinct DER (`pem`: DER -> PEM), numbered in the order of their SHA-256:
    the same set of certificates gives the same names whatever order the policy listed them in."""
    ordered = sorted(pem, key=lambda der: hashlib.sha256(der).digest())
    return {f"{folder}/{stem}-{n}.pem": pem[der] for n, der in enumerate(ordered, 1)}


def _role_files(role: RolePolicy) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The role's entry in policy.yaml and its PEM files, by path relative to the keys folder."""
    certs, crls = FOLDERS[role.role]
    der, pem = serialization.Encoding.DER, serialization.Encoding.PEM
    ca_pem = {ca.public_bytes(der): ca.public_bytes(pem) for ca in role.cas}
    crl_pem = {crl.public_bytes(der): crl.public_bytes(pem) for crl in role.crls}
    ca_files = _pems(certs, "ca", ca_pem)
    crl_files = _pems(crls, "crl", crl_pem)
    entry = {"ca": sorted(ca_files), "crl": sorted(crl_files), "allow_no_crl": role.allow_no_crl,
             "subject": role.subject, "subject_ere": role.subject_ere, "min_validity_days": role.min_validity_days}
    return entry, {**ca_files, **crl_files}


def render_policy(policy: Policy) -> dict[str, bytes]:
    """The trust store of a loaded policy: relative paths (under KEYS_DIR) to bytes."""
    data: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name in ("developer", "controller"):
        data[name], role_files = _role_files(policy.role(name))
        files.update(role_files)
    if policy.special_files:
        data["special_files"] = {package: sorted(kinds) for package, kinds in policy.special_files}
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)
    files[POLICY_FILE] = HEADER + text.encode("utf-8")
    return dict(sorted(files.items()))


def render(policy_path: Path) -> dict[str, bytes]:
    """The trust store of the policy file `policy_path` (checked by trust.load_policy first)."""
    return render_policy(trust.load_policy(policy_path))


def digests(files: dict[str, bytes]) -> dict[str, str]:
    """Each rendered file's SHA-256, by relative path: what a plan keys the store on."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def canonical(policy: Policy) -> dict[str, Any]:
    """What a policy trusts, without file names: CAs and CRLs by DER SHA-256 (sorted), rules, special files."""
    def role(r: RolePolicy) -> dict[str, Any]:
        return {"ca": sorted({hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in r.cas}),
                "crl": sorted({hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
                               for c in r.crls}),
                "allow_no_crl": r.allow_no_crl, "subject": r.subject, "subject_ere": r.subject_ere,
                "min_validity_days": r.min_validity_days}
    return {"developer": role(policy.developer), "controller": role(policy.controller),
            "special_files": {name: sorted(kinds) for name, kinds in policy.special_files}}


def differences(found: Policy, expected: Policy) -> list[str]:
    """Where `found` trusts otherwise than `expected`, one line per differing key (empty when the same)."""
    have, want = canonical(found), canonical(expected)
    lines = []
    for section in ("developer", "controller"):
        for key in want[section]:
            if have[section][key] != want[section][key]:
                lines.append(f"{section}.{key}: {_short(have[section][key])} instead of {_short(want[section][key])}")
    if have["special_files"] != want["special_files"]:
        lines.append(f"special_files: {have['special_files']} instead of {want['special_files']}")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(v[:16] if isinstance(v, str) and len(v) == 64 else str(v) for v in value) + "]"
    return repr(value)


def _where(root: Path, rel: str) -> str:
    return str(root / KEYS_DIR / rel) if rel else str(root / KEYS_DIR)


def _tree_files(root: Path) -> set[str]:
    """Every regular file of the keys folder (relative to it); a link or a special file anywhere is refused,
    and so is a link on the way to the folder."""
    parts = PurePosixPath(KEYS_DIR).parts
    for depth in range(1, len(parts) + 1):
        parent, name = "/".join(parts[:depth - 1]) or ".", parts[depth - 1]
        try:
            modes = dict(beneath.entries(root, parent))
        except FileNotFoundError:
            raise InputError(f"{root}: no such root: no trust store to read") from None
        if name not in modes:
            raise InputError(f"{_where(root, '')}: no trust store in this root (no {'/'.join(parts[:depth])})",
                             hint="the root must have clip-conf/clip-update-keys installed")
        if not stat.S_ISDIR(modes[name]):
            raise InputError(f"{root / '/'.join(parts[:depth])}: {safefile.kind(modes[name])}, "
                             "a real directory is expected (the trust store never follows a link)")
    return _walk(root, "")


def _walk(root: Path, rel: str) -> set[str]:
    found = set()
    for name, mode in beneath.entries(root, f"{KEYS_DIR}/{rel}" if rel else KEYS_DIR):
        path = f"{rel}/{name}" if rel else name
        if stat.S_ISDIR(mode):
            found |= _walk(root, path)
        elif stat.S_ISREG(mode):
            found.add(path)
        else:
            raise InputError(f"{_where(root, path)}: {safefile.kind(mode)} in the trust store: only regular "
                             "files and folders are allowed there (a link could lead out of it)")
    return found


def _named(data: Any) -> list[tuple[str, str]]:
    """(key, file name) for every CA and CRL file the policy names, as far as its shape can be read."""
    named = []
    for role in ("developer", "controller"):
        section = data.get(role) if isinstance(data, dict) else None
        for key in ("ca", "crl"):
            value = section.get(key) if isinstance(section, dict) else None
            for name in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                named.append((f"{role}.{key}", name))
    return named


def _check_names(root: Path, data: Any, present: set[str]) -> None:
    for key, name in _named(data):
        if not isinstance(name, str) or not name:
            continue  # trust.load_policy names the malformed value
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise InputError(f"{_where(root, POLICY_FILE)}: {key}: {name!r} leads out of the trust store",
                             hint=f"a trust store names only files of its own folder, {KEYS_DIR}/")
        if path.as_posix() not in present:
            raise InputError(f"{_where(root, POLICY_FILE)}: {key}: {_where(root, path.as_posix())} is missing "
                             "from the trust store", hint="rebuild the clip-update-keys package")


def load(root: Path) -> Policy:
    """The trust policy installed in the root `root` (an installed tree or a mounted slot), from
    root/etc/clip_update/keys/policy.yaml: refused with InputError, naming the file, when anything in the
    keys folder is a link, or the policy names a file outside the folder or missing from it."""
    try:
        return _load(root)
    except beneath.TreeError as exc:  # a path the tree resolves out of itself, or not what it should be
        raise InputError(f"{_where(root, '')}: {exc}") from None


def _load(root: Path) -> Policy:
    present = _tree_files(root)
    if POLICY_FILE not in present:
        raise InputError(f"{_where(root, POLICY_FILE)}: missing: the trust store has no policy",
                         hint="the root must have clip-conf/clip-update-keys installed")
    raw = beneath.read_bytes(root, f"{KEYS_DIR}/{POLICY_FILE}")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        data = None  # trust.load_policy reads it again and says what is wrong, with the line
    _check_names(root, data, present)
    try:
        return trust.load_policy(root / KEYS_DIR / POLICY_FILE)
    except NotAFile as exc:
        raise InputError(f"{_where(root, POLICY_FILE)}: {exc}") from None


def write(files: dict[str, bytes], target: Path) -> None:
    """A rendered store written under `target` (a new folder the caller owns), at `target`/KEYS_DIR."""
    for name, data in files.items():
        path = target / KEYS_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
