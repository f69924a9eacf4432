"""CLIP's double signature: the original tools' test vectors, our own PKI, every rule, tampering, fuzzing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from clipbuild.core import errors
from clipbuild.core.errors import InputError
from clipbuild.formats import ar, clipsig
from clipbuild.signing import batch, pki, signer, trust
from tests.conftest import ROOT

# A copy of shared/vectors/gencrypt-bp256: packages signed and checked by the original CLIP OS 4 tools.
VECTORS = ROOT / "tests" / "data" / "vectors" / "gencrypt-bp256"
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SECRET = b"correct horse battery staple"

# The original gen-crypt `check` verdicts (shared/vectors/gencrypt-bp256/README.md), and the rule we name.
EXPECTED = {
    "vectortest_1.0_all.good.deb": None,
    "vectortest_1.0_all.good-oddsiglen.deb": None,
    "vectortest_1.0_all.unsigned.deb": "no dev_sign",
    "bad-a_datatar-byteflip.deb": "dev_sign: the signature does not match",
    "bad-b_ctrl-signed-by-dev-cert.deb": "is not issued by the controller CA",
    "bad-c_dev-only.deb": "no ctrl_sign",
    "bad-d1_sign-members-swapped.deb": "ctrl_sign comes before dev_sign",
    "bad-d2_ctrl-then-dev.deb": "ctrl_sign comes before dev_sign",
    "bad-e_dev-cert-revoked.deb": "is revoked since",
    "bad-f_dev-signed-by-ctrl-cert.deb": "is not issued by the developer CA",
    "bad-g_ctrl-sig-tampered.deb": "ctrl_sign: the signature does not match",
    # The original accepts an extra member; clipbuild refuses it, and says why.
    "div-h_extra-member-before-dev_sign.deb": "extra member _extra after data.tar",
}


@pytest.fixture(scope="module")
def vector_policy(tmp_path_factory) -> trust.Policy:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(f"""
developer: {{ca: [{VECTORS}/dev-ca.pem], crl: [{VECTORS}/dev-ca.crl.pem], subject: ".*DEV.*"}}
controller: {{ca: [{VECTORS}/ctrl-ca.pem], crl: [{VECTORS}/ctrl-ca.crl.pem], subject: ".*CONT.*"}}
""")
    return trust.load_policy(path)


@pytest.mark.parametrize(("name", "refusal"), sorted(EXPECTED.items()))
def test_original_vectors_get_the_original_verdict(vector_policy, name, refusal):
    verdict = trust.verify_file(VECTORS / name, vector_policy, at=AT)
    if refusal is None:
        assert verdict.ok, verdict.reasons
        assert [s.digest for s in verdict.signers] == ["sha256", "sha256"]
        assert verdict.signers[0].subject.startswith("CN=TEST-DEVELOPER-1,")
    else:
        assert not verdict.ok
        assert any(refusal in r for r in verdict.reasons), verdict.reasons


def test_our_writer_reproduces_the_original_members_byte_for_byte():
    data = (VECTORS / "vectortest_1.0_all.good-oddsiglen.deb").read_bytes()
    layout = clipsig.read_layout(data)
    for sig in (layout.dev, layout.ctrl):
        date = int(data[sig.member.header_offset + 16:sig.member.header_offset + 28])
        rebuilt = clipsig.signature_member(sig.role, sig.certificate, sig.signature, date)
        assert rebuilt == data[sig.member.header_offset:sig.member.end]
        assert sig.length_header == "byte-swapped"


def _vector_signer(role: str) -> signer.SigningKey:
    prefix = "dev" if role == "developer" else "ctrl"
    return signer.load_signing_key(VECTORS / f"{prefix}-leaf.key.pem", VECTORS / f"{prefix}-leaf.pem", None)


def test_signing_the_original_unsigned_package_gives_the_original_layout(vector_policy):
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    original = clipsig.read_layout((VECTORS / "vectortest_1.0_all.good.deb").read_bytes())
    dev = signer.sign_bytes(unsigned, "developer", _vector_signer("developer"), date=1795809790)
    both = signer.sign_bytes(dev, "controller", _vector_signer("controller"), date=1795809790)
    ours = clipsig.read_layout(both)
    assert [m.name for m in ours.members] == [m.name for m in original.members]
    assert both[:800] == unsigned and ours.dev.signed_length == 800
    assert ours.dev.certificate == original.dev.certificate
    assert trust.verify_bytes(both, vector_policy, at=AT).ok


def test_signing_is_deterministic(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    key = _vector_signer("developer")
    assert signer.sign_bytes(unsigned, "developer", key) == signer.sign_bytes(unsigned, "developer", key)


def _signer(directory: Path, name: str) -> signer.SigningKey:
    return signer.load_signing_key(directory / f"{name}.key", directory / f"{name}.pem", SECRET)


def _signed(directory: Path, dev: str = "developer-1", ctrl: str = "controller-1") -> bytes:
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    once = signer.sign_bytes(unsigned, "developer", _signer(directory, dev))
    return signer.sign_bytes(once, "controller", _signer(directory, ctrl))


def test_pki_keys_are_encrypted_and_usage_is_signature_only(our_pki):
    with pytest.raises(InputError, match="is encrypted: give --passphrase-file"):
        signer.load_signing_key(our_pki / "developer-1.key", our_pki / "developer-1.pem", None)
    with pytest.raises(InputError, match="wrong passphrase"):
        signer.load_signing_key(our_pki / "developer-1.key", our_pki / "developer-1.pem", b"nope")
    cert = x509.load_pem_x509_certificate((our_pki / "developer-1.pem").read_bytes())
    assert trust._usage_problems(cert) == []
    assert (our_pki / "developer-1.key").stat().st_mode & 0o077 == 0


def test_a_package_signed_with_our_pki_verifies(our_pki):
    policy = trust.load_policy(our_pki / "policy.yaml")
    verdict = trust.verify_bytes(_signed(our_pki), policy)
    assert verdict.ok, verdict.reasons
    assert [s.subject for s in verdict.signers] == ["CN=developer-1,O=clipbuild test PKI",
                                                    "CN=controller-1,O=clipbuild test PKI"]


def test_swapped_roles_are_refused(our_pki):
    policy = trust.load_policy(our_pki / "policy.yaml")
    verdict = trust.verify_bytes(_signed(our_pki, dev="controller-1", ctrl="developer-1"), policy)
    assert "dev_sign: certificate CN=controller-1,O=clipbuild test PKI is not issued by the developer CA " \
           "(CN=clipbuild developer CA,O=clipbuild test PKI)" in verdict.reasons
    assert any(r.startswith("ctrl_sign: certificate CN=developer-1") for r in verdict.reasons)


def test_subject_mismatch(our_pki):
    pki.issue(our_pki, "developer", "someone-1", SECRET)
    verdict = trust.verify_bytes(_signed(our_pki, dev="someone-1"), trust.load_policy(our_pki / "policy.yaml"))
    assert verdict.reasons == ("dev_sign: subject CN=someone-1,O=clipbuild test PKI does not match the developer "
                               "pattern 'CN=developer-[A-Za-z0-9._-]+,O=clipbuild test PKI' (the whole subject "
                               "must match)",)


def test_expired_and_not_yet_valid(our_pki):
    policy = trust.load_policy(our_pki / "policy.yaml")
    data = _signed(our_pki)
    late = trust.verify_bytes(data, policy, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=800))
    assert any("expired on" in r for r in late.reasons)
    early = trust.verify_bytes(data, policy, at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert any("is not yet valid" in r for r in early.reasons)


def test_a_stale_crl_fails_closed(our_pki):
    policy = trust.load_policy(our_pki / "policy.yaml")
    verdict = trust.verify_bytes(_signed(our_pki), policy, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=60))
    assert any("is stale" in r and "get a current one" in r for r in verdict.reasons)


def test_revocation(tmp_path):
    directory = tmp_path / "pki"
    pki.init(directory, SECRET)
    data = _signed(directory)
    pki.revoke(directory, directory / "developer-1.pem", SECRET)
    verdict = trust.verify_bytes(data, trust.load_policy(directory / "policy.yaml"))
    assert len(verdict.reasons) == 1 and "CN=developer-1" in verdict.reasons[0]
    assert "is revoked since" in verdict.reasons[0]


def test_wrong_key_usage_and_foreign_ca(our_pki, tmp_path):
    other = tmp_path / "other"
    pki.init(other, SECRET)
    verdict = trust.verify_bytes(_signed(other), trust.load_policy(our_pki / "policy.yaml"))
    assert any("is not issued by the developer CA" in r for r in verdict.reasons)
    # A CA certificate (keyCertSign, cRLSign) is no signer, even with the right CA above it.
    ca = x509.load_pem_x509_certificate((our_pki / "developer-ca.pem").read_bytes())
    assert trust._usage_problems(ca) == ["key usage is key_cert_sign, crl_sign, not digitalSignature only"]


def test_signing_refuses_a_certificate_near_expiry(our_pki):
    pki.issue(our_pki, "developer", "developer-short", SECRET, days=30)
    short = _signer(our_pki, "developer-short")
    with pytest.raises(errors.SigningError, match="has 29 days of validity left; signing needs at least 90"):
        signer.check_fit(short, "developer", trust.load_policy(our_pki / "policy.yaml").developer)


def test_signing_order_is_enforced(our_pki):
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    with pytest.raises(errors.SigningError, match="no developer signature to countersign"):
        signer.sign_bytes(unsigned, "controller", _signer(our_pki, "controller-1"))
    with pytest.raises(errors.SigningError, match="already signed by a developer"):
        signer.sign_bytes(_signed(our_pki), "developer", _signer(our_pki, "developer-1"))


def test_countersign_is_all_or_nothing(our_pki, tmp_path):
    box = tmp_path / "batch"
    box.mkdir()
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    good = signer.sign_bytes(unsigned, "developer", _signer(our_pki, "developer-1"))
    (box / "a.deb").write_bytes(good)
    (box / "b.deb").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # developer signature damaged
    (box / "c.deb").write_bytes(unsigned)
    policy = trust.load_policy(our_pki / "policy.yaml")
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    with pytest.raises(errors.BatchRefused) as exc:
        batch.countersign(box, _signer(our_pki, "controller-1"), policy)
    lines = exc.value.lines()
    assert lines[0].endswith("2 package(s) fail the developer check; nothing was countersigned")
    assert "  b.deb:" in lines and "  c.deb:" in lines and "  a.deb:" not in lines
    assert {p.name: p.read_bytes() for p in box.iterdir()} == before
    (box / "b.deb").unlink()
    (box / "c.deb").unlink()
    rows = batch.countersign(box, _signer(our_pki, "controller-1"), policy)
    assert [(r.package, r.version) for r in rows] == [("vectortest", "1.0")]
    assert rows[0].sha256_before != rows[0].sha256_after
    assert trust.verify_file(box / "a.deb", policy).ok
    assert (box / "batch-report.json").is_file() and "vectortest 1.0" in (box / "batch-report.txt").read_text()


def _allowed_unsigned_bytes(layout: clipsig.Layout, data: bytes) -> set[int]:
    """Bytes no signature covers and that carry no meaning: the date, uid, gid and mode fields of ctrl_sign's
    header and of its inner members' headers."""
    ctrl = layout.ctrl.member
    headers = [ctrl.header_offset]
    headers += [ctrl.data_offset + m.header_offset for m in ar.parse(data[ctrl.data_offset:ctrl.data_offset
                                                                          + ctrl.size])]
    return {h + i for h in headers for i in range(16, 48)}


def test_every_single_bit_flip_is_refused_unless_it_means_nothing(our_pki):
    data = _signed(our_pki)
    policy = trust.load_policy(our_pki / "policy.yaml")
    allowed = _allowed_unsigned_bytes(clipsig.read_layout(data), data)
    accepted = []
    for offset in range(len(data)):
        mutated = bytearray(data)
        mutated[offset] ^= 0x01
        if trust.verify_bytes(bytes(mutated), policy).ok:
            accepted.append(offset)
    assert accepted and set(accepted) <= allowed


def test_truncated_and_oversized_members(our_pki):
    data = _signed(our_pki)
    policy = trust.load_policy(our_pki / "policy.yaml")
    assert "is truncated" in trust.verify_bytes(data[:-10], policy).reasons[0]
    layout = clipsig.read_layout(data)
    huge = data[:layout.ctrl.member.header_offset] + ar.member("ctrl_sign", b"x" * 70000, 0, nul_name=True)
    assert "oversized" in trust.verify_bytes(huge, policy).reasons[0]
    assert trust.verify_bytes(b"", policy).reasons[0].endswith("bad magic)")


def test_dpkg_installs_a_countersigned_package(our_pki, tmp_path):
    from clipbuild.core.run import run

    deb = tmp_path / "vectortest.deb"
    deb.write_bytes(_signed(our_pki))
    root = tmp_path / "root"
    for sub in ("info", "updates", "triggers"):
        (root / "var/lib/dpkg" / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    run(["dpkg", f"--root={root}", f"--log={root}/dpkg.log", "--force-not-root", "-i", deb])
    assert (root / "usr/share/vectortest/hello.txt").is_file()


def test_der_certificate_export(our_pki):
    key = _signer(our_pki, "developer-1")
    assert key.cert_der == key.cert.public_bytes(Encoding.DER)
    shutil.rmtree(our_pki / "unused", ignore_errors=True)


@pytest.mark.parametrize(("curve", "digest"), [("p256", "sha256"), ("p384", "sha512"),
                                               ("brainpoolP256r1", "sha256")])
def test_every_curve_and_digest_round_trips(tmp_path, curve, digest):
    directory = tmp_path / "pki"
    pki.init(directory, SECRET, pki.PkiSettings(curve=curve, digest=digest))
    verdict = trust.verify_bytes(_signed(directory), trust.load_policy(directory / "policy.yaml"))
    assert verdict.ok, verdict.reasons
    assert [s.digest for s in verdict.signers] == [digest, digest]


def issued_signer(directory: Path, role: str, subject: str, *, key_encipherment: bool = False) -> signer.SigningKey:
    """A signer the role's CA of `directory` really issued, with the subject (RFC 4514) and usage chosen."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = x509.load_pem_x509_certificate((directory / f"{role}-ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / f"{role}-ca.key").read_bytes(), SECRET)
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=365))
            .add_extension(usage, critical=True).sign(ca_key, ca.signature_hash_algorithm))
    return signer.SigningKey(key, cert)


def test_a_signer_with_the_wrong_key_usage_is_refused(our_pki, tmp_path):
    wrong = issued_signer(our_pki, "developer", "CN=developer-9,O=clipbuild test PKI", key_encipherment=True)
    unsigned = (VECTORS / "vectortest_1.0_all.unsigned.deb").read_bytes()
    data = signer.sign_bytes(signer.sign_bytes(unsigned, "developer", wrong), "controller",
                             _signer(our_pki, "controller-1"))
    verdict = trust.verify_bytes(data, trust.load_policy(our_pki / "policy.yaml"))
    assert verdict.reasons == ("dev_sign: key usage is digital_signature, key_encipherment, not digitalSignature "
                               "only",)
    with pytest.raises(errors.SigningError, match="not digitalSignature only"):
        signer.check_fit(wrong, "developer", trust.load_policy(our_pki / "policy.yaml").developer)
