"""ex4d.eval.metrics on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.eval import metrics as M


def _smooth_image(H=48, W=64, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((H, W, 3)), (2, 2, 0))
    return (x - x.min()) / (x.max() - x.min())


def _video(T=4, H=40, W=56, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- PSNR

def test_identical_videos_psnr_inf_ssim_one():
    v = _video()
    assert M.psnr(v, v) == math.inf
    assert M.ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    assert np.all(M.psnr_frames(v, v) == math.inf)
    assert np.allclose(M.ssim_frames(v, v), 1.0)


def test_psnr_of_a_known_noise_level():
    ref = np.full((32, 32, 3), 0.5)
    sign = np.where((np.indices((32, 32)).sum(0) % 2)[..., None] == 0, 1.0, -1.0)
    pred = ref + 0.05 * sign                      # every value off by exactly 0.05: MSE = 0.0025
    assert M.psnr(pred, ref) == pytest.approx(20 * math.log10(1 / 0.05), abs=1e-9)   # 26.02 dB
    # Gaussian noise of std σ: PSNR ≈ −20·log10(σ)
    rng = np.random.default_rng(1)
    noisy = 0.5 + 0.02 * rng.standard_normal((64, 64, 3))
    assert M.psnr(noisy, np.full_like(noisy, 0.5)) == pytest.approx(-20 * math.log10(0.02), abs=0.1)


def test_uint8_and_float_agree():
    a, b = _video(seed=1), _video(seed=2)
    assert M.psnr(a, b) == pytest.approx(M.psnr(a / 255.0, b / 255.0), rel=1e-12)
    assert M.ssim(a[0], b[0]) == pytest.approx(M.ssim(a[0] / 255.0, b[0] / 255.0), rel=1e-12)


def test_mask_selects_the_region():
    ref = _video(T=2)
    pred = ref.copy()
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, :, :28] = True                      # known = left half
    pred[:, :, 28:] = 255 - pred[:, :, 28:]     # change only the generated (right) half
    assert M.psnr(pred, ref, mask) == math.inf
    assert M.psnr(pred, ref, ~mask) < 10
    assert M.ssim(pred, ref, mask[:, :, :]) < 1   # windows near the seam see the change …
    inner = np.zeros_like(mask)
    inner[:, :, :20] = True                      # … but centres ≥ 6 px from it do not
    assert M.ssim(pred, ref, inner) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(M.psnr(pred, ref, np.zeros_like(mask)))
    assert math.isnan(M.ssim(pred, ref, np.zeros_like(mask)))


def test_psnr_pools_over_frames():
    ref = np.zeros((2, 16, 16, 3))
    pred = ref.copy()
    pred[0] += 0.1                               # frame 0 MSE 0.01, frame 1 MSE 0 → pooled MSE 0.005
    assert M.psnr(pred, ref) == pytest.approx(10 * math.log10(1 / 0.005))
    assert M.psnr_frames(pred, ref).tolist() == [pytest.approx(20.0), math.inf]


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(Ex4dError, match=r"pred has shape \[2, 8, 8, 3\] but ref has shape \[2, 8, 9, 3\]"):
        M.psnr(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 9, 3)))
    with pytest.raises(Ex4dError, match="mask has shape"):
        M.psnr(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)), np.ones((2, 8, 9), bool))
    with pytest.raises(Ex4dError, match="uint8 or float"):
        M.psnr(np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.int32))


# ----------------------------------------------------------------------------------------------- SSIM

def test_gaussian_window():
    w = M.gaussian_window()
    assert w.shape == (11,) and w.sum() == pytest.approx(1.0) and np.allclose(w, w[::-1])
    assert w[5] / w[4] == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)))


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.7
    c1 = (0.01) ** 2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)   # variances 0: the structure term is C2/C2 = 1
    assert M.ssim(np.full((20, 20), a), np.full((20, 20), b)) == pytest.approx(expect, rel=1e-9)
    assert M.ssim_map(np.full((20, 24, 3), a), np.full((20, 24, 3), b)).shape == (10, 14)


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    a = _smooth_image(seed=4)
    b = np.clip(a + 0.08 * rng.standard_normal(a.shape), 0, 1)
    ref = skm.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0)
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-10)
    ref_gray = skm.structural_similarity(a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
    assert M.ssim(a[..., 0], b[..., 0]) == pytest.approx(ref_gray, abs=1e-10)


def test_ssim_needs_an_11_pixel_window():
    with pytest.raises(Ex4dError, match="11×11"):
        M.ssim(np.zeros((10, 30, 3)), np.zeros((10, 30, 3)))


# ----------------------------------------------------------------------------------------------- flow

def _shifting_video(T=4, step=3):
    big = _smooth_image(H=72, W=140, seed=5)
    frames = np.stack([big[8:64, step * t: step * t + 96] for t in range(T)])
    return np.clip(frames * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", M.FLOW_METHODS)
def test_warping_error_of_a_known_shift(method):
    v = _shifting_video()
    with_flow = M.warping_error(v, method=method)
    without = M.warping_error(v, use_flow=False)
    assert with_flow.shape == (3,)
    assert np.all(with_flow < 2e-5)                       # the shift is undone exactly (up to interpolation)
    assert np.all(without > 100 * with_flow) and np.all(without > 1e-3)


def test_flow_is_the_shift_and_warp_undoes_it():
    v = _shifting_video(T=2, step=3)
    flow = M.optical_flow(v[0], v[1])
    centre = flow[10:-10, 10:-10]
    assert np.median(centre[..., 0]) == pytest.approx(-3.0, abs=0.1)
    assert np.median(np.abs(centre[..., 1])) < 0.1
    warped, valid = M.warp(v[1], np.dstack([np.full(v.shape[1:3], -3.0), np.zeros(v.shape[1:3])]).astype(np.float32))
    assert np.array_equal(valid[:, :3], np.zeros_like(valid[:, :3])) and valid[:, 3:].all()
    assert np.allclose(warped[:, 3:], v[0][:, 3:] / 255.0)


def test_flow_consistency_flags_disagreeing_flows():
    fw = np.zeros((8, 8, 2), np.float32)
    fw[..., 0] = 2.0
    assert M.flow_consistency(fw, -fw)[:, :6].all()       # backward undoes forward: consistent
    assert not M.flow_consistency(fw, fw)[:, :6].any()    # it does not: occluded
    assert not M.flow_consistency(fw, -fw)[:, 6:].any()   # target outside the frame


def test_warping_error_respects_the_mask_and_flow_video():
    v = _shifting_video(T=3)
    noisy = v.copy()
    noisy[1, :, 48:] = 255 - noisy[1, :, 48:]             # flicker on the right half of frame 1
    mask = np.zeros(v.shape[:3], bool)
    mask[:, :, :40] = True
    clean_left = M.warping_error(noisy, mask, flow_video=v)
    assert np.all(clean_left < 2e-5)                      # the left half warps cleanly with the clean video's flow
    assert M.warping_error(noisy, ~mask, flow_video=v)[0] > 0.01
    with pytest.raises(Ex4dError, match="video"):
        M.warping_error(v[0])


# ----------------------------------------------------------------------------------------------- geometry

def test_geometric_consistency():
    render = _video(T=2)
    mask = np.zeros(render.shape[:3], bool)
    mask[:, 10:30] = True
    pred = render.copy()
    pred[~mask] = 0                                        # the fill may do anything where unknown
    g = M.geometric_consistency(pred, render, mask)
    assert g["psnr"] == math.inf and g["mae"] == 0 and g["changed"] == 0
    pred[0, 10:15] = 255 - render[0, 10:15]                # change a quarter of frame 0's known rows
    g = M.geometric_consistency(pred, render, mask)
    changed = (np.abs(pred[0, 10:15].astype(int) - render[0, 10:15]).max(-1) > M.CHANGED_THRESHOLD * 255).sum()
    assert g["changed"] == pytest.approx(changed / mask.sum())
    assert np.isfinite(g["psnr_frames"][0]) and g["psnr_frames"][1] == math.inf
