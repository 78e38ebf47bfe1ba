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
from .align import ALIGN_MODES, temporal_smooth
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
        import tempfile

        from ..io.chunks import ChunkStore

        frames = check_frames(frames)
        T, H, W = frames.shape[:3]
        with tempfile.TemporaryDirectory(prefix="ex4d-depth-") as tmp:
            store = ChunkStore.open(Path(tmp) / "depth", "estimate", T, 16, {"depth": ((H, W), np.float32)})
            params = self.estimate_chunks(frames, store, progress, **options)
            depth = np.asarray(store.field("depth"))
        return DepthResult(depth=depth, K=None, params=params)

    def estimate_chunks(self, frames, store, progress: bool = True, **options) -> dict:
        """Depth of ``frames`` ([T, H, W, 3] uint8 array-like) written into ``store`` (ChunkStore, field ``depth``).

        For clips of any length: frames are predicted a chunk at a time; the alignment is solved once for the
        whole clip from :func:`~ex4d.depth.align.sample_grid` samples of every frame; the temporal smoothing
        reads :func:`~ex4d.depth.align.smoothing_radius` frames of context. Intermediate values are cached
        beside ``store`` (``<name>-raw/``, ``<name>-values/``, removed at the end), so an interrupted run resumes. Same result
        as :meth:`estimate`. Returns the result's params.
        """
        from ..io.chunks import ChunkStore
        from ..io.depth import DEPTH_CLIP, to_depth
        from .align import align_samples, sample_grid, smoothing_radius
        from .common import resize_values

        o = DepthAnythingOptions.from_kwargs(**options)
        T, H, W = len(frames), int(frames.shape[1]), int(frames.shape[2])
        check(o.reference < T, f"reference frame {o.reference} is outside the clip of {T} frames")
        mode = o.align if o.align != "auto" else ("scale" if self.metric else "affine")
        folder, key, spans = store.folder, store.key, store.spans

        def disparity(raw):
            return 1.0 / np.clip(raw, DEPTH_CLIP[0], DEPTH_CLIP[1]) if self.metric else np.maximum(raw, 0.0)

        # 1. predictions, a chunk at a time
        raw_store = ChunkStore.resume(folder.with_name(folder.name + "-raw"), key)
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="Depth Anything V2", unit="frame", disable=not progress, leave=False)
        for c, (a, b) in enumerate(spans):
            if raw_store is not None and raw_store.has(c):
                bar.update(b - a)
                continue
            raw = self.predict(check_frames(np.asarray(frames[a:b])), o, progress=False)
            check(np.isfinite(raw).all(), "Depth Anything V2 produced non-finite values; the weights may be corrupt "
                                          "(or try --dtype float32)")
            if raw_store is None:
                raw_store = ChunkStore.open(folder.with_name(folder.name + "-raw"), key, T, store.chunk,
                                            {"raw": (raw.shape[1:], np.float32)})
            if not raw_store.has(c):
                raw_store.write(c, raw=raw)
            bar.update(b - a)
        bar.close()
        raw = raw_store.field("raw")
        # 2. one alignment for the whole clip, from a grid of samples of every frame
        h, w = raw.shape[1:]
        idx = sample_grid(h, w, 4096)
        samples = np.concatenate([disparity(z["raw"]).reshape(b - a, -1)[:, idx] for a, b, z in raw_store.chunks()])
        scales, shifts = align_samples(samples.astype(np.float64), None, mode, o.reference)
        # 3. aligned (+ smoothed) values at the frames' size, chunk by chunk with the smoothing's context
        r = smoothing_radius(o.smooth)

        def aligned(a, b):
            lo, hi = max(0, a - r), min(T, b + r)
            d = disparity(raw[lo:hi]).astype(np.float64)
            x = (d * scales[lo:hi, None, None] + shifts[lo:hi, None, None]).astype(np.float32)
            return temporal_smooth(x, o.smooth)[a - lo:b - lo]

        if self.metric:
            for c in store.missing():
                a, b = spans[c]
                depth = 1.0 / np.clip(aligned(a, b), 1.0 / DEPTH_CLIP[1], 1.0 / DEPTH_CLIP[0])
                store.write(c, depth=values_to_depth(depth.astype(np.float32), "depth", H, W))
            import shutil

            shutil.rmtree(raw_store.folder, ignore_errors=True)  # only needed to resume
            return self.params(o)
        values = ChunkStore.open(folder.with_name(folder.name + "-values"), key, T, store.chunk,
                                 {"values": ((H, W), np.float32)})
        for c in values.missing():
            a, b = spans[c]
            values.write(c, values=np.maximum(resize_values(np.maximum(aligned(a, b), 0.0), H, W), 0.0))
        if "peak" not in values.attrs:
            values.set_attrs(peak=max(float(z["values"].max()) for _, _, z in values.chunks()))
        peak = float(values.attrs["peak"])
        check(peak > 0, "Depth Anything V2 predicted zero disparity everywhere")
        for c in store.missing():
            a, b = spans[c]
            store.write(c, depth=to_depth(values.read(c)["values"], "disparity", peak=peak, first_frame=a))
        import shutil

        for tmp in (raw_store.folder, values.folder):  # only needed to resume
            shutil.rmtree(tmp, ignore_errors=True)
        return self.params(o)

    def close(self) -> None:
        """Drop the model (and the GPU memory it holds)."""
        torch = require("torch", _FEATURE)
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

