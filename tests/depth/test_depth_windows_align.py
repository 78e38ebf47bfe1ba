"""Pure parts of the depth backends: window spans and stitching, scale/shift alignment, final conversion."""

import numpy as np
import pytest

from ex4d.depth.align import align_scale_shift, fit_pair, pair_gaps, sample_grid, temporal_smooth
from ex4d.depth.common import values_to_depth
from ex4d.depth.windows import blend_append, blend_weights, run_windows, window_spans
from ex4d.errors import Ex4dError
from ex4d.io.depth import disparity_to_depth

# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("T, window, overlap, expected", [
    (49, 110, 25, [(0, 49)]),                       # the EX-4D case: one window
    (110, 110, 25, [(0, 110)]),
    (111, 110, 25, [(0, 110), (85, 111)]),
    (195, 110, 25, [(0, 110), (85, 195)]),          # DepthCrafter's default process length
    (196, 110, 25, [(0, 110), (85, 195), (170, 196)]),
    (10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
])
def test_window_spans(T, window, overlap, expected):
    spans = window_spans(T, window, overlap)
    assert spans == expected
    assert spans[-1][1] == T
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 - s1 == (overlap if len(spans) > 1 else 0)   # consecutive windows share `overlap` frames
        assert e1 - s1 > overlap


def test_window_spans_rejects_bad_overlap():
    with pytest.raises(Ex4dError, match="overlap"):
        window_spans(100, 10, 10)
    with pytest.raises(Ex4dError, match="num_frames"):
        window_spans(0, 10, 2)


def test_blend_weights_are_linear_from_old_to_new():
    w = blend_weights(5)
    np.testing.assert_allclose(w, [0, 0.25, 0.5, 0.75, 1])


def test_blend_append_mixes_linearly_over_the_overlap():
    acc = np.zeros((6, 2))
    piece = np.ones((5, 2))
    out = blend_append(acc, piece, 3)
    assert out.shape == (8, 2)
    np.testing.assert_allclose(out[:, 0], [0, 0, 0, 0, 0.5, 1, 1, 1])


@pytest.mark.parametrize("T, window, overlap", [(7, 7, 2), (23, 8, 3), (40, 11, 5), (30, 10, 0)])
def test_run_windows_reproduces_a_function_of_the_frame_index(T, window, overlap):
    """A 'model' whose output is a known function of the absolute frame index stitches back to that function."""
    def f(idx):  # [n, 2, 3] values depending only on the frame index
        idx = np.asarray(idx, np.float64)
        return np.stack([np.sin(idx), idx ** 2], axis=1)[:, :, None] * np.arange(1, 4)

    tails = []

    def process(start, end, tail):
        tails.append(tail)
        return f(np.arange(start, end))

    out = run_windows(T, window, overlap, process)
    np.testing.assert_allclose(out, f(np.arange(T)))
    spans = window_spans(T, window, overlap)
    assert len(tails) == len(spans) and tails[0] is None
    for (start, _), tail in zip(spans[1:], tails[1:]):   # the tail handed over is the stitched result so far
        if overlap == 0:
            assert tail is None
            continue
        np.testing.assert_allclose(tail, f(np.arange(start, start + overlap)))


def test_run_windows_blends_disagreeing_windows():
    """Windows returning their own id: the overlap ramps linearly from the old window to the new one."""
    spans = window_spans(12, 6, 3)
    ids = {s: k for k, (s, _) in enumerate(spans)}
    out = run_windows(12, 6, 3, lambda s, e, tail: np.full((e - s,), float(ids[s])))
    expected = np.array([0, 0, 0, 0, 0.5, 1, 1, 1.5, 2, 2, 2, 2])
    np.testing.assert_allclose(out, expected)


def test_run_windows_on_torch_tensors():
    torch = pytest.importorskip("torch")
    out = run_windows(20, 8, 3, lambda s, e, tail: torch.arange(s, e, dtype=torch.float32)[:, None].repeat(1, 4))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out[:, 0].numpy(), np.arange(20))


def test_run_windows_checks_the_returned_length():
    with pytest.raises(Ex4dError, match="returned"):
        run_windows(10, 4, 1, lambda s, e, tail: np.zeros(3))


# --------------------------------------------------------------------------- alignment


def _scene(T, H=72, W=96, moving=True):
    """[T, H, W] positive disparity: smooth background plus a disc moving 1 px per frame."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = 0.2 + 0.25 * (1 + np.sin(xx / 9.0) * np.cos(yy / 13.0))
    frames = []
    for t in range(T):
        disc = ((xx - 30 - (t if moving else 0)) ** 2 + (yy - 36) ** 2) < 150
        frames.append(base + 0.4 * disc)
    return np.stack(frames)


def _distort(D, rng, shift=True):
    T = D.shape[0]
    a = rng.uniform(0.5, 2.0, T)
    c = rng.uniform(-0.3, 0.3, T) if shift else np.zeros(T)
    d = a[:, None, None] * D + c[:, None, None]
    d = d + rng.normal(0, 0.005, d.shape) * a[:, None, None]
    outliers = rng.random(d.shape) < 0.05
    d[outliers] += rng.normal(0, 1.0, int(outliers.sum()))
    return d, a, c


@pytest.mark.parametrize("moving", [False, True])
def test_affine_alignment_recovers_per_frame_scale_and_shift(moving):
    rng = np.random.default_rng(1)
    D = _scene(25, moving=moving)
    d, a, c = _distort(D, rng)
    aligned, s, b = align_scale_shift(d, mode="affine", reference=0)
    # frame t mapped onto frame 0: s_t = a_0 / a_t, b_t = c_0 − a_0·c_t / a_t
    np.testing.assert_allclose(s, a[0] / a, rtol=0.02)
    np.testing.assert_allclose(b, c[0] - a[0] * c / a, atol=0.02)
    assert s[0] == 1 and b[0] == 0
    clean = np.abs(d - (a[:, None, None] * D + c[:, None, None])) < 0.1
    err = np.abs(aligned - (a[0] * D + c[0]))[clean]
    assert np.median(err) < 0.01
    # the distortion was large: without alignment frames disagree by far more
    assert np.median(np.abs(d - (a[0] * D + c[0]))[clean]) > 0.1


def test_scale_alignment_recovers_scales_and_keeps_the_reference():
    rng = np.random.default_rng(2)
    D = _scene(17)
    d, a, _ = _distort(D, rng, shift=False)
    aligned, s, b = align_scale_shift(d, mode="scale", reference=5)
    np.testing.assert_allclose(s, a[5] / a, rtol=0.02)
    assert np.all(b == 0)
    np.testing.assert_array_equal(aligned[5], d[5].astype(np.float32))


def test_alignment_none_and_single_frame_are_identity():
    d = _scene(3)
    for args in [dict(mode="none"), dict()]:
        src = d if args else d[:1]
        out, s, b = align_scale_shift(src, **args)
        np.testing.assert_allclose(out, src, rtol=1e-6)
        assert np.all(s == 1) and np.all(b == 0)


def test_alignment_survives_a_constant_frame():
    d = _scene(6)
    d[3] = 0.5  # no structure: no pair with it can be fitted
    out, s, b = align_scale_shift(d)
    assert np.isfinite(out).all() and np.all(s > 0)


def test_alignment_rejects_bad_arguments():
    with pytest.raises(Ex4dError, match="mode"):
        align_scale_shift(_scene(2), mode="median")
    with pytest.raises(Ex4dError, match="reference"):
        align_scale_shift(_scene(2), reference=2)
    with pytest.raises(Ex4dError, match=r"\[T, H, W\]"):
        align_scale_shift(np.zeros((4, 4)))


def test_fit_pair_is_not_biased_by_noise():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 20000)
    xi = 2.0 * x + 0.5 + rng.normal(0, 0.05, x.size)
    xj = x + rng.normal(0, 0.025, x.size)
    alpha, beta = fit_pair(xi, xj, trim=0.0)
    assert abs(alpha - 2.0) < 0.02 and abs(beta - 0.5) < 0.02
    assert fit_pair(np.ones(100), np.ones(100)) is None


def test_pair_gaps_and_sample_grid():
    assert pair_gaps(1) == [] and pair_gaps(49) == [1, 2, 4, 8, 16, 32]
    idx = sample_grid(480, 640, 4096)
    assert 0 < idx.size <= 4096 and idx.max() < 480 * 640 and len(np.unique(idx)) == idx.size
    assert sample_grid(4, 5, 4096).size == 20


def test_temporal_smooth_removes_flicker_and_keeps_constants():
    rng = np.random.default_rng(4)
    x = 1.0 + 0.1 * rng.standard_normal((30, 4, 4)).astype(np.float32)
    y = temporal_smooth(x, 2.0)
    assert y.std(axis=0).mean() < 0.5 * x.std(axis=0).mean()
    np.testing.assert_allclose(temporal_smooth(np.ones((5, 2, 2)), 1.0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(temporal_smooth(x, 0), x)


# --------------------------------------------------------------------------- conversion


def test_values_to_depth_depthcrafter_uses_the_original_mapping():
    d = np.linspace(0, 1, 2 * 8 * 6, dtype=np.float32).reshape(2, 8, 6)
    z = values_to_depth(d, "depthcrafter", 8, 6)
    np.testing.assert_allclose(z, disparity_to_depth(d), rtol=1e-6)
    z2 = values_to_depth(d, "depthcrafter", 16, 12)
    assert z2.shape == (2, 16, 12) and z2.dtype == np.float32 and (z2 > 0).all()


def test_values_to_depth_relative_and_metric():
    d = np.full((1, 4, 4), 3.0, np.float32)
    d[0, 0, 0] = 6.0
    z = values_to_depth(d, "disparity", 4, 4)
    assert z[0, 0, 0] == pytest.approx(10000 / 3900, rel=1e-5)      # the clip's maximum is the nearest point
    assert z[0, 1, 1] == pytest.approx(2 * 10000 / 3900, rel=1e-5)
    m = values_to_depth(np.full((2, 4, 4), 2.5, np.float32), "depth", 8, 8)
    np.testing.assert_allclose(m, 2.5, rtol=1e-5)
    assert m.shape == (2, 8, 8)


@pytest.mark.parametrize("size, max_res, expected", [
    ((1920, 1080), 1024, (1024, 576)), ((500, 300), 1024, (512, 320)), ((512, 512), 1024, (512, 512)),
    ((1024, 576), 1024, (1024, 576)), ((40, 20), 1024, (64, 64)), ((1280, 720), 512, (512, 256)),
])
def test_depthcrafter_processing_size(size, max_res, expected):
    from ex4d.depth.depthcrafter import processing_size

    w, h = processing_size(*size, max_res=max_res)
    assert (w, h) == expected and w % 64 == 0 and h % 64 == 0
