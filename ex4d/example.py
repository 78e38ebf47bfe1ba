"""The bundled example: a small dynamic 3D scene with exact depth, rendered by our own rasterizer.

A room corner seen from the source camera (OpenCV axes, y down): a textured
back wall, a tiled floor, a striped box, a pillar, and a ball that rolls
across the floor in front of them. Geometry is a few hundred triangles; each
pixel's colour comes from a procedural texture evaluated at the exact
surface point (face id + barycentrics from the rasterizer), so the frames and
the depth maps are exact and reproducible, with nothing downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .cameras import default_intrinsics
from .errors import check
from .render.numba_raster import rasterize_numba

__all__ = ["ExampleScene", "make_example", "example_frame", "example_scene_mesh", "example_scene_colors"]


@dataclass(frozen=True)
class ExampleScene:
    """Frames and exact depth of the example.

    ======  ==================  ===================================
    field   shape, dtype        meaning
    ======  ==================  ===================================
    frames  [T, H, W, 3] uint8  RGB video
    depth   [T, H, W] float32   exact z-depth (scene units, metres)
    K       [3, 3] float64      intrinsics (the default for H×W)
    fps     float               frame rate
    ======  ==================  ===================================
    """

    frames: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    fps: float


def _quad(p0, p1, p2, p3, n: int = 4):
    """Vertices [(n+1)², 3] and faces of a quad p0→p1→p2→p3 split into n×n cells."""
    s, t = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2, p3))
    pts = ((1 - s) * (1 - t))[..., None] * p0 + (s * (1 - t))[..., None] * p1 \
        + (s * t)[..., None] * p2 + ((1 - s) * t)[..., None] * p3
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _box(center, size):
    cx, cy, cz = center
    sx, sy, sz = (s / 2 for s in size)
    c = [np.array([cx + i * sx, cy + j * sy, cz + k * sz]) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]
    # corners indexed by (i, j, k) bits: 0=(-,-,-) 1=(-,-,+) 2=(-,+,-) 3=(-,+,+) 4=(+,-,-) ...
    sides = [(0, 4, 6, 2), (1, 3, 7, 5), (0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3)]
    parts = [_quad(c[a], c[b], c[d], c[e], 2) for a, b, d, e in sides]
    return _merge(parts)


def _sphere(center, radius, n: int = 24):
    th, ph = np.meshgrid(np.linspace(0, math.pi, n + 1), np.linspace(0, 2 * math.pi, 2 * n + 1), indexing="ij")
    pts = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1) * radius + np.asarray(center)
    idx = np.arange(pts.shape[0] * pts.shape[1]).reshape(pts.shape[:2])
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _cylinder(x, z, radius, y0, y1, n: int = 32):
    ang = np.linspace(0, 2 * math.pi, n + 1)
    top = np.stack([x + radius * np.cos(ang), np.full_like(ang, y0), z + radius * np.sin(ang)], 1)
    bot = np.stack([x + radius * np.cos(ang), np.full_like(ang, y1), z + radius * np.sin(ang)], 1)
    pts = np.concatenate([top, bot])
    i = np.arange(n)
    faces = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i + 1, i + n + 2, i + n + 1], 1)])
    return pts, faces


def _merge(parts):
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += v.shape[0]
    return np.concatenate(verts), np.concatenate(faces)


def _texture(obj: np.ndarray, X: np.ndarray, t: float) -> np.ndarray:
    """RGB [N, 3] float in [0, 1] for object ids [N] at world points X [N, 3]."""
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    rgb = np.zeros((X.shape[0], 3))
    # 0 back wall: warm bricks with mortar lines and a soft gradient
    m = obj == 0
    row = np.floor(y[m] / 0.25)
    brick_x = (x[m] + 0.25 * (row % 2)) / 0.5
    mortar = (np.abs(y[m] / 0.25 - np.round(y[m] / 0.25)) < 0.06) | (np.abs(brick_x - np.round(brick_x)) < 0.03)
    shade = 0.75 + 0.25 * np.sin(np.floor(brick_x) * 12.9898 + row * 78.233) ** 2
    rgb[m] = np.where(mortar[:, None], [0.82, 0.80, 0.74], np.stack([0.72 * shade, 0.36 * shade, 0.24 * shade], 1))
    # 1 floor: checker tiles
    m = obj == 1
    chk = (np.floor(x[m] / 0.5) + np.floor(z[m] / 0.5)) % 2
    rgb[m] = np.where(chk[:, None] > 0, [0.86, 0.84, 0.78], [0.22, 0.30, 0.38])
    # 2 box: diagonal stripes
    m = obj == 2
    st = np.floor((x[m] + y[m] + z[m]) / 0.12) % 2
    rgb[m] = np.where(st[:, None] > 0, [0.95, 0.78, 0.20], [0.20, 0.45, 0.85])
    # 3 pillar: vertical bands
    m = obj == 3
    band = np.floor(np.arctan2(z[m] - 5.0, x[m] - 1.3) / (math.pi / 6)) % 2
    rgb[m] = np.where(band[:, None] > 0, [0.35, 0.70, 0.40], [0.92, 0.92, 0.92])
    # 4 ball: red and white segments that rotate as it rolls
    m = obj == 4
    seg = np.floor((np.arctan2(y[m] - 0.85, x[m] - _ball_x(t)) + 2.5 * t * math.pi * 2) / (math.pi / 4)) % 2
    rgb[m] = np.where(seg[:, None] > 0, [0.90, 0.15, 0.15], [0.97, 0.97, 0.95])
    return rgb


def _ball_x(t: float) -> float:
    return -0.9 + 1.8 * t


def _scene(t: float):
    """World meshes at normalised time t ∈ [0, 1]: (vertices [V,3], faces [F,3], object id per face [F])."""
    parts = [
        _quad((-5.0, -4.6, 8.0), (5.0, -4.6, 8.0), (5.0, 1.2, 8.0), (-5.0, 1.2, 8.0), 4),   # back wall
        _quad((-4.5, 1.2, 1.0), (4.5, 1.2, 1.0), (4.5, 1.2, 8.0), (-4.5, 1.2, 8.0), 8),     # floor (y down)
        _box((-1.1, 0.65, 4.6), (1.1, 1.1, 1.0)),                                            # box on the floor
        _cylinder(1.3, 5.0, 0.35, -4.6, 1.2),                                                # pillar
        _sphere((_ball_x(t), 0.85, 3.0), 0.35),                                              # rolling ball
    ]
    obj = np.concatenate([np.full(f.shape[0], i) for i, (_, f) in enumerate(parts)])
    v, f = _merge(parts)
    return v, f.astype(np.int32), obj


def example_scene_mesh(t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The example's exact world geometry at normalised time t ∈ [0, 1] (t = i / (T − 1) for frame i of T).

    Returns (vertices [V, 3] float64 world = source-camera OpenCV coordinates (metres),
    faces [F, 3] int32, object id per face [F] int: 0 back wall, 1 floor, 2 box, 3 pillar, 4 ball).
    """
    return _scene(t)


def example_scene_colors(obj: np.ndarray, X: np.ndarray, t: float) -> np.ndarray:
    """RGB [N, 3] float64 in [0, 1] of the example's surfaces: object ids [N] at world points X [N, 3], time t.

    The procedural texture times the scene's view-independent lighting, so any
    camera sees the same colour at a surface point (the exact novel view).
    """
    rgb = _texture(obj, X, t)
    # simple lighting: darker with distance, so depth edges are also colour edges
    return rgb * (1.1 - 0.04 * X[:, 2:3]).clip(0.6, 1.0)


def example_frame(index: int, num_frames: int = 49, width: int = 512, height: int = 512
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of the ``num_frames``-frame example: (RGB [H, W, 3] uint8, exact z-depth [H, W] float32).

    The same pixels as ``make_example(num_frames, width, height)`` gives for
    that frame, one frame at a time (for long example clips).
    """
    check(num_frames >= 1, f"num_frames must be ≥ 1, got {num_frames}")
    check(0 <= index < num_frames, f"frame {index} is outside the example's {num_frames} frames")
    check(width >= 16 and height >= 16, f"the example needs at least 16×16 pixels, got {width}×{height}")
    K = default_intrinsics(width, height)
    t = index / max(num_frames - 1, 1)
    v, f, obj = _scene(t)
    face_id, inv_depth, bary = rasterize_numba(v, f, K, height, width, near=0.05)
    check(bool((face_id >= 0).all()), "internal: the example scene left pixels empty")
    fid = face_id.reshape(-1)
    X = np.einsum("nk,nkc->nc", bary.reshape(-1, 3).astype(np.float64), v[f[fid]])
    rgb = example_scene_colors(obj[fid], X, t)
    frame = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8).reshape(height, width, 3)
    return frame, (1.0 / inv_depth).astype(np.float32)


def make_example(num_frames: int = 49, width: int = 512, height: int = 512, fps: float = 24.0) -> ExampleScene:
    """The example video: ``num_frames`` frames of ``width``×``height`` with exact depth (deterministic)."""
    check(num_frames >= 1, f"num_frames must be ≥ 1, got {num_frames}")
    check(width >= 16 and height >= 16, f"the example needs at least 16×16 pixels, got {width}×{height}")
    K = default_intrinsics(width, height)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    depth = np.empty((num_frames, height, width), dtype=np.float32)
    for i in range(num_frames):
        frames[i], depth[i] = example_frame(i, num_frames, width, height)
    return ExampleScene(frames=frames, depth=depth, K=K, fps=fps)
