"""The knowable set (ray marching against the source's depth) and the estimated-like depth variants."""

from __future__ import annotations

import numpy as np
import pytest

from ex4d.cameras import default_intrinsics, invert_w2c
from ex4d.errors import Ex4dError
from ex4d.eval import degrade as D
from ex4d.eval.knowable import knowable_mask, ray_clear, seen_by_source


def test_knowable_behind_a_thin_pole_has_the_analytic_answer():
    """A pole in front of a wall, the camera slid sideways: wall pixels whose ray passes behind the pole (in its
    source shadow) without touching it are visible in the source but not knowable; the analytic band is
    u' ∈ (u_R − f·tx/z1, u_L − f·tx/z2) in novel pixels, where the pole spans source columns [u_L, u_R]."""
    H, W = 32, 96
    K = default_intrinsics(W, H)
    f, c = K[0, 0], K[0, 2]
    z1, z2, tx = 2.0, 5.0, 0.6
    uL, uR = 44, 47                                          # the pole's source columns
    depth = np.full((H, W), z2)
    depth[:, uL:uR + 1] = z1
    w2c = np.eye(4)
    w2c[0, 3] = -tx                                          # camera centre at (tx, 0, 0)
    # true world points of the novel view: the wall (the pole is thin; only wall pixels are tested)
    v, u = np.mgrid[0:H, 0:W].astype(float)
    X = np.stack([(u - c) / f * z2 + tx, (v - K[1, 2]) / K[1, 1] * z2, np.full_like(u, z2)], -1)
    kn = knowable_mask(X, w2c, depth, K)
    seen = seen_by_source(X, depth, K)
    ux = u[0]
    band = (ux > uR - f * tx / z1 + 1.5) & (ux < uL - f * tx / z2 - 1.5)      # a pixel of slack at each end
    pole = (ux > uL - f * tx / z1 - 1.5) & (ux < uR - f * tx / z1 + 1.5)  # the novel ray meets the pole first
    outside = ((ux < uR - f * tx / z1 - 1.5) | (ux > uL - f * tx / z2 + 1.5)) & ~pole
    us = ux + f * tx / z2                                     # the wall point's source column
    wall_src = ((us < uL - 1.5) | (us > uR + 1.5)) & (us >= 0) & (us <= W - 1)  # seen by the source
    assert band.sum() >= 4
    assert seen[:, band & wall_src].all() and not kn[:, band & wall_src].any()
    assert kn[:, outside & wall_src].all()
    hidden = (us > uL + 0.5) & (us < uR - 0.5)                # the wall hidden behind the pole in the source
    assert hidden.any() and not kn[:, hidden].any()


def test_source_view_is_all_knowable_and_off_surface_points_are_not():
    H, W = 24, 32
    K = default_intrinsics(W, H)
    depth = np.full((H, W), 4.0)
    depth[8:16, 10:20] = 2.0
    v, u = np.mgrid[0:H, 0:W].astype(float)
    X = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    assert knowable_mask(X, np.eye(4), depth, K).all()
    # a point between the box and the wall (on no surface) is not seen; NaN points are neither
    assert not seen_by_source(np.array([[0.0, 0.0, 3.0]]), depth, K).any()
    assert not knowable_mask(np.full((1, 1, 3), np.nan), np.eye(4), depth, K).any()
    # a ray straight through the box's shadow volume is not clear
    origin = np.array([0.0, 0.0, 2.5])                        # behind the box, inside its source shadow
    assert not ray_clear(origin, np.array([[0.0, 0.0, 4.0]]), depth, K)[0]
    assert ray_clear(np.array([0.0, 0.0, 1.0]), np.array([[0.0, 0.0, 2.0]]), depth, K)[0]


def test_variant_names_and_errors():
    assert D.parse_variant("exact") == []
    assert D.parse_variant("fatten2+blur2.5+noise1") == [("fatten", 2.0), ("blur", 2.5), ("noise", 1.0)]
    assert D.variant_name("blur3.0+noise0.50") == "blur3+noise0.5"
    for bad in ("smear3", "fatten1.5", "noise60", "blur0"):
        with pytest.raises(Ex4dError, match="depth variant"):
            D.parse_variant(bad)
    with pytest.raises(Ex4dError, match="label map"):
        D.degrade(np.ones((1, 4, 4), np.float32), "fatten1")


def test_fatten_and_shrink_grow_across_steps_only():
    depth = np.full((12, 12), 5.0, np.float32)
    lab = np.zeros((12, 12), int)
    depth[4:8, 4:8], lab[4:8, 4:8] = 2.0, 1
    depth[:, 10:] = 5.05                                      # a 1 % step: not a depth step (< 3 %)
    lab[:, 10:] = 2
    fat = D.grow_across_steps(depth, lab, 2)
    assert (fat[2:10, 2:10] == 2.0).all() and (fat[:2, :10] == 5.0).all() and (fat[:, 10:] == 5.05).all()
    thin = D.grow_across_steps(depth, lab, 1, nearer=False)
    assert (thin[5:7, 5:7] == 2.0).all() and (thin[4, 4:8] == 5.0).all()
    noisy = D.degrade(depth[None], "noise1", seed=2)
    assert np.std(noisy[0, :, :4] / 5 - 1) == pytest.approx(0.01, rel=0.4)
