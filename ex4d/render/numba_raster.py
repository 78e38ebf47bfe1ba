"""Exact z-buffered triangle rasterizer on the CPU (numba, parallel, cached compile).

Method (shared bit for bit with :mod:`ex4d.render.torch_raster`)
-----------------------------------------------------------------
For a triangle with camera-space vertices V0, V1, V2 and a pixel (u, v), let
p = K⁻¹ (u, v, 1)ᵀ be the pixel's ray. λ = [V0 V1 V2]⁻¹ p gives the ray's
hit point X = p / s on the triangle's plane, where s = λ0 + λ1 + λ2 = 1/z, and
its perspective-correct barycentric coordinates b = λ / s. The pixel is
covered when s > 0 (the hit is in front of the camera), z = 1/s ≥ near, and
every λi ≥ −ε·s (ε = 1e-5, so that shared edges leave no cracks). This
"homogeneous rasterization" needs no clipping: triangles that cross the near
plane are handled exactly (only their part in front of it can cover pixels).

λ is linear in (u, v). Per triangle we precompute, in float64, λi at an
integer reference pixel (x0, y0) (the triangle's bounding-box corner) and its
per-pixel steps; the box holds the pixel centres within δ = 0.01 + 2e-5 ×
(box extent) of the projected triangle. Per pixel we evaluate in float32
``l_i = a_i·du + (b_i·dv + d_i)`` (the bracket once per row) with small exact integers du = u − x0,
dv = v − y0, so there is no cancellation. The depth test keeps the largest s
(nearest); equal s goes to the smaller triangle id. Both kernels use exactly
these operations, in this order, so they agree on every pixel.

Pixel centres are at integer (u, v) (see :mod:`ex4d.cameras`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["rasterize_numba", "EPS", "BAND"]

EPS = np.float32(1e-5)
BAND = 8  # rows per work item; each band owns its slice of the z-buffer (no races)


@njit(cache=True, inline="always")
def _setup_one(verts, i0, i1, i2, f, K, near, W, H, coef, box):  # pragma: no cover - compiled
    """Fill coef[f] (9 float32: a0..2, b0..2, d0..2) and box[f] (x0, x1, y0, y1); x1 < x0 marks culled."""
    box[f, 0] = 0
    box[f, 1] = -1
    box[f, 2] = 0
    box[f, 3] = -1
    x0_ = verts[i0, 0]; y0_ = verts[i0, 1]; z0_ = verts[i0, 2]
    x1_ = verts[i1, 0]; y1_ = verts[i1, 1]; z1_ = verts[i1, 2]
    x2_ = verts[i2, 0]; y2_ = verts[i2, 1]; z2_ = verts[i2, 2]
    if z0_ < near and z1_ < near and z2_ < near:
        return
    # Rows of [V0 V1 V2]^-1 are (V1×V2, V2×V0, V0×V1) / det.
    c0x = y1_ * z2_ - z1_ * y2_
    c0y = z1_ * x2_ - x1_ * z2_
    c0z = x1_ * y2_ - y1_ * x2_
    c1x = y2_ * z0_ - z2_ * y0_
    c1y = z2_ * x0_ - x2_ * z0_
    c1z = x2_ * y0_ - y2_ * x0_
    c2x = y0_ * z1_ - z0_ * y1_
    c2y = z0_ * x1_ - x0_ * z1_
    c2z = x0_ * y1_ - y0_ * x1_
    det = x0_ * c0x + y0_ * c0y + z0_ * c0z
    scale = (abs(x0_) + abs(y0_) + abs(z0_)) * (abs(x1_) + abs(y1_) + abs(z1_)) * (abs(x2_) + abs(y2_) + abs(z2_))
    if abs(det) <= 1e-12 * scale:
        return  # the triangle's plane contains the camera centre: it covers no area
    # Screen bounding box of the part in front of the near plane.
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    umin = math.inf; umax = -math.inf; vmin = math.inf; vmax = -math.inf
    for k in range(3):
        if k == 0:
            px = x0_; py = y0_; pz = z0_; qx = x1_; qy = y1_; qz = z1_
        elif k == 1:
            px = x1_; py = y1_; pz = z1_; qx = x2_; qy = y2_; qz = z2_
        else:
            px = x2_; py = y2_; pz = z2_; qx = x0_; qy = y0_; qz = z0_
        if pz >= near:
            u = fx * px / pz + cx
            v = fy * py / pz + cy
            umin = min(umin, u); umax = max(umax, u); vmin = min(vmin, v); vmax = max(vmax, v)
        if (pz - near) * (qz - near) < 0.0:
            t = (near - pz) / (qz - pz)
            ix = px + t * (qx - px)
            iy = py + t * (qy - py)
            u = fx * ix / near + cx
            v = fy * iy / near + cy
            umin = min(umin, u); umax = max(umax, u); vmin = min(vmin, v); vmax = max(vmax, v)
    if not (umax >= -1.0 and vmax >= -1.0 and umin <= W and vmin <= H):
        return
    # Pixel centres inside [umin, umax] widened by δ, enough for the ε tolerance of the coverage test.
    delta = 0.01 + 2e-5 * max(umax - umin, vmax - vmin)
    bx0 = max(0, int(math.ceil(max(umin - delta, -2.0))))
    bx1 = min(W - 1, int(math.floor(min(umax + delta, W + 1.0))))
    by0 = max(0, int(math.ceil(max(vmin - delta, -2.0))))
    by1 = min(H - 1, int(math.floor(min(vmax + delta, H + 1.0))))
    if bx1 < bx0 or by1 < by0:
        return
    # λ_i(u, v) = c_i · ((u − cx)/fx, (v − cy)/fy, 1) / det, expanded around (bx0, by0).
    rx = (bx0 - cx) / fx
    ry = (by0 - cy) / fy
    inv = 1.0 / det
    coef[f, 0] = c0x / fx * inv
    coef[f, 1] = c1x / fx * inv
    coef[f, 2] = c2x / fx * inv
    coef[f, 3] = c0y / fy * inv
    coef[f, 4] = c1y / fy * inv
    coef[f, 5] = c2y / fy * inv
    coef[f, 6] = (c0x * rx + c0y * ry + c0z) * inv
    coef[f, 7] = (c1x * rx + c1y * ry + c1z) * inv
    coef[f, 8] = (c2x * rx + c2y * ry + c2z) * inv
    box[f, 0] = bx0
    box[f, 1] = bx1
    box[f, 2] = by0
    box[f, 3] = by1


@njit(parallel=True, cache=True)
def _setup(verts, faces, K, near, W, H):  # pragma: no cover - compiled
    F = faces.shape[0]
    coef = np.empty((F, 9), dtype=np.float32)  # read only for faces whose box is not culled
    box = np.empty((F, 4), dtype=np.int32)
    for f in prange(F):
        _setup_one(verts, faces[f, 0], faces[f, 1], faces[f, 2], f, K, near, W, H, coef, box)
    return coef, box


_BIN_CHUNKS = 64  # face chunks binned in parallel; their lists are concatenated in face order


@njit(parallel=True, cache=True)
def _bin(box, H):  # pragma: no cover - compiled
    """CSR lists of triangle ids per band of BAND rows: (start [B+1], ids [N]), ids ascending in each band.

    A parallel counting sort: each chunk of faces counts, then writes, its own entries of every band.
    """
    nb = (H + BAND - 1) // BAND
    F = box.shape[0]
    nc = _BIN_CHUNKS
    size = (F + nc - 1) // nc
    counts = np.zeros((nc, nb), dtype=np.int64)
    for c in prange(nc):
        for f in range(c * size, min(F, (c + 1) * size)):
            if box[f, 1] >= box[f, 0]:
                for b in range(box[f, 2] // BAND, box[f, 3] // BAND + 1):
                    counts[c, b] += 1
    start = np.zeros(nb + 1, dtype=np.int64)
    fill = np.empty((nc, nb), dtype=np.int64)
    pos = 0
    for b in range(nb):
        start[b] = pos
        for c in range(nc):
            fill[c, b] = pos
            pos += counts[c, b]
    start[nb] = pos
    ids = np.empty(pos, dtype=np.int32)
    for c in prange(nc):
        for f in range(c * size, min(F, (c + 1) * size)):
            if box[f, 1] >= box[f, 0]:
                for b in range(box[f, 2] // BAND, box[f, 3] // BAND + 1):
                    ids[fill[c, b]] = f
                    fill[c, b] += 1
    return start, ids


@njit(cache=True, inline="always")
def _span(a, c, lo, hi):  # pragma: no cover - compiled
    """Narrow [lo, hi] (du range) to where a·du + c ≥ 0, conservatively by one pixel."""
    if a > 0.0:
        lo = max(lo, math.floor(-c / a) - 1.0)
    elif a < 0.0:
        hi = min(hi, math.ceil(-c / a) + 1.0)
    elif c < 0.0:
        # constant negative: only the tolerance could admit it; keep the range (the exact test decides)
        pass
    return lo, hi


@njit(parallel=True, cache=True)
def _raster(coef, box, start, ids, near, W, H):  # pragma: no cover - compiled
    best_s = np.zeros((H, W), dtype=np.float32)
    best_id = np.full((H, W), -1, dtype=np.int32)
    nb = start.shape[0] - 1
    inv_near = np.float32(1.0) / np.float32(near)
    for b in prange(nb):
        r0 = b * BAND
        r1 = min(H - 1, r0 + BAND - 1)
        for k in range(start[b], start[b + 1]):
            f = ids[k]
            x0 = box[f, 0]; x1 = box[f, 1]
            a0 = coef[f, 0]; a1 = coef[f, 1]; a2 = coef[f, 2]
            b0 = coef[f, 3]; b1 = coef[f, 4]; b2 = coef[f, 5]
            d0 = coef[f, 6]; d1 = coef[f, 7]; d2 = coef[f, 8]
            for v in range(max(r0, box[f, 2]), min(r1, box[f, 3]) + 1):
                dv = np.float32(v - box[f, 2])
                e0 = b0 * dv + d0
                e1 = b1 * dv + d1
                e2 = b2 * dv + d2
                # Row span from the three half-planes, in float64, widened by a pixel; the test below is exact.
                lo = 0.0
                hi = float(x1 - x0)
                if x1 - x0 > 3:
                    lo, hi = _span(float(a0), float(b0) * float(dv) + float(d0), lo, hi)
                    lo, hi = _span(float(a1), float(b1) * float(dv) + float(d1), lo, hi)
                    lo, hi = _span(float(a2), float(b2) * float(dv) + float(d2), lo, hi)
                    if hi < lo:
                        continue
                for iu in range(int(lo), int(hi) + 1):
                    du = np.float32(iu)
                    l0 = a0 * du + e0
                    l1 = a1 * du + e1
                    l2 = a2 * du + e2
                    s = (l0 + l1) + l2
                    if s <= np.float32(0.0) or s > inv_near:
                        continue
                    tol = s * EPS
                    if l0 < -tol or l1 < -tol or l2 < -tol:
                        continue
                    u = x0 + iu
                    cur = best_s[v, u]
                    if s > cur or (s == cur and best_id[v, u] > f):
                        best_s[v, u] = s
                        best_id[v, u] = f
    return best_s, best_id


@njit(parallel=True, cache=True)
def _barycentrics(coef, box, best_id):  # pragma: no cover - compiled
    H, W = best_id.shape
    bary = np.zeros((H, W, 3), dtype=np.float32)
    for v in prange(H):
        for u in range(W):
            f = best_id[v, u]
            if f < 0:
                continue
            du = np.float32(u - box[f, 0])
            dv = np.float32(v - box[f, 2])
            l0 = coef[f, 0] * du + (coef[f, 3] * dv + coef[f, 6])
            l1 = coef[f, 1] * du + (coef[f, 4] * dv + coef[f, 7])
            l2 = coef[f, 2] * du + (coef[f, 5] * dv + coef[f, 8])
            s = (l0 + l1) + l2
            bary[v, u, 0] = l0 / s
            bary[v, u, 1] = l1 / s
            bary[v, u, 2] = l2 / s
    return bary


@njit(parallel=True, cache=True)
def transform_numba(verts, w2c):  # pragma: no cover - compiled
    """Camera-space vertices [V, 3] float64 = R·X + t of float32 [V, 3] ``verts``, as ``((x·r0 + y·r1) + z·r2) + t``.

    The same operations in the same order as the torch path, so both give bit-identical vertices.
    """
    V = verts.shape[0]
    out = np.empty((V, 3))
    for k in prange(V):
        x = np.float64(verts[k, 0]); y = np.float64(verts[k, 1]); z = np.float64(verts[k, 2])
        for i in range(3):
            out[k, i] = ((x * w2c[i, 0] + y * w2c[i, 1]) + z * w2c[i, 2]) + w2c[i, 3]
    return out


@njit(parallel=True, cache=True)
def shade_numba(face_id, bary, faces, colors, occluded, alpha, alpha_threshold):  # pragma: no cover - compiled
    """(color [H,W,3] float32, mask [H,W] bool): interpolated vertex colours, 0 where unknown.

    Known = a face is hit and it is not occluded (``alpha`` empty), or the
    interpolated vertex alpha exceeds ``alpha_threshold`` (original mode).
    """
    H, W = face_id.shape
    color = np.zeros((H, W, 3), dtype=np.float32)
    mask = np.zeros((H, W), dtype=np.bool_)
    use_alpha = alpha.shape[0] > 0
    for v in prange(H):
        for u in range(W):
            f = face_id[v, u]
            if f < 0:
                continue
            i0 = faces[f, 0]; i1 = faces[f, 1]; i2 = faces[f, 2]
            b0 = bary[v, u, 0]; b1 = bary[v, u, 1]; b2 = bary[v, u, 2]
            if use_alpha:
                known = (b0 * alpha[i0] + b1 * alpha[i1]) + b2 * alpha[i2] > alpha_threshold
            else:
                known = not occluded[f]
            if not known:
                continue
            mask[v, u] = True
            for c in range(3):
                x = (b0 * colors[i0, c] + b1 * colors[i1, c]) + b2 * colors[i2, c]
                color[v, u, c] = min(max(x, np.float32(0.0)), np.float32(1.0))
    return color, mask


@njit(parallel=True, cache=True)
def quantize_rgb(color, out):  # pragma: no cover - compiled
    """Write ``out`` [H,W,3] uint8 = clip(color·255 + 0.5, 0, 255) truncated, of float32 ``color`` [H,W,3].

    The same float32 operations as ``np.clip(color * 255.0 + 0.5, 0, 255).astype(np.uint8)``, in parallel.
    """
    H, W = color.shape[:2]
    for v in prange(H):
        for u in range(W):
            for c in range(3):
                x = color[v, u, c] * np.float32(255.0) + np.float32(0.5)
                out[v, u, c] = np.uint8(min(max(x, np.float32(0.0)), np.float32(255.0)))


def rasterize_numba(verts_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int,
                    near: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterize camera-space triangles; returns (face_id, inv_depth, bary).

    Args:
        verts_cam: [V, 3] float64 vertices in the target camera's OpenCV frame.
        faces: [F, 3] int32 vertex indices.
        K: [3, 3] intrinsics (no skew) of the target camera.
        height, width: output size in pixels.
        near: near plane distance; surfaces closer than this are not drawn.

    Returns:
        face_id: [H, W] int32, nearest face per pixel, −1 where none.
        inv_depth: [H, W] float32, 1/z of that surface (0 where none).
        bary: [H, W, 3] float32 perspective-correct barycentrics (0 where none).
    """
    verts_cam = np.ascontiguousarray(verts_cam, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    K = np.ascontiguousarray(K, dtype=np.float64)
    coef, box = _setup(verts_cam, faces, K, float(near), int(width), int(height))
    start, ids = _bin(box, int(height))
    best_s, best_id = _raster(coef, box, start, ids, float(near), int(width), int(height))
    bary = _barycentrics(coef, box, best_id)
    return best_id, best_s, bary
