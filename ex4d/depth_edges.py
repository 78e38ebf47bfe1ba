"""Depth edges of a DW-Mesh: the ``step`` occlusion criterion, the frame's noise level, denoising and depth-edge
sharpening (``snap``, ours; ``median``, the bilateral-median baseline) — numba CPU kernels. The torch twin
(:mod:`ex4d.render.torch_edges`) gives the same results bit for bit.

Everything runs on disparity δ = 1/z, where a plane is *linear* in the pixel coordinates: a plane seen at any
angle has a constant first difference and a vanishing second difference; a depth step has neither.

Noise level (:func:`noise_level`)
---------------------------------
σ̂ = median over a 4-pixel lattice of min(|δ(u−1,v) − 2δ + δ(u+1,v)|, |δ(u,v−1) − 2δ + δ(u,v+1)|) / δ,
divided by 0.3755·√6 (for white relative noise of std σ that median is 0.3755·√6·σ; planes contribute 0, and
the min of the two directions ignores pixels beside straight edges). Exact depth gives σ̂ ≈ 0.

Denoising (``denoise``): from σ̂ ≥ 0.1 % one 3×3 median of the disparity, from σ̂ ≥ 0.4 % two (a median keeps
planes and steps where they are); σ̂ is then measured again, but kept at least 0.45·σ̂ (one pass) or 0.35·σ̂
(two), the per-pixel share of white noise a 3×3 median leaves (its leftover noise is correlated, which the
lattice statistic under-reads).

The ``step`` criterion (:func:`step_flags`)
-------------------------------------------
For every pixel edge p → q = p + e (e one pixel right or down) with the pixels p − e and q + e beyond it
(replicated at the border): the jump j = δ_q − δ_p and the slopes s₋ = δ_p − δ_{p−e},
s₊ = δ_{q+e} − δ_q on either side. A continuous surface — a plane at any angle, a crease, a curved surface up to a sphere's limb —
has its jump between the slopes beside it; a depth step jumps past both. With m = min(δ_p, δ_q), the floor
F = tan(step_min_deg)/f + step_noise·σ̂ and the ceiling C = tan(step_max_deg)/f + step_noise·σ̂ (f = fx for
horizontal edges, fy for vertical ones):

* pass 1 breaks the edge when the excess x = max(j − max(s₋, s₊), min(s₋, s₊) − j, 0) satisfies
  x > step_ratio·|j| and x > F·m (a real share of the jump, at least ``step_min_deg`` steep in the source's
  view, well above the noise), or when |j| > C·m (steeper than ``step_max_deg``: too steep to be sampled);
* pass 2 revisits the edges pass 1 kept: a slope across a pass-1 break explains nothing, so with one usable
  slope s the edge breaks when e = |j − s| > F·m and e > step_like·max(|j|, |s|) (a limb's last faces grow by
  at most ~2.4× a pixel; a one-pixel sliver between two steps does not continue its neighbour), and with
  none when |j| > F·m.

A grid face is occluded when one of its horizontal or vertical edges breaks (every split of a triangle's corners
into two sides crosses one).

Sharpening (:mod:`ex4d.depth_snap`)
-----------------------------------
``snap`` (ours) straightens estimators' soft ramps into steps where the colour changes, and says whether the
frame's depth is *soft* (most of its steps are ramps); on soft frames (``soft_mode="auto"``) the step criterion
is joined by the grazing test on the sharpened depth. ``median`` is 3D-photo inpainting's bilateral median.
:func:`prepare_depth` runs noise estimation, denoising and the sharpening in that order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .depth_snap import SOFT_SHARE, median_depth, snap_depth

__all__ = ["NOISE_SCALE", "noise_level", "median3", "step_floors", "step_flags", "denoise_passes", "prepare_depth",
           "guard_faces"]

#: median of min(|N(0, 6σ²)|, |N(0, 6σ²)|) / σ: turns the lattice statistic into σ̂.
NOISE_SCALE = 0.3755 * math.sqrt(6.0)
#: denoising: one 3×3 median of the disparity from σ̂ ≥ NOISE_MIN, two from σ̂ ≥ NOISE_STRONG.
NOISE_MIN = 0.001
NOISE_STRONG = 0.004
#: per-pixel noise a 3×3 median leaves of white noise (std ratio), after 1 and 2 passes.
MEDIAN_LEFT = {1: 0.45, 2: 0.35}


@njit(cache=True)
def _noise_samples(inv):  # pragma: no cover - compiled
    """The noise statistic at the lattice pixels (2 + 4i, 2 + 4j), [n] float64."""
    H, W = inv.shape
    ni = max((H - 3) // 4 + 1, 0) if H >= 3 else 0
    nj = max((W - 3) // 4 + 1, 0) if W >= 3 else 0
    out = np.empty(ni * nj)
    k = 0
    for a in range(ni):
        i = min(2 + 4 * a, H - 2)
        for b in range(nj):
            j = min(2 + 4 * b, W - 2)
            c = inv[i, j]
            dx = abs((inv[i, j - 1] - 2.0 * c) + inv[i, j + 1])
            dy = abs((inv[i - 1, j] - 2.0 * c) + inv[i + 1, j])
            out[k] = min(dx, dy) / c
            k += 1
    return out


def noise_level(inv: np.ndarray) -> float:
    """σ̂ (relative depth noise, see the module docstring) of disparity [H, W] float64; 0 below 3×3 pixels."""
    s = _noise_samples(np.ascontiguousarray(inv, dtype=np.float64))
    if s.size == 0:
        return 0.0
    return float(np.partition(s, (s.size - 1) // 2)[(s.size - 1) // 2]) / NOISE_SCALE


@njit(cache=True, inline="always")
def _first_pass(pm, p, q, qp, ratio, floor, ceil):  # pragma: no cover - compiled
    """Pass 1 of one edge p → q (with p − e, q + e): the jump lies past both slopes beside it, or is too steep
    to be a sampled surface."""
    jd = q - p
    sb = p - pm
    sa = qp - q
    x = max(jd - max(sb, sa), min(sb, sa) - jd, 0.0)
    m = min(p, q)
    return (x > ratio * abs(jd) and x > floor * m) or abs(jd) > ceil * m


@njit(cache=True, inline="always")
def _second_pass(pm, p, q, qp, ok_b, ok_a, like, floor):  # pragma: no cover - compiled
    """Pass 2 of an edge that pass 1 kept: slopes across a break (ok_* False) explain nothing."""
    if ok_b and ok_a:
        return False
    jd = q - p
    f = floor * min(p, q)
    if not ok_b and not ok_a:
        return abs(jd) > f
    s = p - pm if ok_b else qp - q
    e = abs(jd - s)
    return e > f and e > like * max(abs(jd), abs(s))


@njit(parallel=True, cache=True)
def _step_faces(inv, tx, ty, cx, cy, ratio, like):  # pragma: no cover - compiled
    """Occluded flags [2, H−1, W−1] of the grid faces (see the module docstring); tx, ty: relative floors."""
    H, W = inv.shape
    h1 = np.zeros((H, W - 1), dtype=np.bool_)
    v1 = np.zeros((H - 1, W), dtype=np.bool_)
    for i in prange(H):
        for j in range(W - 1):
            h1[i, j] = _first_pass(inv[i, max(j - 1, 0)], inv[i, j], inv[i, j + 1], inv[i, min(j + 2, W - 1)],
                                   ratio, tx, cx)
        if i < H - 1:
            for j in range(W):
                v1[i, j] = _first_pass(inv[max(i - 1, 0), j], inv[i, j], inv[i + 1, j], inv[min(i + 2, H - 1), j],
                                       ratio, ty, cy)
    h2 = h1.copy()
    v2 = v1.copy()
    for i in prange(H):
        for j in range(W - 1):
            if not h1[i, j]:
                h2[i, j] = _second_pass(inv[i, max(j - 1, 0)], inv[i, j], inv[i, j + 1], inv[i, min(j + 2, W - 1)],
                                        j == 0 or not h1[i, j - 1], j == W - 2 or not h1[i, j + 1], like, tx)
        if i < H - 1:
            for j in range(W):
                if not v1[i, j]:
                    v2[i, j] = _second_pass(inv[max(i - 1, 0), j], inv[i, j], inv[i + 1, j],
                                            inv[min(i + 2, H - 1), j], i == 0 or not v1[i - 1, j],
                                            i == H - 2 or not v1[i + 1, j], like, ty)
    out = np.empty((2, H - 1, W - 1), dtype=np.bool_)
    for i in prange(H - 1):
        for j in range(W - 1):
            out[0, i, j] = h2[i, j] or v2[i, j]
            out[1, i, j] = v2[i, j + 1] or h2[i + 1, j]
    return out


def step_floors(K: np.ndarray, config, sigma: float) -> tuple[float, float, float, float]:
    """(tx, ty, cx, cy): the step criterion's relative floors and ceilings along x and y (intrinsics K,
    noise level σ̂)."""
    t = math.tan(math.radians(config.step_min_deg))
    c = math.tan(math.radians(config.step_max_deg))
    fx, fy = float(K[0, 0]), float(K[1, 1])
    n = config.step_noise * sigma
    return t / fx + n, t / fy + n, c / fx + n, c / fy + n


def step_flags(inv: np.ndarray, K: np.ndarray, config, sigma: float) -> np.ndarray:
    """Occluded flags [2·(H−1)·(W−1)] bool of the grid faces of disparity [H, W] float64 (``step`` criterion)."""
    tx, ty, cx, cy = step_floors(K, config, sigma)
    return _step_faces(np.ascontiguousarray(inv, dtype=np.float64), tx, ty, cx, cy, float(config.step_ratio),
                       float(config.step_like)).reshape(-1)


@njit(parallel=True, cache=True)
def median3(depth):  # pragma: no cover - compiled
    """3×3 median [H, W] float64 of [H, W] float64, borders replicated (exact: no arithmetic).

    A 19-exchange selection network (Paeth) per pixel: no sorting, no allocation.
    """
    H, W = depth.shape
    out = np.empty((H, W))
    for i in prange(H):
        i0 = max(i - 1, 0)
        i2 = min(i + 1, H - 1)
        for j in range(W):
            j0 = max(j - 1, 0)
            j2 = min(j + 1, W - 1)
            p0 = depth[i0, j0]; p1 = depth[i0, j]; p2 = depth[i0, j2]
            p3 = depth[i, j0]; p4 = depth[i, j]; p5 = depth[i, j2]
            p6 = depth[i2, j0]; p7 = depth[i2, j]; p8 = depth[i2, j2]
            p1, p2 = min(p1, p2), max(p1, p2)
            p4, p5 = min(p4, p5), max(p4, p5)
            p7, p8 = min(p7, p8), max(p7, p8)
            p0, p1 = min(p0, p1), max(p0, p1)
            p3, p4 = min(p3, p4), max(p3, p4)
            p6, p7 = min(p6, p7), max(p6, p7)
            p1, p2 = min(p1, p2), max(p1, p2)
            p4, p5 = min(p4, p5), max(p4, p5)
            p7, p8 = min(p7, p8), max(p7, p8)
            p3 = max(p0, p3)
            p5 = min(p5, p8)
            p4, p7 = min(p4, p7), max(p4, p7)
            p6 = max(p3, p6)
            p4 = max(p1, p4)
            p2 = min(p2, p5)
            p4 = min(p4, p7)
            p4, p2 = min(p4, p2), max(p4, p2)
            p4 = max(p6, p4)
            out[i, j] = min(p4, p2)
    return out


def denoise_passes(sigma: float) -> int:
    """3×3 median passes for noise level σ̂: 0 below NOISE_MIN, 1 below NOISE_STRONG, else 2."""
    return 0 if sigma < NOISE_MIN else (1 if sigma < NOISE_STRONG else 2)


def prepare_depth(depth: np.ndarray, rgb: np.ndarray | None, config):
    """(mesh z-depth [H, W] float64, its disparity [H, W] float64, σ̂, guard [H, W] bool or None, soft: bool) of
    a frame, denoised and sharpened as ``config`` says; faces touching a guard pixel are occluded whatever the
    criterion, and ``soft`` says that the depth's steps are mostly ramps (an estimate's soft edges).

    Where the denoising and sharpening leave a pixel as it was, the mesh depth is the input depth exactly.
    """
    d64 = np.ascontiguousarray(depth, dtype=np.float64)
    inv = 1.0 / d64
    sigma = noise_level(inv)
    mode = config.sharpen_mode
    if mode == "none":
        return d64, inv, sigma, None, False
    new = inv
    passes = denoise_passes(sigma) if config.denoise else 0
    for _ in range(passes):
        new = median3(new)
    if passes:
        # the medians' leftover noise is correlated, which the lattice statistic under-reads: keep at least the
        # per-pixel share a 3×3 median leaves of white noise
        sigma = max(noise_level(new), MEDIAN_LEFT[passes] * sigma)
    guard, softness = None, 0.0
    if mode == "snap":
        new, guard, softness = snap_depth(new, rgb, config, sigma)
    else:
        new = median_depth(new)
    changed = new != inv
    d_out = np.where(changed, 1.0 / new, d64)
    return d_out, np.where(changed, new, inv), sigma, guard, softness >= SOFT_SHARE


def guard_faces(guard: np.ndarray) -> np.ndarray:
    """Flags [2·(H−1)·(W−1)] bool: grid faces with a corner on a guard pixel [H, W]."""
    a, b, c, d = guard[:-1, :-1], guard[:-1, 1:], guard[1:, :-1], guard[1:, 1:]
    return np.stack([c | a | b, c | b | d]).reshape(-1)
