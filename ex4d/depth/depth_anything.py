"""Depth Anything V2 (Yang et al. 2024) per frame through transformers, made temporally consistent.

The model (``DepthAnythingForDepthEstimation``) and its image processor are
loaded from a local ``-hf`` checkpoint folder (:mod:`ex4d.depth.weights`).
Frames go through the processor (shorter side resized to 518 by default,
sides multiples of 14, ImageNet normalisation) in batches of ``batch_size``.

* **Relative** checkpoints (``config.depth_estimation_type == "relative"``)
  predict affine-invariant disparity. Each frame's scale and shift is aligned
  to frame 0 (:func:`ex4d.depth.align.align_scale_shift`, ``align="affine"``),
  negative values are clipped to 0, and the result is converted by
  :func:`ex4d.io.depth.to_depth` with kind ``"disparity"`` (normalised by the
  clip's maximum, then the EX-4D mapping: the nearest point lands at z ≈ 2.56).
* **Metric** checkpoints (``"metric"``) predict depth in metres. Its inverse
  is aligned by a per-frame scale only (``align="scale"``, frame 0 kept), so
  the clip stays metric in frame 0's scale, and converted with kind ``"depth"``.

``smooth`` > 0 additionally filters the aligned disparity along time with a
Gaussian of that many frames. Predictions are resized to the frames' size
(bilinear/area in disparity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .align import ALIGN_MODES, align_scale_shift, temporal_smooth
from .common import DepthResult, check_frames, place_module, require, resolve_device, resolve_dtype, values_to_depth
from .weights import resolve_depth_anything_weights, weights_fingerprint

__all__ = ["DepthAnythingOptions", "DepthAnythingV2", "depth_anything_source", "depth_anything_params",
           "is_metric_checkpoint"]

_FEATURE = "the Depth Anything V2 depth backend"
_VERSION = 1


@dataclass(frozen=True)
class DepthAnythingOptions:
    """Depth Anything V2 inference and consistency settings."""

    batch_size: int = 8            #: frames per forward pass
    input_size: int | None = None  #: shorter side fed to the model; None = the processor's (518)
    align: str = "auto"            #: affine | scale | none; auto = affine (relative) / scale (metric)
    smooth: float = 0.0            #: temporal Gaussian sigma in frames on the aligned disparity (0 = off)
    reference: int = 0             #: frame whose scale the others are aligned to

    def __post_init__(self):
        check(isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1,
              f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        check(self.input_size is None or (isinstance(self.input_size, (int, np.integer)) and self.input_size >= 14),
              f"input_size must be an integer >= 14 (or None), got {self.input_size!r}")
        check(self.align == "auto" or self.align in ALIGN_MODES,
              f"align must be one of auto, {', '.join(ALIGN_MODES)}, got {self.align!r}")
        check(isinstance(self.smooth, (int, float)) and 0 <= self.smooth <= 10,
              f"smooth must be a number of frames in [0, 10], got {self.smooth!r}")
        check(isinstance(self.reference, (int, np.integer)) and self.reference >= 0,
              f"reference must be a frame index >= 0, got {self.reference!r}")

    @classmethod
    def from_kwargs(cls, **options) -> "DepthAnythingOptions":
        """Options from keyword arguments; Ex4dError naming unknown ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        check(not unknown, f"unknown Depth Anything V2 option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**options)


def depth_anything_source(root: Path) -> dict:
    """The weights part of :meth:`DepthAnythingV2.params`: resolved folder and a fingerprint of its files."""
    return {"weights": str(root.resolve()), "weights_id": weights_fingerprint(root)}


def is_metric_checkpoint(root: Path) -> bool:
    """Whether the checkpoint in ``root`` predicts metric depth (``depth_estimation_type == "metric"``)."""
    from ..io.json_input import expect, read_json

    cfg = expect(read_json(root / "config.json", "Depth Anything config"), dict, f"{root / 'config.json'}")
    return cfg.get("depth_estimation_type", "relative") == "metric"


def depth_anything_params(source: dict, dtype: str, metric: bool, options: DepthAnythingOptions) -> dict:
    """JSON-able dict of everything that determines a Depth Anything V2 result."""
    return {"model": DepthAnythingV2.name, **source, "dtype": dtype, "metric": bool(metric),
            "options": asdict(options), "version": _VERSION}


def _processes_on_device(processor) -> bool:
    """Whether ``processor`` is a torch-based ("fast", torchvision) image processor that can work on the GPU."""
    import importlib

    for module, name in (("transformers.image_processing_backends", "TorchvisionBackend"),
                         ("transformers.image_processing_utils_fast", "BaseImageProcessorFast")):
        try:
            base = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(processor, base):
            return True
    return False


class DepthAnythingV2:
    """A Depth Anything V2 model and image processor on one device; :meth:`estimate` runs a clip."""

    name = "depth-anything-v2"

    def __init__(self, model, processor, device: str, dtype: str, source: dict | None = None):
        torch = require("torch", _FEATURE)
        self.torch_dtype = getattr(torch, dtype)
        self.device, self.dtype = device, dtype
        self.model = place_module(model, device, dtype)
        self.processor = processor
        self.metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
        self.source = dict(source or {})

    @classmethod
    def load(cls, weights, device: str | None = None, dtype: str | None = None) -> "DepthAnythingV2":
        """Model and processor from a transformers checkpoint folder (layout in :mod:`ex4d.depth.weights`)."""
        root = resolve_depth_anything_weights(weights)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        torch = require("torch", _FEATURE)
        transformers = require("transformers", _FEATURE)
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(str(root), local_files_only=True)
            model = transformers.DepthAnythingForDepthEstimation.from_pretrained(
                str(root), local_files_only=True, dtype=getattr(torch, dtype))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise Ex4dError(f"cannot load Depth Anything V2 from {root}: {e}") from None
        return cls(model, processor, device, dtype, depth_anything_source(root))

    def params(self, options: DepthAnythingOptions) -> dict:
        """JSON-able description of everything that determines the result (for caching)."""
        return depth_anything_params(self.source, self.dtype, self.metric, options)

    def predict(self, frames: np.ndarray, options: DepthAnythingOptions | None = None,
                progress: bool = True) -> np.ndarray:
        """Raw per-frame predictions [T, h, w] float32 at the processed size: disparity (relative) or metres (metric)."""
        torch = require("torch", _FEATURE)
        from tqdm.auto import tqdm

        o = options or DepthAnythingOptions()
        frames = check_frames(frames)
        kwargs = {"device": self.device} if _processes_on_device(self.processor) else {}
        if o.input_size is not None:
            kwargs["size"] = {"height": int(o.input_size), "width": int(o.input_size)}
        out = []
        with torch.inference_mode():
            for i in tqdm(range(0, frames.shape[0], o.batch_size), desc="Depth Anything V2", disable=not progress,
                          leave=False):
                batch = [f for f in frames[i:i + o.batch_size]]
                pixels = self.processor(images=batch, return_tensors="pt", **kwargs)["pixel_values"]
                pred = self.model(pixel_values=pixels.to(self.device, self.torch_dtype)).predicted_depth
                out.append(pred.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def estimate(self, frames: np.ndarray, progress: bool = True, **options) -> DepthResult:
        """:class:`DepthResult` with z-depth [T, H, W] at the frames' size (``options``: :class:`DepthAnythingOptions`)."""
        o = DepthAnythingOptions.from_kwargs(**options)
        frames = check_frames(frames)
        T, H, W = frames.shape[:3]
        check(o.reference < T, f"reference frame {o.reference} is outside the clip of {T} frames")
        raw = self.predict(frames, o, progress)
        check(np.isfinite(raw).all(), "Depth Anything V2 produced non-finite values; the weights may be corrupt "
                                      "(or try --dtype float32)")
        from ..io.depth import DEPTH_CLIP

        mode = o.align if o.align != "auto" else ("scale" if self.metric else "affine")
        if self.metric:
            disparity = 1.0 / np.clip(raw, DEPTH_CLIP[0], DEPTH_CLIP[1])
        else:
            disparity = np.maximum(raw, 0.0)
        aligned, _, _ = align_scale_shift(disparity, mode=mode, reference=o.reference)
        aligned = temporal_smooth(aligned, o.smooth)
        if self.metric:
            depth = 1.0 / np.clip(aligned, 1.0 / DEPTH_CLIP[1], 1.0 / DEPTH_CLIP[0])
            depth = values_to_depth(depth.astype(np.float32), "depth", H, W)
        else:
            check(float(aligned.max()) > 0, "Depth Anything V2 predicted zero disparity everywhere")
            depth = values_to_depth(np.maximum(aligned, 0.0), "disparity", H, W)
        return DepthResult(depth=depth, K=None, params=self.params(o))

    def close(self) -> None:
        """Drop the model (and the GPU memory it holds)."""
        torch = require("torch", _FEATURE)
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

