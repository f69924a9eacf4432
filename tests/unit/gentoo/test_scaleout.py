"""distcc hosts and the ccache remote as written by users, MAKEOPTS and DISTCC_HOSTS, distcc's logs read back,
and the relay that is the build sandbox's only way out (real sockets on 127.0.0.1, bounded)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from clipbuild.core.errors import InputError
from clipbuild.gentoo import distcc, offload
from clipbuild.gentoo.guest import relay
from clipbuild.gentoo.scaleout import (
    CcacheRemote,
    DistccHost,
    ScaleOut,
    distcc_hosts,
    from_env,
    from_options,
    makeopts,
    parse_ccache_remote,
    parse_host,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.5", DistccHost("10.0.0.5", 3632, 2)),
    ("builder-2.lan:3700", DistccHost("builder-2.lan", 3700, 2)),
    ("builder/8", DistccHost("builder", 3632, 8)),
    ("127.0.0.1:36401/4", DistccHost("127.0.0.1", 36401, 4)),
    ("[fd00::5]:3632/16", DistccHost("[fd00::5]", 3632, 16)),
])
def test_hosts_parse_with_port_and_jobs_defaults(text, expected):
    assert parse_host(text) == expected
    assert parse_host(str(expected)) == expected  # str() is what the report and the environment carry


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "host/0", "host/x", "a b", "-host",
                                  "host:3632/4,lzo", "ssh@host"])
def test_bad_hosts_are_refused_with_the_expected_form(text):
    with pytest.raises(InputError, match=r"HOST|port|job slot"):
        parse_host(text)


def test_ipv6_hosts_are_dialled_without_brackets():
    assert parse_host("[fd00::5]/4").address == "fd00::5"


def test_makeopts_follow_the_total_job_count_and_the_local_load():
    hosts = [DistccHost("a", jobs=8), DistccHost("b", jobs=4)]
    assert makeopts(hosts, 2) == "-j14 -l2"
    assert makeopts([], 2) == "-j2 -l2"


def test_distcc_hosts_name_the_relay_ports_and_never_pump_mode():
    hosts = [DistccHost("a", jobs=8), DistccHost("b", jobs=4)]
    value = distcc_hosts(hosts, [36320, 36321], 2)
    assert value == "--randomize 127.0.0.1:36320/8 127.0.0.1:36321/4 localhost/2"
    assert ",cpp" not in value and "a" not in value.split()
    with pytest.raises(ValueError):
        distcc_hosts(hosts, [36320], 2)


@pytest.mark.parametrize(("text", "expected", "inside"), [
    ("http://cache.lan:8080/ccache", CcacheRemote("cache.lan", 8080, "/ccache"), "http://127.0.0.1:38080/ccache"),
    ("http://cache.lan/|read-only", CcacheRemote("cache.lan", 80, "/", True), "http://127.0.0.1:38080/|read-only"),
])
def test_the_ccache_remote_is_plain_http_read_write_or_read_only(text, expected, inside):
    remote = parse_ccache_remote(text)
    assert remote == expected
    assert remote.inside(38080) == inside
    assert parse_ccache_remote(str(remote)) == remote


@pytest.mark.parametrize("text", ["https://cache/", "redis://cache:6379", "http://cache/|shards=a,b",
                                  "http:///x", "cache:8080"])
def test_other_ccache_remotes_are_refused(text):
    with pytest.raises(InputError, match="ccache remote"):
        parse_ccache_remote(text)


def test_options_win_over_the_environment_and_round_trip_through_it():
    env = {"CLIPBUILD_DISTCC": "a/4 b:3700", "CLIPBUILD_CCACHE_REMOTE": "http://c:1/|read-only"}
    assert from_env(env) == ScaleOut((DistccHost("a", jobs=4), DistccHost("b", 3700)), CcacheRemote("c", 1, "/", True))
    chosen = from_options(["x/3"], None, env)
    assert chosen.distcc == (DistccHost("x", jobs=3),) and chosen.ccache_remote == CcacheRemote("c", 1, "/", True)
    assert from_env(chosen.to_env()) == chosen
    assert not from_env({}).active


CLIENT_LOG = """\
distcc[13] (dcc_scan_args) scanning arguments: gcc -c a.c
distcc[13] compile a.c on 127.0.0.1:36320/2 completed ok
distcc[14] compile b.c on 127.0.0.1:36320/2 completed ok
distcc[15] ERROR: nonblocking connect to 127.0.0.1:36321 failed: Connection refused
distcc[15] Warning: failed to distribute c.c to 127.0.0.1:36321/2, running locally instead
distcc[15] compile c.c on localhost completed ok
distcc[16] (dcc_scan_args) -specs=/x/musl.specs must be local
distcc[287] (dcc_writex) ERROR: failed to write: Broken pipe
distcc[287] (dcc_mark_timefile) mark /var/tmp/distcc/lock/backoff_tcp_127.0.0.1_36321_0
distcc[287] compile src/complex/ccos.c on localhost completed ok
"""


def test_the_client_log_counts_compiles_per_host_and_fallbacks(tmp_path):
    log = tmp_path / "distcc.log"
    log.write_text(CLIENT_LOG)
    counts = distcc.read_client_log(log)
    assert counts.compiled == {"127.0.0.1:36320/2": 2, "localhost": 2}
    assert counts.fell_back == {"127.0.0.1:36321": 2}
    assert counts.kept_local == 1
    assert distcc.read_client_log(tmp_path / "none").compiled == {}


def test_the_helper_log_counts_job_summaries(tmp_path):
    log = tmp_path / "distccd.log"
    log.write_text("distccd[3] (dcc_job_summary) client: 127.0.0.1:5 COMPILE_OK exit:0 sig:0 core:0 ret:0 time:18ms "
                   "x86_64-linux-gnu-gcc t.c\ndistccd[4] (dcc_job_summary) client: 127.0.0.1:6 COMPILE_ERROR exit:1 "
                   "sig:0 core:0 ret:0 time:3ms gcc u.c\n")
    assert distcc.read_server_log(log) == {"COMPILE_OK": 1, "COMPILE_ERROR": 1}


def test_a_failed_host_is_reported_with_its_reason():
    counts = {"distcc": {"hosts": {"h:3632/2": {"compiles": 3, "fell_back": 2, "unreachable": 5,
                                                "first_error": "Connection refused"},
                                   "g:3632/2": {"compiles": 9, "fell_back": 0, "unreachable": 0, "first_error": ""}}}}
    assert offload.problems(counts) == ["distcc host h:3632/2 failed (Connection refused): 5 connections refused or "
                                        "lost, 2 compiles it failed ran elsewhere (here at the latest)"]


def test_ccache_counters_are_this_run_s_growth():
    stats = "cache_miss\t7\nlocal_storage_hit\t2\nremote_storage_hit\t10\nstats_updated_timestamp\t1700000000\n"
    after = offload.ccache_counters(lambda argv: stats)
    assert offload.ccache_delta({"cache_miss": 5, "remote_storage_hit": 4}, after) == {
        "local_hits": 2, "remote_hits": 6, "misses": 2, "remote_errors": 0}


@pytest.fixture
def echo_server():
    """A TCP server on 127.0.0.1 that answers each line in upper case, on a port the kernel chose."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_the_relay_carries_streams_both_ways_through_a_unix_socket(tmp_path, echo_server):
    with offload.HostRelay(tmp_path, {"echo": ("127.0.0.1", echo_server), "dead": ("127.0.0.1", _free_port())}) as host:
        inside_port = _free_port()
        ready = threading.Thread(target=relay.main, args=([f"{inside_port}={host.socket_path('echo')}"],), daemon=True)
        ready.start()
        for _ in range(50):
            try:
                conn = socket.create_connection(("127.0.0.1", inside_port), timeout=5)
                break
            except ConnectionRefusedError:
                threading.Event().wait(0.1)
        with conn:
            conn.sendall(b"hello distcc\n")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(100) == b"HELLO DISTCC\n"
        dead = socket.socket(socket.AF_UNIX)
        dead.connect(str(host.socket_path("dead")))
        assert dead.recv(10) == b""  # an unreachable target closes the stream at once: distcc falls back
        dead.close()
        for _ in range(50):
            if host.stats["dead"].failures and host.stats["echo"].received:
                break
            threading.Event().wait(0.1)
    assert host.stats["echo"].connections == 1 and host.stats["echo"].sent == 13
    assert host.stats["dead"].failures == 1 and "refused" in host.stats["dead"].first_error.lower()


@pytest.mark.parametrize("text", ["3632", "=x", "0=/s", "70000=/s", "x=/s"])
def test_the_sandbox_relay_takes_port_equals_socket(text):
    with pytest.raises(ValueError):
        relay.parse_forward(text)


def test_the_wrapper_waits_for_the_sandbox_relay_then_runs_the_command():
    argv = offload.wrapper({36320: "/build/relay/distcc-0.sock"})
    assert argv[:2] == ("/bin/sh", "-c") and argv[-1] == "sh"
    assert f"python3 {offload.RELAY_SCRIPT} 36320=/build/relay/distcc-0.sock" in argv[2]
    assert 'exec "$@"' in argv[2]


def test_tools_are_pinned_by_digest():
    assert {d.package for d in distcc.DEBS} >= {"distcc", "libpopt0"}
    assert all(len(d.sha256) == 64 for d in distcc.DEBS)
    assert Path(distcc.SCRIPT).is_file()


SPECS = """%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem /build/roots/set/usr/include -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem /build/roots/set/usr/include -isystem include%s

*link:
-dynamic-linker /lib/ld-musl-x86_64.so.1 -nostdlib
"""


@pytest.fixture
def masquerade(tmp_path):
    """The masquerade script as /usr/lib/distcc/bin/gcc, a fake gcc after it in PATH and a fake distcc: each
    prints what it was called with."""
    bin_dir, fake, tree = tmp_path / "masq" / "bin", tmp_path / "fake", tmp_path / "tree" / "usr" / "bin"
    for folder in (bin_dir, fake, tree):
        folder.mkdir(parents=True)
    (bin_dir / distcc.SCRIPT.name).write_text(distcc.SCRIPT.read_text())
    (bin_dir / distcc.SCRIPT.name).chmod(0o755)
    (bin_dir / "gcc").symlink_to(distcc.SCRIPT.name)
    (fake / "gcc").write_text('#!/bin/sh\n[ "$1" = -print-file-name=include ] && { echo /gcc/include; exit 0; }\n'
                              'echo LOCAL "$@"\n')
    (tree / "distcc").write_text('#!/bin/sh\necho DISTCC "$@"\n')
    for script in (fake / "gcc", tree / "distcc"):
        script.chmod(0o755)
    (tmp_path / "musl.specs").write_text(SPECS)
    (tmp_path / "other.specs").write_text(SPECS.replace("%(cc1_cpu) ", "%(cc1_cpu) -fno-pic "))

    def call(*args: str) -> str:
        from clipbuild.core.run import run
        env = {"PATH": f"{bin_dir}:{fake}:/usr/bin:/bin", "CLIP_DISTCC_TREE": str(tmp_path / "tree")}
        return run([bin_dir / "gcc", *args], env=env, replace_env=True).stdout.strip()

    return call, tmp_path


def test_compile_only_commands_go_to_distcc_with_the_specs_include_path_spelt_out(masquerade):
    call, tmp = masquerade
    assert call(f"-specs={tmp}/musl.specs", "-O2", "-c", "a.c", "-o", "a.o") == (
        "DISTCC gcc -nostdinc -isystem /build/roots/set/usr/include -isystem /gcc/include -O2 -c a.c -o a.o")
    assert call("-O2", "-c", "b.c") == "DISTCC gcc -O2 -c b.c"


def test_links_and_unknown_specs_run_the_real_compiler_here_unchanged(masquerade):
    call, tmp = masquerade
    assert call(f"-specs={tmp}/musl.specs", "a.o", "-o", "prog") == f"LOCAL -specs={tmp}/musl.specs a.o -o prog"
    assert call(f"-specs={tmp}/other.specs", "-c", "a.c") == f"LOCAL -specs={tmp}/other.specs -c a.c"


def test_the_summary_says_where_compiles_went():
    counts = {"distcc": {"hosts": {"h:3632/2": {"compiles": 30}, "g:3632/2": {"compiles": 9}}, "local": 4},
              "ccache": {"local_hits": 1, "remote_hits": 5, "misses": 2, "remote_errors": 0}}
    assert offload.summary(counts) == ["distcc: 30 on h:3632/2, 9 on g:3632/2, 4 here",
                                       "ccache: 1 local hits, 5 remote hits, 2 misses"]
    assert offload.summary({"ccache": {"local_hits": 0, "remote_hits": 0, "misses": 0}}) == []
