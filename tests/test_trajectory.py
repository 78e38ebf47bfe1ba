"""Tests for ex4d.trajectory: original presets, parametric motions, keyframes, camera files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ex4d.cameras import intrinsics_from_focal, invert_w2c, opencv_to_opengl_w2c, project_points
from ex4d.errors import Ex4dError
from ex4d.io.camera_files import write_cameras_json, write_ex4d_npz
from ex4d.trajectory import (
    PRESETS,
    Trajectory,
    interpolate_keyframes,
    make_trajectory,
    orbit_w2c,
    original_radius,
    original_rounds,
    pivot_depth_from_depth,
    relative_angles,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ex4d-flower"
W, H = 64, 48
K0 = intrinsics_from_focal(W, H, 60.0)


def _depth(value: float = 2.0) -> np.ndarray:
    return np.full((H, W), value)


def _centres(w2c: np.ndarray) -> np.ndarray:
    return invert_w2c(w2c)[:, :3, 3]


# ----------------------------------------------------------------------------- original presets

@pytest.mark.skipif(not (REFERENCE / "camera_180.npz").is_file(), reason="shared reference data not present")
def test_ex4d_180_reproduces_reference_npz():
    ref = np.load(REFERENCE / "camera_180.npz")
    K = ref["intrinsics"].astype(np.float64)
    depth0 = np.full((512, 512), 2.5901)  # r = 2.5901 + 0.15 = 2.7401
    traj = make_trajectory("ex4d-180", 49, K, 512, 512, depth0)
    assert traj.params["radius"] == pytest.approx(2.7401)
    np.testing.assert_allclose(opencv_to_opengl_w2c(traj.w2c), ref["extrinsics"], atol=1e-5)
    np.testing.assert_array_equal(traj.K[0], K)


def test_original_radius_ignores_border_ring_like_the_original():
    d = _depth(3.0)
    d[0, :] = 0.5  # the original overwrites the outer ring with 100 before taking the minimum
    d[10, 10] = 1.0
    assert original_radius(d) == pytest.approx(1.15)
    assert original_radius(np.full((H, W), 500.0)) == pytest.approx(100.15)


def test_original_rounds():
    assert original_rounds(49) == 1.0
    assert original_rounds(98) == 2.0
    assert original_rounds(25) == pytest.approx(49 / 25)  # fewer frames sweep further, as in recon.py


@pytest.mark.parametrize("angle", [30, 60, 90])
def test_original_presets_end_at_their_yaw(angle):
    traj = make_trajectory(f"ex4d-{angle}", 49, K0, W, H, _depth())
    yaw, pitch = relative_angles(traj.w2c)
    assert yaw[-1] == pytest.approx(angle, abs=1e-9)
    assert np.all(np.diff(yaw) > 0)
    assert np.all(pitch >= 0)  # the original rises slightly while orbiting
    assert traj.name == f"ex4d-{angle}" and make_trajectory(str(angle), 49, K0, W, H, _depth()).name == traj.name


def test_original_180_swings_only_45_degrees():
    yaw, pitch = relative_angles(make_trajectory("ex4d-180", 49, K0, W, H, _depth()).w2c)
    assert yaw.max() == pytest.approx(45.0) and yaw.min() == pytest.approx(-45.0)
    assert pitch.max() == pytest.approx(np.degrees(np.arctan(0.4)))


def test_original_rounds_scale_longer_clips():
    yaw, _ = relative_angles(make_trajectory("ex4d-30", 98, K0, W, H, _depth()).w2c)
    assert yaw[-1] == pytest.approx(60.0)
    yaw, _ = relative_angles(make_trajectory("ex4d-30", 98, K0, W, H, _depth(), rounds=1).w2c)
    assert yaw[-1] == pytest.approx(30.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_frame0_is_source_for_every_preset(preset):
    traj = make_trajectory(preset, 17, K0, W, H, _depth())
    assert traj.w2c.shape == (17, 4, 4) and traj.K.shape == (17, 3, 3)
    assert traj.w2c.dtype == np.float64 and traj.K.dtype == np.float64
    np.testing.assert_allclose(traj.w2c[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(traj.K[0], K0, atol=1e-12)
    assert traj.starts_at_source
    json.dumps(traj.params)  # JSON-able


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_params_rebuild_the_trajectory_without_depth(preset):
    traj = make_trajectory(preset, 13, K0, W, H, _depth(1.7))
    again = make_trajectory(**traj.params, num_frames=13, K=K0, width=W, height=H)
    np.testing.assert_array_equal(again.w2c, traj.w2c)
    np.testing.assert_array_equal(again.K, traj.K)


def test_trajectory_arrays_are_read_only():
    traj = make_trajectory("orbit", 5, K0, W, H, _depth())
    with pytest.raises(ValueError):
        traj.w2c[0, 0, 0] = 2.0
    assert isinstance(traj, Trajectory)


# ----------------------------------------------------------------------------- parametric motions

@pytest.mark.parametrize("yaw", [90.0, -90.0])
def test_orbit_reaches_90_and_keeps_pivot_centred(yaw):
    traj = make_trajectory("orbit", 25, K0, W, H, _depth(), yaw=yaw, pivot_depth=3.0)
    got_yaw, got_pitch = relative_angles(traj.w2c)
    assert got_yaw[-1] == yaw  # exactly
    np.testing.assert_allclose(got_pitch, 0.0, atol=1e-12)
    for w2c, K in zip(traj.w2c, traj.K):
        uv, z = project_points(np.array([0.0, 0.0, 3.0]), K, w2c)
        np.testing.assert_allclose(uv, K[:2, 2], atol=1e-9)
        assert z == pytest.approx(3.0)
    assert np.sign(_centres(traj.w2c)[-1, 0]) == np.sign(yaw)  # +yaw moves the camera right


def test_orbit_pitch_and_combined_angles():
    traj = make_trajectory("orbit", 9, K0, W, H, _depth(), yaw=30, pitch=-90, ease="linear", pivot_depth=2.0)
    yaw, pitch = relative_angles(traj.w2c)
    np.testing.assert_allclose(pitch, np.linspace(0, -90, 9), atol=1e-9)
    assert _centres(traj.w2c)[-1, 1] == pytest.approx(2.0)  # pitch −90: camera below the pivot (+y is down)
    traj = make_trajectory("orbit", 9, K0, W, H, _depth(), yaw=-40, pitch=25, ease="linear", pivot_depth=2.0)
    yaw, pitch = relative_angles(traj.w2c)
    np.testing.assert_allclose(yaw, np.linspace(0, -40, 9), atol=1e-9)
    np.testing.assert_allclose(pitch, np.linspace(0, 25, 9), atol=1e-9)
    assert _centres(traj.w2c)[-1, 1] < 0  # +pitch: camera above
    # no roll: the camera x axis stays horizontal (zero world y component)
    np.testing.assert_allclose(traj.w2c[:, 0, 1], 0.0, atol=1e-12)


def test_orbit_w2c_matches_look_at_geometry():
    w2c = orbit_w2c([35.0], [20.0], [0.25], 4.0)[0]
    c = invert_w2c(w2c)[:3, 3]
    assert np.linalg.norm(c - [0, 0, 4.0]) == pytest.approx(3.0)
    np.testing.assert_allclose(w2c[:3, :3] @ w2c[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(w2c[:3, :3]) == pytest.approx(1.0)


def test_dolly_moves_along_the_axis():
    traj = make_trajectory("dolly", 11, K0, W, H, _depth(), dolly=0.4, pivot_depth=5.0, ease="linear")
    c = _centres(traj.w2c)
    np.testing.assert_allclose(c[:, :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(c[:, 2], np.linspace(0, 2.0, 11), atol=1e-12)
    np.testing.assert_allclose(traj.w2c[:, :3, :3], np.broadcast_to(np.eye(3), (11, 3, 3)), atol=1e-12)
    np.testing.assert_array_equal(traj.K, np.broadcast_to(K0, (11, 3, 3)))
    pull = make_trajectory("dolly", 3, K0, W, H, _depth(), dolly=-1.0, pivot_depth=5.0)
    assert _centres(pull.w2c)[-1, 2] == pytest.approx(-5.0)


def test_zoom_scales_focal_only():
    traj = make_trajectory("zoom", 5, K0, W, H, _depth(), zoom=2.0, ease="linear")
    np.testing.assert_allclose(traj.w2c, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12)
    scale = 2.0 ** np.linspace(0, 1, 5)  # geometric: even-looking zoom speed
    np.testing.assert_allclose(traj.K[:, 0, 0], K0[0, 0] * scale)
    np.testing.assert_allclose(traj.K[:, 1, 1], K0[1, 1] * scale)
    np.testing.assert_array_equal(traj.K[:, :2, 2], np.broadcast_to(K0[:2, 2], (5, 2)))


def test_dolly_zoom_keeps_pivot_plane_size():
    traj = make_trajectory("dolly-zoom", 7, K0, W, H, _depth(), pivot_depth=2.0)
    dist = 2.0 - _centres(traj.w2c)[:, 2]
    np.testing.assert_allclose(traj.K[:, 0, 0] / dist, K0[0, 0] / 2.0)
    assert dist[-1] == pytest.approx(3.0)  # default: pull out by half the pivot distance
    with pytest.raises(Ex4dError, match="zoom"):
        make_trajectory("dolly-zoom", 7, K0, W, H, _depth(), zoom=2.0)


def test_swing_goes_plus_minus_and_back():
    traj = make_trajectory("swing", 49, K0, W, H, _depth(), yaw=60, pitch=10)
    yaw, pitch = relative_angles(traj.w2c)
    assert yaw[12] == pytest.approx(60) and yaw[36] == pytest.approx(-60)
    assert yaw.max() == pytest.approx(60) and yaw.min() == pytest.approx(-60)
    assert pitch[12] == pytest.approx(10) and pitch[36] == pytest.approx(-10)
    assert abs(yaw[24]) < 1e-9 and abs(yaw[-1]) < 1e-9
    # smooth: the per-frame velocity never jumps by more than a fraction of its peak (a triangle wave would)
    assert np.abs(np.diff(yaw, 2)).max() < 0.35 * np.abs(np.diff(yaw)).max()
    tri, _ = relative_angles(make_trajectory("swing", 49, K0, W, H, _depth(), yaw=60, ease="linear").w2c)
    assert np.abs(np.diff(tri, 2)).max() > 0.35 * np.abs(np.diff(tri)).max()


def test_ease_smoothstep_starts_at_rest_linear_does_not():
    smooth, _ = relative_angles(make_trajectory("orbit", 49, K0, W, H, _depth(), yaw=48).w2c)
    linear, _ = relative_angles(make_trajectory("orbit", 49, K0, W, H, _depth(), yaw=48, ease="linear").w2c)
    np.testing.assert_allclose(linear, np.arange(49.0), atol=1e-9)
    assert smooth[1] < 0.1 * linear[1] and smooth[-1] == pytest.approx(48)
    assert smooth[-1] - smooth[-2] < 0.1


def test_default_pivot_is_central_median():
    d = _depth(4.0)
    d[H // 3: H - H // 3, W // 3: W - W // 3] = 2.0
    d[H // 2, W // 2] = 1e6  # an outlier does not move the median
    assert pivot_depth_from_depth(d) == 2.0
    traj = make_trajectory("orbit", 5, K0, W, H, d)
    assert traj.params["pivot_depth"] == 2.0


@pytest.mark.parametrize("options, match", [
    ({"yaw": 91}, "yaw"),
    ({"yaw": -90.5}, "yaw"),
    ({"pitch": 120}, "pitch"),
    ({"dolly": 1.0}, "dolly"),
    ({"zoom": 0}, "zoom"),
    ({"yaw": "45"}, "yaw"),
    ({"ease": "bounce"}, "ease"),
    ({"pivot_depth": -1}, "pivot_depth"),
    ({"roll": 3}, "roll"),
])
def test_bad_options_raise(options, match):
    with pytest.raises(Ex4dError, match=match):
        make_trajectory("orbit", 9, K0, W, H, _depth(), **options)


def test_none_options_count_as_not_given():
    a = make_trajectory("orbit", 5, K0, W, H, _depth(), yaw=None, pitch=None, pivot_depth=None)
    b = make_trajectory("orbit", 5, K0, W, H, _depth())
    np.testing.assert_array_equal(a.w2c, b.w2c)


def test_unknown_spec_lists_presets():
    with pytest.raises(Ex4dError, match="orbit") as e:
        make_trajectory("spiral", 9, K0, W, H, _depth())
    assert "ex4d-180" in str(e.value)
    with pytest.raises(Ex4dError, match="not found"):
        make_trajectory("/nonexistent/cams.json", 9, K0, W, H, _depth())
    with pytest.raises(Ex4dError, match="radius"):
        make_trajectory("ex4d-30", 9, K0, W, H, _depth(), yaw=10)
    with pytest.raises(Ex4dError, match="depth0"):
        make_trajectory("orbit", 9, K0, W, H, None)


# ----------------------------------------------------------------------------- keyframes

KEYS = [{"t": 0.0}, {"t": 0.25, "yaw": 40, "zoom": 1.5}, {"t": 0.6, "yaw": -30, "pitch": 15},
        {"frame": 40, "yaw": 0, "pitch": 0, "dolly": 0.2, "zoom": 1.0}]


def test_keyframes_pass_through_and_are_smooth():
    ch = interpolate_keyframes(KEYS, 49)
    assert ch["yaw"][12] == pytest.approx(40) and ch["yaw"][40] == pytest.approx(0)
    assert ch["zoom"][12] == pytest.approx(1.5) and ch["dolly"][40] == pytest.approx(0.2)
    assert ch["pitch"][0] == 15 and ch["pitch"][40] == pytest.approx(0)  # held before its first key
    np.testing.assert_allclose(ch["yaw"][40:], 0.0, atol=1e-12)  # held after its last key
    assert np.all(ch["dolly"] == 0.2)  # a single key: constant
    # monotone cubic: never beyond the keyed values, no jumps, bounded acceleration
    assert ch["yaw"].max() <= 40 + 1e-9 and ch["yaw"].min() >= -30 - 1e-9
    # no jumps: 40° → −30° over 16.8 frames, stopping at both keys, peaks at 1.5 × 70 / 16.8 = 6.25 °/frame
    assert np.abs(np.diff(ch["yaw"])).max() < 1.5 * 70 / 16.8 + 1e-6
    assert np.abs(np.diff(ch["yaw"], 2)).max() < 2.0
    lin = interpolate_keyframes(KEYS, 49, "linear")
    assert lin["yaw"][6] == 40 and lin["yaw"][12] == pytest.approx(40)  # yaw is first keyed at t = 0.25
    np.testing.assert_allclose(np.diff(lin["yaw"][12:29], 2), 0.0, atol=1e-9)  # straight between keys


def test_keyframe_cubic_first_derivative_is_continuous():
    keys = [{"t": 0, "yaw": 0}, {"t": 0.3, "yaw": 20}, {"t": 0.7, "yaw": 80}, {"t": 1, "yaw": 0}]
    # C1: the largest second difference shrinks like h² as frames double (a velocity jump would shrink like h)
    acc = [np.abs(np.diff(interpolate_keyframes(keys, n)["yaw"], 2)).max() for n in (201, 401)]
    assert acc[1] / acc[0] < 0.3
    lin = [np.abs(np.diff(interpolate_keyframes(keys, n, "linear")["yaw"], 2)).max() for n in (201, 401)]
    assert lin[1] / lin[0] > 0.45
    v = np.diff(interpolate_keyframes(keys, 401)["yaw"])
    assert max(abs(v[0]), abs(v[-1])) < 0.03 * np.abs(v).max()  # starts and stops at rest (Δ ≈ y''/2 there)


def test_keyframe_file_trajectory(tmp_path):
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"keyframes": KEYS, "pivot_depth": 2.5, "interpolation": "cubic"}))
    traj = make_trajectory(str(path), 49, K0, W, H, None)
    assert traj.name == "keyframes" and traj.params["pivot_depth"] == 2.5
    yaw, pitch = relative_angles(traj.w2c)
    assert yaw[12] == pytest.approx(40) and traj.K[12, 0, 0] == pytest.approx(1.5 * K0[0, 0])
    uv, _ = project_points(np.array([0.0, 0.0, 2.5]), traj.K[30], traj.w2c[30])
    np.testing.assert_allclose(uv, K0[:2, 2], atol=1e-9)
    again = make_trajectory(**traj.params, num_frames=49, K=K0, width=W, height=H)
    np.testing.assert_array_equal(again.w2c, traj.w2c)
    assert not traj.starts_at_source  # pitch is held at 15 before its first key
    single = make_trajectory("keyframes", 5, K0, W, H, None, keyframes=[{"t": 0.5, "yaw": 10}], pivot_depth=1.0)
    np.testing.assert_allclose(relative_angles(single.w2c)[0], 10.0)  # one keyframe = static camera


@pytest.mark.parametrize("keyframes, match", [
    ([], "non-empty"),
    ([{"t": 0.5}, {"t": 0.2}], "increasing"),
    ([{"t": 0.0}, {"t": 0.0, "yaw": 3}], "increasing"),
    ([{"t": 0.0}, {"t": 1.0, "yaw": 95}], "yaw"),
    ([{"t": 0.0}, {"t": 1.0, "yaw": "left"}], "yaw"),
    ([{"t": 0.0}, {"t": 1.0, "yaw": True}], "yaw"),
    ([{"t": 0.0}, {"t": 1.5}], "t"),
    ([{"t": 0.0}, {"frame": 49}], "frame"),
    ([{"t": 0.0}, {"frame": 2.5}], "frame"),
    ([{"t": 0.0, "frame": 0}], "exactly one"),
    ([{"yaw": 3}], "exactly one"),
    ([{"t": 0.0}, {"t": 1.0, "yw": 3}], "yw"),
    ([{"t": 0.0}, {"t": 1.0, "zoom": -1}], "zoom"),
    (["x"], "object"),
])
def test_bad_keyframes_raise(keyframes, match):
    with pytest.raises(Ex4dError, match=match):
        interpolate_keyframes(keyframes, 49)


def test_bad_keyframe_files_raise(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"keyframes": [ {"t": 0} ')
    with pytest.raises(Ex4dError, match="not valid JSON"):
        make_trajectory(str(bad), 9, K0, W, H, _depth())
    bad.write_text(json.dumps({"keyframes": [{"t": 0}], "interp": "cubic"}))
    with pytest.raises(Ex4dError, match="interp"):
        make_trajectory(str(bad), 9, K0, W, H, _depth())
    bad.write_text(json.dumps({"keyframes": [{"t": 0}], "interpolation": "spline"}))
    with pytest.raises(Ex4dError, match="interpolation"):
        make_trajectory(str(bad), 9, K0, W, H, _depth())
    bad.write_text(json.dumps({"cameras": []}))
    with pytest.raises(Ex4dError, match="keyframe"):
        make_trajectory(str(bad), 9, K0, W, H, _depth())
    bad.write_text(json.dumps({"keyframes": [{"t": 0}]}))
    with pytest.raises(Ex4dError, match="yaw"):
        make_trajectory(str(bad), 9, K0, W, H, _depth(), yaw=3)


# ----------------------------------------------------------------------------- camera files

def test_cameras_json_round_trip_as_trajectory(tmp_path):
    traj = make_trajectory("orbit", 9, K0, W, H, _depth(), yaw=-60, pitch=20, zoom=1.3)
    write_cameras_json(tmp_path / "cameras.json", traj.w2c, traj.K, W, H, 30)
    back = make_trajectory(tmp_path / "cameras.json", 9, K0, W, H, None)
    assert back.name == "file"
    np.testing.assert_array_equal(back.w2c, traj.w2c)
    np.testing.assert_array_equal(back.K, traj.K)
    write_cameras_json(tmp_path / "again.json", back.w2c, back.K, W, H, 30)
    assert (tmp_path / "again.json").read_text() == (tmp_path / "cameras.json").read_text()
    with pytest.raises(Ex4dError, match=r"9 cameras.*num_frames=10"):
        make_trajectory(tmp_path / "cameras.json", 10, K0, W, H, None)


def test_camera_file_intrinsics_rescaled_to_render_size(tmp_path):
    traj = make_trajectory("ex4d-60", 49, K0, W, H, _depth())
    write_cameras_json(tmp_path / "c.json", traj.w2c, K0, W, H, 24)
    big = make_trajectory(tmp_path / "c.json", 49, K0, 2 * W, 2 * H, None)
    assert big.K[0, 0, 0] == pytest.approx(2 * K0[0, 0])
    assert big.K[0, 0, 2] == pytest.approx((K0[0, 2] + 0.5) * 2 - 0.5)
    np.testing.assert_array_equal(big.w2c, traj.w2c)


def test_original_npz_as_trajectory(tmp_path):
    K = intrinsics_from_focal(512, 512, 500.0)
    traj = make_trajectory("ex4d-90", 49, K, 512, 512, np.full((512, 512), 2.0))
    write_ex4d_npz(tmp_path / "camera_90.npz", traj.w2c, K)
    K64 = intrinsics_from_focal(64, 64, 62.5)
    back = make_trajectory(tmp_path / "camera_90.npz", 49, K64, 64, 64, None)  # rendered at 64×64: K scaled
    np.testing.assert_allclose(back.w2c, traj.w2c, atol=1e-6)
    assert back.K[0, 0, 0] == pytest.approx(500.0 * 64 / 512)
    with pytest.raises(Ex4dError, match="49 cameras"):
        make_trajectory(tmp_path / "camera_90.npz", 25, K64, 64, 64, None)
    with pytest.raises(Ex4dError, match=r"512×512 image .* but the frames are 64×48"):  # another aspect ratio
        make_trajectory(tmp_path / "camera_90.npz", 49, K0, W, H, None)


def test_relative_angles_of_pure_rotations():
    yaw, pitch = relative_angles(orbit_w2c([-20.0, 0.0], [0.0, 70.0], [0.0, 0.0], 1.0))
    np.testing.assert_allclose(yaw, [-20.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(pitch, [0.0, 70.0], atol=1e-12)
