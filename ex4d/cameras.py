"""Camera conventions: the single source of truth for every stage.

Conventions
-----------
* Axes are OpenCV's: x right, y down, z forward.
* Extrinsics are **world-to-camera** 4×4 matrices named ``w2c``
  (``X_cam = w2c @ X_world``); ``c2w`` is their inverse. The world frame is
  the source camera of the input video (``w2c = I`` for the input view).
* Intrinsics ``K`` [3, 3] are in pixels. Pixel (u, v) has its centre at
  integer coordinates (u, v), as in the original EX-4D: the top-left pixel's
  centre is (0, 0).
* Depth is z-depth (distance along the optical axis), never ray length.

Every conversion to another convention is a named function here with the
exact formula in its docstring.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import Ex4dError, check

__all__ = [
    "ORIGINAL_FOCAL",
    "ORIGINAL_SIZE",
    "OPENGL_FLIP",
    "default_intrinsics",
    "intrinsics_from_fov",
    "intrinsics_from_focal",
    "fov_from_intrinsics",
    "scale_intrinsics",
    "check_intrinsics",
    "check_principal_point",
    "check_w2c",
    "invert_w2c",
    "look_at_w2c",
    "opencv_to_opengl_w2c",
    "opengl_to_opencv_w2c",
    "unproject_depth",
    "project_points",
    "pixel_grid",
    "PATH_FRAMES",
    "check_path_frame",
    "novel_w2c_world",
    "relative_to_source",
    "source_view_w2c",
    "is_static_poses",
]

#: The original EX-4D uses f = 500 px for its 512-px frames.
ORIGINAL_FOCAL = 500.0
ORIGINAL_SIZE = 512
#: diag(1, -1, -1, 1): flips y and z to go between OpenCV and OpenGL camera axes.
OPENGL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
#: Frames a novel camera path can be given in: ``"source"`` — each w2c relative to that frame's source
#: camera (EX-4D's semantics; files without a ``frame`` field); ``"world"`` — world = source frame 0.
PATH_FRAMES = ("source", "world")


def intrinsics_from_focal(width: int, height: int, focal: float) -> np.ndarray:
    """K [3, 3] float64 with focal ``focal`` px and the principal point at the image centre.

    The principal point is (W/2, H/2) as in the original (not the geometric
    centre (W−1)/2 of integer-centred pixels), so that camera files are
    interchangeable with the original's.
    """
    check(focal > 0 and math.isfinite(focal), f"focal length must be a positive number of pixels, got {focal}")
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K [3, 3] whose field of view across the **longer** image side is ``fov_deg`` degrees."""
    check(0.0 < fov_deg < 180.0, f"--fov must be in (0, 180) degrees, got {fov_deg}")
    focal = max(width, height) / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    return intrinsics_from_focal(width, height, focal)


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """K [3, 3] matching the original at 512 px (f = 500) and keeping its field of view at any size.

    The original uses f = 500 px whatever the resolution, so its field of view
    changes with the frame size. We scale f with the longer side instead:
    f = 500 · max(W, H) / 512, i.e. a constant ≈54.2° across the longer side.
    """
    return intrinsics_from_focal(width, height, ORIGINAL_FOCAL * max(width, height) / ORIGINAL_SIZE)


def fov_from_intrinsics(K: np.ndarray, width: int, height: int) -> float:
    """Field of view in degrees across the longer image side."""
    f = K[0, 0] if width >= height else K[1, 1]
    return math.degrees(2.0 * math.atan(max(width, height) / 2.0 / f))


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K after resizing the image by (sx, sy), keeping pixel centres at integers.

    With integer-centred pixels, a resize maps u to (u + 0.5)·s − 0.5.
    """
    K2 = np.array(K, dtype=np.float64).copy()
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 1] *= sy
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def check_intrinsics(K, name: str = "intrinsics") -> np.ndarray:
    """Return K as float64 [3, 3] or raise Ex4dError naming what is wrong."""
    K = np.asarray(K, dtype=np.float64)
    check(K.shape == (3, 3), f"{name} must be a 3×3 matrix, got shape {K.shape}")
    check(bool(np.all(np.isfinite(K))), f"{name} contains non-finite values")
    check(K[0, 0] > 0 and K[1, 1] > 0, f"{name} must have positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
    check(np.allclose(K[2], [0, 0, 1]), f"{name} last row must be [0, 0, 1], got {K[2].tolist()}")
    check(K[1, 0] == 0, f"{name} must be upper triangular ([[fx, s, cx], [0, fy, cy], [0, 0, 1]]), "
                        f"got K[1][0] = {K[1, 0]}")
    return K


def check_principal_point(K: np.ndarray, width: int, height: int, name: str = "intrinsics") -> np.ndarray:
    """K [3, 3] unless its principal point lies outside the ``width``×``height`` image (then Ex4dError)."""
    cx, cy = float(K[0, 2]), float(K[1, 2])
    check(0 <= cx <= width and 0 <= cy <= height,
          f"{name}: principal point ({cx:g}, {cy:g}) lies outside the {width}×{height} image it is said to "
          "describe (normally near its centre); the size or the matrix is wrong")
    return K


def check_w2c(w2c, name: str = "w2c") -> np.ndarray:
    """Return extrinsics as float64 [T, 4, 4] (a single [4, 4] gets T = 1) or raise Ex4dError."""
    w2c = np.asarray(w2c, dtype=np.float64)
    if w2c.shape == (4, 4):
        w2c = w2c[None]
    check(w2c.ndim == 3 and w2c.shape[1:] == (4, 4), f"{name} must have shape [T, 4, 4], got {w2c.shape}")
    check(bool(np.all(np.isfinite(w2c))), f"{name} contains non-finite values")
    check(np.allclose(w2c[:, 3], [0, 0, 0, 1], atol=1e-6), f"{name}: the last row of every matrix must be [0, 0, 0, 1]")
    R = w2c[:, :3, :3]
    err = np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero(err > 1e-3)
    if bad.size:
        raise Ex4dError(f"{name}: the rotation of matrix {int(bad[0])} is not orthonormal (error {err[bad[0]]:.3g}); "
                        "cameras must be rigid world-to-camera transforms")
    det = np.linalg.det(R)
    bad = np.flatnonzero(det < 0)
    if bad.size:
        raise Ex4dError(f"{name}: matrix {int(bad[0])} has det(R) = {det[bad[0]]:.3g}, a reflection rather than a "
                        "rotation (an axis flipped, e.g. a left-handed convention); cameras must be proper rigid "
                        "world-to-camera transforms (det(R) = +1)")
    return w2c


def invert_w2c(w2c: np.ndarray) -> np.ndarray:
    """c2w [..., 4, 4] from rigid w2c [..., 4, 4] (R^T, −R^T t), exact for rigid transforms."""
    w2c = np.asarray(w2c, dtype=np.float64)
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3:]
    out = np.zeros_like(w2c)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def look_at_w2c(eye, target, down=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV w2c [4, 4] of a camera at ``eye`` looking at ``target``.

    ``down`` is the world direction that should appear downwards in the image
    (the original's ``up = (0, 1, 0)``, which in OpenCV axes points down).
    Axes: z = normalize(target − eye); x = normalize(down × z); y = z × x.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    nz = np.linalg.norm(z)
    check(nz > 0, "look-at: the camera position equals its target")
    z /= nz
    x = np.cross(np.asarray(down, dtype=np.float64), z)
    nx = np.linalg.norm(x)
    check(nx > 1e-12, "look-at: the viewing direction is parallel to the 'down' vector")
    x /= nx
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[0, :3], w2c[1, :3], w2c[2, :3] = x, y, z
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def opencv_to_opengl_w2c(w2c: np.ndarray) -> np.ndarray:
    """OpenGL-style w2c [..., 4, 4] = diag(1, −1, −1, 1) @ w2c_opencv (the original's saved extrinsics)."""
    return OPENGL_FLIP @ np.asarray(w2c, dtype=np.float64)


def opengl_to_opencv_w2c(w2c_gl: np.ndarray) -> np.ndarray:
    """OpenCV w2c [..., 4, 4] = diag(1, −1, −1, 1) @ w2c_opengl (the flip is its own inverse)."""
    return OPENGL_FLIP @ np.asarray(w2c_gl, dtype=np.float64)


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v), each [H, W] float64: integer pixel-centre coordinates."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return u, v


def unproject_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-space points [H, W, 3] float64: ((u − cx)/fx · z, (v − cy)/fy · z, z) for z-depth [H, W]."""
    depth = np.asarray(depth, dtype=np.float64)
    H, W = depth.shape
    u, v = pixel_grid(H, W)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.stack([x * depth, y * depth, depth], axis=-1)


def project_points(points: np.ndarray, K: np.ndarray, w2c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [..., 2] and z-depth [...] of world points [..., 3] seen by camera (K, w2c)."""
    pts = np.asarray(points, dtype=np.float64)
    if w2c is not None:
        pts = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = pts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * pts[..., 0] / z + K[0, 1] * pts[..., 1] / z + K[0, 2]
        v = K[1, 1] * pts[..., 1] / z + K[1, 2]
    return np.stack([u, v], axis=-1), z


# ----------------------------------------------------------------------------- source poses
# A moving source camera has poses w2c_src [T, 4, 4] (world = source frame 0, so w2c_src[0] = I). Frame t's
# DW-Mesh lives in source camera t's coordinates. A novel camera is given either *relative to the source*
# (w2c_rel[t] maps source-camera-t coordinates to the novel camera: EX-4D's semantics) or *in the world*
# (w2c_world[t] maps world coordinates to the novel camera). The two are related by
#     w2c_world[t] = w2c_rel[t] @ w2c_src[t]        w2c_rel[t] = w2c_world[t] @ c2w_src[t].
# These functions are the one place that conversion lives; every stage calls them.

def check_path_frame(frame: str) -> str:
    """Return ``frame`` if it is one of :data:`PATH_FRAMES`, else raise Ex4dError."""
    check(frame in PATH_FRAMES, f"path frame must be one of {', '.join(PATH_FRAMES)}, got {frame!r}")
    return frame


def _broadcast_src(w2c: np.ndarray, w2c_src) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.asarray(w2c, dtype=np.float64)
    single = w2c.ndim == 2
    w2c = w2c[None] if single else w2c
    if w2c_src is None:
        src = np.broadcast_to(np.eye(4), w2c.shape)
    else:
        src = np.asarray(w2c_src, dtype=np.float64)
        src = src[None] if src.ndim == 2 else src
        check(src.shape[1:] == (4, 4) and src.shape[0] in (1, w2c.shape[0]),
              f"source poses must be [T, 4, 4] with T = {w2c.shape[0]} (one per novel camera), got {src.shape}")
        src = np.broadcast_to(src, w2c.shape)
    return w2c, src


def novel_w2c_world(w2c: np.ndarray, w2c_src: np.ndarray | None, frame: str = "source") -> np.ndarray:
    """World-frame novel cameras w2c_world [T, 4, 4] float64 (world = source frame 0, OpenCV).

    Args:
        w2c: [T, 4, 4] (or [4, 4]) novel cameras, given in ``frame``.
        w2c_src: [T, 4, 4] source camera poses (world → source camera t); None = a tripod (identity).
        frame: ``"source"``: ``w2c[t]`` is relative to source camera t, so
            ``w2c_world[t] = w2c[t] @ w2c_src[t]``; ``"world"``: returned unchanged (as a copy).
    """
    check_path_frame(frame)
    w2c_, src = _broadcast_src(w2c, w2c_src)
    out = w2c_.copy() if frame == "world" else w2c_ @ src
    return out[0] if np.asarray(w2c).ndim == 2 else out


def relative_to_source(w2c: np.ndarray, w2c_src: np.ndarray | None, frame: str = "world") -> np.ndarray:
    """Novel cameras relative to each frame's source camera, w2c_rel [T, 4, 4] float64 (what the recon renders).

    Args:
        w2c: [T, 4, 4] (or [4, 4]) novel cameras, given in ``frame``.
        w2c_src: [T, 4, 4] source camera poses (world → source camera t); None = a tripod (identity).
        frame: ``"world"``: ``w2c_rel[t] = w2c[t] @ c2w_src[t]`` with ``c2w_src = w2c_src⁻¹``;
            ``"source"``: returned unchanged (as a copy).

    Frame t's DW-Mesh (in source camera t's coordinates) rendered with ``w2c_rel[t]`` is the view of the
    world-frame camera ``w2c[t]``.
    """
    check_path_frame(frame)
    w2c_, src = _broadcast_src(w2c, w2c_src)
    out = w2c_.copy() if frame == "source" else w2c_ @ invert_w2c(src)
    return out[0] if np.asarray(w2c).ndim == 2 else out


def source_view_w2c(w2c_world: np.ndarray, w2c_src_s: np.ndarray) -> np.ndarray:
    """w2c [..., 4, 4] that renders source frame s's DW-Mesh (source-camera-s coordinates) from a world camera.

    ``w2c_world @ c2w_src[s]``: e.g. the classical fill shows what frame s saw of a static surface in the
    novel view of frame t with ``source_view_w2c(w2c_world[t], w2c_src[s])``.
    """
    return np.asarray(w2c_world, dtype=np.float64) @ invert_w2c(w2c_src_s)


def is_static_poses(w2c_src: np.ndarray | None, atol: float = 1e-9) -> bool:
    """True if there are no source poses or every one is the identity (a tripod shot)."""
    return w2c_src is None or bool(np.allclose(w2c_src, np.eye(4), atol=atol))
