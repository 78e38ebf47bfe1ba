"""``ex4d train`` / ``prepare`` / ``masks`` check every input before loading anything heavy.

The heavy steps (the Wan loader, accelerate, Ray) are replaced by functions that fail the test if called, so
each bad input must be refused, with a one-line message naming it, before them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ex4d.cli import main


@pytest.fixture
def no_heavy(monkeypatch):
    """Make loading Wan, starting accelerate or Ray fail the test."""
    import accelerate

    import ex4d.diffusion.loading as loading
    import ex4d.train.ray_run as ray_run

    def boom(*a, **k):
        raise AssertionError("a heavy step ran before the inputs were checked")

    monkeypatch.setattr(loading, "load_wan", boom)
    monkeypatch.setattr(accelerate, "Accelerator", boom)
    monkeypatch.setattr(ray_run, "run_on_ray", boom)
    return boom


def refused(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def fake_wan(tmp_path):
    """A diffusers-layout Wan folder with every part's config and weight file present (empty files)."""
    root = tmp_path / "wan"
    for part, stem in (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                       ("text_encoder", "model"), ("image_encoder", "model")):
        (root / part).mkdir(parents=True)
        (root / part / "config.json").write_text("{}")
        (root / part / f"{stem}.safetensors").write_bytes(b"")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    return root


def one_clip(prepared, dest):
    """A copy of ``prepared`` with its first clip only (a fresh folder to damage)."""
    clips = sorted((prepared / "clips").iterdir())
    (dest / "clips").mkdir(parents=True)
    shutil.copytree(clips[0], dest / "clips" / clips[0].name)
    return dest, dest / "clips" / clips[0].name


def test_bad_data_folders_fail_before_anything_is_loaded(tmp_path, prepared, fake_wan, no_heavy, capsys):
    base = ["train", "--wan", str(fake_wan), "--out", str(tmp_path / "run"), "--cpu", "-q"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "partial" / "clips" / "c1").mkdir(parents=True)
    (tmp_path / "partial" / "clips" / "c1" / "gt.mp4").write_bytes(b"")
    cases = [(tmp_path / "none", "does not exist"), (tmp_path / "file", "not a folder"),
             (tmp_path / "empty", "no complete prepared clip"), (tmp_path / "partial", "lack gt.mp4")]
    for data, words in cases:
        refused(capsys, ["train", "--data", str(data), *base[1:]], str(data), words)
    for i, (meta, words) in enumerate([("[[[[", "not valid JSON"), ("[" * 100000 + "]" * 100000, "meta.json"),
                                       ('"text"', "not a JSON object"), ('{"size": [48, 33], "frame_indices": [0]}',
                                                                         "multiples of 16"),
                                       ('{"size": "big", "frame_indices": [0]}', "size"),
                                       ('{"size": [48, 32], "frame_indices": 5}', "frame_indices")]):
        data, clip = one_clip(prepared, tmp_path / f"d{i}")
        (clip / "meta.json").write_text(meta)
        refused(capsys, ["train", "--data", str(data), *base[1:]], words)
    data, clip = one_clip(prepared, tmp_path / "short")
    refused(capsys, ["train", "--data", str(data), *base[1:], "--num-frames", "9"], "fewer than --num-frames 9")
    refused(capsys, ["train", "--data", str(prepared), *base[1:], "--val-data", str(tmp_path / "empty")],
            "--val-data", "no complete prepared clip")


def test_mixed_sizes_need_batch_size_one(tmp_path, prepared, fake_wan, no_heavy, capsys):
    data = tmp_path / "mixed"
    shutil.copytree(prepared / "clips", data / "clips")
    meta_path = sorted((data / "clips").iterdir())[0] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["size"] = [64, 64]
    meta_path.write_text(json.dumps(meta))
    refused(capsys, ["train", "--data", str(data), "--wan", str(fake_wan), "--out", str(tmp_path / "r"),
                     "--batch-size", "2"], "mixes frame sizes", "--batch-size 1")


def test_bad_weight_folders_fail_before_loading(tmp_path, prepared, fake_wan, no_heavy, capsys):
    base = ["train", "--data", str(prepared), "--out", str(tmp_path / "run")]
    refused(capsys, [*base, "--wan", str(tmp_path / "nowan")], "does not exist")
    (tmp_path / "notwan").mkdir()
    refused(capsys, [*base, "--wan", str(tmp_path / "notwan")], "neither Wan layout")
    for part, words in (("vae", "missing vae/"), ("tokenizer", "tokenizer/tokenizer.json"),
                        ("image_encoder", "missing image_encoder/")):
        broken = tmp_path / f"no-{part}"
        shutil.copytree(fake_wan, broken)
        shutil.rmtree(broken / part)
        refused(capsys, [*base, "--wan", str(broken)], words)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(fake_wan, no_weights)
    (no_weights / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    refused(capsys, [*base, "--wan", str(no_weights)], "no DiT weights")
    original = tmp_path / "original"
    original.mkdir()
    (original / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (original / "Wan2.1_VAE.pth").write_bytes(b"")
    refused(capsys, [*base, "--wan", str(original)], "--wan-encoders")
    refused(capsys, [*base, "--wan", str(original), "--wan-encoders", str(tmp_path / "notwan")], "text_encoder")


def test_bad_numbers_and_outputs_fail_before_loading(tmp_path, prepared, fake_wan, no_heavy, capsys):
    base = ["train", "--data", str(prepared), "--wan", str(fake_wan)]
    out = ["--out", str(tmp_path / "run")]
    for flags, words in ((["--lr", "nan"], "learning_rate"), (["--lr", "inf"], "learning_rate"),
                         (["--shift", "inf"], "shift"), (["--alpha", "nan"], "alpha"), (["--rank", "0"], "rank"),
                         (["--rank", "1000000"], "rank"), (["--max-grad-norm", "-1"], "max_grad_norm"),
                         (["--val-cfg", "nan"], "val_cfg"), (["--batch-size", "0"], "batch_size"),
                         (["--num-frames", "6"], "4k+1"), (["--erosion", "9", "2"], "erosion"),
                         (["--stop-at", "99999"], "stop_at"), (["--weight-decay", "inf"], "weight_decay")):
        refused(capsys, [*base, *out, *flags], words)
    (tmp_path / "file").write_text("x")
    refused(capsys, [*base, "--out", str(tmp_path / "file")], "not a folder")
    refused(capsys, [*base, "--out", str(tmp_path / "file" / "run")], "not a folder")
    run = tmp_path / "used"
    (run / "checkpoints" / "step-000003").mkdir(parents=True)
    refused(capsys, [*base, "--out", str(run)], "already holds checkpoints", "--resume")
    refused(capsys, [*base, *out, "--resume", str(tmp_path)], "not a checkpoint folder")


def test_resume_must_match_and_be_complete(tmp_path, prepared, fake_wan, no_heavy, capsys):
    from ex4d.train.cli import train_config_from_args
    from ex4d.train.cli import build_parser

    run = tmp_path / "run"
    base = ["train", "--data", str(prepared), "--wan", str(fake_wan), "--out", str(run)]
    ckpt = run / "checkpoints" / "step-000003"
    ckpt.mkdir(parents=True)
    saved = train_config_from_args(build_parser().parse_args([*base, "--rank", "8"])).to_dict()
    (ckpt / "state.json").write_text(json.dumps({"step": 3, "config": saved}))
    refused(capsys, [*base, "--resume"], "trainable.pt")
    for name in ("trainable.pt", "optimizer.pt", "scheduler.pt"):
        (ckpt / name).write_bytes(b"")
    refused(capsys, [*base, "--resume"], "cannot resume", "rank")
    (ckpt / "state.json").write_text("{" * 50000)
    refused(capsys, [*base, "--resume"], "state.json")
    (ckpt / "state.json").write_text(json.dumps({"config": saved}))
    refused(capsys, [*base, "--resume", "--rank", "8"], "no step")


def test_bad_init_adapter_fails_before_loading(tmp_path, prepared, fake_wan, no_heavy, capsys):
    from safetensors.torch import save_file

    from ex4d.diffusion.adapter_spec import AdapterSpec
    from ex4d.diffusion.checkpoint import save_adapter_safetensors
    from ex4d.diffusion.random_models import random_adapter

    base = ["train", "--data", str(prepared), "--wan", str(fake_wan), "--out", str(tmp_path / "r")]
    refused(capsys, [*base, "--init-adapter", str(tmp_path / "none.ckpt")], "does not exist")
    path = tmp_path / "a.safetensors"
    save_adapter_safetensors(random_adapter(AdapterSpec(num_layers=2, dim=32, ffn_dim=64, z_dim=4, hidden=16,
                                                        rank=4, alpha=4.0)), path)
    refused(capsys, [*base, "--init-adapter", str(path)], "rank 4, hidden 16", "--rank 4 --hidden 16")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata={**meta, "num_layers": "100000000"})
    refused(capsys, [*base, "--init-adapter", str(tmp_path / "nan.safetensors")], "num_layers")


def test_prepare_checks_before_ray(tmp_path, example_videos, no_heavy, capsys):
    videos, depth = example_videos
    out = ["--out", str(tmp_path / "data")]
    (tmp_path / "file").write_text("x")
    (tmp_path / "list.txt").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "bad" ).mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"prepare": 5}')
    cases = [([str(videos), *out, "--depth-dir", str(tmp_path / "nodir")], "--depth-dir"),
             ([str(videos), *out], "no depth source"),
             ([str(videos), *out, "--depth-model", "nope", "--depth-weights", str(tmp_path)], "depth_model"),
             ([str(videos), *out, "--depth-model", "depthcrafter", "--depth-weights", str(tmp_path / "w")],
              "--depth-weights"),
             ([str(videos), *out, "--depth-model", "depthcrafter"], "--depth-weights"),
             ([str(tmp_path / "list.txt"), *out, "--depth-dir", str(depth)], "UTF-8"),
             ([str(tmp_path / "none.mp4"), *out, "--depth-dir", str(depth)], "does not exist"),
             ([str(videos), "--out", str(tmp_path / "file"), "--depth-dir", str(depth)], "not a folder"),
             ([str(videos), "--out", str(tmp_path / "bad"), "--depth-dir", str(depth)], "not an ex4d prepare config"),
             ([str(videos), *out, "--depth-dir", str(depth), "--depth-scale", "nan"], "depth_scale"),
             ([str(videos), *out, "--depth-dir", str(depth), "--workers", "0"], "--workers"),
             ([str(videos), *out, "--depth-dir", str(depth), "--gpus-per-worker", "nan"], "--gpus-per-worker"),
             ([str(videos), *out, "--depth-dir", str(depth), "--retries", "-1"], "--retries"),
             ([str(videos), *out, "--depth-dir", str(depth), "--yaw", "50", "10"], "yaw_range"),
             ([str(videos), *out, "--depth-dir", str(depth), "--pitch", "nan"], "pitch"),
             ([str(videos), *out, "--depth-dir", str(depth), "--num-frames", "10"], "4k+1"),
             ([str(videos), *out, "--depth-dir", str(depth), "--seed", "-1"], "seed")]
    for argv, words in cases:
        refused(capsys, ["prepare", *argv], words)
    assert not (tmp_path / "data").exists()  # nothing was created for a refused run


def test_masks_checks_numbers_and_files(tmp_path, capsys):
    out = str(tmp_path / "m.mp4")
    (tmp_path / "f").write_text("x")
    for argv, words in ((["--example", "--out", out, "--num-frames", "100000"], "--num-frames"),
                        (["--example", "--out", out, "--size", "100000", "100000"], "--size"),
                        (["--example", "--out", out, "--size", "0", "64"], "--size"),
                        (["--example", "--out", out, "--camera", "nan", "0", "0"], "finite"),
                        (["--example", "--out", out, "--camera", "30", "0", "5"], "DOLLY"),
                        (["--example", "--out", str(tmp_path / "f" / "m.mp4")], "not a folder"),
                        (["--example", "--out", str(tmp_path)], "folder"),
                        ([str(tmp_path / "v.mp4"), "--depth", "d.npz", "--out", out], "does not exist"),
                        (["--out", out], "--example")):
        refused(capsys, ["masks", *argv], words)
