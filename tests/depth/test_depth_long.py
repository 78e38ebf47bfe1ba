"""Depth of long clips: the backends' chunked estimation equals the whole-clip one (tiny random models)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from ex4d.depth import estimate_depth, estimate_depth_chunks  # noqa: E402
from ex4d.io.chunks import ChunkStore  # noqa: E402


@pytest.fixture(scope="module")
def long_frames():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:44]
    base = np.stack([xx * 5, yy * 8, (xx + yy) * 3], axis=-1)
    return np.stack([np.clip(base + (t % 9) * 6 + rng.integers(0, 20, base.shape), 0, 255)
                     for t in range(20)]).astype(np.uint8)  # two cache chunks: 16, 4


def _chunked(frames, tmp_path, model, weights, **options):
    T, H, W = frames.shape[:3]
    store = ChunkStore.open(tmp_path / "depth", "k", T, 16, {"depth": ((H, W), np.float32)})
    src = ChunkStore.open(tmp_path / "frames", "k", T, 16, {"rgb": ((H, W, 3), np.uint8)})
    for c, (a, b) in enumerate(src.spans):
        src.write(c, rgb=frames[a:b])
    params = estimate_depth_chunks(src.field("rgb"), store, model=model, weights=weights, device="cpu",
                                   progress=False, **options)
    return np.asarray(store.field("depth")), params


def test_depthcrafter_windows_cover_a_long_clip_chunk_by_chunk(tmp_path, long_frames, tiny_depth_weights):
    w = tiny_depth_weights["depthcrafter"]
    opts = dict(window_size=8, overlap=2, num_inference_steps=1, max_res=16)  # 20 frames: 3 windows
    whole = estimate_depth(long_frames, "depthcrafter", w, device="cpu", progress=False, **opts)
    got, params = _chunked(long_frames, tmp_path, "depthcrafter", w, **opts)
    np.testing.assert_array_equal(got, whole.depth)
    assert params == whole.params


@pytest.mark.parametrize("metric, smooth", [(False, 1.0), (True, 0.0)])
def test_depth_anything_aligns_a_long_clip_as_a_whole(tmp_path, long_frames, metric, smooth, tiny_depth_weights):
    w = tiny_depth_weights["metric" if metric else "relative"]
    whole = estimate_depth(long_frames, "depth-anything-v2", w, device="cpu", progress=False, smooth=smooth)
    got, _ = _chunked(long_frames, tmp_path, "depth-anything-v2", w, smooth=smooth)
    np.testing.assert_allclose(got, whole.depth, rtol=1e-6)
