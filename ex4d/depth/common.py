"""What every depth backend shares: the result type, device/dtype choice, lazy imports, the final conversion."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ..errors import Ex4dError, check

__all__ = [
    "DEPTH_MODELS",
    "DepthResult",
    "INSTALL_HINT",
    "require",
    "resolve_device",
    "resolve_dtype",
    "check_frames",
    "resize_values",
    "values_to_depth",
    "place_module",
]

#: Names accepted by ``estimate_depth(model=...)`` and ``--depth-model``.
DEPTH_MODELS = ("depthcrafter", "depth-anything-v2", "video-depth-anything")
INSTALL_HINT = "pip install 'ex4d[diffusion]'"
_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float32": "float32", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class DepthResult:
    """Depth estimated from a clip.

    ========  ======================  ==================================================
    field     type / shape            meaning
    ========  ======================  ==================================================
    depth     [T, H, W] float32       z-depth > 0 (scene units along the optical axis,
                                      OpenCV camera) at the frames' size
    K         [3, 3] float64 or None  intrinsics in pixels, where the model predicts
                                      them (none of the current backends does)
    params    dict (JSON-able)        model, weights, options: everything that affects
                                      ``depth`` (the pipeline's cache key)
    ========  ======================  ==================================================
    """

    depth: np.ndarray
    K: np.ndarray | None
    params: dict


def require(name: str, feature: str) -> ModuleType:
    """Import module ``name``; ImportError naming the extra to install if it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"{feature} needs the optional package {name.split('.')[0]!r}, which is not installed "
                          f"({e}). Install it with: {INSTALL_HINT}") from e


def resolve_device(device: str | None) -> str:
    """Torch device string: ``None``/``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; validated."""
    torch = require("torch", "depth estimation")
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise Ex4dError(f"unknown device {device!r} ({e}); use cuda, cuda:N or cpu") from None
    if dev.type == "cuda":
        check(torch.cuda.is_available(), f"device {device!r} asked for, but no CUDA GPU is available; use --device cpu")
        check(dev.index is None or dev.index < torch.cuda.device_count(),
              f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    return str(dev)


def resolve_dtype(dtype: str | None, device: str) -> str:
    """``"float16"``, ``"bfloat16"`` or ``"float32"``: ``None``/``"auto"`` = float16 on a GPU, float32 on CPU."""
    if dtype is None or dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    check(isinstance(dtype, str) and dtype.lower() in _DTYPES,
          f"dtype must be one of auto, float16, bfloat16, float32, got {dtype!r}")
    return _DTYPES[dtype.lower()]


def place_module(module, device: str, dtype: str):
    """``module`` in eval mode on ``device``, cast to ``dtype`` only if it has another (diffusers warns otherwise)."""
    torch = require("torch", "depth estimation")
    want = getattr(torch, dtype)
    if getattr(module, "dtype", want) != want:
        module = module.to(dtype=want)
    return module.to(device).eval()


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` as [T, H, W, 3] uint8 RGB; Ex4dError naming what is wrong otherwise."""
    check(isinstance(frames, np.ndarray), f"frames must be a numpy array [T, H, W, 3] uint8, got {type(frames).__name__}")
    check(frames.ndim == 4 and frames.shape[-1] == 3, f"frames must be [T, H, W, 3] RGB, got shape {frames.shape}")
    check(frames.dtype == np.uint8, f"frames must be uint8, got {frames.dtype}")
    check(min(frames.shape[:3]) >= 1, f"frames must hold at least one non-empty frame, got shape {frames.shape}")
    return frames


def resize_values(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """[T, height, width] float32 ``values`` [T, h, w] resized per frame (area when shrinking, else bilinear).

    For disparity-like values (linear in inverse depth); z-depth goes through
    :func:`ex4d.io.depth.resize_depth`, which resamples in inverse depth.
    """
    import cv2

    values = np.asarray(values, np.float32)
    T, h, w = values.shape
    if (h, w) == (height, width):
        return values.copy()
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    return np.stack([cv2.resize(v, (int(width), int(height)), interpolation=interp) for v in values])


def values_to_depth(values: np.ndarray, kind: str, height: int, width: int) -> np.ndarray:
    """z-depth [T, height, width] float32 > 0 from a model's raw output [T, h, w] of ``kind``.

    ``kind`` is an :func:`ex4d.io.depth.to_depth` kind. Disparity kinds are
    resized first (they are what the model interpolates), then converted by
    :func:`~ex4d.io.depth.to_depth`, the one place where disparity becomes
    depth; ``"depth"`` is converted, then resized in inverse depth.
    """
    from ..io.depth import resize_depth, to_depth

    if kind == "depth":
        return resize_depth(to_depth(values, "depth"), height, width)
    resized = resize_values(values, height, width)
    if kind == "depthcrafter":
        resized = np.clip(resized, 0.0, 1.0)
    else:
        resized = np.maximum(resized, 0.0)
    return to_depth(resized, kind)
