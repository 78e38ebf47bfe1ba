"""Tests for ex4d.io.video: round trips, selection, size rule, errors, atomicity."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.io import video as V
from ex4d.io.video import (Frames, output_size, probe_video, read_mask_frames, read_mask_video, read_video,
                           write_png_frames, write_video)

REFERENCE = Path("/work/shared/reference/ex4d-flower/input.mp4")


# --------------------------------------------------------------------------- helpers


def smooth_frames(t: int = 6, h: int = 48, w: int = 64) -> np.ndarray:
    """[T, H, W, 3] uint8: smooth moving colour waves (codec-friendly)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        for c in range(3):
            out[i, :, :, c] = 128 + 100 * np.sin(x / (7 + 3 * c) + 0.4 * i + c) * np.cos(y / (9 + c) - 0.2 * i)
    return out


def index_value(i: int) -> int:
    """Gray level that encodes frame index i (robust to lossy coding)."""
    return 8 + 6 * i


def decode_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 8) / 6))


def index_frames(t: int, h: int = 32, w: int = 32) -> np.ndarray:
    """[T, H, W, 3] uint8 whose frame i is the flat gray index_value(i)."""
    return np.stack([np.full((h, w, 3), index_value(i), np.uint8) for i in range(t)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def encode(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, fps: int = 24, in_fmt: str = "rgb24",
           rotation: float | None = None) -> Path:
    """Write frames with an arbitrary PyAV codec/pixel format (test fixture writer)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=in_fmt)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def video20(tmp_path_factory) -> Path:
    """A 20-frame mp4 whose frame i is the gray level index_value(i)."""
    path = tmp_path_factory.mktemp("v") / "idx.mp4"
    write_video(path, index_frames(20), fps=24)
    return path


# --------------------------------------------------------------------------- size rule


@pytest.mark.parametrize("size, max_res, multiple, expected", [
    ((1920, 1080), 1024, 16, (1024, 576)),
    ((1080, 1920), 1024, 16, (576, 1024)),
    ((500, 300), 1024, 16, (496, 304)),   # no upscaling; sides snap to the nearest multiple
    ((512, 512), 1024, 16, (512, 512)),
    ((10, 7), 1024, 16, (16, 16)),         # at least one multiple
    ((1920, 1080), 1024, 64, (1024, 576)),
    ((1000, 1000), 1000, 16, (992, 992)),  # never above max_res, even when rounding would go up
    ((4000, 100), 1024, 16, (1024, 32)),
])
def test_output_size_rule(size, max_res, multiple, expected):
    assert output_size(*size, max_res=max_res, multiple=multiple) == expected


def test_output_size_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(16, 4000, 2))
        ow, oh = output_size(w, h, 1024, 16)
        assert ow % 16 == 0 and oh % 16 == 0
        assert max(ow, oh) <= 1024
        scale = min(1.0, 1024 / max(w, h))
        assert abs(ow - w * scale) <= 8 and abs(oh - h * scale) <= 8 or max(ow, oh) == 1024 or min(ow, oh) == 16


def test_read_resizes_by_rule(tmp_path):
    frames = smooth_frames(t=2, h=90, w=160)
    write_video(tmp_path / "a.mp4", frames, fps=24)
    out = read_video(tmp_path / "a.mp4", num_frames=2, max_res=64, multiple=16)
    assert out.frames.shape == (2, 32, 64, 3)  # 160x90 → scale 0.4 → 64x36 → 64x32
    assert out.source_size == (160, 90)
    ref = cv2.resize(frames[0], (64, 32), interpolation=cv2.INTER_AREA)
    assert psnr(out.frames[0], ref) > 30


# --------------------------------------------------------------------------- round trips


def test_lossy_roundtrip_psnr(tmp_path):
    frames = smooth_frames()
    path = tmp_path / "out" / "color.mp4"
    write_video(path, frames, fps=12.5)
    out = read_video(path, num_frames=None)
    assert isinstance(out, Frames)
    assert out.frames.shape == frames.shape and out.frames.dtype == np.uint8
    assert psnr(out.frames, frames) > 35
    assert out.fps == pytest.approx(12.5)
    assert out.indices.dtype == np.int64 and out.indices.tolist() == list(range(6))
    assert out.total_frames == 6 and out.source == str(path)
    assert probe_video(path) == (6, pytest.approx(12.5), 64, 48)


def test_lossy_encoding_is_repeatable(tmp_path):
    # threaded libx264 gave different pixels from one write to the next; a run must be reproducible
    rng = np.random.default_rng(3)
    frames = np.clip(smooth_frames().astype(int) + rng.integers(-40, 40, (6, 48, 64, 3)), 0, 255).astype(np.uint8)
    decoded = []
    for i in range(4):
        write_video(tmp_path / f"{i}.mp4", frames, fps=24)
        decoded.append(read_video(tmp_path / f"{i}.mp4", num_frames=None).frames)
    for d in decoded[1:]:
        np.testing.assert_array_equal(d, decoded[0])


def test_lossless_roundtrip_exact(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    write_video(tmp_path / "l.mp4", frames, fps=24, lossless=True)
    out = read_video(tmp_path / "l.mp4", num_frames=0)
    np.testing.assert_array_equal(out.frames, frames)


def test_ntsc_fps_roundtrip(tmp_path):
    write_video(tmp_path / "n.mp4", index_frames(3), fps=30000 / 1001)
    assert read_video(tmp_path / "n.mp4", num_frames=3).fps == pytest.approx(29.97, abs=1e-3)


def test_mask_video_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    blocks = rng.random((5, 6, 8)) > 0.5
    mask = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)  # [5, 48, 64] bool
    write_video(tmp_path / "mask.mp4", mask, fps=24)
    np.testing.assert_array_equal(read_mask_video(tmp_path / "mask.mp4"), mask)
    back = read_mask_video(tmp_path / "mask.mp4", num_frames=2, start=1, stride=2)
    np.testing.assert_array_equal(back, mask[[1, 3]])
    # a mask video also decodes as a gray colour video with values 0/255
    gray = read_video(tmp_path / "mask.mp4", num_frames=None).frames
    assert np.abs(gray[..., 0].astype(int) - mask * 255).mean() < 3


def test_odd_size_padded_and_cropped(tmp_path):
    mask = np.zeros((3, 21, 33), bool)
    mask[:, 5:15, 4:20] = True
    write_video(tmp_path / "odd.mp4", mask, fps=24)
    stored = read_mask_video(tmp_path / "odd.mp4")
    assert stored.shape == (3, 22, 34)
    np.testing.assert_array_equal(stored[:, :21, :33], mask)
    np.testing.assert_array_equal(read_mask_video(tmp_path / "odd.mp4", size=(33, 21)), mask)
    frames = smooth_frames(t=2, h=21, w=33)
    write_video(tmp_path / "odd_rgb.mp4", frames, fps=24)
    assert probe_video(tmp_path / "odd_rgb.mp4")[2:] == (34, 22)


def test_png_frames_roundtrip(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    paths = write_png_frames(tmp_path / "rgb", frames)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    out = read_video(tmp_path / "rgb", num_frames=None)
    np.testing.assert_array_equal(out.frames, frames)
    assert out.fps == 24.0 and out.total_frames == 3
    mask = np.random.default_rng(4).random((4, 20, 30)) > 0.5
    write_png_frames(tmp_path / "mask", mask)
    assert cv2.imread(str(tmp_path / "mask" / "00000.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    np.testing.assert_array_equal(read_mask_frames(tmp_path / "mask"), mask)
    # rewriting a shorter sequence removes the stale numbered frames, keeps other files
    (tmp_path / "mask" / "notes.txt").write_text("keep")
    write_png_frames(tmp_path / "mask", mask[:2])
    assert sorted(p.name for p in (tmp_path / "mask").iterdir()) == ["00000.png", "00001.png", "notes.txt"]
    assert not list((tmp_path / "mask").glob(".*"))  # no temp files


# --------------------------------------------------------------------------- inputs


def test_folder_natural_sort_and_selection(tmp_path):
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((32, 32, 3), index_value(i), np.uint8))
    (tmp_path / "readme.txt").write_text("not an image")
    out = read_video(tmp_path, num_frames=3, start=2, stride=4, fps=10)
    assert out.indices.tolist() == [2, 6, 10]
    assert [decode_index(f) for f in out.frames] == [2, 6, 10]
    assert out.fps == 10 and out.total_frames == 12 and out.source_size == (32, 32)
    assert probe_video(tmp_path) == (12, 24.0, 32, 32)


def test_folder_image_kinds(tmp_path):
    cv2.imwrite(str(tmp_path / "a1.png"), np.full((16, 16), 100, np.uint8))                 # gray
    cv2.imwrite(str(tmp_path / "a2.png"), np.full((16, 16), 100 * 257, np.uint16))          # 16-bit gray
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 200, 100, 0                                  # BGRA, transparent
    cv2.imwrite(str(tmp_path / "a3.png"), bgra)
    cv2.imwrite(str(tmp_path / "a4.jpg"), np.full((16, 16, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "a5.bmp"), np.full((16, 16, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "a6.webp"), np.full((16, 16, 3), 100, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])
    out = read_video(tmp_path, num_frames=None)
    assert out.frames.shape == (6, 16, 16, 3)
    assert np.all(out.frames[[0, 1, 3, 4, 5]] == 100)
    np.testing.assert_array_equal(out.frames[2, 0, 0], [100, 0, 200])  # RGB order, alpha dropped


def test_folder_mixed_sizes_error(tmp_path):
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "2.png"), np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(Ex4dError, match="one size"):
        read_video(tmp_path, num_frames=None)


def test_gif_input(tmp_path):
    values = [0, 255, 0, 255, 0, 255]  # exactly representable in the rgb8 palette
    frames = np.stack([np.full((24, 32, 3), v, np.uint8) for v in values])
    frames[:, :, :16, 0] = 255
    path = encode(tmp_path / "a.gif", frames, "gif", "rgb8", fps=10)
    out = read_video(path, num_frames=None, multiple=8)
    assert out.frames.shape == (6, 24, 32, 3)
    # the rgb8 palette dithers a little: compare region means
    np.testing.assert_allclose(out.frames[:, :, 16:].mean(axis=(1, 2, 3)), values, atol=8)
    np.testing.assert_allclose(out.frames[:, :, :16, 0].mean(axis=(1, 2)), 255, atol=8)
    assert out.fps == pytest.approx(10)
    assert probe_video(path)[0] == 6


@pytest.mark.parametrize("codec, pix_fmt, suffix, in_fmt, channels", [
    ("ffv1", "gray", "mkv", "gray", 1),
    ("libx264", "yuv420p10le", "mkv", "rgb24", 3),
    ("png", "rgba", "mov", "rgba", 4),
    ("libvpx-vp9", "yuva420p", "webm", "rgba", 4),
    ("mpeg4", "yuv420p", "avi", "rgb24", 3),
])
def test_pixel_formats_become_rgb(tmp_path, codec, pix_fmt, suffix, in_fmt, channels):
    shape = (3, 32, 32) + ((channels,) if channels > 1 else ())
    frames = np.full(shape, 100, np.uint8)
    path = encode(tmp_path / f"p.{suffix}", frames, codec, pix_fmt, in_fmt=in_fmt)
    out = read_video(path, num_frames=3)
    assert out.frames.shape == (3, 32, 32, 3) and out.frames.dtype == np.uint8
    assert np.abs(out.frames.astype(int) - 100).max() <= 3


def test_selection_indices(video20):
    out = read_video(video20, num_frames=4, start=3, stride=4)
    assert out.indices.tolist() == [3, 7, 11, 15]
    assert [decode_index(f) for f in out.frames] == [3, 7, 11, 15]
    assert out.total_frames == 20
    rest = read_video(video20, num_frames=None, start=5, stride=3)
    assert rest.indices.tolist() == [5, 8, 11, 14, 17]
    assert [decode_index(f) for f in rest.frames] == [5, 8, 11, 14, 17]
    assert read_video(video20, num_frames=0, start=18).indices.tolist() == [18, 19]


def test_decoding_stops_early(video20, monkeypatch):
    seen = []
    original = V._decode

    def spy(*args):
        for index, frame in original(*args):
            seen.append(index)
            yield index, frame

    monkeypatch.setattr(V, "_decode", spy)
    read_video(video20, num_frames=3, start=2, stride=2)
    assert max(seen) == 6  # frames 2, 4, 6 selected: nothing decoded after 6


def test_unknown_frame_count_container(tmp_path):
    path = encode(tmp_path / "v.webm", index_frames(9), "libvpx", "yuv420p")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # webm stores no frame count
    assert probe_video(path)[0] == 9
    assert read_video(path, num_frames=2).total_frames == -1  # stopped early, count unknown
    assert read_video(path, num_frames=None).total_frames == 9


def test_display_rotation_applied(tmp_path):
    frames = smooth_frames(t=2, h=32, w=64)
    path = encode(tmp_path / "r.mp4", frames, "libx264", "yuv420p", rotation=90)
    out = read_video(path, num_frames=2)
    assert out.frames.shape == (2, 64, 32, 3) and out.source_size == (32, 64)
    assert psnr(out.frames[0], np.rot90(frames[0])) > 30
    assert probe_video(path)[2:] == (32, 64)


def test_reference_input():
    if not REFERENCE.exists():
        pytest.skip("reference clip not present")
    out = read_video(REFERENCE)
    assert out.frames.shape == (49, 512, 512, 3)
    assert out.total_frames == 49 and out.source_size == (512, 512)
    assert probe_video(REFERENCE)[0] == 49


# --------------------------------------------------------------------------- errors


def test_short_video_error_and_allow_short(video20):
    with pytest.raises(Ex4dError) as e:
        read_video(video20, num_frames=49)
    msg = str(e.value)
    assert "20 frames" in msg and "--num-frames 20" in msg and "--allow-short" in msg
    with pytest.raises(Ex4dError, match="only 4 are available"):
        read_video(video20, num_frames=10, start=10, stride=3)
    out = read_video(video20, num_frames=10, start=10, stride=3, allow_short=True)
    assert out.indices.tolist() == [10, 13, 16, 19]
    with pytest.raises(Ex4dError, match="20 frames"):
        read_video(video20, num_frames=1, start=20, allow_short=True)


def test_short_folder_error(tmp_path):
    write_png_frames(tmp_path, index_frames(3))
    with pytest.raises(Ex4dError, match="3 frames"):
        read_video(tmp_path, num_frames=5)
    assert read_video(tmp_path, num_frames=5, allow_short=True).num_frames == 3


@pytest.mark.parametrize("kwargs, words", [
    ({"num_frames": -1}, "num_frames"),
    ({"stride": 0}, "stride"),
    ({"start": -2}, "start"),
    ({"max_res": 8}, "max_res"),
    ({"num_frames": 2.5}, "num_frames"),
])
def test_bad_parameters(video20, kwargs, words):
    with pytest.raises(Ex4dError, match=words) as e:
        read_video(video20, **kwargs)
    assert str(list(kwargs.values())[0]) in str(e.value)


def test_bad_inputs(tmp_path):
    with pytest.raises(Ex4dError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video")
    with pytest.raises(Ex4dError, match="cannot open"):
        read_video(tmp_path / "text.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(Ex4dError, match="cannot open"):
        probe_video(tmp_path / "empty.mp4")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(Ex4dError, match="no images"):
        read_video(tmp_path / "empty_dir")
    with pytest.raises(Ex4dError, match="no images"):
        read_mask_frames(tmp_path / "empty_dir")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_bytes(b"garbage")
    with pytest.raises(Ex4dError, match="cannot read image"):
        read_video(tmp_path / "broken", num_frames=None)


def test_bad_write_arguments(tmp_path):
    ok = index_frames(2)
    with pytest.raises(Ex4dError, match="dtype float32"):
        write_video(tmp_path / "a.mp4", ok.astype(np.float32), fps=24)
    with pytest.raises(Ex4dError, match="shape"):
        write_video(tmp_path / "a.mp4", ok[..., :2], fps=24)
    with pytest.raises(Ex4dError, match=r"\.avi"):
        write_video(tmp_path / "a.avi", ok, fps=24)
    with pytest.raises(Ex4dError, match="fps"):
        write_video(tmp_path / "a.mp4", ok, fps=0)
    with pytest.raises(Ex4dError, match="crf"):
        write_video(tmp_path / "a.mp4", ok, fps=24, crf=99)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    dest = tmp_path / "out.mp4"
    write_video(dest, index_frames(3), fps=24)
    before = dest.read_bytes()
    calls = {"n": 0}
    original = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a Ctrl-C in the middle of encoding
        return original(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(KeyboardInterrupt):
        write_video(dest, index_frames(6), fps=24)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "new.mp4", index_frames(6), fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp files, no new.mp4
    assert dest.read_bytes() == before
