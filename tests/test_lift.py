import numpy as np
import pytest

from ex4d_testutil import box_on_plane
from ex4d.cameras import default_intrinsics, look_at_w2c
from ex4d.dwmesh import build_dwmesh
from ex4d.errors import Ex4dError
from ex4d.lift import (LiftConfig, complete_depth, foreground_near_holes, lift_frame, lifted_mesh, load_lifted,
                       render_lifted, save_lifted)
from ex4d.render import render_mesh


def _slanted_background(H, W):
    """z-depth [H, W] of a slanted plane (inverse depth linear in the pixel coordinates)."""
    v, u = np.mgrid[0:H, 0:W]
    return 1.0 / (0.2 + 0.001 * u + 0.0005 * v)


def _orbit(yaw_deg, pivot=3.0):
    a = np.radians(yaw_deg)
    return look_at_w2c([pivot * np.sin(a), 0.0, pivot - pivot * np.cos(a)], [0, 0, pivot])


def test_background_completion_continues_the_far_side_not_the_occluder():
    H, W = 64, 96
    bg = _slanted_background(H, W)
    depth = bg.copy()
    depth[16:48, 20:40] = 1.5          # foreground box
    measured = np.ones((H, W), bool)
    measured[16:48, 40:52] = False      # the disocclusion right of the box
    out = complete_depth(np.where(measured, depth, np.inf), measured)
    hole = ~measured
    np.testing.assert_array_equal(out[measured], depth[measured].astype(np.float32))
    rel = np.abs(out[hole] - bg[hole]) / bg[hole]
    # background, not a blend with the box at 1.5 (a membrane flattens the plane a little at the free boundary)
    assert rel.max() < 0.05 and np.median(rel) < 0.01, (rel.max(), np.median(rel))
    assert np.all(np.isfinite(out)) and out.min() > 0


def test_foreground_border_of_a_hole_is_found():
    H, W = 40, 60
    depth = np.full((H, W), 5.0)
    depth[10:30, 10:25] = 2.0
    hole = np.zeros((H, W), bool)
    hole[10:30, 25:32] = True
    fg = foreground_near_holes(hole, depth)
    assert fg[10:30, 24].all()               # the box's edge
    assert not fg[:, 32:].any()               # the background's side


def test_guided_completion_keeps_the_estimate_shape_and_meets_the_border():
    H, W = 64, 96
    bg = _slanted_background(H, W)
    v, u = np.mgrid[0:H, 0:W]
    truth = bg.copy()
    bump = (u - 46) ** 2 + (v - 32) ** 2 < 100      # a nearer disc inside the hole
    truth[bump] = 3.0
    measured = np.ones((H, W), bool)
    measured[16:48, 30:62] = False
    guide = 1.0 / (2.0 * (1.0 / truth) + 0.05)     # an affine-invariant disparity estimate, as a depth
    out = complete_depth(np.where(measured, truth, np.inf), measured, guide=guide,
                         config=LiftConfig(completion="guide"))
    rel = np.abs(out - truth) / truth
    assert rel[~measured].max() < 0.02, rel[~measured].max()
    with pytest.raises(Ex4dError, match="guide"):
        complete_depth(truth, measured, config=LiftConfig(completion="guide"))


def test_completion_stays_behind_an_occluder_and_needs_something_to_start_from():
    H, W = 32, 32
    depth = np.full((H, W), 2.0)
    measured = np.ones((H, W), bool)
    measured[8:24, 8:24] = False
    occ = np.full((H, W), np.inf, np.float32)
    occ[8:24, 8:24] = 3.0                      # an occluding face farther than the surroundings
    out = complete_depth(depth, measured, occluder=occ)
    assert (out[8:24, 8:24] >= 3.0 - 1e-6).all()
    with pytest.raises(Ex4dError, match="no known pixel"):
        complete_depth(depth, np.zeros((H, W), bool))
    np.testing.assert_allclose(complete_depth(depth, np.zeros((H, W), bool), fallback=4.0), 4.0)


def test_a_lifted_source_frame_renders_like_its_dwmesh():
    rgb, depth = box_on_plane(48, 64)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    frame = lift_frame(rgb, depth, np.ones((H, W), bool), K, np.eye(4))
    np.testing.assert_array_equal(frame.depth, depth.astype(np.float32))
    w2c = _orbit(20)
    lr = render_lifted([frame], K, w2c, H, W)
    r = render_mesh(build_dwmesh(rgb, depth, K, far=frame.depth.max() * 2), K, w2c)
    np.testing.assert_array_equal(lr.mask, r.mask)
    np.testing.assert_allclose(lr.depth[lr.mask], r.depth[r.mask], rtol=1e-6)
    assert (lr.source[lr.mask] == 0).all() and (lr.source[~lr.mask] == -1).all()


def test_generated_content_is_placed_in_3d_and_seen_again_from_another_view():
    """A novel view's hole is 'generated' (here: painted), lifted, and shows up in a third view."""
    rgb, depth = box_on_plane(64, 96, fg=2.0, bg=5.0)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    w2c1 = _orbit(25)
    r = render_mesh(build_dwmesh(rgb, depth, K), K, w2c1)
    hole = ~r.mask & np.isfinite(r.depth)
    assert hole.sum() > 50
    out = (np.clip(r.color * 255 + 0.5, 0, 255)).astype(np.uint8)
    out[~r.mask] = (10, 200, 30)               # the "generated" colour
    lifted = lift_frame(out, r.depth, r.mask, K, w2c1)
    assert (~lifted.measured).sum() >= hole.sum()
    w2c2 = _orbit(28)
    lr = render_lifted([lifted], K, w2c2, H, W)
    green = lr.mask & (lr.color == (10, 200, 30)).all(-1)
    assert green.sum() > 0.5 * hole.sum()
    # the generated pixels sit on the background (depth ≈ 5 along the plane), not on the box at 2
    assert np.median(lr.depth[green]) > 4.0


def test_nearest_valid_surface_wins_across_frames():
    H, W = 32, 48
    K = default_intrinsics(W, H)
    near = lift_frame(np.full((H, W, 3), 50, np.uint8), np.full((H, W), 2.0), np.ones((H, W), bool), K, np.eye(4))
    far = lift_frame(np.full((H, W, 3), 200, np.uint8), np.full((H, W), 4.0), np.ones((H, W), bool), K, np.eye(4))
    lr = render_lifted([far, near], K, np.eye(4), H, W)
    inner = lr.mask
    assert inner.mean() > 0.8
    assert (lr.source[inner] == 1).all() and (lr.color[inner] == 50).all()
    meshes = [lifted_mesh(f) for f in (far, near)]
    lr2 = render_lifted([far, near], K, np.eye(4), H, W, meshes=meshes)
    np.testing.assert_array_equal(lr.color, lr2.color)


def test_save_and_load_round_trip(tmp_path):
    rgb, depth = box_on_plane(24, 32)
    K = default_intrinsics(32, 24)
    frames = [lift_frame(rgb, depth, np.ones(depth.shape, bool), K, _orbit(a)) for a in (0, 10)]
    save_lifted(tmp_path / "lift.npz", frames)
    back = load_lifted(tmp_path / "lift.npz")
    assert len(back) == 2
    for a, b in zip(frames, back):
        for name in ("rgb", "depth", "measured", "K", "w2c"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(Ex4dError, match="lifted-scene"):
        load_lifted(tmp_path / "bad.npz")


def test_bad_inputs_are_refused():
    K = default_intrinsics(16, 16)
    with pytest.raises(Ex4dError, match="uint8"):
        lift_frame(np.zeros((16, 16, 3)), np.ones((16, 16)), np.ones((16, 16), bool), K, np.eye(4))
    with pytest.raises(Ex4dError, match="render depth"):
        lift_frame(np.zeros((16, 16, 3), np.uint8), np.ones((8, 16)), np.ones((16, 16), bool), K, np.eye(4))
    with pytest.raises(Ex4dError, match="w2c"):
        lift_frame(np.zeros((16, 16, 3), np.uint8), np.ones((16, 16)), np.ones((16, 16), bool), K, np.eye(3))
    with pytest.raises(Ex4dError, match="completion"):
        LiftConfig(completion="magic")
