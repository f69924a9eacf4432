"""The device's trust store (etc/clip_update/keys): rendered canonically from a policy, read back from a root
as the same policy, and refused, file named, when it leads anywhere outside its folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from clipbuild.core.errors import InputError, StepError
from clipbuild.signing import pki, trust, truststore
from clipbuild.stages.image import check_trust_store

from .test_signing import SECRET

KEYS = truststore.KEYS_DIR


@pytest.fixture
def policy_file(our_pki: Path, tmp_path: Path) -> Path:
    """A copy of the test PKI with every policy setting used: subjects, min validity, special files."""
    directory = tmp_path / "pki"
    shutil.copytree(our_pki, directory)
    data = yaml.safe_load((directory / "policy.yaml").read_text())
    data["developer"]["subject_ere"] = "CN=developer-"
    data["controller"]["min_validity_days"] = 30
    data["special_files"] = {"busybox": ["setuid"], "clip-sysinfo": ["fifo", "device"]}
    (directory / "policy.yaml").write_text(yaml.safe_dump(data))
    return directory / "policy.yaml"


def installed(files: dict[str, bytes], root: Path) -> Path:
    truststore.write(files, root)
    return root


def test_render_gives_clip_s_folders_and_a_canonical_policy(policy_file):
    files = truststore.render(policy_file)
    assert sorted(files) == ["certs_ctrl/ca-1.pem", "certs_dev/ca-1.pem", "crl_ctrl/crl-1.pem",
                             "crl_dev/crl-1.pem", "policy.yaml"]
    data = yaml.safe_load(files["policy.yaml"])
    assert data["developer"]["ca"] == ["certs_dev/ca-1.pem"] and data["controller"]["crl"] == ["crl_ctrl/crl-1.pem"]
    assert data["controller"]["min_validity_days"] == 30 and data["developer"]["allow_no_crl"] is False
    assert data["special_files"] == {"busybox": ["setuid"], "clip-sysinfo": ["device", "fifo"]}
    assert truststore.render(policy_file) == files  # deterministic


def test_round_trip_is_the_same_policy(policy_file, tmp_path):
    root = installed(truststore.render(policy_file), tmp_path / "root")
    loaded = truststore.load(root)
    original = trust.load_policy(policy_file)
    assert truststore.canonical(loaded) == truststore.canonical(original)
    assert truststore.differences(loaded, original) == []
    assert loaded.developer.subject == original.developer.subject and loaded.developer.subject_ere == "CN=developer-"
    assert loaded.special() == original.special()
    assert loaded.source == str(root / KEYS / "policy.yaml")
    assert truststore.render_policy(loaded) == truststore.render(policy_file)  # a fixed point


def test_the_order_and_spelling_of_the_policy_do_not_change_the_store(policy_file):
    data = yaml.safe_load(policy_file.read_text())
    reordered = {"special_files": data["special_files"], "controller": data["controller"],
                 "developer": {**data["developer"], "ca": data["developer"]["ca"][0]}}
    other = policy_file.with_name("other.yaml")
    other.write_text("# a comment\n" + yaml.safe_dump(reordered, sort_keys=False))
    assert truststore.render(other) == truststore.render(policy_file)


def test_a_crl_refresh_changes_that_crl_only(policy_file):
    before = truststore.digests(truststore.render(policy_file))
    pki.refresh_crl(policy_file.parent, "developer", SECRET)
    after = truststore.digests(truststore.render(policy_file))
    assert [name for name in before if before[name] != after[name]] == ["crl_dev/crl-1.pem"]


def test_differences_name_what_changed(policy_file, our_pki, tmp_path):
    root = installed(truststore.render(our_pki / "policy.yaml"), tmp_path / "root")
    lines = truststore.differences(truststore.load(root), trust.load_policy(policy_file))
    assert [line.split(":")[0] for line in lines] == ["developer.subject_ere", "controller.min_validity_days",
                                                      "special_files"]


def _edit_policy(root: Path, role: str, key: str, value: object) -> None:
    path = root / KEYS / "policy.yaml"
    data = yaml.safe_load(path.read_text())
    data[role][key] = value
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("name", ["../../../../etc/ssl/ca.pem", "/etc/ssl/ca.pem", "certs_dev/../../keys/x.pem"])
def test_a_policy_naming_a_file_outside_the_store_is_refused(policy_file, tmp_path, name):
    root = installed(truststore.render(policy_file), tmp_path / "root")
    _edit_policy(root, "developer", "ca", [name])
    with pytest.raises(InputError) as exc:
        truststore.load(root)
    assert f"developer.ca: {name!r} leads out of the trust store" in str(exc.value)
    assert str(root / KEYS / "policy.yaml") in str(exc.value)


def test_a_missing_crl_is_refused_by_name(policy_file, tmp_path):
    root = installed(truststore.render(policy_file), tmp_path / "root")
    (root / KEYS / "crl_ctrl" / "crl-1.pem").unlink()
    with pytest.raises(InputError) as exc:
        truststore.load(root)
    assert f"controller.crl: {root / KEYS / 'crl_ctrl/crl-1.pem'} is missing from the trust store" in str(exc.value)


def test_a_link_in_the_store_is_refused_even_inside_it(policy_file, tmp_path):
    root = installed(truststore.render(policy_file), tmp_path / "root")
    crl = root / KEYS / "crl_dev" / "crl-1.pem"
    shutil.copy(crl, root / KEYS / "crl_dev" / "real.pem")
    crl.unlink()
    crl.symlink_to("real.pem")
    with pytest.raises(InputError) as exc:
        truststore.load(root)
    assert f"{crl}: a symbolic link in the trust store" in str(exc.value)


def test_a_linked_keys_folder_is_refused(policy_file, tmp_path):
    elsewhere = installed(truststore.render(policy_file), tmp_path / "elsewhere")
    root = tmp_path / "root"
    (root / "etc" / "clip_update").mkdir(parents=True)
    os.symlink(elsewhere / KEYS, root / KEYS)
    with pytest.raises(InputError) as exc:
        truststore.load(root)
    assert f"{root / KEYS}: a symbolic link, a real directory is expected" in str(exc.value)


def test_a_root_without_a_store_and_a_fifo_in_it_are_refused(policy_file, tmp_path):
    with pytest.raises(InputError, match="no trust store in this root"):
        truststore.load(tmp_path)
    root = installed(truststore.render(policy_file), tmp_path / "root")
    os.mkfifo(root / KEYS / "certs_dev" / "pipe")
    with pytest.raises(InputError, match="certs_dev/pipe: a FIFO in the trust store"):
        truststore.load(root)


def test_the_image_refuses_a_store_that_is_not_its_policy(policy_file, our_pki, tmp_path):
    root = installed(truststore.render(our_pki / "policy.yaml"), tmp_path / "root")
    check_trust_store("image", root, our_pki / "policy.yaml", "client")  # the same policy: accepted
    with pytest.raises(StepError) as exc:
        check_trust_store("image", root, policy_file, "client")
    text = "\n".join(exc.value.lines())
    assert ("the trust store clip-update-keys installs is not the policy this image is verified with: rebuild "
            "with clipbuild build client --release --policy FILE") in text
    assert "special_files: " in text
    with pytest.raises(StepError, match=r"cannot be read: .*no trust store in this root"):
        (tmp_path / "empty").mkdir()
        check_trust_store("image", tmp_path / "empty", policy_file, "client")
