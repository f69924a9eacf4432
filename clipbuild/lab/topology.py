"""The lab's network picture: which machines, their addresses, and the QEMU wiring between them.

CLIP's picture (docs/network.md): a client whose RM_H level reaches the organisation's private network only
through an IPsec tunnel to a CLIP gateway, while RM_B reaches the outside and never the private network.

    client ──── outside 192.0.2.0/24 (TEST-NET-1) ──── gateway ──── private 10.99.0.0/24
    .10                                                .1    .1       host .10

The outside segment is a QEMU UDP socket pair on 127.0.0.1 (connectionless: a machine may reboot and find its
peer again); the private segment is a network namespace on the gateway holding the private host (made by the
gateway's own network setup from its provisioning). Every machine gets its provisioning disk (its identity and
its addresses: clipbuild provision) as a second, read-only disk.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.errors import InputError

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
class Machine:
    name: str
    species: str
    role: str
    outside: str  # address/prefix on the outside segment
    mac: str
    conf: dict[str, str] = field(default_factory=dict)  # machine.conf of its provisioning disk

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
    machines = [Machine("gateway", "gateway", "gateway", gateway_addr, _mac(GATEWAY_HOST), {
        "NAME": "gateway", "SPECIES": "gateway", "ROLE": "gateway", "OUTSIDE_ADDR": gateway_addr,
        "PRIVATE_ADDR": f"{PRIVATE[GATEWAY_HOST]}/{PRIVATE.prefixlen}", "PRIVATE_NET": str(PRIVATE),
        "LAB_PRIVATE_HOST": PRIVATE_HOST, "CLIENT_NETS": str(RM_H_NET)})]
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


def qemu_command(machine: Machine, image: Path, provision: Path, console: Path, ports: tuple[int, int],
                 *, memory_mib: int = 512) -> list[str]:
    """QEMU for one machine: its image (snapshot: nothing it writes reaches the file), its provisioning disk
    read-only, its outside NIC on the UDP pair (`ports`: this machine's and its peer's), the console to a file."""
    local, remote = ports
    return ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-display", "none", "-no-reboot",
            "-name", machine.name, "-monitor", "none",
            "-chardev", f"file,id=console,path={console},append=on", "-serial", "chardev:console",
            "-drive", f"file={image},if=virtio,format=raw,snapshot=on",
            "-drive", f"file={provision},if=virtio,format=raw,readonly=on",
            "-netdev", f"socket,id=outside,udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}",
            "-device", f"virtio-net-pci,netdev=outside,mac={machine.mac}"]
