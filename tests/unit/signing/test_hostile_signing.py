"""Hostile input against signing, policies and the PKI (P10 items 6-10): every case is built here by code
(the project's own `pki init`, or cryptography), and each asserts the refusal, its reason, and that nothing
outside what was asked changed. No case may end in a traceback or hang."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from clipbuild.core.errors import ArError, InputError, NotAFile
from clipbuild.formats import ar
from clipbuild.signing import batch, pki, signer, trust

from .test_signing import AT, SECRET, VECTORS, _signed, issued_signer
from .test_signing import _signer as _key

UNSIGNED = VECTORS / "vectortest_1.0_all.unsigned.deb"


def _policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def _role(ca: Path, crl: Path | None = None, extra: str = "") -> str:
    """A role of a policy, inline: `{ca: [CA], crl: [CRL]EXTRA}`; `crl` defaults to the CA's own."""
    crl = crl or ca.with_name(ca.name.replace(".pem", ".crl.pem"))
    return f"{{ca: [{ca}], crl: [{crl}]{extra}}}"


def _policy(tmp_path: Path, developer: str, controller: str) -> Path:
    return _policy_file(tmp_path, f"developer: {developer}\ncontroller: {controller}\n")


def _refused(path: Path, words: str) -> None:
    with pytest.raises(InputError) as exc:
        trust.load_policy(path)
    assert words in str(exc.value) + exc.value.hint
    assert str(path) in str(exc.value)


def _clean_error(result, *, code: tuple[int, ...] = (1, 2)) -> str:
    """One `error:` line, a known exit code, no traceback."""
    assert result.code in code, (result.code, result.err)
    assert result.err.startswith("error: ") and "unexpected" not in result.err and "Traceback" not in result.err
    return result.err


# -- item 6: policies ------------------------------------------------------------------------------------------


def test_one_ca_for_both_roles_is_refused(our_pki, tmp_path):
    dev = _role(our_pki / "developer-ca.pem")
    _refused(_policy(tmp_path, dev, dev), "is trusted for both roles")


def test_one_ca_key_under_two_certificates_is_refused(our_pki, tmp_path):
    """A second CA certificate over the developer CA's key is the same signer in disguise."""
    key = serialization.load_pem_private_key((our_pki / "developer-ca.key").read_bytes(), SECRET)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another controller CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "twin.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path = _policy(tmp_path, _role(our_pki / "developer-ca.pem"), "{ca: [twin.pem], allow_no_crl: true}")
    _refused(path, "is trusted for both roles")


def test_a_crl_of_another_ca_is_refused(our_pki, tmp_path):
    path = _policy(tmp_path, _role(our_pki / "developer-ca.pem", our_pki / "controller-ca.crl.pem"),
                   _role(our_pki / "controller-ca.pem"))
    _refused(path, "developer.crl: the CRL of CN=clipbuild controller CA")


def test_a_crl_with_the_right_issuer_name_but_a_foreign_signature_is_refused(our_pki, tmp_path):
    other = tmp_path / "other"
    pki.init(other, SECRET)  # same CA names, other keys
    path = _policy(tmp_path, _role(our_pki / "developer-ca.pem", other / "developer-ca.crl.pem"),
                   _role(our_pki / "controller-ca.pem"))
    _refused(path, "is not issued and signed by a developer CA")


def test_subject_patterns_are_anchored(our_pki):
    rogue = issued_signer(our_pki, "controller", "CN=x\\,CN=controller-1,O=clipbuild test PKI")
    data = signer.sign_bytes(UNSIGNED.read_bytes(), "developer", _key(our_pki, "developer-1"))
    data = signer.sign_bytes(data, "controller", rogue)
    verdict = trust.verify_bytes(data, trust.load_policy(our_pki / "policy.yaml"))
    assert verdict.reasons == (
        "ctrl_sign: subject CN=x\\,CN=controller-1,O=clipbuild test PKI does not match the controller pattern "
        "'CN=controller-[A-Za-z0-9._-]+,O=clipbuild test PKI' (the whole subject must match)",)


def test_pki_issue_name_cannot_leave_the_pki_folder(our_pki, clipbuild, monkeypatch):
    monkeypatch.setenv(signer.PASSPHRASE_ENV, SECRET.decode())
    before = sorted(p.name for p in our_pki.parent.iterdir())
    for name in ("../x", "/tmp/x", "a/b", ".hidden", "x,CN=controller-1"):
        err = _clean_error(clipbuild("pki", "issue", str(our_pki), "--role", "developer", "--name", name),
                           code=(2,))
        assert "a signer name is letters, digits" in err
    assert sorted(p.name for p in our_pki.parent.iterdir()) == before


def _batch(tmp_path: Path, directory: Path, count: int = 2) -> Path:
    box = tmp_path / "batch"
    box.mkdir()
    signed = signer.sign_bytes(UNSIGNED.read_bytes(), "developer", _key(directory, "developer-1"))
    for index in range(count):
        (box / f"p{index}.deb").write_bytes(signed)
    return box


def test_countersign_never_follows_a_planted_temporary(our_pki, tmp_path):
    box = _batch(tmp_path, our_pki)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for suffix in (".json", ".txt"):
        (box / f".{batch.REPORT}{suffix}.tmp").symlink_to(victim)
    batch.countersign(box, _key(our_pki, "controller-1"), trust.load_policy(our_pki / "policy.yaml"))
    assert victim.read_text() == "precious\n"
    assert not (box / f"{batch.REPORT}.json").is_symlink()
    assert json.loads((box / f"{batch.REPORT}.json").read_text())[0]["file"] == "p0.deb"


def test_a_package_swapped_after_the_check_is_not_what_gets_signed(our_pki, tmp_path, monkeypatch):
    box = _batch(tmp_path, our_pki, count=1)
    checked = (box / "p0.deb").read_bytes()
    real_check = batch._check

    def check_then_swap(staged, policy):
        verdict = real_check(staged, policy)
        (box / "p0.deb").write_bytes(UNSIGNED.read_bytes())  # the attacker's package, never checked
        return verdict

    monkeypatch.setattr(batch, "_check", check_then_swap)
    policy = trust.load_policy(our_pki / "policy.yaml")
    batch.countersign(box, _key(our_pki, "controller-1"), policy)
    result = (box / "p0.deb").read_bytes()
    assert result.startswith(checked) and trust.verify_bytes(result, policy).ok


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_batch_entry_that_is_not_a_file_refuses_the_batch(our_pki, tmp_path, kind):
    box = _batch(tmp_path, our_pki)
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    odd = box / "odd.deb"
    {"symlink": lambda: odd.symlink_to(box / "p0.deb"), "fifo": lambda: os.mkfifo(odd),
     "directory": odd.mkdir}[kind]()
    words = {"symlink": "symbolic link", "fifo": "FIFO", "directory": "directory"}[kind]
    with pytest.raises(NotAFile, match=f"odd.deb: it is a {words}"):
        batch.countersign(box, _key(our_pki, "controller-1"), trust.load_policy(our_pki / "policy.yaml"))
    assert {p.name: p.read_bytes() for p in box.iterdir() if p.is_file() and not p.is_symlink()} == before
    assert not [p for p in box.iterdir() if p.name.endswith(".tmp")]


# -- item 7: gen-crypt's rules ----------------------------------------------------------------------------------


def test_an_expired_ca_is_refused_as_a_trust_anchor(tmp_path):
    directory = tmp_path / "short"
    pki.init(directory, SECRET, pki.PkiSettings(ca_days=2, leaf_days=730))
    data = _signed(directory)
    policy = trust.load_policy(directory / "policy.yaml")
    assert trust.verify_bytes(data, policy).ok
    later = trust.verify_bytes(data, policy, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    assert any("the developer CA CN=clipbuild developer CA,O=clipbuild test PKI: certificate has expired" in r
               for r in later.reasons)
    assert any("the controller CA" in r and "certificate has expired" in r for r in later.reasons)


def test_a_policy_without_crl_is_refused_unless_it_opts_out(our_pki, tmp_path, clipbuild, caplog):
    roles = f"""
developer: {{ca: [{our_pki}/developer-ca.pem]%s}}
controller: {{ca: [{our_pki}/controller-ca.pem], crl: [{our_pki}/controller-ca.crl.pem]}}
"""
    _refused(_policy_file(tmp_path, roles % ""), "developer: no crl: revocation would not be checked")
    _refused(_policy_file(tmp_path, roles % ", allow_no_crl: 'yes'"), "allow_no_crl: 'yes' is not a bool")
    policy_path = _policy_file(tmp_path, roles % ", allow_no_crl: true")
    deb = tmp_path / "p.deb"
    deb.write_bytes(_signed(our_pki))
    shutil.copy(deb, tmp_path / "q.deb")
    result = clipbuild("verify", "--policy", str(policy_path), str(deb), str(tmp_path / "q.deb"))
    assert result.code == 0
    warnings = [r.getMessage() for r in caplog.records if "allow_no_crl" in r.getMessage()]
    assert len(warnings) == 2 and "p.deb" in warnings[0] and "q.deb" in warnings[1]


def test_a_crl_missing_for_one_of_the_role_s_cas_refuses_its_signers(our_pki, tmp_path):
    other = tmp_path / "other"
    pki.init(other, SECRET, pki.PkiSettings(organisation="second"))
    two_cas = f"{{ca: [{our_pki}/developer-ca.pem, {other}/developer-ca.pem], crl: [{our_pki}/developer-ca.crl.pem]}}"
    path = _policy(tmp_path, two_cas, _role(our_pki / "controller-ca.pem"))
    data = signer.sign_bytes(UNSIGNED.read_bytes(), "developer", _key(other, "developer-1"))
    data = signer.sign_bytes(data, "controller", _key(our_pki, "controller-1"))
    reasons = trust.verify_bytes(data, trust.load_policy(path)).reasons
    assert any("no CRL of the developer CA CN=clipbuild developer CA,O=second" in r for r in reasons)


def test_gen_crypt_subject_patterns_keep_their_meaning(tmp_path):
    legacy = "[_|-|[:alnum:]]+-DEV[_|-|[:alnum:]]+"
    path = _policy_file(tmp_path, f"""
developer: {{ca: [{VECTORS}/dev-ca.pem], crl: [{VECTORS}/dev-ca.crl.pem], subject_ere: '{legacy}'}}
controller: {{ca: [{VECTORS}/ctrl-ca.pem], crl: [{VECTORS}/ctrl-ca.crl.pem],
              subject_ere: '^C=FR, ST=Ile de France, L=Paris, O=ANSSI, OU=[[:digit:] ]+, CN=TEST-CONTROLLER-[0-9]+$'}}
""")
    policy = trust.load_policy(path)
    assert trust.verify_file(VECTORS / "vectortest_1.0_all.good.deb", policy, at=AT).ok
    strict = _policy_file(tmp_path, path.read_text().replace("CONTROLLER-[0-9]+$", "CONTROLLER-2$"))
    reasons = trust.verify_file(VECTORS / "vectortest_1.0_all.good.deb", trust.load_policy(strict), at=AT).reasons
    assert reasons == ("ctrl_sign: subject C=FR, ST=Ile de France, L=Paris, O=ANSSI, OU=0002 000000000, "
                       "CN=TEST-CONTROLLER-1 does not match the controller gen-crypt pattern "
                       "'^C=FR, ST=Ile de France, L=Paris, O=ANSSI, OU=[[:digit:] ]+, CN=TEST-CONTROLLER-2$'",)


@pytest.mark.parametrize(("pattern", "words"), [
    ("\\d+", "`\\d` is not POSIX ERE"), ("(?i)dev", "`(?` is not POSIX ERE"),
    ("[[:word:]]", "unknown character class [:word:]"), ("[abc", "unterminated bracket expression")])
def test_patterns_that_are_not_ere_are_refused(our_pki, tmp_path, pattern, words):
    path = _policy(tmp_path, _role(our_pki / "developer-ca.pem", extra=f", subject_ere: {json.dumps(pattern)}"),
                   _role(our_pki / "controller-ca.pem"))
    _refused(path, words)


# -- item 8: malformed policies, files that are not files, no traceback -------------------------------------------


@pytest.mark.parametrize(("body", "words"), [
    (b"developer: {ca: 5}\ncontroller: {ca: x}\n", "developer.ca: a file name or a list of file names, not 5"),
    (b"developer: {ca: [a.pem], subject: [1]}\ncontroller: {ca: x}\n", "developer.ca: "),
    (b"- a\n- b\n", "exactly two keys"),
    (b"developer: \xff\xfe\ncontroller: x\n", "the trust policy is not UTF-8 text (byte 11)"),
    (b"developer: [" * 2000 + b"\n", "cannot read the trust policy"),
    (b"developer: !!python/object:os.system x\ncontroller: {}\n", "cannot read the trust policy"),
    (b"developer: {ca: x}\ncontroller: {ca: x}\nmirror: {}\n", "exactly two keys"),
    (b"developer: {ca: [], 7: 1}\ncontroller: {ca: x}\n", "needs at least `ca: [CA certificate files]`"),
])
def test_malformed_policies_are_refused_with_file_and_reason(tmp_path, clipbuild, body, words):
    path = tmp_path / "policy.yaml"
    path.write_bytes(body)
    _refused(path, words)
    err = _clean_error(clipbuild("verify", "--policy", str(path), str(UNSIGNED)), code=(2,))
    assert str(path) in err


def test_policy_values_of_the_wrong_type_are_refused(our_pki, tmp_path):
    base = f"ca: [{our_pki}/developer-ca.pem], crl: [{our_pki}/developer-ca.crl.pem]"
    ctrl = f"controller: {{ca: [{our_pki}/controller-ca.pem], crl: [{our_pki}/controller-ca.crl.pem]}}\n"
    for extra, words in ((", subject: [1]", "developer.subject: [1] is not a str"),
                         (", min_validity_days: '90'", "developer.min_validity_days: '90' is not a int"),
                         (", min_validity_days: 10000000000000000000000", "is not between 0 and 36500"),
                         (", min_validity_days: true", "is not a int"),
                         (", subject: '('", "developer.subject: not a regular expression"),
                         (", crl: {a: b}", "developer.crl: a file name or a list")):
        _refused(_policy_file(tmp_path, f"developer: {{{base}{extra}}}\n{ctrl}"), words)


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling", "sparse"])
def test_verify_and_sign_refuse_what_is_not_a_package_file(our_pki, tmp_path, clipbuild, kind, monkeypatch):
    monkeypatch.setenv(signer.PASSPHRASE_ENV, SECRET.decode())
    path = tmp_path / "p.deb"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    else:
        with path.open("wb") as stream:
            stream.truncate(3 << 30)  # 3 GiB, sparse
    expected = {"directory": "it is a directory", "fifo": "it is a FIFO",
                "dangling": "symbolic link that leads nowhere", "sparse": "more than the 2147483648 bytes"}[kind]
    verdict = trust.verify_file(path, trust.load_policy(our_pki / "policy.yaml"))
    assert not verdict.ok and expected in verdict.reasons[0]
    result = clipbuild("verify", "--policy", str(our_pki / "policy.yaml"), str(path))
    assert (result.code, expected in result.out) == (1, True) or "is a directory" in result.err
    result = clipbuild("sign", "--role", "developer", "--key", str(our_pki / "developer-1.key"),
                       "--cert", str(our_pki / "developer-1.pem"), str(path))
    if kind in ("fifo", "sparse"):  # click itself refuses a directory and a dangling link, as usage errors
        assert expected in _clean_error(result)
    else:
        assert result.code == 2 and "Traceback" not in result.err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sign_refuses_a_symlink_and_keeps_a_file_s_mode(our_pki, tmp_path):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    deb.chmod(0o600)
    link = tmp_path / "link.deb"
    link.symlink_to(deb)
    with pytest.raises(NotAFile, match=r"link\.deb: it is a symbolic link"):
        signer.sign_file(link, "developer", _key(our_pki, "developer-1"))
    assert link.is_symlink() and deb.read_bytes() == UNSIGNED.read_bytes()
    signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.stat().st_mode & 0o777 == 0o600 and deb.read_bytes().startswith(UNSIGNED.read_bytes())


def test_pki_revoke_on_a_non_certificate(our_pki, tmp_path, clipbuild, monkeypatch):
    monkeypatch.setenv(signer.PASSPHRASE_ENV, SECRET.decode())
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"\x00not a certificate\xff")
    crl = (our_pki / "developer-ca.crl.pem").read_bytes()
    err = _clean_error(clipbuild("pki", "revoke", str(our_pki), str(junk)), code=(2,))
    assert f"error: {junk}: not a PEM certificate" in err
    assert (our_pki / "developer-ca.crl.pem").read_bytes() == crl


# -- item 10 ------------------------------------------------------------------------------------------------------


def test_ar_errors_after_the_first_member_name_the_archive(our_pki):
    data = bytearray(UNSIGNED.read_bytes())
    second = ar.parse(bytes(data))[1].header_offset
    data[second + 40:second + 48] = b"rw-r--r-"
    with pytest.raises(ArError) as exc:
        ar.parse(bytes(data), what="package")
    assert str(exc.value) == f"package: member header at byte {second}: mode b'rw-r--r-' is not a number"


def test_verify_json_gives_the_sha256_of_accepted_packages(our_pki, tmp_path, clipbuild):
    deb = tmp_path / "p.deb"
    deb.write_bytes(_signed(our_pki))
    result = clipbuild("verify", "--json", "--policy", str(our_pki / "policy.yaml"), str(deb))
    assert json.loads(result.out)[0]["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()


def test_countersigning_under_a_policy_without_crl_warns_for_every_package(our_pki, tmp_path, caplog):
    box = _batch(tmp_path, our_pki, count=2)
    path = _policy(tmp_path, f"{{ca: [{our_pki}/developer-ca.pem], allow_no_crl: true}}",
                   _role(our_pki / "controller-ca.pem"))
    batch.countersign(box, _key(our_pki, "controller-1"), trust.load_policy(path))
    warned = [r.getMessage() for r in caplog.records if "opts out of CRLs for the developer" in r.getMessage()]
    assert [Path(w.split(": ")[0]).name for w in warned] == ["p0.deb", "p1.deb"]
