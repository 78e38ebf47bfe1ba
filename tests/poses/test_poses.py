"""Source camera poses on synthetic scenes filmed by a known moving camera (exact depth, moving objects)."""

import json

import numpy as np
import pytest

from ex4d.cameras import (default_intrinsics, intrinsics_from_fov, invert_w2c, novel_w2c_world, project_points,
                          relative_to_source, source_view_w2c)
from ex4d.errors import Ex4dError
from ex4d.eval.scenes import get_scene, render_source, source_motion
from ex4d.poses import PosesConfig, estimate_source_poses, image_motion_px, track_points
from ex4d.poses.solver import interpolate_poses, rotation_angle_deg

S, T = 160, 25
K_TRUE = intrinsics_from_fov(S, S, 60.0)   # not the default 54°: the focal must be measured


def _scene(kind: str, T_: int = T):
    w2c = source_motion(kind, T_)
    frames, depth = render_source(get_scene("layout"), T_, K_TRUE, S, S, w2c, supersample=2)
    return frames, depth, w2c


@pytest.fixture(scope="module")
def handheld():
    return _scene("handheld")


def _errors(w2c_est, w2c_true):
    rot = rotation_angle_deg((w2c_est @ invert_w2c(w2c_true))[:, :3, :3]).max()
    pos = np.abs(invert_w2c(w2c_est)[:, :3, 3] - invert_w2c(w2c_true)[:, :3, 3]).max()
    return rot, pos


def test_handheld_poses_within_half_a_degree_and_one_percent(handheld):
    frames, depth, w2c = handheld
    poses = estimate_source_poses(frames, depth, K_TRUE)
    rot, pos = _errors(poses.w2c, w2c)
    scene_depth = float(np.median(depth))
    assert not poses.static and poses.method == "estimate"
    assert np.allclose(poses.w2c[0], np.eye(4))
    assert rot < 0.5, f"rotation error {rot:.3f}°"
    assert pos < 0.01 * scene_depth, f"position error {pos:.4f} vs 1% of {scene_depth:.2f}"
    # the spinning box and the approaching ball are outliers, not part of the fit
    assert np.nanmedian(poses.quality["reproj_px"]) < 0.5
    assert np.all(poses.quality["ba_inliers"][1:] < poses.quality["tracks"][1:])


def test_focal_is_measured_where_there_is_parallax(handheld):
    frames, depth, w2c = handheld
    poses = estimate_source_poses(frames, depth, default_intrinsics(S, S), estimate_focal=True)
    assert poses.focal_source == "estimated"
    assert abs(poses.K[0, 0] / K_TRUE[0, 0] - 1) < 0.03, (poses.K[0, 0], K_TRUE[0, 0])
    assert 0 < poses.focal_std < 0.05 * poses.K[0, 0]
    assert tuple(poses.K[:2, 2]) == (S / 2, S / 2)


def test_pure_rotation():
    frames, depth, w2c = _scene("pan", 9)
    poses = estimate_source_poses(frames, depth, K_TRUE)
    rot, pos = _errors(poses.w2c, w2c)
    assert rot < 0.5 and pos < 0.01 * float(np.median(depth))
    assert rotation_angle_deg(poses.w2c[-1, :3, :3]) > 5  # it did turn


def test_tripod_is_exactly_the_identity_and_keeps_the_default_focal():
    frames, depth, _ = _scene("static", 5)
    K0 = default_intrinsics(S, S)
    poses = estimate_source_poses(frames, depth, K0, estimate_focal=True)
    assert poses.static and np.array_equal(poses.w2c, np.tile(np.eye(4), (5, 1, 1)))
    assert np.array_equal(poses.K, K0) and poses.focal_source.startswith("default")
    assert np.array_equal(poses.depth_scale, np.ones(5))


def test_textureless_stretch_is_interpolated(handheld):
    frames, depth, w2c = handheld
    frames = frames.copy()
    frames[10:13] = 128  # three blank frames: nothing to track
    poses = estimate_source_poses(frames, depth, K_TRUE)
    st = poses.quality["status"]
    assert all(st[t] == "interpolated" for t in (10, 11, 12)) and st[9] == "ok" and st[14] == "ok"
    good = [t for t in range(T) if st[t] != "interpolated"]
    rot, pos = _errors(poses.w2c[good], w2c[good])
    assert rot < 0.5, f"the poses after the gap stay right ({rot:.3f}°)"
    # interpolated frames lie between their neighbours
    C = invert_w2c(poses.w2c)[:, :3, 3]
    assert np.linalg.norm(C[11] - (C[9] + C[14]) / 2) < np.linalg.norm(C[14] - C[9])


def test_tracks_read_frames_one_at_a_time(handheld):
    frames, depth, _ = handheld

    class Lazy:  # a sequence that refuses to be turned into one big array
        def __init__(self, a):
            self.a = a

        def __len__(self):
            return len(self.a)

        def __getitem__(self, i):
            if not isinstance(i, (int, np.integer)):
                raise TypeError("per-frame access only")
            return self.a[i]

    tr = track_points(Lazy(frames[:5]), Lazy(depth[:5]))
    assert tr.num_frames == 5 and tr.per_frame_count().min() > 50
    assert image_motion_px(tr) > 0.3


def test_interpolate_poses_holds_ends_and_slerps():
    w2c = np.tile(np.eye(4), (5, 1, 1))
    w2c[4, :3, 3] = [1.0, 0, 0]
    known = np.array([True, False, False, False, True])
    out = interpolate_poses(w2c, known)
    np.testing.assert_allclose(invert_w2c(out)[2, :3, 3], [-0.5, 0, 0], atol=1e-12)


# ---------------------------------------------------------------------------------------------- conventions

def test_world_and_source_conversions_round_trip():
    rng = np.random.default_rng(0)
    src = source_motion("handheld", 6, seed=3)
    rel = source_motion("travel", 6)[::-1].copy()
    world = novel_w2c_world(rel, src, "source")
    np.testing.assert_allclose(relative_to_source(world, src, "world"), rel, atol=1e-12)
    np.testing.assert_allclose(novel_w2c_world(world, src, "world"), world)
    np.testing.assert_allclose(relative_to_source(rel, None, "world"), rel)  # a tripod: nothing changes
    X = rng.normal(size=(10, 3)) + [0, 0, 4]   # world points
    # frame s's mesh (source camera s coordinates) seen from world camera t == the world points seen from t
    Xs = X @ src[2, :3, :3].T + src[2, :3, 3]
    uv1, _ = project_points(Xs, K_TRUE, source_view_w2c(world[4], src[2]))
    uv2, _ = project_points(X, K_TRUE, world[4])
    np.testing.assert_allclose(uv1, uv2, atol=1e-9)
    with pytest.raises(Ex4dError, match="path frame"):
        novel_w2c_world(rel, src, "camera")


def test_world_locked_orbit_keeps_its_pivot_fixed():
    from ex4d.trajectory import make_trajectory

    src = source_motion("handheld", 13)
    traj = make_trajectory("orbit", 13, K_TRUE, S, S, yaw=40, pivot_depth=4.0)
    pivot = np.array([0.0, 0.0, 4.0])   # world = source frame 0
    for frame, still in (("world", True), ("source", False)):
        rel = relative_to_source(traj.w2c, src, frame)
        # what the recon does: frame t's geometry is in source camera t's coordinates, seen by rel[t]
        p_src = np.einsum("tij,j->ti", src[:, :3, :3], pivot) + src[:, :3, 3]
        uv = np.stack([project_points(p_src[t], K_TRUE, rel[t])[0] for t in range(13)])
        drift = np.abs(uv - K_TRUE[:2, 2]).max()
        assert (drift < 1e-6) if still else (drift > 2.0), (frame, drift)


# ---------------------------------------------------------------------------------------------- files

def test_source_cameras_json_and_colmap_model_round_trip(handheld, tmp_path):
    from ex4d.poses import resolve_source_poses, write_poses_outputs

    frames, depth, w2c = handheld
    poses = estimate_source_poses(frames[:9], depth[:9], K_TRUE)
    files = write_poses_outputs(tmp_path, poses, S, S, 24.0)
    cams = json.loads((tmp_path / "source_cameras.json").read_text())
    assert cams["frame"] == "world" and cams["static"] is False
    report = json.loads((tmp_path / "poses_report.json").read_text())
    assert len(report["frames"]) == 9 and report["frames"][3]["ba_inliers"] > 20
    assert {"reproj_px", "pnp_inliers", "status"} <= set(report["frames"][3])
    back = resolve_source_poses(str(tmp_path / "source_cameras.json"), frames[:9], depth[:9], K_TRUE)
    np.testing.assert_allclose(back.w2c, poses.w2c, atol=1e-12)
    assert back.method == "file"
    if pytest.importorskip("matplotlib"):
        assert (tmp_path / "poses.png") in files

    # a COLMAP text model of the true cameras, at another scale and with another first camera
    pycolmap = pytest.importorskip("pycolmap")
    model = tmp_path / "colmap"
    model.mkdir()
    scale, base = 3.7, source_motion("travel", 9)[5]
    w_col = w2c[:9] @ invert_w2c(base)            # world' = another frame
    w_col[:, :3, 3] *= scale
    rng = np.random.default_rng(0)
    X0 = np.c_[rng.uniform(-1, 1, (60, 2)), rng.uniform(3, 5, 60)]   # points in source frame 0, in front
    Xw = (invert_w2c(w_col[0]) @ np.c_[X0 * scale, np.ones(60)].T).T[:, :3]
    f = K_TRUE[0, 0]
    (model / "cameras.txt").write_text(f"1 PINHOLE {S} {S} {f} {f} {S / 2 + 0.5} {S / 2 + 0.5}\n")
    img_lines = []
    from scipy.spatial.transform import Rotation

    d_true = np.ones((9, S, S), np.float32)
    for t in range(9):
        qx, qy, qz, qw = Rotation.from_matrix(w_col[t, :3, :3]).as_quat()
        tx, ty, tz = w_col[t, :3, 3]
        uv, z = project_points(Xw, K_TRUE, w_col[t])
        img_lines.append(f"{t + 1} {qw} {qx} {qy} {qz} {tx} {ty} {tz} 1 frame_{t:03d}.png")
        img_lines.append(" ".join(f"{u + 0.5} {v + 0.5} {i + 1}" for i, (u, v) in enumerate(uv)))
        ui, vi = np.clip(np.round(uv).astype(int), 0, S - 1).T
        d_true[t, vi, ui] = z / scale
    (model / "images.txt").write_text("\n".join(img_lines) + "\n")
    (model / "points3D.txt").write_text("".join(
        f"{i + 1} {x} {y} {z} 128 128 128 0.1 " + " ".join(f"{t + 1} {i}" for t in range(9)) + "\n"
        for i, (x, y, z) in enumerate(Xw)))
    del pycolmap
    col = resolve_source_poses(str(model), frames[:9], d_true, K_TRUE, estimate_focal=True)
    np.testing.assert_allclose(col.w2c, w2c[:9], atol=1e-3)
    np.testing.assert_allclose(col.K, K_TRUE, atol=1e-6)


def test_a_source_frame_file_is_refused(tmp_path):
    from ex4d.io.camera_files import write_cameras_json
    from ex4d.poses import resolve_source_poses

    write_cameras_json(tmp_path / "c.json", np.tile(np.eye(4), (3, 1, 1)), K_TRUE, S, S, 24.0)
    with pytest.raises(Ex4dError, match="frame.*world"):
        resolve_source_poses(str(tmp_path / "c.json"), [0] * 3, np.ones((3, S, S)), K_TRUE)


def test_config_round_trip():
    c = PosesConfig(align_depth="none")
    assert PosesConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(Ex4dError):
        PosesConfig(align_depth="affine-ish")


# ---------------------------------------------------------------------------------------------- fill, pipeline

def test_classical_fill_places_other_frames_by_the_true_poses(handheld):
    from ex4d.eval.scenes import render_truth
    from ex4d.fill import classical_fill
    from ex4d.recon import render_novel_views
    from ex4d.trajectory import make_trajectory

    from ex4d.fill import ClassicalFillConfig

    n = 7
    frames, depth, w2c = (a[:n] for a in handheld)
    cfg = ClassicalFillConfig(window=2, keyframes=2)
    rel = make_trajectory("orbit", n, K_TRUE, S, S, yaw=25, pivot_depth=4.0, ease="linear").w2c
    res = render_novel_views(frames, depth, K_TRUE, rel, None, progress=False)
    truth = np.stack([render_truth(get_scene("layout"), t / (T - 1), K_TRUE, novel_w2c_world(rel[t], w2c[t]), S, S).rgb
                      for t in range(n)])

    def psnr(a, m):
        return 10 * np.log10(255.0**2 / np.mean((a[m].astype(float) - truth[m].astype(float)) ** 2))

    Ks = np.broadcast_to(K_TRUE, (n, 3, 3))
    out, rep = classical_fill(res.color, res.mask, res.depth, frames, depth, K_TRUE, rel, Ks, config=cfg,
                              progress=False, w2c_src=w2c, return_reprojected=True)
    assert np.array_equal(out[res.mask], res.color[res.mask])
    old, rep_old = classical_fill(res.color, res.mask, res.depth, frames, depth, K_TRUE, rel, Ks, config=cfg,
                                  progress=False, return_reprojected=True)   # as if the source had not moved
    beyond = rep & ~np.isfinite(res.depth)   # static surfaces frame t's source never saw, other frames did
    known, placed, pasted = psnr(res.color, res.mask), psnr(out, beyond), psnr(old, rep_old)
    assert beyond.sum() > 0.02 * beyond.size
    assert placed > known - 5.0, (placed, known)        # about as good as the render of what t saw itself
    assert psnr(out, rep) > pasted + 3.0, (psnr(out, rep), pasted)


def test_fill_sources_are_bounded_and_unchanged_for_a_tripod():
    from ex4d.fill.sources import MeshCache, frame_offsets, select_sources

    rel = np.eye(4)
    rel[0, 3] = 0.3
    tripod = select_sources(10, 2000, 4, rel, np.tile(np.eye(4), (2000, 1, 1)), 4.0, max_keyframes=4)
    assert [s for s, _, _ in tripod] == [10 + o for o in frame_offsets(4)]
    assert all(np.array_equal(w, rel) and not kf for _, w, kf in tripod)
    moving = source_motion("handheld", 2000)
    sel = select_sources(10, 2000, 4, rel, moving, 4.0, max_keyframes=4)
    assert len(sel) == len(tripod) + 4 and sum(kf for *_, kf in sel) == 4
    built = []
    cache = MeshCache(lambda s: built.append(s) or s, capacity=3)
    for s in (1, 2, 3, 1, 4, 2):
        cache(s)
    assert len(cache) == 3 and built == [1, 2, 3, 4, 2]


@pytest.fixture(scope="module")
def handheld_files(handheld, tmp_path_factory):
    from ex4d.io.depth import save_depth_npz
    from ex4d.io.video import write_video

    frames, depth, w2c = handheld
    d = tmp_path_factory.mktemp("handheld")
    write_video(d / "input.mp4", frames[:9], 24.0, crf=10)
    save_depth_npz(d / "depth.npz", depth[:9])
    return d


def test_poses_command_and_world_path_run(handheld, handheld_files, tmp_path, capsys):
    from ex4d.cli import main
    from ex4d.io.camera_files import read_cameras_json

    d = handheld_files
    assert main(["poses", str(d / "input.mp4"), "--depth", str(d / "depth.npz"), "--depth-kind", "depth",
                 "--fov", "60", "--num-frames", "9", "-q", "--out", str(tmp_path / "p")]) == 0
    assert "moving camera" in capsys.readouterr().out
    src = read_cameras_json(tmp_path / "p" / "source_cameras.json")
    rot, pos = _errors(src.w2c, handheld[2][:9])
    assert src.frame == "world" and rot < 0.5 and pos < 0.05
    run = ["recon", str(d / "input.mp4"), "--depth", str(d / "depth.npz"), "--depth-kind", "depth", "--fov", "60",
           "--num-frames", "9", "--trajectory", "orbit", "--yaw", "20", "-q"]
    assert main([*run, "--path-frame", "world", "--source-poses", str(tmp_path / "p" / "source_cameras.json"),
                 "--out", str(tmp_path / "w")]) == 0
    cams = read_cameras_json(tmp_path / "w" / "cameras.json")
    assert cams.frame == "world" and (tmp_path / "w" / "poses_report.json").exists()
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert cfg["trajectory"]["frame"] == "world" and cfg["source_poses"]["method"] == "file"
    # the world path given back as a camera file reproduces the same render
    assert main([*run[:-5], "--trajectory", str(tmp_path / "w" / "cameras.json"), "-q",
                 "--source-poses", str(tmp_path / "p" / "source_cameras.json"), "--out", str(tmp_path / "w2")]) == 0
    from ex4d.io.chunks import concat_field

    a = concat_field(tmp_path / "w" / ".ex4d" / "render", "mask")
    b = concat_field(tmp_path / "w2" / ".ex4d" / "render", "mask")
    assert np.array_equal(a, b)
    assert main([*run, "--source-poses", "nowhere.json", "--out", str(tmp_path / "x")]) == 2
    assert "--source-poses" in capsys.readouterr().err
    # relative depth: the per-frame alignment is chosen on the command line, recorded and reported
    rel = ["recon", str(d / "input.mp4"), "--depth", str(d / "depth.npz"), "--depth-kind", "disparity", "--fov",
           "60", "--num-frames", "9", "--trajectory", "orbit", "--yaw", "20", "-q"]
    assert main([*rel, "--align-depth", "scale", "--out", str(tmp_path / "s")]) == 0
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["run"]["poses"]["align_depth"] == "scale"
    report = json.loads((tmp_path / "s" / "poses_report.json").read_text())
    assert all(f["depth_shift"] == 0 for f in report["frames"])
    assert main(["poses", str(d / "input.mp4"), "--depth", str(d / "depth.npz"), "--depth-kind", "disparity",
                 "--fov", "60", "--num-frames", "9", "-q", "--out", str(tmp_path / "pa")]) == 0
    frames = json.loads((tmp_path / "pa" / "poses_report.json").read_text())["frames"]
    assert frames[0]["depth_shift"] == 0 and any(f["depth_shift"] != 0 for f in frames[1:])


def test_tripod_video_outputs_unchanged_by_pose_estimation(tmp_path):
    from ex4d.cli import main

    ex = tmp_path / "ex"
    assert main(["example", "--out", str(ex), "--num-frames", "9", "--size", "96"]) == 0
    base = ["run", str(ex / "input.mp4"), "--depth", str(ex / "depth.npz"), "--depth-kind", "depth",
            "--num-frames", "9", "--trajectory", "orbit", "--yaw", "30", "--fill-window", "1", "-q"]
    assert main([*base, "--out", str(tmp_path / "est")]) == 0
    assert main([*base, "--source-poses", "static", "--out", str(tmp_path / "static")]) == 0
    from ex4d.io.chunks import concat_field

    for field in ("color", "mask", "depth"):  # the render cache (chunked)
        assert np.array_equal(concat_field(tmp_path / "est" / ".ex4d" / "render", field),
                              concat_field(tmp_path / "static" / ".ex4d" / "render", field))
    assert (tmp_path / "est" / "output.mp4").read_bytes() == (tmp_path / "static" / "output.mp4").read_bytes()
    rep = json.loads((tmp_path / "est" / "poses_report.json").read_text())
    assert rep["static"] and rep["focal_source"].startswith("default")


def _aligned_errors(poses, rel, depth):
    """(worst frame's median, 99th percentile over the clip) of |aligned depth / true depth − 1|."""
    from ex4d.poses import align_depth_frame

    aligned = np.stack([align_depth_frame(rel[t], poses.depth_scale[t], poses.depth_shift[t]) for t in range(len(rel))])
    err = np.abs(aligned / depth - 1.0)
    return float(np.max(np.median(err, axis=(1, 2)))), float(np.percentile(err, 99))


def test_relative_depth_is_aligned_to_the_poses(handheld):
    frames, depth, w2c = handheld
    drift = 1.0 + 0.08 * np.sin(np.linspace(0, 3, T))   # a relative depth model's per-frame scale
    drift /= drift[0]
    rel = depth * drift[:, None, None].astype(np.float32)
    scale = estimate_source_poses(frames, rel, K_TRUE, relative_depth=True, config=PosesConfig(align_depth="scale"))
    np.testing.assert_allclose(scale.depth_scale * drift, 1.0, atol=0.01)   # static points stay put
    assert not scale.depth_shift.any()
    affine = estimate_source_poses(frames, rel, K_TRUE, relative_depth=True)  # auto: scale and shift
    assert _aligned_errors(affine, rel, depth)[0] < 0.01
    for poses in (scale, affine):
        rot, pos = _errors(poses.w2c, w2c)
        assert rot < 0.5 and pos < 0.01 * float(np.median(depth))
    exact = estimate_source_poses(frames[:9], depth[:9], K_TRUE, relative_depth=False)
    assert np.array_equal(exact.depth_scale, np.ones(9)) and not exact.depth_shift.any()  # metric depth: left alone


def test_relative_depth_drifting_in_scale_and_shift_is_aligned(handheld):
    """Affine-invariant disparity drifts per frame in scale and shift: the bundle adjustment undoes both."""
    from ex4d.poses import align_depth_frame

    frames, depth, w2c = handheld
    disp = 1.0 / depth.astype(np.float64)
    phase = np.linspace(0, 3, T)
    a = 1.0 + 0.05 * np.sin(phase)                          # disparity = a·disp_true + b; frame 0 exact
    b = 0.25 * float(np.median(disp)) * np.sin(1.7 * phase)
    rel = (1.0 / (a[:, None, None] * disp + b[:, None, None])).astype(np.float32)
    affine = estimate_source_poses(frames, rel, K_TRUE, relative_depth=True)   # auto = affine for relative depth
    assert affine.depth_shift[0] == 0 and affine.depth_scale[0] == 1 and np.any(affine.depth_shift != 0)
    median, p99 = _aligned_errors(affine, rel, depth)
    assert median < 0.01 and p99 < 0.05, (median, p99)
    scale_only = estimate_source_poses(frames, rel, K_TRUE, relative_depth=True,
                                       config=PosesConfig(align_depth="scale"))
    assert _aligned_errors(scale_only, rel, depth)[1] > 2 * p99   # a scale alone cannot undo a shift
    rot, pos = _errors(affine.w2c, w2c)
    assert rot < 0.5 and pos < 0.01 * float(np.median(depth))
    # the floor keeps every aligned depth finite and positive, whatever the shift
    far = align_depth_frame(np.full((2, 2), 1e6, np.float32), 1.0, -1.0)
    assert np.all(np.isfinite(far)) and np.all(far > 0)


def test_viewer_export_carries_a_moving_source_path(handheld):
    from ex4d.app.export import decode_scene, encode_scene

    frames, depth, w2c = (a[:3] for a in handheld)
    moving = decode_scene(encode_scene(frames, depth, K_TRUE, 24.0, max_size=64, w2c_src=w2c)).header
    np.testing.assert_allclose(moving["w2c_src"], w2c)
    tripod = decode_scene(encode_scene(frames, depth, K_TRUE, 24.0, max_size=64, w2c_src=np.tile(np.eye(4), (3, 1, 1))))
    assert "w2c_src" not in tripod.header


def test_prepare_masks_keep_a_fixed_camera_fixed_in_the_world(handheld):
    from ex4d.train.masks import MaskConfig, simulate_masks

    frames, depth, w2c = (a[:5] for a in handheld)
    cfg = MaskConfig(tracking="flow", tries=1)
    tripod = simulate_masks(frames, depth, K_TRUE, cfg, seed=1)
    moving = simulate_masks(frames, depth, K_TRUE, cfg, seed=1, w2c_src=w2c)
    assert np.allclose(tripod.w2c, tripod.w2c[0])                        # fixed relative to the source
    world = novel_w2c_world(moving.w2c, w2c, "source")
    np.testing.assert_allclose(world, np.broadcast_to(world[0], world.shape), atol=1e-9)  # fixed in the world
    assert moving.mask.shape == tripod.mask.shape and 0 < moving.mask[1:].mean() < 1


def test_lifted_scene_of_a_moving_source_is_world_consistent(handheld, handheld_files, tmp_path):
    """Stereo and export lift each output frame with world-frame cameras, so frames line up when the source moves."""
    from ex4d.cli import main
    from ex4d.io.camera_files import write_cameras_json
    from ex4d.lift import render_lifted
    from ex4d.run_scene import lift_run, read_run

    frames, depth, w2c_true = handheld
    d = handheld_files
    H, W = frames.shape[1:3]
    write_cameras_json(tmp_path / "src.json", w2c_true[:9], K_TRUE, W, H, 24.0, frame="world")
    out = tmp_path / "run"
    assert main(["run", str(d / "input.mp4"), "--depth", str(d / "depth.npz"), "--depth-kind", "depth",
                 "--fov", "60", "--num-frames", "9", "--trajectory", "orbit", "--yaw", "15", "--fill-window", "1",
                 "--source-poses", str(tmp_path / "src.json"), "-q", "--out", str(out)]) == 0
    views = read_run(out)
    lifted = lift_run(views, progress=False)
    # frame 8's lifted scene seen from frame 0's novel camera: where both know a surface, it is the same one
    r = render_lifted([lifted[8]], views.K[0], views.w2c[0], H, W, views.lift_config)
    both = r.mask & views.mask[0] & np.isfinite(views.depth[0])
    assert both.mean() > 0.3
    rel = np.abs(r.depth[both] - views.depth[0][both]) / views.depth[0][both]
    assert np.median(rel) < 0.01, f"median depth disagreement {np.median(rel):.3%}"
