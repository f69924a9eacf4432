"""`jails run`: the rendered rules hold for real in namespaces (write xor execute, read-only root, capabilities)."""

from __future__ import annotations

import pytest

from clipbuild.jails import definitions
from clipbuild.jails.realise import run_in_jail
from clipbuild.jails.rules import KERNEL_CAPS
from clipbuild.spec.profile import resolve
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(request):
    from clipbuild.core.project import Project

    project = Project(ROOT)
    loaded = definitions.load_all(project, resolve(project, "client").jails)
    return {j.name: j for j in loaded}, definitions.render(project, loaded, "client")


def in_jail(client, name: str, script: str):
    by_name, rendered = client
    return run_in_jail(by_name[name], rendered, ["sh", "-c", script])


def test_the_root_cannot_be_written(client):
    result = in_jail(client, "user", "touch /etc/evil /evil; echo status=$?")
    assert "Read-only file system" in result.stderr and "status=1" in result.stdout


def test_a_script_written_into_a_writable_mount_cannot_run(client):
    for where in ("/var", "/tmp", "/home/user"):
        result = in_jail(client, "user", f"printf '#!/bin/sh\\necho ran\\n' > {where}/s.sh && chmod +x {where}/s.sh "
                                         f"&& echo written; {where}/s.sh; echo status=$?")
        assert "written" in result.stdout and "ran" not in result.stdout, where
        assert "Permission denied" in result.stderr and "status=126" in result.stdout


def test_the_update_exception_really_is_executable(client):
    result = in_jail(client, "update", "printf '#!/bin/sh\\necho ran\\n' > /var/pkg/s.sh && chmod +x /var/pkg/s.sh "
                                       "&& /var/pkg/s.sh")
    assert result.stdout == "ran\n"


def _bounding_set(client, name: str) -> set[str]:
    result = in_jail(client, name, "grep CapBnd /proc/self/status")
    mask = int(result.stdout.split()[1], 16)
    return {cap for bit, cap in enumerate(KERNEL_CAPS) if mask >> bit & 1}


def test_capabilities_are_exactly_the_bounding_set(client):
    assert _bounding_set(client, "user") == set()
    admin = _bounding_set(client, "admin")
    assert admin == set(client[0]["admin"].bcaps)
    assert "SYS_TIME" in admin and "SYS_ADMIN" not in admin
    assert _bounding_set(client, "ike") == {"NET_ADMIN", "NET_BIND_SERVICE"}


def test_a_dropped_capability_is_refused_for_real(client):
    result = in_jail(client, "user", "mount -t tmpfs none /tmp; echo status=$?")
    assert "status=0" not in result.stdout


def test_no_network_but_its_own_loopback(client):
    result = in_jail(client, "user", "cat /proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]
