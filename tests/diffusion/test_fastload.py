"""The streaming loader (ex4d.diffusion.fastload): same models, same videos as the CPU loader, in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _ex4d_tiny import TINY_VAE, tiny_config

from ex4d.diffusion.checkpoint import export_original_ckpt
from ex4d.diffusion.fastload import dit_source, load_models, meta_transformer
from ex4d.diffusion.loading import load_wan
from ex4d.diffusion.pipeline import Ex4dGenerator
from ex4d.diffusion.streaming import PinnedArena, TensorStreamer, index_files, read_header
from ex4d.errors import Ex4dError


@pytest.fixture
def ckpt(tmp_path, adapter):
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    return tmp_path / "ex4d.ckpt"


def test_streamer_reads_every_tensor_exactly(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    a = {"a": torch.randn(7, 5, generator=g), "b": torch.randn(300, generator=g).to(torch.bfloat16),
         "e": torch.empty(0, 3)}
    b = {"c": torch.randint(0, 100, (4, 4), generator=g), "d": torch.randn(3, 3, generator=g).half()}
    save_file(a, str(tmp_path / "a.safetensors"), metadata={"k": "v"})
    save_file(b, str(tmp_path / "b.safetensors"))
    assert read_header(tmp_path / "a.safetensors")[1] == {"k": "v"}
    index = index_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with TensorStreamer(index, "cpu", threads=3, chunk_mib=1) as s:
        got = [s.load(["a", "c"]), *s.groups([["b", "e"], ["d"]], dtype_for=lambda n: torch.float32)]
    assert torch.equal(got[0]["a"], a["a"]) and torch.equal(got[0]["c"], b["c"])
    assert got[1]["b"].dtype == torch.float32 and torch.equal(got[1]["b"], a["b"].float())
    assert got[1]["e"].shape == (0, 3) and torch.equal(got[2]["d"], b["d"].float())
    with pytest.raises(Ex4dError, match="in both"):
        index_files([tmp_path / "a.safetensors", tmp_path / "a.safetensors"])
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes()[:-8])
    with pytest.raises(Ex4dError, match="truncated or corrupt"):
        read_header(tmp_path / "cut.safetensors")
    arena = PinnedArena(chunk_bytes=4096, pin=False)
    x = arena.copy(torch.arange(10.0))
    assert torch.equal(x, torch.arange(10.0)) and arena.empty((3000,), torch.float32).shape == (3000,)


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_fast_path_gives_the_cpu_loaders_video(layout, wan_dirs, ckpt, video):
    diffusers_dir, original_dir = wan_dirs
    wan, enc = (diffusers_dir, None) if layout == "diffusers" else (original_dir, diffusers_dir)
    color, mask = video
    cfg = tiny_config()
    from ex4d.diffusion.checkpoint import load_adapter
    from ex4d.diffusion.pipeline import model_spec

    comps = load_wan(wan, encoders=enc, dtype="float32", device="cpu", vae_config=TINY_VAE)
    ref = Ex4dGenerator(comps, load_adapter(ckpt, expected=model_spec(comps)), cfg).generate(color, mask, progress=False)
    models = load_models(wan, ckpt, cfg, encoders=enc, vae_config=TINY_VAE)
    assert models.timings["dit_bytes"] == sum(e.nbytes for e in dit_source(wan).entries.values()) and models.components.transformer.blocks[1].attn1.to_q.weight.device.type == "cpu"
    out = Ex4dGenerator(models.components, models.adapter, cfg, prepared=models).generate(color, mask, progress=False)
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("memory,budget,fp8", [("balanced", 1e-6, False), ("low", 1e-6, False), ("full", None, True)])
def test_fast_path_memory_modes_and_fp8(memory, budget, fp8, wan_dirs, ckpt, video):
    diffusers_dir, _ = wan_dirs
    color, mask = video
    cfg = tiny_config(memory=memory, gpu_budget_gib=budget, fp8_matmul=fp8)
    from ex4d.diffusion.checkpoint import load_adapter
    from ex4d.diffusion.pipeline import model_spec

    comps = load_wan(diffusers_dir, dtype="float32", device="cpu")
    ref = Ex4dGenerator(comps, load_adapter(ckpt, expected=model_spec(comps)), cfg).generate(color, mask, progress=False)
    gen = Ex4dGenerator.load(diffusers_dir, ckpt, cfg)
    tr = gen.components.transformer
    if budget is not None:  # nothing fits: every block streamed, through the hooks
        assert gen.load_timings["dit_resident_blocks"] == 0 and hasattr(tr.blocks[0], "_diffusers_hook")
    if memory == "low" and not fp8:
        assert tr.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    if fp8:
        assert type(tr.blocks[1].ffn.net[2]).__name__ == "Fp8Linear"
    assert np.array_equal(gen.generate(color, mask, progress=False), ref)


def test_overlap_runs_the_encoders_while_the_dit_loads(wan_dirs, ckpt, video):
    diffusers_dir, _ = wan_dirs
    color, mask = video
    ref = Ex4dGenerator.load(diffusers_dir, ckpt, tiny_config()).generate(color, mask, progress=False)
    gen = Ex4dGenerator.load(diffusers_dir, ckpt, tiny_config(), overlap=True)
    out = gen.generate(color, mask, progress=False)
    assert np.array_equal(out, ref) and "dit_wait_s" in gen.last_timings


def test_prompt_cache_spares_the_text_encoder(tmp_path, monkeypatch, wan_dirs, ckpt, video):
    diffusers_dir, _ = wan_dirs
    monkeypatch.setenv("EX4D_CACHE_DIR", str(tmp_path / "cache"))
    color, mask = video
    cfg = tiny_config(prompt="a cat in a new prompt")
    pair = [(cfg.prompt, cfg.negative_prompt)]
    first = Ex4dGenerator.load(diffusers_dir, ckpt, cfg, prompts=pair)
    assert first.components.text_encoder is not None
    a = first.generate(color, mask, progress=False)
    assert len(list((tmp_path / "cache" / "prompts").glob("*.safetensors"))) == 1
    second = Ex4dGenerator.load(diffusers_dir, ckpt, cfg, prompts=pair)
    assert second.components.text_encoder is None  # never read from disk
    assert np.array_equal(second.generate(color, mask, progress=False), a)
    assert second.components.text_encoder is None
    b = second.generate(color, mask, cfg.replace(prompt="walking"), progress=False)  # a new prompt: loaded now
    assert second.components.text_encoder is not None and not np.array_equal(a, b)
    monkeypatch.setenv("EX4D_PROMPT_CACHE", "0")
    assert Ex4dGenerator.load(diffusers_dir, ckpt, cfg, prompts=pair).components.text_encoder is not None


def test_bad_files_fail_before_reading_weights(tmp_path, wan_dirs, ckpt):
    import shutil

    diffusers_dir, _ = wan_dirs
    broken = tmp_path / "broken"
    shutil.copytree(diffusers_dir, broken)
    (broken / "transformer" / "config.json").write_text("{")
    with pytest.raises(Ex4dError, match="not readable JSON"):
        load_models(broken, ckpt, tiny_config())
    shutil.copy(diffusers_dir / "transformer" / "config.json", broken / "transformer" / "config.json")
    (broken / "image_encoder" / "model.safetensors").unlink()
    with pytest.raises(Ex4dError, match="CLIP image encoder"):
        load_models(broken, ckpt, tiny_config())
    src = dit_source(diffusers_dir)
    model = meta_transformer(src.config)
    assert all(p.is_meta for p in model.parameters()) and set(src.entries) == {n for n, _ in model.named_parameters()}
