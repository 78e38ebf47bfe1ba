"""The classical fill: complete the novel-view video from what the video itself shows (no weights).

Honest preview quality, not a generative model. Three passes per output frame t:

1. **Temporal reprojection.** Other frames s see parts of the scene that frame
   t's source view does not (a moving object uncovers the background behind
   it; a moving camera saw it from elsewhere). Frame s's DW-Mesh is rendered
   with camera t; an unknown pixel of t takes its colour where that render is
   known, from frames at offsets ±1, ±2, ±4, … up to ``window`` and, when the
   source camera moves, a few keyframes of the whole clip placed by the true
   relative poses (:mod:`ex4d.fill.sources` chooses them, boundedly); the
   farthest candidate wins (disocclusions reveal background, which rarely
   moves). A candidate must lie behind frame t's own occluding surface there
   (else it is a foreground object that has moved into the hole); where t
   sees no scene surface at all (outside its source frustum), a fixed source
   camera has nothing to add and only inpainting fills, while a moving one
   takes what other frames saw there.
2. **Spatial inpainting** of what no frame saw: OpenCV's Telea inpainting,
   from the background side: known pixels at the hole's border that are much
   nearer than the farthest surface around them (the occluder whose edge
   opened the hole) are not used as sources.
3. **Temporal smoothing** of the inpainted pixels only (a forward–backward
   exponential filter over frames, where consecutive frames are both
   inpainted), so the invented content does not flicker.

Known pixels of the render are never changed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import check

from .sources import MeshCache, frame_offsets, select_sources

__all__ = ["ClassicalFillConfig", "classical_fill", "reproject_and_inpaint", "smooth_inpainted", "smoothing_margin",
           "frame_offsets"]


@dataclass(frozen=True)
class ClassicalFillConfig:
    """Options of the classical fill (saved in config.json)."""

    window: int = 4               #: farthest frame offset used for temporal reprojection (0 disables it)
    depth_tolerance: float = 0.02  #: a candidate may be this much (relative) in front of t's surface
    inpaint_radius: int = 5       #: OpenCV inpainting radius in pixels
    smooth: float = 0.6           #: temporal smoothing weight of the neighbour frame for inpainted pixels (0–1)
    keyframes: int = 4            #: moving source camera: keyframes of the whole clip consulted per frame (0: none)

    def __post_init__(self):
        check(self.window >= 0, f"fill window must be ≥ 0 frames, got {self.window}")
        check(0 <= self.depth_tolerance < 1, f"depth tolerance must be in [0, 1), got {self.depth_tolerance}")
        check(self.inpaint_radius >= 1, f"inpaint radius must be ≥ 1 px, got {self.inpaint_radius}")
        check(0 <= self.smooth < 1, f"smooth must be in [0, 1), got {self.smooth}")
        check(self.keyframes >= 0, f"fill keyframes must be ≥ 0, got {self.keyframes}")

    def to_dict(self) -> dict:
        return asdict(self)


def _foreground_near_holes(hole: np.ndarray, depth: np.ndarray, window: int, ratio: float) -> np.ndarray:
    """Known pixels [H, W] bool next to ``hole`` that are much nearer than the farthest known surface around them.

    Disocclusions open *behind* foreground objects, so their content continues the background: these
    pixels are kept out of the inpainting sources (they stay in the output unchanged).
    """
    import cv2

    d = np.where(np.isfinite(depth) & ~hole, depth, 0).astype(np.float32)
    kernel = np.ones((window, window), np.uint8)
    far = cv2.dilate(d, kernel)
    near_hole = cv2.dilate(hole.astype(np.uint8), kernel).astype(bool) & ~hole
    return near_hole & (d > 0) & (d < ratio * far)


def _inpaint(color: np.ndarray, hole: np.ndarray, radius: int, depth: np.ndarray | None = None,
             window: int = 15, ratio: float = 0.85) -> np.ndarray:
    """Telea inpainting of uint8 [H, W, 3] ``color`` where bool [H, W] ``hole``, from the background side.

    With ``depth`` [H, W] (the render's scene depth, inf where none), known
    foreground pixels bordering the hole are not used as sources.
    """
    import cv2

    if not hole.any():
        return color
    if hole.all():
        return np.full_like(color, 127)
    sources_out = hole
    if depth is not None:
        fg = _foreground_near_holes(hole, depth, window, ratio)
        if (~(hole | fg)).any():
            sources_out = hole | fg
    filled = cv2.inpaint(color, sources_out.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    out = color.copy()
    out[hole] = filled[hole]
    return out


def smooth_inpainted(out: np.ndarray, inpainted: np.ndarray, weight: float) -> np.ndarray:
    """``out`` [T,H,W,3] uint8 filtered over time (forward, then backward exponential) on pixels inpainted in both frames.

    ``inpainted`` [T, H, W] bool; ``weight`` in [0, 1) is the neighbour frame's
    share. A frame's result depends on frames k away with weight ≤ weight^k,
    so a clip can be smoothed chunk by chunk with :func:`smoothing_margin`
    frames of context on each side. Works in float32 on the pixels inpainted
    in some frame only (the others come back unchanged).
    """
    T = out.shape[0]
    if weight <= 0 or T < 2:
        return out
    cols = np.flatnonzero(inpainted.reshape(T, -1).any(axis=0))  # pixels inpainted in some frame
    if cols.size == 0:
        return out
    x = out.reshape(T, -1, 3)[:, cols].astype(np.float32)  # [T, n, 3]
    inp = inpainted.reshape(T, -1)[:, cols]
    # pixels inpainted in frames t−1 and t, as indices: gathers touch only them (as fast as whole-frame
    # arithmetic when nearly everything is inpainted, ~4× faster at the usual quarter of the frame)
    both = [None] + [np.flatnonzero(inp[t] & inp[t - 1]) for t in range(1, T)]
    for order, step in ((range(1, T), -1), (range(T - 2, -1, -1), 1)):  # forward, then backward
        for t in order:
            i = both[max(t, t + step)]
            if i.size:
                x[t, i] = (1 - weight) * x[t, i] + weight * x[t + step, i]
    np.add(x, 0.5, out=x)
    np.clip(x, 0, 255, out=x)
    res = out.copy()
    res.reshape(T, -1, 3)[:, cols] = x.astype(np.uint8)
    return res


_smooth = smooth_inpainted  # the name the tests use


def smoothing_margin(weight: float, tolerance: float = 1e-4) -> int:
    """Frames of context on each side after which :func:`smooth_inpainted` changes a value by < ``tolerance`` levels."""
    if weight <= 0:
        return 0
    return int(min(1024, np.ceil(np.log(tolerance / 255.0) / np.log(weight))))


def classical_fill(color: np.ndarray, mask: np.ndarray, view_depth: np.ndarray | None = None,
                   frames: np.ndarray | None = None, depth: np.ndarray | None = None, K: np.ndarray | None = None,
                   w2c: np.ndarray | None = None, K_out: np.ndarray | None = None, recon_config=None,
                   config: ClassicalFillConfig | None = None, progress: bool = True,
                   w2c_src: np.ndarray | None = None, return_reprojected: bool = False, far: float | None = None):
    """Completed video [T, H, W, 3] uint8 that equals ``color`` wherever ``mask`` is True.

    With ``return_reprojected`` also the [T, H, W] bool pixels filled from other frames (pass 1).

    Args:
        color: [T, H, W, 3] uint8 novel-view render (0 where unknown).
        mask: [T, H, W] bool, True = known.
        view_depth: [T, H, W] float32 depth of each render's nearest scene surface (inf: none).
        frames, depth, K: the source frames [T,H,W,3] uint8, their z-depth [T,H,W] and intrinsics [3,3].
        w2c, K_out: the output cameras [T,4,4], each relative to its frame's source camera (what the
            recon rendered), and intrinsics [T,3,3].
        recon_config: the ReconConfig used for the render (meshes are rebuilt the same way).
        w2c_src: the source camera poses [T,4,4] (world = frame 0); None or all identity = a tripod.
        frames, depth and w2c_src are read one frame at a time (``frames[s]``), so lazy sequences work.
        far: the render's DW-Mesh far depth (default: from ``depth``, as the recon computes it).
        Temporal reprojection runs only when all of view_depth … K_out are given.

    :func:`reproject_and_inpaint` then :func:`smooth_inpainted`; for clips too
    long to hold, ``ex4d.streaming`` runs the two chunk by chunk.
    """
    config = config or ClassicalFillConfig()
    out, inpainted, reprojected = reproject_and_inpaint(color, mask, view_depth, frames, depth, K, w2c, K_out,
                                                        recon_config, config, progress, w2c_src=w2c_src, far=far)
    out = smooth_inpainted(out, inpainted, config.smooth)
    known = mask.astype(bool)
    out[known] = color[known]
    return (out, reprojected) if return_reprojected else out


def reproject_and_inpaint(color, mask, view_depth=None, frames=None, depth=None, K: np.ndarray | None = None,
                          w2c: np.ndarray | None = None, K_out: np.ndarray | None = None, recon_config=None,
                          config: ClassicalFillConfig | None = None, progress: bool = True,
                          w2c_src: np.ndarray | None = None, far: float | None = None,
                          targets: range | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Passes 1 and 2 of the fill: (filled [N, H, W, 3] uint8, inpainted [N, H, W] bool, reprojected [N, H, W] bool).

    Arguments as :func:`classical_fill`; every clip-sized argument (color, mask, view_depth, frames, depth,
    w2c_src) may be an array-like read per frame (``a[t]``, ``a[t0:t1]``, ``.shape``), e.g. a run's chunked
    caches. ``targets`` (a range of consecutive frames, default: all) are the N frames filled; the others
    are consulted as sources only, so a long clip filled chunk by chunk gives the whole-clip pixels.
    ``inpainted`` marks what pass 2 invented, ``reprojected`` what pass 1 took from other frames.
    """
    config = config or ClassicalFillConfig()
    check(color.ndim == 4 and color.shape[-1] == 3 and color.dtype == np.uint8,
          f"color must be [T, H, W, 3] uint8, got {color.shape} {color.dtype}")
    check(tuple(mask.shape) == tuple(color.shape[:3]),
          f"mask must be [T, H, W] = {list(color.shape[:3])}, got {list(mask.shape)}")
    T, H, W = color.shape[:3]
    targets = range(T) if targets is None else targets
    check(isinstance(targets, range) and targets.step == 1 and 0 <= targets.start <= targets.stop <= T,
          f"targets must be a range of consecutive frames within [0, {T}), got {targets}")
    t0 = targets.start
    out = np.array(color[targets.start:targets.stop])
    known = np.asarray(mask[targets.start:targets.stop]).astype(bool)
    vdepth = None if view_depth is None else np.asarray(view_depth[targets.start:targets.stop])  # read once
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(targets), desc="fill: reproject", unit="frame", leave=False)  # then: inpaint

    can_reproject = all(x is not None for x in (view_depth, frames, depth, K, w2c, K_out)) and config.window > 0
    moving = w2c_src is not None and not np.allclose(w2c_src, np.eye(4), atol=1e-9)
    if can_reproject:
        from ..dwmesh import build_dwmesh, default_far
        from ..recon import ReconConfig
        from ..render import default_backend, render_mesh

        rc = recon_config or ReconConfig()
        far = default_far(np.asarray(depth), rc.mesh.far_scale) if far is None else float(far)
        backend = rc.backend or default_backend()

        mesh = MeshCache(lambda s: build_dwmesh(frames[s], depth[s], K, far=far, config=rc.mesh),
                         capacity=2 * config.window + 2 + (2 * config.keyframes if moving else 0))
        scene_depth = float(np.median(np.asarray(depth[0])))

    filled_from_video = np.zeros_like(known)
    for t in targets:
        i = t - t0
        if can_reproject and not known[i].all():
            hole = ~known[i]
            best = np.full((H, W), -np.inf, dtype=np.float32)
            filled_near = filled_from_video[i].copy()
            vdt = vdepth[i]
            # a moving camera's other frames saw beyond t's source frustum (no surface of t there: inf)
            vd = np.where(np.isfinite(vdt), vdt, 0.0) if moving else vdt
            for s, w2c_s, is_kf in select_sources(t, T, config.window, w2c[t], w2c_src if moving else None,
                                                  scene_depth, config.keyframes):
                if is_kf and not (hole & ~filled_from_video[i]).any():
                    continue
                r = render_mesh(mesh(s), K_out[t], w2c_s, H, W, backend=backend, near=rc.near)
                ok = hole & r.mask & (r.depth >= vd * (1 - config.depth_tolerance))
                if is_kf:  # keyframes only where no temporal neighbour (the same moment) saw anything
                    ok &= ~filled_near
                # the farthest candidate wins: background is what disocclusions reveal, and it rarely moves
                ok &= r.depth > best
                if ok.any():
                    out[i][ok] = np.clip(r.color[ok] * 255 + 0.5, 0, 255).astype(np.uint8)
                    best[ok] = r.depth[ok]
                    filled_from_video[i] |= ok
                if not is_kf:
                    filled_near = filled_from_video[i].copy()
        if bar is not None:
            bar.update(1)
    inpainted = ~(known | filled_from_video)

    def inpaint_frame(i: int) -> None:
        out[i] = _inpaint(out[i], inpainted[i], config.inpaint_radius, None if vdepth is None else vdepth[i])

    # frames are independent and OpenCV releases the GIL: one thread per core (same result as a loop)
    if bar is not None:
        bar.set_description("fill: inpaint")
    with ThreadPoolExecutor(max_workers=max(1, min(len(targets), os.cpu_count() or 1))) as pool:
        for _ in pool.map(inpaint_frame, range(len(targets))):
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out, inpainted, filled_from_video
