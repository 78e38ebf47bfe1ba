"""DW-Mesh building and shading in PyTorch: the GPU path of the recon stage, with no host round trips.

Same mesh as :func:`ex4d.dwmesh.build_dwmesh` (same topology, vertices,
colours and occlusion flags, computed with the same float64 operations in
the same order), kept as tensors on one device, rasterized by
:func:`ex4d.render.torch_raster.rasterize_torch` and shaded here. The tests
check that this path and the numba path give identical masks and colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..dwmesh import MeshConfig, _topology
from .torch_edges import guard_faces_torch, median3_torch, prepare_depth_torch, step_faces_torch

__all__ = ["TorchMesh", "build_dwmesh_torch", "render_torch", "grid_occlusion_torch", "mesh_depth_and_occlusion_torch",
           "median3_torch"]

_FACES: dict = {}


@dataclass(frozen=True)
class TorchMesh:
    """B DW-Meshes of one topology as tensors on one device (fields as :class:`ex4d.dwmesh.DWMesh`)."""

    vertices: torch.Tensor      # [B, V, 3] float32
    faces: torch.Tensor         # [F, 3] int64, shared
    colors: torch.Tensor        # [B, V, 3] float32 in [0, 1]
    occluded: torch.Tensor      # [B, F] bool
    vertex_alpha: torch.Tensor | None  # [B, V] float32 (alpha_mode="vertex") or None
    num_grid_faces: int


def _faces(H: int, W: int, device) -> torch.Tensor:
    key = (H, W, str(device))
    if key not in _FACES:
        _FACES[key] = torch.from_numpy(np.array(_topology(H, W)[0], dtype=np.int64)).to(device)
    return _FACES[key]


def _points(depth: torch.Tensor, K) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, z) [..., H, W] float64 camera-space coordinates: ((u − cx)/fx·z, (v − cy)/fy·z, z)."""
    H, W = depth.shape[-2:]
    u = torch.arange(W, dtype=torch.float64, device=depth.device)[None, :]
    v = torch.arange(H, dtype=torch.float64, device=depth.device)[:, None]
    # Divisors as device tensors: CUDA divides by a Python scalar through its reciprocal (see torch_raster).
    fx, fy = (torch.tensor(float(K[i, i]), dtype=torch.float64, device=depth.device) for i in (0, 1))
    cx, cy = float(K[0, 2]), float(K[1, 2])
    return (u - cx) / fx * depth, (v - cy) / fy * depth, depth


def _dilate(x: torch.Tensor) -> torch.Tensor:
    """8-neighbour dilation of bool [B, h, w]."""
    return F.max_pool2d(x[:, None].to(torch.float32), 3, stride=1, padding=1)[:, 0] > 0


def _classic_occlusion_torch(depth: torch.Tensor, K, config: MeshConfig) -> torch.Tensor:
    """Flags [B, 2·(H−1)·(W−1)] of the angle, boundary or grazing criterion on float64 z-depth [B, H, W]."""
    if config.filter == "grazing" and config.prefilter:
        depth = median3_torch(depth)
    x, y, z = _points(depth, K)

    def corners(t):
        return t[:, :-1, :-1], t[:, :-1, 1:], t[:, 1:, :-1], t[:, 1:, 1:]  # a, b, c, d

    ax, bx, qx, dx = corners(x)
    ay, by, qy, dy = corners(y)
    az, bz, qz, dz = corners(z)
    tris = [((qx, qy, qz), (ax, ay, az), (bx, by, bz)), ((qx, qy, qz), (bx, by, bz), (dx, dy, dz))]
    cs = math.cos(math.radians(config.min_angle_deg if config.filter == "angle" else config.grazing_deg)) ** 2
    cw = math.cos(math.radians(config.grazing_weak_deg)) ** 2
    strong, weak = [], []
    for p0, p1, p2 in tris:
        if config.filter == "grazing":
            e1 = [p1[k] - p0[k] for k in range(3)]
            e2 = [p2[k] - p0[k] for k in range(3)]
            nx = e1[1] * e2[2] - e1[2] * e2[1]
            ny = e1[2] * e2[0] - e1[0] * e2[2]
            nz = e1[0] * e2[1] - e1[1] * e2[0]
            rx = (p0[0] + p1[0]) + p2[0]
            ry = (p0[1] + p1[1]) + p2[1]
            rz = (p0[2] + p1[2]) + p2[2]
            dot = (nx * rx + ny * ry) + nz * rz
            nn = ((nx * nx + ny * ny) + nz * nz) * ((rx * rx + ry * ry) + rz * rz)
            strong.append(dot * dot < cs * nn)
            weak.append(dot * dot < cw * nn)
        elif config.filter == "angle":
            flag = torch.zeros_like(p0[0], dtype=torch.bool)
            for p, q, r in ((p0, p1, p2), (p1, p2, p0), (p2, p0, p1)):
                a = [q[k] - p[k] for k in range(3)]
                b = [r[k] - p[k] for k in range(3)]
                dot = (a[0] * b[0] + a[1] * b[1]) + a[2] * b[2]
                na = (a[0] * a[0] + a[1] * a[1]) + a[2] * a[2]
                nb = (b[0] * b[0] + b[1] * b[1]) + b[2] * b[2]
                flag |= (dot > 0) & (dot * dot > cs * na * nb)
            strong.append(flag)
        else:
            ext = [torch.maximum(torch.maximum(p0[k], p1[k]), p2[k]) - torch.minimum(torch.minimum(p0[k], p1[k]), p2[k])
                   for k in range(3)]
            strong.append(ext[2] > config.boundary_ratio * (torch.maximum(ext[0], ext[1]) + 1e-8))
    B = depth.shape[0]
    strong_f = torch.stack(strong, 1)  # [B, 2, h, w]
    if config.filter != "grazing":
        return strong_f.reshape(B, -1)
    weak_f = torch.stack(weak, 1)
    seed, allowed = strong_f.any(1), weak_f.any(1)
    grown = seed
    for _ in range(config.grow_px):
        nxt = grown | (_dilate(grown) & allowed)
        if torch.equal(nxt, grown):
            break
        grown = nxt
    return (strong_f | (grown[:, None] & weak_f)).reshape(B, -1)


def mesh_depth_and_occlusion_torch(depth: torch.Tensor, K, config: MeshConfig, rgb: torch.Tensor | None = None):
    """(mesh z-depth [B, H, W] float64, occluded flags [B, 2·(H−1)·(W−1)] bool) of float64 z-depth [B, H, W]
    (``rgb`` [B, H, W, 3] uint8 guides the snap): :func:`ex4d.dwmesh.mesh_depth_and_occlusion` frame by frame."""
    import dataclasses

    d, inv, sig, guard, soft = prepare_depth_torch(depth, rgb, config)
    if config.filter != "step":
        flags = _classic_occlusion_torch(d, K, config)
    else:
        flags = step_faces_torch(inv, K, config, sig)
        on = [config.soft_mode == "on" or (config.soft_mode == "auto" and s) for s in soft]
        if any(on):
            graz = _classic_occlusion_torch(d, K, dataclasses.replace(config, filter="grazing"))
            flags = flags | (graz & torch.tensor(on, device=d.device)[:, None])
    if guard is not None:
        flags = flags | guard_faces_torch(guard)
    return d, flags


def grid_occlusion_torch(depth: torch.Tensor, K, config: MeshConfig, rgb: torch.Tensor | None = None) -> torch.Tensor:
    """Occluded flags [B, 2·(H−1)·(W−1)] bool of the grid faces of float64 z-depth [B, H, W] (as the numba kernel)."""
    return mesh_depth_and_occlusion_torch(depth, K, config, rgb)[1]


def build_dwmesh_torch(rgb: torch.Tensor, depth: torch.Tensor, K, far: float, config: MeshConfig) -> TorchMesh:
    """The DW-Meshes of B frames on ``depth``'s device.

    rgb: [B, H, W, 3] uint8 tensor; depth: [B, H, W] float tensor (> 0,
    validated by the caller); K: [3, 3] (numpy) source intrinsics; far: border/cap depth.
    """
    dev = depth.device
    B, H, W = depth.shape
    d64, grid_occ = mesh_depth_and_occlusion_torch(depth.to(torch.float64), K, config, rgb)
    x, y, z = _points(d64, K)
    grid = torch.stack([x, y, z], -1).reshape(B, -1, 3).to(torch.float32)
    _, _, ri, rj = _topology(H, W)
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    u_ext = np.concatenate([[-0.5], np.arange(W, dtype=np.float64), [W - 0.5]])
    v_ext = np.concatenate([[-0.5], np.arange(H, dtype=np.float64), [H - 0.5]])
    ru, rv = u_ext[rj], v_ext[ri]
    ring = np.stack([(ru - cx) / fx * far, (rv - cy) / fy * far, np.full(ru.shape, far)], -1)
    center = np.array([[(W / 2.0 - cx) / fx * far, (H / 2.0 - cy) / fy * far, far]])
    extra = torch.from_numpy(np.concatenate([ring, center]).astype(np.float32)).to(dev)
    vertices = torch.cat([grid, extra[None].expand(B, -1, -1)], 1)

    col = rgb.to(torch.float32) / torch.tensor(255.0, device=dev)
    ri_t = torch.from_numpy(np.clip(ri - 1, 0, H - 1)).to(dev)
    rj_t = torch.from_numpy(np.clip(rj - 1, 0, W - 1)).to(dev)
    flat = col.reshape(B, -1, 3)
    colors = torch.cat([flat, col[:, ri_t, rj_t], flat.mean(1, keepdim=True)], 1)

    faces = _faces(H, W, dev)
    n_grid = 2 * (H - 1) * (W - 1)
    if config.use_cover:
        vertices, colors, faces = _add_cover(vertices, colors, faces, d64, grid_occ, K)
    occluded = torch.ones((B, faces.shape[0]), dtype=torch.bool, device=dev)
    occluded[:, :n_grid] = grid_occ
    alpha = None
    if config.alpha_mode == "vertex":
        alpha = torch.ones((B, vertices.shape[1]), dtype=torch.float32, device=dev)
        for b in range(B):
            alpha[b, faces[occluded[b]].reshape(-1)] = 0.0
        colors = colors * alpha[..., None]
    return TorchMesh(vertices, faces, colors, occluded, alpha, n_grid)


def _add_cover(vertices, colors, faces, d64, grid_occ, K):
    """Vertices, colours and faces with the cover faces (:func:`ex4d.dwmesh.cover_vertices`) appended.

    The topology is shared by the batch, so every grid face occluded in *some* frame gets a cover face, in
    grid order (the numba mesh's order); in a frame where that face is not occluded its three corners are
    one point, a degenerate triangle the rasterizer culls. The live cover faces of each frame are then the
    numba mesh's, in the same relative order, so both give the same pixels.
    """
    dev = d64.device
    B, H, W = d64.shape
    n_grid = grid_occ.shape[1]
    union = torch.nonzero(grid_occ.any(0), as_tuple=True)[0]
    if not union.numel():
        return vertices, colors, faces
    tri = faces[:n_grid][union]                                    # [N, 3] grid vertex indices
    idx = tri.reshape(-1)
    z = d64.reshape(B, -1)[:, idx].reshape(B, -1, 3).amin(-1).repeat_interleave(3, dim=1)  # [B, 3N]
    u = (idx % W).to(torch.float64)
    v = torch.div(idx, W, rounding_mode="floor").to(torch.float64)
    fx, fy = (torch.tensor(float(K[i, i]), dtype=torch.float64, device=dev) for i in (0, 1))
    cx, cy = float(K[0, 2]), float(K[1, 2])
    cover = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1).to(torch.float32)  # [B, 3N, 3]
    live = grid_occ[:, union].repeat_interleave(3, dim=1)         # [B, 3N]
    cover = torch.where(live[..., None], cover, torch.zeros((), dtype=torch.float32, device=dev))
    base = vertices.shape[1]
    new_faces = base + torch.arange(3 * union.numel(), device=dev, dtype=faces.dtype).reshape(-1, 3)
    return (torch.cat([vertices, cover], 1), torch.cat([colors, torch.zeros_like(cover)], 1),
            torch.cat([faces, new_faces]))


def _transform_batch(verts: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """[B, V, 3] float64 camera-space = R_b·X + t_b, ``((x·r0 + y·r1) + z·r2) + t`` like the numba kernel."""
    x, y, z = verts[..., 0], verts[..., 1], verts[..., 2]
    rows = [((x * w2c[:, i, 0, None] + y * w2c[:, i, 1, None]) + z * w2c[:, i, 2, None]) + w2c[:, i, 3, None]
            for i in range(3)]
    return torch.stack(rows, -1)


def render_torch(mesh: TorchMesh, K, w2c, height: int, width: int, near: float = 1e-3):
    """Render B meshes with B cameras (K [B, 3, 3], w2c [B, 4, 4], numpy or tensors), all on the mesh's device.

    Returns tensors color [B,H,W,3] float32 (0 where unknown), mask [B,H,W] bool,
    depth [B,H,W] float32 of scene surfaces (inf where none, or only the border
    walls / back cap), face_id [B,H,W] int32.
    """
    from .torch_raster import rasterize_torch_batch

    dev = mesh.vertices.device
    w2c_t = torch.tensor(np.asarray(w2c, dtype=np.float64), device=dev)
    K_t = torch.tensor(np.asarray(K, dtype=np.float64), device=dev)
    verts = _transform_batch(mesh.vertices.to(torch.float64), w2c_t)
    face_id, inv_depth, bary = rasterize_torch_batch(verts, mesh.faces, K_t, height, width, near)
    B = face_id.shape[0]
    hit = face_id >= 0
    fid = face_id.clamp(min=0).long()
    tri = mesh.faces[fid]  # [B, H, W, 3]
    bidx = torch.arange(B, device=dev)[:, None, None]
    b0, b1, b2 = bary[..., 0:1], bary[..., 1:2], bary[..., 2:3]
    c = mesh.colors
    color = (b0 * c[bidx, tri[..., 0]] + b1 * c[bidx, tri[..., 1]]) + b2 * c[bidx, tri[..., 2]]
    if mesh.vertex_alpha is None:
        mask = hit & ~mesh.occluded[bidx, fid]
    else:
        a = mesh.vertex_alpha
        alpha = (bary[..., 0] * a[bidx, tri[..., 0]] + bary[..., 1] * a[bidx, tri[..., 1]]) \
            + bary[..., 2] * a[bidx, tri[..., 2]]
        mask = hit & (alpha > torch.tensor(125.0 / 255.0, dtype=torch.float32))
    color = torch.where(mask[..., None], color.clamp(0.0, 1.0), torch.zeros((), device=dev))
    scene = hit & (fid < mesh.num_grid_faces)
    depth = torch.where(scene, 1.0 / inv_depth, torch.full_like(inv_depth, float("inf")))
    return color, mask, depth, face_id
