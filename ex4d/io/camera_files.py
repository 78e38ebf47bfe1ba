"""Camera files: our ``cameras.json`` and the original EX-4D's ``camera_*.npz``.

``cameras.json`` (written next to every render, accepted back as a trajectory)::

    {
      "convention": "opencv_w2c",          # or "opengl_w2c" (read only; converted)
      "width": 512, "height": 512,         # pixels of the frames K refers to
      "fps": 30.0,
      "K": [[fx, s, cx], [0, fy, cy], [0, 0, 1]],   # or T of them when K varies (zoom)
      "w2c": [[[...4...] × 4] × T],         # OpenCV world-to-camera
      "frame": "source"                    # optional: "source" (default) | "world"
    }

``frame`` says what "world" means for the w2c: ``"source"`` (also files
without the field, as every file written before source poses existed) —
each w2c is relative to that frame's source camera, EX-4D's semantics;
``"world"`` — world = source frame 0 (a camera path locked to the scene
while the source moves, or the source poses themselves,
``source_cameras.json``). :mod:`ex4d.cameras` converts between the two.

Original npz (``recon.py --save_camera``): ``extrinsics`` (T, 4, 4) float32
OpenGL-style w2c = diag(1, −1, −1, 1) @ w2c_opencv; ``intrinsics`` (3, 3)
float32. It carries no image size and no fps: the size is taken as twice
the principal point (the original always puts it at (W/2, H/2)).

Every reader returns a :class:`CameraFile` in our conventions (OpenCV w2c,
per-frame K); every writer is atomic.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import (PATH_FRAMES, check_intrinsics, check_principal_point, check_w2c, opencv_to_opengl_w2c,
                       opengl_to_opencv_w2c)
from ..errors import Ex4dError, check
from .atomic import atomic_save_npz, atomic_write_text
from .json_input import float_array, read_json, type_name

__all__ = [
    "CameraFile",
    "CAMERAS_JSON_CONVENTIONS",
    "write_cameras_json",
    "read_cameras_json",
    "write_ex4d_npz",
    "read_ex4d_npz",
    "load_camera_file",
    "fit_camera_size",
]

#: Accepted values of the ``convention`` field (we always write the first).
CAMERAS_JSON_CONVENTIONS = ("opencv_w2c", "opengl_w2c")


@dataclass(frozen=True, eq=False)
class CameraFile:
    """Cameras read from a file, in our conventions.

    ============ ============== ===================================================
    field        shape / type   meaning
    ============ ============== ===================================================
    ``w2c``      [T, 4, 4] f64  OpenCV world-to-camera, world = source camera
    ``K``        [T, 3, 3] f64  intrinsics in pixels, for a ``width``×``height`` image
    ``width``    int            image width the intrinsics refer to
    ``height``   int            image height
    ``fps``      float | None   frame rate (None for the original npz, which has none)
    ``frame``    str            "source" (w2c relative to each source frame) or "world"
    ``convention`` str          the file's own axis convention (``opengl_w2c`` for the npz)
    ============ ============== ===================================================
    """

    w2c: np.ndarray
    K: np.ndarray
    width: int
    height: int
    fps: float | None
    frame: str = "source"
    convention: str = "opencv_w2c"  #: the axis convention the file declared (its matrices are converted)

    @property
    def num_frames(self) -> int:
        return int(self.w2c.shape[0])


# ----------------------------------------------------------------------------- helpers

def _check_size(width, height) -> tuple[int, int]:
    for name, v in (("width", width), ("height", height)):
        check(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0,
              f"camera file: {name} must be a positive integer, got {v!r}")
    return int(width), int(height)


def _check_fps(fps) -> float:
    ok = isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool)
    check(ok and math.isfinite(float(fps)) and float(fps) > 0, f"camera file: fps must be a positive number, got {fps!r}")
    return float(fps)


def _per_frame_K(K, T: int, name: str = "K") -> np.ndarray:
    """K as [T, 3, 3] float64 from [3, 3] or [T, 3, 3], each checked."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(check_intrinsics(K, name), (T, 3, 3)).copy()
    check(K.shape == (T, 3, 3), f"{name} must have shape [3, 3] or [{T}, 3, 3] (one per camera), got {K.shape}")
    for i in range(T):
        check_intrinsics(K[i], f"{name}[{i}]")
    return K


def _constant_K(K: np.ndarray) -> np.ndarray | None:
    """The single [3, 3] K if all of [T, 3, 3] are identical, else None."""
    return K[0] if np.all(K == K[0]) else None


def _nested_array(obj: dict, key: str, where: str, shape: tuple) -> np.ndarray:
    check(key in obj, f"{where}: missing key {key!r}")
    return float_array(obj[key], f"{where}: key {key!r}", shape)


def _npz_array(arrays: dict, key: str, where: str) -> np.ndarray:
    a = np.asarray(arrays[key])
    check(a.dtype.kind in "fiu", f"{where}: key {key!r} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    check(bool(np.all(np.isfinite(a))), f"{where}: key {key!r} holds non-finite values (NaN or inf)")
    return a


def fit_camera_size(K: np.ndarray, width: int, height: int, to_width: int, to_height: int,
                    source: str) -> tuple[np.ndarray, str | None]:
    """(K [T, 3, 3] at ``to_width``×``to_height``, a note or None) for intrinsics K given at ``width``×``height``.

    The same aspect ratio (up to the rounding of sides to multiples of 16–64,
    :func:`ex4d.io.depth.same_view`) is the same view at another resolution: K is scaled, with a note saying so. Another aspect ratio describes another
    image (another video, a crop, swapped sides) and is refused.
    """
    if (width, height) == (to_width, to_height):
        return K, None
    from .depth import same_view

    if not same_view(height, width, to_height, to_width):
        swapped = same_view(width, height, to_height, to_width)
        raise Ex4dError(f"{source} describes a {width}×{height} image (aspect {width / height:.3f}) but the frames are "
                        f"{to_width}×{to_height} (aspect {to_width / to_height:.3f})"
                        + ("; width and height look swapped" if swapped else "")
                        + ": these cameras belong to another video; give cameras for this one")
    from ..cameras import scale_intrinsics

    sx, sy = to_width / width, to_height / height
    K2 = np.stack([scale_intrinsics(k, sx, sy) for k in K])
    return K2, (f"{source}: its intrinsics are for {width}×{height}; scaled to the frames' {to_width}×{to_height} "
                f"(×{sx:.4g} horizontally, ×{sy:.4g} vertically)")


# ----------------------------------------------------------------------------- cameras.json

def write_cameras_json(path: str | os.PathLike, w2c: np.ndarray, K: np.ndarray, width: int, height: int,
                       fps: float, frame: str = "source", extra: dict | None = None) -> None:
    """Write ``cameras.json`` atomically.

    Args:
        w2c: [T, 4, 4] OpenCV world-to-camera.
        K: [3, 3] or [T, 3, 3] intrinsics (pixels). A per-frame K whose frames
            are all equal is written as one 3×3 matrix.
        width, height: image size in pixels that K refers to.
        fps: frame rate of the video the cameras belong to.
        frame: ``"source"`` (each w2c relative to that frame's source camera) or
            ``"world"`` (world = source frame 0); written as the ``frame`` field.
        extra: more JSON-able top-level fields (e.g. the focal length's uncertainty);
            readers ignore them.

    Floats are written with Python's shortest round-trip repr, so reading the
    file back gives bit-identical float64 arrays.
    """
    w2c = check_w2c(w2c)
    T = w2c.shape[0]
    K = _per_frame_K(K, T)
    width, height = _check_size(width, height)
    fps = _check_fps(fps)
    check(frame in PATH_FRAMES, f"camera file frame must be one of {', '.join(PATH_FRAMES)}, got {frame!r}")
    K1 = _constant_K(K)
    head = {"convention": CAMERAS_JSON_CONVENTIONS[0], "frame": frame, "width": width, "height": height, "fps": fps,
            **(extra or {})}
    parts = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    parts.append(f'  "K": {json.dumps(K1.tolist())}' if K1 is not None else f'  "K": {_matrix_list(K)}')
    parts.append(f'  "w2c": {_matrix_list(w2c)}')
    atomic_write_text(path, "{\n" + ",\n".join(parts) + "\n}\n")


def _matrix_list(mats: np.ndarray) -> str:
    """JSON for [T, n, n]: one matrix per line, so the file stays readable and diffable."""
    return "[\n" + ",\n".join("    " + json.dumps(m.tolist()) for m in mats) + "\n  ]"


def _camera_file_from_json(obj, where: str) -> CameraFile:
    check(isinstance(obj, dict), f"{where}: expected a JSON object at the top level, got {type_name(obj)}")
    if "w2c" not in obj and "keyframes" in obj:
        raise Ex4dError(f"{where}: this is a keyframe file, not a cameras.json; give it as a trajectory instead")
    check("convention" in obj, f"{where}: missing key 'convention' (one of {', '.join(CAMERAS_JSON_CONVENTIONS)})")
    conv = obj["convention"]
    check(isinstance(conv, str) and conv in CAMERAS_JSON_CONVENTIONS,
          f"{where}: key 'convention' is {conv!r}; accepted: {', '.join(CAMERAS_JSON_CONVENTIONS)}")
    for key in ("width", "height", "fps"):
        check(key in obj, f"{where}: missing key {key!r}")
    width, height = _check_size(obj["width"], obj["height"])
    fps = _check_fps(obj["fps"])
    frame = obj.get("frame", "source")
    check(isinstance(frame, str) and frame in PATH_FRAMES,
          f"{where}: key 'frame' is {frame!r}; accepted: {', '.join(PATH_FRAMES)} (or leave it out, which means source)")

    w2c = _nested_array(obj, "w2c", where, (None, 4, 4))
    check(w2c.shape[0] >= 1, f"{where}: key 'w2c' must be a list of T ≥ 1 4×4 matrices, got none")
    if conv == "opengl_w2c":
        w2c = opengl_to_opencv_w2c(w2c)
    w2c = check_w2c(w2c, f"{where}: key 'w2c'")
    check("K" in obj, f"{where}: missing key 'K'")
    K_raw = obj["K"]
    shape = (3, 3) if isinstance(K_raw, list) and K_raw and isinstance(K_raw[0], list) and K_raw[0] \
        and not isinstance(K_raw[0][0], list) else (w2c.shape[0], 3, 3)
    K = _per_frame_K(float_array(K_raw, f"{where}: key 'K'", shape), w2c.shape[0], f"{where}: key 'K'")
    for i in range(K.shape[0]):
        check_principal_point(K[i], width, height, f"{where}: key 'K'" + (f"[{i}]" if K.shape[0] > 1 else ""))
    return CameraFile(w2c=w2c, K=K, width=width, height=height, fps=fps, frame=frame, convention=conv)


def read_cameras_json(path: str | os.PathLike) -> CameraFile:
    """Read ``cameras.json`` → :class:`CameraFile` (OpenCV w2c [T, 4, 4], K [T, 3, 3]).

    ``"opengl_w2c"`` files are converted with diag(1, −1, −1, 1). The document is read through
    :func:`ex4d.io.json_input.read_json` (size, nesting, syntax) and every field is checked:
    Ex4dError naming the file and the offending key on any problem.
    """
    path = Path(path)
    check(path.is_file(), f"camera file not found: {path}")
    return _camera_file_from_json(read_json(path, f"camera file {path}"), str(path))


# ----------------------------------------------------------------------------- original npz

def write_ex4d_npz(path: str | os.PathLike, w2c_opencv: np.ndarray, K: np.ndarray) -> None:
    """Write the original's camera npz atomically.

    Args:
        w2c_opencv: [T, 4, 4] OpenCV world-to-camera.
        K: [3, 3] intrinsics, or [T, 3, 3] if all frames are equal (the format
            holds a single K; a zooming trajectory cannot be stored in it).

    Keys written: ``extrinsics`` (T, 4, 4) float32 = diag(1, −1, −1, 1) @ w2c,
    ``intrinsics`` (3, 3) float32 — as ``recon.py`` saves them.
    """
    w2c = check_w2c(w2c_opencv, "w2c_opencv")
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 3:
        K = _per_frame_K(K, w2c.shape[0])
        K1 = _constant_K(K)
        if K1 is None:
            raise Ex4dError("the original EX-4D npz holds one intrinsics matrix, but K varies over frames "
                            "(a zoom); use cameras.json, which stores per-frame K")
        K = K1
    K = check_intrinsics(K, "K")
    atomic_save_npz(path, extrinsics=opencv_to_opengl_w2c(w2c).astype(np.float32),
                    intrinsics=K.astype(np.float32))


def read_ex4d_npz(path: str | os.PathLike) -> CameraFile:
    """Read the original's camera npz → :class:`CameraFile` in OpenCV convention.

    The image size is taken as (round(2·cx), round(2·cy)), since the original
    always puts the principal point at (W/2, H/2); fps is None.
    """
    path = Path(path)
    check(path.is_file(), f"camera file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise Ex4dError(f"{path}: not a readable .npz file ({e})") from None
    for key, shape in (("extrinsics", "(T, 4, 4)"), ("intrinsics", "(3, 3)")):
        check(key in arrays, f"{path}: missing key {key!r} {shape}; found keys {sorted(arrays)}")
    ext = _npz_array(arrays, "extrinsics", str(path))
    check(ext.ndim == 3 and ext.shape[1:] == (4, 4) and ext.shape[0] >= 1,
          f"{path}: key 'extrinsics' must have shape (T, 4, 4), got {ext.shape}")
    w2c = check_w2c(opengl_to_opencv_w2c(ext), f"{path}: key 'extrinsics'")
    K = check_intrinsics(_npz_array(arrays, "intrinsics", str(path)), f"{path}: key 'intrinsics'")
    width, height = int(round(2 * K[0, 2])), int(round(2 * K[1, 2]))
    check(width > 0 and height > 0, f"{path}: principal point {K[:2, 2].tolist()} does not give an image size "
                                    "(the original's format puts it at the image centre)")
    return CameraFile(w2c=w2c, K=np.broadcast_to(K, (w2c.shape[0], 3, 3)).copy(), width=width, height=height,
                      fps=None, convention="opengl_w2c")


# ----------------------------------------------------------------------------- dispatch

def load_camera_file(path: str | os.PathLike) -> CameraFile:
    """Read a ``.json`` (cameras.json) or ``.npz`` (original EX-4D) camera file by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_cameras_json(path)
    if suffix == ".npz":
        return read_ex4d_npz(path)
    raise Ex4dError(f"unknown camera file type {suffix or '(none)'!r} for {path}: expected .json (cameras.json) "
                    "or .npz (the original EX-4D's camera_*.npz)")
