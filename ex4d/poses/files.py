"""Source poses from files: our ``source_cameras.json`` (``"frame": "world"``) or a COLMAP model folder.

Both come back in our conventions (OpenCV w2c [T, 4, 4], world = source frame 0,
translations in the depth's units) as a :class:`LoadedPoses`.

* ``cameras.json`` with ``"frame": "world"`` (what ``ex4d poses`` and every run
  write as ``source_cameras.json``): one camera per frame. A file whose first
  camera is not the identity is re-based on it (world := frame 0). Its units
  are taken as the depth's.
* A COLMAP model (a folder with ``cameras``, ``images``, ``points3D`` as
  ``.bin`` or ``.txt``, read with pycolmap: ``pip install 'ex4d[poses]'``).
  Images are matched to frames in the order of their names; every frame needs
  a registered image. COLMAP's scale is arbitrary, so it is fitted to the
  depth: the median ratio of the depth map to the COLMAP z-depth over the
  model's 3D points seen in each frame. COLMAP puts pixel centres at
  half-integers; we shift by 0.5 px to our integer-centred pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import check_w2c, invert_w2c, scale_intrinsics
from ..errors import Ex4dError, check

__all__ = ["LoadedPoses", "load_source_poses", "read_colmap_model"]


@dataclass(frozen=True)
class LoadedPoses:
    """Source poses read from a file: w2c [T, 4, 4] (world = frame 0), K [3, 3] at the frame size, a note."""

    w2c: np.ndarray
    K: np.ndarray
    note: str


def _rebase(w2c: np.ndarray) -> tuple[np.ndarray, bool]:
    """w2c @ c2w[0] so that frame 0 is the world; and whether that changed anything."""
    if np.allclose(w2c[0], np.eye(4), atol=1e-9):
        return w2c, False
    return w2c @ invert_w2c(w2c[0]), True


def load_source_poses(path: str | os.PathLike, num_frames: int, width: int, height: int,
                      depth=None) -> LoadedPoses:
    """Source poses of ``num_frames`` frames of ``width``×``height`` from a cameras.json or a COLMAP model.

    ``depth`` (indexable per frame, z-depth [H, W]) is needed for a COLMAP model (its scale).
    """
    p = Path(path)
    check(p.exists(), f"--source-poses {p}: not found; give a cameras.json with \"frame\": \"world\" "
                      "(e.g. a previous run's source_cameras.json) or a COLMAP model folder")
    if p.is_dir():
        check(depth is not None, "internal: a COLMAP model needs the depth to fix its scale")
        return read_colmap_model(p, num_frames, width, height, depth)
    from ..io.camera_files import read_cameras_json

    check(p.suffix.lower() == ".json", f"--source-poses {p}: expected a cameras.json or a COLMAP model folder")
    cam = read_cameras_json(p)
    check(cam.frame == "world",
          f"--source-poses {p}: its cameras are relative to each source frame (\"frame\": \"source\", or no "
          "'frame' field), i.e. a novel-view path, not source poses; give a file with \"frame\": \"world\" "
          "(ex4d poses writes one as source_cameras.json)")
    check(cam.num_frames == num_frames,
          f"--source-poses {p}: has {cam.num_frames} cameras but the run has {num_frames} frames")
    K = cam.K[0]
    if (cam.width, cam.height) != (width, height):
        K = scale_intrinsics(K, width / cam.width, height / cam.height)
    w2c, moved = _rebase(cam.w2c)
    note = f"read from {p}" + (" (re-based on its first camera)" if moved else "")
    return LoadedPoses(w2c=w2c, K=K, note=note)


def read_colmap_model(folder: str | os.PathLike, num_frames: int, width: int, height: int, depth) -> LoadedPoses:
    """Source poses from a COLMAP sparse model folder; see the module docstring."""
    try:
        import pycolmap
    except ImportError:
        raise Ex4dError("reading a COLMAP model needs pycolmap: pip install 'ex4d[poses]' (or pip install pycolmap)")
    folder = Path(folder)
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as e:  # noqa: BLE001 - pycolmap raises plain RuntimeErrors/ValueErrors
        raise Ex4dError(f"--source-poses {folder}: not a readable COLMAP model (cameras/images/points3D .bin or "
                        f".txt): {e}") from None
    images = sorted(rec.images.values(), key=lambda im: im.name)
    check(len(images) >= num_frames,
          f"--source-poses {folder}: the model has {len(images)} images but the run has {num_frames} frames; "
          "every frame needs a registered image (matched in name order)")
    images = images[:num_frames]
    w2c = np.tile(np.eye(4), (num_frames, 1, 1))
    for t, im in enumerate(images):
        has_pose = im.has_pose() if callable(getattr(im, "has_pose", None)) else getattr(im, "has_pose", True)
        check(bool(has_pose), f"--source-poses {folder}: image {im.name} (frame {t}) is not registered")
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        w2c[t, :3, :4] = np.asarray(cfw.matrix(), dtype=np.float64)
    cam = images[0].camera if getattr(images[0], "camera", None) is not None else rec.cameras[images[0].camera_id]
    K = np.asarray(cam.calibration_matrix(), dtype=np.float64)
    K[0, 2] -= 0.5  # COLMAP: pixel centres at half-integers
    K[1, 2] -= 0.5
    if (int(cam.width), int(cam.height)) != (width, height):
        K = scale_intrinsics(K, width / int(cam.width), height / int(cam.height))
    # scale: depth map / COLMAP z over each frame's observed 3D points
    ratios = []
    sx, sy = width / int(cam.width), height / int(cam.height)
    for t, im in enumerate(images):
        d = np.asarray(depth[t], dtype=np.float64)
        for p2 in im.points2D:
            if not p2.has_point3D():
                continue
            X = np.asarray(rec.points3D[p2.point3D_id].xyz, dtype=np.float64)
            z = float(w2c[t, 2, :3] @ X + w2c[t, 2, 3])
            u = int(round((p2.xy[0]) * sx - 0.5))
            v = int(round((p2.xy[1]) * sy - 0.5))
            if z > 0 and 0 <= u < width and 0 <= v < height:
                ratios.append(d[v, u] / z)
    check(len(ratios) >= 10, f"--source-poses {folder}: too few 3D points seen in the frames ({len(ratios)}) to "
                             "fit COLMAP's scale to the depth")
    scale = float(np.median(ratios))
    w2c, _ = _rebase(w2c)
    w2c[:, :3, 3] *= scale
    w2c = check_w2c(w2c, f"COLMAP model {folder}")
    return LoadedPoses(w2c=w2c, K=K, note=f"COLMAP model {folder} ({len(images)} images, scale {scale:.4g} to the "
                                          f"depth from {len(ratios)} points)")
