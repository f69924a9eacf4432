"""The two species at work together: a client and a gateway booted side by side on 127.0.0.1 (docs/network.md).
The tunnel comes up by itself, RM_H reaches the private host through it (and the gateway's ESP counters move),
RM_B does not reach it: each machine proves its part on its console, `lab check` reads the proofs. An operator on
the gateway's admin network reaches its ADMIN jail over SSH, and only that jail."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.support import Project


@pytest.fixture(scope="module")
def project(e2e_project: Project, client_image: dict) -> Project:
    e2e_project.image("gateway")
    return e2e_project


# In a jail: its hostname, its namespaces (compared with what the gateway's boot proved for that jail), its
# pid 1, the user, and whether the core's /etc/jails (never bound into a jail) is there.
WHERE = ("hostname; for ns in mnt pid net uts ipc; do readlink /proc/self/ns/$ns; done; cat /proc/1/comm; id -un; "
         "ls /etc/jails 2>&1 | head -n 1")


def _proven_namespaces(console: str, jail: str) -> list[str]:
    """The namespace ids the boot proof reported for `jail`, as readlink shows them (net:[ID])."""
    found = re.findall(rf"CLIP_JAIL {jail} ok pid=\d+ ns=(\S+)", console)
    ids = dict(item.split(":", 1) for item in found[-1].split(","))
    return [f"{ns}:[{ids[ns]}]" for ns in ("mnt", "pid", "net", "uts", "ipc")]


def _operators_reach_their_jail_and_only_it(project: Project) -> None:
    console = (project.workdir / "lab" / "gateway.console.log").read_text(errors="replace")
    for jail in ("admin", "audit"):
        ran = project.clipbuild("lab", "ssh", "gateway", jail, "--", WHERE)
        assert ran.returncode == 0, (jail, ran.stderr[-2000:])
        lines = ran.stdout.splitlines()
        assert lines[0] == jail, lines  # the jail's own UTS namespace
        assert lines[1:6] == _proven_namespaces(console, jail), lines  # the very jail the boot proved
        assert lines[6] == "clip-jail-init" and lines[7] == jail, lines  # under the jail's init, as its role user
        assert "No such file or directory" in lines[8], lines  # nothing of the core's /etc/jails
    # Each jail lets in its own operators only: not the other role's user, not the other role's key.
    wrong_user = project.clipbuild("lab", "ssh", "gateway", "admin", "--user", "audit", "--key-of", "audit", "--",
                                   "true")
    assert wrong_user.returncode == 255 and "Permission denied (publickey)" in wrong_user.stderr, wrong_user.stderr
    wrong_key = project.clipbuild("lab", "ssh", "gateway", "audit", "--key-of", "admin", "--", "true")
    assert wrong_key.returncode == 255 and "Permission denied (publickey)" in wrong_key.stderr, wrong_key.stderr
    # The host key the operator pinned is the provisioned one: a changed known_hosts entry is refused.
    known = project.workdir / "lab" / "known_hosts"
    pinned = known.read_text()
    try:
        other = (project.workdir / "lab" / "ssh" / "id_admin.pub").read_text().split()[:2]
        known.write_text(re.sub(r"ssh-ed25519 \S+", " ".join(other), pinned))
        spoofed = project.clipbuild("lab", "ssh", "gateway", "admin", "--", "true")
        assert spoofed.returncode == 255 and "Host key verification failed" in spoofed.stderr, spoofed.stderr
    finally:
        known.write_text(pinned)


def test_rm_h_reaches_the_private_network_only_through_the_gateways_tunnel(project):
    up = project.clipbuild("lab", "up", "client", "gateway", "--lifetime", "900", "--json")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        check = project.clipbuild("lab", "check", "--timeout", "600", "--json")
        assert check.returncode == 0, check.stderr[-3000:] + check.stdout[-3000:]
        found = json.loads(check.stdout)
        machines = {m["name"]: m for m in found["machines"]}
        client, gateway = machines["client"]["proofs"], machines["gateway"]["proofs"]
        assert "CLIP private host 10.99.0.10" in client["RM_H reaches the private host"]
        assert client["RM_B kept off the private network"].startswith("CLIP_LAB rm_b private refused")
        assert "(bytes)" in gateway["ESP traffic through the tunnel"]
        assert "dropped by the client's firewall" in client["RM_H never in plaintext (tunnel down)"]
        assert "SSH port 22 from that network only" in gateway["ADMIN's network, into its jail only"]
        assert "from outside refused" in client["the gateway's SSH closed to the outside"]
        print(f"lab up to a working tunnel and both levels proven: {found['seconds']} s")
        _operators_reach_their_jail_and_only_it(project)
        # A power cut on the gateway: the client notices, keeps trying, and its tunnel returns by itself.
        rebooted = project.clipbuild("lab", "reboot", "gateway")
        assert rebooted.returncode == 0, rebooted.stderr
        again = project.clipbuild("lab", "check", "--timeout", "400", "--json")
        assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
        client_again = {m["name"]: m for m in json.loads(again.stdout)["machines"]}["client"]["proofs"]
        assert "CLIP private host" in client_again["RM_H through the tunnel after the gateway's reboot"]
        console = (project.workdir / "lab" / "client.console.log").read_text(errors="replace")
        assert "CLIP_IPSEC lost" in console.split("CLIP_IPSEC re-established")[-1]
    finally:
        down = project.clipbuild("lab", "down")
        assert down.returncode == 0, down.stderr


def test_a_client_whose_certificate_was_revoked_is_refused_by_the_gateway(project, tmp_path):
    """The client keeps the disk it was given before its certificate was revoked; the gateway, provisioned with
    the CA's new CRL (revocation = strict), refuses it, and says so in its IKE log."""
    pki, disk = tmp_path / "ipsec", tmp_path / "client.prov.img"
    project.env["CLIPBUILD_PASSPHRASE"] = "lab test"
    steps = [("pki", "ipsec", "init", str(pki)),
             ("pki", "ipsec", "issue", str(pki), "gateway", "--species", "gateway"),
             ("pki", "ipsec", "issue", str(pki), "client", "--species", "client"),
             ("lab", "provision", "client", "--pki", str(pki), "--out", str(disk)),
             ("pki", "ipsec", "revoke", str(pki), "client"),
             ("lab", "up", "client", "gateway", "--lifetime", "600", "--pki", str(pki), "--disk", f"client={disk}")]
    for args in steps:
        result = project.clipbuild(*args)
        assert result.returncode == 0, (args, result.stderr[-2000:])
    try:
        check = project.clipbuild("lab", "check", "--timeout", "400")
        assert check.returncode == 1, check.stdout[-2000:]
        assert "client: CLIP_NET ipsec FAILED: no IKE SA and CHILD_SA" in check.stderr, check.stderr[-2000:]
        gateway = (project.workdir / "lab" / "gateway.console.log").read_text(errors="replace")
        assert "certificate was revoked" in gateway
        assert "CLIP_IPSEC esp" not in gateway  # no SA was ever installed
    finally:
        project.clipbuild("lab", "down")
