"""The one entry point: frames → :class:`~ex4d.depth.common.DepthResult`, whichever model."""

from __future__ import annotations

import os

import numpy as np

from ..errors import Ex4dError, check
from .common import DEPTH_MODELS, DepthResult, check_frames
from .weights import VIDEO_DEPTH_ANYTHING_MESSAGE

__all__ = ["load_depth_model", "estimate_depth", "depth_params", "split_depth_options", "MODEL_OPTIONS"]

#: Options each model accepts in ``estimate_depth(**options)`` (besides ``dtype``, and ``svd_weights`` for DepthCrafter).
MODEL_OPTIONS = {
    "depthcrafter": ("num_inference_steps", "guidance_scale", "window_size", "overlap", "max_res",
                     "noise_aug_strength", "fps_id", "motion_bucket_id", "seed", "chunk_size"),
    "depth-anything-v2": ("batch_size", "input_size", "align", "smooth", "reference"),
    "video-depth-anything": (),
}


def load_depth_model(model: str, weights: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                     svd_weights: str | os.PathLike | None = None):
    """A loaded backend (``.estimate(frames, progress, **options)``, ``.close()``) for ``model``.

    Hold on to it to run several clips without reloading; :func:`estimate_depth`
    loads, runs and frees in one call.
    """
    check(model in DEPTH_MODELS, f"unknown depth model {model!r}; choose one of {', '.join(DEPTH_MODELS)}")
    if model == "video-depth-anything":
        raise Ex4dError(VIDEO_DEPTH_ANYTHING_MESSAGE)
    if model == "depthcrafter":
        from .depthcrafter import DepthCrafter

        return DepthCrafter.load(weights, svd_weights=svd_weights, device=device, dtype=dtype)
    check(svd_weights is None, f"svd_weights (--svd-weights) applies to depthcrafter, not {model}")
    from .depth_anything import DepthAnythingV2

    return DepthAnythingV2.load(weights, device=device, dtype=dtype)


def split_depth_options(model: str, options: dict) -> tuple[str | None, object, dict]:
    """(dtype, svd_weights, model options) from ``estimate_depth``'s keyword options; Ex4dError for unknown ones."""
    check(model in DEPTH_MODELS, f"unknown depth model {model!r}; choose one of {', '.join(DEPTH_MODELS)}")
    if model == "video-depth-anything":
        raise Ex4dError(VIDEO_DEPTH_ANYTHING_MESSAGE)
    options = dict(options)
    dtype = options.pop("dtype", None)
    svd_weights = options.pop("svd_weights", None)
    check(svd_weights is None or model == "depthcrafter",
          f"svd_weights (--svd-weights) applies to depthcrafter, not {model}")
    unknown = sorted(set(options) - set(MODEL_OPTIONS[model]))
    accepted = sorted(MODEL_OPTIONS[model]) + ["dtype"] + (["svd_weights"] if model == "depthcrafter" else [])
    check(not unknown, f"unknown option(s) {unknown} for depth model {model}; accepted: {accepted}")
    return dtype, svd_weights, options


def depth_params(model: str = "depthcrafter", weights: str | os.PathLike | None = None, device: str | None = None,
                 **options) -> dict:
    """The ``params`` that :func:`estimate_depth` with these arguments returns, without loading any model.

    For cache keys computed before deciding whether to run the model: checks
    the weights folder (Ex4dError as :func:`estimate_depth`), fingerprints its
    files, fills in every default option and resolves the dtype for
    ``device``.
    """
    from .common import resolve_device, resolve_dtype

    dtype, svd_weights, options = split_depth_options(model, options)
    dtype = resolve_dtype(dtype, resolve_device(device))
    if model == "depthcrafter":
        from .depthcrafter import DepthCrafterOptions, depthcrafter_params, depthcrafter_source
        from .weights import resolve_depthcrafter_weights

        source = depthcrafter_source(*resolve_depthcrafter_weights(weights, svd_weights))
        return depthcrafter_params(source, dtype, DepthCrafterOptions.from_kwargs(**options))
    from .depth_anything import DepthAnythingOptions, depth_anything_params, depth_anything_source, is_metric_checkpoint
    from .weights import resolve_depth_anything_weights

    root = resolve_depth_anything_weights(weights)
    return depth_anything_params(depth_anything_source(root), dtype, is_metric_checkpoint(root),
                                 DepthAnythingOptions.from_kwargs(**options))


def estimate_depth(frames: np.ndarray, model: str = "depthcrafter", weights: str | os.PathLike | None = None,
                   device: str | None = None, progress: bool = True, **options) -> DepthResult:
    """z-depth of every frame of a clip with a monocular depth model.

    Args:
        frames: [T, H, W, 3] uint8 RGB (e.g. ``read_video(...).frames``).
        model: ``"depthcrafter"`` (the EX-4D original's), ``"depth-anything-v2"``
            or ``"video-depth-anything"`` (not supported: raises an
            :class:`~ex4d.errors.Ex4dError` that says what to do instead).
        weights: the model's local weights folder (layouts in
            :mod:`ex4d.depth.weights`; nothing is downloaded).
        device: ``None`` = CUDA when available, else CPU; or ``"cuda"``,
            ``"cuda:N"``, ``"cpu"``.
        progress: show progress bars.
        options: ``dtype`` (``"auto"``: float16 on GPU, float32 on CPU;
            ``"float16"``, ``"bfloat16"``, ``"float32"``); DepthCrafter:
            ``svd_weights`` and :class:`~ex4d.depth.depthcrafter.DepthCrafterOptions`;
            Depth Anything V2: :class:`~ex4d.depth.depth_anything.DepthAnythingOptions`.

    Returns:
        :class:`DepthResult`: ``depth`` [T, H, W] float32 > 0 at the frames'
        size; ``K`` None (no backend predicts intrinsics); ``params``, a
        JSON-able dict of model, weights (resolved path and a fingerprint of
        the files), dtype and every option including defaults; the same as
        :func:`depth_params` gives for these arguments.
    """
    dtype, svd_weights, options = split_depth_options(model, options)
    frames = check_frames(frames)
    backend = load_depth_model(model, weights, device=device, dtype=dtype, svd_weights=svd_weights)
    try:
        return backend.estimate(frames, progress=progress, **options)
    finally:
        backend.close()
