"""The knowable set of a novel view: what a leak-free DW-Mesh could at best show as known.

A novel-view pixel is **knowable** when

1. its true surface point X was seen by the source: X projects into the source image and its z-depth matches
   the source's sampled surface there within the relative tolerance ``tol`` (|z − z_surface| ≤ tol·z), and
2. the novel ray from the camera centre o to X never passes through space *behind* a surface the source saw
   (unobserved space, where something could hide).

The source's sampled surface is its depth map read as the DW-Mesh reads it: inside each source pixel quad
(a, b, c, d) = ((i, j), (i, j+1), (i+1, j), (i+1, j+1)) it is the triangle (a, b, c) where f_u + f_v ≤ 1 and
(b, c, d) elsewhere, with the disparity 1/z interpolated linearly in the image (a plane in 3-D). So condition 1
is stricter than :func:`ex4d.eval.scenes.visible_in_source` (the 2×2 depth range) across depth steps: the part
of a surface between its last pixel centre and its silhouette (a sphere's limb band, which a side view
magnifies) was never sampled, and no DW-Mesh face can show it without also bridging the step.

Condition 2 is decided by marching the segment o → X against that surface. The segment is clipped to the part
of the source frustum in front of the source camera (outside it the source saw nothing, so nothing there is "behind" what it saw),
then walked in equal image-space steps of at most ``step_px`` source pixels; along the projected segment 1/z of
the ray is linear (perspective-correct), so every sample is exact. A sample is behind when its z-depth exceeds
the surface's by more than the relative tolerance ``tol``: z > z_surface · (1 + tol).

No method that shows only surfaces the source saw, at their place, can mark more than the knowable pixels as
known: a watertight DW-Mesh's occluding faces rightly hide the rest. Recall against this set is the benchmark's
"recall of knowable".
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["seen_by_source", "ray_clear", "knowable_mask"]


@njit(cache=True, inline="always")
def _surface_disparity(inv, u, v):  # pragma: no cover - compiled
    """Disparity of the triangulated source surface at image point (u, v) (inside [0, W−1]×[0, H−1])."""
    H, W = inv.shape
    j0 = min(int(math.floor(u)), W - 2)
    i0 = min(int(math.floor(v)), H - 2)
    fu = u - j0
    fv = v - i0
    a = inv[i0, j0]
    b = inv[i0, j0 + 1]
    c = inv[i0 + 1, j0]
    d = inv[i0 + 1, j0 + 1]
    if fu + fv <= 1.0:
        return a + fu * (b - a) + fv * (c - a)
    return d + (1.0 - fu) * (c - d) + (1.0 - fv) * (b - d)


@njit(cache=True, inline="always")
def _clip(lo, hi, a, b):  # pragma: no cover - compiled
    """Interval [lo, hi] of s intersected with {a + b·s ≥ 0}."""
    if b > 0.0:
        lo = max(lo, -a / b)
    elif b < 0.0:
        hi = min(hi, -a / b)
    elif a < 0.0:
        hi = -1.0
    return lo, hi


@njit(parallel=True, cache=True)
def _seen(points, inv, K, tol):  # pragma: no cover - compiled
    """Condition 1 per point [N, 3] (NaN → False)."""
    N = points.shape[0]
    H, W = inv.shape
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    out = np.zeros(N, dtype=np.bool_)
    e = 1e-3  # pixel-centre points of the border rows/columns project to 0 or W−1 up to rounding
    for n in prange(N):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)) or z <= 0.0:
            continue
        u = fx * x / z + cx
        v = fy * y / z + cy
        if u < -e or u > W - 1 + e or v < -e or v > H - 1 + e:
            continue
        zs = 1.0 / _surface_disparity(inv, min(max(u, 0.0), W - 1.0), min(max(v, 0.0), H - 1.0))
        out[n] = abs(z - zs) <= tol * z
    return out


@njit(parallel=True, cache=True)
def _ray_clear(origin, points, inv, K, tol, step_px, z_min):  # pragma: no cover - compiled
    N = points.shape[0]
    H, W = inv.shape
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    out = np.ones(N, dtype=np.bool_)
    ox, oy, oz = origin[0], origin[1], origin[2]
    for n in prange(N):
        dx = points[n, 0] - ox; dy = points[n, 1] - oy; dz = points[n, 2] - oz
        if not (math.isfinite(dx) and math.isfinite(dy) and math.isfinite(dz)):
            continue
        lo, hi = 0.0, 1.0 - 1e-9
        lo, hi = _clip(lo, hi, oz - z_min, dz)                               # z ≥ z_min
        lo, hi = _clip(lo, hi, fx * ox + cx * oz, fx * dx + cx * dz)          # u ≥ 0
        lo, hi = _clip(lo, hi, -(fx * ox + (cx - (W - 1)) * oz), -(fx * dx + (cx - (W - 1)) * dz))  # u ≤ W−1
        lo, hi = _clip(lo, hi, fy * oy + cy * oz, fy * dy + cy * dz)          # v ≥ 0
        lo, hi = _clip(lo, hi, -(fy * oy + (cy - (H - 1)) * oz), -(fy * dy + (cy - (H - 1)) * dz))  # v ≤ H−1
        if hi <= lo:
            continue
        za = oz + lo * dz; zb = oz + hi * dz
        ua = fx * (ox + lo * dx) / za + cx; va = fy * (oy + lo * dy) / za + cy
        ub = fx * (ox + hi * dx) / zb + cx; vb = fy * (oy + hi * dy) / zb + cy
        ia, ib = 1.0 / za, 1.0 / zb
        steps = int(math.ceil(max(abs(ub - ua), abs(vb - va)) / step_px)) + 1
        for k in range(steps + 1):
            t = k / steps
            u = min(max(ua + t * (ub - ua), 0.0), W - 1.0)
            v = min(max(va + t * (vb - va), 0.0), H - 1.0)
            inv_z = ia + t * (ib - ia)  # 1/z of the ray is linear along its projection
            # behind: z > z_surface·(1 + tol)  ⇔  1/z·(1 + tol) < 1/z_surface
            if inv_z * (1.0 + tol) < _surface_disparity(inv, u, v):
                out[n] = False
                break
    return out


def ray_clear(origin: np.ndarray, points: np.ndarray, source_depth: np.ndarray, K: np.ndarray, tol: float = 0.01,
              step_px: float = 0.5) -> np.ndarray:
    """Bool [...] : the segment from ``origin`` [3] to each point [..., 3] (world = source camera coordinates;
    NaN = no point, gives True) never passes behind the source's z-depth surface [H, W] (intrinsics K)."""
    pts = np.asarray(points, dtype=np.float64)
    shape = pts.shape[:-1]
    d = np.asarray(source_depth, dtype=np.float64)
    inv = np.ascontiguousarray(1.0 / d)
    out = _ray_clear(np.asarray(origin, np.float64), np.ascontiguousarray(pts.reshape(-1, 3)), inv,
                     np.ascontiguousarray(K, dtype=np.float64), float(tol), float(step_px), 1e-3 * float(d.min()))
    return out.reshape(shape)


def seen_by_source(points: np.ndarray, source_depth: np.ndarray, K: np.ndarray, tol: float = 0.01) -> np.ndarray:
    """Bool [...]: world points [..., 3] (NaN = none) lie on the source's sampled surface (condition 1)."""
    pts = np.asarray(points, dtype=np.float64)
    inv = np.ascontiguousarray(1.0 / np.asarray(source_depth, dtype=np.float64))
    out = _seen(np.ascontiguousarray(pts.reshape(-1, 3)), inv, np.ascontiguousarray(K, dtype=np.float64), float(tol))
    return out.reshape(pts.shape[:-1])


def knowable_mask(points: np.ndarray, w2c: np.ndarray, source_depth: np.ndarray, K: np.ndarray,
                  tol: float = 0.01) -> np.ndarray:
    """Knowable pixels [H', W'] bool of a novel view (camera w2c [4, 4] OpenCV, its true world points
    [H', W', 3], NaN = none) of the source z-depth [H, W] with intrinsics K (see the module docstring)."""
    from ..cameras import invert_w2c

    origin = invert_w2c(np.asarray(w2c, np.float64))[:3, 3]
    seen = seen_by_source(points, source_depth, K, tol)
    pts = np.where(seen[..., None], points, np.nan)
    return seen & ray_clear(origin, pts, source_depth, K, tol)
