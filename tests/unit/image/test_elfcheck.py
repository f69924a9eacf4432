"""The whole-tree checks (clipbuild.image.elfcheck) on tiny ELF files built with the host's gcc in temporary
trees: hardened files pass; non-PIE, partial RELRO, lazy binding, no stack protector, an unresolved library,
a link out of the tree and a file two packages claim each fail, naming the file, its package and the rule."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from clipbuild.core.errors import ImageError
from clipbuild.core.run import run
from clipbuild.formats import elf
from clipbuild.image import contents, elfcheck

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host's gcc")

HARDENED = ["-O2", "-fPIE", "-pie", "-fstack-protector-strong", "-Wl,-z,relro", "-Wl,-z,now"]
BUFFER = """#include <stdio.h>
#include <string.h>
static void echo(const char *s) { char b[64]; strcpy(b, s); puts(b); }
int main(int argc, char **argv) { echo(argc > 1 ? argv[1] : "x"); return 0; }
"""
STUB = "int stub(int x) { return x + 1; }\n"
LIBFOO = "int foo(int x) { return x * 2; }\n"
USES_FOO = "int foo(int); int main(int argc, char **argv) { (void)argv; return foo(argc); }\n"


def compile_c(out: Path, source: str, *flags: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f"{out.name}.c"
    src.write_text(source)
    run(["gcc", "-o", out, src, *flags])  # libraries after the source
    src.unlink()
    return out


@pytest.fixture
def build(tmp_path) -> Path:
    folder = tmp_path / "build"
    folder.mkdir()
    return folder


@pytest.fixture
def tree(tmp_path) -> Path:
    """A slot tree with hardened stubs of the C library and its loader (what the test programs need)."""
    root = tmp_path / "tree"
    lib = ["-shared", "-fPIC", "-nostdlib", "-Wl,-z,relro", "-Wl,-z,now"]
    compile_c(root / "lib" / "libc.so.6", STUB, *lib, "-Wl,-soname,libc.so.6")
    compile_c(root / "lib64" / "ld-linux-x86-64.so.2", STUB, *lib)
    owns(root, "libc6", "/lib/libc.so.6", "/lib64/ld-linux-x86-64.so.2")
    return root


def owns(root: Path, package: str, *paths: str) -> None:
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    with (info / f"{package}.list").open("a") as listing:
        listing.write("".join(f"{p}\n" for p in ("/.", *paths)))


def install(root: Path, built: Path, rel: str, package: str = "app") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, root / rel)
    owns(root, package, f"/{rel}")


def failures(root: Path) -> list[str]:
    return [f.line() for f in elfcheck.check_tree(root, "test").failures]


def test_a_hardened_pie_passes(tree, build):
    install(tree, compile_c(build / "good", BUFFER, *HARDENED), "usr/bin/good")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    kinds = {c.path: c.kind for c in report.files}
    assert kinds == {"usr/bin/good": "pie-executable", "lib/libc.so.6": "shared-library",
                     "lib64/ld-linux-x86-64.so.2": "shared-library"}
    assert report.by_package()["app"] == {"elf_files": 1, "failures": []}


def test_a_non_pie_binary_fails_with_its_name(tree, build):
    install(tree, compile_c(build / "nopie", BUFFER, "-O2", "-fno-pie", "-no-pie", "-fstack-protector-strong",
                            "-Wl,-z,relro", "-Wl,-z,now"), "usr/bin/nopie", "planted")
    found = failures(tree)
    assert len(found) == 1
    assert found[0].startswith("/usr/bin/nopie (planted): PIE: an ET_EXEC executable")
    with pytest.raises(ImageError) as caught:
        elfcheck.check_tree(tree, "clip").raise_failures()
    assert "/usr/bin/nopie (planted): PIE" in "\n".join(caught.value.lines())


@pytest.mark.parametrize(("flags", "message"), [
    (["-Wl,-z,norelro"], "full RELRO: no PT_GNU_RELRO segment"),
    (["-Wl,-z,lazy"], "full RELRO: lazy binding"),
])
def test_partial_relro_or_lazy_binding_fails(tree, build, flags, message):
    built = compile_c(build / "weak", BUFFER, *[f for f in HARDENED if f not in ("-Wl,-z,now",)], *flags)
    install(tree, built, "usr/bin/weak")
    found = failures(tree)
    assert any(line.startswith(f"/usr/bin/weak (app): {message}") for line in found), found


def test_no_stack_protector_with_a_buffer_function_fails(tree, build):
    flags = [f for f in HARDENED if f != "-fstack-protector-strong"] + ["-fno-stack-protector"]
    install(tree, compile_c(build / "nossp", BUFFER, *flags), "usr/bin/nossp")
    assert failures(tree) == ["/usr/bin/nossp (app): stack protector: no __stack_chk_fail and no canary read, "
                              "with 1 stack frame(s) of 64 bytes or more (compile with -fstack-protector-strong)"]


def test_a_tiny_program_without_a_function_to_protect_passes_with_a_note(tree, build):
    flags = [f for f in HARDENED if f != "-fstack-protector-strong"] + ["-fno-stack-protector"]
    install(tree, compile_c(build / "true", "int main(void) { return 0; }\n", *flags), "bin/true")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    notes = next(c.notes for c in report.files if c.path == "bin/true")
    assert notes[0].startswith("no stack protector needed")


def test_an_unresolved_library_fails_naming_it(tree, build):
    compile_c(build / "libfoo.so.1", LIBFOO, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-Wl,-z,relro",
              "-Wl,-z,now")
    (build / "libfoo.so").symlink_to("libfoo.so.1")
    install(tree, compile_c(build / "usesfoo", USES_FOO, *HARDENED, f"-L{build}", "-lfoo"), "usr/bin/usesfoo",
            "planted-unresolved")
    assert failures(tree) == ["/usr/bin/usesfoo (planted-unresolved): DT_NEEDED: libfoo.so.1 is in none of /lib, "
                              "/usr/lib, /lib64, /usr/lib64"]
    # packaged in the slot (through an in-tree link), the same program and the library pass
    install(tree, build / "libfoo.so.1", "usr/lib/libfoo.so.1.0", "libfoo")
    (tree / "usr/lib/libfoo.so.1").symlink_to("libfoo.so.1.0")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    assert {c.path: c.kind for c in report.files}["usr/lib/libfoo.so.1.0"] == "shared-library"


def test_a_library_reached_through_a_link_out_of_the_tree_is_refused(tree, build, tmp_path):
    outside = compile_c(tmp_path / "host" / "libfoo.so.1", LIBFOO, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1",
                        "-Wl,-z,relro", "-Wl,-z,now")
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/libfoo.so.1").symlink_to(outside)
    (build / "libfoo.so").symlink_to(outside)
    install(tree, compile_c(build / "usesfoo", USES_FOO, *HARDENED, f"-L{build}", "-lfoo"), "usr/bin/usesfoo")
    found = failures(tree)
    assert len(found) == 1
    assert "DT_NEEDED: libfoo.so.1 is in none of" in found[0]
    assert "/usr/lib/libfoo.so.1 leads out of the tree through a link" in found[0]


def test_a_core_program_may_not_use_an_apps_library_but_an_app_may(tree, build):
    compile_c(build / "libfoo.so.1", LIBFOO, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-Wl,-z,relro",
              "-Wl,-z,now")
    (build / "libfoo.so").symlink_to("libfoo.so.1")
    program = compile_c(build / "usesfoo", USES_FOO, *HARDENED, f"-L{build}", "-lfoo")
    install(tree, build / "libfoo.so.1", "usr/local/lib/libfoo.so.1", "apps-lib")
    install(tree, program, "usr/local/bin/usesfoo", "an-app")
    assert failures(tree) == []
    install(tree, program, "usr/bin/usesfoo", "core-tool")
    assert failures(tree) == ["/usr/bin/usesfoo (core-tool): DT_NEEDED: libfoo.so.1 is in none of /lib, /usr/lib, "
                              "/lib64, /usr/lib64"]


def test_runpath_origin_resolves_and_a_relative_one_is_refused(tree, build):
    compile_c(build / "libfoo.so.1", LIBFOO, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-Wl,-z,relro",
              "-Wl,-z,now")
    (build / "libfoo.so").symlink_to("libfoo.so.1")
    install(tree, build / "libfoo.so.1", "opt/tool/lib/libfoo.so.1", "tool")
    origin = compile_c(build / "origin", USES_FOO, *HARDENED, f"-L{build}", "-lfoo",
                       "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib")
    install(tree, origin, "opt/tool/bin/tool", "tool")
    assert failures(tree) == []
    relative = compile_c(build / "relative", USES_FOO, *HARDENED, f"-L{build}", "-lfoo",
                         "-Wl,--enable-new-dtags,-rpath,lib")
    install(tree, relative, "opt/tool/bin/other", "tool")
    found = failures(tree)
    assert found[0] == "/opt/tool/bin/other (tool): DT_RUNPATH: 'lib' is neither absolute nor $ORIGIN-relative"


def test_a_missing_interpreter_fails(tree, build):
    (tree / "lib64/ld-linux-x86-64.so.2").unlink()
    install(tree, compile_c(build / "good", BUFFER, *HARDENED), "usr/bin/good")
    assert failures(tree) == ["/usr/bin/good (app): PT_INTERP: the interpreter /lib64/ld-linux-x86-64.so.2 is not in "
                              "the slot: missing"]


def test_a_static_pie_passes(tree, build):
    built = compile_c(build / "static", BUFFER, "-O2", "-fPIE", "-static-pie", "-fstack-protector-strong",
                      "-Wl,-z,relro", "-Wl,-z,now")
    run(["strip", built])
    install(tree, built, "bin/static")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    checked = next(c for c in report.files if c.path == "bin/static")
    assert checked.kind == "static-pie"
    assert checked.notes[0].startswith("static: ")


def test_two_packages_listing_one_file_fail_naming_both(tree, build):
    install(tree, compile_c(build / "good", BUFFER, *HARDENED), "usr/bin/good", "first")
    owns(tree, "second", "/usr/bin", "/usr/bin/good")
    owns(tree, "first", "/usr/bin")
    found = failures(tree)
    assert found == ["/usr/bin/good (first, second): one owner: listed by 2 packages: first, second"]


def test_relocatable_objects_are_skipped_with_a_note(tree, build):
    install(tree, compile_c(build / "module.ko", STUB, "-c"), "lib/modules/6.1/extra/module.ko", "clip-kernel")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    assert next(c for c in report.files if c.path.endswith("module.ko")).kind == "relocatable"


@pytest.mark.parametrize("cut", [3, 20, 64, 200, 1000, -100])
def test_a_truncated_elf_is_reported_as_malformed(tree, build, cut):
    data = compile_c(build / "good", BUFFER, *HARDENED).read_bytes()
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/cut").write_bytes(data[:cut])
    found = failures(tree)
    if 0 <= cut < 4:
        assert found == []  # not even the magic: not an ELF file
    else:
        assert len(found) == 1 and found[0].startswith("/usr/bin/cut (no package): ELF: malformed: "), found


def test_other_elf_classes_are_refused_with_the_reason(tree):
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/elf32").write_bytes(b"\x7fELF\x01\x01\x01" + bytes(60))
    assert failures(tree) == ["/usr/bin/elf32 (no package): ELF: ELF class 1 (only ELF64 is checked): clipbuild "
                              "checks only ELF64 x86-64 files"]


def test_the_reader_on_a_hardened_pie(build):
    found = elf.parse(compile_c(build / "good", BUFFER, *HARDENED).read_bytes())
    assert found.type == elf.ET_DYN and found.interp == "/lib64/ld-linux-x86-64.so.2"
    assert found.needed == ("libc.so.6",) and found.relro and found.bind_now and found.pie_flag
    assert "__stack_chk_fail" in found.stack_symbols and found.canary_reads >= 1


def test_a_folder_linked_out_of_the_tree_is_never_walked(tree, build, tmp_path):
    host = tmp_path / "host-bin"
    compile_c(host / "nopie", BUFFER, "-fno-pie", "-no-pie")  # would fail every rule if it were read
    (tree / "usr").mkdir()
    (tree / "usr/bin").symlink_to(host)
    (tree / "bin").symlink_to("/usr/bin")
    report = elfcheck.check_tree(tree, "test")
    assert report.failures == []
    assert all(not c.path.startswith(("usr/bin", "bin")) for c in report.files)


def test_an_interpreter_reached_through_a_link_out_is_refused(tree, build, tmp_path):
    (tree / "lib64/ld-linux-x86-64.so.2").unlink()
    (tree / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib64/ld-linux-x86-64.so.2")  # the builder's own
    install(tree, compile_c(build / "good", BUFFER, *HARDENED), "usr/bin/good")
    assert failures(tree) == ["/usr/bin/good (app): PT_INTERP: the interpreter /lib64/ld-linux-x86-64.so.2 is not in "
                              "the slot: leads out of the tree through a link"]


def test_inspect_s_summary_of_a_tree_lists_every_package_with_its_size_and_results(tree, build):
    install(tree, compile_c(build / "nopie", BUFFER, "-fno-pie", "-no-pie", "-fstack-protector-strong",
                            "-Wl,-z,relro,-z,now"), "usr/bin/nopie", "planted")
    (tree / "var/lib/dpkg/status").write_text(
        "Package: libc6\nStatus: install ok installed\nVersion: 2.36\nInstalled-Size: 12\n\n"
        "Package: planted\nStatus: install ok installed\nVersion: 1.0\nInstalled-Size: 20\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 0.1\n")
    summary = contents.tree_summary(tree, "slot a")
    assert summary["ok"] is False and summary["elf_files"] == 3
    packages = {p["package"]: p for p in summary["packages"]}
    assert set(packages) == {"libc6", "planted"}
    assert packages["libc6"] == {"package": "libc6", "version": "2.36", "installed_size": 12 * 1024,
                                 "elf_files": 2, "failures": []}
    assert packages["planted"]["installed_size"] == 20 * 1024
    assert [f["rule"] for f in packages["planted"]["failures"]] == ["PIE"]
    assert summary["failures"][0]["path"] == "/usr/bin/nopie"


def test_deep_folders_are_walked_without_recursion(tmp_path):
    """300 levels walked under a recursion limit of 150 (a deeper tree would break pytest's own cleanup,
    shutil.rmtree being recursive)."""
    root = tmp_path / "deep"
    (root / ("d/" * 300)).mkdir(parents=True)
    (root / ("d/" * 300) / "file").write_bytes(b"")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)
    try:
        found = list(elfcheck.regular_files(root))
    finally:
        sys.setrecursionlimit(limit)
    assert found == ["d/" * 300 + "file"]
