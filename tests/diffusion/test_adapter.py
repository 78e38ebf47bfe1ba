"""The EX-4D adapter parts on a tiny diffusers Wan DiT: encoder formula, token injection, LoRA layers, merging."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _ex4d_tiny import forward_inputs

from ex4d.diffusion.adapter import (LORA_TARGETS, ORIGINAL_TO_DIFFUSERS, CamVidEncoder, TokenInjection, add_lora,
                                    lora_layers, merge_lora)
from ex4d.diffusion.checkpoint import apply_adapter_weights
from ex4d.diffusion.random_models import random_adapter


def reference_encoder(sd: dict[str, torch.Tensor], video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The original CamVidEncoder formula written out with einsum (no Conv3d)."""

    def pointwise(x, w, b):  # 1×1×1 conv = channel matmul
        return torch.einsum("bcthw,oc->bothw", x, w[:, :, 0, 0, 0]) + b[None, :, None, None, None]

    x = torch.cat([video, mask], dim=1)
    x = F.silu(pointwise(x, sd["latent_encoder.0.weight"], sd["latent_encoder.0.bias"]))
    x = F.silu(pointwise(x, sd["latent_encoder.2.weight"], sd["latent_encoder.2.bias"]))
    x = pointwise(x, sd["latent_encoder.4.weight"], sd["latent_encoder.4.bias"])
    b, c, t, h, w = x.shape
    patches = x.reshape(b, c, t, h // 2, 2, w // 2, 2)  # [B, C, T, h/2, ky, w/2, kx]
    wp = sd["latent_patch_embedding.weight"][:, :, 0]  # [D, C, ky, kx]
    out = torch.einsum("bctiyjx,ocyx->botij", patches, wp)
    return out + sd["latent_patch_embedding.bias"][None, :, None, None, None]


def test_encoder_matches_reference_formula(spec):
    weights = random_adapter(spec, seed=3, scale=0.3)
    enc = CamVidEncoder(spec.z_dim, spec.hidden, spec.dim)
    apply_adapter_weights(weights, encoder=enc)
    g = torch.Generator().manual_seed(0)
    video, mask = torch.randn(2, 16, 3, 4, 6, generator=g), torch.randn(2, 16, 3, 4, 6, generator=g)
    out = enc(video, mask)
    assert out.shape == (2, spec.dim, 3, 2, 3)
    torch.testing.assert_close(out, reference_encoder(weights.encoder, video, mask), rtol=1e-5, atol=1e-6)


def test_fresh_encoder_outputs_zero_and_names_match_original():
    enc = CamVidEncoder(16, 8, 12)
    out = enc(torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4))
    assert torch.count_nonzero(out) == 0
    assert sorted(enc.state_dict()) == sorted(
        f"{m}.{p}" for m in ("latent_encoder.0", "latent_encoder.2", "latent_encoder.4", "latent_patch_embedding")
        for p in ("weight", "bias"))


def test_zero_output_adapter_equals_plain_model_exactly(components, spec):
    plain = components.transformer
    model = copy.deepcopy(plain)
    weights = random_adapter(spec, seed=5, zero_output=True)  # random MLP and LoRA A, zero patch conv and LoRA B
    enc = CamVidEncoder(spec.z_dim, spec.hidden, spec.dim)
    apply_adapter_weights(weights, encoder=enc)
    add_lora(model, spec.rank, spec.alpha)
    apply_adapter_weights(weights, transformer=model)
    inj = TokenInjection(model)
    x, t, text, image = forward_inputs()
    tokens = enc(torch.randn(1, 16, 2, 4, 6), torch.randn(1, 16, 2, 4, 6))
    with torch.no_grad(), inj.conditioning(tokens):
        ours = model(x, t, text, image, return_dict=False)[0]
    with torch.no_grad():
        ref = plain(x, t, text, image, return_dict=False)[0]
    assert torch.equal(ours, ref)
    assert inj.calls == 1


def test_hook_fires_once_per_forward_and_needs_tokens(components):
    model = components.transformer
    inj = TokenInjection(model)
    x, t, text, image = forward_inputs(batch=2)
    tokens = torch.randn(1, 16, 2, 2, 3)
    with torch.no_grad():
        with inj.conditioning(tokens):
            model(x, t, text, image)
            assert inj.calls == 1
            model(x[:1], t[:1], text[:1], image[:1])
            assert inj.calls == 2
        with pytest.raises(RuntimeError, match="without conditioning tokens"):
            model(x, t, text, image)
        inj.remove()
        model(x, t, text, image)  # plain again
    assert inj.calls == 2


def test_tokens_change_output_and_are_shared_by_the_cfg_batch(components):
    model = components.transformer
    inj = TokenInjection(model)
    x, t, text, image = forward_inputs(batch=1)
    tokens = torch.randn(1, 16, 2, 2, 3)
    two = (x.expand(2, -1, -1, -1, -1), t.expand(2), torch.cat([text, torch.randn_like(text)]), image.expand(2, -1, -1))
    with torch.no_grad():
        with inj.conditioning(torch.zeros_like(tokens)):
            base = model(x, t, text, image, return_dict=False)[0]
        with inj.conditioning(tokens):
            single = model(x, t, text, image, return_dict=False)[0]
            batched = model(*two, return_dict=False)[0]
    assert (single - base).abs().max() > 1e-3  # the tokens do reach the blocks
    torch.testing.assert_close(batched[:1], single, rtol=1e-5, atol=1e-5)  # branch 0 got the same tokens


def test_lora_layer_names_match_diffusers_wan_conversion(components):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    fake = {f"blocks.0.{orig}.weight": torch.zeros(1) for orig in ORIGINAL_TO_DIFFUSERS}
    fake.update({"blocks.0.cross_attn.k_img.weight": torch.zeros(1), "blocks.0.cross_attn.v_img.weight": torch.zeros(1)})
    converted = convert_wan_transformer_to_diffusers(dict(fake))
    for orig, ours in ORIGINAL_TO_DIFFUSERS.items():
        assert f"blocks.0.{ours}.weight" in converted, (orig, ours, sorted(converted))
    assert "blocks.0.attn2.add_k_proj.weight" in converted  # k_img is add_k_proj, which we do not target

    model = components.transformer
    add_lora(model, rank=4, alpha=4.0)
    names = set(lora_layers(model))
    expected = {f"blocks.{i}.{t}" for i in range(2) for t in LORA_TARGETS}
    assert names == expected
    assert not any("add_k_proj" in n or "add_v_proj" in n for n in names)


def test_merged_lora_equals_unmerged(components, spec):
    model = components.transformer
    plain = copy.deepcopy(model)
    weights = random_adapter(spec, seed=7, scale=0.2)
    add_lora(model, spec.rank, spec.alpha)
    apply_adapter_weights(weights, transformer=model)
    x, t, text, image = forward_inputs()
    with torch.no_grad():
        unmerged = model(x, t, text, image, return_dict=False)[0]
        n = merge_lora(model)
        merged = model(x, t, text, image, return_dict=False)[0]
    assert n == 2 * len(LORA_TARGETS)
    assert not lora_layers(model)
    assert isinstance(model.blocks[0].attn1.to_q, torch.nn.Linear)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        base = plain(x, t, text, image, return_dict=False)[0]
    assert (merged - base).abs().max() > 1e-3  # the LoRA does change the model
