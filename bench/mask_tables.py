"""The README's mask-quality tables from a novel-view benchmark report (``ex4d benchmark novel-view``).

    python bench/mask_tables.py bench_report/report.json [--held-out heldout/report.json]

Prints markdown: per depth variant and camera range, every method's leak and recall of the knowable set side by
side (pooled over scenes), the known-region PSNR of ours against its exact-depth render, and the flag flicker
table when the report has one.
"""

from __future__ import annotations

import argparse
import json


def _label(r: str) -> str:
    from ex4d.eval.benchmark import parse_range_pitch

    lo, hi, p = parse_range_pitch(r)
    return f"{lo:g}…{hi:g}°" + ("" if p is None else f" @{p:g}°")


def mask_table(report: dict, variants=None, ranges=None) -> list[str]:
    s = report["summary"]
    methods = list(dict.fromkeys(r["method"] for r in s))
    rows = {(r["depth"], r["range"], r["method"]): r for r in s}
    variants = variants or list(dict.fromkeys(r["depth"] for r in s))
    ranges_all = list(dict.fromkeys(r["range"] for r in s))
    pitch = report["config"]["pitch"]
    head = ["depth", "range", "knowable %"] + [f"leak % {m}" for m in methods] + \
        [f"recall of knowable % {m}" for m in methods]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "|".join(["---:"] * (len(head) - 2)) + "|"]
    for v in variants:
        for g in (ranges or {}).get(v, ranges_all):
            if (v, g, methods[0]) not in rows:
                continue
            best_leak = min(rows[v, g, m]["leak"] for m in methods)
            cells = [v, _label(g) if "@" in g else f"{_label(g)} @{pitch:g}°",
                     f"{100 * rows[v, g, methods[0]]['knowable_share']:.1f}"]
            for m in methods:
                x = f"{100 * rows[v, g, m]['leak']:.2f}"
                cells.append(f"**{x}**" if rows[v, g, m]["leak"] == best_leak else x)
            cells += [f"{100 * rows[v, g, m]['recall_knowable']:.1f}" for m in methods]
            out.append("| " + " | ".join(cells) + " |")
    return out


def psnr_table(report: dict, method: str = "ours") -> list[str]:
    s = report["summary"]
    rows = {(r["depth"], r["range"]): r for r in s if r["method"] == method}
    variants = [v for v in dict.fromkeys(r["depth"] for r in s) if v != "exact"]
    ranges = list(dict.fromkeys(r["range"] for r in s))
    out = ["| depth | " + " | ".join(_label(g) for g in ranges) + " |",
           "|---|" + "|".join(["---:"] * len(ranges)) + "|"]
    out.append("| exact | " + " | ".join(f"{rows['exact', g]['known_psnr']:.2f}" for g in ranges) + " |")
    for v in variants:
        out.append(f"| {v} | " + " | ".join(
            f"{rows[v, g]['known_psnr']:.2f} ({rows[v, g]['known_psnr'] - rows['exact', g]['known_psnr']:+.2f})"
            for g in ranges) + " |")
    return out


def flicker_table(report: dict) -> list[str]:
    fl = report.get("flicker")
    if not fl:
        return []
    methods = list(dict.fromkeys(r["method"] for r in fl["summary"]))
    rows = {(r["depth"], r["method"]): r for r in fl["summary"]}
    depths = [d for d in dict.fromkeys(r["depth"] for r in fl["summary"]) if "noise" in d]
    out = ["| depth | " + " | ".join(f"flicker % {m}" for m in methods) + " | " +
           " | ".join(f"flagged % {m}" for m in methods) + " |",
           "|---|" + "|".join(["---:"] * (2 * len(methods))) + "|"]
    for d in depths:
        out.append(f"| {d} | " + " | ".join(f"{100 * rows[d, m]['flicker']:.1f}" for m in methods) + " | " +
                   " | ".join(f"{100 * rows[d, m]['flagged_share']:.2f}" for m in methods) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("--held-out", help="a second report (held-out scenes), printed the same way")
    args = ap.parse_args()
    report = json.load(open(args.report))
    print("\n".join(mask_table(report)))
    print()
    print("\n".join(psnr_table(report)))
    print()
    print("\n".join(flicker_table(report)))
    if args.held_out:
        print()
        print("\n".join(mask_table(json.load(open(args.held_out)))))


if __name__ == "__main__":
    main()
