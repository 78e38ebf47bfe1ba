"""Loading Wan2.1-I2V from local folders: diffusers layout, original release layout, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _ex4d_tiny import TINY_VAE, forward_inputs

from ex4d.diffusion import loading
from ex4d.diffusion.loading import detect_layout, load_wan
from ex4d.diffusion.random_models import build_components
from ex4d.errors import Ex4dError


def dit_out(transformer):
    x, t, text, image = forward_inputs()
    with torch.no_grad():
        return transformer(x, t, text, image, return_dict=False)[0]


def test_diffusers_layout_loads_the_saved_weights(wan_dirs):
    diffusers_dir, _ = wan_dirs
    assert detect_layout(diffusers_dir) == "diffusers"
    comps = load_wan(diffusers_dir, dtype="float32", device="cpu")
    ref = build_components("tiny", seed=0)
    torch.testing.assert_close(dit_out(comps.transformer), dit_out(ref.transformer), rtol=1e-5, atol=1e-6)
    assert comps.tokenizer("a cat").input_ids[-1] == 1  # </s>
    assert comps.image_encoder.config.image_size == 32


def test_original_layout_goes_through_diffusers_conversion(wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    assert detect_layout(original_dir) == "original"
    comps = load_wan(original_dir, encoders=diffusers_dir, dtype="float32", device="cpu", vae_config=TINY_VAE)
    ref = build_components("tiny", seed=0)
    assert torch.equal(dit_out(comps.transformer), dit_out(ref.transformer))
    ref_vae = ref.vae.state_dict()
    assert all(torch.equal(v, ref_vae[k]) for k, v in comps.vae.state_dict().items())


def test_bf16_loading_keeps_diffusers_fp32_modules(wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    for comps in (load_wan(diffusers_dir, dtype="bfloat16", device="cpu"),
                  load_wan(original_dir, encoders=diffusers_dir, dtype="bfloat16", device="cpu", vae_config=TINY_VAE)):
        tr = comps.transformer
        assert tr.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
        assert tr.blocks[0].scale_shift_table.dtype == torch.float32
        assert tr.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


def test_missing_files_are_named(tmp_path, wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    with pytest.raises(Ex4dError, match="does not exist"):
        load_wan(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Ex4dError, match="neither Wan layout"):
        load_wan(tmp_path / "empty", device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(diffusers_dir, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(Ex4dError, match="missing VAE weights"):
        load_wan(broken, device="cpu")
    shutil.rmtree(broken / "image_encoder")
    shutil.copytree(diffusers_dir / "vae", broken / "vae", dirs_exist_ok=True)
    with pytest.raises(Ex4dError, match="image_encoder"):
        load_wan(broken, device="cpu")
    orig = tmp_path / "orig"
    shutil.copytree(original_dir, orig)
    with pytest.raises(Ex4dError, match="--wan-encoders"):
        load_wan(orig, device="cpu")
    (orig / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(Ex4dError, match="missing weight shards"):
        load_wan(orig, encoders=diffusers_dir, device="cpu", vae_config=TINY_VAE)


def test_full_size_weights_on_cpu_need_force(monkeypatch, wan_dirs):
    diffusers_dir, _ = wan_dirs
    monkeypatch.setattr(loading, "CPU_WEIGHT_LIMIT_BYTES", 1000)  # pretend the tiny DiT is the 14B one
    with pytest.raises(Ex4dError, match="--force-cpu"):
        load_wan(diffusers_dir, device="cpu")
    load_wan(diffusers_dir, device="cpu", force_cpu=True, dtype="float32")


def _single_file_original(tmp_path, original_dir, config: dict | None):
    """An original-layout copy with one unsharded DiT file (and ``config``, None = no config.json)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "single"
    folder.mkdir()
    sd = {}
    for f in sorted(original_dir.glob("diffusion_pytorch_model-*.safetensors")):
        sd.update(load_file(str(f)))
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    shutil.copy(original_dir / "Wan2.1_VAE.pth", folder)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_original_layout_with_one_unsharded_file(tmp_path, wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    folder = _single_file_original(tmp_path, original_dir, {"num_heads": 2})
    comps = load_wan(folder, encoders=diffusers_dir, dtype="float32", device="cpu", vae_config=TINY_VAE)
    ref = build_components("tiny", seed=0)
    assert torch.equal(dit_out(comps.transformer), dit_out(ref.transformer))


def test_original_layout_num_heads_missing_or_bad(tmp_path, wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    folder = _single_file_original(tmp_path, original_dir, {"model_type": "i2v"})  # the tiny DiT is 16 wide
    kw = dict(encoders=diffusers_dir, dtype="float32", device="cpu", vae_config=TINY_VAE)
    with pytest.raises(Ex4dError, match="num_heads"):
        load_wan(folder, **kw)
    (folder / "config.json").unlink()
    with pytest.raises(Ex4dError, match="no config.json"):
        load_wan(folder, **kw)
    for bad, msg in [({"num_heads": 3}, "does not divide"), ({"num_heads": 0}, "positive integer"),
                     ({"num_heads": "2"}, "positive integer")]:
        (folder / "config.json").write_text(json.dumps(bad))
        with pytest.raises(Ex4dError, match=msg):
            load_wan(folder, **kw)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(Ex4dError, match="not readable JSON"):
        load_wan(folder, **kw)


def test_original_heads_default_to_128_wide():
    from ex4d.diffusion.loading import _original_num_heads

    assert _original_num_heads(5120, Path("/nonexistent/config.json")) == 40
    assert _original_num_heads(1536, Path("/nonexistent/config.json")) == 12


def test_broken_shard_index_is_named(tmp_path, wan_dirs):
    diffusers_dir, original_dir = wan_dirs
    orig = tmp_path / "orig"
    shutil.copytree(original_dir, orig)
    (orig / "diffusion_pytorch_model.safetensors.index.json").write_text('{"weight_map": 3}')
    with pytest.raises(Ex4dError, match="not a readable safetensors index"):
        load_wan(orig, encoders=diffusers_dir, device="cpu", vae_config=TINY_VAE)
