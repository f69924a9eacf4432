"""SSH keys of machines and operators (CLIP's ADMIN and AUDIT jails serve SSH: docs/network.md).

A machine's SSH host keys are part of its identity, like its IPsec key: kept with it in the IPsec PKI's folder
(DIR/machines/NAME/ssh/JAIL_ssh_host_ed25519_key, made on first use, 0600) and put on its provisioning disk, never
in a package. Its operators can therefore pin the host key before the machine first boots. Operators' public
keys (who may log in to a jail) are checked here before they reach a disk: plain keys of the algorithms the
image's sshd accepts, no options, RSA of 3072 bits or more (sshd_config's RequiredRSASize).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from clipbuild.core import safefile
from clipbuild.core.errors import InputError

SSH_JAILS = ("admin", "audit")  # the jails serving SSH, CLIP's ports 22 and 23
HOST_KEY = "ssh_host_ed25519_key"
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")
MIN_RSA_BITS = 3072


@dataclass(frozen=True)
class HostKey:
    jail: str
    private: Path
    public: str  # "ssh-ed25519 AAAA..."


def check_jail(jail: str) -> None:
    if jail not in SSH_JAILS:
        raise InputError(f"{jail!r}: not a jail serving SSH", hint=f"one of {', '.join(SSH_JAILS)}")


def _write_keypair(path: Path, comment: str) -> None:
    """A new Ed25519 key at `path` (OpenSSH format, 0600) and its public line at `path`.pub."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    safefile.write_atomic(path, private, mode=0o600)
    safefile.write_atomic(path.with_name(path.name + ".pub"), public + f" {comment}\n".encode(), mode=0o644)


def _public_of(path: Path) -> str:
    key = serialization.load_ssh_private_key(safefile.read_regular(path), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def host_key(machine_dir: Path, machine: str, jail: str) -> HostKey:
    """Jail's SSH host key of the machine whose folder is `machine_dir`, made there on first use."""
    check_jail(jail)
    path = machine_dir / "ssh" / f"{jail}_{HOST_KEY}"
    if not path.exists():
        _write_keypair(path, f"{jail}@{machine}")
    return HostKey(jail, path, _public_of(path))


def operator_key(path: Path, comment: str) -> str:
    """An operator's key pair at `path` (made if missing, e.g. the lab's); its public line."""
    if not path.exists():
        _write_keypair(path, comment)
    return _public_of(path)


def check_authorized_keys(path: Path) -> str:
    """The public keys in `path` (authorized_keys lines: TYPE BASE64 [COMMENT]), normalised; InputError naming
    the line for anything else (options, unknown types, weak RSA, bad encoding)."""
    lines = []
    for number, raw in enumerate(safefile.read_regular(path).decode(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if fields[0] not in KEY_TYPES:
            raise InputError(f"{where}: {fields[0][:40]!r}: not a public key type sshd accepts here (no options "
                             "such as command= either)", hint=f"one key per line: {' | '.join(KEY_TYPES)} BASE64")
        if len(fields) < 2:
            raise InputError(f"{where}: {fields[0]} without its key")
        try:
            key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode())
        except (ValueError, TypeError, binascii.Error):
            raise InputError(f"{where}: not a valid {fields[0]} key") from None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise InputError(f"{where}: an RSA key of {key.key_size} bits: sshd refuses under {MIN_RSA_BITS}")
        lines.append(" ".join(fields[:3]))
    if not lines:
        raise InputError(f"{path}: no public key in it", hint="an authorized_keys file or a .pub file")
    return "".join(f"{line}\n" for line in lines)


def known_hosts_line(host: str, port: int, public: str) -> str:
    """A known_hosts line pinning `public` for HOST:PORT (ssh's [host]:port form off port 22)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {' '.join(public.split()[:2])}\n"


def fingerprint(public: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
