"""A hostile-input corpus for the jail rules (P10 item 4), built by code: each case is a jail file (or a policy)
written to dodge a rule, and each asserts the refusal, its message and its location (file, line, key).

Classes: contradictory option lists (mount applies the last of each pair), other spellings of / and of every
path, jails choosing their own trees, mount sources outside the trees the policy names, mounts shadowing the
read-only root or another mount, and malformed policies.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace

import pytest

from clipbuild.core.errors import InputError, ProfileError
from clipbuild.core.project import Project
from clipbuild.jails import definitions, rules
from clipbuild.jails.definitions import Mount
from tests.conftest import ROOT

NAME = "evil"
BASE = "description: a hostile jail\ncontext: 700\naddr: [127.70.0.1/255.255.255.255]\n"
FIRST = BASE.count("\n") + 1  # the line after BASE
HARDENED = ("ro", "nosuid", "nodev", "noexec")


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # written after BASE
    line: int
    key: str
    message: str
    schema: bool = False  # refused while loading the jail (ProfileError), not by the rules
    file: str = f"jails/{NAME}.yaml"

    @property
    def expected(self) -> str:
        jail = NAME if self.schema else f"jail {NAME}"
        return f"{self.file}:{self.line}: {jail}: {self.key}: {self.message}"


def _mount(src: str, dst: str, options: tuple[str, ...] | list[str], extra: str = "") -> str:
    return f"mounts:\n  - {{src: {src}, dst: {dst}, options: [{', '.join(options)}]{extra}}}\n"


def _contradictions() -> list[Case]:
    pairs = (("ro", "rw"), ("noexec", "exec"), ("nosuid", "suid"), ("nodev", "dev"),
             ("nosymfollow", "symfollow"), ("noatime", "atime"), ("sync", "async"), ("nolock", "lock"))
    cases = []
    for pair in pairs:
        for first, second in (pair, pair[::-1]):
            options = ["bind", *(h for h in HARDENED if h not in pair), first, second]
            cases.append(Case(f"options-{first}-{second}", _mount("/mounts/usr", "/x", options), FIRST + 1,
                              "mounts[10].options", f"[{', '.join(options)}]: {second} contradicts {first}"))
    implied = [
        (["bind", *HARDENED, "defaults"], "rw (from defaults) contradicts ro; suid (from defaults) contradicts "
         "nosuid; dev (from defaults) contradicts nodev; exec (from defaults) contradicts noexec"),
        (["bind", "rw", "user", "exec"], "exec contradicts noexec (from user)"),
        (["bind", "rw", "owner", "suid", "nodev", "noexec"], "suid contradicts nosuid (from owner)"),
    ]
    for options, message in implied:
        cases.append(Case(f"options-{options[-1]}", _mount("/mounts/usr", "/x", options), FIRST + 1,
                          "mounts[10].options", f"[{', '.join(options)}]: {message}"))
    cases.append(Case("options-rbind", _mount("/mounts/usr", "/x", ["rbind", *HARDENED]), FIRST + 1,
                      "mounts[10].options", "rbind also mounts every mount below the source"))
    return cases


def _spellings() -> list[Case]:
    """Other spellings of / (shadowing the read-only root) and of the jail's own paths: refused when loaded."""
    cases = []
    for spelling, normal in (("/.", "/"), ("//", "/"), ("/./", "/"), ("///.//", "/"), ("/usr/local/", "/usr/local"),
                             ("/usr//local", "/usr/local"), ("/usr/./local", "/usr/local")):
        cases.append(Case(f"dst-{spelling}", _mount("/mounts/usr", spelling, ["bind", *HARDENED]), FIRST + 1,
                          "mounts[10].dst", f"'{spelling}' is {normal} written another way: write {normal}",
                          schema=True))
    for key, value in (("root_source", "/mounts/evil_root/"), ("priv", "/mounts/./evil_priv"), ("root", "//evil")):
        normal = "/" + value.replace("/./", "/").strip("/").replace("//", "/")
        cases.append(Case(f"{key}-spelled", f"{key}: {value}\n", FIRST, key,
                          f"'{value}' is {normal} written another way: write {normal}", schema=True))
    for key, value in (("mounts[10].dst", "/tmp/../etc"), ("mounts[10].src", "/mounts/usr/../../etc")):
        src, dst = (value, "/x") if key.endswith("src") else ("/mounts/usr", value)
        cases.append(Case(f"dotdot-{key}", _mount(src, dst, ["bind", *HARDENED]), FIRST + 1, key,
                          "'..' is not allowed in a path", schema=True))
    cases.append(Case("allow_exec-spelled", "allow_exec: {/var/pkg/.: scripts}\n", FIRST, "allow_exec./var/pkg/.",
                      "'/var/pkg/.' is /var/pkg written another way: write /var/pkg", schema=True))
    cases.append(Case("source-none", _mount("none", "/sys", ["ro"], ", type: sysfs"), FIRST + 1, "mounts[10].src",
                      "'none' is not a mount source", schema=True))
    return cases


def _own_trees() -> list[Case]:
    """Jails choosing their own root, root_source or priv."""
    cases = []
    for key, values in (("root_source", ("/", "/etc", "/mounts", "/mounts/admin_root", "/update_root", "/home/user")),
                        ("priv", ("/etc", "/mounts/admin_priv", "/var/log", "/mounts/usr")),
                        ("root", ("/", "/usr", "/admin", "/vservers/rm_h/root"))):
        for value in values:
            message = (f"{value} is the host's {value}" if value in rules.HOST_DIRS else
                       f"{value} is not a tree the policy names for jail {NAME}")
            cases.append(Case(f"{key}-{value}", f"{key}: {value}\n", FIRST, key, message))
    return cases


def _sources() -> list[Case]:
    """Mount sources outside the trees the policy names for this jail (other jails' trees, host trees)."""
    cases = []
    for src in ("/", "/etc", "/etc/shadow", "/mounts", "/mounts/admin_priv", "/mounts/admin_priv/etc.admin",
                "/mounts/admin_root", "/update_root", "/var/log", "/home", "/home/user", "/vservers/rm_h/home",
                "/etc/admin/ike2", "/mounts/evil_root"):
        cases.append(Case(f"source-{src}", _mount(src, "/x", ["bind", *HARDENED]), FIRST + 1, "mounts[10].src",
                          f"source {src} lies outside the trees jail {NAME} may mount"))
    for fstype, options in (("ext4", ["bind", *HARDENED]), ("devtmpfs", ["bind", *HARDENED]), ("none", HARDENED)):
        bind = "" if "bind" in options else " and no bind"
        cases.append(Case(f"source-type-{fstype}-{len(options)}",
                          _mount("/mounts/evil_priv/dev/sda", "/x", options, f", type: {fstype}"), FIRST + 1,
                          "mounts[10]", f"source /mounts/evil_priv/dev/sda is mounted with type {fstype}{bind}: the "
                          "host would mount what it holds"))
    cases.append(Case("internal-source", "internal:\n  - {src: /etc, dst: /x, options: [bind, ro]}\n", FIRST + 1,
                      "internal[0].src", f"source /etc lies outside the trees jail {NAME} may mount"))
    return cases


def _shadowing() -> list[Case]:
    """Mounts that replace the jail's root or shadow another mount."""
    root = "{src: /mounts/evil_root, dst: /, options: [bind, ro, nodev]}"
    var = "{src: /mounts/evil_priv/var, dst: /var, options: [bind, rw, nosuid, nodev, noexec]}"
    return [
        Case("root-from-another-tree", "mounts: !replace\n  - {src: /mounts/admin_root, dst: /, options: [bind, ro]}\n",
             FIRST + 1, "mounts[0].src",
             f"the jail's / is bound from /mounts/admin_root, not from its root_source /mounts/{NAME}_root"),
        Case("root-not-first", f"mounts: !replace\n  - {var}\n  - {root}\n", FIRST, "mounts",
             "mounts[0] does not mount the jail's /"),
        Case("second-root", f"mounts: !replace\n  - {var}\n  - {root}\n", FIRST + 2, "mounts[1].dst",
             "/ is the jail's /: this mount would shadow its read-only root"),
        Case("root-as-a-filesystem", "mounts: !replace\n  - {src: /mounts/evil_root, dst: /, type: ext4, "
             "options: [bind, ro]}\n", FIRST + 1, "mounts[0]", "source /mounts/evil_root is mounted with type ext4"),
        Case("root-from-tmpfs", "mounts: !replace\n  - {src: tmpfs, dst: /, type: tmpfs, options: [ro]}\n",
             FIRST + 1, "mounts[0].src", "the jail's / is bound from tmpfs, not from its root_source"),
        Case("root-internal", "internal:\n  - {src: /x, dst: /, options: [bind, rw]}\n", FIRST + 1, "internal[0].dst",
             "/ is the jail's /: this mount would shadow its read-only root"),
        Case("shadow-var", _mount("/mounts/evil_priv/v2", "/var", ["bind", "rw", "nosuid", "nodev", "noexec"]),
             FIRST + 1, "mounts[10].dst", "/var is already mounted by mounts[8]"),
        Case("shadow-dev", _mount("/mounts/evil_priv/d2", "/dev", ["bind", *HARDENED]), FIRST + 1, "mounts[10].dst",
             "/dev is already mounted by mounts[7]"),
    ]


CASES = _contradictions() + _spellings() + _own_trees() + _sources() + _shadowing()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Project:
    """One copy of jails/ for the whole corpus: each case only rewrites jails/evil.yaml."""
    root = tmp_path_factory.mktemp("hostile") / "proj"
    shutil.copytree(ROOT / "jails", root / "jails")
    return Project(root)


@pytest.fixture
def hostile(shared: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(shared.root)
    return shared


def _refusals(project: Project, names: tuple[str, ...]) -> list[str]:
    try:
        loaded = definitions.load_all(project, names)
    except ProfileError as exc:
        return [str(issue) for issue in exc.issues]
    issues, _ = rules.check(loaded, rules.load_policy(project))
    return [str(issue) for issue in issues]


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_jail_is_refused(hostile, case: Case):
    (hostile.root / "jails" / f"{NAME}.yaml").write_text(BASE + case.text)
    if case.schema:
        with pytest.raises(ProfileError):
            definitions.load(hostile, NAME)
    refusals = _refusals(hostile, (NAME,))
    assert [r for r in refusals if r.startswith(case.expected)], "\n".join([case.expected, "--", *refusals])


def test_a_jail_named_after_another_jails_tree_is_refused(hostile):
    (hostile.root / "jails" / "update_root.yaml").write_text(BASE)
    refusals = _refusals(hostile, ("update", "update_root"))
    assert any(r.startswith("jails/_defaults.yaml:6: jail update_root: root: /update_root overlaps jail update's "
                            "root_source /update_root") for r in refusals), refusals


@pytest.mark.parametrize("spelling", ["/.", "//", "/./", "///.//", "/tmp/.."])
def test_the_rules_normalise_paths_they_are_given_directly(project, spelling):
    """Defence in depth: a Jail built without the schema (another caller) is still checked in normal form."""
    user = definitions.load(project, "user")
    evil = replace(user, mounts=(*user.mounts, Mount("/mounts/usr", spelling, options=("bind", "rw", "nosuid",
                                                                                       "nodev", "noexec"))))
    problems = [str(i) for i in rules.check([evil], rules.load_policy(project))[0]]
    message = ("'/tmp/..' holds '..'" if ".." in spelling else
               f"{spelling} is the jail's /: this mount would shadow its read-only root")
    assert any(f"jail user: mounts[{len(user.mounts)}].dst: {message}" in p for p in problems), problems


POLICIES = [
    ("deny_caps: 3\n", "deny_caps: needs a list of strings"),
    ("source_trees: [/]\n", "source_trees: / is not a tree below / in its normal form"),
    ("source_trees: [/mounts/]\n", "source_trees: /mounts/ is not a tree below / in its normal form"),
    ("source_trees: [/mounts/../etc]\n", "source_trees: '/mounts/../etc' holds '..'"),
    ("source_trees: [mounts]\n", "source_trees: 'mounts' is not an absolute path"),
    ("grants: {update: /mounts}\n", "grants.update: needs a list of strings"),
    ("grants: [/mounts]\n", "grants: needs a mapping"),
    ("jail_trees: {root: [/x]}\n", "jail_trees: needs exactly root, root_source, priv"),
]


@pytest.mark.parametrize(("replacement", "message"), POLICIES, ids=[p[1] for p in POLICIES])
def test_a_malformed_policy_is_refused(scratch, replacement: str, message: str):
    path = scratch.root / "jails" / rules.POLICY
    key = replacement.split(":")[0]
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "")), len(lines))
    path.write_text("".join(lines[:start]) + replacement + "".join(lines[end:]))
    with pytest.raises(InputError) as exc:
        rules.load_policy(scratch.project)
    assert str(exc.value) == f"jails/{rules.POLICY}: {message}"


@pytest.mark.parametrize(("content", "message"), [(b"deny_caps: [\xff]\n", r".*utf-8"),
                                                 (b"deny_caps: " + b"[" * 3000, "nested too deeply")])
def test_a_policy_that_is_not_yaml_is_refused(scratch, content: bytes, message: str):
    (scratch.root / "jails" / rules.POLICY).write_bytes(content)
    with pytest.raises(InputError, match=f"^jails/_policy.yaml: {message}"):
        rules.load_policy(scratch.project)
