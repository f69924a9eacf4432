"""House rules that keep the code base honest: one runner, ruff-clean, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

from clipbuild.core.run import run

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipbuild"
RUNNER = PACKAGE / "core" / "run.py"
MAX_MODULE_LINES = 800


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_runner_starts_processes():
    offenders = []
    for path in _modules():
        if path == RUNNER:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                  and (node.attr in {"system", "popen"} or node.attr.startswith(("exec", "spawn")))):
                names = [f"os.{node.attr}"]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                          if n.split(".")[0] in {"subprocess", "pty"} or n.startswith("os.")]
    assert offenders == [], "run external programs through clipbuild.core.run only"


def test_ruff_is_clean():
    result = run([str(ROOT / ".venv" / "bin" / "ruff") if (ROOT / ".venv/bin/ruff").exists() else "ruff",
                  "check", "--no-cache", "clipbuild", "tests", "bench"], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert big == []


# Modules that work on installed trees (after or around dpkg): every file operation on a tree goes through
# clipbuild.core.beneath, so a package's symbolic link never leads host-side work out of the tree (P10 item 1).
TREE_MODULES = ("image/slot.py", "image/install.py", "image/elfcheck.py", "image/contents.py", "image/fsimage.py",
                "image/inspection.py", "update/apply.py", "update/apps.py", "stages/image.py")
TREE_NAMES = {"tree", "trees", "root", "mounts", "stage", "log", "target", "mirror", "target_tree", "source", "folder",
              "listing", "status", "os_release"}
PATH_OPS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink", "rename", "replace",
            "touch", "symlink_to", "rmdir", "iterdir", "glob", "rglob", "chmod", "exists", "is_file", "is_dir",
            "resolve", "stat", "copy", "move", "rmtree", "copyfile", "copytree"}
# Uses on a tree that are not file operations through a package's links, each with its reason.
TREE_OPS_ALLOWED = {
    ("image/slot.py", "tree.mkdir"): "core_trees: the empty trees' roots, made by clipbuild before dpkg runs",
    ("image/install.py", "root.mkdir"): "split_core: the mounts and log trees' roots, made by clipbuild",
    ("image/install.py", "tree.rglob"): "normalise_tree: rglob never descends a link; os.utime does not follow",
    ("image/fsimage.py", "tree.rglob"): "sizes and listings: lstat and names only, nothing opened",
    ("image/contents.py", "folder.mkdir"): "the empty folder debugfs dumps an image's ext4 partition into",
    ("image/inspection.py", "mirror.mkdir"): "the empty folder debugfs copies an image's mirror into",
    ("stages/image.py", "trees[name].mkdir"): "a shared partition's empty tree root (RM, /home), made before "
                                             "dpkg or split_shared fills it",
    ("update/apply.py", "mounts.copy"): "imageedit.Ext4.copy: debugfs dumps one file out of the image's ext4 "
                                        "partition into scratch; no host path in a tree is opened",
}


def _tree_op(node: ast.Call) -> str:
    """`receiver.op` for a path or file operation whose receiver names a tree, else ''."""
    func = node.func
    if isinstance(func, ast.Name) and func.id == "open":
        return "open"
    if not isinstance(func, ast.Attribute) or func.attr not in PATH_OPS:
        return ""
    if isinstance(func.value, ast.Name) and func.value.id in {"shutil", "os"}:
        keywords = {k.arg: k.value for k in node.keywords}
        safe = "dir_fd" in keywords or isinstance(keywords.get("follow_symlinks"), ast.Constant)
        return "" if safe else ast.unparse(func)
    names = {n.id for n in ast.walk(func.value) if isinstance(n, ast.Name)}
    return ast.unparse(func) if names & TREE_NAMES else ""


def test_tree_modules_touch_trees_only_through_beneath():
    found = []
    for module in TREE_MODULES:
        path = PACKAGE / module
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and (op := _tree_op(node)) and (module, op) not in TREE_OPS_ALLOWED:
                found.append(f"clipbuild/{module}:{node.lineno}: {op}(...)")
    assert found == [], "use clipbuild.core.beneath for file operations on an installed tree"
