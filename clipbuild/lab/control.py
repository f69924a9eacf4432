"""`clipbuild lab up|status|check|down`: the lab's machines as background QEMU processes with a bounded life.

State lives in WORKDIR/lab/: lab.json (machines, pids, ports, images, provisioning disks, deadline), each
machine's console log and provisioning disk. Every QEMU runs under timeout(1), so the lab stops by itself at
its deadline even if nobody calls `down`. `check` reads the consoles: what the machines prove about themselves
(boot marker, tunnel, the levels' reachability) is printed by them at boot, and the host only reads it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.errors import InputError, VmCheckError
from clipbuild.core.run import alive, require, spawn
from clipbuild.core.safefile import write_atomic
from clipbuild.image import firmware, inspection, uefi
from clipbuild.image.manifest import SYSTEMD_BOOT, boot_loader
from clipbuild.image.vm import ANSI, FAILED_MARKER, PANIC
from clipbuild.lab.topology import ADMIN_NETS, Machine, plan, qemu_command
from clipbuild.signing import sshkeys

STATE = "lab.json"
KNOWN_HOSTS = "known_hosts"
FAILED = re.compile(f"{FAILED_MARKER}|{PANIC}|CLIP_(NET|IPSEC|LAB) .*FAILED")
# What each role must print before the lab counts as up and working: (what, pattern), in order.
PROOFS: dict[str, tuple[tuple[str, str], ...]] = {
    "gateway": (("boot", r"CLIP_BOOT_OK"), ("outside network", r"CLIP_NET outside \S+ up"),
                ("private host", r"CLIP_NET private host \S+ up"),
                ("IPsec responder", r"CLIP_IPSEC loaded"),
                ("ADMIN's network, into its jail only", r"CLIP_NET admin network \S+ up in jail admin"),
                ("AUDIT's network, into its jail only", r"CLIP_NET audit network \S+ up in jail audit"),
                ("ESP traffic through the tunnel", r"CLIP_IPSEC esp .*: [1-9][0-9]*\(bytes\)")),
    "client": (("boot", r"CLIP_BOOT_OK"), ("outside network", r"CLIP_NET outside \S+ up"),
               ("IPsec tunnel", r"CLIP_IPSEC established"),
               ("RM_H reaches the private host", r"CLIP_LAB rm_h private ok"),
               ("RM_B kept off the private network", r"CLIP_LAB rm_b private refused"),
               ("the gateway's SSH closed to the outside", r"CLIP_LAB gateway ssh port 23 from outside refused"),
               ("RM_H never in plaintext (tunnel down)", r"CLIP_LAB rm_h plaintext refused"),
               ("the tunnel back", r"CLIP_IPSEC re-established")),
}


@dataclass
class Lab:
    folder: Path
    machines: list[Machine]
    pids: dict[str, int]
    ports: dict[str, tuple[int, int]]
    images: dict[str, str]
    started: float
    deadline: float
    consoles: dict[str, str] = field(default_factory=dict)
    reboots: dict[str, int] = field(default_factory=dict)
    ssh_ports: dict[str, dict[str, int]] = field(default_factory=dict)  # machine -> jail -> port on 127.0.0.1

    def to_dict(self) -> dict[str, Any]:
        return {"machines": [m.to_dict() for m in self.machines], "pids": self.pids,
                "ports": {k: list(v) for k, v in self.ports.items()}, "images": self.images,
                "started": self.started, "deadline": self.deadline, "consoles": self.consoles,
                "reboots": self.reboots, "ssh_ports": self.ssh_ports}

    @classmethod
    def load(cls, folder: Path) -> Lab:
        path = folder / STATE
        if not path.is_file():
            raise InputError(f"{path}: no lab here", hint="clipbuild lab up client gateway")
        data = json.loads(path.read_text())
        return cls(folder, [Machine(**m) for m in data["machines"]], data["pids"],
                   {k: (v[0], v[1]) for k, v in data["ports"].items()}, data["images"], data["started"],
                   data["deadline"], data["consoles"], data.get("reboots", {}), data.get("ssh_ports", {}))

    def machine(self, name: str) -> Machine:
        found = next((m for m in self.machines if m.name == name), None)
        if found is None:
            raise InputError(f"lab: no machine {name}",
                             hint=f"machines: {', '.join(m.name for m in self.machines)}")
        return found

    def save(self) -> None:
        write_atomic(self.folder / STATE, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())


def _free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def operator_keys(folder: Path) -> dict[str, Path]:
    """The lab operators' SSH keys, one per SSH jail (folder/ssh/id_JAIL, made on first use): jail -> public key
    file, for the provisioning disks."""
    keys = {}
    for jail in sshkeys.SSH_JAILS:
        private = folder / "ssh" / f"id_{jail}"
        sshkeys.operator_key(private, f"lab-{jail}-operator")
        keys[jail] = private.with_name(private.name + ".pub")
    return keys


# What makes a machine's provisioning disk: (machine, disk path, operators' keys per jail) -> the host keys it
# carries per jail ({} when unknown, e.g. a disk given by the user).
Provisioner = Callable[[Machine, Path, dict[str, Path]], dict[str, str]]


def up(folder: Path, species: list[str], images: dict[str, Path], provision: Provisioner, *,
       lifetime: float) -> Lab:
    """Boot the machines (the gateway first); returns at once, the machines boot on their own."""
    require("qemu-system-x86_64", "timeout")
    machines = plan(species)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / STATE).is_file():
        running = [n for n, pid in Lab.load(folder).pids.items() if alive(pid)]
        if running:
            raise InputError(f"{folder}: a lab is running ({', '.join(running)})", hint="clipbuild lab down")
    ports = {"gateway": (_free_port(), _free_port())}
    lab = Lab(folder, machines, {}, {}, {}, time.time(), time.time() + lifetime)
    operators = operator_keys(folder)
    known_hosts = []
    for machine in machines:
        if machine.role == "gateway":
            lab.ports[machine.name] = ports["gateway"]
        else:
            lab.ports[machine.name] = (ports["gateway"][1], ports["gateway"][0])
        lab.ssh_ports[machine.name] = {jail: _free_port(socket.SOCK_STREAM) for jail in machine.ssh_jails}
        host_keys = provision(machine, folder / f"{machine.name}.provision.img", operators)
        known_hosts += [sshkeys.known_hosts_line("127.0.0.1", port, host_keys[jail])
                        for jail, port in lab.ssh_ports[machine.name].items() if jail in host_keys]
        console = folder / f"{machine.name}.console.log"
        console.write_text("")
        lab.images[machine.name] = str(images[machine.species])
        lab.consoles[machine.name] = str(console)
        _start(lab, machine)
    write_atomic(folder / KNOWN_HOSTS, "".join(known_hosts).encode())
    lab.save()
    return lab


def _start(lab: Lab, machine: Machine) -> None:
    """One machine's QEMU, for what is left of the lab's life; its console appended to."""
    left = max(1, int(lab.deadline - time.time()))
    image = Path(lab.images[machine.name])
    command = ["timeout", "--signal=TERM", "--kill-after=10", f"{left}s",
               *qemu_command(machine, image, lab.folder / f"{machine.name}.provision.img",
                             Path(lab.consoles[machine.name]), lab.ports[machine.name],
                             lab.ssh_ports.get(machine.name, {}), uefi=_uefi(lab, machine, image, left))]
    lab.pids[machine.name] = spawn(command, lab.folder / f"{machine.name}.qemu.log")


def _uefi(lab: Lab, machine: Machine, image: Path, lifetime: int) -> firmware.Machine | None:
    """The UEFI machine (OVMF with the image's enrolled keys, swtpm for the lab's life) of an image of the UEFI
    path; None for the BIOS path. Development images only: the lab has no release key folder to enroll."""
    manifest = inspection.read(image).manifest
    if boot_loader(manifest) != SYSTEMD_BOOT:
        return None
    keys = uefi.keys_for(manifest, None, str(image))
    return firmware.start(keys, lab.folder / f"{machine.name}.uefi", lifetime=lifetime)[0]


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not alive(pid):
            return
        time.sleep(0.1)


def reboot(folder: Path, name: str) -> int:
    """Power machine NAME off and on again (same disks, same place on the network); its new pid. What it
    prints next is appended to its console."""
    lab = Lab.load(folder)
    machine = lab.machine(name)
    _stop(lab.pids[name])
    with Path(lab.consoles[name]).open("a") as console:
        console.write(f"\n=== clipbuild lab: {name} rebooted at {time.strftime('%H:%M:%S')} ===\n")
    _start(lab, machine)
    lab.reboots[name] = lab.reboots.get(name, 0) + 1
    lab.save()
    return lab.pids[name]


def ssh_command(folder: Path, name: str, jail: str, *, user: str | None = None, key_of: str | None = None,
                ) -> list[str]:
    """ssh to JAIL of lab machine NAME through its network's forwarded port, as the jail's role user with the
    lab operator's key, the host key pinned from the provisioning (never trusted on first use)."""
    lab = Lab.load(folder)
    ports = lab.ssh_ports.get(lab.machine(name).name, {})
    if jail not in ports:
        raise InputError(f"lab: {name} has no SSH network for {jail!r}",
                         hint=f"{name}'s: {', '.join(ports) or 'none'} (the gateway's: "
                              f"{', '.join(n.jail for n in ADMIN_NETS)})")
    return ["ssh", "-F", "/dev/null", "-p", str(ports[jail]), "-i", str(folder / "ssh" / f"id_{key_of or jail}"),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
            "-o", f"UserKnownHostsFile={folder / KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
            "-o", "HostKeyAlgorithms=ssh-ed25519", "-l", user or jail, "127.0.0.1"]


def down(folder: Path) -> list[str]:
    """Stop every machine of the lab (their process groups); the names stopped."""
    lab = Lab.load(folder)
    stopped = [name for name, pid in lab.pids.items() if alive(pid)]
    for name in stopped:
        _stop(lab.pids[name])
    return stopped


@dataclass
class MachineState:
    name: str
    running: bool
    proofs: dict[str, str]  # what -> the console line that proves it
    missing: list[str]
    failed: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "running": self.running, "proofs": self.proofs, "missing": self.missing,
                "failed": self.failed}


def _owed(lab: Lab, machine: Machine) -> list[tuple[str, str, int]]:
    """What the machine must have printed, and how many times: its role's proofs once per boot; a client, once
    more its tunnel and RM_H's request after each reboot of the gateway."""
    boots = 1 + lab.reboots.get(machine.name, 0)
    owed = [(what, pattern, boots) for what, pattern in PROOFS[machine.role]]
    gateway_reboots = lab.reboots.get("gateway", 0)
    if machine.role == "client" and gateway_reboots:
        owed.append(("RM_H through the tunnel after the gateway's reboot", r"CLIP_LAB rm_h private ok again",
                     gateway_reboots))
    return owed


def state(lab: Lab) -> list[MachineState]:
    out = []
    for machine in lab.machines:
        text = Path(lab.consoles[machine.name]).read_text(errors="replace")
        lines = [ANSI.sub("", line) for line in text.splitlines()]
        proofs, missing = {}, []
        for what, pattern, times in _owed(lab, machine):
            found = [line for line in lines if re.search(pattern, line)]
            if len(found) < times:
                missing.append(what)
            else:
                proofs[what] = found[-1].strip()
        failed = next((line.strip() for line in lines if FAILED.search(line)), "")
        out.append(MachineState(machine.name, alive(lab.pids[machine.name]), proofs, missing, failed))
    return out


def check(folder: Path, *, timeout: float, poll: float = 2.0) -> tuple[list[MachineState], float]:
    """Wait until every machine printed every proof its role owes; VmCheckError on a failure, a machine that
    stopped, or the timeout. Returns the states and the seconds since `lab up`."""
    lab = Lab.load(folder)
    deadline = time.monotonic() + timeout
    while True:
        states = state(lab)
        failed = [f"{s.name}: {s.failed}" for s in states if s.failed]
        if failed:
            raise VmCheckError(f"lab check: {'; '.join(failed)}")
        if all(not s.missing for s in states):
            return states, time.time() - lab.started
        stopped = [s.name for s in states if not s.running]
        if stopped or time.monotonic() > deadline:
            waiting = "; ".join(f"{s.name}: no {', '.join(s.missing)}" for s in states if s.missing)
            why = f"{', '.join(stopped)} stopped" if stopped else f"not within {timeout:g} s"
            raise VmCheckError(f"lab check: {why}: {waiting} (consoles: {folder})")
        time.sleep(poll)
