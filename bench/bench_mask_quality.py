"""How right is the known-mask? Leak and recall (of the knowable set) of each occlusion criterion, exact and
estimated-like depth, per camera range.

    python bench/bench_mask_quality.py [--size 256] [--frames 5] [--ranges 0-30 0-60 0-90 +-90 +-90@-15]
                                       [--filters angle boundary grazing step] [--scenes ...]
                                       [--variants exact blur3 fatten2+blur2.5+noise1] [--json out.json]

A thin front end of the ground-truth benchmark (:mod:`ex4d.eval.benchmark`, also ``ex4d benchmark
novel-view``) without the fill: synthetic scenes whose true geometry is known, re-shot along camera paths
sweeping each yaw range. Leak = share of pixels marked known that show a wrong surface (or one hidden in the
source); recall of knowable = share of the knowable pixels (truly seen by the source, reached without passing
behind a surface it saw) shown correctly. Every filter uses per-face flags with its own default sharpening
(``step``: snap; the others: none); the first filter is the baseline (the original's rule, ``angle``), and
each other filter's leak is printed as a ratio to it, measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--ranges", nargs="+", default=["0-30", "0-60", "0-90", "+-90", "+-90@-15"],
                    help="yaw ranges: LO-HI, N (= 0-N) or +-N, each optionally @PITCH")
    ap.add_argument("--scenes", nargs="+", default=["example", "layout", "slopes", "spheres", "steps"])
    ap.add_argument("--filters", nargs="+", default=["angle", "boundary", "grazing", "step"],
                    help="first = baseline; FILTER[:ALPHA][/SHARPEN], or original / ours")
    ap.add_argument("--variants", nargs="+", default=["exact", "blur3", "fatten2+blur2.5+noise1"],
                    help="depth variants (ex4d.eval.degrade names)")
    ap.add_argument("--json", help="write the report here (default: $OUT/mask_quality.json when OUT is set)")
    args = ap.parse_args()

    from ex4d.eval.benchmark import BenchmarkConfig, run_benchmark
    from ex4d.eval.report import write_json

    config = BenchmarkConfig(size=args.size, frames=args.frames, ranges=tuple(args.ranges), scenes=tuple(args.scenes),
                             methods=tuple(args.filters), variants=tuple(args.variants), fill="none")
    report = run_benchmark(config, progress=True)
    rows = {(r["depth"], r["range"], r["method"]): r for r in report["summary"]}
    base = args.filters[0]
    print(f"mask quality, {args.size}×{args.size}, {args.frames} frames per clip, scenes {', '.join(args.scenes)} "
          f"({report['timings']['total_s']:.0f} s, {os.cpu_count()} CPUs); leak ratio = leak / {base}'s leak "
          "(lower is better); recK = recall of the knowable set")
    head = f"{'depth':>24s} {'range':>11s} {'knowable%':>9s} " + " ".join(
        f"{f + ' leak%':>16s} {'recK%':>6s}" + ("" if f == base else f" {'ratio':>6s}") for f in args.filters)
    print(head)
    for depth in dict.fromkeys(k[0] for k in rows):
        for rng in dict.fromkeys(k[1] for k in rows):
            cells = []
            b = rows[depth, rng, base]["leak"]
            for f in args.filters:
                r = rows[depth, rng, f]
                cell = f"{100 * r['leak']:16.2f} {100 * r['recall_knowable']:6.1f}"
                if f != base:
                    cell += f" {r['leak'] / b:6.2f}" if b > 0 and not math.isnan(b) else f" {'—':>6s}"
                cells.append(cell)
            print(f"{depth:>24s} {rng:>11s} {100 * rows[depth, rng, base]['knowable_share']:9.1f} " + " ".join(cells))
    path = args.json or (os.path.join(os.environ["OUT"], "mask_quality.json") if os.environ.get("OUT") else None)
    if path:
        write_json(path, report)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
