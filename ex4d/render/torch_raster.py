"""Exact z-buffered triangle rasterizer in pure PyTorch (CPU or CUDA): the reference and the GPU path.

Same method and the same floating-point operations, in the same order, as
:mod:`ex4d.render.numba_raster` (read its module docstring), so both give the
same face id on every pixel. Differences are only in how candidate pixels are
enumerated: here every pixel of each triangle's bounding box is a candidate
(in chunks, so huge triangles stay bounded in memory), and the depth test is a
``scatter_reduce(amin)`` over a 64-bit key: (inverted float32 bits of s) in the
high word, the triangle id in the low word — nearest first, ties to the
smaller id, deterministic.
"""

from __future__ import annotations

import torch

__all__ = ["rasterize_torch", "setup_triangles"]

EPS = 1e-5
_CHUNK = 1 << 24  # candidate pixels per chunk


def setup_triangles(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, near: float, W: int, H: int):
    """Coefficients of the triangles that can cover a pixel centre.

    verts: [B, V, 3] float64 camera-space; faces: [F, 3] int64 (shared); K: [B, 3, 3] float64.
    Returns (live [L] int64 global triangle ids b·F + f, coef [L, 9] float32, box [L, 4] int64
    (x0, x1, y0, y1)). The box is found first from per-vertex projections (the same
    operations the numba kernel does per corner), so the 3×3 inverse is only computed
    for the triangles that survive it — about half of them.
    """
    dev = verts.device
    B = verts.shape[0]
    F_ = faces.shape[0]
    # Divisors are device tensors, never Python scalars: CUDA kernels turn division by a scalar into
    # multiplication by its reciprocal, which rounds differently from the numba kernel's true division.
    near_t = torch.tensor(near, dtype=verts.dtype, device=dev)
    fx, fy, cx, cy = (K[:, r, c][:, None] for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
    x, y, z = verts[..., 0], verts[..., 1], verts[..., 2]
    front_v = z >= near
    u_v = fx * x / z + cx
    w_v = fy * y / z + cy
    inf = torch.tensor(float("inf"), dtype=verts.dtype, device=dev)
    umin = vmin = inf
    umax = vmax = -inf
    for k in range(3):
        fr = front_v[:, faces[:, k]]
        uk, wk = u_v[:, faces[:, k]], w_v[:, faces[:, k]]
        umin = torch.where(fr, torch.minimum(umin, uk), umin)
        umax = torch.where(fr, torch.maximum(umax, uk), umax)
        vmin = torch.where(fr, torch.minimum(vmin, wk), vmin)
        vmax = torch.where(fr, torch.maximum(vmax, wk), vmax)
    zf = z[:, faces]  # [B, F, 3]
    any_front = (zf >= near).any(-1)
    crossing = any_front & ~(zf >= near).all(-1)
    if crossing.any():
        # triangles crossing the near plane: add the points where their edges meet it
        bi, fi = torch.nonzero(crossing, as_tuple=True)
        fxc, fyc, cxc, cyc = fx[bi, 0], fy[bi, 0], cx[bi, 0], cy[bi, 0]
        for k in range(3):
            p = verts[bi, faces[fi, k]]
            q = verts[bi, faces[fi, (k + 1) % 3]]
            cross = (p[:, 2] - near) * (q[:, 2] - near) < 0.0
            t = (near - p[:, 2]) / (q[:, 2] - p[:, 2])
            ix = p[:, 0] + t * (q[:, 0] - p[:, 0])
            iy = p[:, 1] + t * (q[:, 1] - p[:, 1])
            uu = fxc * ix / near_t + cxc
            ww = fyc * iy / near_t + cyc
            umin[bi, fi] = torch.where(cross, torch.minimum(umin[bi, fi], uu), umin[bi, fi])
            umax[bi, fi] = torch.where(cross, torch.maximum(umax[bi, fi], uu), umax[bi, fi])
            vmin[bi, fi] = torch.where(cross, torch.minimum(vmin[bi, fi], ww), vmin[bi, fi])
            vmax[bi, fi] = torch.where(cross, torch.maximum(vmax[bi, fi], ww), vmax[bi, fi])
    ok = any_front & (umax >= -1.0) & (vmax >= -1.0) & (umin <= W) & (vmin <= H)
    delta = 0.01 + 2e-5 * torch.maximum(umax - umin, vmax - vmin)
    bx0 = torch.ceil((umin - delta).clamp(min=-2.0)).long().clamp(min=0)
    bx1 = torch.floor((umax + delta).clamp(max=W + 1.0)).long().clamp(max=W - 1)
    by0 = torch.ceil((vmin - delta).clamp(min=-2.0)).long().clamp(min=0)
    by1 = torch.floor((vmax + delta).clamp(max=H + 1.0)).long().clamp(max=H - 1)
    ok &= (bx1 >= bx0) & (by1 >= by0)

    bi, fi = torch.nonzero(ok, as_tuple=True)
    v = verts[bi[:, None], faces[fi]]  # [L, 3, 3]
    x0_, y0_, z0_ = v[:, 0, 0], v[:, 0, 1], v[:, 0, 2]
    x1_, y1_, z1_ = v[:, 1, 0], v[:, 1, 1], v[:, 1, 2]
    x2_, y2_, z2_ = v[:, 2, 0], v[:, 2, 1], v[:, 2, 2]
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
    scale = ((x0_.abs() + y0_.abs()) + z0_.abs()) * ((x1_.abs() + y1_.abs()) + z1_.abs()) \
        * ((x2_.abs() + y2_.abs()) + z2_.abs())
    keep = det.abs() > 1e-12 * scale
    box = torch.stack([bx0[bi, fi], bx1[bi, fi], by0[bi, fi], by1[bi, fi]], dim=1)
    fxl, fyl, cxl, cyl = fx[bi, 0], fy[bi, 0], cx[bi, 0], cy[bi, 0]
    rx = (box[:, 0].to(v.dtype) - cxl) / fxl
    ry = (box[:, 2].to(v.dtype) - cyl) / fyl
    inv = 1.0 / det
    coef = torch.stack([
        c0x / fxl * inv, c1x / fxl * inv, c2x / fxl * inv,
        c0y / fyl * inv, c1y / fyl * inv, c2y / fyl * inv,
        (c0x * rx + c0y * ry + c0z) * inv, (c1x * rx + c1y * ry + c1z) * inv, (c2x * rx + c2y * ry + c2z) * inv,
    ], dim=1).to(torch.float32)
    live = (bi * F_ + fi)[keep]
    return live, coef[keep], box[keep]


def _row_spans(coef: torch.Tensor, dv: torch.Tensor, width: torch.Tensor):
    """Integer du range (lo, hi) [R] int64 per (triangle, row) where all λ_i ≥ 0, widened by a pixel.

    The same conservative narrowing as the numba kernel's ``_span`` (float64;
    boxes at most 4 pixels wide are not narrowed); the exact float32 test decides.
    """
    lo = torch.zeros_like(dv)
    hi = width.clone()
    narrow = width > 3
    for i in range(3):
        a = coef[:, i]
        c = coef[:, 3 + i] * dv + coef[:, 6 + i]
        with torch.no_grad():
            root = -c / a
        lo = torch.where(narrow & (a > 0), torch.maximum(lo, torch.floor(root) - 1.0), lo)
        hi = torch.where(narrow & (a < 0), torch.minimum(hi, torch.ceil(root) + 1.0), hi)
    return lo.clamp(min=0).long(), torch.minimum(hi, width).long()


def _eval(coef: torch.Tensor, du: torch.Tensor, dv: torch.Tensor):
    """(l0, l1, l2, s) float32 for candidates with coefficients [N, 9] at offsets du, dv [N] float32."""
    l0 = coef[:, 0] * du + (coef[:, 3] * dv + coef[:, 6])
    l1 = coef[:, 1] * du + (coef[:, 4] * dv + coef[:, 7])
    l2 = coef[:, 2] * du + (coef[:, 5] * dv + coef[:, 8])
    return l0, l1, l2, (l0 + l1) + l2


def rasterize_torch(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                    near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterize camera-space triangles; returns (face_id [H,W] int32, inv_depth [H,W] float32, bary [H,W,3] float32).

    Same contract as :func:`ex4d.render.numba_raster.rasterize_numba`; tensors
    stay on the device of ``verts_cam``. verts_cam: [V, 3] (cast to float64),
    faces: [F, 3] integer, K: [3, 3]. See :func:`rasterize_torch_batch` for several views at once.
    """
    K = torch.as_tensor(K, dtype=torch.float64, device=verts_cam.device)
    fid, inv, bary = rasterize_torch_batch(verts_cam[None], faces, K[None], height, width, near)
    return fid[0], inv[0], bary[0]


def rasterize_torch_batch(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
                          near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterize B meshes of one topology, each with its own camera, in one pass.

    verts_cam: [B, V, 3] camera-space vertices (cast to float64); faces: [F, 3]
    integer (shared); K: [B, 3, 3]. Returns face_id [B, H, W] int32 (index into
    ``faces``, −1 where none), inv_depth [B, H, W] float32, bary [B, H, W, 3] float32.
    Launch overhead is paid once per batch, which is what makes the GPU path fast.
    """
    dev = verts_cam.device
    B, V = verts_cam.shape[:2]
    faces = faces.to(device=dev, dtype=torch.int64)
    F_ = faces.shape[0]
    K = torch.as_tensor(K, dtype=torch.float64, device=dev)
    H, W = int(height), int(width)
    live_g, coef, box = setup_triangles(verts_cam.to(torch.float64), faces, K, float(near), W, H)
    inv_near = (torch.tensor(1.0, dtype=torch.float32) / torch.tensor(near, dtype=torch.float32)).to(dev)
    eps = torch.tensor(EPS, dtype=torch.float32, device=dev)

    keys = torch.full((B * H * W,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    live = torch.arange(live_g.numel(), device=dev)  # positions in the live list
    if live.numel():
        # One work item per (triangle, row); narrowed to the row's span (as the numba kernel does).
        rows = box[live, 3] - box[live, 2] + 1
        row_tri = torch.repeat_interleave(live, rows)
        row_first = torch.cumsum(rows, 0) - rows
        dv_row = torch.arange(row_tri.numel(), device=dev) - torch.repeat_interleave(row_first, rows)
        crow = coef[row_tri]
        lo, hi = _row_spans(crow.to(torch.float64), dv_row.to(torch.float64),
                            (box[row_tri, 1] - box[row_tri, 0]).to(torch.float64))
        n = (hi - lo + 1).clamp(min=0)
        dvf = dv_row.to(torch.float32)
        a_row = crow[:, 0:3].contiguous()
        e_row = torch.stack([crow[:, 3 + i] * dvf + crow[:, 6 + i] for i in range(3)], 1)
        g_row = live_g[row_tri]
        b_row = torch.div(g_row, F_, rounding_mode="floor")
        f_row = g_row - b_row * F_
        pix_row = b_row * (H * W) + (box[row_tri, 2] + dv_row) * W + box[row_tri, 0]
        del crow
        csum = torch.cumsum(n, 0)
        total = int(csum[-1].item())
        start, done = 0, 0
        R = n.numel()
        while start < R:
            end = R if total - done <= _CHUNK else \
                max(int(torch.searchsorted(csum, done + _CHUNK, right=True).item()), start + 1)
            nn = n[start:end]
            r = torch.repeat_interleave(torch.arange(start, end, device=dev), nn)
            first = torch.cumsum(nn, 0) - nn
            du_i = torch.arange(r.numel(), device=dev) - torch.repeat_interleave(first, nn) + lo[r]
            du = du_i.to(torch.float32)
            # row constants e_i = b_i·dv + d_i (as the numba kernel), gathered per candidate with a_i
            l0 = a_row[r, 0] * du + e_row[r, 0]
            l1 = a_row[r, 1] * du + e_row[r, 1]
            l2 = a_row[r, 2] * du + e_row[r, 2]
            s = (l0 + l1) + l2
            tol = s * eps
            hit = (s > 0) & (s <= inv_near) & (l0 >= -tol) & (l1 >= -tol) & (l2 >= -tol)
            pix = pix_row[r] + du_i
            sbits = s.view(torch.int32).to(torch.int64)
            key = ((0x7F800000 - sbits) << 32) | f_row[r]
            keys.scatter_reduce_(0, pix[hit], key[hit], reduce="amin")
            done = int(csum[end - 1].item()) if end < R else total
            start = end

    found = keys != torch.iinfo(torch.int64).max
    face_id = torch.where(found, keys & 0xFFFFFFFF, torch.full_like(keys, -1)).to(torch.int32)
    idx = torch.nonzero(found).squeeze(1)
    b = torch.div(idx, H * W, rounding_mode="floor")
    p = idx - b * (H * W)
    pos = torch.full((B * F_,), -1, dtype=torch.int64, device=dev)
    pos[live_g] = torch.arange(live_g.numel(), device=dev)
    g = pos[b * F_ + face_id[idx].long()]
    u = p % W
    vv = torch.div(p, W, rounding_mode="floor")
    l0, l1, l2, s = _eval(coef[g], (u - box[g, 0]).to(torch.float32), (vv - box[g, 2]).to(torch.float32))
    inv_depth = torch.zeros(B * H * W, dtype=torch.float32, device=dev)
    inv_depth[idx] = s
    bary = torch.zeros(B * H * W, 3, dtype=torch.float32, device=dev)
    bary[idx] = torch.stack([l0 / s, l1 / s, l2 / s], dim=1)
    return face_id.view(B, H, W), inv_depth.view(B, H, W), bary.view(B, H, W, 3)
