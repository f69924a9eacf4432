"""Signed release metadata: one statement, signed by a controller, over every update repository of a release
(docs/updates.md, "Release metadata"; in the spirit of The Update Framework's snapshot and timestamp roles).

    REPO/release.json   {"signed": STATEMENT, "signatures": [{"certificate", "hash", "signature"}]}

The statement binds the species and release, a version that only grows (by default the signing time in
seconds since 1970, so releases signed anywhere with a correct clock grow), an issue and an expiry date, each
repository's Packages.gz (path, size, SHA-256) and each of its packages (file, name, version, size, SHA-256),
and the current CRLs of the signing roles (self-authenticating: each is signed by its CA; a device takes the
newest of its own and these).

`repo publish --species` and `release` write an unsigned draft (no signatures); `repo sign-metadata` (the
controller) re-reads the repository, checks it is the draft's, and signs it with a version and an expiry.
A development release is signed at once by the development PKI's controller.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clipbuild.core import safefile
from clipbuild.core.errors import NotAFile, RepositoryError, SigningError
from clipbuild.signing import envelope
from clipbuild.signing.signer import SigningKey
from clipbuild.signing.trust import Policy, RolePolicy, crl_signed_by, revocation_aside
from clipbuild.update.repository import CONF, decompress_index, parse_packages

METADATA = "release.json"
TYPE = "clipbuild-release"
FORMAT = 1
SKEW = dt.timedelta(days=1)  # clocks disagree: a date this far ahead of ours is still taken
DEFAULT_EXPIRES_DAYS = 7
MAX_EXPIRES_DAYS = 366
RECORD_ROOT = "etc/clip_update/release.json"  # in a slot's root: the metadata its core came with
RECORD_MOUNTS = "var/pkg/clip_update/release.json"  # in a slot's mounts partition: the newest it applied
SIGNING_ROLE = "controller"
_DATE = "%Y-%m-%dT%H:%M:%SZ"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9.+~:-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_INDEX = re.compile(r"dists/(clip|rm)/main/binary-[a-z0-9-]{1,16}/Packages\.gz")
_POOL = re.compile(r"pool/[A-Za-z0-9][A-Za-z0-9+._~:-]{0,200}\.deb")


@dataclass(frozen=True)
class Entry:
    """A package of a repository, as the statement binds it."""

    filename: str  # pool/NAME.deb
    package: str
    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Repository:
    """One conf repository: `dist/conf`, its Packages.gz and its packages."""

    name: str
    index: str  # dists/<dist>/main/binary-<arch>/Packages.gz, relative to the repository
    index_size: int
    index_sha256: str
    packages: tuple[Entry, ...]

    def entry(self, filename: str) -> Entry | None:
        return next((e for e in self.packages if e.filename == filename), None)


@dataclass(frozen=True)
class Statement:
    species: str
    release: str
    repositories: dict[str, Repository]
    version: int = 0
    issued: str = ""
    expires: str = ""
    crls: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> PEM CRLs

    @property
    def expires_at(self) -> dt.datetime:
        return _date(self.expires)

    @property
    def issued_at(self) -> dt.datetime:
        return _date(self.issued)

    def names(self) -> set[str]:
        """Every package name the release lists, in any repository."""
        return {e.package for repo in self.repositories.values() for e in repo.packages}

    def to_signed(self) -> dict[str, Any]:
        return {"type": TYPE, "format": FORMAT, "species": self.species, "release": self.release,
                "version": self.version, "issued": self.issued, "expires": self.expires,
                "crls": {role: list(pems) for role, pems in sorted(self.crls.items())},
                "repositories": {name: {"index": {"path": r.index, "size": r.index_size, "sha256": r.index_sha256},
                                        "packages": [e.__dict__ for e in r.packages]}
                                 for name, r in sorted(self.repositories.items())}}


# -- describing and signing a repository ------------------------------------------------------------------


def describe(repo: Path) -> dict[str, Repository]:
    """Every conf repository under REPO as its files are: each Packages.gz and the pool files it lists, each of
    which must have the size and digest the index gives."""
    out: dict[str, Repository] = {}
    for index in sorted(repo.glob("*/*/dists/*/main/binary-*/Packages.gz")):
        base = index.parents[4]
        if CONF.fullmatch(base.name) is None:
            continue
        raw = safefile.read_regular(index, 64 << 20)
        entries = []
        for stanza in parse_packages(decompress_index(raw, str(index)), str(index)):
            filename = stanza.get("Filename", "")
            if not _POOL.fullmatch(filename):
                raise RepositoryError(f"{index}: Filename {filename!r} is not pool/NAME.deb")
            data = safefile.read_regular(base / filename, 2 << 30)
            entry = Entry(filename, stanza.get("Package", ""), stanza.get("Version", ""), len(data),
                          hashlib.sha256(data).hexdigest())
            if (str(entry.size), entry.sha256) != (stanza.get("Size"), stanza.get("SHA256")):
                raise RepositoryError(f"{base / filename}: its size or SHA-256 is not the one {index} lists",
                                      hint="publish the repository again")
            entries.append(entry)
        name = f"{base.parent.name}/{base.name}"
        out[name] = Repository(name, str(index.relative_to(base)), len(raw), hashlib.sha256(raw).hexdigest(),
                               tuple(sorted(entries, key=lambda e: e.filename)))
    if not out:
        raise RepositoryError(f"{repo}: no update repository (<dist>/<conf>/dists/.../Packages.gz) found")
    return out


def release_of(repositories: dict[str, Repository]) -> str:
    """The release: the version of clip-core-conf (else of the first conf package listed)."""
    for conf in ("clip-core-conf", "clip-apps-conf", "rm-core-conf", "rm-apps-conf"):
        for repo in repositories.values():
            if (entry := next((e for e in repo.packages if e.package == conf), None)) is not None:
                return entry.version
    raise RepositoryError("no conf package in the repositories: nothing says which release this is")


def write_draft(repo: Path, species: str) -> Path:
    """REPO/release.json, unsigned: what the controller is asked to sign."""
    if not _NAME.fullmatch(species):
        raise RepositoryError(f"species {species!r}: lower-case letters, digits and '-' expected")
    repositories = describe(repo)
    statement = Statement(species, release_of(repositories), repositories)
    path = repo / METADATA
    data = {"signed": statement.to_signed(), "signatures": []}
    safefile.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


def sign_repository(repo: Path, signer: SigningKey, policy: Policy, *, expires_days: int = DEFAULT_EXPIRES_DAYS,
                    version: int | None = None, species: str = "", now: dt.datetime | None = None) -> Statement:
    """Sign REPO's release metadata: the repository as its files are now, which must be the draft's (or the
    previous statement's), with a version above the previous one and the policy's current CRLs."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    if not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise SigningError(f"--expires {expires_days}: between 1 and {MAX_EXPIRES_DAYS} days")
    previous = _previous(repo)
    repositories = describe(repo)
    if previous is not None and previous.repositories != repositories:
        changed = sorted(set(previous.repositories) ^ set(repositories)) or sorted(
            n for n in repositories if previous.repositories.get(n) != repositories[n])
        raise SigningError(f"{repo / METADATA}: the repository is not the one described there ({changed[0]} "
                           "differs): it changed after it was published; nothing signed",
                           hint="publish it again (clipbuild repo publish --species ...), then sign")
    species = species or (previous.species if previous else "")
    if not species:
        raise SigningError(f"{repo / METADATA} is missing: say which species the release is for (--species)")
    floor = previous.version + 1 if previous and previous.version else 1
    chosen = max(int(now.timestamp()), floor) if version is None else version
    if chosen < floor:
        raise SigningError(f"--version {chosen}: the repository's metadata is at version {floor - 1}; versions only "
                           "grow")
    statement = Statement(species, release_of(repositories), repositories, chosen, now.strftime(_DATE),
                          (now + dt.timedelta(days=expires_days)).strftime(_DATE), _crls(policy))
    safefile.write_atomic(repo / METADATA, envelope.sign(statement.to_signed(), signer))
    return statement


def _previous(repo: Path) -> Statement | None:
    path = repo / METADATA
    if not os.path.lexists(path):
        return None
    raw = safefile.read_regular(path, envelope.MAX_BYTES)
    try:
        data = json.loads(raw)
        return parse(data["signed"], str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise SigningError(f"{path}: cannot read the previous metadata ({exc}); remove it to start over") from None


def _crls(policy: Policy) -> dict[str, tuple[str, ...]]:
    return {role.role: tuple(sorted(c.public_bytes(serialization.Encoding.PEM).decode() for c in role.crls))
            for role in (policy.developer, policy.controller)}


# -- reading and checking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """Release metadata as read: the envelope, its statement and its bytes."""

    envelope: envelope.Envelope
    statement: Statement
    raw: bytes
    where: str


def read(path: Path) -> Signed:
    """A metadata file (a regular file, not a link, bounded), parsed, not yet verified."""
    where = str(path)
    try:
        raw = envelope.read_file(path)
    except NotAFile as exc:
        if not os.path.lexists(path):
            raise RepositoryError(f"{path}: no signed release metadata: an update must come with it",
                                  hint="make releases with clipbuild release; sign with clipbuild repo "
                                       "sign-metadata") from None
        raise RepositoryError(str(exc)) from None
    signed = envelope.read(raw, where)
    return Signed(signed, parse(signed.signed, where), raw, where)


def parse(signed: Any, where: str) -> Statement:
    """The statement's shape, strictly: every key, type and form; errors name the key."""
    data = _object(signed, where, "signed", {"type", "format", "species", "release", "version", "issued",
                                             "expires", "crls", "repositories"})
    if data["type"] != TYPE or data["format"] != FORMAT:
        raise RepositoryError(f"{where}: not clipbuild release metadata of format {FORMAT} (type {data['type']!r}, "
                              f"format {data['format']!r})")
    species = _text(data["species"], where, "species", _NAME)
    release = _text(data["release"], where, "release", _VERSION)
    version = _integer(data["version"], where, "version")
    issued, expires = (_text(data[k], where, k) for k in ("issued", "expires"))
    for key, value in (("issued", issued), ("expires", expires)):
        if value:
            _date(value, f"{where}: {key}")
    crls = _object(data["crls"], where, "crls", None)
    roles = {role: tuple(_text(p, where, f"crls.{role}") for p in _list(pems, where, f"crls.{role}"))
             for role, pems in crls.items() if role in ("developer", "controller")}
    if set(crls) - {"developer", "controller"}:
        raise RepositoryError(f"{where}: crls: only developer and controller")
    repos = _object(data["repositories"], where, "repositories", None)
    repositories = {name: _repository(name, value, where) for name, value in repos.items()}
    return Statement(species, release, repositories, version, issued, expires, roles)


def _repository(name: str, value: Any, where: str) -> Repository:
    dist, _, conf = name.partition("/")
    match = CONF.fullmatch(conf)
    if match is None or match["dist"] != dist:
        raise RepositoryError(f"{where}: repositories.{name}: not <dist>/<conf package>")
    data = _object(value, where, f"repositories.{name}", {"index", "packages"})
    index = _object(data["index"], where, f"repositories.{name}.index", {"path", "size", "sha256"})
    key = f"repositories.{name}"
    entries = []
    for number, item in enumerate(_list(data["packages"], where, f"{key}.packages")):
        at = f"{key}.packages[{number}]"
        raw = _object(item, where, at, {"filename", "package", "version", "size", "sha256"})
        entries.append(Entry(_text(raw["filename"], where, f"{at}.filename", _POOL),
                             _text(raw["package"], where, f"{at}.package", re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")),
                             _text(raw["version"], where, f"{at}.version", _VERSION),
                             _integer(raw["size"], where, f"{at}.size"),
                             _text(raw["sha256"], where, f"{at}.sha256", _HEX)))
    if len({e.filename for e in entries}) != len(entries) or len({e.package for e in entries}) != len(entries):
        raise RepositoryError(f"{where}: {key}.packages: a file or a package is listed twice")
    return Repository(name, _text(index["path"], where, f"{key}.index.path", _INDEX),
                      _integer(index["size"], where, f"{key}.index.size"),
                      _text(index["sha256"], where, f"{key}.index.sha256", _HEX), tuple(entries))


def fresh_policy(policy: Policy, statement: Statement) -> Policy:
    """`policy` with, for each CA, the newest CRL among its own and the statement's that the CA signed. A CRL
    is its CA's own statement: one the CA did not sign is ignored, never trusted."""
    def role(current: RolePolicy) -> RolePolicy:
        best = {crl.issuer: crl for crl in current.crls}
        for pem in statement.crls.get(current.role, ()):
            try:
                crl = x509.load_pem_x509_crl(pem.encode())
            except ValueError:
                continue
            ca = next((c for c in current.cas if c.subject == crl.issuer), None)
            if ca is None or not crl_signed_by(crl, ca):
                continue
            if crl.issuer not in best or _newness(crl) > _newness(best[crl.issuer]):
                best[crl.issuer] = crl
        return replace(current, crls=tuple(best.values()))
    return replace(policy, developer=role(policy.developer), controller=role(policy.controller))


def _newness(crl: x509.CertificateRevocationList) -> tuple[int, dt.datetime]:
    """CRLs of one CA in issue order: by CRL number (RFC 5280 §5.2.3), then by date."""
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = -1
    return number, crl.last_update_utc


@dataclass(frozen=True)
class Seen:
    """The newest metadata an image has accepted, and where that was read."""

    version: int
    sha256: str
    where: str


def check(found: Signed, policy: Policy, *, species: str, seen: Seen | None, now: dt.datetime) -> list[str]:
    """Every reason to refuse the metadata (empty: accepted). `policy` is the device's, its CRLs refreshed."""
    statement, where = found.statement, found.where
    problems = [f"{where}: signature refused ({envelope.signer_subject(found.envelope)}): {p}"
                for p in envelope.verify(found.envelope, policy.role(SIGNING_ROLE), now)]
    if problems:
        return problems  # nothing else in an unauthenticated document is worth reporting
    if statement.species != species:
        problems.append(f"{where}: a release of {statement.species}, this image is {species}")
    if now > statement.expires_at:
        days = (now - statement.expires_at).days
        problems.append(f"{where}: expired on {statement.expires} ({days} days ago): a mirror may be holding this "
                        "device at an old release (freeze); the controller re-signs current metadata with "
                        "clipbuild repo sign-metadata")
    if statement.issued_at > now + SKEW:
        problems.append(f"{where}: issued {statement.issued}, in the future")
    if statement.version > int((now + SKEW).timestamp()):
        problems.append(f"{where}: version {statement.version} is beyond today's ({int(now.timestamp())}): "
                        "versions are signing times; refused (fast-forward)")
    if seen is not None and statement.version < seen.version:
        problems.append(f"{where}: version {statement.version} is older than version {seen.version}, which this "
                        f"image has already accepted ({seen.where}): replay refused (rollback)")
    elif seen is not None and statement.version == seen.version and found.envelope.sha256 != seen.sha256:
        problems.append(f"{where}: version {statement.version} is the version this image accepted "
                        f"({seen.where}) with another content: refused")
    return problems


def read_record(raw: bytes, where: str, policy: Policy) -> Seen:
    """A record an image keeps of metadata it accepted: genuine (its signature chains to the device's
    controller CA; time and revocation aside: it was checked when it was accepted) or an error."""
    signed = envelope.read(raw, where)
    statement = parse(signed.signed, where)
    role = revocation_aside(policy).role(SIGNING_ROLE)
    if problems := envelope.verify(signed, role, statement.issued_at):
        raise RepositoryError(f"{where}: the record of accepted release metadata does not verify "
                              f"({problems[0]}): the image was edited", hint="restore the image from a copy")
    return Seen(statement.version, signed.sha256, where)


# -- small strict readers -----------------------------------------------------------------------------------


def _date(text: str, where: str = "date") -> dt.datetime:
    try:
        return dt.datetime.strptime(text, _DATE).replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        raise RepositoryError(f"{where}: {text!r} is not a date like 2026-11-30T12:00:00Z") from None


def _object(value: Any, where: str, key: str, keys: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RepositoryError(f"{where}: {key}: an object is expected")
    if keys is not None and set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        raise RepositoryError(f"{where}: {key}: " + (f"missing {missing[0]}" if missing else f"unknown key {extra[0]}"))
    return value


def _list(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise RepositoryError(f"{where}: {key}: a list is expected")
    return value


def _text(value: Any, where: str, key: str, form: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (form is not None and not form.fullmatch(value)):
        raise RepositoryError(f"{where}: {key}: {str(value)[:80]!r} is not a valid value")
    return value


def _integer(value: Any, where: str, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RepositoryError(f"{where}: {key}: a non-negative integer is expected")
    return value
