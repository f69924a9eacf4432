"""bench/species_build.py's arithmetic and report, on rows shaped as `clipbuild build --json` prints them (the
bench itself runs cold builds of every species: half an hour, not a unit test)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("species_build", ROOT / "bench" / "species_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(cpv, status, seconds, key=None):
    return {"cpv": cpv, "key": key or cpv, "status": status, "reason": "", "seconds": seconds}


def test_counts_read_what_was_compiled_and_what_was_shared(capsys):
    bench = _bench()
    sets = [{"step": "build/clip-core", "status": "ran", "packages": [
                _row("dev-libs/openssl-3.0.20", "built", 160.0), _row("sys-libs/musl-1.2.3", "reused", 1.0),
                _row("sys-kernel/clip-kernel-6.1.192", "built", 400.0)]},
            {"step": "build/rm-core", "status": "cached", "packages": [_row("sys-libs/musl-1.2.3", "built", 30.0)]}]
    counts = bench.counts(sets)
    assert counts["packages"] == 4 and counts["distinct"] == 3 and counts["built"] == 2
    assert counts["emerge_seconds"] == 560.0
    assert counts["slowest"][0] == (400.0, "sys-kernel/clip-kernel-6.1.192")
    bench.report(["client"], {"client": (600.0, counts)}, {"client": {"noop": 0.4, "fresh": 20.0}}, {})
    out = capsys.readouterr().out
    assert "client: 10.0 min wall; 4 packages (3 distinct builds), 2 compiled here" in out
    assert "clipbuild's share 0.7 min" in out and "all species: 10.0 min" in out
