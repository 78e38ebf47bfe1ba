"""bench/bench_generate.py runs on the CPU with tiny models and writes its JSON."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_generate.py"


def test_bench_tiny(tmp_path, capsys):
    main = runpy.run_path(str(BENCH))["main"]
    result = main(["--tiny", "--json", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["dit"][0]["variant"].endswith("(baseline)") and len(saved["dit"]) >= 4
    modes = [v["memory"] for v in saved["video"]]
    assert modes == ["full"] * 7 + ["balanced", "low"]  # baseline, ours, attention's best, eager, 3 × cache
    assert "vs_eager" in next(v for v in saved["video"] if v["variant"].startswith("ours, compiled, no step cache"))
    assert any(r["variant"] == "ours, attention native" for r in saved["dit"])
    assert saved["floor"][-1]["part"].startswith("floor of one CFG step") and saved["floor"][-1]["ms"] > 0
    cache = [v for v in saved["video"] if "psnr_db" in v]
    assert [v["variant"] for v in cache][1:] == ["ours, compiled, first-block cache 0.05",
                                                 "ours, compiled, first-block cache 0.1"]
    assert cache[0]["full_steps"] == 2 and all(1 <= v["full_steps"] <= 2 for v in cache)
    assert all(v["total_s"] > 0 for v in result["video"])
    assert "vs baseline" in capsys.readouterr().out
