"""bench/bench_long.py runs end to end at tiny sizes on the CPU (both sections) and reports what it measured."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("diffusers")


def test_bench_long_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_long", Path(__file__).parents[1] / "bench" / "bench_long.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--tiny", "--frames", "20", "--gen-frames", "13", "--modes", "low", "--steps", "1",
                      "--json", str(tmp_path / "b.json"), "--tmp", str(tmp_path)])
    out = capsys.readouterr().out
    assert "peak RSS" in out and "windowed generation" in out
    recon = res["recon"]
    assert recon["long"]["frames"] == 20 and recon["baseline"]["frames"] == 20
    assert recon["long"]["peak_rss_mib"] > 50
    row = res["generate"]["modes"][0]
    assert row["memory"] == "low" and row["windows"] == 2 and len(row["per_window"]) == 2
    assert all(w["generate_s"] > 0 for w in row["per_window"])
    assert (tmp_path / "b.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ex4d-bench-long")] == []  # cleaned up
