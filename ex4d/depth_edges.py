"""Depth edges of a DW-Mesh: the ``step`` occlusion criterion, the frame's noise level, and depth-edge
sharpening (``snap``, ours; ``median``, the bilateral-median baseline) — numba CPU kernels.

Everything runs on disparity δ = 1/z, where a plane is *linear* in the pixel coordinates: a plane seen at any
angle has a constant first difference and a vanishing second difference, a depth step has neither.

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
d_x = δ_{x+1} − δ_x) is a ramp peak when |d_x| is a local maximum (|d_{x−1}| ≤ |d_x|, |d_{x+1}| < (1 − 10⁻⁴)·|d_x|,
so that a plane's equal slopes, which differ by rounding only, have none); the ramp extends over the neighbouring edges
of the same sign with 0.15·|d_x| < |d| ≤ |d_x|, at most ``snap_reach`` pixels each way, to the shoulder pixels
a < b.
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
#: denoising: one 3×3 median of the disparity from σ̂ ≥ NOISE_MIN, two from σ̂ ≥ NOISE_STRONG.
NOISE_MIN = 0.001
NOISE_STRONG = 0.004
#: per-pixel noise a 3×3 median leaves of white noise (std ratio), after 1 and 2 passes.
MEDIAN_LEFT = {1: 0.45, 2: 0.35}
#: a frame's depth is soft when at least this share of the steps the snap meets are ramps.
SOFT_SHARE = 0.5


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


#: snap: a ramp continues while |d| > RAMP_KEEP × its peak; a ramp peak must be PEAK_RATIO × steeper than
#: its shoulders; moving the split one pixel within the ramp costs SPLIT_COST_IN, one pixel beyond it (into
#: what the depth calls a plateau) SPLIT_COST_OUT (8-bit RGB L1 units per pixel).
RAMP_KEEP = 0.05
PEAK_TOL = 1.0 - 1e-4   # a peak tops its right neighbour by more than rounding (planes' equal slopes differ by it)
TOP_SHARE = 0.5
PLANE_SHARE = 0.7
PEAK_RATIO = 3.0
SPLIT_COST_IN = 40
SPLIT_COST_OUT = 48


@njit(cache=True, inline="always")
def _split_penalty(k, k0, a, b):  # pragma: no cover - compiled
    """The cost of moving the split from k0 to k (splits a..b−1 lie within the ramp)."""
    lo = min(k, k0)
    hi = max(k, k0)
    inside = max(0, min(hi, b - 1) - max(lo, a))
    return SPLIT_COST_IN * inside + SPLIT_COST_OUT * (hi - lo - inside)


@njit(cache=True)
def _snap_line(v, col, use_rgb, acr, reach, cpx, min_step, gpx, move_tol, o, g):  # pragma: no cover - compiled
    """Snap one line: disparity v [n], colours col [n, 3] int32, ``acr`` [n] bool; writes o [n] (the new
    disparity), g [n] (guard); returns (ramps straightened, sharp steps met)."""
    n = v.shape[0]
    ramps = 0
    sharp = 0
    for p in range(n):
        o[p] = v[p]
    best = np.full(n, 1e30)
    ramp_owned = np.zeros(n, dtype=np.bool_)
    d = np.empty(max(n - 1, 1))
    for x in range(n - 1):
        d[x] = v[x + 1] - v[x]
    for x in range(n - 1):
        m = abs(d[x])
        if m == 0.0 or (x > 0 and abs(d[x - 1]) > m) or (x < n - 2 and abs(d[x + 1]) >= PEAK_TOL * m):
            continue
        if not (acr[x] or acr[x + 1]):
            continue
        sg = d[x] > 0.0
        # how wide is the peak's top? a blurred step's neighbours come close to its peak (≥ half of it
        # for a Gaussian of σ ≥ 0.9 px); a sharp step beside a steep surface (a limb) drops at once
        wl = x > 0 and (d[x - 1] > 0.0) == sg and abs(d[x - 1]) >= TOP_SHARE * m
        wr = x < n - 2 and (d[x + 1] > 0.0) == sg and abs(d[x + 1]) >= TOP_SHARE * m
        kind = 0  # 0 sharp step, 1 flying pixel, 2 ramp
        e0 = x
        e1 = x
        if wl and wr:
            kind = 2
            while (e0 > 0 and e0 > x - reach and (d[e0 - 1] > 0.0) == sg
                   and RAMP_KEEP * m < abs(d[e0 - 1]) <= m):
                e0 -= 1
            while (e1 < n - 2 and e1 < x + reach and (d[e1 + 1] > 0.0) == sg
                   and RAMP_KEEP * m < abs(d[e1 + 1]) <= m):
                e1 += 1
            lo = m
            for e in range(e0, e1 + 1):
                lo = min(lo, abs(d[e]))
            if lo >= PLANE_SHARE * m:
                continue  # an even slope: a steep plane, not a ramp
        elif wl or wr:
            # two edges alone: one mixed ("flying") pixel between two sides
            kind = 1
            e0 = x - 1 if wl else x
            e1 = x if wl else x + 1
            if (e0 > 0 and abs(d[e0 - 1]) >= TOP_SHARE * m) or (e1 < n - 2 and abs(d[e1 + 1]) >= TOP_SHARE * m):
                continue
        a = e0
        b = e1 + 1
        da = v[a]
        db = v[b]
        sa = (da - v[max(a - 2, 0)]) * 0.5
        sb = (v[min(b + 2, n - 1)] - db) * 0.5
        excess = abs((db - da) - (b - a) * ((sa + sb) * 0.5))
        if not (excess > min_step * min(da, db) and m > PEAK_RATIO * max(abs(sa), abs(sb))):
            continue
        if kind == 0:
            sharp += 1  # a sharp step: the depth already says where it is
            continue
        # the depth's own split: the last inner pixel nearer the left shoulder's value
        k0 = a
        for p in range(a + 1, b):
            if abs(v[p] - da) <= abs(v[p] - db):
                k0 = p
        k = k0
        cz = cpx if kind == 2 else 0
        z0 = max(a - cz, 0)
        z1 = min(b + cz, n - 1)
        if use_rgb and kind == 2:
            # the split goes to the strongest colour edge, each pixel away from the depth's own split costing
            # SPLIT_COST_IN within the ramp and SPLIT_COST_OUT beyond it; ties: nearer k0, then left
            best_gain = -(1 << 30)
            for kk in range(z0, z1):
                cg = abs(col[kk + 1, 0] - col[kk, 0]) + abs(col[kk + 1, 1] - col[kk, 1]) \
                    + abs(col[kk + 1, 2] - col[kk, 2])
                gain = cg - _split_penalty(kk, k0, a, b)
                if gain > best_gain or (gain == best_gain and abs(kk - k0) < abs(k - k0)):
                    best_gain = gain
                    k = kk
        # plateau slopes beyond the shoulders, used only where they lean away from the step (a blur's tail
        # leans towards it)
        up = db > da
        if (sa > 0.0) == up:
            sa = 0.0
        if (sb > 0.0) != up:
            sb = 0.0
        if kind == 2:
            ramps += 1
            for p in range(max(k - gpx + 1, 0), min(k + gpx, n - 1) + 1):
                g[p] = True
        centre = x + 0.5
        for p in range(z0, z1 + 1):
            dist = abs(p - centre)
            if dist >= best[p]:
                continue
            best[p] = dist
            ramp_owned[p] = kind == 2
            if p <= k:
                o[p] = v[p] if p <= a else da + (p - a) * sa
            else:
                o[p] = v[p] if p >= b else db + (p - b) * sb
    # a pixel a ramp moved far is a guess: it stays unknown
    for p in range(n):
        if ramp_owned[p] and abs(o[p] - v[p]) > move_tol * min(o[p], v[p]):
            g[p] = True
    return ramps, sharp


_BLOCK = 16  # lines gathered at once: along columns, 16 neighbouring values share a cache line's reads


@njit(parallel=True, cache=True)
def _snap_pass(inv, rgb, use_rgb, axis, reach, cpx, min_step, across, guard, gpx, move_tol):  # pragma: no cover - compiled
    """One snap pass along the rows (axis 1) or the columns (axis 0) of disparity [H, W] float64: (new
    disparity [H, W], counts [lines, 2] int64: per line the ramps it straightened and the sharp steps it met);
    ORs its guard into ``guard`` [H, W] bool. ``across`` [H, W] bool: the depth changes along the pass's lines at
    least as fast as across them (only there may a peak start a ramp: a line running along an edge would see a
    long false ramp). Every peak is judged on the input alone; a pixel in several zones follows the peak
    nearest to it (|p − x − ½|, then the smaller x), so the result does not depend on the order of the work.
    """
    H, W = inv.shape
    L = H if axis == 1 else W
    n = W if axis == 1 else H
    out = np.empty((H, W))
    counts = np.zeros((L, 2), dtype=np.int64)
    nb = (L + _BLOCK - 1) // _BLOCK
    for blk in prange(nb):
        l0 = blk * _BLOCK
        bl = min(_BLOCK, L - l0)
        v = np.empty((bl, n))
        acr = np.empty((bl, n), dtype=np.bool_)
        col = np.zeros((bl, n, 3), dtype=np.int32)
        o = np.empty((bl, n))
        g = np.zeros((bl, n), dtype=np.bool_)
        if axis == 1:
            for q in range(bl):
                for p in range(n):
                    v[q, p] = inv[l0 + q, p]
                    acr[q, p] = across[l0 + q, p]
                    if use_rgb:
                        for ch in range(3):
                            col[q, p, ch] = rgb[l0 + q, p, ch]
        else:
            for p in range(n):
                for q in range(bl):
                    v[q, p] = inv[p, l0 + q]
                    acr[q, p] = across[p, l0 + q]
                    if use_rgb:
                        for ch in range(3):
                            col[q, p, ch] = rgb[p, l0 + q, ch]
        for q in range(bl):
            r, c = _snap_line(v[q], col[q], use_rgb, acr[q], reach, cpx, min_step, gpx, move_tol, o[q], g[q])
            counts[l0 + q, 0] = r
            counts[l0 + q, 1] = c
        if axis == 1:
            for q in range(bl):
                for p in range(n):
                    out[l0 + q, p] = o[q, p]
                    if g[q, p]:
                        guard[l0 + q, p] = True
        else:
            for p in range(n):
                for q in range(bl):
                    out[p, l0 + q] = o[q, p]
                    if g[q, p]:
                        guard[p, l0 + q] = True
    return out, counts


@njit(parallel=True, cache=True)
def _row_dominant(inv):  # pragma: no cover - compiled
    """[H, W] bool: |δ(u+1) − δ(u−1)| ≥ |δ(v+1) − δ(v−1)| (borders replicated)."""
    H, W = inv.shape
    out = np.empty((H, W), dtype=np.bool_)
    for i in prange(H):
        for j in range(W):
            gx = abs(inv[i, min(j + 1, W - 1)] - inv[i, max(j - 1, 0)])
            gy = abs(inv[min(i + 1, H - 1), j] - inv[max(i - 1, 0), j])
            out[i, j] = gx >= gy
    return out


def snap_depth(inv: np.ndarray, rgb: np.ndarray | None, config, sigma: float):
    """(disparity [H, W] float64 after the ``snap`` sharpening (rows, then columns) of disparity [H, W] float64,
    guard [H, W] bool: the pixels within ``snap_guard_px`` of a straightened ramp's split or moved by more than
    ``snap_guard_move``, softness: the share of ramps among the depth steps it met, 0 without any), guided by
    ``rgb`` [H, W, 3] uint8 (None: by the depth alone); σ̂ raises the smallest step it takes."""
    use = rgb is not None
    col = np.ascontiguousarray(rgb, dtype=np.uint8) if use else np.zeros((1, 1, 3), np.uint8)
    min_step = float(config.snap_min_step + config.step_noise * sigma)
    src = np.ascontiguousarray(inv, dtype=np.float64)
    rows = _row_dominant(src)
    guard = np.zeros(src.shape, dtype=bool)
    args = (int(config.snap_reach), int(config.snap_color_px), min_step)
    tail = (guard, int(config.snap_guard_px), float(config.snap_guard_move))
    out, c1 = _snap_pass(src, col, use, 1, *args, rows, *tail)
    out, c2 = _snap_pass(out, col, use, 0, *args, ~rows, *tail)
    ramps = int(c1[:, 0].sum() + c2[:, 0].sum())
    steps = int(c1[:, 1].sum() + c2[:, 1].sum())
    softness = ramps / (ramps + steps) if ramps + steps else 0.0
    if softness < SOFT_SHARE:
        # the depth's steps are mostly sharp already (exact or sharp-edged depth): leave it as it is
        return src, np.zeros(src.shape, dtype=bool), softness
    return np.maximum(out, 0.5 * float(np.min(src))), guard, softness


#: median baseline (3D-photo inpainting's bilateral median, scale-free): window sides of its passes, and the
#: relative disparity change that marks an edge.
MEDIAN_WINDOWS = (7, 7, 5, 5, 5)
MEDIAN_EDGE = 0.04


@njit(parallel=True, cache=True)
def _edge_pixels(inv, thr):  # pragma: no cover - compiled
    """[H, W] bool: the disparity changes by more than thr (relative) to a 4-neighbour."""
    H, W = inv.shape
    out = np.zeros((H, W), dtype=np.bool_)
    for i in prange(H):
        for j in range(W):
            p = inv[i, j]
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ii = i + di
                jj = j + dj
                if 0 <= ii < H and 0 <= jj < W:
                    q = inv[ii, jj]
                    if abs(q - p) > thr * min(p, q):
                        out[i, j] = True
    return out


@njit(parallel=True, cache=True)
def _median_pass(inv, marked, r):  # pragma: no cover - compiled
    """Pixels whose (2r+1)² window (clipped at the border) holds marked pixels take the median (the upper one of
    an even count) of its unmarked ones; the rest, and windows with none unmarked, stay."""
    H, W = inv.shape
    out = inv.copy()
    for i in prange(H):
        buf = np.empty((2 * r + 1) ** 2)
        for j in range(W):
            any_marked = False
            cnt = 0
            for ii in range(max(i - r, 0), min(i + r, H - 1) + 1):
                for jj in range(max(j - r, 0), min(j + r, W - 1) + 1):
                    if marked[ii, jj]:
                        any_marked = True
                    else:
                        buf[cnt] = inv[ii, jj]
                        cnt += 1
            if not any_marked or cnt == 0:
                continue
            vals = np.sort(buf[:cnt])
            out[i, j] = vals[cnt // 2]
    return out


def median_depth(inv: np.ndarray) -> np.ndarray:
    """Disparity [H, W] float64 after the ``median`` baseline (see the module docstring) of disparity [H, W]."""
    out = np.ascontiguousarray(inv, dtype=np.float64)
    for side in MEDIAN_WINDOWS:
        out = _median_pass(out, _edge_pixels(out, MEDIAN_EDGE), side // 2)
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
    from .dwmesh import median3

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
