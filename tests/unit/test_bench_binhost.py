"""bench/binhost.py's report, on numbers shaped as its builds return them (the bench itself compiles a package
set from source: minutes, not a unit test)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def test_the_report_gives_both_times_and_their_ratio(capsys):
    spec = importlib.util.spec_from_file_location("binhost_bench", ROOT / "bench" / "binhost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.report("client build/rm-core", (120.0, {"built": 4}), (10.0, {"fetched": 4}),
                  {"packages": 4, "bytes": 3 << 20})
    out = capsys.readouterr().out
    assert "baseline, from source:    120.0 s  ({'built': 4})" in out
    assert "from the binhost:          10.0 s  ({'fetched': 4})" in out
    assert "takes 8.3% of the time (12.0x faster); 4 binpkgs, 3MiB moved" in out
