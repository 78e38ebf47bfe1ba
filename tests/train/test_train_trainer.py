"""``ex4d train`` on tiny random Wan models (CPU): learning, exact resume, export into ``ex4d generate``, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("peft")

from ex4d.diffusion.checkpoint import load_adapter  # noqa: E402
from ex4d.errors import Ex4dError  # noqa: E402
from ex4d.train.config import TrainConfig  # noqa: E402
from ex4d.train.trainer import train  # noqa: E402

TINY = dict(rank=4, alpha=4.0, hidden=16, warmup_steps=0, mixed_precision="no", weights_dtype="float32",
            num_workers=0, cpu=True, val_steps=2, val_cfg=1.0, val_prompt="a cat", val_negative_prompt="",
            tensorboard=False)


def test_loss_falls_when_overfitting_one_clip(tmp_path, prepared, wide_wan):
    one = tmp_path / "one" / "clips"
    one.mkdir(parents=True)
    first = sorted((prepared / "clips").iterdir())[0]
    (one / first.name).symlink_to(first)
    config = TrainConfig(data=str(one.parent), wan=str(wide_wan), out=str(tmp_path / "run"), **{
        **TINY, "rank": 8, "alpha": 8.0}, learning_rate=1e-2, max_steps=40, overfit=True, erosion=(0, 0),
        cache_latents=True, val_clips=0, checkpoint_every=0, validate_every=0)
    losses = [h["loss"] for h in train(config, progress=False).history]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.4 * np.mean(losses[:3]), losses


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, prepared, tiny_wan):
    """6 uninterrupted steps (checkpoints every 3, validation with renders at 3 and 6)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    config = TrainConfig(data=str(prepared), wan=str(tiny_wan), out=str(out), **TINY, learning_rate=1e-3,
                         max_steps=6, checkpoint_every=3, validate_every=3, val_clips=1, seed=5)
    return config, train(config, progress=False)


def test_stop_and_resume_gives_the_same_loss_curve(tmp_path, full_run, capsys):
    from ex4d.cli import main

    config, full = full_run
    out = tmp_path / "split"
    argv = ["train", "--data", config.data, "--wan", config.wan, "--out", str(out), "--rank", "4", "--alpha", "4",
            "--hidden", "16", "--warmup-steps", "0", "--mixed-precision", "no", "--weights-dtype", "float32",
            "--num-workers", "0", "--cpu", "--val-steps", "2", "--val-cfg", "1", "--lr", "1e-3", "--max-steps", "6",
            "--checkpoint-every", "3", "--validate-every", "3", "--val-clips", "1", "--seed", "5",
            "--no-tensorboard", "-q"]
    assert main([*argv, "--stop-at", "3"]) == 0
    assert "resume with --resume" in capsys.readouterr().out
    assert (out / "checkpoints" / "step-000003" / "adapter.safetensors").is_file()
    assert main(argv) == 2  # a second fresh start into the same folder is refused
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    lines = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    split = [r["loss"] for r in lines]
    whole = [r["loss"] for r in full.history]
    assert [r["step"] for r in lines] == list(range(1, 7))
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-7)
    val_split = [r["val_loss"] for r in lines if "val_loss" in r]
    np.testing.assert_allclose(val_split, [v["val_loss"] for v in full.validation], rtol=1e-5)
    a, b = load_adapter(out / "adapter.safetensors"), load_adapter(full.adapter)
    for k in a.lora:
        torch.testing.assert_close(a.lora[k], b.lora[k], rtol=1e-5, atol=1e-7)


def test_outputs_and_export_load_in_generate(tmp_path, full_run, capsys):
    from ex4d.cli import main
    from ex4d.io.video import read_video
    from ex4d.train import layout

    config, result = full_run
    out = result.adapter.parent
    assert (out / "config.json").is_file() and (out / "logs" / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    videos = list((out / "validation" / "step-000006").glob("*.mp4"))
    assert len(videos) == 1 and read_video(videos[0], num_frames=None, max_res=4096, multiple=1).frames.shape[2] == 144
    ours, original = load_adapter(result.adapter), load_adapter(result.original_ckpt)
    assert ours.spec.rank == 4 and ours.spec.alpha == 4.0 and original.spec.num_layers == 2
    for k in ours.lora:
        assert torch.equal(ours.lora[k], original.lora[k])
    assert any(v.abs().sum() > 0 for k, v in ours.lora.items() if k.endswith("lora_B"))  # trained, not the init
    assert ours.encoder["latent_patch_embedding.weight"].abs().sum() > 0
    clip = layout.list_clips(config.data)[0]
    out_video = tmp_path / "gen.mp4"
    code = main(["generate", "--color", str(clip / layout.CONDITION), "--mask", str(clip / layout.MASK),
                 "--wan", config.wan, "--adapter", str(result.adapter), "--out", str(out_video), "--device", "cpu",
                 "--dtype", "float32", "--steps", "2", "--prompt", "a cat", "-q"])
    assert code == 0, capsys.readouterr().err
    assert read_video(out_video, num_frames=None, max_res=4096, multiple=1).frames.shape == (5, 32, 48, 3)


def test_config_checks():
    base = dict(data="d", wan="w", out="o")
    with pytest.raises(Ex4dError, match="LoRA target"):
        TrainConfig(**base, lora_targets="self_attn,k_img")
    assert TrainConfig(**base, lora_targets="ffn,self_attn.q").lora_targets == ("attn1.to_q", "ffn.net.0.proj",
                                                                                  "ffn.net.2")
    with pytest.raises(Ex4dError, match="cache_latents"):
        TrainConfig(**base, cache_latents=True).check()
    with pytest.raises(Ex4dError, match="num_frames"):
        TrainConfig(**base, num_frames=48).check()
    assert TrainConfig.from_dict(TrainConfig(**base).to_dict()) == TrainConfig(**base)


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    from ex4d.train import accelerate_config

    kinds = {name: load_config_from_file(str(accelerate_config(name))) for name in ("single", "ddp", "fsdp")}
    assert str(kinds["ddp"].distributed_type).endswith("MULTI_GPU")
    fsdp = kinds["fsdp"]
    assert str(fsdp.distributed_type).endswith("FSDP") and fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "WanTransformerBlock"
    assert all(k.mixed_precision == "bf16" for k in kinds.values())


def test_fsdp_config_trains_two_cpu_processes(tmp_path, prepared, tiny_wan):
    """`accelerate launch` with the bundled FSDP2 config, two processes on the CPU (gloo); the checkpoint
    written by two processes resumes in one."""
    import os
    import subprocess
    import sys

    from ex4d.train import accelerate_config

    out = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("fsdp")),
           "--num_processes", "2", "--mixed_precision", "no", "-m", "ex4d.train", "--data", str(prepared), "--wan",
           str(tiny_wan), "--out", str(out), "--rank", "4", "--alpha", "4", "--hidden", "16", "--mixed-precision",
           "no", "--weights-dtype", "float32", "--num-workers", "0", "--cpu", "--max-steps", "3",
           "--checkpoint-every", "2", "--validate-every", "0", "--no-val-render", "--val-clips", "1",
           "--no-tensorboard", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "--stop-at", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["world_size"] == 2
    # N = 2 → M = 1: checkpoints hold full trainable state dicts, so another process count picks the run up
    i = cmd.index("-m", cmd.index("--mixed_precision"))
    done = subprocess.run([sys.executable, *cmd[i:], "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and load_adapter(out / "adapter.safetensors").spec.rank == 4
