"""The IPsec PKI and the provisioning disks, through the command line as users meet them: certificates checked
with `cryptography` and with `openssl verify -crl_check`, the disks read back with mtools."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clipbuild.core.run import run
from clipbuild.image import provision
from clipbuild.signing import devpki, ipsecpki, pki

SECRET = "ipsec test passphrase"
MTOOLS = {"MTOOLS_SKIP_CHECK": "1"}
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on this machine")
needs_mtools = pytest.mark.skipif(shutil.which("mkfs.vfat") is None or shutil.which("mtype") is None,
                                  reason="dosfstools and mtools are not on this machine")


@pytest.fixture
def cli(clipbuild, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_PASSPHRASE", SECRET)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return clipbuild


@pytest.fixture
def ipsec(cli, tmp_path) -> Path:
    """An IPsec PKI with a gateway gw1 (one more address) and a client c1."""
    directory = tmp_path / "ipsec"
    assert cli("pki", "ipsec", "init", str(directory), "--org", "Example Org").code == 0
    assert cli("pki", "ipsec", "issue", str(directory), "gw1", "--species", "gateway", "--san", "192.0.2.1",
               "--san", "vpn.example").code == 0
    assert cli("pki", "ipsec", "issue", str(directory), "c1", "--species", "client", "--days", "30").code == 0
    return directory


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _openssl_verify(directory: Path, cert: Path) -> tuple[int, str]:
    result = run(["openssl", "verify", "-CAfile", ipsecpki.ca_cert_path(directory), "-CRLfile",
                  ipsecpki.crl_path(directory), "-crl_check", "-purpose", "sslclient", cert], check=False)
    return result.returncode, result.stdout + result.stderr


def test_init_makes_a_p384_ca_with_an_empty_crl_and_an_encrypted_key(ipsec):
    ca = _cert(ipsec / "ipsec-ca.pem")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp384r1"
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA384)
    assert ca.subject.rfc4514_string() == "CN=clipbuild IPsec CA,O=Example Org"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert 3649 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 3650
    crl = x509.load_pem_x509_crl((ipsec / "ipsec-ca.crl.pem").read_bytes())
    assert list(crl) == [] and crl.is_signature_valid(ca.public_key())
    assert (crl.next_update_utc - crl.last_update_utc).days == pki.CRL_DAYS
    key = ipsec / "ipsec-ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"ENCRYPTED" in key.read_bytes()
    pki.load_key(key, SECRET.encode())


def test_a_machine_certificate_for_strongswan(ipsec):
    ca = _cert(ipsec / "ipsec-ca.pem")
    cert_path, key_path = ipsecpki.machine_paths(ipsec, "gw1")
    cert = _cert(cert_path)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=gw1,OU=gateway,O=Example Org"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.key_size == 384
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["gw1", "vpn.example"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, ipsecpki.IKE_INTERMEDIATE]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 364 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 365
    assert (_cert(ipsecpki.machine_paths(ipsec, "c1")[0]).not_valid_after_utc
            - _cert(ipsecpki.machine_paths(ipsec, "c1")[0]).not_valid_before_utc).days == 30
    # The machine key: PKCS#8 PEM in the clear (charon loads it at boot), 0600 in a 0700 folder.
    pem = key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert key.public_key() == cert.public_key()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600 and stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700


@needs_openssl
def test_openssl_accepts_a_machine_and_refuses_it_once_revoked(cli, ipsec):
    cert = ipsecpki.machine_paths(ipsec, "c1")[0]
    assert _openssl_verify(ipsec, cert) == (0, f"{cert}: OK\n")
    result = cli("pki", "ipsec", "revoke", str(ipsec), "c1")
    assert result.code == 0 and "revoked c1" in result.out
    code, output = _openssl_verify(ipsec, cert)
    assert code != 0 and "certificate revoked" in output
    assert _openssl_verify(ipsec, ipsecpki.machine_paths(ipsec, "gw1")[0])[0] == 0
    crl = x509.load_pem_x509_crl((ipsec / "ipsec-ca.crl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [_cert(cert).serial_number] and pki.crl_number(crl) == 2
    assert crl.next_update_utc is not None
    again = cli("pki", "ipsec", "revoke", str(ipsec), "c1")
    assert again.code == 2 and "machine c1 is already revoked" in again.err


def test_list_says_species_expiry_and_revocation(cli, ipsec):
    assert cli("pki", "ipsec", "revoke", str(ipsec), "c1").code == 0
    lines = cli("pki", "ipsec", "list", str(ipsec)).out.splitlines()
    assert [line.split()[:2] for line in lines] == [["c1", "client"], ["gw1", "gateway"]]
    assert "revoked" in lines[0] and lines[1].endswith("valid")
    listed = json.loads(cli("pki", "ipsec", "list", str(ipsec), "--json").out)
    assert [(m["name"], m["species"], m["revoked"] is not None) for m in listed] == [
        ("c1", "client", True), ("gw1", "gateway", False)]


def test_crl_re_issues_the_same_entries(cli, ipsec):
    assert cli("pki", "ipsec", "revoke", str(ipsec), "c1").code == 0
    assert cli("pki", "ipsec", "crl", str(ipsec)).code == 0
    crl = x509.load_pem_x509_crl((ipsec / "ipsec-ca.crl.pem").read_bytes())
    assert pki.crl_number(crl) == 3 and len(list(crl)) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("issue", "{d}", "../x", "--species", "client"), "machine name '../x': a host name"),
    (("issue", "{d}", "a_b", "--species", "client"), "machine name 'a_b'"),
    (("issue", "{d}", "x-", "--species", "client"), "machine name 'x-'"),
    (("issue", "{d}", "c2", "--species", "laptop"), "'laptop' is not one of 'client', 'gateway'"),
    (("issue", "{d}", "c2", "--species", "client", "--san", "a b"), "--san 'a b': an IP address or a DNS name"),
    (("issue", "{d}", "c1", "--species", "client"), "machine c1 has a certificate"),
    (("revoke", "{d}", "c9"), "no machine 'c9' in"),
    (("init", "{d}"), "already holds an IPsec PKI"),
    (("list", "{d}/../nowhere"), "no IPsec PKI here (ipsec-ca.pem, ipsec-ca.crl.pem missing)"),
    (("issue", "{d}/../nowhere", "c2", "--species", "client"), "hint: clipbuild pki ipsec init"),
])
def test_refusals_say_what_to_do(cli, ipsec, args, message):
    result = cli("pki", "ipsec", *(a.format(d=ipsec) for a in args))
    assert result.code == 2 and message in result.err


def test_the_ca_key_needs_its_passphrase(cli, ipsec, monkeypatch):
    monkeypatch.delenv("CLIPBUILD_PASSPHRASE")
    result = cli("pki", "ipsec", "issue", str(ipsec), "c2", "--species", "client")
    assert result.code == 2 and "give --passphrase-file FILE or set CLIPBUILD_PASSPHRASE" in result.err
    monkeypatch.setenv("CLIPBUILD_PASSPHRASE", "wrong")
    result = cli("pki", "ipsec", "revoke", str(ipsec), "c1")
    assert result.code == 2 and "cannot read the key (wrong passphrase?)" in result.err


# Provisioning disks


def _mtools(disk: Path, *args: str) -> str:
    return run([args[0], "-i", disk, *args[1:]], env=MTOOLS).stdout


def _provision(cli, ipsec: Path, out: Path, *more: str, name: str = "gw1", species: str = "gateway"):
    return cli("provision", name, "--species", species, "--pki", str(ipsec), "--out", str(out), *more)


@needs_mtools
def test_a_provisioning_disk_holds_the_machine_s_own_files(cli, ipsec, tmp_path):
    out = tmp_path / "disks" / "gw1.img"
    result = _provision(cli, ipsec, out, "--conf", "OUTSIDE_ADDR=192.0.2.1/24", "--conf", "PEER=vpn.example",
                        "--conf", "EMPTY=", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    cert = _cert(ipsecpki.machine_paths(ipsec, "gw1")[0])
    assert summary["certificate"]["serial"] == f"{cert.serial_number:x}"
    assert summary["certificate"]["sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert summary["ca"]["sha256"] == _cert(ipsec / "ipsec-ca.pem").fingerprint(hashes.SHA256()).hex()
    ssh = [f"ssh/{jail}/ssh_host_ed25519_key{ext}" for jail in ("admin", "audit") for ext in ("", ".pub")]
    assert summary["files"] == ["ipsec/private/gw1.key", "ipsec/x509/gw1.pem", "ipsec/x509ca/ca.pem",
                                "ipsec/x509crl/ca.crl", "machine.conf", *ssh]
    assert out.stat().st_size == provision.SIZE and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["gw1.img"]  # no temporary left behind
    listing = _mtools(out, "mdir", "-/", "-b", "::/")
    assert sorted(p for p in listing.split() if not p.endswith("/")) == [f"::/{f}" for f in summary["files"]]
    assert sorted(p for p in listing.split() if p.endswith("/")) == [
        "::/ipsec/", "::/ipsec/private/", "::/ipsec/x509/", "::/ipsec/x509ca/", "::/ipsec/x509crl/", "::/ssh/",
        "::/ssh/admin/", "::/ssh/audit/"]
    header = _mtools(out, "mdir", "::/")
    assert "Volume in drive : is CLIPPROV" in header
    volume = provision.volume_id("gw1").upper()
    assert f"Volume Serial Number is {volume[:4]}-{volume[4:]}" in header
    assert _mtools(out, "mtype", "::/machine.conf") == (
        "NAME=gw1\nSPECIES=gateway\nOUTSIDE_ADDR=192.0.2.1/24\nPEER=vpn.example\nEMPTY=\n")
    cert_path, key_path = ipsecpki.machine_paths(ipsec, "gw1")
    for inside, source in (("ipsec/x509/gw1.pem", cert_path), ("ipsec/private/gw1.key", key_path),
                           ("ipsec/x509ca/ca.pem", ipsec / "ipsec-ca.pem"),
                           ("ipsec/x509crl/ca.crl", ipsec / "ipsec-ca.crl.pem")):
        assert _mtools(out, "mtype", f"::/{inside}") == source.read_text(), inside
    assert "c1" not in listing  # another machine's key never


@needs_mtools
def test_the_same_inputs_give_the_same_disk(cli, ipsec, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one, two = tmp_path / "one.img", tmp_path / "two.img"
    assert _provision(cli, ipsec, one, "--conf", "A=1").code == 0
    assert _provision(cli, ipsec, two, "--conf", "A=1").code == 0
    assert one.read_bytes() == two.read_bytes()
    assert "2023-11-14" in _mtools(one, "mdir", "::/")  # SOURCE_DATE_EPOCH's date
    assert _provision(cli, ipsec, two, "--conf", "A=2").code == 0
    assert one.read_bytes() != two.read_bytes()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")  # without it, the certificate's start date: still reproducible
    assert _provision(cli, ipsec, one).code == 0 and _provision(cli, ipsec, two).code == 0
    assert one.read_bytes() == two.read_bytes()


@needs_mtools
@pytest.mark.parametrize(("args", "message"), [
    (("--conf", "lower=1"), "--conf 'lower=1': KEY=VALUE with KEY of capitals"),
    (("--conf", "NOVALUE"), "--conf 'NOVALUE': KEY=VALUE"),
    (("--conf", "A=$(reboot)"), "a value is letters, digits and . / : _ - only"),
    (("--conf", "A=x y"), "no spaces, quotes or shell characters"),
    (("--conf", "A=x\nB=y"), "a value is letters"),
    (("--conf", "NAME=other"), "NAME comes from the command's arguments"),
    (("--conf", "A=1", "--conf", "A=2"), "A is given twice"),
])
def test_bad_conf_pairs_are_refused(cli, ipsec, tmp_path, args, message):
    out = tmp_path / "gw1.img"
    result = _provision(cli, ipsec, out, *args)
    assert result.code == 2 and message in result.err and not out.exists()


@needs_mtools
def test_provisioning_refusals(cli, ipsec, tmp_path):
    out = tmp_path / "x.img"
    result = _provision(cli, ipsec, out, species="client")
    assert result.code == 2 and "machine gw1 is a gateway (OU of its certificate), not a client" in result.err
    result = _provision(cli, ipsec, out, name="nobody", species="client")
    assert result.code == 2 and "no machine 'nobody'" in result.err and "pki ipsec issue" in result.err
    result = cli("provision", "gw1", "--species", "gateway", "--pki", str(tmp_path / "none"), "--out", str(out))
    assert result.code == 2 and "no IPsec PKI here" in result.err
    result = cli("provision", "gw1", "--species", "gateway", "--out", str(out))
    assert result.code == 2 and "give --pki DIR or --dev-pki" in result.err
    assert cli("pki", "ipsec", "revoke", str(ipsec), "c1").code == 0
    result = _provision(cli, ipsec, out, name="c1", species="client")
    assert result.code == 2 and "machine c1's certificate is revoked" in result.err
    assert not out.exists()


@needs_mtools
def test_a_stale_crl_is_not_provisioned(cli, ipsec, tmp_path):
    ca = _cert(ipsec / "ipsec-ca.pem")
    key = pki.load_key(ipsec / "ipsec-ca.key", SECRET.encode())
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=pki.CRL_DAYS + 1)
    pki.write_crl(ipsec, ipsecpki.ROLE, key, ca, [], 5, old)
    result = _provision(cli, ipsec, tmp_path / "x.img")
    assert result.code == 2 and "is stale" in result.err and "clipbuild pki ipsec crl" in result.err
    assert cli("pki", "ipsec", "crl", str(ipsec)).code == 0
    assert _provision(cli, ipsec, tmp_path / "x.img").code == 0


@needs_mtools
def test_the_development_pki_is_made_on_demand(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    directory = ipsecpki.dev_location()
    assert not directory.exists()
    result = cli("provision", "client", "--species", "client", "--dev-pki", "--out", str(tmp_path / "c.img"))
    assert result.code == 0, result.err
    ca = _cert(ipsecpki.ca_cert_path(directory))
    assert "DEVELOPMENT" in ca.subject.rfc4514_string()
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == devpki.ORGANISATION
    first = _cert(ipsecpki.machine_paths(directory, "client")[0])
    ipsecpki.ensure_dev_machine("client", "client")
    assert _cert(ipsecpki.machine_paths(directory, "client")[0]) == first  # kept while valid
    ipsecpki.revoke(directory, "client", devpki.SECRET)
    ipsecpki.ensure_dev_machine("client", "client")  # a revoked one is replaced (the lab's refusal test)
    assert _cert(ipsecpki.machine_paths(directory, "client")[0]) != first
    ipsecpki.ensure_dev_machine("client", "gateway")
    assert ipsecpki.load_machine(directory, "client")[0].species == "gateway"


def test_crls_name_their_authority_key(tmp_path):
    """RFC 5280 wants the authority key identifier in every CRL, and strongSwan looks a CA's CRL up by it."""
    from cryptography import x509

    from clipbuild.signing import ipsecpki

    directory = ipsecpki.ensure_dev(tmp_path / "pki")
    crl = x509.load_pem_x509_crl(ipsecpki.crl_path(directory).read_bytes())
    ca = x509.load_pem_x509_certificate(ipsecpki.ca_cert_path(directory).read_bytes())
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
