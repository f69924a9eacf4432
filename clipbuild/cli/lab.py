"""`clipbuild lab`: the species at work together, booted side by side on 127.0.0.1 (docs/network.md)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option
from clipbuild.cli.image import image_path
from clipbuild.core.run import run
from clipbuild.image import provision
from clipbuild.lab import control
from clipbuild.lab.topology import Machine, plan
from clipbuild.signing import ipsecpki, sshkeys


@click.group("lab")
def lab_group() -> None:
    """Boot a client and a gateway wired together, and check what they prove.

    \b
    The machines run headless in QEMU (TCG) under WORKDIR/lab/, with their consoles logged there. The outside
    segment is a UDP socket pair on 127.0.0.1; the private network is a namespace on the gateway. Each machine
    gets its own provisioning disk (identity and IPsec credentials from the development IPsec PKI). Every
    machine stops by itself after --lifetime.
      clipbuild image client && clipbuild image gateway
      clipbuild lab up client gateway
      clipbuild lab check          # waits for the tunnel and the levels' reach, as the machines report them
      clipbuild lab down
    """


def _folder(opts: Options) -> Path:
    return opts.workdir / "lab"


def _provision(machine: Machine, out: Path, operators: dict[str, Path], pki: Path | None = None) -> dict[str, str]:
    """Machine's provisioning disk with the lab's machine.conf, from `pki` (its certificate issued there) or the
    development IPsec PKI (issued on demand), letting the lab's operators into its SSH jails; its host keys."""
    directory = pki or ipsecpki.ensure_dev_machine(machine.name, machine.species)
    conf = tuple(f"{k}={v}" for k, v in machine.conf.items() if k not in ("NAME", "SPECIES"))
    disk = provision.write(machine.name, machine.species, directory, out, conf,
                           {jail: operators[jail] for jail in machine.ssh_jails})
    return {key.jail: key.public for key in disk.ssh_host_keys}


pki_option = click.option("--pki", type=click.Path(path_type=Path, file_okay=False, exists=True),
                          help="An IPsec PKI (clipbuild pki ipsec) holding the machines' certificates, instead of "
                               "the development one.")


@lab_group.command("provision")
@click.argument("name", type=click.Choice(["client", "gateway"]))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@pki_option
@click.pass_obj
def provision_cmd(opts: Options, name: str, out: Path, pki: Path | None) -> None:
    """Write lab machine NAME's provisioning disk now (for `lab up --disk NAME=FILE` later): e.g. a client
    provisioned before its certificate is revoked, to see the gateway refuse it."""
    machine = next(m for m in plan(["client", "gateway"]) if m.name == name)
    _provision(machine, out, control.operator_keys(_folder(opts)), pki)
    click.echo(f"{out}: {name}'s provisioning disk")


@lab_group.command("up")
@click.argument("species", nargs=-1, required=True)
@click.option("--lifetime", type=click.IntRange(60, 24 * 3600), default=1800, show_default=True,
              help="Seconds after which every machine stops by itself.")
@pki_option
@click.option("--disk", "disks", multiple=True, metavar="NAME=FILE",
              help="Machine NAME's provisioning disk (clipbuild provision) instead of one made from the development "
                   "IPsec PKI; it must carry the lab's machine.conf keys (see docs/network.md).")
@json_option
@click.pass_obj
def up_cmd(opts: Options, species: tuple[str, ...], lifetime: int, pki: Path | None, disks: tuple[str, ...],
           as_json: bool) -> None:
    """Boot SPECIES (one gateway and one client: `client gateway`), each from its newest image."""
    images = {name: image_path(opts, name) for name in sorted(set(species))}
    given: dict[str, Path] = {}
    for pair in disks:
        name, _, file = pair.partition("=")
        if not file or not Path(file).is_file():
            raise click.BadParameter(f"{pair}: NAME=FILE, an existing provisioning disk", param_hint="--disk")
        given[name] = Path(file)

    def provision_one(machine: Machine, out: Path, operators: dict[str, Path]) -> dict[str, str]:
        if machine.name in given:
            shutil.copyfile(given[machine.name], out)
            return {}
        return _provision(machine, out, operators, pki)

    lab = control.up(_folder(opts), list(species), images, provision_one, lifetime=lifetime)
    if as_json:
        emit_json(lab.to_dict())
        return
    for machine in lab.machines:
        click.echo(f"{machine.name}: {machine.species} at {machine.outside} (pid {lab.pids[machine.name]}), "
                   f"console {lab.consoles[machine.name]}")
        for jail, port in lab.ssh_ports.get(machine.name, {}).items():
            click.echo(f"  {jail} jail: SSH from its network, 127.0.0.1:{port} here "
                       f"(clipbuild lab ssh {machine.name} {jail})")
    click.echo(f"stops by itself in {lifetime} s; check with `clipbuild lab check`, stop with `clipbuild lab down`")


def _print(states: list[control.MachineState]) -> None:
    for state in states:
        click.echo(f"{state.name}: {'running' if state.running else 'stopped'}")
        for what, line in state.proofs.items():
            click.echo(f"  {what}: {line}")
        for what in state.missing:
            click.echo(f"  {what}: not yet")
        if state.failed:
            click.echo(f"  FAILED: {state.failed}")


@lab_group.command("status")
@json_option
@click.pass_obj
def status_cmd(opts: Options, as_json: bool) -> None:
    """What each machine has proven so far, from its console."""
    states = control.state(control.Lab.load(_folder(opts)))
    if as_json:
        emit_json([s.to_dict() for s in states])
    else:
        _print(states)


@lab_group.command("check")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for every proof.")
@json_option
@click.pass_obj
def check_cmd(opts: Options, timeout: float, as_json: bool) -> None:
    """Wait until every machine printed what its role must prove (boot, networks, tunnel, the levels' reach);
    exit 1 on a failure, a stopped machine or the timeout."""
    states, seconds = control.check(_folder(opts), timeout=timeout)
    if as_json:
        emit_json({"ok": True, "seconds": round(seconds, 1), "machines": [s.to_dict() for s in states]})
        return
    _print(states)
    click.echo(f"lab ok, {seconds:.0f} s after lab up")


@lab_group.command("reboot")
@click.argument("name")
@click.pass_obj
def reboot_cmd(opts: Options, name: str) -> None:
    """Power machine NAME off and on again, as a power cut would: the other machines must cope by themselves
    (the client's tunnel returns once the gateway is back)."""
    pid = control.reboot(_folder(opts), name)
    click.echo(f"{name}: rebooted (pid {pid})")


@lab_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("jail")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--user", help="Log in as USER instead of the jail's role user (admin, audit): to see it refused.")
@click.option("--key-of", type=click.Choice(sshkeys.SSH_JAILS),
              help="Offer the lab operator's key of that jail instead of JAIL's: to see it refused.")
@click.pass_obj
def ssh_cmd(opts: Options, name: str, jail: str, command: tuple[str, ...], user: str | None,
            key_of: str | None) -> None:
    """Run COMMAND (or a shell) in JAIL of lab machine NAME over SSH, as an operator on that jail's own network:
    `clipbuild lab ssh gateway admin -- hostname`. The host key is the one provisioned for that jail (pinned in
    WORKDIR/lab/known_hosts); the exit status is ssh's (255: the connection or the login failed)."""
    argv = [*control.ssh_command(_folder(opts), name, jail, user=user, key_of=key_of), *command]
    sys.exit(run(argv, check=False, capture=False).returncode)


@lab_group.command("down")
@click.pass_obj
def down_cmd(opts: Options) -> None:
    """Stop every machine of the lab."""
    stopped = control.down(_folder(opts))
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


COMMANDS = (lab_group,)
