"""Tests for ex4d.io.depth: file formats, disparity → depth, resizing, frame alignment, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.io.depth import (DEPTH_KINDS, check_depth, default_depth_kind, disparity_to_depth, load_depth,
                           load_depth_file, match_depth_to_frames, resize_depth, save_depth_npz, to_depth)


def ramp(t: int = 3, h: int = 8, w: int = 10) -> np.ndarray:
    """[T, H, W] float32 positive values, distinct per frame."""
    return (1.0 + np.arange(t * h * w, dtype=np.float32).reshape(t, h, w) / 7.0)


# --------------------------------------------------------------------------- formats


def test_npz_depthcrafter_roundtrip(tmp_path):
    d = np.random.default_rng(0).random((4, 6, 5)).astype(np.float32)
    np.savez(tmp_path / "dc.npz", depth=d)
    np.testing.assert_array_equal(load_depth_file(tmp_path / "dc.npz"), d)
    assert default_depth_kind(tmp_path / "dc.npz") == "depthcrafter"


def test_npz_video_depth_anything_roundtrip(tmp_path):
    d = ramp().astype(np.float16)  # any float dtype is accepted and becomes float32
    np.savez_compressed(tmp_path / "vda.npz", depths=d)
    out = load_depth_file(tmp_path / "vda.npz")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, d.astype(np.float32))
    assert default_depth_kind(tmp_path / "vda.npz") == "disparity"


def test_npz_single_array_and_explicit_key(tmp_path):
    np.savez(tmp_path / "one.npz", pred=ramp())
    np.testing.assert_array_equal(load_depth_file(tmp_path / "one.npz"), ramp())
    assert default_depth_kind(tmp_path / "one.npz") == "depth"
    np.savez(tmp_path / "two.npz", a=ramp(), b=2 * ramp())
    np.testing.assert_array_equal(load_depth_file(tmp_path / "two.npz", key="b"), 2 * ramp())
    assert default_depth_kind(tmp_path / "two.npz", key="b") == "depth"
    with pytest.raises(Ex4dError, match=r"keys found: \['a', 'b'\]"):
        load_depth_file(tmp_path / "two.npz")
    with pytest.raises(Ex4dError, match=r"no key 'c'.*\['a', 'b'\]"):
        load_depth_file(tmp_path / "two.npz", key="c")


def test_npy_and_shapes(tmp_path):
    np.save(tmp_path / "d.npy", ramp())
    np.testing.assert_array_equal(load_depth_file(tmp_path / "d.npy"), ramp())
    assert default_depth_kind(tmp_path / "d.npy") == "depth"
    np.save(tmp_path / "single.npy", ramp(1)[0])  # [H, W] → [1, H, W]
    assert load_depth_file(tmp_path / "single.npy").shape == (1, 8, 10)
    np.save(tmp_path / "chan.npy", ramp()[..., None])  # [T, H, W, 1] → [T, H, W]
    np.testing.assert_array_equal(load_depth_file(tmp_path / "chan.npy"), ramp())
    np.save(tmp_path / "bad.npy", np.ones((2, 3, 4, 3), np.float32))
    with pytest.raises(Ex4dError, match=r"\(2, 3, 4, 3\)"):
        load_depth_file(tmp_path / "bad.npy")
    np.save(tmp_path / "vec.npy", np.ones(5, np.float32))
    with pytest.raises(Ex4dError, match=r"\(5,\)"):
        load_depth_file(tmp_path / "vec.npy")


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_png_folder(tmp_path, dtype):
    frames = (np.arange(11 * 6 * 7).reshape(11, 6, 7) % (250 if dtype == np.uint8 else 65000)).astype(dtype)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"depth_{i}.png"), f)  # depth_10 must come after depth_9
    (tmp_path / "notes.txt").write_text("ignored")
    out = load_depth_file(tmp_path)
    assert out.dtype == np.float32 and out.shape == (11, 6, 7)
    np.testing.assert_array_equal(out, frames.astype(np.float32))
    assert default_depth_kind(tmp_path) == "depth"
    np.testing.assert_array_equal(load_depth_file(tmp_path / "depth_3.png"), frames[3:4])


def test_png_color_rejected(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 2] = 9
    cv2.imwrite(str(tmp_path / "0.png"), img)
    with pytest.raises(Ex4dError, match="colour"):
        load_depth_file(tmp_path)


def test_cache_roundtrip(tmp_path):
    z = ramp()
    K = np.array([[500.0, 0, 5], [0, 500, 4], [0, 0, 1]])
    save_depth_npz(tmp_path / "cache" / "depth.npz", z, K=K, source="clip.mp4")
    path = tmp_path / "cache" / "depth.npz"
    assert default_depth_kind(path) == "depth"  # not mistaken for DepthCrafter's 'depth' key
    np.testing.assert_array_equal(load_depth_file(path), z)
    np.testing.assert_array_equal(load_depth(path), z)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["K"], K)
        assert str(data["source"]) == "clip.mp4" and data["depth"].dtype == np.float32
    assert sorted(p.name for p in path.parent.iterdir()) == ["depth.npz"]
    with pytest.raises(Ex4dError, match="> 0"):
        save_depth_npz(tmp_path / "bad.npz", np.zeros((1, 2, 2), np.float32))
    with pytest.raises(Ex4dError, match=r"\.npz"):
        save_depth_npz(tmp_path / "bad.npy", z)
    with pytest.raises(Ex4dError, match="reserved"):
        save_depth_npz(tmp_path / "bad.npz", z, kind="disparity")
    assert not (tmp_path / "bad.npz").exists()


def test_load_errors(tmp_path):
    with pytest.raises(Ex4dError, match="does not exist"):
        load_depth_file(tmp_path / "nope.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Ex4dError, match="no .png"):
        load_depth_file(tmp_path / "empty")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(Ex4dError, match="unsupported"):
        load_depth_file(tmp_path / "d.txt")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(Ex4dError, match="cannot read"):
        load_depth_file(tmp_path / "corrupt.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(Ex4dError, match="cannot read"):
        load_depth_file(tmp_path / "obj.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(Ex4dError, match="numeric"):
        load_depth_file(tmp_path / "s.npy")


# --------------------------------------------------------------------------- conversion


def test_depthcrafter_mapping_numbers():
    d = np.array([[[1.0, 0.0, 0.5, 1e-12]]], np.float32)
    z = to_depth(d, "depthcrafter")
    assert z.dtype == np.float32 and z.shape == d.shape
    assert z[0, 0, 0] == pytest.approx(10000 / 3900, rel=1e-6)  # 2.5641…
    assert z[0, 0, 0] == pytest.approx(2.5641026, rel=1e-6)
    assert z[0, 0, 1] == pytest.approx(1e4)  # d = 0 → far clip
    assert z[0, 0, 2] == pytest.approx(2 * 10000 / 3900, rel=1e-6)
    assert z[0, 0, 3] == pytest.approx(1e4)
    np.testing.assert_array_equal(disparity_to_depth(d), z)
    assert to_depth(d, "depthcrafter", scale=2.0)[0, 0, 0] == pytest.approx(2 * 10000 / 3900, rel=1e-6)


def test_disparity_normalisation_is_scale_invariant():
    d = np.random.default_rng(1).random((3, 5, 6)).astype(np.float32) + 0.01
    z1 = to_depth(d, "disparity")
    z7 = to_depth(7 * d, "disparity")
    np.testing.assert_allclose(z1, z7, rtol=1e-6)
    assert z1.min() == pytest.approx(10000 / 3900, rel=1e-6)  # nearest point as in the original
    np.testing.assert_allclose(z1, to_depth(d / d.max(), "depthcrafter"), rtol=1e-6)
    assert np.all(z1 > 0) and np.all(np.isfinite(z1))


def test_depth_kind_scales():
    z = ramp()
    np.testing.assert_allclose(to_depth(z, "depth", scale=0.5), 0.5 * z)
    assert set(DEPTH_KINDS) == {"depth", "disparity", "depthcrafter"}


def test_depth_kind_rejects_zeros_with_hint():
    z = ramp()
    z[2, 1, 1:4] = 0
    with pytest.raises(Ex4dError) as e:
        to_depth(z, "depth")
    msg = str(e.value)
    assert "frame 2" in msg and "3 pixels" in msg and "--depth-kind disparity" in msg
    z[2, 1, 1:4] = -1
    with pytest.raises(Ex4dError, match="frame 2 has 3 pixels") as e:
        to_depth(z, "depth")
    assert "--depth-kind disparity" not in str(e.value)


@pytest.mark.parametrize("kind", DEPTH_KINDS)
def test_nan_rejected(kind):
    v = np.full((3, 4, 4), 0.5, np.float32)
    v[1, 0, :2] = np.nan
    with pytest.raises(Ex4dError, match=r"non-finite.*frame 1 \(2 pixels\)"):
        to_depth(v, kind)


def test_disparity_errors():
    v = np.full((2, 3, 3), 0.5, np.float32)
    v[1, 2, 2] = -0.1
    with pytest.raises(Ex4dError, match="frame 1 has 1 negative"):
        to_depth(v, "disparity")
    with pytest.raises(Ex4dError, match="zero everywhere"):
        to_depth(np.zeros((1, 2, 2)), "disparity")
    with pytest.raises(Ex4dError, match=r"\[0, 1\].*--depth-kind disparity"):
        to_depth(np.full((1, 2, 2), 255.0), "depthcrafter")
    with pytest.raises(Ex4dError, match="'inverse'"):
        to_depth(v, "inverse")
    with pytest.raises(Ex4dError, match=r"\(3, 3\)"):
        to_depth(v[0], "depth")
    with pytest.raises(Ex4dError, match="scale"):
        to_depth(np.abs(v), "depth", scale=0)


def test_load_depth_defaults(tmp_path):
    d = np.random.default_rng(2).random((2, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "dc.npz", depth=d)
    np.testing.assert_array_equal(load_depth(tmp_path / "dc.npz"), to_depth(d, "depthcrafter"))
    np.savez(tmp_path / "vda.npz", depths=30 * d)
    np.testing.assert_allclose(load_depth(tmp_path / "vda.npz"), to_depth(d, "disparity"), rtol=1e-6)


# --------------------------------------------------------------------------- checks, resize, alignment


@pytest.mark.parametrize("bad, words", [
    (np.ones((4, 4), np.float32), r"\(4, 4\)"),
    (np.full((2, 4, 4), np.inf, np.float32), "non-finite"),
    (np.zeros((2, 4, 4), np.float32), "frame 0 has 16 pixels"),
    (np.zeros((0, 4, 4), np.float32), "empty"),
])
def test_check_depth(bad, words):
    with pytest.raises(Ex4dError, match=words):
        check_depth(bad)
    check_depth(ramp())


def test_resize_constant_stays_constant():
    z = np.full((2, 30, 40), 3.7, np.float32)
    for h, w in [(15, 20), (60, 80), (17, 23), (30, 40)]:
        out = resize_depth(z, h, w)
        assert out.shape == (2, h, w) and out.dtype == np.float32
        np.testing.assert_allclose(out, 3.7, rtol=1e-6)


def test_resize_step_edge():
    z = np.full((1, 16, 64), 4.0, np.float32)
    z[:, :, :32] = 1.0  # near on the left, far on the right
    small = resize_depth(z, 8, 32)
    np.testing.assert_allclose(small[0, :, :15], 1.0, rtol=1e-6)
    np.testing.assert_allclose(small[0, :, 17:], 4.0, rtol=1e-6)
    big = resize_depth(z, 32, 128)
    np.testing.assert_allclose(big[0, :, :62], 1.0, rtol=1e-6)
    np.testing.assert_allclose(big[0, :, 66:], 4.0, rtol=1e-6)
    # averaging happens in inverse depth: a pixel straddling the edge is 1/mean(1/z)
    odd = resize_depth(z[:, :, 16:48], 16, 11)  # 32 → 11 columns: the middle one straddles the edge
    mid = odd[0, 0, 5]
    assert 1.0 < mid < 2.0 < (1.0 + 4.0) / 2 + 1e-6  # nearer than the depth average


def test_resize_rejects_bad_depth():
    with pytest.raises(Ex4dError, match="> 0"):
        resize_depth(np.zeros((1, 4, 4), np.float32), 2, 2)


def test_match_depth_to_frames():
    depth = ramp(t=10)
    same = match_depth_to_frames(depth[:4], np.array([2, 4, 6, 8]), 10)
    np.testing.assert_array_equal(same, depth[:4])  # computed for the selected frames
    picked = match_depth_to_frames(depth, np.array([2, 4, 6]), 10)
    np.testing.assert_array_equal(picked, depth[[2, 4, 6]])  # whole-video depth
    longer = match_depth_to_frames(depth, np.array([1, 5]), -1)  # count unknown, depth long enough
    np.testing.assert_array_equal(longer, depth[[1, 5]])
    with pytest.raises(Ex4dError, match=r"depth has 5 frames, but the video gives 3 selected frames \(3…9 of a 12"):
        match_depth_to_frames(depth[:5], np.array([3, 6, 9]), 12)
    with pytest.raises(Ex4dError, match="indices"):
        match_depth_to_frames(depth, np.array([], np.int64), 10)
