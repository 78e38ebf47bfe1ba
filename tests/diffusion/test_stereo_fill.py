"""The second eye filled by the EX-4D model (tiny random weights): only the right eye's new pixels change."""

from __future__ import annotations

import numpy as np

from _ex4d_tiny import H, T, W
from ex4d.cameras import default_intrinsics
from ex4d.lift import LiftedFrame
from ex4d.stereo import StereoConfig, fill_right_eye, render_right_eye, stereo_geometry


def test_right_eye_filled_by_the_diffusion_model_keeps_what_the_left_eye_saw(wan_dirs):
    diffusers_dir, _ = wan_dirs
    rng = np.random.default_rng(0)
    K = default_intrinsics(W, H)
    frames = []
    for t in range(T):
        depth = np.full((H, W), 5.0, np.float32)
        depth[8:24, 10 + t:22 + t] = 2.0  # a box in front of a wall: the right eye opens a band beside it
        frames.append(LiftedFrame(rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), depth=depth,
                                  measured=np.ones((H, W), bool), K=K, w2c=np.eye(4)))
    g = stereo_geometry([f.depth for f in frames], StereoConfig(ipd=0.2, convergence=5.0))
    eye = render_right_eye(frames, g, StereoConfig(window=0), progress=False)
    holes = ~(eye.known | eye.borrowed)
    assert 0 < holes.mean() < 0.2
    opts = {"wan": str(diffusers_dir), "dtype": "float32", "device": "cpu", "steps": 2, "erosion": (2, 4)}
    out = fill_right_eye(eye, "ex4d", opts, seed=0, progress=False)
    assert out.shape == eye.color.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~holes], eye.color[~holes])  # the eyes agree where both see the surface
    assert (out[holes] != 0).any()  # the model's pixels, not the render's black


def test_right_eye_of_a_long_windowed_run_reuses_the_loaded_model(wan_dirs, monkeypatch, tmp_path):
    """A run's window options are honoured (no GenerateConfig error), a clip longer than a window is generated
    window by window (resumable), and the second eye reuses the generator the run's fill loaded."""
    import ex4d.diffusion.pipeline as pipeline
    from ex4d.diffusion.windowed import release_shared_generator, shared_generator

    diffusers_dir, _ = wan_dirs
    n = 9  # two windows of 5 frames sharing 1
    rng = np.random.default_rng(1)
    K = default_intrinsics(W, H)
    frames = []
    for t in range(n):
        depth = np.full((H, W), 5.0, np.float32)
        depth[8:24, 10 + t:22 + t] = 2.0
        frames.append(LiftedFrame(rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), depth=depth,
                                  measured=np.ones((H, W), bool), K=K, w2c=np.eye(4)))
    g = stereo_geometry([f.depth for f in frames], StereoConfig(ipd=0.2, convergence=5.0))
    eye = render_right_eye(frames, g, StereoConfig(window=0), progress=False)
    holes = ~(eye.known | eye.borrowed)
    loads = []
    real = pipeline.Ex4dGenerator.load.__func__
    monkeypatch.setattr(pipeline.Ex4dGenerator, "load",
                        classmethod(lambda cls, *a, **k: loads.append(1) or real(cls, *a, **k)))
    opts = {"wan": str(diffusers_dir), "dtype": "float32", "device": "cpu", "steps": 2, "erosion": (2, 4),
            "window": 5, "overlap": 1, "lift": "background"}   # as a windowed run records them
    from ex4d.diffusion import GenerateConfig

    try:
        left = shared_generator(str(diffusers_dir), None, GenerateConfig(dtype="float32", device="cpu", steps=2))
        left(eye.color[:5], eye.known[:5], 0)   # the run's fill loads the model
        out = fill_right_eye(eye, "ex4d", opts, seed=0, progress=False, windows=(tmp_path / "w", "k"))
        assert len(loads) == 1, "the second eye loaded the model again"
        assert out.shape == eye.color.shape
        np.testing.assert_array_equal(out[~holes], eye.color[~holes])
        assert len(list((tmp_path / "w").rglob("*.npz"))) >= 2   # one file per finished window
        again = fill_right_eye(eye, "ex4d", opts, seed=0, progress=False, windows=(tmp_path / "w", "k"))
        np.testing.assert_array_equal(again, out)   # resumed from the finished windows: the same eye
    finally:
        release_shared_generator()
