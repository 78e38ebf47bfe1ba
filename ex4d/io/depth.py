"""Depth files: load estimator outputs, turn disparity into z-depth, resize, align to frames.

:func:`to_depth` is the one place where disparity becomes depth. Everything
downstream works with z-depth [T, H, W] float32 > 0 in scene units (distance
along the optical axis, OpenCV camera).

Accepted files (:func:`load_depth_file`)
----------------------------------------
==========================  ======================================  ====================
file                        content                                 default kind
==========================  ======================================  ====================
``.npz`` key ``depth``      DepthCrafter ``run.py``: [T, H, W]      ``depthcrafter``
                            min-max normalised disparity in [0, 1]
``.npz`` key ``depths``     Video-Depth-Anything: [T, H, W]         ``disparity``
                            relative disparity (metric models
                            write depth: pass ``kind="depth"``)
``.npz`` with ``kind``      our cache (:func:`save_depth_npz`)      the stored ``kind``
``.npz`` one array / key=   that array                              ``depth``
``.npy``                    one array                               ``depth``
folder of ``.png``          8- or 16-bit gray frames, natural sort  ``depth``
==========================  ======================================  ====================
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import Ex4dError, check
from .atomic import atomic_save_npz
from .video import natural_key

__all__ = [
    "DEPTH_KINDS",
    "DEPTHCRAFTER_NUMERATOR",
    "DEPTHCRAFTER_SCALE",
    "DEPTH_CLIP",
    "load_depth_file",
    "default_depth_kind",
    "load_depth",
    "to_depth",
    "disparity_to_depth",
    "resize_depth",
    "match_depth_to_frames",
    "select_depth_frames",
    "check_depth",
    "check_depth_matches_frames",
    "fit_depth_to_frames",
    "same_view",
    "save_depth_npz",
    "npz_depth_key",
    "load_depth_png",
    "check_depth_array",
]

DEPTH_KINDS = ("depth", "disparity", "depthcrafter")
#: The original EX-4D's mapping z = 10000 / max(3900·d, 1e-5), clipped to [1e-4, 1e4].
DEPTHCRAFTER_NUMERATOR = 10000.0
DEPTHCRAFTER_SCALE = 3900.0
DEPTHCRAFTER_EPS = 1e-5
DEPTH_CLIP = (1e-4, 1e4)
#: Tolerance on DepthCrafter's [0, 1] range (float16 storage rounds a little).
_UNIT_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- loading


def check_depth_array(shape, dtype, source: str) -> None:
    """Ex4dError unless an array of ``shape`` and ``dtype`` can be depth (numeric; not a colour video)."""
    dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
    check(dtype.kind in "fiu",
          f"{source}: depth must be numeric (float or integer), got dtype {dtype}"
          + (" (true/false values: a mask, not depth)" if dtype.kind == "b" else ""))
    if len(shape) == 4 and shape[-1] in (3, 4) and shape[1] > 4:
        raise Ex4dError(f"{source}: shape {shape} looks like a colour video [T, H, W, {shape[-1]}], "
                        "not depth; give the depth estimator's output ([T, H, W])")


def _as_frames(values: np.ndarray, source: str) -> np.ndarray:
    """``values`` as [T, H, W] float32: [H, W] → [1, H, W]; [T, H, W, 1] and [T, 1, H, W] squeezed."""
    values = np.asarray(values)
    check_depth_array(values.shape, values.dtype, source)
    if values.ndim == 2:
        values = values[None]
    elif values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    elif values.ndim == 4 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 3 or min(values.shape) == 0:
        raise Ex4dError(f"{source}: depth must be [T, H, W], [H, W] or [T, H, W, 1], got shape {values.shape}")
    return values.astype(np.float32, copy=False)


def npz_depth_key(files: list[str], key: str | None, path: Path) -> str:
    """Which array of an npz holding ``files`` (names) to read as depth; Ex4dError naming the keys found."""
    if key is not None:
        check(key in files, f"{path} has no key {key!r}; keys found: {files}")
        return key
    for name in ("depth", "depths"):
        if name in files:
            return name
    arrays = [f for f in files if f != "kind"]
    if len(arrays) == 1:
        return arrays[0]
    raise Ex4dError(f"{path}: cannot tell which array is the depth; keys found: {files}. "
                    f"Expected 'depth' (DepthCrafter), 'depths' (Video-Depth-Anything) or a single array; "
                    f"name one with --depth-key")


def _load_png_folder(folder: Path) -> np.ndarray:
    """[T, H, W] float32 raw values of the gray PNGs in ``folder`` (natural order)."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"
                    and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    check(len(files) > 0, f"depth folder {folder} holds no .png files")
    images = [load_depth_png(p, files[0]) for p in files]
    for p, image in zip(files, images):
        check(image.shape == images[0].shape,
              f"depth folder {folder}: {p.name} is {image.shape[1]}×{image.shape[0]} but {files[0].name} is "
              f"{images[0].shape[1]}×{images[0].shape[0]}; every depth frame must have the same size")
    return np.stack(images)


def load_depth_png(path: Path, first: Path | None = None) -> np.ndarray:
    """[H, W] float32 raw values of one 8- or 16-bit gray PNG (RGB with equal channels accepted)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    check(image is not None, f"cannot read depth image {path}")
    if image.ndim == 3:
        same = all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, min(3, image.shape[2])))
        check(same, f"depth image {path} is a colour image ({image.shape[2]} channels); "
                    f"depth PNGs must be gray (8- or 16-bit)")
        image = image[..., 0]
    check(image.dtype in (np.uint8, np.uint16), f"depth image {path} has dtype {image.dtype}; expected 8 or 16 bit")
    return image.astype(np.float32)


def load_depth_file(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Raw values [T, h, w] float32 of a depth file (see the module table), not yet converted.

    Args:
        path: ``.npz``, ``.npy``, a ``.png`` file or a folder of PNGs.
        key: npz key to read; ``None`` picks ``depth``, then ``depths``,
            then the only array.
    """
    path = Path(path)
    check(path.exists(), f"depth file {path} does not exist")
    if path.is_dir():
        check(key is None, f"--depth-key applies to .npz files, but {path} is a folder")
        values, source = _load_png_folder(path), str(path)
    elif path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                name = npz_depth_key(list(data.files), key, path)
                values = data[name]
        except (ValueError, OSError, EOFError) as e:
            if isinstance(e, Ex4dError):
                raise
            raise Ex4dError(f"cannot read {path} as .npz ({e})") from None
        source = f"{path}[{name!r}]"
    elif path.suffix.lower() == ".npy":
        check(key is None, f"--depth-key applies to .npz files, but {path} is .npy")
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise Ex4dError(f"cannot read {path} as .npy ({e})") from None
        source = str(path)
    elif path.suffix.lower() == ".png":
        values, source = load_depth_png(path), str(path)
    else:
        raise Ex4dError(f"unsupported depth file {path}: expected .npz, .npy, .png or a folder of PNGs")
    return _as_frames(values, source)


def default_depth_kind(path: str | os.PathLike, key: str | None = None) -> str:
    """The kind :func:`to_depth` should assume for ``path`` when the user names none (see the module table)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".npz":
        return "depth"
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files)
            name = npz_depth_key(files, key, path)
            stored = str(data["kind"]) if "kind" in files else None
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, Ex4dError):
            raise
        raise Ex4dError(f"cannot read {path} as .npz ({e})") from None
    if stored is not None and name == "depth":
        check(stored in DEPTH_KINDS, f"{path} stores kind {stored!r}; expected one of {DEPTH_KINDS}")
        return stored
    return {"depth": "depthcrafter", "depths": "disparity"}.get(name, "depth")


def load_depth(path: str | os.PathLike, kind: str | None = None, key: str | None = None,
               scale: float = 1.0) -> np.ndarray:
    """z-depth [T, h, w] float32 > 0 of a depth file: :func:`load_depth_file` then :func:`to_depth`.

    ``kind=None`` uses :func:`default_depth_kind`.
    """
    values = load_depth_file(path, key)
    return to_depth(values, kind or default_depth_kind(path, key), scale)


# --------------------------------------------------------------------------- conversion


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """(first frame index, pixel count in that frame) where ``mask`` [T, H, W] bool is True."""
    t = int(np.argmax(mask.reshape(mask.shape[0], -1).any(axis=1)))
    return t, int(mask[t].sum())


def _check_finite(values: np.ndarray, what: str, first_frame: int = 0) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        t, n = _first_bad(bad)
        raise Ex4dError(f"{what} has {int(bad.sum())} non-finite values (NaN or inf); "
                        f"first in frame {t + first_frame} ({n} pixels)")


def disparity_to_depth(d: np.ndarray) -> np.ndarray:
    """z [same shape] float32 = 10000 / max(3900·d, 1e-5), clipped to [1e-4, 1e4] (the original EX-4D mapping).

    ``d`` is DepthCrafter's normalised disparity (1 = nearest; d = 1 gives
    z = 2.5641…, d = 0 gives the far clip 1e4).
    """
    d = np.asarray(d, dtype=np.float64)
    z = DEPTHCRAFTER_NUMERATOR / np.maximum(DEPTHCRAFTER_SCALE * d, DEPTHCRAFTER_EPS)
    return np.clip(z, *DEPTH_CLIP).astype(np.float32)


def to_depth(values: np.ndarray, kind: str, scale: float = 1.0, peak: float | None = None,
             first_frame: int = 0) -> np.ndarray:
    """z-depth [T, H, W] float32 > 0 from raw depth-file values [T, H, W].

    Kinds (``scale`` multiplies the resulting depth in every kind):

    * ``"depth"``: values already are z-depth; ``z = values · scale``. Every
      value must be finite and > 0 (zeros or negatives usually mean the file
      holds disparity: use ``--depth-kind disparity``).
    * ``"depthcrafter"``: DepthCrafter's normalised disparity d ∈ [0, 1];
      ``z = 10000 / max(3900·d, 1e-5)`` clipped to [1e-4, 1e4] (the original
      EX-4D mapping: the nearest point, d = 1, lands at z ≈ 2.5641).
    * ``"disparity"``: relative (affine-invariant) disparity of any scale,
      e.g. Video-Depth-Anything. Normalised by the clip's maximum,
      ``d / max(d)``, then mapped like ``depthcrafter``, so the scene gets the
      original's scale (nearest depth ≈ 2.56) whatever the estimator's units.
      Values must be finite and ≥ 0, and not all zero.

    For a clip converted chunk by chunk, ``peak`` is the whole clip's maximum
    disparity (``"disparity"`` kind; default: the maximum of ``values``) and
    ``first_frame`` the index of ``values[0]`` in the clip (for the messages).

    Raises :class:`Ex4dError` naming the frame and number of offending pixels.
    """
    check(kind in DEPTH_KINDS, f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")
    check(isinstance(scale, (int, float, np.integer, np.floating)) and math.isfinite(scale) and scale > 0,
          f"depth scale must be a positive number, got {scale!r}")
    values = np.asarray(values)
    check(values.ndim == 3, f"depth values must be [T, H, W], got shape {values.shape}")
    values = values.astype(np.float32, copy=False)
    _check_finite(values, f"depth file (kind {kind!r})", first_frame)

    if kind == "depth":
        bad = values <= 0
        if bad.any():
            t, n = _first_bad(bad)
            hint = (" The file has zeros, which suggests it holds disparity: try --depth-kind disparity "
                    "(or depthcrafter for DepthCrafter's output)." if (values == 0).any() else "")
            raise Ex4dError(f"depth must be > 0 everywhere, but frame {t + first_frame} has {n} pixels <= 0 "
                            f"({int(bad.sum())} in all frames; min {float(values.min()):g}).{hint}")
        return (values * np.float32(scale)).astype(np.float32)

    if kind == "depthcrafter":
        lo, hi = float(values.min()), float(values.max())
        if lo < -_UNIT_TOLERANCE or hi > 1 + _UNIT_TOLERANCE:
            bad = (values < -_UNIT_TOLERANCE) | (values > 1 + _UNIT_TOLERANCE)
            t, n = _first_bad(bad)
            raise Ex4dError(f"DepthCrafter disparity must lie in [0, 1], but values span [{lo:g}, {hi:g}] "
                            f"(frame {t + first_frame}: {n} pixels outside). For disparity of another scale use "
                            f"--depth-kind disparity; for depth use --depth-kind depth.")
        d = values
    else:
        bad = values < 0
        if bad.any():
            t, n = _first_bad(bad)
            raise Ex4dError(f"disparity must be >= 0, but frame {t + first_frame} has {n} negative pixels "
                            f"(min {float(values.min()):g}); if the file holds depth use --depth-kind depth")
        peak = float(values.max()) if peak is None else float(peak)
        check(peak > 0, "disparity is zero everywhere: the file holds no usable depth")
        d = values.astype(np.float64) / peak
    z = disparity_to_depth(d)
    return z * np.float32(scale) if scale != 1 else z


# --------------------------------------------------------------------------- checks, resize, alignment


def check_depth(depth: np.ndarray, name: str = "depth") -> None:
    """Raise :class:`Ex4dError` unless ``depth`` is [T, H, W], real, finite and > 0 everywhere."""
    depth = np.asarray(depth)
    check(depth.ndim == 3, f"{name} must be [T, H, W], got shape {depth.shape}")
    check(depth.dtype.kind in "fiu", f"{name} must be a real array, got dtype {depth.dtype}")
    check(min(depth.shape) > 0, f"{name} is empty (shape {depth.shape})")
    _check_finite(depth, name)
    bad = depth <= 0
    if bad.any():
        t, n = _first_bad(bad)
        raise Ex4dError(f"{name} must be > 0 everywhere, but frame {t} has {n} pixels <= 0")


def resize_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """z-depth [T, height, width] float32 resampled from ``depth`` [T, h, w] (z-depth > 0).

    Resampling happens in inverse depth (1/z): ``cv2.INTER_AREA`` when
    neither side grows, ``cv2.INTER_LINEAR`` otherwise; the result is inverted
    back. Estimators produce (and interpolate) disparity, and averaging in
    disparity keeps a foreground edge next to a far background close to the
    foreground; averaging depth itself would let the far values dominate and
    pull edge pixels towards the back, stretching the mesh there.
    """
    check_depth(depth)
    check(int(height) >= 1 and int(width) >= 1, f"target size must be >= 1x1, got {width}x{height}")
    t, h, w = depth.shape
    if (h, w) == (height, width):
        return np.asarray(depth, dtype=np.float32).copy()
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    inverse = (1.0 / np.asarray(depth, dtype=np.float64)).astype(np.float32)
    out = np.empty((t, height, width), np.float32)
    for i in range(t):
        out[i] = cv2.resize(inverse[i], (int(width), int(height)), interpolation=interp)
    return (1.0 / out).astype(np.float32)


def match_depth_to_frames(depth: np.ndarray, indices: np.ndarray, total_frames: int) -> np.ndarray:
    """``depth`` [Td, ...] aligned to the selected frames: [T, ...].

    Args:
        depth: [Td, ...] depth (or raw values) from a depth file.
        indices: [T] int64, the source indices of the selected frames (``Frames.indices``).
        total_frames: frames in the source video (``Frames.total_frames``; -1 if unknown).

    If Td == T the depth was computed for exactly these frames and is used as
    is. Otherwise, if Td == total_frames or Td > max(indices), it covers the
    whole source video and ``depth[indices]`` is taken. Anything else raises.
    """
    depth = np.asarray(depth)
    pick = select_depth_frames(depth.shape, indices, total_frames)
    return depth if pick is None else depth[pick]


def select_depth_frames(shape, indices: np.ndarray, total_frames: int) -> np.ndarray | None:
    """Which frames of depth of ``shape`` ([Td, ...]) the selected video frames use: None = all, as they are
    (Td == T), else the [T] int64 ``indices`` into a whole-video depth; Ex4dError otherwise (see
    :func:`match_depth_to_frames`). Needs only the shape, so a long depth file is never read whole."""
    shape = tuple(int(s) for s in shape)
    indices = np.asarray(indices)
    check(indices.ndim == 1 and indices.size > 0 and indices.dtype.kind in "iu",
          f"indices must be a non-empty 1-D integer array, got shape {indices.shape} dtype {indices.dtype}")
    check(len(shape) >= 1, "depth must have a frame axis")
    td, t = shape[0], indices.size
    if td == t:
        return None
    # a whole-video depth; container headers may miss a frame or two, so "the whole video" has a little slack
    slack = max(2, int(0.02 * total_frames)) if total_frames >= 0 else None
    if td > int(indices.max()) and (slack is None or abs(td - total_frames) <= slack):
        return indices.astype(np.int64)
    video = f"a {total_frames}-frame video" if total_frames >= 0 else "a video of unknown length"
    if len(shape) == 3 and shape[2] in (t, total_frames):
        raise Ex4dError(f"depth has shape {shape}: its last axis has {shape[2]} entries, one per "
                        f"frame, so it looks stored as [H, W, T]; store it as [T, H, W] "
                        "(e.g. depth.transpose(2, 0, 1))")
    raise Ex4dError(f"depth has {td} frames, but the video gives {t} selected frames ({int(indices[0])}…"
                    f"{int(indices[-1])} of {video}): depth must have one frame per selected frame ({t}) or per "
                    f"frame of the whole video ({total_frames if total_frames >= 0 else 'all'}); compute it for "
                    "this video and selection (--num-frames, --start, --stride)")


def _aspect_range(h: int, w: int, margin: float = 0.005) -> tuple[float, float]:
    """Range of source aspect ratios (W/H) an h×w image can have come from, allowing for rounding.

    Resizers round both sides to a common multiple: 16 for ex4d's frames, up to 64 for depth
    estimators (DepthCrafter). The largest of 64, 32, 16, 14, 8 that divides both sides (and is at
    most an eighth of the shorter one) is taken as that multiple; a side then lies within half a
    multiple of its unrounded length.
    """
    m = next((m for m in (64, 32, 16, 14, 8) if h % m == 0 and w % m == 0 and m <= min(h, w) / 8), 1)
    half = m / 2.0
    lo = (w - half) / (h + half) if m > 1 else (w - 0.5) / (h + 0.5)
    hi = (w + half) / (h - half) if m > 1 else (w + 0.5) / (h - 0.5)
    return lo * (1 - margin), hi * (1 + margin)


def same_view(h: int, w: int, H: int, W: int) -> bool:
    """True when an h×w and an H×W image can show the same view at two resolutions (aspect ratios agree up to rounding)."""
    lo, hi = _aspect_range(h, w)
    lo2, hi2 = _aspect_range(H, W)
    return lo <= hi2 and lo2 <= hi


def check_depth_matches_frames(depth_shape, height: int, width: int, source: str = "depth") -> None:
    """Raise :class:`Ex4dError` unless depth frames of ``depth_shape`` ([T, h, w]) show the view of ``width``×``height`` frames.

    Any resolution of the same aspect ratio is fine (it is resampled; rounding of the sides to
    multiples of 16–64 px is allowed for); another aspect ratio, a transposed array ([T, W, H])
    or the frame axis last ([H, W, T]) is refused with both sizes named.
    """
    T, h, w = (int(x) for x in depth_shape[-3:])
    H, W = int(height), int(width)
    if same_view(h, w, H, W):
        return
    sizes = f"{source} is {w}×{h} (aspect {w / h:.3f}) but the frames are {W}×{H} (aspect {W / H:.3f})"
    if same_view(w, h, H, W):
        hint = "it looks transposed ([T, W, H]): store it as [T, H, W] (e.g. depth.transpose(0, 2, 1))"
    elif same_view(T, h, H, W) or same_view(h, T, H, W):
        hint = f"its frame axis looks last ([H, W, T], {w} frames): store it as [T, H, W] (depth.transpose(2, 0, 1))"
    else:
        hint = ("depth must show the same view as the video (any resolution of the same aspect ratio is "
                "resampled): give depth computed for this video")
    raise Ex4dError(f"{sizes}; {hint}")


def fit_depth_to_frames(depth: np.ndarray, height: int, width: int, source: str = "depth") -> np.ndarray:
    """z-depth [T, height, width] float32 from ``depth`` [T, h, w] of the same view (checked, resampled in 1/z)."""
    check_depth_matches_frames(depth.shape, height, width, source)
    if depth.shape[1:] == (height, width):
        return np.asarray(depth, dtype=np.float32)
    return resize_depth(depth, height, width)


# --------------------------------------------------------------------------- cache


def save_depth_npz(path: str | os.PathLike, depth: np.ndarray, **meta) -> None:
    """Write z-depth [T, H, W] (> 0) to ``path`` (.npz) atomically: key ``depth`` float32, ``kind='depth'``.

    ``meta`` adds further arrays or scalars (e.g. ``K=``, ``source=``);
    :func:`load_depth_file` and :func:`default_depth_kind` read the file back
    as kind ``depth``.
    """
    path = Path(path)
    check(path.suffix.lower() == ".npz", f"depth cache {path} must end in .npz")
    check_depth(depth)
    reserved = {"depth", "kind"} & set(meta)
    check(not reserved, f"meta keys {sorted(reserved)} are reserved")
    meta = {k: np.asarray(v) for k, v in meta.items()}
    odd = [k for k, v in meta.items() if v.dtype.kind == "O"]
    check(not odd, f"meta values must be numbers, strings or arrays of them; {odd} are not")
    atomic_save_npz(path, compress=False, depth=np.asarray(depth, dtype=np.float32), kind=np.array("depth"),
                    **meta)
