"""Commands for machine identities: pki ipsec (the IPsec CA and one certificate per machine), provision."""

from __future__ import annotations

from pathlib import Path

import click

from clipbuild.cli.context import emit_json, json_option
from clipbuild.cli.signing import passphrase_option, secret_of
from clipbuild.image import provision
from clipbuild.signing import ipsecpki, sshkeys

SPECIES = click.Choice(list(ipsecpki.SPECIES))
pki_dir_argument = click.argument("directory", type=click.Path(path_type=Path, file_okay=False))


@click.group("ipsec")
def ipsec_group() -> None:
    """The IPsec CA (ECDSA P-384, SHA-384), one certificate per machine, and the CRL.

    \b
    A PKI apart from the package-signing CAs. Machine keys are written in the clear (charon loads them at
    boot) to DIRECTORY/machines/NAME/ only; `clipbuild provision` puts one machine's key on its own
    provisioning disk (docs/signing.md, "IPsec identities and provisioning").
      clipbuild pki ipsec init pki-ipsec/ --org "Example Org"
      clipbuild pki ipsec issue pki-ipsec/ gw1 --species gateway --san 192.0.2.1
      clipbuild provision gw1 --species gateway --pki pki-ipsec/ --out gw1.prov.img
    """


@ipsec_group.command("init")
@pki_dir_argument
@click.option("--org", default=ipsecpki.ORGANISATION, show_default=True,
              help="The organisation (O) of the CA and of every machine certificate.")
@click.option("--days", type=click.IntRange(1), default=ipsecpki.CA_DAYS, show_default=True)
@passphrase_option
def ipsec_init(directory: Path, org: str, days: int, passphrase_file: Path | None) -> None:
    """Create the IPsec CA (key encrypted) and its empty CRL in DIRECTORY."""
    for path in ipsecpki.init(directory, secret_of(passphrase_file), organisation=org, days=days):
        click.echo(path)


@ipsec_group.command("issue")
@pki_dir_argument
@click.argument("name")
@click.option("--species", type=SPECIES, required=True, help="Written as the certificate's OU.")
@click.option("--days", type=click.IntRange(1), default=ipsecpki.MACHINE_DAYS, show_default=True)
@click.option("--san", "sans", multiple=True, metavar="IP|DNS",
              help="Another subjectAltName besides DNS:NAME (repeat it for more).")
@passphrase_option
def ipsec_issue(directory: Path, name: str, species: str, days: int, sans: tuple[str, ...],
                passphrase_file: Path | None) -> None:
    """Issue machine NAME's certificate and key (DIRECTORY/machines/NAME/)."""
    machine = ipsecpki.issue(directory, name, species, secret_of(passphrase_file), days=days, sans=sans)
    click.echo(f"{machine.cert} (serial {machine.serial:x}, {species}, until {machine.not_after:%Y-%m-%d})")


@ipsec_group.command("revoke")
@pki_dir_argument
@click.argument("name")
@passphrase_option
def ipsec_revoke(directory: Path, name: str, passphrase_file: Path | None) -> None:
    """Put machine NAME on the CRL; peers refuse it once their provisioning disk carries the new CRL."""
    crl = ipsecpki.revoke(directory, name, secret_of(passphrase_file))
    click.echo(f"revoked {name}; provision its peers again to carry {crl}")


@ipsec_group.command("crl")
@pki_dir_argument
@passphrase_option
def ipsec_crl(directory: Path, passphrase_file: Path | None) -> None:
    """Re-issue the CRL with the same entries (it is valid 30 days)."""
    click.echo(ipsecpki.refresh_crl(directory, secret_of(passphrase_file)))


@ipsec_group.command("list")
@pki_dir_argument
@json_option
def ipsec_list(directory: Path, as_json: bool) -> None:
    """The machines: name, species, expiry, revocation."""
    found = ipsecpki.machines(directory)
    if as_json:
        emit_json([m.to_dict() for m in found])
        return
    for machine in found:
        state = f"revoked {machine.revoked:%Y-%m-%d}" if machine.revoked else "valid"
        click.echo(f"{machine.name:<24} {machine.species:<8} until {machine.not_after:%Y-%m-%d}  {state}")


@click.command("provision")
@click.argument("name")
@click.option("--species", type=SPECIES, required=True)
@click.option("--pki", "pki_dir", type=click.Path(path_type=Path, file_okay=False),
              help="The IPsec PKI holding NAME's certificate (clipbuild pki ipsec issue).")
@click.option("--dev-pki", is_flag=True, help="Use the development IPsec PKI instead, issuing NAME's "
              "certificate on demand (~/.cache/clipbuild/dev-ipsec-pki; DEVELOPMENT in every subject).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--conf", "conf", multiple=True, metavar="KEY=VALUE",
              help="A line of machine.conf: KEY [A-Z_]+, VALUE [A-Za-z0-9./:_-]* (repeat it for more).")
@click.option("--ssh-key", "ssh_keys", multiple=True, metavar="JAIL=FILE",
              help="Let the operators whose public keys are in FILE (authorized_keys or .pub) log in to JAIL's SSH "
                   "(admin: port 22, user admin; audit: port 23, user audit). Without it, nobody can.")
@json_option
def provision_cmd(name: str, species: str, pki_dir: Path | None, dev_pki: bool, out: Path, conf: tuple[str, ...],
                  ssh_keys: tuple[str, ...], as_json: bool) -> None:
    """Write machine NAME's provisioning disk: a 4 MiB FAT image (label CLIPPROV) with machine.conf and its
    IPsec certificate, key, CA and CRL, and the host keys of its SSH jails (kept in the PKI folder: pin them
    before the first boot; --json prints them), attached read-only to that machine only. Reproducible with
    SOURCE_DATE_EPOCH; mode 0600."""
    if dev_pki == (pki_dir is not None):
        raise click.UsageError("give --pki DIR or --dev-pki (one of them)")
    directory = ipsecpki.ensure_dev_machine(name, species) if dev_pki else pki_dir
    assert directory is not None
    keys: dict[str, Path] = {}
    for pair in ssh_keys:
        jail, _, file = pair.partition("=")
        if not file or jail in keys:
            raise click.BadParameter(f"{pair}: JAIL=FILE, once per jail", param_hint="--ssh-key")
        keys[jail] = Path(file)
    disk = provision.write(name, species, directory, out, conf, keys)
    if as_json:
        emit_json(disk.to_dict(), sort_keys=False)
    else:
        click.echo(f"{out}: {name} ({species}), certificate serial {disk.cert.serial_number:x} until "
                   f"{disk.cert.not_valid_after_utc:%Y-%m-%d}, {len(disk.files)} files")
        for key in disk.ssh_host_keys:
            who = "operators' keys" if key.jail in disk.ssh_operators else "nobody may log in"
            click.echo(f"  ssh {key.jail}: host key {sshkeys.fingerprint(key.public)} ({who})")


COMMANDS = (provision_cmd,)
