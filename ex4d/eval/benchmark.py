"""Ground-truth novel-view benchmark: how right is the known-mask, and how good is the fill, per camera range.

For each synthetic scene (:mod:`ex4d.eval.scenes`), depth variant (exact, or made like an estimate:
:mod:`ex4d.eval.degrade`) and masking method (the original's criteria, ours, …), the scene's
source video is re-shot along one camera path per range and compared with the
exact novel views:

* **camera ranges** ``"lo-hi[@pitch]"`` (degrees of yaw, e.g. ``0-30``, ``-90-90``, ``-90-90@-15``):
  frame i of T looks from yaw lo + (hi − lo)·i/(T − 1) around the pivot
  (0, 0, scene.pivot_depth), with pitch = P · |yaw| / max(|lo|, |hi|), P the
  range's own pitch or ``pitch`` (10° by default; negative = from below), so the
  frames sample the whole range (a frame at yaw 0 is the source view and copies the input frame).
* **mask quality** — a pixel is *truly visible* when the true surface seen
  there was visible in the source (:func:`ex4d.eval.scenes.visible_in_source`).
  A known pixel shows the source image at the point where its ray meets the
  DW-Mesh (the rendered depth, unprojected, then projected into the source).
  It is *correct* when it is truly visible and either that source location lies
  within ``match_px`` source pixels of where the true surface point projects
  (the right content, whatever the depth error; exact on the source view
  itself) or the rendered depth is within ``depth_tolerance`` (relative) of the
  true depth (the right surface, slightly displaced by depth noise). Else it is
  a *leak*: a wrong surface (e.g. a stretched face across a depth edge, whose
  depth and content are both off), a surface hidden in the source, or content
  where the true view has none. leak = leaks / known pixels,
  recall = correct / truly visible. *leak in view* leaves out the leaks whose true
  surface lies outside the source's field of view (never filmed: a per-frame mesh
  cannot know it is there, whatever its occlusion criterion).
* **knowable** (:mod:`ex4d.eval.knowable`) — a truly visible pixel whose novel ray
  never passes behind a surface the source saw: the most any leak-free method can
  mark known. knowable share = knowable / truly visible; recall of knowable =
  correct knowable pixels / knowable pixels.
* **known PSNR** — the render against the true novel view over the known pixels.
* **fill PSNR / SSIM** (``fill="classical"``) — the completed video against the
  true novel view over the pixels where the true scene has a surface (the void
  beyond the scene's walls is not scored), whole frame and generated region.

Counts and sums are pooled over frames, then over scenes for the summary.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import Ex4dError, check
from . import metrics as M
from .degrade import degrade, parse_variant, variant_name
from .knowable import knowable_mask
from .scenes import get_scene, render_source, render_truth, visible_in_source

__all__ = ["BenchmarkConfig", "METHODS", "parse_range", "parse_range_pitch", "parse_method", "range_cameras",
           "depth_variants",
           "run_benchmark", "summarize", "ratio", "range_name",
           "shown_source_coords"]

#: Named masking methods: (filter, alpha mode, sharpen); ``ours`` is the default MeshConfig.
METHODS = {"original": ("angle", "vertex", "none"), "ours": (None, "face", None)}
_ALPHAS = ("face", "vertex")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Options of ``ex4d benchmark novel-view`` (saved in the report)."""

    size: int = 256                                            #: frame side in pixels (square frames)
    frames: int = 9                                            #: frames per clip (scene times 0 … 1)
    ranges: tuple = ("0-60", "-90-90", "-90-90@-15")           #: yaw ranges in degrees, "lo-hi[@pitch]"
    scenes: tuple = ("example", "layout", "slopes", "spheres", "steps")  #: see ex4d.eval.scenes.SCENES
    methods: tuple = ("original", "grazing", "ours")           #: original | ours | FILTER[:ALPHA][/SHARPEN]
    variants: tuple = ("exact", "blur3", "fatten2+blur2.5+noise1")  #: depth variants (ex4d.eval.degrade)
    blur: tuple = ()                                           #: more variants: Gaussian blur, px
    noise: tuple = ()                                          #: more variants: relative noise std
    fill: str = "classical"                                    #: classical | none
    fill_window: int = 2                                       #: classical fill: farthest frame offset
    pitch: float = 10.0                                        #: pitch at the range's widest yaw, degrees
    match_px: float = 1.0                                      #: correct: content within this many source px …
    depth_tolerance: float = 0.02                              #: … or depth within this relative error
    visibility_tolerance: float = 0.01                         #: see scenes.visible_in_source
    seed: int = 0                                              #: depth noise seed
    flicker: int = 0                                           #: frames of the still-scene flicker test (0: off)

    def __post_init__(self):
        check(16 <= self.size <= 4096, f"benchmark size must be in 16..4096 px, got {self.size}")
        check(1 <= self.frames <= 1000, f"benchmark frames must be in 1..1000, got {self.frames}")
        check(len(self.ranges) >= 1 and len(self.scenes) >= 1 and len(self.methods) >= 1,
              "the benchmark needs at least one range, scene and method")
        for r in self.ranges:
            parse_range_pitch(r)
        for m in self.methods:
            parse_method(m)
        for s in self.scenes:
            get_scene(s)
        for v in self.variants:
            parse_variant(v)
        check(all(b > 0 for b in self.blur), f"blur values must be > 0 px, got {list(self.blur)}")
        check(all(0 < n < 0.5 for n in self.noise), f"noise values must be in (0, 0.5), got {list(self.noise)}")
        check(self.fill in ("classical", "none"),
              f"benchmark fill must be classical or none, got {self.fill!r} (the ex4d diffusion fill needs a GPU "
              "and weights; evaluate its output with `ex4d eval` instead)")
        check(self.flicker == 0 or self.flicker >= 2, f"flicker needs ≥ 2 frames (0: off), got {self.flicker}")
        check(self.fill_window >= 0, f"fill window must be ≥ 0, got {self.fill_window}")
        check(0 <= self.pitch <= 90, f"pitch must be in [0, 90], got {self.pitch}")
        check(self.match_px > 0, f"match_px must be > 0, got {self.match_px}")
        check(0 <= self.depth_tolerance < 1, f"depth_tolerance must be in [0, 1), got {self.depth_tolerance}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


_RANGE = re.compile(r"^\s*([-−]?\d+(?:\.\d+)?)\s*(?:-|:|\.\.|–)\s*([-−]?\d+(?:\.\d+)?)\s*$")
_SYMMETRIC = re.compile(r"^\s*(?:±|\+-|\+/-|pm)\s*(\d+(?:\.\d+)?)\s*$")


def parse_range_pitch(text: str) -> tuple[float, float, float | None]:
    """(lo, hi, pitch or None) of ``"RANGE[@PITCH]"`` (see :func:`parse_range`; pitch in degrees, |pitch| ≤ 90)."""
    text = str(text)
    pitch = None
    if "@" in text:
        text, p = text.split("@", 1)
        try:
            pitch = float(p.replace("−", "-"))
        except ValueError:
            raise Ex4dError(f"camera range pitch {p!r} is not a number of degrees (e.g. 0-90@-15)") from None
        check(-90 <= pitch <= 90, f"camera range pitch must be in [−90, 90], got {pitch:g}")
    return (*parse_range(text), pitch)


def parse_range(text: str) -> tuple[float, float]:
    """(lo, hi) degrees of a yaw range, −90 ≤ lo < hi ≤ 90.

    Accepted: ``"lo-hi"`` / ``"lo:hi"`` (``"0-30"``, ``"-90-90"``), ``"N"`` (= 0–N) and ``"±N"`` / ``"+-N"``
    / ``"pmN"`` (= −N–N; on a command line a value starting with "-" reads as an option, so write −90–90
    as +-90). A pitch suffix ``@P`` (:func:`parse_range_pitch`) is ignored here.
    """
    text = str(text).split("@", 1)[0]
    m, sym = _RANGE.match(text), _SYMMETRIC.match(text)
    if sym is not None:
        lo, hi = -float(sym.group(1)), float(sym.group(1))
    elif m is not None:
        lo, hi = (float(g.replace("−", "-")) for g in m.groups())
    else:
        try:
            lo, hi = 0.0, float(text)
        except ValueError:
            raise Ex4dError(f"camera range {text!r} is not 'lo-hi' in degrees (e.g. 0-30, -90-90, or +-90)") from None
    check(-90 <= lo < hi <= 90, f"camera range {text!r}: need −90 ≤ lo < hi ≤ 90")
    return lo, hi


def range_name(text: str) -> str:
    """Canonical name ``"lo-hi[@p]"`` of a range (``"+-90"`` → ``"-90-90"``, ``"+-90@-15"`` → ``"-90-90@-15"``)."""
    lo, hi, pitch = parse_range_pitch(text)
    return f"{lo:g}-{hi:g}" + ("" if pitch is None else f"@{pitch:g}")


def parse_method(text: str):
    """MeshConfig of a method name: ``original`` (angle filter, per-vertex alpha, no sharpening), ``ours`` (the
    default MeshConfig) or ``FILTER[:ALPHA][/SHARPEN]`` (alpha ``face`` and sharpen ``auto`` unless given)."""
    from ..dwmesh import FILTERS, SHARPEN_MODES, MeshConfig

    if text in METHODS:
        filt, alpha, sharpen = METHODS[text]
        d = MeshConfig()
        return MeshConfig(filter=filt or d.filter, alpha_mode=alpha, sharpen=sharpen or d.sharpen)
    head, _, sharpen = text.partition("/")
    parts = head.split(":")
    ok = (parts[0] in FILTERS and len(parts) <= 2 and (len(parts) == 1 or parts[1] in _ALPHAS)
          and (sharpen == "" or sharpen in SHARPEN_MODES))
    check(ok, f"unknown masking method {text!r}; use original, ours, or FILTER[:ALPHA][/SHARPEN] with FILTER in "
              f"{', '.join(FILTERS)}, ALPHA in {', '.join(_ALPHAS)} and SHARPEN in {', '.join(SHARPEN_MODES)}")
    return MeshConfig(filter=parts[0], alpha_mode=parts[1] if len(parts) == 2 else "face", sharpen=sharpen or "auto")


def range_cameras(lo: float, hi: float, num_frames: int, pivot_depth: float, pitch: float = 10.0):
    """(w2c [T, 4, 4] OpenCV, yaw [T] degrees, pitch [T] degrees) sweeping yaw lo → hi around (0, 0, pivot_depth)."""
    from ..trajectory import orbit_w2c

    s = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.array([1.0])
    yaw = lo + (hi - lo) * s
    pit = pitch * np.abs(yaw) / max(abs(lo), abs(hi))
    w2c = orbit_w2c(yaw, pit, np.zeros_like(yaw), pivot_depth)
    w2c[np.abs(yaw) < 1e-9] = np.eye(4)  # exactly the source camera (the recon copies the input frame)
    return w2c, yaw, pit


def depth_variants(config: BenchmarkConfig) -> list[str]:
    """Canonical variant names (:mod:`ex4d.eval.degrade`): ``config.variants``, then each blur and noise level;
    duplicates dropped."""
    names = [variant_name(v) for v in config.variants]
    names += [f"blur{b:g}" for b in config.blur] + [f"noise{100 * n:g}" for n in config.noise]
    return list(dict.fromkeys(names))


def _empty_acc() -> dict:
    keys = ("known", "visible", "correct", "leak_out_of_view", "leak_hidden", "leak_misplaced", "leak_empty",
            "knowable", "correct_knowable", "knowable_unknown", "has", "known_sse",
            "known_n", "fill_sse", "fill_n", "gen_sse", "gen_n",
            "fill_ssim_sum", "fill_ssim_n", "gen_ssim_sum", "gen_ssim_n", "pixels")
    return {k: 0.0 for k in keys}


def shown_source_coords(depth: np.ndarray, K_out: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Source-image coordinates [H, W, 2] (u, v) of the surface each novel-view pixel shows (NaN where none).

    The pixel's ray (K_out, w2c) is cut at the rendered z-depth [H, W] (inf = none), brought to world
    (= source camera) coordinates and projected with the source intrinsics K: since a DW-Mesh is made of
    source pixel rays, this is where in the source image its colour comes from, whatever the depth error.
    """
    from ..cameras import project_points, unproject_depth

    finite = np.isfinite(depth)
    cam = unproject_depth(np.where(finite, depth, 1.0), K_out)
    R, t = w2c[:3, :3], w2c[:3, 3]
    world = (cam - t) @ R  # R^T (X_cam − t), row-vector form
    uv, _ = project_points(world, K)
    uv[~finite] = np.nan
    return uv


def _frame_stats(truth, visible, knowable, color, mask, depth, filled, K_out, w2c, K, match_px: float,
                 depth_tolerance: float) -> dict:
    """Counts and error sums of one frame (see :func:`run_benchmark`)."""
    from ..cameras import project_points

    acc = _empty_acc()
    shown = shown_source_coords(depth, K_out, w2c, K)
    true_uv, true_z = project_points(truth.points, K)
    H, W = truth.has.shape
    with np.errstate(invalid="ignore"):
        in_view = (true_z > 0) & (true_uv[..., 0] >= -0.5) & (true_uv[..., 0] <= W - 0.5) & \
            (true_uv[..., 1] >= -0.5) & (true_uv[..., 1] <= H - 0.5)
        right = (((shown - true_uv) ** 2).sum(-1) <= match_px * match_px) | \
            (np.abs(depth - truth.depth) <= depth_tolerance * truth.depth)
    correct = mask & visible & right
    wrong = mask & ~correct
    acc.update(known=int(mask.sum()), visible=int(visible.sum()), correct=int(correct.sum()),
               leak_out_of_view=int((wrong & truth.has & ~in_view).sum()),
               # the leak's kinds (with leak_out_of_view they partition it): the true surface was seen by the
               # source but another or a misplaced one is shown; it was hidden in the source; there is none
               leak_misplaced=int((wrong & visible).sum()),
               leak_hidden=int((wrong & ~visible & truth.has & in_view).sum()),
               leak_empty=int((wrong & ~visible & ~truth.has).sum()),
               knowable=int(knowable.sum()), correct_knowable=int((correct & knowable).sum()),
               knowable_unknown=int((knowable & ~mask).sum()),
               has=int(truth.has.sum()), pixels=int(mask.size))
    acc["known_sse"], acc["known_n"] = M.squared_error(color, truth.rgb, mask)
    if filled is not None:
        gen = truth.has & ~mask
        acc["fill_sse"], acc["fill_n"] = M.squared_error(filled, truth.rgb, truth.has)
        acc["gen_sse"], acc["gen_n"] = M.squared_error(filled, truth.rgb, gen)
        smap = M.ssim_map(filled, truth.rgb)
        r = (M.SSIM_WINDOW - 1) // 2
        for key, region in (("fill", truth.has), ("gen", gen)):
            inner = region[r: region.shape[0] - r, r: region.shape[1] - r]
            acc[f"{key}_ssim_sum"], acc[f"{key}_ssim_n"] = float(smap[inner].sum()), int(inner.sum())
    return acc


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ratio(acc: dict) -> dict:
    """Scores of pooled counts: leak, recall, known/visible share, PSNRs (dB), SSIMs; NaN where undefined."""
    out = {
        "leak": _div(acc["known"] - acc["correct"], acc["known"]),
        "leak_in_view": _div(acc["known"] - acc["correct"] - acc["leak_out_of_view"], acc["known"]),
        "recall": _div(acc["correct"], acc["visible"]),
        "knowable_share": _div(acc["knowable"], acc["visible"]),
        "recall_knowable": _div(acc["correct_knowable"], acc["knowable"]),
        # where the leak and the lost knowable pixels come from (NaN in reports written before these counts)
        "leak_misplaced": _div(acc.get("leak_misplaced", math.nan), acc["known"]),
        "leak_hidden": _div(acc.get("leak_hidden", math.nan), acc["known"]),
        "lost_unknown": _div(acc.get("knowable_unknown", math.nan), acc["knowable"]),
        "lost_wrong": _div(acc["knowable"] - acc["correct_knowable"] - acc.get("knowable_unknown", math.nan),
                           acc["knowable"]),
        "known_share": _div(acc["known"], acc["pixels"]),
        "visible_share": _div(acc["visible"], acc["pixels"]),
        "known_psnr": M.psnr_from_mse(_div(acc["known_sse"], acc["known_n"])),
    }
    if acc["fill_n"]:
        out.update(fill_psnr=M.psnr_from_mse(_div(acc["fill_sse"], acc["fill_n"])),
                   fill_psnr_generated=M.psnr_from_mse(_div(acc["gen_sse"], acc["gen_n"])),
                   fill_ssim=_div(acc["fill_ssim_sum"], acc["fill_ssim_n"]),
                   fill_ssim_generated=_div(acc["gen_ssim_sum"], acc["gen_ssim_n"]))
    return out


def _add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def _score_clip(views, vis, kn, res, filled, K: np.ndarray, config: BenchmarkConfig) -> tuple[dict, dict]:
    """(counts pooled over the clip's frames, per-frame scores {"leak", "recall", "recall_knowable", "known_psnr",
    "fill_psnr": [T]})."""
    acc = _empty_acc()
    per = {"leak": [], "recall": [], "recall_knowable": [], "known_psnr": [], "fill_psnr": []}
    for i, view in enumerate(views):
        fa = _frame_stats(view, vis[i], kn[i], res.color[i], res.mask[i], res.depth[i],
                          None if filled is None else filled[i], res.K[i], res.w2c[i], K,
                          config.match_px, config.depth_tolerance)
        acc = _add(acc, fa)
        r = ratio(fa)
        for k in per:
            per[k].append(r.get(k, float("nan")))
    return acc, per


def run_benchmark(config: BenchmarkConfig | None = None, progress: bool = True, log=None) -> dict:
    """Run the benchmark; returns the JSON-able report.

    Report layout: ``{"config", "results": [one row per (scene, range, depth, method): its keys, pooled
    counts "counts", scores (see :func:`ratio`) and "per_frame": {"yaw", "pitch", "leak", "recall",
    "recall_knowable", "known_psnr", "fill_psnr"}], "summary": [rows pooled over scenes], "timings", "machine"}``
    and, with ``config.flicker`` frames, ``"flicker"`` (:func:`ex4d.eval.flicker.flag_flicker` rows).
    """
    from ..cameras import default_intrinsics
    from ..fill import ClassicalFillConfig, classical_fill
    from ..recon import ReconConfig, render_novel_views

    config = config or BenchmarkConfig()
    t_start = time.perf_counter()
    S, T = config.size, config.frames
    K = default_intrinsics(S, S)
    variants = depth_variants(config)
    ranges = [(range_name(r), *parse_range_pitch(r)) for r in config.ranges]
    methods = [(m, parse_method(m)) for m in config.methods]
    timings = {"truth_s": 0.0, "knowable_s": 0.0, "recon_s": 0.0, "fill_s": 0.0, "score_s": 0.0}
    total = len(config.scenes) * len(ranges) * len(variants) * len(methods)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="benchmark", unit="clip", leave=False)
    rows = []
    for scene_name in config.scenes:
        scene = get_scene(scene_name)
        t0 = time.perf_counter()
        frames, depth, labels = render_source(scene, T, K, S, S, labels=True)
        truths = {}
        for rname, lo, hi, pitch in ranges:
            w2c, yaw, pit = range_cameras(lo, hi, T, scene.pivot_depth, config.pitch if pitch is None else pitch)
            views = [render_truth(scene, i / max(T - 1, 1), K, w2c[i], S, S, near=ReconConfig().near)
                     for i in range(T)]
            vis = [visible_in_source(v.points, depth[i], K, config.visibility_tolerance) for i, v in enumerate(views)]
            t1 = time.perf_counter()
            kn = [knowable_mask(v.points, w2c[i], depth[i], K, config.visibility_tolerance)
                  for i, v in enumerate(views)]
            timings["knowable_s"] += time.perf_counter() - t1
            truths[rname] = (w2c, yaw, pit, views, vis, kn)
        timings["truth_s"] += time.perf_counter() - t0
        for vname in variants:
            dvar = depth if vname == "exact" else degrade(depth, vname, labels, config.seed)
            for mname, mesh_cfg in methods:
                rc = ReconConfig(mesh=mesh_cfg, backend="numba")
                for rname, lo, hi, _ in ranges:
                    w2c, yaw, pit, views, vis, kn = truths[rname]
                    t0 = time.perf_counter()
                    res = render_novel_views(frames, dvar, K, w2c, config=rc, progress=False)
                    t1 = time.perf_counter()
                    filled = None
                    if config.fill == "classical":
                        filled = classical_fill(res.color, res.mask, res.depth, frames, dvar, K, w2c, res.K, rc,
                                                ClassicalFillConfig(window=config.fill_window), progress=False)
                    t2 = time.perf_counter()
                    acc, per = _score_clip(views, vis, kn, res, filled, K, config)
                    per = {"yaw": yaw.tolist(), "pitch": pit.tolist(), **per}
                    timings["recon_s"] += t1 - t0
                    timings["fill_s"] += t2 - t1
                    timings["score_s"] += time.perf_counter() - t2
                    rows.append({"scene": scene_name, "range": rname, "depth": vname, "method": mname,
                                 "filter": mesh_cfg.filter, "alpha_mode": mesh_cfg.alpha_mode,
                                 "sharpen": mesh_cfg.sharpen_mode,
                                 **ratio(acc), "counts": acc, "per_frame": per})
                    if bar is not None:
                        bar.update(1)
                    if log is not None:
                        r = rows[-1]
                        log(f"{scene_name:8s} {rname:>10s} {vname:>11s} {mname:>9s}: leak {100 * r['leak']:6.2f}%  "
                            f"recall {100 * r['recall']:5.1f}% (of knowable {100 * r['recall_knowable']:5.1f}%)  "
                            f"known PSNR {r['known_psnr']:5.2f} dB"
                            + (f"  fill PSNR {r['fill_psnr']:5.2f} dB" if "fill_psnr" in r else ""))
    if bar is not None:
        bar.close()
    flicker = None
    if config.flicker:
        from .flicker import flag_flicker

        t0 = time.perf_counter()
        flicker = flag_flicker(config.scenes, variants, methods, config.flicker, S, config.seed)
        timings["flicker_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    import os
    import platform

    out = {"benchmark": "novel-view", "config": config.to_dict(), "results": rows, "summary": summarize(rows),
           "timings": {k: round(v, 2) for k, v in timings.items()},
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    if flicker is not None:
        out["flicker"] = flicker
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Rows pooled over scenes: one per (range, depth, method), in first-seen order, with :func:`ratio` scores."""
    groups: dict[tuple, dict] = {}
    scenes: dict[tuple, list] = {}
    for r in rows:
        key = (r["range"], r["depth"], r["method"])
        groups[key] = _add(groups[key], r["counts"]) if key in groups else dict(r["counts"])
        scenes.setdefault(key, []).append(r["scene"])
    return [{"range": k[0], "depth": k[1], "method": k[2], "scenes": scenes[k], **ratio(acc), "counts": acc}
            for k, acc in groups.items()]
