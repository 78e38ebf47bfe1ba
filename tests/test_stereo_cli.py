"""`ex4d run --stereo`, `ex4d stereo RUN` and `ex4d export RUN` end to end on the tiny example, and their bad inputs."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from ex4d.cli import main
from ex4d.io.stereo_video import read_st3d
from ex4d.io.video import read_video

T, SIZE = 5, 64


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def stereo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stereo") / "out"
    code = run("run", "--example", "--example-size", SIZE, "--num-frames", T, "--trajectory", "orbit", "--yaw", 20,
               "--stereo", "sbs", "-q", "--out", out)
    assert code == 0
    return out


def test_run_writes_a_tagged_side_by_side_file_whose_left_eye_is_the_output(stereo_run, capsys):
    out = stereo_run
    assert read_st3d(out / "stereo.mp4") == 2
    pair = read_video(out / "stereo.mp4", num_frames=None, max_res=4096, multiple=1).frames
    left = read_video(out / "output.mp4", num_frames=None).frames
    assert pair.shape == (T, SIZE, 2 * SIZE, 3)
    # the left half is the output: two H.264 encodes of the same frames (4:2:0 chroma costs a few levels at 64 px),
    # closer to each other than the right eye is (it sees the scene from ipd to the right)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(pair[:, :, :SIZE], left) < 4.0
    assert diff(pair[:, :, :SIZE], left) < 0.5 * diff(pair[:, :, SIZE:], left)
    rec = json.loads((out / "stereo.json").read_text())
    assert rec["layout"] == "sbs" and rec["st3d_mode"] == 2 and rec["ipd_default"] and rec["convergence_default"]
    assert rec["ipd"] == pytest.approx(rec["near"] / 30)
    assert rec["right_known_fraction"] > 0.85  # the right eye is mostly what the left eye saw
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["stereo"] == "sbs"
    assert "stereo_s" in cfg["timings"]
    # re-running the same command reuses every stage, the stereo one included
    capsys.readouterr()
    before = (out / "stereo.mp4").stat().st_mtime_ns
    assert run("run", "--example", "--example-size", SIZE, "--num-frames", T, "--trajectory", "orbit", "--yaw", 20,
               "--stereo", "sbs", "-q", "--out", out) == 0
    line = capsys.readouterr().out
    assert "reused" in line and "stereo" in line.split("reused", 1)[1], line
    assert (out / "stereo.mp4").stat().st_mtime_ns == before


def test_stereo_command_makes_other_layouts_from_the_finished_run(stereo_run, tmp_path, capsys):
    out = stereo_run
    right_before = (out / ".ex4d" / "right.npz").stat().st_mtime_ns
    assert run("stereo", out, "--layout", "ou", "--out", tmp_path / "pair_TB.mp4", "-q") == 0
    assert read_st3d(tmp_path / "pair_TB.mp4") == 1
    assert (out / ".ex4d" / "right.npz").stat().st_mtime_ns == right_before  # same eyes: only re-encoded
    ou = read_video(tmp_path / "pair_TB.mp4", num_frames=None, max_res=4096, multiple=1).frames
    sbs = read_video(out / "stereo.mp4", num_frames=None, max_res=4096, multiple=1).frames
    assert ou.shape == (T, 2 * SIZE, SIZE, 3)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(ou[:, SIZE:], sbs[:, :, SIZE:]) < 0.5 * diff(ou[:, SIZE:], sbs[:, :, :SIZE])  # the same right eye
    assert run("stereo", out, "--layout", "anaglyph", "--ipd", "0.2", "--convergence", "inf",
               "--out", tmp_path / "ana.mp4", "-q") == 0
    assert read_st3d(tmp_path / "ana.mp4") is None
    rec = json.loads((tmp_path / "ana.json").read_text())
    assert rec["ipd"] == 0.2 and rec["convergence"] is None and not rec["ipd_default"]
    # a wider baseline opens more of the right eye
    assert rec["right_known_fraction"] < json.loads((out / "stereo.json").read_text())["right_known_fraction"]
    assert run("stereo", out, "--layout", "sbs", "--half", "--out", tmp_path / "half_HSBS.mp4", "-q") == 0
    half = read_video(tmp_path / "half_HSBS.mp4", num_frames=None, max_res=4096, multiple=1).frames
    assert half.shape == (T, SIZE, SIZE, 3)
    exe = shutil.which("ffprobe")
    if exe:  # a real parser reads the stereo mode (setup_app.sh installs Debian's ffmpeg)
        probe = json.loads(subprocess.run([exe, "-v", "error", "-show_streams", "-of", "json", str(tmp_path / "pair_TB.mp4")],
                                          capture_output=True, text=True, check=True).stdout)
        assert probe["streams"][0]["side_data_list"][0]["type"] == "top and bottom"


def test_export_command_writes_glb_and_ply(stereo_run, tmp_path):
    import trimesh

    out = stereo_run
    assert run("export", out, "--out", tmp_path / "scene.glb", "--max-size", 32, "-q") == 0
    scene = trimesh.load(tmp_path / "scene.glb")
    assert len(scene.geometry) == T
    assert all(len(g.vertices) > 0.8 * 32 * 32 for g in scene.geometry.values())
    assert run("export", out, "--format", "ply", "--out", tmp_path / "ply", "--max-size", 32, "-q") == 0
    assert len(list((tmp_path / "ply").glob("*.ply"))) == T and (tmp_path / "ply" / "cameras.json").is_file()


def test_bad_inputs_are_one_line_errors(stereo_run, tmp_path, capsys):
    out = stereo_run
    for args, msg in [((out, "--ipd", "0", "--out", tmp_path / "a.mp4"), "--ipd must be a positive"),
                      ((out, "--ipd", "-0.1"), "--ipd must be a positive"),
                      ((out, "--convergence", "0"), "--convergence must be a positive"),
                      ((out, "--out", tmp_path / "a.mkv"), ".mp4"),
                      ((out, "--layout", "anaglyph", "--half"), "--half applies"),
                      ((tmp_path / "nothing",), "is not a folder"),
                      # the weights are checked before any lifting: a missing folder fails at once
                      ((out, "--fill", "ex4d", "--wan", tmp_path / "no-weights", "--out", tmp_path / "b.mp4"),
                       "no-weights")]:
        assert run("stereo", *args) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:  # argparse: unknown layout
        run("stereo", out, "--layout", "checkerboard")
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    # a run folder without an output: recon only
    recon = tmp_path / "recon"
    assert run("recon", "--example", "--example-size", SIZE, "--num-frames", 3, "-q", "--out", recon) == 0
    for cmd in (("stereo", recon), ("export", recon, "--out", tmp_path / "s.glb")):
        assert run(*cmd) == 2
        assert "no finished output (output.mp4)" in capsys.readouterr().err
    assert run("export", out, "--format", "ply", "--out", tmp_path / "x.glb") == 2
    assert "writes a folder" in capsys.readouterr().err
    # ex4d run refuses --stereo without a fill before doing any work
    assert run("run", "--example", "--stereo", "sbs", "--fill", "none", "--out", tmp_path / "r") == 2
    assert "--stereo needs a fill" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert run("run", "--example", "--stereo", "sbs", "--ipd", "0", "--out", tmp_path / "r") == 2
    assert "--ipd" in capsys.readouterr().err


def test_stereo_and_export_refuse_a_run_folder_being_written(stereo_run, tmp_path, capsys):
    """A run folder being written (its lock held, as by `ex4d run`) is refused at once by stereo and export."""
    from ex4d.io.outdir import run_folder_lock

    out = stereo_run
    before = (out / "stereo.mp4").stat().st_mtime_ns
    with run_folder_lock(out, "--out"):  # another command writes into the run
        capsys.readouterr()
        assert run("stereo", out, "--layout", "ou", "-q", "--out", tmp_path / "ou.mp4") == 2
        err = capsys.readouterr().err
        assert "folder busy" in err and "Traceback" not in err, err
        assert run("export", out, "--out", tmp_path / "a.glb", "-q") == 2
        assert "folder busy" in capsys.readouterr().err
    assert not (tmp_path / "ou.mp4").exists() and not (tmp_path / "a.glb").exists()
    assert (out / "stereo.mp4").stat().st_mtime_ns == before
    with run_folder_lock(out, shared=True):  # another export reads it: reading together is fine
        assert run("export", out, "--out", tmp_path / "a.glb", "-q") == 0
    assert (tmp_path / "a.glb").is_file()
