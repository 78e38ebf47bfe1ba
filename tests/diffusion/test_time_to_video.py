"""Time to video, on tiny models: batch mode and the warm worker (models loaded once, same video as a cold run),
--out safety, presets and the lcm sampler, extra LoRAs through the loader, the compile cache plumbing."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import torch
from _ex4d_tiny import tiny_config
from safetensors.torch import save_file

from ex4d.diffusion import fastload
from ex4d.diffusion.checkpoint import export_original_ckpt

cli = pytest.importorskip("ex4d.cli")
video_io = pytest.importorskip("ex4d.io.video")

FLAGS = ["--device", "cpu", "--dtype", "float32", "--steps", "2", "--prompt", "a cat", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, wan_dirs):
    """(tmp folder, diffusers Wan folder, adapter, color.mp4, mask.mp4, inputs.npz) shared by this module."""
    from ex4d.diffusion.random_models import build_components, random_adapter
    from ex4d.diffusion.pipeline import model_spec
    import dataclasses

    root = tmp_path_factory.mktemp("ttv")
    spec = dataclasses.replace(model_spec(build_components("tiny")), hidden=16, rank=4, alpha=4.0)
    export_original_ckpt(random_adapter(spec, seed=1, scale=0.1), root / "ex4d.ckpt")
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    mask = np.zeros((5, 32, 48), bool)
    mask[:, :, :28] = True
    mask[0] = True
    video_io.write_video(root / "color.mp4", color, 10.0, lossless=True)
    video_io.write_video(root / "mask.mp4", mask, 10.0)
    return root, wan_dirs[0], root / "ex4d.ckpt", root / "color.mp4", root / "mask.mp4"


@pytest.fixture(scope="module")
def cold(files):
    """The video of job B ({seed 3, sampler lcm}) from a cold `ex4d generate` (its own process state, own load)."""
    root, wan, ckpt, color, mask = files
    out = root / "cold_b.npz"
    assert cli.main(["generate", "--color", str(color), "--mask", str(mask), "--wan", str(wan), "--adapter", str(ckpt),
                     "--out", str(out), "--seed", "3", "--sampler", "lcm", *FLAGS]) == 0
    with np.load(out) as z:
        return z["video"]


@pytest.fixture
def count_loads(monkeypatch):
    calls = []
    real = fastload.load_models

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fastload, "load_models", counting)
    return calls


def test_out_is_never_overwritten_by_surprise_and_bad_flags_fail_before_loading(files, capsys, count_loads):
    root, wan, ckpt, color, mask = files
    (root / "taken.mp4").write_bytes(b"user's file")
    base = ["generate", "--color", str(color), "--mask", str(mask), "--wan", str(wan), *FLAGS]
    cases = [
        (["--adapter", str(ckpt), "--out", str(root / "taken.mp4")], "exists; pass --overwrite"),
        (["--adapter", str(ckpt), "--out", str(root)], "is a folder"),
        (["--adapter", str(ckpt), "--out", str(root / "o.avi")], "must end in"),
        (["--adapter", str(ckpt), "--out", str(color), "--overwrite"], "is also an input"),
        (["--out", str(root / "x.mp4")], "--adapter FILE"),
        (["--adapter", str(ckpt), "--out", str(root / "x.mp4"), "--preset", "lightx2v-4step"], "add --lora"),
        (["--adapter", str(ckpt), "--out", str(root / "x.mp4"), "--lora", str(root / "none.safetensors")], "not a file"),
        (["--adapter", str(ckpt), "--out", str(root / "x.mp4"), "--preset", "fast"], "unknown --preset"),
        (["--adapter", str(ckpt), "--jobs", str(root / "none.json"), "--out", str(root / "x.mp4")], "--jobs FILE names"),
    ]
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (root / "ro").mkdir()
        (root / "ro").chmod(0o500)
        cases.append((["--adapter", str(ckpt), "--out", str(root / "ro" / "x.mp4")], "cannot write"))
    for extra, msg in cases:
        assert cli.main(base + extra) == 2, extra
        assert msg in capsys.readouterr().err, (extra, msg)
    assert (root / "taken.mp4").read_bytes() == b"user's file" and not count_loads


def test_jobs_load_once_and_each_video_equals_a_cold_run(files, cold, count_loads, capsys):
    root, wan, ckpt, color, mask = files
    (root / "jobs").mkdir()
    jobs = [{"color": "../color.mp4", "mask": "../mask.mp4", "out": "a.mp4"},
            {"color": str(color), "mask": str(mask), "out": "b.npz", "options": {"seed": 3, "sampler": "lcm"}}]
    (root / "jobs" / "jobs.json").write_text(json.dumps(jobs))
    assert cli.main(["generate", "--jobs", str(root / "jobs" / "jobs.json"), "--wan", str(wan), "--adapter",
                     str(ckpt), *FLAGS]) == 0, capsys.readouterr().err
    assert len(count_loads) == 1
    with np.load(root / "jobs" / "b.npz") as z:
        assert np.array_equal(z["video"], cold)  # the second job, on the warm models, is the cold run's video
    rec = json.loads((root / "jobs" / "a.generate.json").read_text())
    t = rec["timings_s"]
    assert {"load", "encode", "denoise", "decode", "write", "wall", "load_detail"} <= set(t) and t["wall"] >= t["load"]
    st = t["stages"]  # the denoising split into its first step (a new process's tracing) and the others
    assert st["first_step_s"] > 0 and st["rest_steps_s"] > 0
    assert st["first_step_s"] + st["rest_steps_s"] <= st["denoise_s"] + 2e-3
    assert rec["jobs"] == 2 and rec["job"]["out"].endswith("a.mp4")
    # a bad job is named before anything loads; a job failing at run time does not stop the others
    (root / "jobs" / "bad.json").write_text(json.dumps([{"color": "nope.mp4", "mask": "../mask.mp4", "out": "c.mp4"}]))
    assert cli.main(["generate", "--jobs", str(root / "jobs" / "bad.json"), "--wan", str(wan), "--no-adapter",
                     *FLAGS]) == 2
    assert "job 1: input" in capsys.readouterr().err and len(count_loads) == 1
    from ex4d.io.video import read_mask_video, write_video

    write_video(root / "jobs" / "short_mask.mp4", read_mask_video(mask)[:3], 10.0)  # fewer frames than the color
    (root / "jobs" / "fails.jsonl").write_text("\n".join(json.dumps(j) for j in [
        {"color": "../color.mp4", "mask": "short_mask.mp4", "out": "d.mp4"},
        {"color": "../color.mp4", "mask": "../mask.mp4", "out": "e.mp4"}]))
    assert cli.main(["generate", "--jobs", str(root / "jobs" / "fails.jsonl"), "--wan", str(wan), "--no-adapter",
                     *FLAGS]) == 2
    out, err = capsys.readouterr()
    assert "job 1/2" in out and "frames" in out and (root / "jobs" / "e.mp4").is_file() and "1 of 2 jobs failed" in err


def test_warm_worker_second_job_reuses_the_models_and_equals_the_cold_run(files, cold, count_loads, capsys):
    from ex4d.diffusion.serve import ServeClient
    from ex4d.errors import Ex4dError

    root, wan, ckpt, color, mask = files
    ready = root / "ready.json"
    codes = []
    server = threading.Thread(target=lambda: codes.append(cli.main(
        ["serve", "--wan", str(wan), "--adapter", str(ckpt), "--port", "0", "--ready-file", str(ready), *FLAGS])))
    server.start()
    t0 = time.monotonic()
    while not ready.exists():
        assert server.is_alive() and time.monotonic() - t0 < 120, capsys.readouterr().err
        time.sleep(0.1)
    client = ServeClient(json.loads(ready.read_text())["url"])
    try:
        assert client.health()["state"] == "ready"
        first = client.generate(color, mask, root / "s1.npz")
        second = client.submit({"color": str(color), "mask": str(mask), "out": str(root / "s2.npz"),
                                "options": {"seed": 3, "sampler": "lcm"}})
        rec = client.wait(second, timeout=120)
        assert first["state"] == rec["state"] == "done" and "denoise" in rec["result"]["timings_s"]
        with np.load(root / "s2.npz") as z:
            assert np.array_equal(z["video"], cold)
        with pytest.raises(Ex4dError, match="exists"):
            client.generate(color, mask, root / "s1.npz")
        with pytest.raises(Ex4dError, match="unknown options"):
            client.submit({"color": str(color), "mask": str(mask), "out": str(root / "s3.npz"), "options": {"x": 1}})
        with pytest.raises(Ex4dError, match="cannot change per job"):
            client.submit({"color": str(color), "mask": str(mask), "out": str(root / "s3.npz"),
                           "options": {"memory": "low"}})
        with pytest.raises(Ex4dError, match="no job"):
            client.status("999999")
        assert cli.main(["generate", "--server", client.url, "--color", str(color), "--mask", str(mask), "--out",
                         str(root / "s4.mp4"), "--seed", "3"]) == 0
        arr = client.generate_arrays(np.zeros((5, 32, 48, 3), np.uint8), np.ones((5, 32, 48), bool), seed=3)
        assert arr.shape == (5, 32, 48, 3) and arr.dtype == np.uint8
        assert len(count_loads) == 1  # every job on the models loaded at start
    finally:
        client.shutdown()
        server.join(timeout=60)
    assert codes == [0]
    assert cli.main(["generate", "--server", client.url, "--color", str(color), "--mask", str(mask), "--out",
                     str(root / "s5.mp4")]) == 2
    assert "cannot reach ex4d serve" in capsys.readouterr().err


def test_extra_lora_through_the_streaming_loader_matches_the_cpu_loader(files, tmp_path):
    from ex4d.diffusion.checkpoint import load_adapter
    from ex4d.diffusion.extra_lora import LoraFile
    from ex4d.diffusion.loading import load_wan
    from ex4d.diffusion.pipeline import Ex4dGenerator, model_spec

    root, wan, ckpt, color_path, mask_path = files
    g = torch.Generator().manual_seed(0)
    lora = {}
    for i in range(2):  # ComfyUI layout on every q and ffn.0, plus a k_img (I2V) layer
        for name, (o, n) in {"self_attn.q": (16, 16), "ffn.0": (32, 16), "cross_attn.k_img": (16, 16)}.items():
            lora[f"diffusion_model.blocks.{i}.{name}.lora_down.weight"] = torch.randn(4, n, generator=g) * 0.3
            lora[f"diffusion_model.blocks.{i}.{name}.lora_up.weight"] = torch.randn(o, 4, generator=g) * 0.3
            lora[f"diffusion_model.blocks.{i}.{name}.alpha"] = torch.tensor(2.0)
    save_file(lora, str(tmp_path / "style.safetensors"))
    lf = [LoraFile(tmp_path / "style.safetensors", 0.8)]
    from ex4d.diffusion.jobs import read_inputs

    color, mask, _ = read_inputs(str(color_path), str(mask_path))
    cfg = tiny_config()
    fast = Ex4dGenerator.load(wan, ckpt, cfg, loras=lf)
    assert fast.loras[-1] == "style.safetensors:0.8"
    with_lora = fast.generate(color, mask, progress=False)
    comps = load_wan(wan, dtype="float32", device="cpu")
    slow = Ex4dGenerator(comps, load_adapter(ckpt, expected=model_spec(comps)), cfg, loras=lf)
    ref = slow.generate(color, mask, progress=False)
    assert np.abs(with_lora.astype(int) - ref.astype(int)).max() <= 1  # one rounding vs two, in float32
    from safetensors.torch import load_file  # a layer the EX-4D LoRA leaves alone: file weight + the LoRA only

    w0 = load_file(str(wan / "transformer" / "diffusion_pytorch_model.safetensors"))["blocks.1.attn2.add_k_proj.weight"]
    a, b = (lora[f"diffusion_model.blocks.1.cross_attn.k_img.lora_{n}.weight"] for n in ("down", "up"))
    torch.testing.assert_close(fast.components.transformer.blocks[1].attn2.add_k_proj.weight,
                               w0 + 0.8 * 2.0 / 4 * (b @ a), rtol=1e-6, atol=1e-6)


def test_presets_and_the_lcm_sampler(components, adapter, video):
    from ex4d.diffusion.cli_args import config_from_args
    from ex4d.diffusion.pipeline import Ex4dGenerator

    parser = cli.build_parser()

    def cfg(*argv):
        return config_from_args(parser.parse_args(["generate", *argv]))

    c = cfg("--preset", "lightx2v-4step", "--lora", "x.safetensors")
    assert (c.steps, c.cfg, c.shift, c.sampler) == (4, 1.0, 5.0, "lcm")
    c = cfg("--preset", "lightx2v-4step", "--lora", "x.safetensors", "--steps", "6", "--cfg", "2")
    assert (c.steps, c.cfg, c.sampler) == (6, 2.0, "lcm")
    assert cfg().steps == 25 and cfg().sampler == "euler"
    color, mask = video
    gen = Ex4dGenerator(components, adapter, tiny_config())
    lcm = gen.generate(color, mask, tiny_config(sampler="lcm"), progress=False)
    assert np.array_equal(lcm, gen.generate(color, mask, tiny_config(sampler="lcm"), progress=False))
    assert not np.array_equal(lcm, gen.generate(color, mask, progress=False))


def test_compile_cache_plumbing(tmp_path, monkeypatch):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    from ex4d.diffusion.compile_cache import compile_cache_dir, enable_compile_cache

    for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
              "TORCHINDUCTOR_AUTOGRAD_CACHE", "EX4D_COMPILE_CACHE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("EX4D_CACHE_DIR", str(tmp_path / "ex4d"))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(functorch_config, "enable_autograd_cache", False)
    got = enable_compile_cache()
    assert got["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "ex4d" / "torch-compile") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "ex4d" / "torch-compile" / "triton")
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(tmp_path / "ex4d" / "torch-compile")  # where Inductor writes its graphs now
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice wins
    assert enable_compile_cache()["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    monkeypatch.setenv("EX4D_COMPILE_CACHE", "0")
    assert compile_cache_dir() is None and enable_compile_cache() == {}
    monkeypatch.setenv("EX4D_COMPILE_CACHE", str(tmp_path / "elsewhere"))
    assert compile_cache_dir() == tmp_path / "elsewhere"


def test_warmup_command_fills_the_prompt_cache(files, tmp_path, monkeypatch, capsys):
    root, wan, ckpt, color, mask = files
    monkeypatch.setenv("EX4D_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["warmup", "--wan", str(wan), "--adapter", str(ckpt), "--size", "48x32", "--num-frames", "5",
                     "--warmup-steps", "1", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "nothing to compile" in out and "5x32x48" in out
    assert len(list((tmp_path / "cache" / "prompts").glob("*.safetensors"))) == 1
    assert cli.main(["warmup", "--wan", str(wan), "--no-adapter", "--size", "50x32"]) == 2
