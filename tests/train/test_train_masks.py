"""Simulated masks: the round trip against exact visibility, tracking along optical flow, config, preview CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ex4d.cameras import invert_w2c, project_points, unproject_depth
from ex4d.errors import Ex4dError
from ex4d.example import make_example
from ex4d.train.masks import (CameraSample, MaskConfig, apply_mask, camera_path, mask_preview, propagate_masks,
                              render_masks, simulate_masks)

T, H, W = 3, 96, 128


@pytest.fixture(scope="module")
def scene():
    return make_example(T, W, H)


def free_space_visibility(depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, samples: int = 96) -> np.ndarray:
    """[H, W] bool: the source pixel's surface point is in the novel frame and the segment from the novel camera
    to it crosses only space the source saw as empty (in front of its depth map) or outside its frustum.

    Computed from the exact depth by marching the segments: no mesh, no rasterizer. This is what any render
    from the source view can know (space hidden behind a surface might hold anything)."""
    h, w = depth.shape
    X = unproject_depth(depth, K).reshape(-1, 3)
    C = invert_w2c(w2c)[:3, 3]
    uv, z = project_points(X, K, w2c)
    in_frame = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5) & (z > 0)
    blocked = np.zeros(len(X), bool)
    for s in np.linspace(0.0, 0.97, samples):
        q, zq = project_points(C + (X - C) * s, K)
        u, v = np.round(q[:, 0]).astype(int), np.round(q[:, 1]).astype(int)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (zq > 0)
        blocked |= inside & (zq > depth[v.clip(0, h - 1), u.clip(0, w - 1)] * 1.01)
    return (in_frame & ~blocked).reshape(h, w)


def tolerance_band(truth: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, px: int = 3) -> np.ndarray:
    """[H, W] bool: within ``px`` pixels of the truth's edges, a depth edge or the image border, or on a surface
    seen at more than 75° from either camera's ray (where the DW-Mesh filter drops faces by design)."""
    edges = cv2.morphologyEx(truth.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    logd = np.log(depth)
    jump_y, jump_x = np.abs(np.diff(logd, axis=0)) > 0.05, np.abs(np.diff(logd, axis=1)) > 0.05
    edges[1:] |= jump_y
    edges[:-1] |= jump_y
    edges[:, 1:] |= jump_x
    edges[:, :-1] |= jump_x
    edges[[0, -1]] = True
    edges[:, [0, -1]] = True
    band = cv2.dilate(edges.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0
    P = unproject_depth(depth, K)
    n = np.cross(np.gradient(P, axis=1), np.gradient(P, axis=0))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    C = invert_w2c(w2c)[:3, 3]
    for ray in (P, P - C):
        cos = np.abs((n * ray).sum(-1)) / np.linalg.norm(ray, axis=-1)
        band |= np.degrees(np.arccos(np.clip(cos, 0, 1))) > 75
    return band


@pytest.mark.parametrize("yaw, pitch, dolly", [(40.0, 10.0, 0.0), (-60.0, -15.0, 0.2), (25.0, 30.0, -0.3)])
def test_round_trip_matches_true_disocclusions(scene, yaw, pitch, dolly):
    w2c = camera_path(CameraSample("path", "orbit", yaw, pitch, dolly), T, scene.K, scene.depth[0])
    masks = render_masks(scene.frames, scene.depth, scene.K, w2c, MaskConfig())
    assert masks[0].all()  # frame 0 is the source view
    for t in range(1, T):
        truth = free_space_visibility(scene.depth[t], scene.K, w2c[t])
        band = tolerance_band(truth, scene.depth[t], scene.K, w2c[t])
        assert 0.05 < truth.mean() < 0.95  # a real disocclusion pattern
        leak = masks[t] & ~truth  # marked known, but not visible from the novel camera
        assert leak.mean() < 0.001, f"{leak.mean():.4%} of the pixels leak"
        far_errors = (masks[t] ^ truth) & ~band
        assert far_errors.mean() < 0.01, f"{far_errors.mean():.3%} of the pixels disagree beyond 3 px of a boundary"


def test_simulated_masks_are_seeded_and_bounded(scene):
    config = MaskConfig(min_unknown=0.05, max_unknown=0.9)
    a = simulate_masks(scene.frames, scene.depth, scene.K, config, seed=3)
    b = simulate_masks(scene.frames, scene.depth, scene.K, config, seed=3)
    assert np.array_equal(a.mask, b.mask) and a.camera == b.camera
    assert a.mask.dtype == bool and a.mask.shape == (T, H, W) and a.w2c.shape == (T, 4, 4)
    assert a.mask[0].all()
    assert abs(a.camera.yaw) <= 90 and abs(a.camera.pitch) <= 30
    if a.tries < config.tries:
        assert 0.05 <= a.unknown_fraction <= 0.9
    c = simulate_masks(scene.frames, scene.depth, scene.K, config, seed=4)
    assert c.camera != a.camera


def test_flow_tracking_masks_move_with_the_content(rng):
    texture = cv2.GaussianBlur(rng.integers(0, 256, (64, 120, 3), dtype=np.uint8), (0, 0), 1.5)
    frames = np.stack([texture[:, 40 - 3 * t: 120 - 3 * t] for t in range(6)])  # content moves 3 px right per frame
    hole = np.ones((64, 80), bool)
    hole[20:40, 20:36] = False
    masks = propagate_masks(frames, hole, anchor=0)
    for t in range(1, 6):
        expected = np.ones_like(hole)
        expected[20:40, 20 + 3 * t: 36 + 3 * t] = False
        assert (masks[t] != expected).mean() < 0.01, t
    back = propagate_masks(frames, hole, anchor=5)  # and backwards from a later anchor
    expected = np.ones_like(hole)
    expected[20:40, 5:21] = False
    assert (back[0] != expected).mean() < 0.01


def test_flow_mode_and_condition(scene):
    sim = simulate_masks(scene.frames, scene.depth, scene.K, MaskConfig(tracking="flow"), seed=0)
    assert sim.camera.tracking == "flow" and np.allclose(sim.w2c[1], sim.w2c[2])
    cond = apply_mask(scene.frames, sim.mask)
    assert (cond[~sim.mask] == 0).all() and np.array_equal(cond[sim.mask], scene.frames[sim.mask])
    preview = mask_preview(scene.frames, sim.mask, cond)
    assert preview.shape == (T, H, 3 * W, 3) and preview.dtype == np.uint8


def test_config_errors_are_actionable():
    with pytest.raises(Ex4dError, match="yaw_range"):
        MaskConfig(yaw_range=(10, 120))
    with pytest.raises(Ex4dError, match="tracking"):
        MaskConfig(tracking="random")
    assert MaskConfig.from_dict(MaskConfig().to_dict()) == MaskConfig()


def test_masks_command_writes_side_by_side_video(tmp_path, capsys):
    from ex4d.cli import main
    from ex4d.io.video import read_video

    out = tmp_path / "preview.mp4"
    assert main(["masks", "--example", "--num-frames", "5", "--size", "64", "48", "--camera", "30", "5", "0",
                 "--out", str(out)]) == 0
    video = read_video(out, num_frames=None, max_res=4096, multiple=1).frames
    assert video.shape == (5, 48, 192, 3)
    assert "unknown" in capsys.readouterr().out
