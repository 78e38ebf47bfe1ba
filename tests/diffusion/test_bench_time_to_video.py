"""bench/bench_time_to_video.py --tiny: weights written, the CLI run as a subprocess, timings read from its JSON.

The whole --tiny run (every kind of section: serve, jobs, the diffusers baseline ...) takes minutes; run it by
hand: python bench/bench_time_to_video.py --tiny
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_time_to_video.py"


def test_bench_tiny_sections(tmp_path, capsys):
    bench = runpy.run_path(str(BENCH))
    bench["write_weights"](tmp_path / "weights", tiny=True)  # here, not in a subprocess: one process start less
    result = bench["main"](["--tiny", "--sections", "fp8", "--out", str(tmp_path / "out"),
                            "--weights", str(tmp_path / "weights")])
    saved = json.loads((tmp_path / "out" / "time_to_video.json").read_text())
    assert [r["section"] for r in saved["rows"]] == ["fp8"] == [r["section"] for r in result["rows"]]
    (fp8,) = saved["rows"]
    assert fp8["exit"] == 0 and fp8["flags"] == ["--fp8-matmul"]  # --compile dropped on the CPU
    assert {"load", "encode", "denoise", "decode", "write", "wall", "load_detail"} <= set(fp8["timings_s"])
    assert saved["weights"]["tiny"] and saved["weights"]["reused"]
    table = (tmp_path / "out" / "time_to_video.txt").read_text()
    assert "| fp8 | --fp8-matmul | 2 |" in table
    assert "time to video" in capsys.readouterr().out


def test_clean_env_links_only_the_dependency_closure(tmp_path):
    """bench/clean_env.py: ex4d's requirements resolved through installed metadata, markers evaluated; a
    ``python -S`` with only that folder imports what ex4d needs and not what it does not pull in."""
    import subprocess
    import sys

    clean = runpy.run_path(str(BENCH.parent / "clean_env.py"))
    found, missing = clean["closure"](["tqdm", "numpy", "pytest; python_version < '3.0'", "not-a-package-xyz"])
    assert {"tqdm", "numpy"} <= set(found) and "pytest" not in found and missing == ["not-a-package-xyz"]
    info = clean["build"](tmp_path / "site", extras=())
    assert "numpy" in info["distributions"] and "pytest" not in info["distributions"] and info["links"] > 0
    probe = ("import importlib.util as u, numpy, scipy, tqdm; from importlib.metadata import version; "
             "print(version('numpy'), u.find_spec('pytest') is None)")
    out = subprocess.run([sys.executable, "-S", "-c", probe], env={"PYTHONPATH": str(tmp_path / "site")},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "True"  # pytest is installed here, but not a dependency: not importable
