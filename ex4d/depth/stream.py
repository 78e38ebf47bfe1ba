"""Depth of a clip too long to hold in memory: frames read per chunk, depth written chunk by chunk to disk."""

from __future__ import annotations

import numpy as np

from .estimate import _split_options, load_depth_model

__all__ = ["estimate_depth_chunks"]


def estimate_depth_chunks(frames, store, model: str = "depthcrafter", weights=None, device: str | None = None,
                          progress: bool = True, **options) -> dict:
    """Estimate the depth of ``frames`` ([T, H, W, 3] uint8 array-like) into ``store`` (a ChunkStore, field ``depth``).

    Returns the result's ``params`` (as :func:`~ex4d.depth.estimate_depth`).
    """
    dtype, svd_weights, opts = _split_options(model, options)
    backend = load_depth_model(model, weights, device=device, dtype=dtype, svd_weights=svd_weights)
    try:
        res = backend.estimate(np.asarray(frames), progress=progress, **opts)
    finally:
        backend.close()
    for c in store.missing():
        a, b = store.spans[c]
        store.write(c, depth=res.depth[a:b])
    return res.params
