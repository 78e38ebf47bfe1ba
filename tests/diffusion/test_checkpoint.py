"""Adapter checkpoints: the original ex4d.ckpt layout loads into the right modules, mismatches are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ex4d.diffusion.adapter import CamVidEncoder, add_lora, lora_layers
from ex4d.diffusion.checkpoint import (AdapterSpec, apply_adapter_weights, export_original_ckpt, load_adapter,
                                       load_original_ckpt, original_key_shapes, save_adapter_safetensors)
from ex4d.errors import Ex4dError


def original_state_dict(spec: AdapterSpec) -> dict[str, torch.Tensor]:
    """A hand-built original-layout state dict: tensor number k is filled with the value k + 1."""
    return {key: torch.full(shape, float(k + 1)) for k, (key, shape) in enumerate(original_key_shapes(spec).items())}


def value_of(sd: dict[str, torch.Tensor], key: str) -> float:
    return float(sd[key].flatten()[0])


def test_key_list_of_the_14b_adapter():
    shapes = original_key_shapes(AdapterSpec())
    assert len(shapes) == 40 * 10 * 2 + 8
    assert shapes["blocks.39.cross_attn.o.lora_B.default.weight"] == (5120, 16)
    assert shapes["blocks.0.ffn.0.lora_B.default.weight"] == (13824, 16)
    assert shapes["blocks.0.ffn.2.lora_A.default.weight"] == (16, 13824)
    assert shapes["latent_encoder.0.weight"] == (1024, 32, 1, 1, 1)
    assert shapes["latent_patch_embedding.weight"] == (5120, 1024, 1, 2, 2)
    assert not any("k_img" in k or "v_img" in k for k in shapes)


def test_original_layout_lands_in_the_right_modules(tmp_path, components, spec):
    sd = original_state_dict(spec)
    path = tmp_path / "ex4d.ckpt"
    torch.save(sd, path)
    weights = load_original_ckpt(path)
    assert dataclasses.replace(weights.spec, alpha=spec.alpha) == spec and weights.spec.alpha == 16.0
    model, enc = components.transformer, CamVidEncoder(spec.z_dim, spec.hidden, spec.dim)
    add_lora(model, spec.rank, spec.alpha)
    apply_adapter_weights(weights, transformer=model, encoder=enc)
    b1 = model.blocks[1]
    pairs = [
        (b1.attn1.to_q.lora_A["ex4d"].weight, "blocks.1.self_attn.q.lora_A.default.weight"),
        (b1.attn1.to_out[0].lora_B["ex4d"].weight, "blocks.1.self_attn.o.lora_B.default.weight"),
        (b1.attn2.to_k.lora_A["ex4d"].weight, "blocks.1.cross_attn.k.lora_A.default.weight"),
        (b1.attn2.to_v.lora_B["ex4d"].weight, "blocks.1.cross_attn.v.lora_B.default.weight"),
        (b1.attn2.to_out[0].lora_B["ex4d"].weight, "blocks.1.cross_attn.o.lora_B.default.weight"),
        (b1.ffn.net[0].proj.lora_B["ex4d"].weight, "blocks.1.ffn.0.lora_B.default.weight"),
        (b1.ffn.net[2].lora_A["ex4d"].weight, "blocks.1.ffn.2.lora_A.default.weight"),
        (model.blocks[0].attn1.to_k.lora_A["ex4d"].weight, "blocks.0.self_attn.k.lora_A.default.weight"),
        (enc.latent_encoder[4].bias, "latent_encoder.4.bias"),
        (enc.latent_patch_embedding.weight, "latent_patch_embedding.weight"),
    ]
    for param, key in pairs:
        assert torch.all(param == value_of(sd, key)), key
    # every LoRA parameter received exactly its own value: all values distinct and present
    got = sorted({float(layer.lora_A["ex4d"].weight.detach().flatten()[0]) for layer in lora_layers(model).values()}
                 | {float(layer.lora_B["ex4d"].weight.detach().flatten()[0]) for layer in lora_layers(model).values()})
    assert len(got) == 2 * 2 * 10
    assert lora_layers(model)["blocks.0.attn1.to_q"].scaling["ex4d"] == 16.0 / spec.rank


def test_wrapped_state_dict_is_accepted(tmp_path, spec):
    torch.save({"state_dict": original_state_dict(spec)}, tmp_path / "w.ckpt")
    assert load_original_ckpt(tmp_path / "w.ckpt").spec.num_layers == spec.num_layers


def test_mismatches_are_refused_with_a_list(tmp_path, spec):
    sd = original_state_dict(spec)
    del sd["blocks.1.cross_attn.v.lora_A.default.weight"]
    sd["blocks.0.self_attn.k_img.lora_A.default.weight"] = torch.zeros(spec.rank, spec.dim)
    sd["blocks.0.ffn.2.lora_B.default.weight"] = torch.zeros(spec.dim + 1, spec.rank)
    torch.save(sd, tmp_path / "bad.ckpt")
    with pytest.raises(Ex4dError) as e:
        load_original_ckpt(tmp_path / "bad.ckpt")
    msg = str(e.value)
    assert "1 missing: blocks.1.cross_attn.v.lora_A.default.weight" in msg
    assert "unexpected: blocks.0.self_attn.k_img.lora_A.default.weight" in msg
    assert "wrong shape: blocks.0.ffn.2.lora_B.default.weight" in msg


def test_other_layouts_are_refused(tmp_path, spec):
    # a DiffSynth-style key prefix ("dit.") would load nothing in the original: here it is an error
    torch.save({f"dit.{k}": v for k, v in original_state_dict(spec).items()}, tmp_path / "prefixed.ckpt")
    with pytest.raises(Ex4dError, match="missing"):
        load_original_ckpt(tmp_path / "prefixed.ckpt")
    with pytest.raises(Ex4dError, match="does not exist"):
        load_adapter(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(Ex4dError, match="cannot read"):
        load_adapter(tmp_path / "junk.ckpt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(Ex4dError, match="not an ex4d adapter"):
        load_adapter(tmp_path / "other.safetensors")


def test_model_dims_are_checked(tmp_path, spec):
    torch.save(original_state_dict(spec), tmp_path / "a.ckpt")
    with pytest.raises(Ex4dError, match="different model: num_layers 2"):
        load_original_ckpt(tmp_path / "a.ckpt", expected=AdapterSpec())  # the 14B model


def test_safetensors_and_original_round_trips(tmp_path, spec):
    sd = original_state_dict(spec)
    torch.save(sd, tmp_path / "a.ckpt")
    weights = load_adapter(tmp_path / "a.ckpt")
    save_adapter_safetensors(weights, tmp_path / "a.safetensors")
    back = load_adapter(tmp_path / "a.safetensors")
    assert back.spec == weights.spec
    assert back.lora.keys() == weights.lora.keys() and back.encoder.keys() == weights.encoder.keys()
    assert all(torch.equal(back.lora[k], weights.lora[k]) for k in weights.lora)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "ex4d-adapter" and meta["rank"] == str(spec.rank) and meta["num_layers"] == "2"
    export_original_ckpt(back, tmp_path / "b.ckpt")
    again = torch.load(tmp_path / "b.ckpt", weights_only=True)
    assert again.keys() == sd.keys() and all(torch.equal(again[k], sd[k]) for k in sd)
