"""``ex4d generate`` and ``ex4d convert-adapter`` through the main CLI, on tiny models and tiny videos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ex4d.diffusion.checkpoint import export_original_ckpt, load_adapter

cli = pytest.importorskip("ex4d.cli")
video_io = pytest.importorskip("ex4d.io.video")


@pytest.fixture
def videos(tmp_path, video):
    color, mask = video
    video_io.write_video(tmp_path / "color.mp4", color, 10.0, lossless=True)
    video_io.write_video(tmp_path / "mask.mp4", mask, 10.0)
    return tmp_path / "color.mp4", tmp_path / "mask.mp4"


def run(*argv: str) -> int:
    return cli.main(list(argv))


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as e:
        run("generate", "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--color", "--mask", "--wan", "--adapter", "--memory", "--num-frames", "--force-cpu", "--seed"):
        assert flag in out


def test_generate_writes_video_and_config(tmp_path, wan_dirs, adapter, videos, capsys):
    diffusers_dir, _ = wan_dirs
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    color, mask = videos
    out = tmp_path / "gen" / "output.mp4"
    code = run("generate", "--color", str(color), "--mask", str(mask), "--wan", str(diffusers_dir), "--adapter",
               str(tmp_path / "ex4d.ckpt"), "--out", str(out), "--device", "cpu", "--dtype", "float32",
               "--steps", "2", "--prompt", "a cat", "--step-cache", "first-block", "--step-cache-threshold", "0.1",
               "-q")
    assert code == 0, capsys.readouterr().err
    frames = video_io.read_video(out, num_frames=None, max_res=4096, multiple=1)
    assert frames.frames.shape == (5, 32, 48, 3)
    meta = json.loads((tmp_path / "gen" / "output.generate.json").read_text())
    assert meta["config"]["steps"] == 2 and meta["config"]["erosion"] == [2, 8] and meta["frames"] == 5
    assert meta["config"]["step_cache"] == "first-block" and meta["config"]["step_cache_threshold"] == 0.1


def test_user_errors_exit_2(tmp_path, wan_dirs, videos, capsys):
    diffusers_dir, _ = wan_dirs
    color, mask = videos
    base = ["generate", "--color", str(color), "--mask", str(mask), "--out", str(tmp_path / "o.mp4"),
            "--device", "cpu", "--dtype", "float32"]
    assert run(*base, "--wan", str(tmp_path / "missing"), "--no-adapter") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run(*base, "--wan", str(diffusers_dir), "--no-adapter", "--window", "50") == 2
    assert "4k+1" in capsys.readouterr().err
    assert run(*base, "--wan", str(diffusers_dir), "--adapter", str(tmp_path / "none.ckpt")) == 2
    assert "adapter file" in capsys.readouterr().err


def test_convert_adapter_round_trip(tmp_path, adapter):
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    assert run("convert-adapter", str(tmp_path / "ex4d.ckpt"), str(tmp_path / "a.safetensors")) == 0
    assert run("convert-adapter", str(tmp_path / "a.safetensors"), str(tmp_path / "b.ckpt")) == 0
    a, b = load_adapter(tmp_path / "ex4d.ckpt"), load_adapter(tmp_path / "b.ckpt")
    assert all(np.array_equal(a.lora[k].numpy(), b.lora[k].numpy()) for k in a.lora)


def test_run_with_the_diffusion_fill_end_to_end(tmp_path, wan_dirs, adapter, capsys):
    diffusers_dir, _ = wan_dirs
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    out = tmp_path / "run"
    code = run("run", "--example", "--num-frames", "5", "--example-size", "64", "--fill", "ex4d", "--wan",
               str(diffusers_dir), "--adapter", str(tmp_path / "ex4d.ckpt"), "--steps", "2", "--step-cache",
               "first-block", "--fp8-matmul", "-q", "--out", str(out))
    assert code == 0, capsys.readouterr().err
    frames = video_io.read_video(out / "output.mp4", num_frames=None, max_res=4096, multiple=1).frames
    assert frames.shape == (5, 64, 64, 3)
    opts = json.loads((out / "config.json").read_text())["run"]["fill_options"]
    assert opts["steps"] == 2 and opts["step_cache"] == "first-block" and opts["fp8_matmul"] is True


def test_run_checks_the_weights_and_adapter_before_the_recon(tmp_path, wan_dirs, spec, capsys):
    """A wrong adapter or an incomplete weight folder fails in seconds with a named error, before any recon work."""
    import dataclasses
    import shutil

    from ex4d.diffusion.random_models import random_adapter

    diffusers_dir, _ = wan_dirs
    wrong = dataclasses.replace(spec, num_layers=spec.num_layers + 1)  # an adapter of another model
    export_original_ckpt(random_adapter(wrong, seed=1), tmp_path / "other.ckpt")
    out = tmp_path / "run"
    base = ["run", "--example", "--num-frames", "5", "--example-size", "64", "--fill", "ex4d", "--steps", "2",
            "-q", "--out", str(out)]
    assert run(*base, "--wan", str(diffusers_dir), "--adapter", str(tmp_path / "other.ckpt")) == 2
    err = capsys.readouterr().err
    assert "other.ckpt" in err and "Traceback" not in err, err
    assert not out.exists(), "the recon ran (or the folder was claimed) before the adapter was checked"

    broken = tmp_path / "wan-broken"
    shutil.copytree(diffusers_dir, broken)
    shutil.rmtree(broken / "image_encoder")
    assert run(*base, "--wan", str(broken)) == 2
    err = capsys.readouterr().err
    assert "image_encoder" in err or "CLIP" in err, err
    assert not out.exists()


def test_run_with_windows_and_stereo_loads_the_model_once(tmp_path, wan_dirs, adapter, monkeypatch, capsys):
    """`ex4d run --fill ex4d --window … --stereo sbs`: both eyes generated in windows with one model load."""
    import ex4d.diffusion.pipeline as pipeline
    from ex4d.diffusion import windowed

    diffusers_dir, _ = wan_dirs
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    loads = []
    real = pipeline.Ex4dGenerator.load.__func__
    monkeypatch.setattr(pipeline.Ex4dGenerator, "load",
                        classmethod(lambda cls, *a, **k: loads.append(1) or real(cls, *a, **k)))
    out = tmp_path / "run"
    code = run("run", "--example", "--num-frames", "9", "--example-size", "64", "--fill", "ex4d", "--wan",
               str(diffusers_dir), "--adapter", str(tmp_path / "ex4d.ckpt"), "--steps", "2", "--window", "5",
               "--overlap", "1", "--stereo", "sbs", "--trajectory", "orbit", "--yaw", "20", "-q", "--out", str(out))
    assert code == 0, capsys.readouterr().err
    assert len(loads) == 1, f"the models were loaded {len(loads)} times"
    assert (out / "stereo.mp4").is_file() and (out / "output.mp4").is_file()
    pair = video_io.read_video(out / "stereo.mp4", num_frames=None, max_res=4096, multiple=1).frames
    assert pair.shape == (9, 64, 128, 3)
    assert not windowed._SHARED, "the run kept its generator after it finished"
