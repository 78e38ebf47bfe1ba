"""Depth-edge sharpening before meshing — numba CPU kernels: ``snap`` (ours) and ``median`` (the baseline).
The torch twin (:mod:`ex4d.render.torch_edges`) gives the same results bit for bit. Run by
:func:`ex4d.depth_edges.prepare_depth`; both work on disparity δ = 1/z [H, W] float64.

Sharpening: ``snap`` (:func:`snap_depth`)
----------------------------------------
Straightens estimators' ramps into steps placed where the colour changes. It runs along the rows, then along
the columns (a peak starts a ramp only where |∂δ/∂u| ≥ |∂δ/∂v| for the rows, the other way for the columns,
so that a line never runs along an edge). On each line, with d_x = δ_{x+1} − δ_x:

1. an edge x is a peak when |d_{x−1}| ≤ |d_x| and |d_{x+1}| < (1 − 10⁻⁴)·|d_x| (a plane's equal slopes differ
   by rounding only, and have none);
2. its top is wide on a side when the neighbour there has the same sign and at least half of |d_x| (a blurred
   step's do, for σ ≥ 0.9 px; a sharp step beside a steep surface, such as a limb, drops at once). Wide on both
   sides: a **ramp**, extended over the neighbouring edges of the same sign with 0.05·|d_x| < |d| ≤ |d_x|, at
   most ``snap_reach`` each way — unless all its edges are ≥ 0.7·|d_x| (an even slope: a steep plane).
   Wide on one side only, with the edges beyond both below half: one mixed (**flying**) pixel. Neither: a
   **sharp** step, left as it is;
3. with the shoulder pixels a < b, s_a = (δ_a − δ_{a−2})/2 and s_b = (δ_{b+2} − δ_b)/2, it counts only when
   |δ_b − δ_a − (b − a)·(s_a + s_b)/2| > (snap_min_step + step_noise·σ̂)·min(δ_a, δ_b) and
   |d_x| > 3·max(|s_a|, |s_b|);
4. the split: k₀ = the last inner pixel nearer δ_a than δ_b (a flying pixel just takes it); a ramp's zone
   [a − c, b + c] (c = ``snap_color_px``) is split instead at the k of the largest
   ‖I_{k+1} − I_k‖₁ − 40·(pixels moved within the ramp) − 48·(pixels moved beyond it) (8-bit RGB L1; ties:
   nearer k₀, then left): the strongest colour edge near the depth's own split;
5. the zone's pixels take the depth of their side: pixels that stay on their own plateau keep theirs, the
   others δ_a + (p − a)·s_a (p ≤ k) or δ_b + (p − b)·s_b (p > k), each slope set to 0 where it leans towards
   the step (a blur's tail does). A pixel in several zones follows the nearest peak (|p − x − ½|, then the
   smaller x);
6. guard: the ``snap_guard_px`` pixels either side of every ramp's split, and the pixels a ramp moved by more
   than ``snap_guard_move`` (relative), are unknown whatever the criterion says (their depth is a guess).

The frame's **softness** is the share of ramps among the ramps and sharp steps both passes met. Below
SOFT_SHARE (½) the depth's steps are sharp already (exact or edge-aligned depth) and the snap leaves the
frame as it was; at or above it the frame is *soft* and (``soft_mode="auto"``) the step criterion is joined by
the grazing test (:func:`ex4d.dwmesh.grid_occlusion`'s ``grazing``) on the sharpened depth, which catches the
steep blurred creases and ramp remnants that no 1-D test can tell from surfaces.

Baseline: ``median`` (:func:`median_depth`)
-------------------------------------------
The depth-edge sharpening of 3D-photo inpainting (Shih et al., CVPR 2020, after Ma et al., ICCV 2013), made
scale-free: five passes (windows 7, 7, 5, 5, 5); each marks the pixels beside an edge whose disparity changes by
more than 4 % (|Δδ| > 0.04·min(δ_p, δ_q)) and replaces every pixel whose window holds marked pixels by the median
(the upper one of an even count) of the window's unmarked ones.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["SOFT_SHARE", "RAMP_KEEP", "PEAK_TOL", "TOP_SHARE", "PLANE_SHARE", "PEAK_RATIO", "SPLIT_COST_IN",
           "SPLIT_COST_OUT",
           "MEDIAN_WINDOWS", "MEDIAN_EDGE", "snap_depth", "median_depth"]

#: a frame's depth is soft when at least this share of the steps the snap meets are ramps.
SOFT_SHARE = 0.5
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
def _snap_pass(inv, rgb, use_rgb, axis, reach, cpx, min_step, across, guard, gpx,
               move_tol):  # pragma: no cover - compiled
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
