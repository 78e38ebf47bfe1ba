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
    # baseline, ours, ours fp8, attention's best, eager, 3 × cache, 3 × fp8 (+ cache)
    assert modes == ["full"] * 11 + ["balanced", "low"]
    assert saved["video"][-1]["variant"] == "ours, memory low, fp8 matmuls"
    fp8 = [r for r in saved["dit"] if "fp8" in r["variant"]]
    assert len(fp8) == 1 and "relative L2" in fp8[0]["note"]
    assert "vs_eager" in next(v for v in saved["video"] if v["variant"].startswith("ours, compiled, no step cache"))
    assert any(r["variant"] == "ours, attention native" for r in saved["dit"])
    assert saved["floor"][-2]["part"].startswith("floor of one CFG step") and saved["floor"][-2]["ms"] > 0
    cache = [v for v in saved["video"] if "psnr_db" in v]
    assert [v["variant"] for v in cache][1:] == ["ours, compiled, first-block cache 0.05",
                                                 "ours, compiled, first-block cache 0.1", "ours, compiled, fp8 matmuls",
                                                 "ours, compiled, fp8 matmuls, first-block cache 0.05",
                                                 "ours, compiled, fp8 matmuls, first-block cache 0.1"]
    assert 20 < cache[4]["psnr_db"] < 60  # fp8 against the bf16 reference: close, not equal
    assert cache[0]["full_steps"] == 2 and all(1 <= v["full_steps"] <= 2 for v in cache)
    assert any("fp8 row-wise" in r["part"] for r in saved["floor"])
    assert all(v["total_s"] > 0 for v in result["video"])
    assert "vs baseline" in capsys.readouterr().out
