"""The lab's network picture: which machines, their addresses, and the QEMU wiring between them.

CLIP's picture (docs/network.md): a client whose RM_H level reaches the organisation's private network only
through an IPsec tunnel to a CLIP gateway, while RM_B reaches the outside and never the private network.

    client ──── outside 192.0.2.0/24 (TEST-NET-1) ──── gateway ──── private 10.99.0.0/24
    .10                                                .1  │ .1       host .10
                                     admin 198.51.100.0/24 ┤ ADMIN jail .54, SSH port 22
                                     audit 203.0.113.0/24  ┘ AUDIT jail .53, SSH port 23

The outside segment is a QEMU UDP socket pair on 127.0.0.1 (connectionless: a machine may reboot and find its
peer again); the private segment is a network namespace on the gateway holding the private host (made by the
gateway's own network setup from its provisioning). The gateway's admin and audit networks (CLIP's
administration networks, one per SSH jail) are QEMU user-mode networks closed to everything (restrict=on) but
one forwarded port on the host's 127.0.0.1: the operators' way in, reaching that jail's sshd only. Every
machine gets its provisioning disk (its identity and its addresses: clipbuild provision) as a second, read-only
disk.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.errors import InputError
from clipbuild.image import firmware

OUTSIDE = ipaddress.ip_network("192.0.2.0/24")
PRIVATE = ipaddress.ip_network("10.99.0.0/24")
PRIVATE_HOST = "10.99.0.10"
GATEWAY_HOST = 1  # the gateway's host number on both segments
FIRST_CLIENT_HOST = 10
# The RM levels' links to their client's core (veth pairs): RM_H's is the only source the tunnel carries.
RM_H_NET = ipaddress.ip_network("172.31.101.0/30")
RM_B_NET = ipaddress.ip_network("172.31.102.0/30")
ROLES = {"client": "client", "gateway": "gateway"}  # species -> lab role


@dataclass(frozen=True)
class AdminNet:
    """An SSH jail's own network on the gateway; the host (the operators) is slirp's .2 on it."""

    jail: str
    network: ipaddress.IPv4Network
    host: int  # the jail's host number on it
    port: int  # the jail's SSH port (its `ssh` file)
    mac: str

    @property
    def addr(self) -> str:
        return f"{self.network[self.host]}/{self.network.prefixlen}"


ADMIN_NETS = (AdminNet("admin", ipaddress.ip_network("198.51.100.0/24"), 54, 22, "52:54:00:c1:ad:36"),
              AdminNet("audit", ipaddress.ip_network("203.0.113.0/24"), 53, 23, "52:54:00:c1:ad:35"))


@dataclass(frozen=True)
class Machine:
    name: str
    species: str
    role: str
    outside: str  # address/prefix on the outside segment
    mac: str
    conf: dict[str, str] = field(default_factory=dict)  # machine.conf of its provisioning disk
    ssh_jails: list[str] = field(default_factory=list)  # its jails reachable over SSH from their own networks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(species: list[str]) -> list[Machine]:
    """The machines for `lab up SPECIES...`: one gateway and one or more clients, gateway first."""
    unknown = [s for s in species if s not in ROLES]
    if unknown:
        raise InputError(f"lab: {', '.join(unknown)}: not a lab species", hint=f"use {', '.join(ROLES)}")
    if species.count("gateway") != 1 or "client" not in species:
        raise InputError("lab: needs exactly one gateway and at least one client",
                         hint="clipbuild lab up client gateway")
    gateway_addr = f"{OUTSIDE[GATEWAY_HOST]}/{OUTSIDE.prefixlen}"
    admin = {f"{net.jail.upper()}_{key}": value for net in ADMIN_NETS
             for key, value in (("MAC", net.mac), ("ADDR", net.addr))}
    machines = [Machine("gateway", "gateway", "gateway", gateway_addr, _mac(GATEWAY_HOST), {
        "NAME": "gateway", "SPECIES": "gateway", "ROLE": "gateway", "OUTSIDE_ADDR": gateway_addr,
        "PRIVATE_ADDR": f"{PRIVATE[GATEWAY_HOST]}/{PRIVATE.prefixlen}", "PRIVATE_NET": str(PRIVATE),
        "LAB_PRIVATE_HOST": PRIVATE_HOST, "CLIENT_NETS": str(RM_H_NET), **admin},
        [net.jail for net in ADMIN_NETS])]
    for index in range(species.count("client")):
        host = FIRST_CLIENT_HOST + index
        name = "client" if index == 0 else f"client{index + 1}"
        addr = f"{OUTSIDE[host]}/{OUTSIDE.prefixlen}"
        machines.append(Machine(name, "client", "client", addr, _mac(host), {
            "NAME": name, "SPECIES": "client", "ROLE": "client", "OUTSIDE_ADDR": addr,
            "OUTSIDE_GW": str(OUTSIDE[GATEWAY_HOST]), "IPSEC_PEER": str(OUTSIDE[GATEWAY_HOST]),
            "IPSEC_PEER_ID": "gateway", "PRIVATE_NET": str(PRIVATE), "RM_H_NET": str(RM_H_NET),
            "RM_B_NET": str(RM_B_NET)}))
    if len(machines) > 2:
        raise InputError("lab: one client for now (each needs its own RM_H network in the gateway's policy)",
                         hint="clipbuild lab up client gateway")
    return machines


def _mac(host: int) -> str:
    return f"52:54:00:c1:19:{host:02x}"


def admin_netdevs(machine: Machine, ssh_ports: dict[str, int]) -> list[str]:
    """QEMU's NICs for the machine's SSH jails' networks: closed (restrict=on) but for host port
    `ssh_ports[jail]` on 127.0.0.1, forwarded to the jail's address and port (none without a port)."""
    args = []
    for net in (n for n in ADMIN_NETS if n.jail in machine.ssh_jails and n.jail in ssh_ports):
        forward = f"tcp:127.0.0.1:{ssh_ports[net.jail]}-{net.network[net.host]}:{net.port}"
        args += ["-netdev", f"user,id={net.jail},restrict=on,ipv6=off,net={net.network},hostfwd={forward}",
                 "-device", f"virtio-net-pci,netdev={net.jail},mac={net.mac}"]
    return args


def qemu_command(machine: Machine, image: Path, provision: Path, console: Path, ports: tuple[int, int],
                 ssh_ports: dict[str, int] | None = None, *, memory_mib: int = 512,
                 uefi: firmware.Machine | None = None) -> list[str]:
    """QEMU for one machine: its image (snapshot: nothing it writes reaches the file), its provisioning disk
    read-only, its outside NIC on the UDP pair (`ports`: this machine's and its peer's), its SSH jails' networks
    (`ssh_ports`: jail -> host port), the console to a file; an image of the UEFI path on `uefi` (OVMF with
    enrolled keys, a TPM)."""
    local, remote = ports
    disk = (["-drive", f"file={image},if=virtio,format=raw,snapshot=on"] if uefi is None
            else [*uefi.qemu_args(), *firmware.disk_args(image, "raw")])
    return ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-display", "none", "-no-reboot",
            "-name", machine.name, "-monitor", "none",
            "-chardev", f"file,id=console,path={console},append=on", "-serial", "chardev:console",
            *disk, "-drive", f"file={provision},if=virtio,format=raw,readonly=on",
            "-netdev", f"socket,id=outside,udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}",
            "-device", f"virtio-net-pci,netdev=outside,mac={machine.mac}",
            *admin_netdevs(machine, ssh_ports or {})]
