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


def test_the_gateway_s_ssh_jails_have_their_own_closed_networks(tmp_path):
    gateway, client = topology.plan(["client", "gateway"])
    assert gateway.ssh_jails == ["admin", "audit"] and client.ssh_jails == []
    assert {k: v for k, v in gateway.conf.items() if k.startswith(("ADMIN", "AUDIT"))} == {
        "ADMIN_MAC": "52:54:00:c1:ad:36", "ADMIN_ADDR": "198.51.100.54/24",
        "AUDIT_MAC": "52:54:00:c1:ad:35", "AUDIT_ADDR": "203.0.113.53/24"}
    command = topology.qemu_command(gateway, tmp_path / "g.img", tmp_path / "g.prov", tmp_path / "g.log",
                                    (4001, 4002), {"admin": 40022, "audit": 40023})
    netdevs = [command[i + 1] for i, arg in enumerate(command) if arg == "-netdev"]
    # nothing leaves these networks (restrict=on); the one way in is a port on the host's loopback
    assert netdevs[1:] == [
        "user,id=admin,restrict=on,ipv6=off,net=198.51.100.0/24,hostfwd=tcp:127.0.0.1:40022-198.51.100.54:22",
        "user,id=audit,restrict=on,ipv6=off,net=203.0.113.0/24,hostfwd=tcp:127.0.0.1:40023-203.0.113.53:23"]
    assert "virtio-net-pci,netdev=admin,mac=52:54:00:c1:ad:36" in command
    assert topology.qemu_command(client, tmp_path / "c.img", tmp_path / "c.prov", tmp_path / "c.log",
                                 (4002, 4001)).count("-netdev") == 1


def test_lab_ssh_pins_the_provisioned_host_key_and_uses_the_operator_s_key(tmp_path):
    lab = _lab(tmp_path, {"gateway": "", "client": ""}, {"gateway": 1, "client": 1})
    lab.ssh_ports = {"gateway": {"admin": 40022, "audit": 40023}, "client": {}}
    lab.save()
    assert control.Lab.load(tmp_path).ssh_ports == lab.ssh_ports
    argv = control.ssh_command(tmp_path, "gateway", "audit")
    assert argv[0] == "ssh" and argv[-3:] == ["-l", "audit", "127.0.0.1"]
    assert argv[argv.index("-p"):argv.index("-p") + 2] == ["-p", "40023"]
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in argv and "StrictHostKeyChecking=yes" in argv
    assert str(tmp_path / "ssh" / "id_audit") in argv
    argv = control.ssh_command(tmp_path, "gateway", "admin", user="audit", key_of="audit")
    assert argv[-3:] == ["-l", "audit", "127.0.0.1"] and str(tmp_path / "ssh" / "id_audit") in argv
    with pytest.raises(InputError, match="client has no SSH network for 'admin'"):
        control.ssh_command(tmp_path, "client", "admin")
    with pytest.raises(InputError, match="no machine bastion"):
        control.ssh_command(tmp_path, "bastion", "admin")
    keys = control.operator_keys(tmp_path)
    assert sorted(keys) == ["admin", "audit"] and keys["admin"].read_text().startswith("ssh-ed25519 ")
    first = keys["admin"].read_text()
    assert control.operator_keys(tmp_path) == keys and keys["admin"].read_text() == first  # made once, kept


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
              "CLIP_NET admin network 198.51.100.54/24 up in jail admin: SSH port 22 from that network only\n"
              "CLIP_NET audit network 203.0.113.53/24 up in jail audit: SSH port 23 from that network only\n"
              "CLIP_IPSEC loaded: 1 connection(s)\nCLIP_IPSEC esp 192.0.2.10 > 192.0.2.1: 168(bytes), "
              "192.0.2.1 > 192.0.2.10: 0(bytes),\n")
CLIENT_OK = ("CLIP_BOOT_OK slot=a\nCLIP_NET outside 192.0.2.10/24 up\nCLIP_IPSEC established with 192.0.2.1\n"
             "CLIP_LAB rm_h private ok: CLIP private host 10.99.0.10\nCLIP_LAB rm_b private refused: timed out\n"
             "CLIP_LAB gateway ssh port 22 from outside refused: nc: can't connect to remote host\n"
             "CLIP_LAB gateway ssh port 23 from outside refused: nc: can't connect to remote host\n"
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
