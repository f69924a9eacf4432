"""Secure Boot key sets, signatures (sbsign/sbverify) and enrolled OVMF variables, with the real tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from clipbuild.core.errors import InputError, SigningError
from clipbuild.signing import secureboot

pytestmark = pytest.mark.skipif(shutil.which("sbsign") is None or shutil.which("faketime") is None,
                                reason="sbsigntool and faketime are host tools (make setup installs them)")
STUB = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> secureboot.SecureBootKeys:
    return secureboot.init(tmp_path_factory.mktemp("sb") / "keys", "test organisation")


def test_init_makes_an_rsa_chain_pk_kek_db(keys: secureboot.SecureBootKeys) -> None:
    certs = {role: x509.load_pem_x509_certificate(keys.cert(role).read_bytes()) for role in secureboot.ROLES}
    assert certs["PK"].issuer == certs["PK"].subject
    assert certs["KEK"].issuer == certs["PK"].subject
    assert certs["db"].issuer == certs["KEK"].subject
    assert all(keys.key(role) is not None and keys.key(role).stat().st_mode & 0o077 == 0 for role in secureboot.ROLES)
    assert secureboot.load(keys.directory) == keys


def test_init_never_overwrites(keys: secureboot.SecureBootKeys) -> None:
    with pytest.raises(InputError, match="already exists"):
        secureboot.init(keys.directory, "again")


def test_load_names_what_is_missing(tmp_path: Path, keys: secureboot.SecureBootKeys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(keys.directory, copy)
    (copy / "KEK.crt").unlink()
    with pytest.raises(InputError, match=r"KEK\.crt"):
        secureboot.load(copy)
    (copy / "owner.guid").write_text("not-a-guid\n")
    with pytest.raises(InputError, match=r"owner\.guid"):
        secureboot.load(copy)


@pytest.mark.skipif(not STUB.is_file(), reason="systemd-boot-efi is a host package")
def test_signatures_are_reproducible_and_checked_against_the_db_certificate(
        tmp_path: Path, keys: secureboot.SecureBootKeys) -> None:
    one, two = tmp_path / "one.efi", tmp_path / "two.efi"
    secureboot.sign(STUB, one, keys, 1_700_000_000)
    secureboot.sign(STUB, two, keys, 1_700_000_000)
    assert one.read_bytes() == two.read_bytes()
    assert secureboot.verify(one, keys.cert("db"))[0]
    assert not secureboot.verify(STUB, keys.cert("db"))[0]  # unsigned
    assert not secureboot.verify(one, keys.cert("KEK"))[0]  # another key
    flipped = tmp_path / "flipped.efi"
    data = bytearray(one.read_bytes())
    data[0x2000] ^= 1
    flipped.write_bytes(bytes(data))
    assert not secureboot.verify(flipped, keys.cert("db"))[0]


def test_a_set_without_db_key_cannot_sign(tmp_path: Path, keys: secureboot.SecureBootKeys) -> None:
    public = tmp_path / "public"
    shutil.copytree(keys.directory, public)
    for role in secureboot.ROLES:
        (public / f"{role}.key").unlink()
    with pytest.raises(SigningError, match=r"no db\.key"):
        secureboot.sign(STUB, tmp_path / "x.efi", secureboot.load(public), 0)


def test_release_keys_inside_a_build_tree_are_refused(tmp_path: Path, keys: secureboot.SecureBootKeys) -> None:
    secureboot.check_outside(keys, tmp_path)
    with pytest.raises(InputError, match="release Secure Boot keys inside"):
        secureboot.check_outside(keys, keys.directory.parent)


def test_enrolled_vars_are_reproducible(tmp_path: Path, keys: secureboot.SecureBootKeys) -> None:
    one, two = tmp_path / "one.fd", tmp_path / "two.fd"
    secureboot.enrolled_vars(keys, one)
    secureboot.enrolled_vars(keys, two)
    assert one.read_bytes() == two.read_bytes()
    assert one.stat().st_size == secureboot.OVMF_VARS.stat().st_size
