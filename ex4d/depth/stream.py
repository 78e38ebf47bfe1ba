"""Depth of a clip too long to hold in memory: frames read per chunk, depth written chunk by chunk to disk."""

from __future__ import annotations

from .estimate import load_depth_model, split_depth_options

__all__ = ["estimate_depth_chunks"]


def estimate_depth_chunks(frames, store, model: str = "depthcrafter", weights=None, device: str | None = None,
                          progress: bool = True, **options) -> dict:
    """Estimate the depth of ``frames`` ([T, H, W, 3] uint8 array-like, e.g. a ChunkedArray) into ``store``.

    ``store``: a :class:`~ex4d.io.chunks.ChunkStore` with field ``depth`` [H, W] float32 (resumed: only its
    missing chunks are written). The backends' ``estimate_chunks`` hold the clip's latents or alignment
    samples, never its frames or depth (DepthCrafter's 110/25 windows and Depth Anything's alignment cover
    the whole clip, whatever its length); their intermediate values are cached beside ``store``. Same
    result as :func:`~ex4d.depth.estimate_depth`. Returns its ``params``.
    """
    dtype, svd_weights, opts = split_depth_options(model, options)
    backend = load_depth_model(model, weights, device=device, dtype=dtype, svd_weights=svd_weights)
    try:
        return backend.estimate_chunks(frames, store, progress=progress, **opts)
    finally:
        backend.close()
