"""Depth edges of a DW-Mesh: the ``step`` occlusion criterion, the frame's noise level, and depth-edge
sharpening (``snap``, ours; ``median``, the bilateral-median baseline) — numba CPU kernels.

Everything runs on disparity δ = 1/z, where a plane is *linear* in the pixel coordinates: a plane seen at any
angle has a constant first difference and a vanishing second difference, a depth step has neither.

Noise level (:func:`noise_level`)
---------------------------------
σ̂ = median over a 4-pixel lattice of min(|δ(u−1,v) − 2δ + δ(u+1,v)|, |δ(u,v−1) − 2δ + δ(u,v+1)|) / δ,
divided by 0.3755·√6 (for white relative noise of std σ that median is 0.3755·√6·σ; planes contribute 0, and
the min of the two directions ignores pixels beside straight edges). Exact depth gives σ̂ ≈ 0.

The ``step`` criterion (:func:`step_flags`)
-------------------------------------------
For every pixel edge p → q = p + e (e one pixel right or down) with the pixels p − e and q + e beyond it
(replicated at the border): the jump j = δ_q − δ_p and the slopes s₋ = δ_p − δ_{p−e}, s₊ = δ_{q+e} − δ_q on
either side. A continuous surface — a plane at any angle, a crease, a curved surface up to a sphere's limb —
has its jump between the slopes beside it; a depth step jumps past both. The excess

    x = max(j − max(s₋, s₊), min(s₋, s₊) − j, 0)

breaks the edge when

    x > step_ratio · |j|   and   x > (tan(step_min_deg) / f + step_noise · σ̂) · min(δ_p, δ_q)

(f = fx for horizontal edges, fy for vertical ones): the excess is a real share of the jump, at least as steep
as ``step_min_deg`` in the source's view, and well above the frame's noise. A grid face is occluded when one of
its horizontal or vertical edges breaks (every split of a triangle's corners into two sides crosses one).

Sharpening (:func:`snap_depth`, :func:`median_depth`)
-----------------------------------------------------
``snap`` (ours) straightens estimators' ramps into steps, placed where the colour changes. It runs along the
rows, then along the columns. On each line, an edge x (between pixels x and x+1, first difference
d_x = δ_{x+1} − δ_x) is a ramp peak when |d_x| is a local maximum; the ramp extends over the neighbouring edges
of the same sign with |d| > 0.15·|d_x|, at most ``snap_reach`` pixels each way, to the shoulder pixels a < b.
With the outer slopes s_a = (δ_a − δ_{a−2}) / 2 and s_b = (δ_{b+2} − δ_b) / 2, the ramp is a step when

    |δ_b − δ_a − (b − a)·(s_a + s_b)/2| > (snap_min_step + step_noise·σ̂)·min(δ_a, δ_b)   and
    |d_x| > 3·max(|s_a|, |s_b|)

(a plane has neither). Its zone [a − c, b + c] (c = ``snap_color_px``) is split in two at the k that minimises

    Σ_{p ≤ k} ‖I_p − I_A‖₁ + Σ_{p > k} ‖I_p − I_B‖₁ + 12·|k − k₀|

(I_A, I_B: the colours one pixel outside the zone; k₀: the depth's own split, the last pixel nearer δ_a than
δ_b; 12 per pixel in 8-bit RGB units keeps texture from moving an edge that colour does not support), and the
zone's pixels take the depth extrapolated from their side: δ_a + (p − a)·s_a for p ≤ k, δ_b + (p − b)·s_b
beyond. Pixels of overlapping zones follow the nearest peak. Exact steps (no ramp, colour edge in place) stay.

``median`` is the baseline of 3D-photo inpainting (Shih et al., CVPR 2020, after Ma et al., ICCV 2013),
made scale-free: five passes (windows 7, 7, 5, 5, 5); each marks the pixels beside an edge whose disparity
changes by more than 4 % of its own (|Δδ| / δ > 0.04), and replaces every pixel whose window holds marked
pixels by the median of the window's unmarked ones.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["NOISE_SCALE", "noise_level", "step_flags", "snap_depth", "median_depth", "prepare_depth"]

#: median of min(|N(0, 6σ²)|, |N(0, 6σ²)|) / σ: turns the lattice statistic into σ̂.
NOISE_SCALE = 0.3755 * math.sqrt(6.0)


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


def snap_depth(*args, **kwargs):  # placeholder until the snap kernel lands
    raise NotImplementedError


def median_depth(*args, **kwargs):
    raise NotImplementedError


def prepare_depth(depth: np.ndarray, rgb: np.ndarray, config) -> tuple[np.ndarray, np.ndarray, float]:
    """(mesh depth [H, W] float64, test disparity [H, W] float64, σ̂) of a frame: sharpened as ``config`` says."""
    d64 = np.ascontiguousarray(depth, dtype=np.float64)
    inv = 1.0 / d64
    sigma = noise_level(inv)
    return d64, inv, sigma
