"""DW-Mesh (Depth Watertight Mesh): one frame's depth map as a closed triangle mesh.

Layout of a mesh built from an H×W frame
----------------------------------------
=========================  ==============================================  ==========================
part                       vertices                                        faces
=========================  ==============================================  ==========================
pixel grid                 ``H·W``, index ``v·W + u``, unprojected          ``2·(H−1)·(W−1)``: two per
                           along ((u−cx)/fx, (v−cy)/fy, 1)·depth            pixel quad (first all upper-
                                                                           left, then all lower-right)
border ring                ``2·(H+W)+4`` at the image edge (±½ px outside   ``2·(2·(H+W)+4)−8``: the
                           the outer pixel centres) at depth ``far``        "walls" joining grid and ring
back cap                   1 centre vertex at (0, 0, far)                  one fan triangle per ring edge
cover (``cover``, last)    3 per cover face (not shared)                   one per occluded grid face
=========================  ==============================================  ==========================

Every edge is shared by exactly two faces and the winding is consistent, so
the mesh is a closed, orientable surface (``trimesh`` calls it watertight and a
volume). The original EX-4D instead overwrote the outermost pixel ring with
depth 100 and added two cap faces, which leaves the border open and loses one
pixel of content at each side; we keep every pixel at its own depth.

Faces across depth discontinuities stay in the mesh (they occlude what is
behind them) but are flagged ``occluded``: a renderer marks the pixels where
such a face is the nearest surface as unknown. Wall and cap faces are always
occluded. Four criteria decide the grid faces:

* ``step`` (ours, the default): a face is occluded when one of its edges is a
  depth step — its disparity jump lies past the slopes beside it, which a
  plane at any angle, a crease or a limb never does — or is too steep to have
  been sampled (> ``step_max_deg``). Formulas in :mod:`ex4d.depth_edges`. It
  keeps the steep continuous surfaces (floors, walls seen at grazing angles,
  sphere limbs) that slope thresholds lose, and flags steps of every height.
* ``grazing`` (the previous default): the angle between the face normal and the
  source camera's viewing ray exceeds ``grazing_deg``; then, because depth
  estimators blur edges into ramps several pixels wide, faces within
  ``grow_px`` pixels of such an edge that are still steeper than
  ``grazing_weak_deg`` are flagged too (hysteresis, as in Canny's edge
  detector). The test runs on the depth after a 3×3 median (``prefilter``).
* ``angle`` (the original's default): the face's smallest interior angle is
  below ``min_angle_deg`` (2.5°).
* ``boundary`` (the original's alternative): z-extent / max(x-extent, y-extent)
  of the face is above ``boundary_ratio`` (2).

Before the criterion, ``sharpen`` decides how the depth is prepared, and the
mesh is built on the prepared depth (:func:`mesh_depth_and_occlusion`):
``snap`` (the default with ``step``) denoises noisy depth and straightens
estimators' soft ramps into steps where the colour changes (and, on such soft
depth, joins the grazing test); ``median`` is 3D-photo inpainting's
bilateral-median sharpening; ``none`` (the default with the other criteria)
keeps the depth as given.

**Cover faces** (``cover``; on with ``step``, :func:`cover_vertices`). An occluded face joins its corners
along their pixel rays at their own depths: across a step, a slanted strip from the near side down to the far
one. The true silhouette lies somewhere between those two pixel rays, and the near surface may reach as far
as the far pixel's ray (a box's corner or a limb between two pixel centres), so a novel ray can pass in front
of the strip, through that unsampled wedge, and show the far surface where the near one really is. Each
occluded grid face therefore gets a copy with all three corners moved along their pixel rays to the face's
smallest depth z_min = min(z_a, z_b, z_c): (x, y, z) = ((u − cx)/fx, (v − cy)/fy, 1)·z_min, flagged occluded.
The copy covers the wedge at the near side's depth, so what lies behind it renders as unknown. On the
benchmark's exact-depth scenes it cuts the leak from 0.11–0.16 % to 0.01–0.08 % of the known pixels for
0.3–0.5 points of the knowable set (README, DW-Mesh and rendering). Cover faces come after every other
face (ids ≥ the topology's), never count as scene surface, and are left out of exports
(``DWMesh.num_cover``).

``alpha_mode="vertex"`` reproduces the original's masking: instead of
per-face flags, every vertex of an occluded face gets alpha 0 (and colour 0),
alpha is interpolated across faces and thresholded at 125/255 by the renderer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .cameras import check_intrinsics
from .depth_edges import guard_faces, median3, prepare_depth, step_flags
from .errors import Ex4dError, check

__all__ = ["DWMesh", "MeshConfig", "FILTERS", "SHARPEN_MODES", "build_dwmesh", "default_far", "grid_faces",
           "grid_occlusion", "mesh_depth_and_occlusion", "median3", "export_ply"]

FILTERS = ("step", "grazing", "angle", "boundary")
ALPHA_MODES = ("face", "vertex")
#: Depth-edge sharpening before meshing: auto (snap with the step filter, none with the others), none, snap
#: (ours, colour-guided), median (the bilateral-median baseline of 3D-photo inpainting).
SHARPEN_MODES = ("auto", "none", "snap", "median")


@dataclass(frozen=True)
class MeshConfig:
    """How DW-Meshes are built (saved in config.json)."""

    filter: str = "step"             #: occlusion criterion: step | grazing | angle | boundary
    min_angle_deg: float = 2.5       #: angle filter threshold (the original's)
    boundary_ratio: float = 2.0      #: boundary filter threshold (the original's)
    grazing_deg: float = 84.0        #: grazing filter: strong edge threshold (degrees from the viewing ray)
    grazing_weak_deg: float = 75.0   #: grazing filter: faces this steep next to an edge are flagged too
    grow_px: int = 3                 #: grazing filter: how far (pixels) the flag grows along steep faces
    prefilter: int = 3               #: grazing filter: 3×3 median of the depth before the test (0: off)
    alpha_mode: str = "face"         #: face (per-face flags) | vertex (the original's per-vertex alpha)
    far_scale: float = 2.0           #: border ring and back cap at far_scale × the clip's largest depth
    step_min_deg: float = 45.0       #: step filter: a break rises at least this steeply (degrees from the ray)
    step_max_deg: float = 88.5       #: step filter: any face steeper than this breaks (too steep to be sampled)
    step_ratio: float = 0.25         #: step filter: a break's excess is at least this share of its jump
    step_noise: float = 6.0          #: step filter: … and this many times the frame's depth-noise level σ̂
    step_like: float = 0.6           #: step filter: beside a break, a jump must match the other slope this well
    soft_mode: str = "auto"          #: step filter: also the grazing test: on soft depth (auto) | on | off
    sharpen: str = "auto"            #: depth pre-pass: auto (snap with step, else none) | none | snap | median
    denoise: bool = True             #: pre-pass: 3×3 medians of the depth where it is noisy (σ̂ ≥ 0.1 %)
    snap_reach: int = 12             #: snap: longest half-ramp (pixels) it straightens
    snap_color_px: int = 3           #: snap: how far (pixels) colour may move an edge beyond its depth ramp
    snap_min_step: float = 0.02      #: snap: smallest depth step (relative) it straightens
    snap_guard_px: int = 1           #: snap: faces this close (pixels) to a straightened edge stay unknown
    snap_guard_move: float = 0.03    #: snap: … and faces on pixels it moved by more than this (relative depth)
    cover: str = "auto"              #: occluded faces also occlude at their nearest corner's depth: auto (with
    #:                                  the step filter) | on | off (the original's geometry)

    def __post_init__(self):
        check(self.filter in FILTERS, f"unknown mesh filter {self.filter!r}; choose one of {', '.join(FILTERS)}")
        check(self.alpha_mode in ALPHA_MODES,
              f"unknown alpha mode {self.alpha_mode!r}; choose one of {', '.join(ALPHA_MODES)}")
        check(0 < self.min_angle_deg < 60, f"min_angle_deg must be in (0, 60), got {self.min_angle_deg}")
        check(self.boundary_ratio > 0, f"boundary_ratio must be > 0, got {self.boundary_ratio}")
        check(0 < self.grazing_weak_deg <= self.grazing_deg < 90,
              f"need 0 < grazing_weak_deg ≤ grazing_deg < 90, got {self.grazing_weak_deg}, {self.grazing_deg}")
        check(self.grow_px >= 0, f"grow_px must be ≥ 0, got {self.grow_px}")
        check(self.prefilter in (0, 3), f"prefilter must be 0 (off) or 3 (3×3 median), got {self.prefilter}")
        check(self.far_scale > 1.0, f"far_scale must be > 1 (the cap must lie behind the scene), got {self.far_scale}")
        check(self.sharpen in SHARPEN_MODES,
              f"unknown sharpen mode {self.sharpen!r}; choose one of {', '.join(SHARPEN_MODES)}")
        check(0 < self.step_min_deg < self.step_max_deg < 90,
              f"need 0 < step_min_deg < step_max_deg < 90, got {self.step_min_deg}, {self.step_max_deg}")
        check(0 <= self.step_ratio < 1, f"step_ratio must be in [0, 1), got {self.step_ratio}")
        check(self.step_noise >= 0, f"step_noise must be ≥ 0, got {self.step_noise}")
        check(0 < self.step_like <= 2, f"step_like must be in (0, 2], got {self.step_like}")
        check(1 <= self.snap_reach <= 32, f"snap_reach must be in [1, 32] pixels, got {self.snap_reach}")
        check(0 <= self.snap_color_px <= 8, f"snap_color_px must be in [0, 8] pixels, got {self.snap_color_px}")
        check(self.snap_min_step > 0, f"snap_min_step must be > 0, got {self.snap_min_step}")
        check(0 <= self.snap_guard_px <= 8, f"snap_guard_px must be in [0, 8] pixels, got {self.snap_guard_px}")
        check(self.snap_guard_move > 0, f"snap_guard_move must be > 0, got {self.snap_guard_move}")
        check(self.soft_mode in ("auto", "on", "off"), f"soft_mode must be auto, on or off, got {self.soft_mode!r}")
        check(self.cover in ("auto", "on", "off"), f"cover must be auto, on or off, got {self.cover!r}")

    @property
    def use_cover(self) -> bool:
        """Whether occluded faces get cover faces (:func:`cover_vertices`): ``auto`` = with the step filter."""
        return self.cover == "on" or (self.cover == "auto" and self.filter == "step")

    @property
    def sharpen_mode(self) -> str:
        """The sharpening actually used: ``auto`` resolves to snap with the step filter, none with the others."""
        if self.sharpen != "auto":
            return self.sharpen
        return "snap" if self.filter == "step" else "none"


@dataclass(frozen=True)
class DWMesh:
    """One frame's DW-Mesh, in the source camera's frame (= world frame of that frame).

    ============  ===============  ==================================================
    field         shape, dtype     meaning
    ============  ===============  ==================================================
    vertices      [V, 3] float32   OpenCV camera-space points (scene units)
    faces         [F, 3] int32     vertex indices, consistent winding
    colors        [V, 3] float32   RGB in [0, 1] (0 where alpha_mode="vertex" zeroes it)
    occluded      [F] bool         True: face is geometry only, renders as unknown
    vertex_alpha  [V] float32      only for alpha_mode="vertex", else None
    height/width  int              source frame size; V = H·W + 2(H+W) + 5
    far           float            depth of the border ring and back cap
    num_cover     int              the last ``num_cover`` faces and ``3·num_cover``
                                   vertices are cover geometry (module docstring)
    ============  ===============  ==================================================
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    occluded: np.ndarray
    height: int
    width: int
    far: float
    vertex_alpha: np.ndarray | None = field(default=None)
    num_cover: int = 0

    @property
    def num_grid_faces(self) -> int:
        return 2 * (self.height - 1) * (self.width - 1)

    def without_cover(self) -> "DWMesh":
        """The mesh without its cover faces and vertices (the closed DW-Mesh itself, e.g. for export)."""
        if not self.num_cover:
            return self
        nf, nv = self.faces.shape[0] - self.num_cover, self.vertices.shape[0] - 3 * self.num_cover
        return dataclasses.replace(self, vertices=self.vertices[:nv], faces=self.faces[:nf], colors=self.colors[:nv],
                                   occluded=self.occluded[:nf], num_cover=0,
                                   vertex_alpha=None if self.vertex_alpha is None else self.vertex_alpha[:nv])


def default_far(depth: np.ndarray, far_scale: float = 2.0) -> float:
    """Depth of the border ring and back cap: ``far_scale`` × the largest depth in ``depth`` (any shape)."""
    return float(far_scale * np.max(depth))


def _ring_order(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) indices [R] into the (H+2)×(W+2) extended grid of its boundary loop, clockwise on screen from (0, 0)."""
    Hx, Wx = height + 2, width + 2
    top = [(0, j) for j in range(Wx)]
    right = [(i, Wx - 1) for i in range(1, Hx)]
    bottom = [(Hx - 1, j) for j in range(Wx - 2, -1, -1)]
    left = [(i, 0) for i in range(Hx - 2, 0, -1)]
    loop = np.array(top + right + bottom + left, dtype=np.int64)
    return loop[:, 0], loop[:, 1]


@functools.lru_cache(maxsize=8)
def _topology(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cached (faces [F,3] int32, ext_index [H+2,W+2] int64, ring_i [R], ring_j [R]) for an H×W grid."""
    H, W = height, width
    ext = np.empty((H + 2, W + 2), dtype=np.int64)
    ext[1:-1, 1:-1] = np.arange(H * W).reshape(H, W)
    ri, rj = _ring_order(H, W)
    R = ri.size
    ext[ri, rj] = H * W + np.arange(R)
    center = H * W + R

    def quads(rows: slice, cols: slice):
        a = ext[:-1, :-1][rows, cols].ravel()
        b = ext[:-1, 1:][rows, cols].ravel()
        c = ext[1:, :-1][rows, cols].ravel()
        d = ext[1:, 1:][rows, cols].ravel()
        return np.stack([c, a, b], -1), np.stack([c, b, d], -1)

    # Inner quads first, in the original's order (all upper-left triangles, then all lower-right ones).
    inner_a, inner_b = quads(slice(1, H), slice(1, W))
    # Wall quads: every extended-grid quad that touches the ring.
    qi, qj = np.mgrid[0 : H + 1, 0 : W + 1]
    wall = (qi == 0) | (qj == 0) | (qi == H) | (qj == W)
    a = ext[:-1, :-1][wall]
    b = ext[:-1, 1:][wall]
    c = ext[1:, :-1][wall]
    d = ext[1:, 1:][wall]
    walls = np.concatenate([np.stack([c, a, b], -1), np.stack([c, b, d], -1)])
    loop = ext[ri, rj]
    cap = np.stack([np.full(R, center), np.roll(loop, -1), loop], -1)
    faces = np.concatenate([inner_a, inner_b, walls, cap]).astype(np.int32)
    # wind so that normals point out of the enclosed volume; C order (column indexing gives F order, and
    # every render would copy the faces to C order again)
    faces = np.ascontiguousarray(faces[:, [0, 2, 1]])
    for arr in (faces, ext, ri, rj):
        arr.setflags(write=False)
    return faces, ext, ri, rj


def grid_faces(height: int, width: int) -> np.ndarray:
    """Faces [F, 3] int32 of the whole closed DW-Mesh topology for an H×W frame (cached, read-only)."""
    return _topology(height, width)[0]


@njit(cache=True, inline="always")
def _point(depth, i, j, fx, fy, cx, cy):  # pragma: no cover - compiled
    z = depth[i, j]
    return (j - cx) / fx * z, (i - cy) / fy * z, z


@njit(cache=True, inline="always")
def _steep_cos_ok(ax, ay, az, bx, by, bz, c2):  # pragma: no cover - compiled
    """True when the interior angle between edge vectors a and b is below acos(sqrt(c2)) (0° < angle < 90°)."""
    dot = ax * bx + ay * by + az * bz
    return dot > 0.0 and dot * dot > c2 * (ax * ax + ay * ay + az * az) * (bx * bx + by * by + bz * bz)


@njit(parallel=True, cache=True)
def _classify(depth, K, kind, t_strong, t_weak):  # pragma: no cover - compiled
    """Per grid face [2, H-1, W-1] uint8 flags of z-depth [H, W] with intrinsics K.

    bit 0: past the strong threshold, bit 1: past the weak one (grazing only).
    kind 0 grazing: the normal is more than t° from the viewing ray (cos² compared, no acos);
    kind 1 angle: the smallest interior angle is below t_strong°;
    kind 2 boundary: z-extent > t_strong × max(x-, y-extent).
    Face 0 of quad (i, j) is (c, a, b), face 1 is (c, b, d) with a=(i,j),
    b=(i,j+1), c=(i+1,j), d=(i+1,j+1), as in the topology.
    """
    H, W = depth.shape
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    out = np.zeros((2, H - 1, W - 1), dtype=np.uint8)
    cs = math.cos(math.radians(t_strong)) ** 2
    cw = math.cos(math.radians(t_weak)) ** 2
    for i in prange(H - 1):
        for j in range(W - 1):
            ax, ay, az = _point(depth, i, j, fx, fy, cx, cy)
            bx, by, bz = _point(depth, i, j + 1, fx, fy, cx, cy)
            qx, qy, qz = _point(depth, i + 1, j, fx, fy, cx, cy)
            dx, dy, dz = _point(depth, i + 1, j + 1, fx, fy, cx, cy)
            for f in range(2):
                # corners (p0, p1, p2) = (c, a, b) or (c, b, d)
                p0x, p0y, p0z = qx, qy, qz
                if f == 0:
                    p1x, p1y, p1z = ax, ay, az
                    p2x, p2y, p2z = bx, by, bz
                else:
                    p1x, p1y, p1z = bx, by, bz
                    p2x, p2y, p2z = dx, dy, dz
                flag = 0
                if kind == 0:
                    e1x = p1x - p0x; e1y = p1y - p0y; e1z = p1z - p0z
                    e2x = p2x - p0x; e2y = p2y - p0y; e2z = p2z - p0z
                    nx = e1y * e2z - e1z * e2y
                    ny = e1z * e2x - e1x * e2z
                    nz = e1x * e2y - e1y * e2x
                    rx = p0x + p1x + p2x; ry = p0y + p1y + p2y; rz = p0z + p1z + p2z
                    dot = nx * rx + ny * ry + nz * rz
                    nn = (nx * nx + ny * ny + nz * nz) * (rx * rx + ry * ry + rz * rz)
                    if dot * dot < cs * nn:
                        flag |= 1
                    if dot * dot < cw * nn:
                        flag |= 2
                elif kind == 1:
                    if (_steep_cos_ok(p1x - p0x, p1y - p0y, p1z - p0z, p2x - p0x, p2y - p0y, p2z - p0z, cs)
                            or _steep_cos_ok(p2x - p1x, p2y - p1y, p2z - p1z, p0x - p1x, p0y - p1y, p0z - p1z, cs)
                            or _steep_cos_ok(p0x - p2x, p0y - p2y, p0z - p2z, p1x - p2x, p1y - p2y, p1z - p2z, cs)):
                        flag = 1
                else:
                    ex = max(p0x, p1x, p2x) - min(p0x, p1x, p2x)
                    ey = max(p0y, p1y, p2y) - min(p0y, p1y, p2y)
                    ez = max(p0z, p1z, p2z) - min(p0z, p1z, p2z)
                    if ez > t_strong * (max(ex, ey) + 1e-8):
                        flag = 1
                out[f, i, j] = flag
    return out


@njit(parallel=True, cache=True)
def _grid_vertices(depth, K):  # pragma: no cover - compiled
    """Camera-space points [H·W, 3] float32 of z-depth [H, W] (unprojected in float64)."""
    H, W = depth.shape
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    out = np.empty((H * W, 3), dtype=np.float32)
    for i in prange(H):
        for j in range(W):
            x, y, z = _point(depth, i, j, fx, fy, cx, cy)
            k = i * W + j
            out[k, 0] = x
            out[k, 1] = y
            out[k, 2] = z
    return out


def _grow(seed: np.ndarray, allowed: np.ndarray, steps: int) -> np.ndarray:
    """Geodesic dilation of bool [h, w] ``seed`` within ``allowed`` by ``steps`` 8-neighbour steps."""
    out = seed.copy()
    for _ in range(steps):
        d = out.copy()
        d[1:] |= out[:-1]
        d[:-1] |= out[1:]
        d[:, 1:] |= out[:, :-1]
        d[:, :-1] |= out[:, 1:]
        d[1:, 1:] |= out[:-1, :-1]
        d[:-1, :-1] |= out[1:, 1:]
        d[1:, :-1] |= out[:-1, 1:]
        d[:-1, 1:] |= out[1:, :-1]
        new = d & allowed
        if np.array_equal(new | out, out):
            break
        out |= new
    return out


def _classic_occlusion(depth: np.ndarray, K: np.ndarray, config: MeshConfig) -> np.ndarray:
    """Flags [2·(H−1)·(W−1)] of the angle, boundary or grazing criterion on float64 z-depth [H, W]."""
    if config.filter == "angle":
        return _classify(depth, K, 1, config.min_angle_deg, config.min_angle_deg).reshape(-1).astype(bool)
    if config.filter == "boundary":
        return _classify(depth, K, 2, config.boundary_ratio, config.boundary_ratio).reshape(-1).astype(bool)
    # Depth estimates carry pixel noise that makes neighbouring pixels look like tiny depth edges; a 3×3
    # median removes it and keeps real edges (steps and ramps) where they are.
    test_depth = median3(depth) if config.prefilter else depth
    flags = _classify(test_depth, K, 0, config.grazing_deg, config.grazing_weak_deg)
    strong_f = (flags & 1).astype(bool)
    weak_f = (flags & 2).astype(bool)
    grown = _grow(strong_f.any(axis=0), weak_f.any(axis=0), config.grow_px)
    return (strong_f | (grown[None] & weak_f)).reshape(-1)


def mesh_depth_and_occlusion(depth: np.ndarray, K: np.ndarray, config: MeshConfig,
                             rgb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the z-depth [H, W] float64 the mesh is built on, occluded flags [2·(H−1)·(W−1)] bool of its grid faces).

    The depth is ``depth`` after the configured sharpening (:mod:`ex4d.depth_edges`; ``snap`` is guided by
    ``rgb`` [H, W, 3] uint8 where given), the flags are the configured criterion's on it.
    """
    K = np.ascontiguousarray(K, dtype=np.float64)
    d64, inv, sigma, guard, soft = prepare_depth(depth, rgb, config)
    flags = step_flags(inv, K, config, sigma) if config.filter == "step" else _classic_occlusion(d64, K, config)
    if config.filter == "step" and (config.soft_mode == "on" or (config.soft_mode == "auto" and soft)):
        flags |= _classic_occlusion(d64, K, dataclasses.replace(config, filter="grazing"))
    if guard is not None:
        flags |= guard_faces(guard)
    return d64, flags


def grid_occlusion(depth: np.ndarray, K: np.ndarray, config: MeshConfig, rgb: np.ndarray | None = None) -> np.ndarray:
    """Occluded flags [2·(H−1)·(W−1)] bool of the grid faces of the DW-Mesh of z-depth [H, W] (intrinsics K;
    ``rgb`` [H, W, 3] uint8 guides the ``snap`` sharpening, see :func:`mesh_depth_and_occlusion`)."""
    return mesh_depth_and_occlusion(depth, K, config, rgb)[1]


@njit(parallel=True, cache=True)
def _cover_vertices(depth, faces, K):  # pragma: no cover - compiled
    H, W = depth.shape
    fx = K[0, 0]; fy = K[1, 1]; cx = K[0, 2]; cy = K[1, 2]
    N = faces.shape[0]
    out = np.empty((3 * N, 3), dtype=np.float32)
    for n in prange(N):
        z = np.inf
        for k in range(3):
            z = min(z, depth[faces[n, k] // W, faces[n, k] % W])
        for k in range(3):
            i = faces[n, k] // W
            j = faces[n, k] % W
            out[3 * n + k, 0] = (j - cx) / fx * z
            out[3 * n + k, 1] = (i - cy) / fy * z
            out[3 * n + k, 2] = z
    return out


def cover_vertices(depth: np.ndarray, faces: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Cover-face corners [3·N, 3] float32 of grid ``faces`` [N, 3] (vertex index v·W + u) on z-depth [H, W] float64.

    Corner k of face n is pixel (u, v)'s ray at the face's smallest depth: ((u − cx)/fx·z, (v − cy)/fy·z, z)
    with z = min of the face's three depths, in float64 with the grid vertices' operations, then float32
    (the torch twin computes the same numbers).
    """
    return _cover_vertices(np.ascontiguousarray(depth, dtype=np.float64), np.ascontiguousarray(faces),
                           np.ascontiguousarray(K, dtype=np.float64))


def _append_cover(mesh: DWMesh, corners: np.ndarray) -> DWMesh:
    """``mesh`` with cover faces appended: ``corners`` [3·n, 3] float32, one triple per occluded grid face."""
    n = corners.shape[0] // 3
    if n == 0:
        return mesh
    base = mesh.vertices.shape[0]
    alpha = mesh.vertex_alpha
    return dataclasses.replace(
        mesh, vertices=np.concatenate([mesh.vertices, corners]),
        colors=np.concatenate([mesh.colors, np.zeros((3 * n, 3), np.float32)]),
        faces=np.concatenate([mesh.faces, (base + np.arange(3 * n, dtype=np.int32)).reshape(-1, 3)]),
        occluded=np.concatenate([mesh.occluded, np.ones(n, dtype=bool)]), num_cover=n,
        vertex_alpha=None if alpha is None else np.concatenate([alpha, np.zeros(3 * n, np.float32)]))


def _occluded_grid_faces(mesh: DWMesh) -> np.ndarray:
    """The occluded grid faces [n, 3] of ``mesh`` (grid faces come first)."""
    return mesh.faces[np.flatnonzero(mesh.occluded[: mesh.num_grid_faces])]


def with_cover(mesh: DWMesh) -> DWMesh:
    """``mesh`` (built with ``cover="off"``) plus a cover face per occluded grid face, from its own vertices.

    For a mesh whose flags or grid vertices were changed after it was built (the stereo eye's): each corner
    of an occluded grid face is scaled along its ray (through the camera centre) to the face's smallest z.
    """
    check(mesh.num_cover == 0, "with_cover: the mesh already has cover faces")
    corners = mesh.vertices[_occluded_grid_faces(mesh)].astype(np.float64)  # [n, 3, 3]
    z = corners[..., 2]
    return _append_cover(mesh, (corners * (z.min(axis=1, keepdims=True) / z)[..., None]).reshape(-1, 3)
                         .astype(np.float32))


def build_dwmesh(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, far: float | None = None,
                 config: MeshConfig | None = None) -> DWMesh:
    """The DW-Mesh of one frame.

    Args:
        rgb: [H, W, 3] uint8 (0–255) or float in [0, 1], RGB.
        depth: [H, W] float z-depth, finite and > 0 (scene units).
        K: [3, 3] intrinsics in pixels of this frame.
        far: depth of the border ring and back cap; must exceed every depth.
            Default ``config.far_scale`` × max(depth) (pass one value for a
            whole clip to keep the cap fixed over time).
        config: filter and alpha options.
    """
    config = config or MeshConfig()
    K = check_intrinsics(K)
    depth = np.asarray(depth)
    check(depth.ndim == 2, f"depth must be [H, W], got shape {depth.shape}")
    H, W = depth.shape
    check(H >= 2 and W >= 2, f"a DW-Mesh needs at least 2×2 pixels, got {W}×{H}")
    rgb = np.asarray(rgb)
    check(rgb.shape == (H, W, 3), f"rgb must be [H, W, 3] matching depth {H}×{W}, got shape {rgb.shape}")
    if not np.all(np.isfinite(depth)) or depth.min() <= 0:
        raise Ex4dError("depth must be finite and > 0 everywhere to build a DW-Mesh")
    if far is None:
        far = default_far(depth, config.far_scale)
    check(math.isfinite(far) and far > float(depth.max()),
          f"far={far} must exceed the largest depth {float(depth.max())}")

    faces, ext, ri, rj = _topology(H, W)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    rgb8 = rgb if rgb.dtype == np.uint8 else np.clip(np.asarray(rgb, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    d64, grid_occ = mesh_depth_and_occlusion(depth, K, config, rgb8)

    # Ring vertices sit half a pixel outside the outer pixel centres, on the far plane.
    u_ext = np.concatenate([[-0.5], np.arange(W, dtype=np.float64), [W - 0.5]])
    v_ext = np.concatenate([[-0.5], np.arange(H, dtype=np.float64), [H - 0.5]])
    ru, rv = u_ext[rj], v_ext[ri]
    ring = np.stack([(ru - cx) / fx * far, (rv - cy) / fy * far, np.full(ru.shape, far)], -1)
    center = np.array([[(W / 2.0 - cx) / fx * far, (H / 2.0 - cy) / fy * far, far]])
    vertices = np.concatenate([_grid_vertices(d64, K), ring.astype(np.float32), center.astype(np.float32)])

    col = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    ring_col = col[np.clip(ri - 1, 0, H - 1), np.clip(rj - 1, 0, W - 1)]
    # the back cap's centre takes the mean colour of its rim (the cap is occluded: never shown as known)
    colors = np.concatenate([col.reshape(-1, 3), ring_col, ring_col.mean(0, keepdims=True)])

    n_grid = 2 * (H - 1) * (W - 1)
    occluded = np.ones(faces.shape[0], dtype=bool)
    occluded[:n_grid] = grid_occ

    alpha = None
    if config.alpha_mode == "vertex":
        alpha = np.ones(vertices.shape[0], dtype=np.float32)
        alpha[faces[occluded].ravel()] = 0.0
        colors = colors * alpha[:, None]
    mesh = DWMesh(vertices=vertices, faces=faces, colors=colors.astype(np.float32), occluded=occluded,
                  height=H, width=W, far=float(far), vertex_alpha=alpha)
    if config.use_cover:
        mesh = _append_cover(mesh, cover_vertices(d64, _occluded_grid_faces(mesh), K))
    return mesh


def export_ply(mesh: DWMesh, path) -> None:
    """Write the mesh as binary PLY with vertex colours (atomic); cover faces are left out (a closed mesh)."""
    import trimesh

    from .io.atomic import atomic_path

    mesh = mesh.without_cover()
    colors = np.clip(mesh.colors * 255.0 + 0.5, 0, 255).astype(np.uint8)
    tm = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors, process=False)
    with atomic_path(path, suffix=".ply") as tmp:
        tm.export(tmp, file_type="ply")
