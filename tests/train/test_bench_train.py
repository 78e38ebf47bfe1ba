"""bench/bench_train.py runs end to end with tiny models on the CPU and prints its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_train.py"


def test_bench_train_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ex4d_bench_train", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--skip-no-checkpointing", "--json", str(out)]) == 0
    assert "step/fwd" in capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][0]
    assert row["gradient_checkpointing"] and row["step_s"] > 0 and row["forward_s"] > 0
