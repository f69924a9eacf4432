"""Fuzzing the tree-confined file operations: trees of hostile links (out, absolute, `..`, loops, inside), any
operation on any path ends in success inside the tree, FileNotFoundError or a TreeError; the host folder beside
the tree never changes and nothing is created outside the tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from clipbuild.core import beneath

FUZZ = settings(max_examples=300, deadline=None)
LINKS = st.sampled_from(["etc/fstab", "etc/os-release", "var", "mounts", "log", "loop", "etc/loop", "etc/d"])
TARGETS = st.sampled_from(["../host", "../../host/secret", "/", "/etc", "HOST", "HOST_FILE", "loop", "../etc", ".",
                           "etc/fstab", "../../../../..", "var/pkg", "etc", "fstab", "d", "../var"])
PATHS = st.tuples(LINKS | st.sampled_from(["etc", "etc/new", ".", "..", "var/pkg/pending"]),
                  st.sampled_from(["", "/x", "/pkg/pending", "/..", "/../..", "/secret"])).map("".join)
OPERATIONS = ("read_bytes", "write_bytes", "mkdir", "unlink", "remove_tree", "exists", "is_dir", "regular_path",
              "entries", "replace")


def _run(root: Path, operation: str, rel: str, other: str) -> None:
    calls = {"write_bytes": lambda: beneath.write_bytes(root, rel, b"x"),
             "replace": lambda: beneath.replace(root, rel, root, other)}
    call = calls.get(operation, lambda: getattr(beneath, operation)(root, rel))
    with contextlib.suppress(beneath.TreeError, FileNotFoundError):
        call()


def _state(folder: Path) -> list[tuple[str, bytes, int]]:
    return sorted((str(p), p.read_bytes() if p.is_file() else b"", p.lstat().st_mtime_ns) for p in folder.rglob("*"))


@FUZZ
@given(st.lists(st.tuples(LINKS, TARGETS), max_size=6), st.lists(st.tuples(st.sampled_from(OPERATIONS), PATHS, PATHS),
                                                                   min_size=1, max_size=6))
def test_no_operation_leaves_the_tree(links, operations):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, host = base / "tree", base / "host"
        (root / "etc").mkdir(parents=True)
        host.mkdir()
        (host / "secret").write_bytes(b"secret")
        for rel, target in links:
            path = root / rel
            if path.parent not in (root, root / "etc") or os.path.lexists(path):  # real folders only
                continue
            path.symlink_to({"HOST": str(host), "HOST_FILE": str(host / "secret")}.get(target, target))
        before, outside = _state(host), sorted(base.iterdir())
        for operation, rel, other in operations:
            _run(root, operation, rel, other)
        assert _state(host) == before and sorted(base.iterdir()) == outside
        shutil.rmtree(root)
