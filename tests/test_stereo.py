"""The second eye: eye geometry, defaults, and the right eye of an analytic scene against its exact render."""

import math

import cv2
import numpy as np
import pytest

from ex4d.cameras import default_intrinsics, invert_w2c, look_at_w2c, project_points, unproject_depth
from ex4d.errors import Ex4dError
from ex4d.eval.scenes import get_scene, render_truth, visible_in_source
from ex4d.lift import LiftedFrame, lift_frame
from ex4d.stereo import (StereoConfig, disparity, eye_mesh, fill_right_eye, render_right_eye, right_eye_cameras,
                         stereo_geometry)


def _orbit(yaw_deg, pivot):
    a = math.radians(yaw_deg)
    return look_at_w2c([pivot * math.sin(a), 0.0, pivot - pivot * math.cos(a)], [0, 0, pivot])


def test_right_eye_cameras_baseline_and_shifted_sensor():
    K = default_intrinsics(96, 64)
    w2c = np.stack([_orbit(a, 3.0) for a in (0.0, 10.0, -25.0)])
    ipd, c = 0.07, 2.5
    K_r, w2c_r = right_eye_cameras(K, w2c, ipd, c)
    rng = np.random.default_rng(0)
    for t in range(3):
        # the right camera's centre is ipd along the left camera's +x axis, axes parallel
        c2w_l, c2w_r = invert_w2c(w2c[t]), invert_w2c(w2c_r[t])
        np.testing.assert_allclose(c2w_r[:3, 3], c2w_l[:3, 3] + ipd * c2w_l[:3, 0], atol=1e-12)
        np.testing.assert_allclose(c2w_r[:3, :3], c2w_l[:3, :3], atol=1e-12)
        # points at any depth: same row, disparity fx·ipd·(1/z − 1/c); zero on the convergence plane
        z = rng.uniform(0.8, 20.0, 50)
        xy = rng.uniform(-0.3, 0.3, (50, 2)) * z[:, None]
        pts = (np.c_[xy, z] - w2c[t][:3, 3]) @ w2c[t][:3, :3]  # camera-space points → world
        uv_l, z_l = project_points(pts, K, w2c[t])
        uv_r, z_r = project_points(pts, K_r[t], w2c_r[t])
        np.testing.assert_allclose(z_r, z_l, rtol=1e-12)
        np.testing.assert_allclose(uv_r[:, 1], uv_l[:, 1], atol=1e-9)
        np.testing.assert_allclose(uv_l[:, 0] - uv_r[:, 0], disparity(z, K[0, 0], ipd, c), atol=1e-9)
    assert np.all(disparity(np.array([1.0, c, 10.0]), K[0, 0], ipd, c) * [1, 1, -1] >= [0, -1e-12, 0])
    assert abs(float(disparity(c, K[0, 0], ipd, c))) < 1e-12
    # convergence at infinity: parallel cameras, no sensor shift; one camera in, one camera out
    K1, w1 = right_eye_cameras(K, w2c[0], ipd)
    assert K1.shape == (3, 3) and w1.shape == (4, 4)
    np.testing.assert_array_equal(K1, K)
    np.testing.assert_allclose(K_r[0, 0, 2] - K[0, 2], K[0, 0] * ipd / c)


def test_default_geometry_follows_the_one_thirtieth_rule():
    rng = np.random.default_rng(1)
    depth = rng.uniform(2.0, 9.0, (4, 32, 32)).astype(np.float32)
    g = stereo_geometry(depth)
    near = float(np.percentile(depth, 2.0))
    assert g.near == pytest.approx(near, rel=1e-6)
    assert g.ipd == pytest.approx(near / 30) and g.convergence == pytest.approx(near)
    assert g.ipd_default and g.convergence_default
    # with the defaults every disparity lies within fx/30 px, on or behind the screen (nearest surface at zero)
    d = disparity(depth[depth >= near], 500.0, g.ipd, g.convergence)
    assert d.max() <= 1e-9 and d.min() >= -500.0 / 30
    g2 = stereo_geometry(depth, StereoConfig(ipd=0.063, convergence=math.inf))
    assert (g2.ipd, g2.convergence, g2.ipd_default, g2.convergence_default) == (0.063, math.inf, False, False)
    assert g2.to_dict()["convergence"] is None  # JSON has no inf


@pytest.mark.parametrize("kw, match", [({"ipd": 0.0}, "--ipd"), ({"ipd": -0.1}, "--ipd"), ({"ipd": math.nan}, "--ipd"),
                                       ({"ipd": math.inf}, "--ipd"), ({"convergence": 0.0}, "--convergence"),
                                       ({"convergence": -2.0}, "--convergence"), ({"window": -1}, "window")])
def test_bad_stereo_options_are_refused(kw, match):
    with pytest.raises(Ex4dError, match=match):
        StereoConfig(**kw)


def test_bad_geometry_inputs_are_refused():
    K = default_intrinsics(32, 32)
    with pytest.raises(Ex4dError, match="ipd"):
        right_eye_cameras(K, np.eye(4), 0.0)
    with pytest.raises(Ex4dError, match="convergence"):
        right_eye_cameras(K, np.eye(4), 0.1, 0.0)
    with pytest.raises(Ex4dError, match="no finite"):
        stereo_geometry(np.full((2, 4, 4), np.inf))


def test_zero_parallax_plane_is_copied_pixel_for_pixel_border_rows_included():
    H, W = 40, 56
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    K = default_intrinsics(W, H)
    frame = LiftedFrame(rgb=rgb, depth=np.full((H, W), 3.0, np.float32), measured=np.ones((H, W), bool), K=K,
                        w2c=np.eye(4))
    g = stereo_geometry([frame.depth], StereoConfig(ipd=0.1, convergence=3.0))
    eye = render_right_eye([frame], g, progress=False)
    assert eye.known.all()  # the top and bottom rows too (they lie on the grid's outer edges)
    np.testing.assert_array_equal(eye.color[0], rgb)


def _analytic_pair(N=128, T=3, scene="layout"):
    """Lifted left-eye frames of the exact views of an analytic scene along a small orbit, and their truth."""
    sc = get_scene(scene)
    K = default_intrinsics(N, N)
    frames, truth = [], []
    for i in range(T):
        w2c = _orbit(1.0 + 2.0 * i, sc.pivot_depth)
        tv = render_truth(sc, i / (T - 1), K, w2c, N, N)
        assert tv.has.all()
        truth.append(tv)
        frames.append(lift_frame(tv.rgb, tv.depth, tv.has, K, w2c))
    return sc, K, frames, truth


def _dilate(m, r):
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def test_right_eye_of_an_analytic_scene_matches_its_exact_render():
    """Right-eye known pixels show the true surface, with the true disparity; unknown = the band the IPD opens.

    Sampled at pixel centres, a depth map places its edges only to within a pixel: pixels within 1 px of a
    true depth edge of the right view (zone E) are left out of the leak and disparity measures (and reported).
    """
    sc, K, frames, truth = _analytic_pair()
    N = truth[0].depth.shape[0]
    g = stereo_geometry([f.depth for f in frames])
    eye = render_right_eye(frames, g, progress=False)
    raw_leaks, bands, unknowns = [], [], []
    for t, fr in enumerate(frames):
        tr = render_truth(sc, t / (len(frames) - 1), eye.K[t], eye.w2c[t], N, N)
        known, shown = eye.known[t], eye.known[t] | eye.borrowed[t]
        d = eye.depth[t]
        wrong = ~(np.abs(d - tr.depth) < 0.03 * tr.depth)  # another surface (3 %: beyond interpolation at creases)
        lz = np.log(tr.depth)
        edge = np.zeros_like(known)
        for ax in (0, 1):
            step = np.abs(np.diff(lz, axis=ax)) > 0.05
            sl = [slice(None)] * 2
            sl[ax] = slice(1, None)
            edge[tuple(sl)] |= step
            sl[ax] = slice(None, -1)
            edge[tuple(sl)] |= step
        E = _dilate(edge, 1)
        # leak ≤ 0.5 % (known and borrowed pixels alike)
        assert (known & wrong & ~E).sum() <= 0.005 * known.sum()
        assert (shown & wrong & ~E).sum() <= 0.005 * shown.sum()
        raw_leaks.append((known & wrong).mean())
        # disparity between the eyes in the shared known region: within 0.5 px of the truth
        X = unproject_depth(np.where(shown, d, 1.0), eye.K[t]) + [g.ipd, 0.0, 0.0]  # right → left camera
        uv_ours, _ = project_points(X, K)
        X_true = tr.points @ eye.w2c[t][:3, :3].T + eye.w2c[t][:3, 3] + [g.ipd, 0.0, 0.0]
        uv_true, _ = project_points(X_true, K)
        in_left = visible_in_source(tr.points @ fr.w2c[:3, :3].T + fr.w2c[:3, 3], truth[t].depth, K)
        shared = known & in_left & ~E
        assert shared.mean() > 0.8
        assert np.abs(uv_ours[..., 0] - uv_true[..., 0])[shared].max() <= 0.5
        # unknown pixels are the band the baseline opens (the truth's band, or a depth edge, give or take 1 px)
        band = ~in_left
        unknown = ~known
        assert (unknown & ~(_dilate(band, 1) | E)).sum() <= 0.02 * unknown.sum()
        bands.append(band.mean())
        unknowns.append(unknown.mean())
    assert max(raw_leaks) < 0.01  # edge pixels included
    # thin: a few percent of the frame, of the order of the true band
    assert max(unknowns) < 0.06 and np.mean(unknowns) <= 2.0 * np.mean(bands) + 0.005
    # and it shrinks with the baseline
    g_small = stereo_geometry([f.depth for f in frames], StereoConfig(ipd=g.ipd / 4))
    small = render_right_eye(frames[:1], g_small, StereoConfig(window=0), progress=False)
    assert (~small.known[0]).mean() < 0.5 * unknowns[0]


def test_fill_right_eye_classical_keeps_what_the_left_eye_saw():
    sc, K, frames, truth = _analytic_pair(N=64, T=2)
    g = stereo_geometry([f.depth for f in frames], StereoConfig(ipd=0.3))
    eye = render_right_eye(frames, g, progress=False)
    holes = ~(eye.known | eye.borrowed)
    assert holes.any()
    out = fill_right_eye(eye, "classical", progress=False)
    have = ~holes
    np.testing.assert_array_equal(out[have], eye.color[have])
    assert out[holes].max() > 0  # inpainted, not left black
    with pytest.raises(Ex4dError, match="unknown fill"):
        fill_right_eye(eye, "none")
    with pytest.raises(Ex4dError, match="--wan"):
        fill_right_eye(eye, "ex4d", {})


def test_eye_mesh_opens_only_edges_that_widen_past_the_gap():
    H, W = 24, 32
    K = default_intrinsics(W, H)

    def frame(depth):
        return LiftedFrame(rgb=np.zeros((H, W, 3), np.uint8), depth=depth.astype(np.float32),
                           measured=np.ones((H, W), bool), K=K, w2c=np.eye(4))

    near_left = np.full((H, W), 6.0)
    near_left[:, :16] = 3.0          # the right eye sees behind the near side's right edge: a gap opens
    gap = K[0, 0] * (1 / 3.0 - 1 / 6.0)  # px of widening per unit of ipd across the step
    wide, narrow = eye_mesh(frame(near_left), 2.0 / gap), eye_mesh(frame(near_left), 0.25 / gap)
    n = wide.num_grid_faces
    opened = wide.occluded[:n].reshape(2, H + 1, W + 1)
    assert opened[:, :, 16].all() and opened.sum() == 2 * (H + 1)  # just the quads across the step, every row
    assert narrow.occluded[:n].sum() == 0
    assert wide.occluded[n:].all() and narrow.occluded[n:].all()  # border walls and back cap stay occluded
    # the mirrored step closes (the near side covers the far one): nothing to open
    assert eye_mesh(frame(near_left[:, ::-1].copy()), 2.0 / gap).occluded[:n].sum() == 0
    # a horizontal step widens nothing either (the baseline is horizontal)
    assert eye_mesh(frame(np.where(np.arange(H)[:, None] < 12, 3.0, 6.0)
                          * np.ones((1, W))), 2.0 / gap).occluded[:n].sum() == 0


def test_neighbours_fill_disocclusions_with_background_never_with_a_moved_foreground():
    from ex4d_testutil import box_on_plane

    H, W = 48, 64
    K = default_intrinsics(W, H)
    rgb0, d0 = box_on_plane(H, W, fg=2.0, bg=5.0, seed=0)
    # frame 1: the box moved 6 px to the right (into frame 0's disocclusion), the wall is the same
    d1 = np.full((H, W), 5.0)
    d1[H // 4: 3 * H // 4, W // 4 + 6: W // 2 + 6] = 2.0
    rgb1 = rgb0.copy()
    rgb1[d1 == 2.0] = (255, 0, 0)
    rgb1[d1 == 5.0] = rgb0[d1 == 5.0]
    # frame 2: the box moved left, uncovering the wall that frame 0's right eye misses
    d2 = np.full((H, W), 5.0)
    d2[H // 4: 3 * H // 4, W // 4 - 8: W // 2 - 8] = 2.0
    frames = [LiftedFrame(rgb=r, depth=d.astype(np.float32), measured=np.ones((H, W), bool), K=K, w2c=np.eye(4))
              for r, d in ((rgb0, d0), (rgb1, d1), (rgb0, d2))]
    frames = [frames[1], frames[0], frames[2]]  # t = 1 is the frame under test, its neighbours t ± 1
    g = stereo_geometry([f.depth for f in frames], StereoConfig(ipd=0.15, convergence=math.inf))
    eye = render_right_eye(frames, g, StereoConfig(window=1), progress=False)
    b = eye.borrowed[1]
    assert b.sum() > 20                                          # the wall behind the box came from frame 2
    assert (eye.depth[1][b] > 4.5).all()                         # background, never the moved box (depth 2)
    assert not (eye.color[1][b] == (255, 0, 0)).all(axis=-1).any()


def test_eye_mesh_covers_exactly_its_own_flags():
    """The eye's mesh re-decides its flags (only quads that open a gap stay occluded); its cover faces follow
    those final flags, not the lifted mesh's."""
    from ex4d.stereo import eye_mesh

    sc, K, frames, truth = _analytic_pair(N=64, T=2)
    g = stereo_geometry([f.depth for f in frames])
    m = eye_mesh(frames[0], g.ipd, None, StereoConfig().gap_px)
    assert m.num_cover == int(m.occluded[: m.num_grid_faces].sum())
    assert m.occluded[-m.num_cover:].all() if m.num_cover else True
