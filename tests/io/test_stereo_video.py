"""Tests for ex4d.io.stereo_video: packing, anaglyph, and the st3d stereo-mode box (checked by ffprobe)."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.io.stereo_video import (DUBOIS_LEFT, DUBOIS_RIGHT, anaglyph, pack_stereo, read_st3d, write_st3d,
                                  write_stereo_video)
from ex4d.io.video import read_video, write_video

T, H, W = 6, 32, 48


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    return left, left[:, :, ::-1].copy()


def ffprobe_stream(path):
    """The video stream as ffprobe (Debian's FFmpeg) reports it; skips without ffprobe."""
    exe = shutil.which("ffprobe")
    if exe is None:
        pytest.skip("ffprobe not found (Debian package 'ffmpeg'): bash scripts/setup_app.sh installs it")
    out = subprocess.run([exe, "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def stereo_type(stream):
    for sd in stream.get("side_data_list", []):
        if sd.get("side_data_type") == "Stereo 3D":
            return sd.get("type")
    return None


def test_layouts_pack_both_eyes(pair):
    left, right = pair
    sbs = pack_stereo(left, right, "sbs")
    assert sbs.shape == (T, H, 2 * W, 3)
    np.testing.assert_array_equal(sbs[:, :, :W], left)
    np.testing.assert_array_equal(sbs[:, :, W:], right)
    ou = pack_stereo(left, right, "ou")
    assert ou.shape == (T, 2 * H, W, 3)
    np.testing.assert_array_equal(ou[:, :H], left)
    np.testing.assert_array_equal(ou[:, H:], right)
    assert pack_stereo(left, right, "sbs", half=True).shape == (T, H, W, 3)
    assert pack_stereo(left, right, "ou", half=True).shape == (T, H, W, 3)
    flat = np.full((T, H, W, 3), 90, np.uint8)
    half = pack_stereo(flat, flat, "sbs", half=True)
    assert np.abs(half.astype(int) - 90).max() <= 1  # area resampling keeps a flat image flat


def test_anaglyph_is_dubois_in_linear_light():
    # a white left eye and a black right eye: only the red filter's channel lights up, by the first row's sum
    white = np.full((1, 4, 4, 3), 255, np.uint8)
    black = np.zeros_like(white)
    a = anaglyph(white, black)
    lin = np.clip(DUBOIS_LEFT.sum(axis=1), 0, 1)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(a[0, 0, 0].astype(float), np.round(srgb * 255), atol=1)
    assert a[0, 0, 0, 0] > 200 and a[0, 0, 0, 1:].max() == 0
    b = anaglyph(black, white)  # the right eye's image goes to green and blue (the cyan filter)
    assert b[0, 0, 0, 0] == 0 and b[0, 0, 0, 1] > 150 and b[0, 0, 0, 2] > 200
    lin_b = np.clip(DUBOIS_RIGHT.sum(axis=1), 0, 1)
    assert lin_b[2] == 1.0


@pytest.mark.parametrize("layout, half, size, mode, probe", [
    ("sbs", False, (2 * W, H), 2, "side by side"), ("sbs", True, (W, H), 2, "side by side"),
    ("ou", False, (W, 2 * H), 1, "top and bottom"), ("ou", True, (W, H), 1, "top and bottom"),
    ("anaglyph", False, (W, H), None, None)])
def test_stereo_files_carry_their_stereo_mode(tmp_path, pair, layout, half, size, mode, probe):
    left, right = pair
    path = write_stereo_video(tmp_path / f"s_{layout}.mp4", left, right, 30000 / 1001, layout, half)
    assert read_st3d(path) == mode
    s = ffprobe_stream(path)
    assert (s["width"], s["height"]) == size
    assert stereo_type(s) == probe
    assert Fraction(s["avg_frame_rate"]) == Fraction(30000 / 1001).limit_denominator(1001)  # timing untouched
    assert int(s["nb_frames"]) == T


def test_st3d_insertion_keeps_the_media_and_is_idempotent(tmp_path, pair):
    left, _ = pair
    plain = tmp_path / "plain.mp4"
    write_video(plain, left, 24.0)
    tagged = write_st3d(plain, 2, dest=tmp_path / "tagged.mp4")
    assert read_st3d(plain) is None and read_st3d(tagged) == 2
    np.testing.assert_array_equal(read_video(tagged, num_frames=None).frames, read_video(plain, num_frames=None).frames)
    write_st3d(tagged, 1)  # replaced, not added twice
    assert read_st3d(tagged) == 1 and tagged.read_bytes().count(b"st3d") == 1
    assert stereo_type(ffprobe_stream(tagged)) == "top and bottom"


def test_st3d_when_the_movie_box_precedes_the_media(tmp_path, pair):
    """faststart files (moov before mdat): every chunk offset moves by the box's 13 bytes."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("ffmpeg not found (Debian package 'ffmpeg'): bash scripts/setup_app.sh installs it")
    left, _ = pair
    write_video(tmp_path / "a.mp4", left, 24.0)
    fast = tmp_path / "fast.mp4"
    subprocess.run([exe, "-v", "error", "-y", "-i", str(tmp_path / "a.mp4"), "-c", "copy", "-movflags", "faststart",
                    str(fast)], check=True)
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    write_st3d(fast, 2)
    assert stereo_type(ffprobe_stream(fast)) == "side by side"
    np.testing.assert_array_equal(read_video(fast, num_frames=None).frames,
                                  read_video(tmp_path / "a.mp4", num_frames=None).frames)


def test_bad_stereo_inputs(tmp_path, pair):
    left, right = pair
    with pytest.raises(Ex4dError, match="unknown stereo layout"):
        pack_stereo(left, right, "checkerboard")
    with pytest.raises(Ex4dError, match="right eye must match"):
        pack_stereo(left, right[:, :-1], "sbs")
    with pytest.raises(Ex4dError, match="half"):
        pack_stereo(left, right, "anaglyph", half=True)
    with pytest.raises(Ex4dError, match=".mp4"):
        write_stereo_video(tmp_path / "s.mkv", left, right, 24.0)
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x10free" + b"\x00" * 8)
    with pytest.raises(Ex4dError, match="movie box"):
        write_st3d(tmp_path / "junk.mp4", 2)
