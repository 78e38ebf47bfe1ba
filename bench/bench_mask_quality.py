"""How right is the known-mask? Leak and recall of each occlusion filter on exact and on soft depth.

    python bench/bench_mask_quality.py [--size 256] [--frames 5] [--ranges 0-30 0-60 0-90 +-90]
                                       [--filters angle boundary grazing] [--blur 3] [--noise 0.005]

A thin front end of the ground-truth benchmark (:mod:`ex4d.eval.benchmark`, also ``ex4d benchmark
novel-view``) without the fill: synthetic scenes whose true geometry is known, re-shot along camera paths
sweeping each yaw range. Leak = share of pixels marked known that show a wrong surface (or one hidden in the
source); recall = share of truly visible pixels marked known. Every filter uses per-face flags; the first
one is the baseline (the original's default rule, ``angle``), and each other filter's leak is printed as a
ratio to it, measured in the same run.
"""

from __future__ import annotations

import argparse
import math


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--ranges", nargs="+", default=["0-30", "0-60", "0-90", "+-90"],
                    help="yaw ranges: LO-HI, N (= 0-N) or +-N")
    ap.add_argument("--scenes", nargs="+", default=["example", "layout"])
    ap.add_argument("--filters", nargs="+", default=["angle", "boundary", "grazing"],
                    help="first = baseline; FILTER or FILTER:ALPHA, or original / ours")
    ap.add_argument("--blur", nargs="*", type=float, default=[3.0])
    ap.add_argument("--noise", nargs="*", type=float, default=[])
    args = ap.parse_args()

    from ex4d.eval.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(size=args.size, frames=args.frames, ranges=tuple(args.ranges), scenes=tuple(args.scenes),
                             methods=tuple(args.filters), blur=tuple(args.blur), noise=tuple(args.noise), fill="none")
    report = run_benchmark(config, progress=True)
    rows = {(r["depth"], r["range"], r["method"]): r for r in report["summary"]}
    base = args.filters[0]
    print(f"mask quality, {args.size}×{args.size}, {args.frames} frames per clip, scenes {', '.join(args.scenes)} "
          f"({report['timings']['total_s']:.0f} s); leak ratio = leak / {base}'s leak (lower is better)")
    head = f"{'depth':>11s} {'range':>7s} " + " ".join(f"{f + ' leak%':>16s} {'recall%':>8s}" +
                                                      ("" if f == base else f" {'ratio':>6s}") for f in args.filters)
    print(head)
    for depth in dict.fromkeys(k[0] for k in rows):
        for rng in dict.fromkeys(k[1] for k in rows):
            cells = []
            b = rows[depth, rng, base]["leak"]
            for f in args.filters:
                r = rows[depth, rng, f]
                cell = f"{100 * r['leak']:16.2f} {100 * r['recall']:8.1f}"
                if f != base:
                    cell += f" {r['leak'] / b:6.2f}" if b > 0 and not math.isnan(b) else f" {'—':>6s}"
                cells.append(cell)
            print(f"{depth:>11s} {rng:>7s} " + " ".join(cells))


if __name__ == "__main__":
    main()
