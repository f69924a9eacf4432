"""The lab's plan, QEMU wiring and console reading, without QEMU (tests/e2e/test_lab.py boots it)."""

from __future__ import annotations

import os
import time

import pytest

from clipbuild.core.errors import InputError, VmCheckError
from clipbuild.lab import control, topology


def test_one_gateway_and_one_client_with_their_addresses():
    gateway, client = topology.plan(["client", "gateway"])
    assert (gateway.name, gateway.outside, client.name, client.outside) == (
        "gateway", "192.0.2.1/24", "client", "192.0.2.10/24")
    assert client.conf["IPSEC_PEER"] == "192.0.2.1" and client.conf["RM_H_NET"] == "172.31.101.0/30"
    assert gateway.conf["CLIENT_NETS"] == client.conf["RM_H_NET"]  # the tunnel carries RM_H's link only
    assert gateway.conf["LAB_PRIVATE_HOST"] == "10.99.0.10"


@pytest.mark.parametrize(("species", "message"), [
    (["client"], "exactly one gateway"), (["gateway", "gateway", "client"], "exactly one gateway"),
    (["client", "bastion", "gateway"], "bastion: not a lab species"), (["client", "client", "gateway"], "one client")])
def test_a_lab_that_cannot_be_wired_is_refused(species, message):
    with pytest.raises(InputError, match=message):
        topology.plan(species)


def test_qemu_wiring_stays_on_loopback_and_never_writes_the_images(tmp_path):
    gateway, _ = topology.plan(["client", "gateway"])
    command = topology.qemu_command(gateway, tmp_path / "g.img", tmp_path / "g.prov", tmp_path / "g.log", (4001, 4002))
    text = " ".join(command)
    assert "socket,id=outside,udp=127.0.0.1:4002,localaddr=127.0.0.1:4001" in text
    assert f"file={tmp_path / 'g.img'},if=virtio,format=raw,snapshot=on" in text
    assert f"file={tmp_path / 'g.prov'},if=virtio,format=raw,readonly=on" in text
    assert "user" not in text.split("-netdev")[1]  # no user-mode network: nothing leaves 127.0.0.1


def _lab(tmp_path, consoles: dict[str, str], pids: dict[str, int]) -> control.Lab:
    machines = topology.plan(["client", "gateway"])
    paths = {}
    for name, text in consoles.items():
        paths[name] = str(tmp_path / f"{name}.console.log")
        (tmp_path / f"{name}.console.log").write_text(text)
    lab = control.Lab(tmp_path, machines, pids, {"gateway": (1, 2), "client": (2, 1)}, {}, time.time(),
                      time.time() + 60, paths)
    lab.save()
    return lab


GATEWAY_OK = ("CLIP_BOOT_OK slot=a\nCLIP_NET outside 192.0.2.1/24 up\nCLIP_NET private host 10.99.0.10 up\n"
              "CLIP_IPSEC loaded: 1 connection(s)\nCLIP_IPSEC esp 192.0.2.10 > 192.0.2.1: 168(bytes), "
              "192.0.2.1 > 192.0.2.10: 0(bytes),\n")
CLIENT_OK = ("CLIP_BOOT_OK slot=a\nCLIP_NET outside 192.0.2.10/24 up\nCLIP_IPSEC established with 192.0.2.1\n"
             "CLIP_LAB rm_h private ok: CLIP private host 10.99.0.10\nCLIP_LAB rm_b private refused: timed out\n"
             "CLIP_LAB rm_h plaintext refused: 2 packet(s) dropped\nCLIP_IPSEC re-established with 192.0.2.1\n")


def test_check_passes_when_every_machine_proved_its_part(tmp_path):
    _lab(tmp_path, {"gateway": GATEWAY_OK, "client": CLIENT_OK}, {"gateway": os.getpid(), "client": os.getpid()})
    states, _ = control.check(tmp_path, timeout=1, poll=0.01)
    assert [s.missing for s in states] == [[], []]
    assert states[1].proofs["RM_H reaches the private host"].startswith("CLIP_LAB rm_h private ok")


def test_check_names_what_is_missing_and_what_failed(tmp_path):
    _lab(tmp_path, {"gateway": GATEWAY_OK.replace("168(bytes)", "0(bytes)"), "client": CLIENT_OK},
         {"gateway": os.getpid(), "client": os.getpid()})
    with pytest.raises(VmCheckError, match=r"not within 0.05 s: gateway: no ESP traffic through the tunnel"):
        control.check(tmp_path, timeout=0.05, poll=0.01)
    _lab(tmp_path, {"gateway": GATEWAY_OK, "client": CLIENT_OK.replace("rm_b private refused", "rm_b private "
                                                                        "FAILED: reached it")},
         {"gateway": os.getpid(), "client": os.getpid()})
    with pytest.raises(VmCheckError, match="client: CLIP_LAB rm_b private FAILED: reached it"):
        control.check(tmp_path, timeout=1, poll=0.01)


def test_a_stopped_machine_ends_the_wait(tmp_path):
    _lab(tmp_path, {"gateway": GATEWAY_OK, "client": "CLIP_BOOT_OK\n"}, {"gateway": os.getpid(), "client": 2 ** 22 + 7})
    with pytest.raises(VmCheckError, match="client stopped: client: no outside network"):
        control.check(tmp_path, timeout=30, poll=0.01)


def test_no_lab_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no lab here"):
        control.Lab.load(tmp_path)


def test_after_a_gateway_reboot_the_client_owes_its_tunnel_again(tmp_path):
    lab = _lab(tmp_path, {"gateway": GATEWAY_OK + "=== rebooted ===\n" + GATEWAY_OK, "client": CLIENT_OK},
               {"gateway": os.getpid(), "client": os.getpid()})
    lab.reboots = {"gateway": 1}
    lab.save()
    with pytest.raises(VmCheckError, match="client: no RM_H through the tunnel after the gateway's reboot"):
        control.check(tmp_path, timeout=0.05, poll=0.01)
    (tmp_path / "client.console.log").write_text(CLIENT_OK + "CLIP_IPSEC lost\nCLIP_IPSEC established again\n"
                                                 "CLIP_LAB rm_h private ok again: CLIP private host 10.99.0.10\n")
    states, _ = control.check(tmp_path, timeout=1, poll=0.01)
    assert states[1].proofs["RM_H through the tunnel after the gateway's reboot"].endswith("10.99.0.10")
    (tmp_path / "gateway.console.log").write_text(GATEWAY_OK)  # the gateway never came back
    with pytest.raises(VmCheckError, match="gateway: no boot"):
        control.check(tmp_path, timeout=0.05, poll=0.01)
