"""Each class of bad profile gives a message a user can act on, at the right file, line and key."""

from __future__ import annotations

import pytest

from clipbuild.core.errors import Issue, ProfileError
from clipbuild.spec.profile import resolve


def problems(scratch, species: str = "s") -> list[Issue]:
    with pytest.raises(ProfileError) as exc:
        resolve(scratch.project, species)
    return exc.value.issues


def one(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def test_unknown_key_suggests_the_right_one(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitons: []
        """)
    issue = one(problems(scratch_with_base))
    assert str(issue) == "profiles/s.yaml:3: disk.partitons: unknown key (did you mean 'partitions'?)"


def test_unknown_top_level_key_inside_a_partition(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitions:
            - {name: data, size: 16MiB, fs: ext4, mount: /data, mnt_options: [noexec]}
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "disk.partitions[data].mnt_options"
    assert issue.loc.line == 4 and issue.message == "unknown key"


def test_wrong_type_names_what_was_expected(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        jails: !replace update
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "jails" and issue.loc.line == 2
    assert issue.message == "expected a list of names, got the string 'update'"


def test_number_where_a_string_is_expected_says_to_quote_it(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        version: 4.5
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "version" and issue.loc.line == 2
    assert issue.message == "expected a version, got a number (4.5)"
    assert issue.hint == 'quote it: "4.5"'


@pytest.mark.parametrize(("size", "message"), [
    ("lots", "'lots' is not a size"),
    ("12XB", "'12XB' has an unknown unit 'XB'"),
    ("-5MiB", "'-5MiB' is negative"),
    ("1GB", "'1GB' has an unknown unit 'GB'"),
    ("0", "a size of zero"),
])
def test_bad_sizes(scratch_with_base, size, message):
    scratch_with_base.write("s", f"""
        inherits: base
        disk:
          partitions:
            - name: log
              size: {size}
        """)
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key, issue.message) == (5, "disk.partitions[log].size", message)


def test_duplicate_partition_names(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitions:
            - {name: data, size: 16MiB, fs: ext4, mount: /data}
            - {name: data, size: 16MiB, fs: ext4, mount: /data2}
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "disk.partitions[data]"
    assert issue.message == "2 partitions are named 'data'"
    assert issue.hint == "partition names must be unique"


def test_slots_on_a_shared_partition(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitions:
            - {name: log, slots: [a, b]}
        """)
    issue = one(problems(scratch_with_base))
    assert issue.loc.file == "profiles/s.yaml" and issue.loc.line == 4
    assert issue.key == "disk.partitions[log].slots"
    assert issue.message.startswith("partition 'log' (/var/log) cannot have slots")
    assert issue.hint == "remove slots"


def test_slots_must_be_a_and_b(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitions:
            - {name: root, slots: !replace [a]}
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "disk.partitions[root].slots"
    assert "an A/B partition has exactly [a, b]" in issue.message


def test_partitions_larger_than_the_disk(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          size: 512MiB
        """)
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key) == (3, "disk.size")
    assert issue.message.startswith("the partitions need 1")
    assert "more than the disk's 512MiB" in issue.message
    assert issue.hint.startswith("make disk.size at least ")


def test_jail_without_template(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        jails: [rm_x]
        """)
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key) == (2, "jails[6]")
    assert issue.message == "jail 'rm_x' has no template (jails/rm_x.yaml does not exist)"
    assert "rm_h" in issue.hint


def test_missing_parent(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: bsae
        """)
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key) == (1, "inherits")
    assert issue.message == "no parent profile 'bsae' (profiles/bsae.yaml does not exist)"
    assert issue.hint == "did you mean 'base'?"


def test_inheritance_cycle(scratch):
    scratch.write("a", "inherits: b\n")
    scratch.write("b", "inherits: c\n")
    scratch.write("c", "inherits: a\n")
    issue = one(problems(scratch, "a"))
    assert issue.loc.file == "profiles/c.yaml" and issue.key == "inherits"
    assert issue.message == "inheritance cycle: a -> b -> c -> a"


def test_self_inheritance_is_a_cycle(scratch):
    scratch.write("a", "inherits: a\n")
    assert one(problems(scratch, "a")).message == "inheritance cycle: a -> a"


def test_remove_of_something_not_inherited(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        jails: [!remove rm_h]
        """)
    issue = one(problems(scratch_with_base))
    assert issue.loc.line == 2 and issue.message == "removes nothing"
    assert "'rm_h' is not inherited" in issue.hint


def test_yaml_syntax_error_names_the_line(scratch):
    scratch.write("s", "description: fine\ndisk: [unclosed\nversion: 1.0\n")
    issue = one(problems(scratch))
    assert issue.loc.file == "profiles/s.yaml" and issue.loc.line >= 2
    assert issue.message.startswith("YAML syntax error")


def test_duplicate_key(scratch_with_base):
    scratch_with_base.write("s", "inherits: base\ndescription: one\ndescription: two\n")
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key, issue.message) == (3, "description", "duplicate key")
    assert issue.hint == "first written on line 2"


def test_species_must_match_file_name(scratch_with_base):
    scratch_with_base.write("s", "species: other\ninherits: base\n")
    issue = one(problems(scratch_with_base))
    assert (issue.loc.line, issue.key) == (1, "species")
    assert "does not match the file name s.yaml" in issue.message


def test_concrete_species_needs_the_essentials(scratch):
    scratch.write("s", "description: nothing else\n")
    keys = {i.key for i in problems(scratch)}
    assert keys == {"version", "disk.size", "disk.partitions", "packages.clip.core"}


def test_verity_needs_a_read_only_filesystem(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        disk:
          partitions:
            - {name: root, fs: ext4, options: !replace [noatime]}
        """)
    issue = one(problems(scratch_with_base))
    assert issue.key == "disk.partitions[root].verity"
    assert "dm-verity needs a read-only filesystem" in issue.message


def test_bad_atom_and_choice(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        packages:
          clip:
            apps: [busybox]
        disk:
          partitions:
            - {name: log, fs: ext5}
        """)
    atom, fs = problems(scratch_with_base)
    assert (atom.loc.line, atom.key) == (4, "packages.clip.apps.atoms[1]")
    assert atom.message == "'busybox' is not a Portage package atom"
    assert (fs.loc.line, fs.key, fs.hint) == (7, "disk.partitions[log].fs", "did you mean 'ext4'?")


def test_every_error_is_reported_at_once(scratch_with_base):
    scratch_with_base.write("s", """
        inherits: base
        descripton: typo
        jails: [nope]
        disk:
          size: 10MiB
          partitions:
            - {name: log, size: big}
        """)
    issues = problems(scratch_with_base)
    assert [(i.loc.line, i.key) for i in issues] == [
        (2, "descripton"), (3, "jails[6]"), (5, "disk.size"), (7, "disk.partitions[log].size")]


def test_validate_command_exits_2_and_prints_every_problem(scratch_with_base, clipbuild):
    scratch_with_base.write("s", """
        inherits: base
        descripton: typo
        jails: [nope]
        """)
    result = clipbuild("profile", "validate", "profiles/s.yaml")
    assert result.code == 2
    assert result.err.splitlines() == [
        "error: profiles/s.yaml:2: descripton: unknown key (did you mean 'description'?)",
        "error: profiles/s.yaml:3: jails[6]: jail 'nope' has no template (jails/nope.yaml does not exist) "
        "(jails available: admin, audit, ike, rm_b, rm_h, update, user, x11)",
    ]
