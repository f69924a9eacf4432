"""Subject rules of trust policies, in two forms.

`subject`: a Python regular expression that must match the whole RFC 4514 subject (`CN=developer-1,O=...`,
most specific first). Anchored, so `x\\,CN=controller-1` in a CN cannot satisfy `CN=controller-.*`.

`subject_ere`: gen-crypt's form, reused unchanged: a POSIX extended regular expression *searched* (as regexec
does) in OpenSSL's one-line subject, `C=FR, ST=..., O=..., CN=NAME` (certificate order, `, ` between RDNs,
` + ` inside one, RFC 4514 escaping of values, so a `,` inside a value reads `\\,`). POSIX classes like
`[[:alnum:]]` are translated; Python-only escapes (`\\d`, `\\w`, `(?...)`) are refused as not ERE.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from clipbuild.core.errors import InputError

_SHORT_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber",
                NameOID.GIVEN_NAME: "GN", NameOID.SURNAME: "SN", NameOID.TITLE: "title"}
_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z", "upper": "A-Z",
            "space": r" \t\n\r\f\v", "blank": r" \t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
            "xdigit": "0-9A-Fa-f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e", "cntrl": r"\x00-\x1f\x7f"}


def rfc4514(name: x509.Name) -> str:
    return name.rfc4514_string()


def oneline(name: x509.Name) -> str:
    """OpenSSL's one-line form, as gen-crypt matched it: `C=FR, O=..., CN=NAME`."""
    return ", ".join(" + ".join(a.rfc4514_string(_SHORT_NAMES) for a in rdn) for rdn in name.rdns)


def ere_to_python(pattern: str, where: str) -> str:
    """A POSIX ERE as the equivalent Python pattern; InputError on what ERE does not define."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            end, text = _bracket(pattern, i, where)
            out.append(text)
            i = end
            continue
        if char == "\\":
            following = pattern[i + 1:i + 2]
            if not following or following.isalnum():
                raise InputError(f"{where}: `\\{following}` is not POSIX ERE (escape only punctuation)")
            out.append("\\" + following)
            i += 2
            continue
        if pattern.startswith("(?", i):
            raise InputError(f"{where}: `(?` is not POSIX ERE")
        out.append(char)
        i += 1
    return "".join(out)


def compile_ere(pattern: str, where: str) -> re.Pattern[str]:
    """A POSIX ERE compiled, or InputError naming `where`."""
    try:
        return re.compile(ere_to_python(pattern, where))
    except (re.error, RecursionError, OverflowError) as exc:
        raise InputError(f"{where}: not a POSIX extended regular expression ({exc})") from None


def _bracket(pattern: str, start: int, where: str) -> tuple[int, str]:
    """The bracket expression at `start`: (index after it, Python text)."""
    i = start + 1
    out = ["["]
    if pattern[i:i + 1] == "^":
        out.append("^")
        i += 1
    if pattern[i:i + 1] == "]":
        out.append(r"\]")
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2:end] if end > 0 else ""
            if name not in _CLASSES:
                raise InputError(f"{where}: unknown character class [:{name}:]")
            out.append(_CLASSES[name])
            i = end + 2
            continue
        out.append("\\" + pattern[i] if pattern[i] in "\\[&~|" else pattern[i])
        i += 1
    if i >= len(pattern):
        raise InputError(f"{where}: unterminated bracket expression")
    return i + 1, "".join(out) + "]"


def problems(cert: x509.Certificate, role: str, subject: str, subject_ere: str) -> list[str]:
    """The subject rules `cert` breaks, in words."""
    found = []
    text = rfc4514(cert.subject)
    if subject and not re.fullmatch(subject, text):
        found.append(f"subject {text} does not match the {role} pattern {subject!r} (the whole subject must match)")
    if subject_ere:
        line = oneline(cert.subject)
        if not compile_ere(subject_ere, f"{role}.subject_ere").search(line):
            found.append(f"subject {line} does not match the {role} gen-crypt pattern {subject_ere!r}")
    return found
