"""``ex4d eval`` / ``ex4d benchmark`` refuse unusable outputs, missing weights and unbounded sizes up front."""

from __future__ import annotations

import pytest

from ex4d.cli import main


@pytest.fixture
def video(tmp_path):
    from ex4d.example import make_example
    from ex4d.io.video import write_video

    scene = make_example(3, 32, 32)
    write_video(tmp_path / "v.mp4", scene.frames, 8.0)
    return tmp_path / "v.mp4"


def refused(capsys, argv, *words):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def test_eval_checks_outputs_and_weights_first(tmp_path, video, capsys):
    (tmp_path / "file").write_text("x")
    base = ["eval", "--pred", str(video)]
    refused(capsys, [*base, "--out", str(tmp_path / "file" / "r.json")], "not a folder")
    refused(capsys, [*base, "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "file" / "p.png")], "--plot")
    refused(capsys, [*base, "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.txt")], ".png")
    for flag in ("--lpips-weights", "--lpips-backbone", "--inception-weights", "--i3d-weights"):
        refused(capsys, [*base, "--out", str(tmp_path / "r.json"), flag, str(tmp_path / "none")], flag, "does not exist")
    assert not (tmp_path / "r.json").exists()


def test_benchmark_checks_its_folder_and_sizes(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    base = ["benchmark", "novel-view"]
    refused(capsys, [*base, "--out", str(tmp_path / "file")], "not a folder")
    refused(capsys, [*base, "--out", str(tmp_path / "file" / "b")], "not a folder")
    refused(capsys, [*base, "--out", str(tmp_path / "b"), "--size", "100000"], "size")
    refused(capsys, [*base, "--out", str(tmp_path / "b"), "--frames", "100000"], "frames")
