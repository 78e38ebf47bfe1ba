"""End to end through the CLI on the small example: recon, run, resume, reproducibility, errors."""

import json

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.io.camera_files import read_cameras_json, read_ex4d_npz
from ex4d.io.video import read_mask_video, read_video

SMALL = ["--num-frames", "9", "--example-size", "96", "-q"]


@pytest.fixture(scope="module")
def example_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("example")
    assert main(["example", "--out", str(d), "--num-frames", "9", "--size", "96"]) == 0
    return d


def test_recon_outputs(example_files, tmp_path):
    out = tmp_path / "out"
    rc = main(["recon", str(example_files / "input.mp4"), "--depth", str(example_files / "depth.npz"),
               "--depth-kind", "depth", "--trajectory", "ex4d-90", "--num-frames", "9", "--png", "--save-mesh",
               "-q", "--out", str(out)])
    assert rc == 0
    color = read_video(out / "color.mp4", num_frames=None).frames
    mask = read_mask_video(out / "mask.mp4")
    assert color.shape == (9, 96, 96, 3) and mask.shape == (9, 96, 96)
    assert mask[0].all(), "frame 0 is the source view: fully known"
    assert 0.05 < mask[1:].mean() < 1.0
    cams = read_cameras_json(out / "cameras.json")
    assert cams.w2c.shape == (9, 4, 4) and (cams.width, cams.height) == (96, 96)
    np.testing.assert_allclose(read_ex4d_npz(out / "cameras_ex4d.npz").w2c, cams.w2c, atol=1e-5)
    assert len(list((out / "color").glob("*.png"))) == 9 and len(list((out / "mask").glob("*.png"))) == 9
    assert len(list((out / "meshes").glob("*.ply"))) == 9
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["trajectory"] == "ex4d-90" and cfg["run"]["recon"]["mesh"]["filter"] == "step"
    assert not (out / "output.mp4").exists()


def test_run_example_resume_and_reproduce(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--example", *SMALL, "--out", str(out)]) == 0
    first = read_video(out / "output.mp4", num_frames=None).frames
    preview = read_video(out / "preview.mp4", num_frames=None, max_res=4096).frames
    assert first.shape == (9, 96, 96, 3) and preview.shape[2] > 3 * 96
    stamp = (out / "output.mp4").stat().st_mtime_ns
    capsys.readouterr()
    # same command again: every stage is reused, nothing rewritten
    assert main(["run", "--example", *SMALL, "--out", str(out)]) == 0
    assert "reused render, fill" in capsys.readouterr().out
    assert (out / "output.mp4").stat().st_mtime_ns == stamp
    # other parameters into the same folder: refused without --overwrite
    assert main(["run", "--example", *SMALL, "--trajectory", "ex4d-30", "--out", str(out)]) == 2
    assert "other parameters" in capsys.readouterr().err
    # reproduce from config.json into a new folder: identical outputs
    out2 = tmp_path / "again"
    assert main(["run", "--config", str(out / "config.json"), "-q", "--out", str(out2)]) == 0
    from ex4d.io.chunks import concat_field
    np.testing.assert_array_equal(concat_field(out / ".ex4d/render", "color"), concat_field(out2 / ".ex4d/render", "color"))
    np.testing.assert_array_equal(read_video(out2 / "output.mp4", num_frames=None).frames, first)


def test_fill_keeps_known_pixels_and_leaves_no_holes(tmp_path):
    from ex4d.example import make_example
    from ex4d.fill import classical_fill
    from ex4d.recon import render_novel_views
    from ex4d.trajectory import make_trajectory

    scene = make_example(9, 96, 96)
    traj = make_trajectory("orbit", 9, scene.K, 96, 96, depth0=scene.depth[0], yaw=40)
    res = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, progress=False)
    assert (~res.mask).sum() > 500
    out = classical_fill(res.color, res.mask, res.depth, scene.frames, scene.depth, scene.K, traj.w2c, traj.K,
                         progress=False)
    np.testing.assert_array_equal(out[res.mask], res.color[res.mask])
    # no holes: every unknown pixel got a colour close to its neighbourhood, none left black or magenta
    assert (out[~res.mask].max(axis=-1) > 0).mean() > 0.99


def test_output_folder_with_foreign_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["recon", "--example", *SMALL, "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["recon", "--out", "X"], "no input"),
    (["recon", "missing.mp4", "--depth", "d.npz", "--out", "X"], "not found|does not exist|no such"),
    (["recon", "--example", "--trajectory", "nope", "--out", "X"], "nope"),
    (["recon", "--example", "--trajectory", "orbit", "--yaw", "120", "--out", "X"], "yaw"),
    (["recon", "--example", "--fov", "50", "--focal", "300", "--out", "X"], "at most one"),
])
def test_bad_input_gives_a_clear_error(tmp_path, capsys, args, message):
    args = [a.replace("X", str(tmp_path / "o")) for a in args]
    assert main(args + ["--num-frames", "5", "--example-size", "64"] * ("--example" in args)) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    import re
    assert re.search(message, err, re.I), err


def test_fill_temporal_smoothing_matches_a_per_pixel_reference():
    """The smoothing of inpainted pixels: forward then backward exponential filter, only where both frames
    are inpainted, exactly as a plain loop over pixels computes it."""
    from ex4d.fill.classical import _smooth

    rng = np.random.default_rng(3)
    out = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    inp = rng.random((6, 5, 4)) < 0.6
    w = np.float32(0.6)
    ref = out.astype(np.float32)
    for order, step in ((range(1, 6), -1), (range(4, -1, -1), 1)):
        for t in order:
            for i in range(5):
                for j in range(4):
                    if inp[t, i, j] and inp[t + step, i, j]:
                        ref[t, i, j] = (1 - w) * ref[t, i, j] + w * ref[t + step, i, j]
    np.testing.assert_array_equal(_smooth(out, inp, 0.6), np.clip(ref + 0.5, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(_smooth(out, inp, 0.0), out)


def test_ex4d_fill_without_weights_is_a_clear_error(tmp_path, capsys):
    rc = main(["run", "--example", *SMALL, "--fill", "ex4d", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--wan" in err or "diffusion" in err
    # a --wan folder that does not exist is refused before any work is done
    rc = main(["run", "--example", *SMALL, "--fill", "ex4d", "--wan", str(tmp_path / "nope"), "--adapter",
               str(tmp_path / "ex4d.ckpt"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_ctrl_c_keeps_finished_stages_and_leaves_no_partial_files(tmp_path, capsys, monkeypatch):
    import ex4d.fill

    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex4d.fill, "reproject_and_inpaint", interrupted)
    assert main(["run", "--example", *SMALL, "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "color.mp4").exists() and not (out / "output.mp4").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "no temporary files left behind"
    monkeypatch.undo()
    assert main(["run", "--example", *SMALL, "--out", str(out)]) == 0
    assert "reused render" in capsys.readouterr().out
    assert (out / "output.mp4").exists()


def test_changed_input_file_is_recomputed(example_files, tmp_path, capsys):
    import shutil

    src = tmp_path / "in"
    shutil.copytree(example_files, src)
    args = ["recon", str(src / "input.mp4"), "--depth", str(src / "depth.npz"), "--depth-kind", "depth",
            "--num-frames", "9", "-q", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "reused depth, render" in capsys.readouterr().out
    d = np.load(src / "depth.npz")["depth"] * 1.5
    from ex4d.io.depth import save_depth_npz
    save_depth_npz(src / "depth.npz", d)
    assert main(args) == 0
    assert "reused" not in capsys.readouterr().out


def test_every_command_has_working_help(capsys):
    from ex4d.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"recon", "run", "example", "generate", "depth"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
        assert "usage:" in capsys.readouterr().out


def test_flower_reference_input_reproduces_the_original_cameras(flower_dir, tmp_path):
    """The original's own example video through `ex4d recon --trajectory ex4d-180`: the cameras it writes
    in the original's format equal the original's camera_180.npz (r = 2.7401, i.e. min depth 2.5901)."""
    depth = np.full((49, 512, 512), 2.5901, dtype=np.float32)
    depth[:, 100:300, 150:350] = 4.0  # some structure; the minimum stays 2.5901
    np.save(tmp_path / "depth.npy", depth)
    out = tmp_path / "out"
    assert main(["recon", str(flower_dir / "input.mp4"), "--depth", str(tmp_path / "depth.npy"), "--trajectory",
                 "ex4d-180", "--max-res", "128", "-q", "--out", str(out)]) == 0
    ours = np.load(out / "cameras_ex4d.npz")
    ref = np.load(flower_dir / "camera_180.npz")
    np.testing.assert_allclose(ours["extrinsics"], ref["extrinsics"], atol=2e-5)
    # processed at 128 px: the original's f = 500 px at 512 px scales with the frame (same field of view)
    np.testing.assert_allclose(ours["intrinsics"][:2], ref["intrinsics"][:2] * 128 / 512)
    mask = read_mask_video(out / "mask.mp4")
    assert mask.shape == (49, 128, 128) and mask[0].all() and 0.3 < mask[1:].mean() < 1.0


def test_run_refuses_bad_generation_settings_before_any_work(tmp_path, capsys):
    wan = tmp_path / "wan"
    wan.mkdir()
    (tmp_path / "a.ckpt").write_bytes(b"")
    out = tmp_path / "o"
    rc = main(["run", "--example", *SMALL, "--fill", "ex4d", "--wan", str(wan), "--adapter", str(tmp_path / "a.ckpt"),
               "--memory", "low", "--compile", "--out", str(out)])
    assert rc == 2 and "--compile" in capsys.readouterr().err
    assert not out.exists()
