"""The lifted scene: finished output frames lifted back into 3D, so what was generated can be shown again.

A novel-view render knows the depth of its known pixels exactly (the DW-Mesh's
z-buffer); the fill (classical or diffusion) invents colour for the rest but no
depth. Lifting completes that depth and builds the frame's own DW-Mesh, so the
generated content becomes geometry that later windows, the second eye of a
stereo pair and the exported 4D assets can render from any camera.

Depth completion (:func:`complete_depth`)
-----------------------------------------
Generated pixels are mostly *disocclusions*: background that a foreground
object hid from the source camera. Their depth continues the far side of the
hole, not the occluder's:

1. Known pixels bordering a hole that are much nearer than the hole's far side
   (``< fg_ratio ×`` the largest border depth reachable across the hole, by a
   path as long as the hole is wide there) are the occluder whose edge opened it
   (:func:`foreground_near_holes`). They are not used as sources: the hole
   meets them with a free boundary, so nothing of the occluder's depth enters.
2. ``completion="background"`` (weight-free): the hole's inverse depth is the
   smoothest continuation of the remaining border (:func:`smooth_fill`: least
   squared second differences, solved on a coarse grid and refined to the
   border at full resolution). Inverse depth is linear on planes, so a wall or
   floor behind the occluder continues as the same plane, also towards a free
   side (the image border, the occluder).
   ``completion="guide"``: a depth estimate of the output frame (a depth
   model's, any affine-invariant scale) is aligned to the measured pixels by a
   robust scale + shift in inverse depth (:func:`ex4d.depth.align.fit_pair`);
   its residual against the measured inverse depth is interpolated into the
   hole as in 2 and subtracted, so the completed depth keeps the estimate's
   shape inside the hole and meets the background without a step at its border.
3. Where the render had an *occluding* surface in front of the hole (its
   ``render_depth`` is finite: a face across a depth discontinuity), the
   completed surface is kept at least that far: what the hole shows lies behind
   the occluder.

Compositing (:func:`render_lifted`)
-----------------------------------
Each lifted frame's DW-Mesh (built as in the recon, with its faces across depth
discontinuities flagged occluded) is rendered with the asked camera; per pixel
the nearest *valid* surface of any lifted frame wins. An occluded face of one
lifted frame does not hide another frame's observation: it is only what that
frame did not see.

Frames: world coordinates are whatever frame the caller's ``w2c`` are in (the
source camera of a tripod clip; source frame 0 with estimated source poses).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .cameras import check_intrinsics, check_w2c, invert_w2c
from .dwmesh import DWMesh, MeshConfig, build_dwmesh
from .errors import Ex4dError, check

__all__ = ["LiftConfig", "LiftedFrame", "LiftRender", "COMPLETIONS", "complete_depth", "foreground_near_holes",
           "smooth_fill", "lift_frame", "lifted_mesh", "render_lifted", "save_lifted", "load_lifted"]

COMPLETIONS = ("background", "guide")


@dataclass(frozen=True)
class LiftConfig:
    """How output frames are lifted (saved in config.json)."""

    completion: str = "background"   #: background (weight-free) | guide (an aligned depth estimate)
    mesh: MeshConfig = field(default_factory=MeshConfig)  #: DW-Mesh filter of the lifted meshes
    depth_tolerance: float = 0.02    #: relative depth slack when comparing surfaces
    fg_reach: int = 256              #: px: how far across a hole its far (background) side is looked for at most
    fg_ratio: float = 0.85           #: a pixel nearer than this × the hole's far side is the occluder's

    def __post_init__(self):
        check(self.completion in COMPLETIONS,
              f"unknown depth completion {self.completion!r}; choose one of {', '.join(COMPLETIONS)}")
        check(isinstance(self.mesh, MeshConfig), "LiftConfig.mesh must be a MeshConfig")
        check(0 <= self.depth_tolerance < 1, f"depth_tolerance must be in [0, 1), got {self.depth_tolerance}")
        check(self.fg_reach >= 1, f"fg_reach must be ≥ 1 px, got {self.fg_reach}")
        check(0 < self.fg_ratio <= 1, f"fg_ratio must be in (0, 1], got {self.fg_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LiftConfig":
        d = dict(d)
        d["mesh"] = MeshConfig(**d.get("mesh", {}))
        return cls(**d)


@dataclass(frozen=True)
class LiftedFrame:
    """One finished output frame lifted into 3D.

    ========  ==================  ===========================================================
    field     shape, dtype        meaning
    ========  ==================  ===========================================================
    rgb       [H, W, 3] uint8     the finished output frame
    depth     [H, W] float32      z-depth in this frame's camera, finite and > 0 everywhere
    measured  [H, W] bool         True where depth is the render's z-buffer (its known pixels)
    K         [3, 3] float64      intrinsics of the output frame
    w2c       [4, 4] float64      OpenCV world-to-camera of the output frame
    ========  ==================  ===========================================================
    """

    rgb: np.ndarray
    depth: np.ndarray
    measured: np.ndarray
    K: np.ndarray
    w2c: np.ndarray

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])


@dataclass(frozen=True)
class LiftRender:
    """The lifted frames seen from one camera.

    ======  =================  ==========================================================
    field   shape, dtype       meaning
    ======  =================  ==========================================================
    color   [H, W, 3] uint8    RGB, 0 where ``mask`` is False
    mask    [H, W] bool        True = a lifted frame's valid surface is the nearest there
    depth   [H, W] float32     z-depth of that surface in the asked camera, inf where none
    source  [H, W] int32       index into the lifted frames of the frame shown, −1 where none
    ======  =================  ==========================================================
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    source: np.ndarray


# ---------------------------------------------------------------------------------------------- depth completion

def foreground_near_holes(hole: np.ndarray, depth: np.ndarray, reach: int = 256, ratio: float = 0.85) -> np.ndarray:
    """Known pixels [H, W] bool on the border of ``hole`` that belong to the occluder whose edge opened it.

    Args:
        hole: [H, W] bool, pixels to be completed.
        depth: [H, W] float z-depth (non-finite where there is none).
        reach: px; the hole's far side is looked for at most this far across it.
        ratio: a border pixel is foreground when its depth is below ``ratio`` ×
            the farthest border depth reachable from it across the hole.

    Disocclusions open *behind* foreground objects, so their content continues
    the background: these pixels should not seed a hole's completion. The far
    reference of a border pixel is the largest border depth reachable by a path
    *through the hole* (not along its border, where a slanted floor would pass
    for a step) whose length matches the hole's local width: the smallest of
    8, 16, 32, … px that is at least 2.2 × the largest distance to the hole's
    border found within that radius. So a hole between a box and the wall
    behind it compares the box's edge with the wall on its other side, and a
    long narrow hole does not compare a floor's near end with its far end.
    """
    import cv2

    finite = np.isfinite(depth)
    kernel = np.ones((3, 3), np.uint8)
    border = _dilate(hole) & ~hole & finite
    if not border.any():
        return np.zeros_like(hole)
    dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    edge = np.where(border, depth, 0).astype(np.float32)
    far = np.zeros_like(edge)
    ref = np.zeros_like(edge)
    chosen = ~border
    step, r = 0, 8
    while not chosen.all():
        while step < r:
            nxt = np.where(hole, cv2.dilate(np.maximum(far, edge), kernel), 0)
            step += 1
            if np.array_equal(nxt, far):
                step = r
                break
            far = nxt
        width = cv2.dilate(dist, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        take = ~chosen & ((r >= 2.2 * width) | (r >= reach))
        ref[take] = cv2.dilate(far, kernel)[take]
        chosen |= take
        r *= 2
    return border & (depth < ratio * ref)


def _dilate(x: np.ndarray) -> np.ndarray:
    """3×3 dilation (maximum) of a bool or float32 [H, W] image."""
    import cv2

    if x.dtype == bool:
        return cv2.dilate(x.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return cv2.dilate(x, np.ones((3, 3), np.uint8))


def _push_pull(values: np.ndarray, src: np.ndarray) -> np.ndarray:
    """[H, W] float32 smooth interpolation of ``values`` at bool ``src`` pixels to every pixel (push–pull).

    Normalised-convolution pyramid (Gortler et al., "The Lumigraph", 1996): weights and weighted values are
    reduced until every pixel of the coarsest level has support, then expanded back, each level keeping its
    own data where it has full weight.
    """
    import cv2

    w = [src.astype(np.float32)]
    v = [np.where(src, values, 0).astype(np.float32)]
    while min(w[-1].shape) > 2 and not (w[-1] > 1e-6).all():
        w.append(cv2.pyrDown(w[-1]))
        v.append(cv2.pyrDown(v[-1]))
    est = np.where(w[-1] > 1e-6, v[-1] / np.maximum(w[-1], 1e-6), float(values[src].mean()))
    for lvl in range(len(w) - 2, -1, -1):
        h, wd = w[lvl].shape
        up = cv2.pyrUp(est.astype(np.float32), dstsize=(wd, h))
        k = np.minimum(w[lvl], 1.0)
        est = (v[lvl] + (1.0 - k) * up) / (w[lvl] + (1.0 - k))
    return est.astype(np.float32)


def _smooth_solve(values: np.ndarray, src: np.ndarray, fill: np.ndarray, x0: np.ndarray,
                  ridge: float = 1e-9, tension: float = 1e-6) -> np.ndarray:
    """``fill`` values [n] minimising Σ second differences² + tension·Σ first differences² + ridge·|x − x0|².

    Second differences along rows and columns over triples of ``src`` ∪ ``fill`` pixels (``src`` fixed):
    zero on any plane, so planes are continued exactly and extrapolated where the hole has a free side.
    The small first-difference and ridge terms make the system positive definite (a hole part no triple
    reaches stays at ``x0``). Solved directly (SciPy's sparse LU).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    H, W = values.shape
    n = int(fill.sum())
    index = np.full((H, W), -1, dtype=np.int64)
    index[fill] = np.arange(n)
    usable = src | fill
    rows, cols, vals, rhs = [], [], [], []
    eq = 0
    for stencil, weight in ((((0, -1), (0, 0), (0, 1)), (1.0, -2.0, 1.0)), ((((-1, 0), (0, 0), (1, 0))), (1.0, -2.0, 1.0)),
                            (((0, 0), (0, 1)), (-1.0, 1.0)), (((0, 0), (1, 0)), (-1.0, 1.0))):
        scale = 1.0 if len(stencil) == 3 else np.sqrt(tension)
        ys, xs = np.mgrid[0:H, 0:W]
        ok = np.ones((H, W), bool)
        any_fill = np.zeros((H, W), bool)
        for dy, dx in stencil:
            y2, x2 = ys + dy, xs + dx
            inside = (y2 >= 0) & (y2 < H) & (x2 >= 0) & (x2 < W)
            y2c, x2c = np.clip(y2, 0, H - 1), np.clip(x2, 0, W - 1)
            ok &= inside & usable[y2c, x2c]
            any_fill |= inside & fill[y2c, x2c]
        ok &= any_fill
        ey, ex = np.nonzero(ok)
        m = ey.size
        b = np.zeros(m)
        for (dy, dx), w in zip(stencil, weight):
            j = index[ey + dy, ex + dx]
            known = j < 0
            b -= np.where(known, w * values[ey + dy, ex + dx], 0.0)
            rows.append(eq + np.flatnonzero(~known))
            cols.append(j[~known])
            vals.append(np.full(int((~known).sum()), w * scale))
        rhs.append(b * scale)
        eq += m
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(eq, n))
    b = np.concatenate(rhs)
    N = (A.T @ A + ridge * sp.identity(n)).tocsc()
    return spsolve(N, A.T @ b + ridge * x0)


def smooth_fill(values: np.ndarray, src: np.ndarray, fill: np.ndarray, max_unknowns: int = 25000) -> np.ndarray:
    """[H, W] float32 ``values`` with ``fill`` pixels replaced by a plane-preserving interpolation from ``src``.

    Pixels that are neither ``src`` nor ``fill`` are left out (a free boundary: nothing is read across them).
    The smooth solve (:func:`_smooth_solve`: least second differences, so planes continue and extend) runs
    on a grid coarse enough to hold at most ``max_unknowns`` unknowns; the full-resolution result is that
    solution upsampled plus the push–pull interpolation of its residual at the sources, so it meets the
    sources exactly.
    """
    import cv2

    values = np.asarray(values, dtype=np.float32)
    out = values.copy()
    if not fill.any() or not src.any():
        return out
    H, W = values.shape
    f = max(1, int(np.ceil(np.sqrt(fill.sum() / max_unknowns))))
    if f == 1:
        x0 = _push_pull(values, src)
        out[fill] = _smooth_solve(values.astype(np.float64), src, fill, x0[fill].astype(np.float64))
        return out
    h, w = -(-H // f), -(-W // f)
    pad = ((0, h * f - H), (0, w * f - W))
    s = np.pad(src, pad).reshape(h, f, w, f).astype(np.float32)
    v = np.pad(np.where(src, values, 0), pad).reshape(h, f, w, f)
    cnt = s.sum((1, 3))
    c_vals = np.where(cnt > 0, v.sum((1, 3)) / np.maximum(cnt, 1), 0).astype(np.float64)
    # a free boundary stays free at the coarse level: blocks touching left-out pixels, and their neighbours,
    # are neither sources nor unknowns (else a coarse triple would read across it)
    excluded = ~(src | fill)
    c_fill = np.pad(fill, pad).reshape(h, f, w, f).any((1, 3))
    c_excl = cv2.dilate(np.pad(excluded, pad).reshape(h, f, w, f).any((1, 3)).astype(np.uint8),
                        np.ones((3, 3), np.uint8)).astype(bool) & ~c_fill
    c_src = (cnt >= 0.5 * f * f) & ~c_excl & ~c_fill
    coarse = c_vals.copy()
    if c_fill.any() and c_src.any():
        x0 = _push_pull(c_vals.astype(np.float32), c_src)
        coarse[c_fill] = _smooth_solve(c_vals, c_src, c_fill, x0[c_fill].astype(np.float64))
    coarse = np.where(c_src | c_fill, coarse, _push_pull(coarse.astype(np.float32), c_src | c_fill))
    up = cv2.resize(coarse.astype(np.float32), (w * f, h * f), interpolation=cv2.INTER_LINEAR)[:H, :W]
    # the residual is read only from sources clear of the free boundary
    clear = src & ~cv2.dilate(excluded.astype(np.uint8), np.ones((2 * f + 3, 2 * f + 3), np.uint8)).astype(bool)
    clear = clear if clear.any() else src
    residual = _push_pull(np.where(clear, values - up, 0).astype(np.float32), clear)
    out[fill] = (up + residual)[fill]
    return out


def complete_depth(depth: np.ndarray, measured: np.ndarray, guide: np.ndarray | None = None,
                   config: LiftConfig | None = None, occluder: np.ndarray | None = None,
                   fallback: float | None = None) -> np.ndarray:
    """Completed z-depth [H, W] float32 (finite, > 0): ``depth`` where ``measured``, background-biased elsewhere.

    Args:
        depth: [H, W] float z-depth; only its ``measured`` pixels are used.
        measured: [H, W] bool, pixels whose depth is known exactly.
        guide: [H, W] float depth estimate of the same view (any scale; required
            for ``completion="guide"``, ignored otherwise).
        config: completion options.
        occluder: [H, W] float, depth of an occluding surface in front of the
            unmeasured pixels (inf where none): completed depth is kept ≥ it.
        fallback: depth used when no pixel is measured (default: the guide's
            median if given, else an error).
    """
    config = config or LiftConfig()
    depth = np.asarray(depth, dtype=np.float32)
    measured = np.asarray(measured, dtype=bool) & np.isfinite(depth) & (depth > 0)
    check(depth.ndim == 2 and measured.shape == depth.shape,
          f"depth [H, W] and measured [H, W] must match, got {depth.shape} and {np.shape(measured)}")
    if guide is not None:
        guide = np.asarray(guide, dtype=np.float32)
        check(guide.shape == depth.shape, f"guide depth must be {list(depth.shape)}, got {list(guide.shape)}")
        check(bool(np.all(np.isfinite(guide)) and guide.min() > 0), "guide depth must be finite and > 0")
    check(config.completion != "guide" or guide is not None,
          "depth completion 'guide' needs a depth estimate of the output frame (guide=...)")
    hole = ~measured
    if not hole.any():
        return depth.copy()
    if not measured.any():
        if config.completion == "guide":
            return guide.copy()
        value = fallback if fallback is not None else (float(np.median(guide)) if guide is not None else None)
        if value is None or not np.isfinite(value) or value <= 0:
            raise Ex4dError("cannot complete the depth of a frame with no known pixel: give a fallback depth")
        out = np.full(depth.shape, value, dtype=np.float32)
    else:
        disp = np.where(measured, 1.0 / np.where(measured, depth, 1.0), 0.0).astype(np.float32)
        if config.completion == "guide":
            from .depth.align import fit_pair

            gdisp = (1.0 / guide).astype(np.float32)
            ab = fit_pair(disp[measured], gdisp[measured])
            alpha, beta = ab if ab is not None else (float(np.median(disp[measured]) / np.median(gdisp)), 0.0)
            aligned = (alpha * gdisp + beta).astype(np.float32)
            residual = np.where(measured, aligned - disp, 0.0).astype(np.float32)
        fg = foreground_near_holes(hole, np.where(measured, depth, np.inf), config.fg_reach, config.fg_ratio)
        sources = measured & ~fg if (measured & ~fg).any() else measured
        if config.completion == "guide":
            filled = aligned - smooth_fill(residual, sources, hole)
        else:
            filled = smooth_fill(disp, sources, hole)
        filled = np.where(measured, disp, filled)
        # inverse depth never reaches 0 or below: keep the completion inside the measured range's far end
        floor = 0.5 * float(disp[measured].min())
        filled = np.maximum(filled, floor)
        out = np.where(measured, depth, 1.0 / filled).astype(np.float32)
    if occluder is not None:
        occ = np.asarray(occluder, dtype=np.float32)
        check(occ.shape == depth.shape, f"occluder depth must be {list(depth.shape)}, got {list(occ.shape)}")
        behind = hole & np.isfinite(occ) & (occ > out)
        out[behind] = occ[behind]
    return out


# ---------------------------------------------------------------------------------------------- lifting

def _one_w2c(w2c) -> np.ndarray:
    w2c = np.asarray(w2c, dtype=np.float64)
    check(w2c.shape == (4, 4), f"w2c must be one [4, 4] matrix, got shape {w2c.shape}")
    return check_w2c(w2c)[0]


def lift_frame(rgb: np.ndarray, render_depth: np.ndarray, known: np.ndarray, K: np.ndarray, w2c: np.ndarray,
               guide: np.ndarray | None = None, config: LiftConfig | None = None,
               fallback: float | None = None) -> LiftedFrame:
    """One finished output frame lifted into 3D.

    Args:
        rgb: [H, W, 3] uint8 finished output frame.
        render_depth: [H, W] float z-depth of the recon's render of this view
            (exact where ``known``; elsewhere the depth of the occluding face, or
            inf where there is no scene surface).
        known: [H, W] bool, the render's mask (True = known).
        K: [3, 3] intrinsics; w2c: [4, 4] OpenCV world-to-camera of the output view.
        guide: [H, W] optional depth estimate of the output frame (``completion="guide"``).
        fallback: depth for a frame with no known pixel (see :func:`complete_depth`).
    """
    config = config or LiftConfig()
    rgb = np.asarray(rgb)
    check(rgb.ndim == 3 and rgb.shape[-1] == 3 and rgb.dtype == np.uint8,
          f"rgb must be [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    render_depth = np.asarray(render_depth, dtype=np.float32)
    check(render_depth.shape == rgb.shape[:2],
          f"render depth must be {list(rgb.shape[:2])} to match the frame, got {list(render_depth.shape)}")
    known = np.asarray(known, dtype=bool)
    check(known.shape == rgb.shape[:2], f"known mask must be {list(rgb.shape[:2])}, got {list(known.shape)}")
    K = check_intrinsics(K)
    w2c = _one_w2c(w2c)
    measured = known & np.isfinite(render_depth) & (render_depth > 0)
    occluder = np.where(~known & np.isfinite(render_depth), render_depth, np.inf)
    depth = complete_depth(render_depth, measured, guide, config, occluder=occluder, fallback=fallback)
    return LiftedFrame(rgb=np.ascontiguousarray(rgb), depth=depth, measured=measured, K=K, w2c=w2c)


def lifted_mesh(frame: LiftedFrame, far: float | None = None, config: LiftConfig | None = None) -> DWMesh:
    """The DW-Mesh of a lifted frame, in that frame's camera coordinates (render it with ``w2c @ inv(frame.w2c)``)."""
    config = config or LiftConfig()
    return build_dwmesh(frame.rgb, frame.depth, frame.K, far=far, config=config.mesh)


def render_lifted(frames: Sequence[LiftedFrame], K: np.ndarray, w2c: np.ndarray, height: int, width: int,
                  config: LiftConfig | None = None, backend: str | None = None,
                  meshes: Sequence[DWMesh] | None = None) -> LiftRender:
    """The lifted frames' valid surfaces seen from camera (K [3,3], w2c [4,4], world frame); nearest wins.

    ``meshes`` (optional, one per frame, from :func:`lifted_mesh`) avoids
    rebuilding the meshes when the same frames are rendered many times.
    """
    from .render import render_mesh
    from .render.numba_raster import quantize_rgb

    config = config or LiftConfig()
    K = check_intrinsics(K)
    w2c = _one_w2c(w2c)
    check(meshes is None or len(meshes) == len(frames),
          f"give one mesh per lifted frame: {len(frames)} frames, {0 if meshes is None else len(meshes)} meshes")
    H, W = int(height), int(width)
    color = np.zeros((H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), dtype=bool)
    depth = np.full((H, W), np.inf, dtype=np.float32)
    source = np.full((H, W), -1, dtype=np.int32)
    shade = np.zeros((H, W, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        mesh = meshes[i] if meshes is not None else lifted_mesh(frame, config=config)
        r = render_mesh(mesh, K, w2c @ invert_w2c(frame.w2c), H, W, backend=backend)
        win = r.mask & (r.depth < depth)
        if not win.any():
            continue
        quantize_rgb(r.color, shade)
        color[win] = shade[win]
        depth[win] = r.depth[win]
        mask |= win
        source[win] = i
    return LiftRender(color=color, mask=mask, depth=depth, source=source)


# ---------------------------------------------------------------------------------------------- files

def save_lifted(path, frames: Sequence[LiftedFrame]) -> None:
    """Write lifted frames (all of one size) to an ``.npz`` atomically."""
    from .io.atomic import atomic_save_npz

    check(len(frames) > 0, "no lifted frames to save")
    shapes = {f.depth.shape for f in frames}
    check(len(shapes) == 1, f"lifted frames of one file must share a size, got {sorted(shapes)}")
    atomic_save_npz(path, compress=True,
                    rgb=np.stack([f.rgb for f in frames]), depth=np.stack([f.depth for f in frames]),
                    measured=np.stack([f.measured for f in frames]), K=np.stack([f.K for f in frames]),
                    w2c=np.stack([f.w2c for f in frames]))


def load_lifted(path) -> list[LiftedFrame]:
    """Lifted frames written by :func:`save_lifted`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("rgb", "depth", "measured", "K", "w2c")}
    except (OSError, ValueError, KeyError) as e:
        raise Ex4dError(f"{path}: not a lifted-scene file written by ex4d ({e})")
    n = arrays["depth"].shape[0]
    return [LiftedFrame(rgb=arrays["rgb"][i], depth=arrays["depth"][i].astype(np.float32),
                        measured=arrays["measured"][i].astype(bool), K=arrays["K"][i].astype(np.float64),
                        w2c=arrays["w2c"][i].astype(np.float64)) for i in range(n)]
