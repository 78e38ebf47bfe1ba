"""End-to-end time of `ex4d run --example` (49 frames, 512×512 by default), broken down by stage.

    python bench/bench_run.py [--frames 49] [--size 512] [--trajectory ex4d-90] [--json out.json]

Runs the pipeline twice into a fresh folder: a cold run (every stage computed) and a warm re-run of the
same command (every stage reused), and prints seconds per stage with each stage's share of the cold run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--trajectory", default="ex4d-90")
    ap.add_argument("--fill", default="classical")
    ap.add_argument("--json")
    args = ap.parse_args()

    from ex4d.pipeline import RunConfig, run_pipeline

    cfg = RunConfig(example=True, example_size=args.size, num_frames=args.frames, trajectory=args.trajectory,
                    fill=args.fill)
    out = Path(tempfile.mkdtemp(prefix="ex4d-bench-"))
    try:
        # compile the numba kernels first, so the table shows steady-state time (first use ~15 s, then cached)
        run_pipeline(RunConfig(example=True, example_size=64, num_frames=3, trajectory=args.trajectory),
                     out / "warmup", progress=False)
        t0 = time.perf_counter()
        cold = run_pipeline(cfg, out / "run", progress=False)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = run_pipeline(cfg, out / "run", progress=False)
        warm_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    t = cold.timings
    stages = [("read / example scene", t.get("read_s", 0.0)), ("depth", t.get("depth_s", 0.0)),
              ("DW-Mesh build", t.get("mesh_s", 0.0)), ("rasterize + shade", t.get("raster_s", 0.0)),
              ("recon total (incl. video/camera writes)", t.get("recon_s", 0.0)),
              ("fill (" + args.fill + ") + output/preview writes", t.get("fill_s", 0.0))]
    print(f"ex4d run --example: {args.frames} frames {args.size}×{args.size}, {args.trajectory}, fill {args.fill}")
    print(f"{'stage':44s} {'seconds':>8s} {'share':>7s}")
    for name, sec in stages:
        print(f"{name:44s} {sec:8.2f} {100 * sec / cold_s:6.1f}%")
    print(f"{'whole run, cold (wall clock)':44s} {cold_s:8.2f} {100.0:6.1f}%")
    print(f"{'same command again (all stages reused)':44s} {warm_s:8.2f} {100 * warm_s / cold_s:6.1f}%  "
          f"reused: {', '.join(warm.reused)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cold_s": cold_s, "warm_s": warm_s, "timings": t,
                                               "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
