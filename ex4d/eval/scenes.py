"""Synthetic dynamic scenes with exact geometry, for the ground-truth novel-view benchmark.

A :class:`SyntheticScene` gives its world meshes at normalised time t ∈ [0, 1]
and the colour of any surface point (a procedural texture times a
view-independent shading), so it can be rendered exactly from *any* camera:
the source video with its exact depth, and the true novel views that the
pipeline tries to reproduce. World coordinates are the source camera's
(OpenCV axes, metres).

Scenes (:data:`SCENES`):

* ``example`` — the bundled example (:mod:`ex4d.example`): room corner, box,
  pillar, a ball rolling across the floor. Rendering it from the source camera
  reproduces :func:`ex4d.example.make_example` bit for bit.
* ``layout`` — another room: back wall, floor and an oblique left wall,
  seeded boxes on the floor, a ball
  coming towards the camera and a box spinning about its vertical axis.

Truly visible in the source (:func:`visible_in_source`): a surface point seen
by a novel camera counts as visible in the source when its projection lies in
the source image and its source z-depth lies within the depth range of the
2×2 source pixels around that projection (± ``tol``, relative): it is on the
sampled surface, not behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import check

__all__ = ["SyntheticScene", "TrueView", "SCENES", "get_scene", "render_truth", "render_source",
           "visible_in_source", "degrade_depth", "layout_scene", "SOURCE_NEAR", "SOURCE_MOTIONS", "source_motion"]

#: Near plane of the source renders (as :func:`ex4d.example.make_example`).
SOURCE_NEAR = 0.05


@dataclass(frozen=True)
class SyntheticScene:
    """A dynamic scene known exactly.

    ============  ==============================================================================
    field         meaning
    ============  ==============================================================================
    name          registry name
    mesh          t → (vertices [V, 3] float64 world, faces [F, 3] int32, object id per face [F])
    colors        (object ids [N], world points [N, 3], t) → RGB [N, 3] float in [0, 1]
    pivot_depth   subject distance on the source axis: the benchmark cameras orbit (0, 0, pivot_depth)
    ============  ==============================================================================
    """

    name: str
    mesh: Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]]
    colors: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    pivot_depth: float
    description: str = ""


@dataclass(frozen=True)
class TrueView:
    """The exact view of a scene from one camera.

    ======  ==================  =========================================================
    field   shape, dtype        meaning
    ======  ==================  =========================================================
    rgb     [H, W, 3] uint8      colour, 0 where no surface
    depth   [H, W] float32       z-depth of the nearest surface, inf where none
    points  [H, W, 3] float64    world point seen by each pixel, NaN where none
    has     [H, W] bool          a scene surface is seen
    ======  ==================  =========================================================
    """

    rgb: np.ndarray
    depth: np.ndarray
    points: np.ndarray
    has: np.ndarray


# ----------------------------------------------------------------------------------------------- scenes

def _example() -> SyntheticScene:
    from ..example import example_scene_colors, example_scene_mesh

    return SyntheticScene("example", example_scene_mesh, example_scene_colors, pivot_depth=3.0,
                          description="the bundled example: room corner, box, pillar, ball rolling across")


def _grid(p0, du, dv, nu: int, nv: int):
    """Planar patch p0 + s·du + r·dv, s, r ∈ [0, 1], as (vertices [(nu+1)(nv+1), 3], faces)."""
    s, r = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1))
    pts = np.asarray(p0, float) + s[..., None] * np.asarray(du, float) + r[..., None] * np.asarray(dv, float)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _unit_box():
    """Closed cube [−½, ½]³ (vertices, faces), 2×2 cells per side."""
    parts = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            e = np.eye(3)
            u, v = e[(axis + 1) % 3], e[(axis + 2) % 3]
            parts.append(_grid(e[axis] * sign - 0.5 * u - 0.5 * v, u, v, 2, 2))
    return _concat(parts)


def _unit_sphere(n: int = 20):
    th, ph = np.meshgrid(np.linspace(0, math.pi, n + 1), np.linspace(0, 2 * math.pi, 2 * n + 1), indexing="ij")
    pts = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1)
    idx = np.arange(pts.shape[0] * pts.shape[1]).reshape(pts.shape[:2])
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _concat(parts):
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def layout_scene(seed: int = 1) -> SyntheticScene:
    """The ``layout`` scene; ``seed`` places the static boxes and picks the textures (deterministic)."""
    rng = np.random.default_rng(seed)
    floor_y = 1.3
    box_v, box_f = _unit_box()
    ball_v, ball_f = _unit_sphere()
    # object: (kind, local vertices, faces, pose(t) → (R, centre, scale), pattern params)
    statics = []
    for i in range(3):
        size = rng.uniform(0.5, 1.0, 3)
        centre = np.array([rng.uniform(-2.2, 2.2), floor_y - size[1] / 2, rng.uniform(3.0, 5.8)])
        yaw = rng.uniform(-0.6, 0.6)
        statics.append((size, centre, yaw))
    palette = rng.uniform(0.15, 0.95, (8, 3))
    scales = rng.uniform(0.12, 0.35, 8)

    def poses(t: float):
        out = [(_rot_y(yaw), c, s) for s, c, yaw in statics]
        out.append((_rot_y(2.0 * t), np.array([0.6, floor_y - 1.05, 4.2]), np.array([0.7, 0.7, 0.7])))  # spinning box
        z = 4.8 - 2.6 * t
        out.append((_rot_y(-3.0 * t), np.array([-0.4 + 0.8 * t, floor_y - 0.4, z]), np.array([0.4, 0.4, 0.4])))  # ball
        return out

    walls = [
        _grid((-6.0, -4.8, 7.0), (12.0, 0, 0), (0, 6.1, 0), 6, 4),            # back wall z = 7
        _grid((-6.0, floor_y, 0.4), (12.0, 0, 0), (0, 0, 6.6), 8, 8),          # floor
        _grid((-4.6, -4.8, 0.4), (1.6, 0, 6.6), (0, 6.1, 0), 6, 4),            # oblique left wall
    ]

    def mesh(t: float):
        parts, obj = [], []
        for i, (v, f) in enumerate(walls):
            parts.append((v, f))
            obj.append(np.full(len(f), i))
        for j, (R, c, s) in enumerate(poses(t)):
            v, f = (ball_v, ball_f) if j == len(statics) + 1 else (box_v, box_f)
            parts.append(((v * s) @ R.T + c, f))
            obj.append(np.full(len(f), 3 + j))
        v, f = _concat(parts)
        return v, f.astype(np.int32), np.concatenate(obj)

    def colors(obj: np.ndarray, X: np.ndarray, t: float) -> np.ndarray:
        obj = np.asarray(obj)
        local = np.array(X, dtype=np.float64)
        ps = poses(t)
        for j, (R, c, s) in enumerate(ps):
            m = obj == 3 + j
            local[m] = ((X[m] - c) @ R) / s  # object coordinates: the texture moves with the object
        k = obj % len(scales)
        sc = scales[k][:, None]
        cells = np.floor(local / np.where(obj[:, None] >= 3, sc / 0.4, sc * 2.0)).sum(1) % 2
        stripes = np.floor((local[:, 0] + 0.6 * local[:, 1]) / (sc[:, 0] * 1.5)) % 2
        pat = np.where(obj % 2 == 0, cells, stripes)[:, None]
        c1, c2 = palette[k], palette[(k + 3) % len(palette)]
        rgb = np.where(pat > 0, c1, 0.35 * c2 + 0.1)
        rgb = rgb * (0.85 + 0.15 * np.sin(3.0 * local[:, 0:1] + 2.0 * local[:, 1:2]))
        return np.clip(rgb * (1.1 - 0.04 * X[:, 2:3]).clip(0.6, 1.0), 0.0, 1.0)

    return SyntheticScene("layout" if seed == 1 else f"layout-{seed}", mesh, colors, pivot_depth=3.5,
                          description=f"room with an oblique left wall, 3 seeded boxes (seed {seed}), a spinning box, "
                                      "a ball coming towards the camera")


#: Scene name → factory.
SCENES: dict[str, Callable[[], SyntheticScene]] = {"example": _example, "layout": layout_scene}


def get_scene(name: str) -> SyntheticScene:
    """The scene called ``name`` (see :data:`SCENES`; ``layout-N`` = the layout scene with seed N)."""
    if name.startswith("layout-") and name[7:].isdigit():
        return layout_scene(int(name[7:]))
    check(name in SCENES, f"unknown benchmark scene {name!r}; choose from {', '.join(SCENES)} or layout-N")
    return SCENES[name]()


# ----------------------------------------------------------------------------------------------- rendering

def render_truth(scene: SyntheticScene, t: float, K: np.ndarray, w2c: np.ndarray, height: int, width: int,
                 near: float = SOURCE_NEAR) -> TrueView:
    """The exact view of ``scene`` at time ``t`` from camera (K [3, 3], w2c [4, 4] OpenCV world-to-camera)."""
    from ..render.numba_raster import rasterize_numba

    v, f, obj = scene.mesh(t)
    w2c = np.asarray(w2c, dtype=np.float64)
    vc = v if np.array_equal(w2c, np.eye(4)) else v @ w2c[:3, :3].T + w2c[:3, 3]
    fid, inv, bary = rasterize_numba(vc, f, K, height, width, near=near)
    has = fid >= 0
    ids = np.maximum(fid, 0).reshape(-1)
    X = np.einsum("nk,nkc->nc", bary.reshape(-1, 3).astype(np.float64), v[f[ids]])
    rgb = scene.colors(obj[ids], X, t)
    rgb8 = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8).reshape(height, width, 3)
    rgb8[~has] = 0
    with np.errstate(divide="ignore"):
        depth = np.where(has, 1.0 / inv, np.inf).astype(np.float32)
    points = np.where(has[..., None], X.reshape(height, width, 3), np.nan)
    return TrueView(rgb=rgb8, depth=depth, points=points, has=has)


def render_source(scene: SyntheticScene, num_frames: int, K: np.ndarray, height: int, width: int,
                  w2c_src: np.ndarray | None = None, supersample: int = 1):
    """(frames [T, H, W, 3] uint8, exact depth [T, H, W] float32) of the source camera.

    ``w2c_src`` [T, 4, 4]: a moving source camera (world → camera t, OpenCV); None = fixed at w2c = I.
    ``supersample`` s > 1 renders the colours at s× the size and averages each s×s block (an
    antialiased image, as a real camera's: point-sampled edges move in whole-pixel jumps, which hides
    sub-pixel motion from a tracker); the depth stays the exact depth at the pixel centres.
    """
    from ..cameras import scale_intrinsics

    check(isinstance(supersample, int) and supersample >= 1, f"supersample must be an integer ≥ 1, got {supersample}")
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    depth = np.empty((num_frames, height, width), np.float32)
    Ks = scale_intrinsics(K, supersample, supersample)
    for i in range(num_frames):
        w2c = np.eye(4) if w2c_src is None else w2c_src[i]
        t = i / max(num_frames - 1, 1)
        view = render_truth(scene, t, K, w2c, height, width)
        check(bool(view.has.all()), f"internal: scene {scene.name!r} leaves source pixels empty")
        frames[i], depth[i] = view.rgb, view.depth
        if supersample > 1:
            s = supersample
            big = render_truth(scene, t, Ks, w2c, height * s, width * s)
            rgb = big.rgb.reshape(height, s, width, s, 3).astype(np.float32).mean(axis=(1, 3))
            frames[i] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return frames, depth


def visible_in_source(points: np.ndarray, source_depth: np.ndarray, K: np.ndarray, tol: float = 0.01) -> np.ndarray:
    """Pixels [H', W'] bool whose world point [H', W', 3] (NaN = none) is visible in the source view.

    Visible: the projection (u, v) lies in [0, W−1]×[0, H−1] (± 0.001 px) of the source z-depth
    map [H, W] (camera w2c = I, intrinsics K) and the point's z lies within
    [min·(1 − tol), max·(1 + tol)] of the depths of the 2×2 source pixels around (u, v).
    """
    from ..cameras import project_points

    H, W = source_depth.shape
    uv, z = project_points(points, K)
    uv = np.nan_to_num(uv, nan=-10.0, posinf=-10.0, neginf=-10.0)
    u, v = uv[..., 0], uv[..., 1]
    e = 1e-3  # pixel-centre points of the border rows/columns project to 0 or W−1 up to rounding
    inside = (u >= -e) & (u <= W - 1 + e) & (v >= -e) & (v <= H - 1 + e) & np.isfinite(z) & (np.nan_to_num(z) > 0)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, W - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, H - 2)
    d = source_depth
    nb = np.stack([d[v0, u0], d[v0, u0 + 1], d[v0 + 1, u0], d[v0 + 1, u0 + 1]])
    with np.errstate(invalid="ignore"):
        return inside & (z <= nb.max(0) * (1 + tol)) & (z >= nb.min(0) * (1 - tol))


def degrade_depth(depth: np.ndarray, blur_px: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Depth [T, H, W] float32 made like an estimate: Gaussian blur of ``blur_px`` px (soft edges), then
    multiplicative white noise of relative std ``noise`` (seeded per frame); kept > 0."""
    from scipy.ndimage import gaussian_filter

    check(blur_px >= 0 and noise >= 0, f"blur and noise must be ≥ 0, got {blur_px}, {noise}")
    out = np.asarray(depth, dtype=np.float32).copy()
    for t in range(out.shape[0]):
        if blur_px > 0:
            out[t] = gaussian_filter(out[t], blur_px)
        if noise > 0:
            rng = np.random.default_rng([seed, t])
            out[t] *= (1.0 + noise * rng.standard_normal(out[t].shape)).astype(np.float32)
    return np.maximum(out, 1e-3 * float(np.min(depth)))


#: Source camera motions of :func:`source_motion`.
SOURCE_MOTIONS = ("static", "handheld", "pan", "travel")


def source_motion(kind: str, num_frames: int, amount: float = 1.0, seed: int = 0) -> np.ndarray:
    """Source camera poses w2c_src [T, 4, 4] float64 (world = frame 0, so w2c_src[0] = I) of a known motion.

    Kinds (:data:`SOURCE_MOTIONS`), sizes times ``amount``, for scenes a few metres deep:

    * ``static``: a tripod (every pose the identity);
    * ``handheld``: smooth seeded wobble, ≈ ±0.15 m in x/y, ±0.1 m in z, ±3° about each axis;
    * ``pan``: pure rotation, 8° of yaw (right) and 3° of pitch (down) over the clip (no parallax);
    * ``travel``: a sideways dolly of 0.6 m with a 4° turn towards the centre.
    """
    from scipy.spatial.transform import Rotation

    check(kind in SOURCE_MOTIONS, f"unknown source motion {kind!r}; choose one of {', '.join(SOURCE_MOTIONS)}")
    T = int(num_frames)
    s = np.linspace(0.0, 1.0, T)
    rotvec = np.zeros((T, 3))
    centre = np.zeros((T, 3))
    if kind == "handheld":
        rng = np.random.default_rng(seed)
        ph = rng.uniform(0, 2 * math.pi, (2, 3))
        fr = rng.uniform(0.6, 1.4, (2, 3))
        wob = np.sin(2 * math.pi * fr[:, None, :] * s[None, :, None] + ph[:, None, :]) - np.sin(ph[:, None, :])
        centre = wob[0] * np.array([0.15, 0.15, 0.1])
        rotvec = wob[1] * np.radians(3.0)
    elif kind == "pan":
        rotvec = np.stack([np.radians(-3.0) * s, np.radians(8.0) * s, np.zeros(T)], 1)
    elif kind == "travel":
        centre = np.stack([0.6 * s, np.zeros(T), np.zeros(T)], 1)
        rotvec = np.stack([np.zeros(T), np.radians(-4.0) * s, np.zeros(T)], 1)
    R_c2w = Rotation.from_rotvec(rotvec * amount).as_matrix()
    w2c = np.zeros((T, 4, 4))
    w2c[:, :3, :3] = np.swapaxes(R_c2w, 1, 2)
    w2c[:, :3, 3] = -np.einsum("tij,tj->ti", w2c[:, :3, :3], centre * amount)
    w2c[:, 3, 3] = 1.0
    return w2c
