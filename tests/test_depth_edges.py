"""The step criterion, the noise level and the snap sharpening (ex4d.depth_edges), and their torch twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ex4d.cameras import default_intrinsics
from ex4d.depth_edges import noise_level, prepare_depth
from ex4d.dwmesh import MeshConfig, mesh_depth_and_occlusion
from ex4d.errors import Ex4dError
from ex4d.eval.degrade import grow_across_steps


def _rays(H, W, K):
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1)


def _plane(H, W, K, n, c):
    """z-depth [H, W] of the plane n·X = c."""
    return c / (_rays(H, W, K) @ np.asarray(n, float))


def _occ_quads(depth, K, config=MeshConfig(), rgb=None):
    H, W = depth.shape
    return mesh_depth_and_occlusion(depth, K, config, rgb)[1].reshape(2, H - 1, W - 1).any(0)


def _mixed_quads(labels):
    """Quads [H−1, W−1] whose corners lie on different surfaces (labels [H, W])."""
    q = np.stack([labels[:-1, :-1], labels[1:, :-1], labels[:-1, 1:], labels[1:, 1:]])
    return q.max(0) != q.min(0)


@pytest.mark.parametrize("tilt", [60.0, 75.0, 85.0])
def test_steep_continuous_planes_stay_known(tilt):
    """A floor and a wall tilted away from the camera: every face seen at up to 87° from the source's rays
    (a per-pixel depth change of up to ~19 pixel footprints) stays known."""
    H, W = 64, 80
    K = default_intrinsics(W, H)
    a = np.radians(tilt)
    r = _rays(H, W, K)
    for n in (np.array([0.0, np.sin(a), np.cos(a)]), np.array([np.sin(a), 0.0, np.cos(a)])):  # floor, wall
        depth = _plane(H, W, K, n, 1.0)
        ok = np.isfinite(depth) & (depth > 0)
        d = np.where(ok, depth, 1e3)
        # angle of the plane's normal from each ray
        view = np.degrees(np.arccos(np.abs(r @ n) / np.linalg.norm(r, axis=-1)))
        seen = ok & (view < 87.0)
        quads = seen[:-1, :-1] & seen[1:, :-1] & seen[:-1, 1:] & seen[1:, 1:]
        assert quads.sum() > 500
        occ = _occ_quads(np.minimum(d, 50.0 * d[seen].min()), K)
        assert not occ[quads].any(), f"{tilt}°: {occ[quads].mean():.2%} of a continuous plane's faces flagged"


def test_spheres_limbs_stay_known_and_their_silhouettes_break():
    H = W = 96
    K = default_intrinsics(W, H)
    r = _rays(H, W, K)
    depth = np.full((H, W), 6.0)
    c, R = np.array([0.2, -0.1, 3.0]), 0.8
    b = (r @ c)
    disc = b ** 2 - (r * r).sum(-1) * (c @ c - R * R)
    hit = disc > 0
    t = (b - np.sqrt(np.where(hit, disc, 0))) / (r * r).sum(-1)
    depth = np.where(hit, t, depth)           # rays have z = 1: t is the z-depth
    occ = _occ_quads(depth, K)
    sil = _mixed_quads(hit)
    inner = hit[:-1, :-1] & hit[1:, :-1] & hit[:-1, 1:] & hit[1:, 1:]
    assert occ[sil].all(), "the sphere's silhouette against the wall must break"
    # every face with all four corners on the sphere stays known, up to the limb
    assert occ[inner].mean() < 0.01, f"{occ[inner].mean():.1%} of the sphere's own faces flagged"


@pytest.mark.parametrize("slant", [0.0, 60.0])
def test_steps_of_every_height_break(slant):
    """Panels 2 % … 300 % in front of a wall (fronto-parallel or slanted 60°): every step face is flagged."""
    H, W = 48, 160
    K = default_intrinsics(W, H)
    a = np.radians(slant)
    wall = _plane(H, W, K, [np.sin(a), 0.0, np.cos(a)], 5.0 * np.cos(a) if slant else 5.0)
    depth = wall.copy()
    lab = np.zeros((H, W), int)
    heights = (0.02, 0.05, 0.1, 0.3, 1.0, 3.0)
    for k, h in enumerate(heights):
        j0 = 8 + 25 * k
        depth[12:36, j0:j0 + 14] = wall[12:36, j0:j0 + 14] / (1 + h)
        lab[12:36, j0:j0 + 14] = k + 1
    occ = _occ_quads(depth, K)
    steps = _mixed_quads(lab)
    assert occ[steps].all(), f"missed step faces at {np.argwhere(steps & ~occ)[:5].tolist()}"
    assert not occ[~steps].any(), "faces on the panels and the wall stay known"


def test_noise_level():
    H, W = 96, 128
    K = default_intrinsics(W, H)
    plane = _plane(H, W, K, [0.1, 0.3, 0.9], 3.0)
    assert noise_level(1.0 / plane) < 1e-6
    noisy = plane * (1 + 0.01 * np.random.default_rng(0).standard_normal(plane.shape))
    assert noise_level(1.0 / noisy) == pytest.approx(0.01, rel=0.25)


def _box_scene(H=64, W=96, fg=2.0, bg=5.0, seed=0):
    """(rgb, depth, labels, the box's left/right edge columns): a box of one colour on a wall of another, with a
    mild texture on both."""
    rng = np.random.default_rng(seed)
    depth = np.full((H, W), bg)
    lab = np.zeros((H, W), int)
    i0, i1, j0, j1 = 16, 48, 30, 66
    depth[i0:i1, j0:j1] = fg
    lab[i0:i1, j0:j1] = 1
    rgb = np.where(lab[..., None] == 1, np.array([200, 60, 40]), np.array([40, 90, 180])).astype(np.int32)
    rgb = np.clip(rgb + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth, lab, (i0, i1, j0, j1)


@pytest.mark.parametrize("variant", ["blur2", "blur3", "fatten1+blur2.5", "fatten3+blur2.5", "shrink2+blur2"])
def test_snap_puts_soft_and_fattened_steps_back_within_a_pixel(variant):
    from scipy.ndimage import gaussian_filter

    rgb, depth, lab, (i0, i1, j0, j1) = _box_scene()
    K = default_intrinsics(depth.shape[1], depth.shape[0])
    d = depth.astype(np.float32)
    for step in variant.split("+"):
        kind, amount = step.rstrip("0123456789."), float(step.lstrip("abcdefghijklmnopqrstuvwxyz"))
        d = gaussian_filter(d, amount) if kind == "blur" else grow_across_steps(d, lab, int(amount), kind == "fatten")
    md = prepare_depth(d, rgb, MeshConfig())[0]
    mid = 0.5 * (1 / 2.0 + 1 / 5.0)  # the step's middle, in disparity
    errs = []
    for i in range(i0 + 4, i1 - 4):   # rows crossing the box's left and right edges, away from its corners
        near = (1.0 / md[i]) > mid
        left = np.argmax(near)                      # first box pixel
        right = len(near) - np.argmax(near[::-1])   # one past the last
        errs += [abs(left - j0), abs(right - j1)]
    errs = np.array(errs)
    assert (errs <= 1).mean() >= 0.95, f"{variant}: step within 1 px on {(errs <= 1).mean():.0%} of the rows"
    # and on those rows, beyond a pixel from the true edges, both sides are back at their depth (within 5 %)
    rows = slice(i0 + 4, i1 - 4)
    away = np.ones(depth.shape[1], bool)
    away[[j0 - 2, j0 - 1, j0, j0 + 1, j1 - 2, j1 - 1, j1, j1 + 1]] = False
    rel = np.abs(md[rows][:, away] / depth[rows][:, away] - 1)
    assert (rel < 0.05).mean() > 0.97, f"{variant}: {(rel >= 0.05).mean():.1%} of the plateau pixels off by > 5 %"


def test_snap_leaves_exact_depth_alone():
    rgb, depth, _, _ = _box_scene()
    md = prepare_depth(depth, rgb, MeshConfig())[0]
    assert np.array_equal(md, depth)


def test_flags_are_stable_over_frames_of_a_still_scene():
    """Per-frame estimator noise (1 %) on a still scene: the flags hardly change from frame to frame."""
    rgb, depth, lab, _ = _box_scene(96, 128)
    K = default_intrinsics(128, 96)
    flags = []
    for t in range(6):
        noisy = depth * (1 + 0.01 * np.random.default_rng(t).standard_normal(depth.shape))
        flags.append(mesh_depth_and_occlusion(noisy, K, MeshConfig(), rgb)[1])
    flags = np.stack(flags)
    flipped = (flags[1:] != flags[:-1]).sum(1).mean()
    assert flags.sum(1).min() > 0
    assert flipped / flags.sum(1).mean() < 0.1, f"{flipped / flags.sum(1).mean():.1%} of the flags flip per frame"


def _variants(depth, lab, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noisy = depth * (1 + 0.01 * rng.standard_normal(depth.shape))
    fat = gaussian_filter(grow_across_steps(depth.astype(np.float32), lab, 2), 2.5).astype(np.float64)
    return {"exact": depth, "blur": gaussian_filter(depth, 3.0), "noise": noisy,
            "mix": fat * (1 + 0.005 * rng.standard_normal(depth.shape))}


CONFIGS = [MeshConfig(), MeshConfig(sharpen="none"), MeshConfig(sharpen="median"), MeshConfig(soft_mode="on"),
           MeshConfig(soft_mode="off", denoise=False), MeshConfig(filter="grazing", sharpen="snap"),
           MeshConfig(filter="angle", sharpen="median"), MeshConfig(filter="boundary"),
           MeshConfig(snap_guard_px=0, snap_color_px=0, snap_reach=4)]


@pytest.mark.parametrize("cfg", CONFIGS,
                         ids=lambda c: f"{c.filter}-{c.sharpen}-{c.soft_mode}-{c.denoise}-{c.snap_reach}")
def test_numba_and_torch_give_the_same_depth_and_flags(cfg):
    """The GPU path's pre-pass and criterion (torch) equal the CPU kernels (numba) bit for bit, frame by frame."""
    from ex4d.render.torch_mesh import mesh_depth_and_occlusion_torch

    rgb, depth, lab, _ = _box_scene(40, 56)
    K = default_intrinsics(56, 40)
    var = _variants(depth, lab)
    names = list(var)
    d = np.stack([var[n] for n in names])
    rgbs = np.stack([rgb] * len(names))
    got_d, got_f = mesh_depth_and_occlusion_torch(torch.from_numpy(d), K, cfg, torch.from_numpy(rgbs))
    for b, n in enumerate(names):
        want_d, want_f = mesh_depth_and_occlusion(d[b], K, cfg, rgb)
        np.testing.assert_array_equal(got_d[b].numpy(), want_d, err_msg=n)
        np.testing.assert_array_equal(got_f[b].numpy(), want_f, err_msg=n)


def test_config_checks():
    for kw, msg in (({"sharpen": "blur"}, "sharpen mode"), ({"step_min_deg": 89.0, "step_max_deg": 80.0}, "step_min"),
                    ({"soft_mode": "maybe"}, "soft_mode"), ({"snap_reach": 0}, "snap_reach"),
                    ({"step_ratio": 1.5}, "step_ratio")):
        with pytest.raises(Ex4dError, match=msg):
            MeshConfig(**kw)
    assert MeshConfig().sharpen_mode == "snap" and MeshConfig(filter="angle").sharpen_mode == "none"
