"""Session fixtures shared by every end-to-end module: the project copy, the client built once (the session's
first build, so every package is compiled from source into the copy's fresh store), then its image. A module
requests what it needs; whichever asks first makes it, so the modules run in any order, alone or together."""

from __future__ import annotations

import time

import pytest

from tests.e2e.support import DATE, Project, bump, dated_copy, release

DAY = 86400


@pytest.fixture(scope="session")
def e2e_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The end-to-end project copy (tests/e2e/support.py), dated SOURCE_DATE_EPOCH=DATE, its distfiles fetched."""
    proj = Project(tmp_path_factory.mktemp("e2e"))
    proj.env["SOURCE_DATE_EPOCH"] = DATE
    fetched = proj.clipbuild("fetch", "client")
    assert fetched.returncode == 0, fetched.stderr
    return proj


@pytest.fixture(scope="session")
def client_build(e2e_project: Project) -> dict:
    """`clipbuild build client --json` on the e2e project, before any other build of the session."""
    return e2e_project.build("client")


@pytest.fixture(scope="session")
def client_image(e2e_project: Project, client_build: dict) -> dict:
    """`clipbuild image client --json` on the e2e project, after the client build."""
    return e2e_project.image("client")


@pytest.fixture(scope="session")
def releases(e2e_project: Project, client_image: dict, tmp_path_factory) -> dict:
    """Version N (the e2e project's own release) and N+1 (a copy at 4.5.1 sharing the package store, dated a
    day ago), each with its image and signed update repositories; "project" runs the commands."""
    new = dated_copy(tmp_path_factory.mktemp("n1"), e2e_project.env["CLIPBUILD_BINPKGS"], int(time.time()) - DAY)
    bump(new, "4.5.1")
    return {"n": release(e2e_project), "n1": release(new), "project": e2e_project}
