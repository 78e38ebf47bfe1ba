"""Inputs that contradict the video or the scene: refused with both values, or warned about."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ex4d.cameras import OPENGL_FLIP, check_intrinsics, check_principal_point, check_w2c, intrinsics_from_focal
from ex4d.errors import Ex4dError, Ex4dWarning, collect_warnings
from ex4d.io.camera_files import fit_camera_size, write_cameras_json, write_ex4d_npz
from ex4d.io.depth import check_depth_matches_frames, fit_depth_to_frames, match_depth_to_frames, same_view
from ex4d.plausibility import (check_camera_file, check_depth_values, check_known_fraction, check_path_start,
                               scene_points, view_fraction)
from ex4d.trajectory import make_trajectory

K = intrinsics_from_focal(64, 48, 60.0)
DEPTH = np.full((48, 64), 3.0)


def _warned(fn, *a, **k) -> list[str]:
    with collect_warnings(echo=lambda m: None) as msgs:
        fn(*a, **k)
    return msgs


# ------------------------------------------------------------------------------------------ depth vs video

@pytest.mark.parametrize("depth_hw, frames_hw", [
    ((384, 640), (352, 640)),    # DepthCrafter rounds 360 → 384, our frames 360 → 352
    ((512, 832), (480, 848)),    # 854×480 through DepthCrafter (multiples of 64) and ex4d (multiples of 16)
    ((576, 1024), (576, 1024)), ((720, 1280), (576, 1024)), ((1080, 1920), (576, 1024)), ((64, 64), (128, 128)),
])
def test_same_view_at_other_resolutions(depth_hw, frames_hw):
    check_depth_matches_frames((9, *depth_hw), *frames_hw)


@pytest.mark.parametrize("shape, frames_hw, words", [
    ((9, 64, 200), (128, 128), "aspect 3.125"),
    ((9, 128, 100), (128, 128), "0.781"),
    ((9, 128, 192), (128, 128), "aspect 1.500"),
    ((9, 288, 512), (512, 288), "transposed"),
    ((9, 640, 360), (352, 640), "transposed"),
    ((48, 64, 9), (48, 64), "frame axis looks last"),
])
def test_depth_of_another_view_is_refused_with_both_sizes(shape, frames_hw, words):
    with pytest.raises(Ex4dError, match="frames are") as e:
        check_depth_matches_frames(shape, *frames_hw, "--depth d.npy")
    assert words in str(e.value) and str(e.value).startswith("--depth d.npy is")


def test_fit_depth_resamples_only_the_same_view():
    d = np.full((2, 24, 32), 2.0, np.float32)
    assert fit_depth_to_frames(d, 48, 64).shape == (2, 48, 64)
    with pytest.raises(Ex4dError):
        fit_depth_to_frames(d, 64, 64)
    assert same_view(24, 32, 48, 64) and not same_view(32, 24, 48, 64)


@pytest.mark.parametrize("td, total, words", [(5, 12, "5 frames"), (100, 60, "100 frames"), (110, 300, "110")])
def test_depth_frame_counts_that_fit_nothing(td, total, words):
    with pytest.raises(Ex4dError, match=words):
        match_depth_to_frames(np.ones((td, 4, 4)), np.arange(9), total)
    match_depth_to_frames(np.ones((61, 4, 4)), np.arange(9), 60)  # a header a frame short: whole-video depth


# ------------------------------------------------------------------------------------------ depth values

def test_implausible_depth_values_warn():
    near = 1e-3
    assert not _warned(check_depth_values, np.full((3, 48, 64), 2.5), near)
    assert "near plane" in _warned(check_depth_values, np.full((3, 48, 64), 1e-30), near)[0]
    assert "very close" in _warned(check_depth_values, np.full((3, 48, 64), 5e-3), near)[0]
    wild = np.full((3, 48, 64), 1.0)
    wild[:, :10] = 1e7
    assert any("ratio" in m for m in _warned(check_depth_values, wild, near))
    jumpy = np.stack([np.full((48, 64), v) for v in (2.0, 2.1, 9.0)])
    assert any("jumps" in m and "frame 2" in m for m in _warned(check_depth_values, jumpy, near))


def test_known_fraction_warning():
    mask = np.zeros((3, 8, 8), bool)
    mask[0] = True
    assert "0.00%" in _warned(check_known_fraction, mask, [1, 2])[0]
    mask[1:, :4] = True
    assert not _warned(check_known_fraction, mask, [1, 2])


# ------------------------------------------------------------------------------------------ cameras

def test_camera_checks():
    with pytest.raises(Ex4dError, match="det"):
        check_w2c(np.diag([1.0, 1, -1, 1]))
    with pytest.raises(Ex4dError, match="upper triangular"):
        check_intrinsics([[60, 0, 32], [1, 60, 24], [0, 0, 1]])
    with pytest.raises(Ex4dError, match="principal point"):
        check_principal_point(np.array([[60, 0, 99], [0, 60, 24], [0, 0, 1.0]]), 64, 48)
    check_principal_point(K, 64, 48)


def test_camera_sizes():
    Ks = K[None]
    assert fit_camera_size(Ks, 64, 48, 64, 48, "c")[1] is None
    K2, note = fit_camera_size(Ks, 128, 96, 64, 48, "c.json")
    assert note and "128×96" in note and K2[0, 0, 0] == pytest.approx(K[0, 0] / 2)
    with pytest.raises(Ex4dError, match="swapped"):
        fit_camera_size(Ks, 48, 64, 64, 48, "c.json")
    with pytest.raises(Ex4dError, match="another video"):
        fit_camera_size(Ks, 100, 100, 64, 48, "c.json")


def _orbit(T=5):
    return make_trajectory("orbit", T, K, 64, 48, depth0=DEPTH, yaw=40)


def test_cameras_that_see_the_scene_pass():
    traj = _orbit()
    seen = check_camera_file(traj.w2c, traj.K, 64, 48, DEPTH, K, 1e-3, "c.json")
    assert seen.min() > 0.3
    pts = scene_points(DEPTH, K)
    np.testing.assert_allclose(view_fraction(pts, np.eye(4)[None], K[None], 64, 48, 1e-3), 1.0)


@pytest.mark.parametrize("label", ["opencv_w2c", "opengl_w2c"])
def test_a_contradicted_convention_label_is_refused(label):
    traj = _orbit()
    wrong = OPENGL_FLIP @ traj.w2c  # the other convention's matrices, read with this label
    other = "opengl_w2c" if label == "opencv_w2c" else "opencv_w2c"
    with pytest.raises(Ex4dError, match=f"the file says '{label}' while its matrices are '{other}'"):
        check_camera_file(wrong, traj.K, 64, 48, DEPTH, K, 1e-3, "c.json", label)


def test_cameras_seeing_nothing_warn():
    away = np.eye(4)
    away[:3, 3] = [1000.0, 0, 0]  # far to the side: nothing in view, in either convention
    msgs = _warned(check_camera_file, np.stack([away] * 3), np.stack([K] * 3), 64, 48, DEPTH, K, 1e-3, "c.json")
    assert msgs and "almost none" in msgs[0]


def test_path_start():
    assert not _warned(check_path_start, np.eye(4), K, K, "orbit")
    moved = np.eye(4)
    moved[0, 3] = 0.5
    assert "frame 0's camera" in _warned(check_path_start, moved, K, K, "path.json")[0]
    assert "intrinsics" in _warned(check_path_start, np.eye(4), K * [[2], [2], [1]], K, "path.json")[0]


def test_opengl_labelled_cameras_json_and_opencv_npz_end_to_end(tmp_path, capsys):
    """Through the CLI: a file whose label contradicts its matrices stops before the render."""
    from ex4d.cli import main

    assert main(["example", "--out", str(tmp_path / "ex"), "--num-frames", "5", "--size", "64"]) == 0
    base = ["recon", str(tmp_path / "ex" / "input.mp4"), "--depth", str(tmp_path / "ex" / "depth.npz"),
            "--depth-kind", "depth", "--num-frames", "5", "-q"]
    assert main([*base, "--trajectory", "orbit", "--yaw", "30", "--out", str(tmp_path / "good")]) == 0
    cams = json.loads((tmp_path / "good" / "cameras.json").read_text())
    w2c = np.array(cams["w2c"])
    write_cameras_json(tmp_path / "gl.json", OPENGL_FLIP @ w2c, np.array(cams["K"]), 64, 64, 30.0)
    write_ex4d_npz(tmp_path / "cv.npz", OPENGL_FLIP @ w2c, np.array(cams["K"]))  # writer flips: OpenCV content
    capsys.readouterr()
    for name in ("gl.json", "cv.npz"):
        out = tmp_path / name[:2]
        assert main([*base, "--trajectory", str(tmp_path / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "look away from the scene" in err and "convention" in err, err
        assert [p.name for p in out.iterdir()] == [".ex4d"], "outputs written despite the refusal"
        assert not (out / ".ex4d" / "run.json").exists(), "the refused run still claims the folder"
        # the depth it cached is reused by the corrected run, which is not refused as "other parameters"
        assert main([*base, "--trajectory", "orbit", "--yaw", "30", "--out", str(out)]) == 0
        assert "reused depth" in capsys.readouterr().out
    # the genuine files of the good run are accepted back
    for name in ("cameras.json", "cameras_ex4d.npz"):
        assert main([*base, "--trajectory", str(tmp_path / "good" / name), "--out", str(tmp_path / f"b-{name}")]) == 0


def test_warnings_reach_stderr_and_config_json(tmp_path, capsys):
    from ex4d.cli import main

    assert main(["example", "--out", str(tmp_path / "ex"), "--num-frames", "5", "--size", "64"]) == 0
    d = np.load(tmp_path / "ex" / "depth.npz")["depth"]
    np.save(tmp_path / "tiny.npy", np.full_like(d, 1e-30))
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["recon", str(tmp_path / "ex" / "input.mp4"), "--depth", str(tmp_path / "tiny.npy"),
                 "--num-frames", "5", "-q", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ex4d recon: warning:" in err and "near plane" in err and "novel-view pixels are known" in err
    recorded = json.loads((out / "config.json").read_text())["warnings"]
    assert any("near plane" in m for m in recorded) and any("known" in m for m in recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Ex4dWarning)  # library use: an ordinary Python warning
        with pytest.raises(Ex4dWarning):
            check_depth_values(np.full((1, 4, 4), 1e-30), 1e-3)
