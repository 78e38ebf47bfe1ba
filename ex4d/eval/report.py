"""Reports: JSON (atomic), readable tables, markdown, and PNG plots (matplotlib, optional).

Plots need ``matplotlib`` (``pip install matplotlib``); without it they are
skipped and the report says so. Every file is written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["json_safe", "write_json", "format_eval_table", "plot_eval_curves", "benchmark_markdown",
           "plot_benchmark", "write_benchmark_report", "have_matplotlib", "MATPLOTLIB_HINT"]

MATPLOTLIB_HINT = "plots skipped: matplotlib is not installed (pip install matplotlib)"


def json_safe(x):
    """``x`` with NaN → None and ±inf → "inf"/"-inf" (strict JSON), numpy scalars → Python; recursive."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(path: str | os.PathLike, report: dict) -> Path:
    """Write ``report`` (made :func:`json_safe`) as indented JSON, atomically; returns the path."""
    from ..io.atomic import atomic_write_json

    atomic_write_json(path, json_safe(report))
    return Path(path)


def _num(x) -> float:
    """A report value back to float (None → NaN, "inf" → inf)."""
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return float(x)
    return float(x)


def _fmt(x, spec: str = ".2f", scale: float = 1.0) -> str:
    v = _num(x)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return format(v * scale, spec)


# ----------------------------------------------------------------------------------------------- eval

def format_eval_table(report: dict) -> str:
    """A readable multi-line table of an :func:`ex4d.eval.evaluate_video` report."""
    regions = [r for r in ("all", "known", "generated") if r in report.get("regions", {})]
    lines = [f"{report['frames']} frames of {report['width']}×{report['height']}"
             + ("; " + ", ".join(f"{r} {100 * report['regions'][r]:.1f}% of pixels" for r in regions[1:])
                if len(regions) > 1 else "")]
    head = f"{'metric':40s}" + "".join(f"{r:>11s}" for r in regions)
    lines += [head, "-" * len(head)]

    def row(label, values: dict, spec=".2f", scale=1.0):
        lines.append(f"{label:40s}" + "".join(f"{_fmt(values.get(r), spec, scale) if r in values else '':>11s}"
                                              for r in regions))

    if "psnr" in report:
        row("PSNR vs ref (dB, higher better)", report["psnr"])
        row("SSIM vs ref (higher better)", report["ssim"], ".4f")
    if "lpips" in report:
        row(f"LPIPS-{report.get('lpips_net', '')} vs ref (lower better)", report["lpips"], ".4f")
    t = report.get("temporal")
    if t:
        row(f"warping error ×1e3 ({t['flow']} on {t['flow_from']})", t["warp_error"], ".3f", 1e3)
        if "warp_error_ref" in t:
            row("  same for the reference video", t["warp_error_ref"], ".3f", 1e3)
        row("frame difference ×1e3 (no flow)", t["frame_diff"], ".3f", 1e3)
    g = report.get("geometric")
    if g:
        lines.append(f"geometric consistency (known pixels vs the DW-Mesh render): PSNR {_fmt(g['psnr'])} dB, "
                     f"mean abs diff {_fmt(g['mae'], '.4f')}, changed {_fmt(g['changed'], '.2f', 100)}%")
    for key, label in (("fid", "FID (frames)"), ("fvd", "FVD (16-frame clips)")):
        if key in report:
            lines.append(f"{label}: {_fmt(report[key])}")
    for key, why in report.get("skipped", {}).items():
        lines.append(f"{key}: skipped ({why})")
    return "\n".join(lines)


def have_matplotlib() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(rows: int, cols: int, size=(4.2, 3.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_eval_curves(report: dict, path: str | os.PathLike) -> Path | None:
    """Per-frame curves of an eval report as one PNG; None when matplotlib is missing or there is nothing to plot."""
    if not have_matplotlib():
        return None
    curves = report.get("per_frame", {})
    panels = [(title, [(k.split("_", 1)[1] if k != "warp_error_ref" else "ref (all)", curves[k]) for k in keys
                       if k in curves]) for title, keys in (
        ("PSNR vs ref (dB)", ("psnr_all", "psnr_known", "psnr_generated")),
        ("SSIM vs ref", ("ssim_all", "ssim_known", "ssim_generated")),
        ("LPIPS vs ref", ("lpips_all", "lpips_known", "lpips_generated")),
        ("warping error t→t+1", ("warp_error_all", "warp_error_generated", "warp_error_ref")),
        ("PSNR vs DW-Mesh render, known (dB)", ("geometric_psnr",)))]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = _figure(1, len(panels))
    for ax, (title, series) in zip(axes[0], panels):
        for label, ys in series:
            ys = np.array([_num(v) for v in ys])
            ys[np.isinf(ys)] = np.nan
            ax.plot(np.arange(len(ys)), ys, marker=".", label=label.replace("error_", ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


# ----------------------------------------------------------------------------------------------- benchmark

def _range_label(r: str) -> str:
    from .benchmark import parse_range_pitch

    lo, hi, pitch = parse_range_pitch(r)
    return f"{lo:g}…{hi:g}°" + ("" if pitch is None else f" @{pitch:g}°")


def _pivot(rows: list[dict], methods: list[str]) -> dict:
    return {(r["depth"], r["range"], r.get("scene")): {m: next((x for x in rows if x["depth"] == r["depth"] and
                                                                x["range"] == r["range"] and x["method"] == m and
                                                                x.get("scene") == r.get("scene")), None)
                                                       for m in methods} for r in rows}


def _table(rows: list[dict], methods: list[str], cols: list[tuple[str, str, str, float]], by_scene: bool) -> list[str]:
    """Markdown table: a row per ([scene,] depth, range); per column spec (title, key, fmt, scale) a cell per method."""
    head = (["scene"] if by_scene else []) + ["depth", "range"]
    head += [f"{title} {m}" for title, _, _, _ in cols for m in methods]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * (2 + by_scene)) + "|" +
           "|".join(["---:"] * (len(head) - 2 - by_scene)) + "|"]
    for (depth, rng, scene), per in _pivot(rows, methods).items():
        cells = ([scene] if by_scene else []) + [depth, _range_label(rng)]
        for _, key, spec, scale in cols:
            for m in methods:
                cells.append(_fmt(per[m].get(key), spec, scale) if per[m] else "—")
        out.append("| " + " | ".join(cells) + " |")
    return out


def benchmark_markdown(report: dict) -> str:
    """The benchmark report as markdown: setup, mask-quality and fill tables (pooled over scenes), per-scene table."""
    c = report["config"]
    methods = list(dict.fromkeys(r["method"] for r in report["summary"]))
    from .benchmark import parse_method

    def describe(m):
        cfg = parse_method(m)
        return f"**{m}** = {cfg.filter} filter, per-{cfg.alpha_mode} flags" + (
            f", {cfg.sharpen_mode} sharpening" if cfg.sharpen_mode != "none" else "")

    desc = "; ".join(describe(m) for m in methods)
    t = report["timings"]
    lines = [
        "# ex4d novel-view benchmark (synthetic scenes with exact ground truth)", "",
        f"{c['size']}×{c['size']} px, {c['frames']} frames per clip, scenes: {', '.join(c['scenes'])}; "
        f"methods: {desc}; fill: {c['fill']}" + (f" (window {c['fill_window']})" if c["fill"] != "none" else "")
        + f". {t['total_s']:.0f} s on {report['machine']['cpus']} CPUs.", "",
        "Each range is one camera path: frame i looks from yaw lo + (hi − lo)·i/(T−1) around the scene's subject, "
        f"with pitch up to {c['pitch']:g}° at the widest yaw (or the range's own @pitch). **leak** = share of the "
        "pixels marked known that show a wrong surface (its colour comes from more than "
        f"{c['match_px']:g} source px away from the true surface's place in the source image *and* its depth is off "
        f"by more than {100 * c['depth_tolerance']:g}%) or one hidden in the source; **in view** leaves out leaks "
        "whose true surface lies outside the source's field of view; **recall** = share of the truly "
        "source-visible pixels marked known; **knowable** = share of those whose novel ray passes no space behind a "
        "surface the source saw (the most any leak-free method can know); **recall of knowable** = correct knowable "
        "pixels / knowable pixels; **known PSNR** = the render against the true novel view over the known "
        "pixels; **fill PSNR/SSIM** = the completed video against the true novel view (pixels where the scene has "
        "a surface; *gen.* = generated region only). Depth variants (ex4d.eval.degrade): exact, blurN (Gaussian, "
        "px), fattenN / shrinkN (the nearer / farther side of every step grown N px), noiseN (% white relative "
        "noise), joined with + in the order applied.",
        "", "## Mask quality (pooled over scenes)", ""]
    lines += _table(report["summary"], methods, [("leak %", "leak", ".2f", 100),
                                                 ("leak in view %", "leak_in_view", ".2f", 100),
                                                 ("recall %", "recall", ".1f", 100),
                                                 ("recall of knowable %", "recall_knowable", ".1f", 100),
                                                 ("known PSNR", "known_psnr", ".2f", 1)], False)
    if all("leak_hidden" in r.get("counts", {}) for r in report["summary"]):
        lines += ["", "### Where the leak and the lost recall come from", "",
                  "Shares of the known pixels: **misplaced** (the source saw the true surface, the render shows "
                  "another surface or this one in the wrong place: depth errors, surfaces between pixel samples) "
                  "and **hidden** (the true surface was hidden in the source: a known face covers a disocclusion); "
                  "the rest of the leak lies outside the source's view. Shares of the knowable pixels: **lost as "
                  "unknown** (flagged, a criterion's or a guard's cost) and **lost as wrong** (shown, but wrong).", ""]
        lines += _table(report["summary"], methods, [("misplaced %", "leak_misplaced", ".2f", 100),
                                                     ("hidden %", "leak_hidden", ".2f", 100),
                                                     ("lost as unknown %", "lost_unknown", ".1f", 100),
                                                     ("lost as wrong %", "lost_wrong", ".1f", 100)], False)
    know = {(r["depth"], r["range"]): r["knowable_share"] for r in report["summary"]}
    if know:
        lines += ["", "Knowable share of the truly visible pixels per range: " + ", ".join(
            f"{_range_label(rg)} {_fmt(v, '.1f', 100)}%" for (dp, rg), v in know.items() if dp == "exact") + "."]
    fl = report.get("flicker")
    if fl:
        lines += ["", f"## Flag flicker on still scenes ({fl['frames']} frames, pooled over scenes)", "",
                  "Share of the flagged grid faces whose flag changes from one frame to the next (0 = stable), and "
                  "the flagged share of all grid faces.", ""]
        depths = list(dict.fromkeys(r["depth"] for r in fl["summary"]))
        head = ["depth"] + [f"flicker % {m}" for m in methods] + [f"flagged % {m}" for m in methods]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "|".join(["---:"] * (len(head) - 1)) + "|"]
        for dp in depths:
            rows = {r["method"]: r for r in fl["summary"] if r["depth"] == dp}
            cells = [dp] + [_fmt(rows[m]["flicker"], ".2f", 100) if m in rows else "—" for m in methods] \
                + [_fmt(rows[m]["flagged_share"], ".2f", 100) if m in rows else "—" for m in methods]
            lines.append("| " + " | ".join(cells) + " |")
    if c["fill"] != "none":
        lines += ["", f"## Fill ({c['fill']}) against the true novel view (pooled over scenes)", ""]
        lines += _table(report["summary"], methods, [("PSNR", "fill_psnr", ".2f", 1),
                                                     ("PSNR gen.", "fill_psnr_generated", ".2f", 1),
                                                     ("SSIM", "fill_ssim", ".3f", 1),
                                                     ("SSIM gen.", "fill_ssim_generated", ".3f", 1)], False)
    lines += ["", "## Per scene", ""]
    lines += _table(report["results"], methods, [("leak %", "leak", ".2f", 100), ("recall %", "recall", ".1f", 100),
                                                 ("recall of knowable %", "recall_knowable", ".1f", 100)]
                    + ([("fill PSNR", "fill_psnr", ".2f", 1)] if c["fill"] != "none" else []), True)
    if report.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in report["plots"])]
    elif report.get("plots_note"):
        lines += ["", report["plots_note"]]
    return "\n".join(lines) + "\n"


def plot_benchmark(report: dict, folder: str | os.PathLike) -> list[Path]:
    """PNG plots of a benchmark report into ``folder``: mask_quality.png, fill.png, leak_vs_yaw.png ([] without
    matplotlib)."""
    if not have_matplotlib():
        return []
    folder = Path(folder)
    summary = report["summary"]
    methods = list(dict.fromkeys(r["method"] for r in summary))
    depths = list(dict.fromkeys(r["depth"] for r in summary))
    ranges = list(dict.fromkeys(r["range"] for r in summary))
    styles = ["-", "--", ":", "-."]
    out = []

    def by_range(key, scale):
        fig_rows = []
        for m_i, m in enumerate(methods):
            for d_i, d in enumerate(depths):
                ys = [next((_num(r.get(key)) * scale for r in summary if r["method"] == m and r["depth"] == d
                            and r["range"] == g), np.nan) for g in ranges]
                fig_rows.append((f"{m}, {d}", f"C{m_i}", styles[d_i % len(styles)], ys))
        return fig_rows

    def panel_plot(name, panels):
        fig, axes = _figure(1, len(panels))
        for ax, (title, key, scale) in zip(axes[0], panels):
            for label, color, ls, ys in by_range(key, scale):
                ax.plot(range(len(ranges)), ys, color=color, linestyle=ls, marker="o", label=label)
            ax.set_xticks(range(len(ranges)), [_range_label(r) for r in ranges])
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        out.append(_save(fig, folder / name))

    panel_plot("mask_quality.png", [("leak % (lower better)", "leak", 100),
                                    ("recall of knowable % (higher better)", "recall_knowable", 100),
                                    ("known PSNR vs truth (dB)", "known_psnr", 1)])
    if report["config"]["fill"] != "none":
        panel_plot("fill.png", [("fill PSNR vs truth (dB)", "fill_psnr", 1),
                                ("fill PSNR, generated region (dB)", "fill_psnr_generated", 1),
                                ("fill SSIM vs truth", "fill_ssim", 1)])

    # per-frame leak against the view's yaw, averaged over scenes and ranges that reach that yaw
    fig, axes = _figure(1, len(depths))
    for ax, d in zip(axes[0], depths):
        for m_i, m in enumerate(methods):
            acc: dict[float, list] = {}
            for r in report["results"]:
                if r["method"] == m and r["depth"] == d:
                    for yaw, leak in zip(r["per_frame"]["yaw"], r["per_frame"]["leak"]):
                        acc.setdefault(round(float(yaw), 1), []).append(_num(leak) * 100)
            xs = sorted(acc)
            ax.plot(xs, [np.nanmean(acc[x]) if not np.isnan(acc[x]).all() else np.nan for x in xs],
                    color=f"C{m_i}", marker=".", label=m)
        ax.set_title(f"leak % per frame, {d}", fontsize=10)
        ax.set_xlabel("yaw (degrees)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out.append(_save(fig, folder / "leak_vs_yaw.png"))
    return out


def write_benchmark_report(report: dict, folder: str | os.PathLike) -> dict:
    """Write report.json, report.md and the PNG plots into ``folder``; returns {"json", "md", "plots"} paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_write_text

    plots = plot_benchmark(report, folder)
    report = dict(report, plots=[p.name for p in plots])
    if not plots:
        report["plots_note"] = MATPLOTLIB_HINT
    write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", benchmark_markdown(report))
    return {"json": folder / "report.json", "md": folder / "report.md", "plots": plots}
