"""Session fixtures shared by every end-to-end module: the project copy, the client built once (the session's
first build, so every package is compiled from source into the copy's fresh store), then its image. A module
requests what it needs; whichever asks first makes it, so the modules run in any order, alone or together."""

from __future__ import annotations

import pytest

from tests.e2e.support import DATE, Project


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
