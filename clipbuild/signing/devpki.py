"""The development PKI: a local developer CA and controller CA whose signers sign and countersign every
package of a development image automatically (`clipbuild image` without --release).

It lives in ~/.cache/clipbuild/dev-pki, is created on first use, and its keys are encrypted with a passphrase
written here, in the open: it is a test PKI and images signed with it say so (os-release VARIANT_ID=dev and
the manifest's "signing": "development"). A release policy never names these CAs, so a release build refuses
every package they signed. Certificates are renewed when they get too close to expiry to sign, and CRLs are
re-issued before they go stale.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from clipbuild.core.paths import cache_dir
from clipbuild.signing import pki
from clipbuild.signing.signer import SigningKey, load_signing_key
from clipbuild.signing.trust import DEFAULT_MIN_VALIDITY_DAYS, Policy, load_policy

SECRET = b"clipbuild development PKI: this passphrase is public"
ORGANISATION = "clipbuild DEVELOPMENT PKI (not for release)"
CRL_MARGIN = dt.timedelta(days=15)
DEVELOPMENT = "development"  # the signing mode of plans, sign steps and images signed by this PKI
RELEASE = "release"  # the other one: packages taken from countersigned controller batches


@dataclass(frozen=True)
class DevPki:
    directory: Path
    developer: SigningKey
    controller: SigningKey

    @property
    def policy_path(self) -> Path:
        return self.directory / "policy.yaml"

    def policy(self) -> Policy:
        return load_policy(self.policy_path)

    def fingerprints(self) -> dict[str, str]:
        return {role: hashlib.sha256(signer.cert_der).hexdigest()
                for role, signer in (("developer", self.developer), ("controller", self.controller))}


def location() -> Path:
    return cache_dir() / "dev-pki"


def _create(directory: Path) -> None:
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pki.init(tmp, SECRET, pki.PkiSettings(organisation=ORGANISATION))
    if directory.exists():
        directory.rename(directory.with_name(f"{directory.name}.old-{int(dt.datetime.now().timestamp())}"))
    os.rename(tmp, directory)


def _expiring(directory: Path) -> bool:
    limit = dt.datetime.now(dt.UTC) + dt.timedelta(days=DEFAULT_MIN_VALIDITY_DAYS + 7)
    return any(x509.load_pem_x509_certificate((directory / f"{role}-1.pem").read_bytes()).not_valid_after_utc
               < limit for role in pki.ROLES)


def _current(policy: Path) -> bool:
    """A policy of the format pki writes now (older ones had unanchored subjects: the PKI is made again)."""
    try:
        return policy.is_file() and policy.read_text().startswith(pki.POLICY_FORMAT)
    except (OSError, UnicodeDecodeError):
        return False


def ensure(directory: Path | None = None) -> DevPki:
    """The development PKI, created or renewed as needed."""
    directory = directory or location()
    directory.parent.mkdir(parents=True, exist_ok=True)
    if not _current(directory / "policy.yaml") or _expiring(directory):
        _create(directory)
    now = dt.datetime.now(dt.UTC)
    for role in pki.ROLES:
        crl = x509.load_pem_x509_crl((directory / f"{role}-ca.crl.pem").read_bytes())
        if crl.next_update_utc is None or crl.next_update_utc - now < CRL_MARGIN:
            pki.refresh_crl(directory, role, SECRET)
    return DevPki(directory, *(load_signing_key(directory / f"{role}-1.key", directory / f"{role}-1.pem", SECRET)
                               for role in pki.ROLES))
