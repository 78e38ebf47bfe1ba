"""Building blocks of the synthetic benchmark scenes, and the scenes made from them.

Every object lies inside the source camera's view (half-width ≈ 0.51·z): what the source never saw cannot be
shown by any per-frame mesh, and would count as a leak of every method alike. A scene is a list of
:class:`Part` s (a triangle mesh in its own coordinates, a pose over time and a
procedural texture evaluated in those coordinates, so textures move with their objects), turned into a
:class:`SyntheticScene` by :func:`kit_scene`. Scenes made here (registered in :data:`ex4d.eval.scenes.SCENES`):

* ``slopes`` — a deep hall: floor, ceiling and side walls that the source sees at grazing angles, a long panel
  receding diagonally, a ramp, a box and a ball rolling across: steep *continuous* surfaces that must stay known.
* ``spheres`` — smooth spheres of several sizes on the floor, floating, one half behind another, and a log
  (horizontal cylinder): limbs that the source sees edge-on.
* ``steps`` — panels standing out from the back wall by 1 % … 80 % of its depth, terraces descending away from
  the camera (depth steps of many heights between two grazing treads), a staircase rising away (creases, no
  steps) and thin poles: steps of every height that must be unknown.
* ``random-N`` — a held-out style: a room with N-seeded boxes (any rotation), spheres, slanted panels and
  cylinders, one of them moving; for checking on scenes nobody tuned for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["SyntheticScene", "Part", "kit_scene", "grid", "unit_box", "unit_sphere", "unit_cylinder", "concat",
           "rot_x", "rot_y", "rot_z", "slopes_scene", "spheres_scene", "steps_scene", "random_scene"]


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


# ----------------------------------------------------------------------------------------------- geometry

def grid(p0, du, dv, nu: int, nv: int):
    """Planar patch p0 + s·du + r·dv, s, r ∈ [0, 1], as (vertices [(nu+1)(nv+1), 3], faces)."""
    s, r = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1))
    pts = np.asarray(p0, float) + s[..., None] * np.asarray(du, float) + r[..., None] * np.asarray(dv, float)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def concat(parts):
    """One (vertices, faces) of several."""
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def unit_box():
    """Closed cube [−½, ½]³ (vertices, faces), 2×2 cells per side."""
    parts = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            e = np.eye(3)
            u, v = e[(axis + 1) % 3], e[(axis + 2) % 3]
            parts.append(grid(e[axis] * sign - 0.5 * u - 0.5 * v, u, v, 2, 2))
    return concat(parts)


def unit_sphere(n: int = 20):
    """Unit sphere (vertices, faces): n latitude bands, 2n longitude segments."""
    th, ph = np.meshgrid(np.linspace(0, math.pi, n + 1), np.linspace(0, 2 * math.pi, 2 * n + 1), indexing="ij")
    pts = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1)
    idx = np.arange(pts.shape[0] * pts.shape[1]).reshape(pts.shape[:2])
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return pts.reshape(-1, 3), np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def unit_cylinder(n: int = 48):
    """Closed cylinder of radius 1 around the y axis, y ∈ [−½, ½] (vertices, faces)."""
    ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
    ring = np.stack([np.cos(ang), np.zeros(n), np.sin(ang)], 1)
    top, bot = ring + [0, -0.5, 0], ring + [0, 0.5, 0]
    pts = np.concatenate([top, bot, [[0, -0.5, 0], [0, 0.5, 0]]])
    i, j = np.arange(n), (np.arange(n) + 1) % n
    side = np.concatenate([np.stack([i, j, i + n], 1), np.stack([j, j + n, i + n], 1)])
    caps = np.concatenate([np.stack([np.full(n, 2 * n), j, i], 1), np.stack([np.full(n, 2 * n + 1), i + n, j + n], 1)])
    return pts, np.concatenate([side, caps])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class Part:
    """One object of a kit scene.

    ``verts`` [V, 3] / ``faces`` [F, 3] in object coordinates; ``pose`` t → (R [3, 3], centre [3], scale [3])
    places them (world = R·(scale·local) + centre; None = identity); the texture is ``pattern`` (0 checker,
    1 stripes, 2 rings) of cell size ``cell`` (object units) in colours ``c1``/``c2`` (RGB in [0, 1]).
    """

    verts: np.ndarray
    faces: np.ndarray
    pose: Callable[[float], tuple] | None
    pattern: int
    cell: float
    c1: tuple
    c2: tuple


def _static(R=None, c=(0.0, 0.0, 0.0), s=(1.0, 1.0, 1.0)):
    pose = (np.eye(3) if R is None else np.asarray(R, float), np.asarray(c, float), np.asarray(s, float))
    return lambda t: pose


def kit_scene(name: str, parts: list[Part], pivot_depth: float, description: str) -> SyntheticScene:
    """A :class:`SyntheticScene` of ``parts`` (object id = index in the list)."""

    def poses(t):
        return [(np.eye(3), np.zeros(3), np.ones(3)) if p.pose is None else p.pose(t) for p in parts]

    def mesh(t: float):
        vs, fs, obj = [], [], []
        for k, (p, (R, c, s)) in enumerate(zip(parts, poses(t))):
            vs.append((p.verts * s) @ R.T + c)
            fs.append(p.faces)
            obj.append(np.full(len(p.faces), k))
        v, f = concat(list(zip(vs, fs)))
        return v, f.astype(np.int32), np.concatenate(obj)

    def colors(obj: np.ndarray, X: np.ndarray, t: float) -> np.ndarray:
        obj = np.asarray(obj)
        rgb = np.zeros((len(obj), 3))
        for k, (p, (R, c, s)) in enumerate(zip(parts, poses(t))):
            m = obj == k
            if not m.any():
                continue
            local = ((X[m] - c) @ R) / p.cell   # object axes, in texture cells (world units / cell)
            if p.pattern == 0:
                pat = np.floor(local + 0.3183).sum(1) % 2  # offset: faces at whole cells must not flicker
            elif p.pattern == 1:
                pat = np.floor(local[:, 0] + 0.6 * local[:, 1] + 0.3 * local[:, 2]) % 2
            else:
                pat = np.floor(np.sqrt((local[:, [0, 2]] ** 2).sum(1)) + 0.5 * local[:, 1]) % 2
            col = np.where(pat[:, None] > 0, np.asarray(p.c1, float), np.asarray(p.c2, float))
            rgb[m] = col * (0.85 + 0.15 * np.sin(1.7 * local[:, 0:1] + 1.1 * local[:, 1:2]))
        return np.clip(rgb * (1.1 - 0.035 * X[:, 2:3]).clip(0.55, 1.0), 0.0, 1.0)

    return SyntheticScene(name, mesh, colors, pivot_depth, description)


def _room(rng, floor_y: float, depth: float, half_w: float, top: float, n: int = 8):
    """Floor, back wall and side walls of a room (x ∈ ±half_w, y from top to floor_y, z from 0.3 to depth)."""
    h = floor_y - top
    L = depth - 0.3
    parts = [
        grid((-half_w, floor_y, 0.3), (2 * half_w, 0, 0), (0, 0, L), n, 2 * n),          # floor
        grid((-half_w, top, depth), (2 * half_w, 0, 0), (0, h, 0), n, n),                 # back wall
        grid((-half_w, top, 0.3), (0, 0, L), (0, h, 0), 2 * n, n),                        # left wall
        grid((half_w, top, 0.3), (0, 0, L), (0, h, 0), 2 * n, n),                         # right wall
    ]
    out = []
    for k, (v, f) in enumerate(parts):
        c1 = tuple(rng.uniform(0.45, 0.95, 3))
        c2 = tuple(rng.uniform(0.05, 0.4, 3))
        out.append(Part(v, f, None, k % 2, float(rng.uniform(0.4, 0.9)), c1, c2))
    return out


def _obj(v, f, pose, rng, pattern=None, cell=None) -> Part:
    return Part(v, f, pose, int(rng.integers(0, 3)) if pattern is None else pattern,
                float(rng.uniform(0.08, 0.25)) if cell is None else cell,
                tuple(rng.uniform(0.4, 1.0, 3)), tuple(rng.uniform(0.0, 0.45, 3)))


def slopes_scene() -> SyntheticScene:
    """The ``slopes`` scene (see the module docstring)."""
    rng = np.random.default_rng(11)
    floor_y, top = 1.1, -2.2
    parts = _room(rng, floor_y, 16.0, 4.6, top)
    parts.append(Part(*grid((-4.6, top, 0.3), (9.2, 0, 0), (0, 0, 15.7), 8, 16), None, 0, 0.7,
                      (0.9, 0.9, 0.85), (0.3, 0.25, 0.2)))                                       # ceiling
    # a long panel receding diagonally (its normal ~70–85° from the source's rays)
    parts.append(Part(*grid((-1.95, -1.6, 4.0), (0.6, 0, 7.0), (0, 2.7, 0), 12, 3), None, 1, 0.35,
                      (0.95, 0.7, 0.2), (0.15, 0.3, 0.6)))
    # a ramp rising from the floor away from the camera, and a box
    parts.append(Part(*grid((0.3, floor_y, 3.0), (1.2, 0, 0), (0, -0.9, 4.5), 4, 8), None, 0, 0.3,
                      (0.3, 0.8, 0.4), (0.8, 0.2, 0.3)))
    bv, bf = unit_box()
    parts.append(_obj(bv, bf, _static(rot_y(0.5), (2.2, floor_y - 0.35, 6.0), (0.9, 0.7, 0.7)), rng))
    sv, sf = unit_sphere(32)
    parts.append(_obj(sv, sf, lambda t: (rot_y(-2.0 * t), np.array([-0.3 + 0.9 * t, floor_y - 0.3, 4.0 - 0.8 * t]),
                                         np.full(3, 0.3)), rng))
    return kit_scene("slopes", parts, 3.2, "deep hall seen at grazing angles: floor, ceiling, side walls, a "
                                            "receding panel, a ramp, a box, a rolling ball")


def spheres_scene() -> SyntheticScene:
    """The ``spheres`` scene (see the module docstring)."""
    rng = np.random.default_rng(12)
    floor_y = 1.2
    parts = _room(rng, floor_y, 7.5, 5.0, -4.5)
    sv, sf = unit_sphere(48)
    for c, r in (((-1.1, floor_y - 0.9, 4.3), 0.9), ((0.9, floor_y - 0.45, 3.1), 0.45),
                 ((0.15, -0.55, 2.5), 0.2), ((-0.1, -0.5, 5.3), 0.6)):
        parts.append(_obj(sv, sf, _static(rot_y(float(rng.uniform(0, 6))), c, (r, r, r)), rng))
    cv, cf = unit_cylinder(64)
    parts.append(_obj(cv, cf, _static(rot_z(math.pi / 2), (0.25, floor_y - 0.18, 2.4), (0.18, 1.2, 0.18)), rng))
    parts.append(_obj(sv, sf, lambda t: (rot_x(3.0 * t), np.array([1.5 - 1.0 * t, -0.2 + 0.3 * t, 4.0]),
                                         np.full(3, 0.3)), rng))
    return kit_scene("spheres", parts, 3.2, "smooth spheres on the floor, floating and overlapping, a log, a "
                                             "moving sphere: limbs seen edge-on")


def steps_scene() -> SyntheticScene:
    """The ``steps`` scene (see the module docstring)."""
    rng = np.random.default_rng(13)
    floor_y, wall = 1.2, 6.0
    parts = _room(rng, floor_y, wall, 5.0, -4.5)
    # panels standing out from the back wall by h of its depth
    for k, h in enumerate((0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)):
        z = wall / (1 + h)
        x0 = -1.6 + 0.47 * k
        parts.append(_obj(*grid((x0, -1.9, z), (0.4, 0, 0), (0, 1.0, 0), 2, 2), None, rng))
    # terraces descending away from the camera: each tread's edge occludes the next (steps of many heights)
    y, z = 0.25, 2.4
    for k, drop in enumerate((0.02, 0.05, 0.1, 0.2, 0.35)):
        parts.append(_obj(*grid((-1.15, y, z), (1.1, 0, 0), (0, 0, 0.45), 3, 2), None, rng, pattern=0, cell=0.15))
        parts.append(_obj(*grid((-1.15, y, z + 0.45), (1.1, 0, 0), (0, drop, 0), 3, 1), None, rng))
        y, z = y + drop, z + 0.45
    # a staircase rising away from the camera (risers face the camera: creases only)
    y, z = floor_y, 3.0
    for k in range(5):
        rise = 0.06 + 0.05 * k
        parts.append(_obj(*grid((0.15, y - rise, z), (1.2, 0, 0), (0, rise, 0), 3, 1), None, rng))
        parts.append(_obj(*grid((0.15, y - rise, z), (1.2, 0, 0), (0, 0, 0.4), 3, 2), None, rng))
        y, z = y - rise, z + 0.4
    # thin poles (≈ 2 and 5 px wide at 256 px)
    cv, cf = unit_cylinder(24)
    for x, r in ((1.5, 0.02), (1.75, 0.05)):
        parts.append(_obj(cv, cf, _static(None, (x, -1.6, 3.6), (r, 5.6, r)), rng))
    parts.append(_obj(*unit_box(), lambda t: (rot_y(1.5 * t), np.array([0.55, floor_y - 0.25, 2.0 + 0.4 * t]),
                                               np.full(3, 0.5)), rng))
    return kit_scene("steps", parts, 3.2, "panels 1–80 % in front of the wall, descending terraces, a rising "
                                           "staircase, thin poles, a spinning box")


def random_scene(seed: int) -> SyntheticScene:
    """The held-out ``random-N`` scene: a room with seeded boxes, spheres, panels and cylinders, one moving."""
    rng = np.random.default_rng(1000 + seed)
    floor_y = float(rng.uniform(0.9, 1.6))
    depth = float(rng.uniform(6.0, 11.0))
    parts = _room(rng, floor_y, depth, float(rng.uniform(4.0, 6.0)), -0.6 * depth - 0.5)
    bv, bf = unit_box()
    sv, sf = unit_sphere(40)
    cv, cf = unit_cylinder(40)
    n = int(rng.integers(4, 8))
    for k in range(n):
        kind = int(rng.integers(0, 4))
        z = float(rng.uniform(2.2, depth - 1.0))
        x = float(rng.uniform(-0.35, 0.35)) * z        # inside the source's view (half-width ≈ 0.51·z)
        if kind == 0:                                                    # box, any rotation, on the floor or up
            s = rng.uniform(0.3, 1.1, 3)
            R = rot_y(float(rng.uniform(-1, 1))) @ rot_x(float(rng.uniform(-0.6, 0.6)))
            c = (x, floor_y - s[1] / 2 - float(rng.choice([0.0, rng.uniform(0.5, 1.5)])), z)
            parts.append(_obj(bv, bf, _static(R, c, s), rng))
        elif kind == 1:                                                  # sphere
            r = float(rng.uniform(0.15, 0.8))
            parts.append(_obj(sv, sf, _static(rot_y(float(rng.uniform(0, 6))),
                                              (x, floor_y - r - float(rng.uniform(0, 1.2)), z), (r, r, r)), rng))
        elif kind == 2:                                                  # slanted panel
            R = rot_y(float(rng.uniform(-1.4, 1.4))) @ rot_x(float(rng.uniform(-1.3, 1.3)))
            w, h = float(rng.uniform(0.5, 2.0)), float(rng.uniform(0.5, 2.0))
            v, f = grid((-0.5, -0.5, 0), (1, 0, 0), (0, 1, 0), 4, 4)
            parts.append(_obj(v, f, _static(R, (x, floor_y - 0.4 - float(rng.uniform(0, 1.5)), z), (w, h, 1)), rng))
        else:                                                            # cylinder, upright or lying
            r, L = float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.6, 2.5))
            R = rot_z(math.pi / 2) @ rot_x(float(rng.uniform(-1, 1))) if rng.random() < 0.5 else np.eye(3)
            y = floor_y - (r if not np.array_equal(R, np.eye(3)) else L / 2)
            parts.append(_obj(cv, cf, _static(R, (x, y, z), (r, L, r)), rng))
    # one moving object: a sphere crossing the room
    r = float(rng.uniform(0.2, 0.45))
    x0, x1, z0, z1 = (float(v) for v in rng.uniform(-1.8, 1.8, 2).tolist() + rng.uniform(2.0, 5.0, 2).tolist())
    parts.append(_obj(sv, sf, lambda t: (rot_y(2.0 * t),
                                         np.array([x0 + (x1 - x0) * t, floor_y - r, z0 + (z1 - z0) * t]),
                                         np.full(3, r)), rng))
    return kit_scene(f"random-{seed}", parts, float(rng.uniform(2.8, 3.6)),
                     f"held-out room with {n} seeded objects (seed {seed}) and a moving sphere")
