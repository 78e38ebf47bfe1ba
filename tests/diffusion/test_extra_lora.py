"""``--lora FILE[:SCALE]``: every key layout users have, on hand-built tiny cases with known merged weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ex4d.diffusion.extra_lora import (LoraFile, check_deltas_fit, merge_deltas, parse_lora_arg, read_lora)
from ex4d.errors import Ex4dError

R = 4


def factors(out: int, inp: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, inp, generator=g), torch.randn(out, R, generator=g)


def expect(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    return (w.float() + scale * (b.to(w.dtype).float() @ a.to(w.dtype).float())).to(w.dtype)


def merged(components, tmp_path, tensors, scale=1.0, metadata=None, name="lora.safetensors"):
    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    deltas = read_lora(LoraFile(path, scale))
    tr = components.transformer
    check_deltas_fit(deltas, {k: tuple(v.shape) for k, v in tr.named_parameters()})
    before = {k: v.detach().clone() for k, v in tr.named_parameters()}
    merge_deltas(tr, deltas)
    return before, dict(tr.named_parameters())


def test_diffusers_layout_with_alpha_in_the_metadata(components, tmp_path):
    a, b = factors(16, 16, 0)
    meta = {"lora_adapter_metadata": json.dumps({"r": R, "lora_alpha": 8})}
    before, after = merged(components, tmp_path, {"transformer.blocks.0.attn1.to_q.lora_A.weight": a,
                                                  "transformer.blocks.0.attn1.to_q.lora_B.weight": b}, 0.5, meta)
    key = "blocks.0.attn1.to_q.weight"
    torch.testing.assert_close(after[key], expect(before[key], a, b, 0.5 * 8 / R), rtol=0, atol=0)
    assert torch.equal(after["blocks.1.attn1.to_q.weight"], before["blocks.1.attn1.to_q.weight"])


def test_peft_layout_with_adapter_config(components, tmp_path):
    a, b = factors(32, 16, 1)  # ffn.net.0.proj: 16 → 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": R, "lora_alpha": 2}))
    before, after = merged(components, tmp_path, {"base_model.model.blocks.1.ffn.net.0.proj.lora_A.weight": a,
                                                  "base_model.model.blocks.1.ffn.net.0.proj.lora_B.weight": b},
                           name="adapter_model.safetensors")
    key = "blocks.1.ffn.net.0.proj.weight"
    torch.testing.assert_close(after[key], expect(before[key], a, b, 2 / R), rtol=0, atol=0)


def test_comfyui_layout_original_names_with_and_without_alpha(components, tmp_path):
    a1, b1 = factors(16, 16, 2)
    a2, b2 = factors(16, 16, 3)
    a3, b3 = factors(16, 16, 4)  # k_img: image-context width (16 here) → dim
    before, after = merged(components, tmp_path, {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": a1,
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight": b1,
        "diffusion_model.blocks.1.cross_attn.o.lora_down.weight": a2,
        "diffusion_model.blocks.1.cross_attn.o.lora_up.weight": b2,
        "diffusion_model.blocks.1.cross_attn.o.alpha": torch.tensor(2.0),
        "diffusion_model.blocks.1.cross_attn.k_img.lora_down.weight": a3,
        "diffusion_model.blocks.1.cross_attn.k_img.lora_up.weight": b3,
        "diffusion_model.blocks.1.cross_attn.v_img.lora_down.weight": a3.clone(),
        "diffusion_model.blocks.1.cross_attn.v_img.lora_up.weight": b3.clone(),
    }, 2.0)
    for key, (a, b, s) in {"blocks.0.attn1.to_q.weight": (a1, b1, 2.0),
                           "blocks.1.attn2.to_out.0.weight": (a2, b2, 2.0 * 2.0 / R),
                           "blocks.1.attn2.add_k_proj.weight": (a3, b3, 2.0)}.items():
        torch.testing.assert_close(after[key], expect(before[key], a, b, s), rtol=1e-6, atol=1e-6)


def test_kohya_musubi_layout(components, tmp_path):
    a, b = factors(16, 32, 5)  # ffn.2: 32 → 16
    before, after = merged(components, tmp_path, {"lora_unet_blocks_0_ffn_2.lora_down.weight": a,
                                                  "lora_unet_blocks_0_ffn_2.lora_up.weight": b,
                                                  "lora_unet_blocks_0_ffn_2.alpha": torch.tensor(1.0)})
    key = "blocks.0.ffn.net.2.weight"
    torch.testing.assert_close(after[key], expect(before[key], a, b, 1.0 / R), rtol=1e-6, atol=1e-6)


def test_full_deltas_diff_and_diff_b(components, tmp_path):
    a, b = factors(16, 16, 6)
    g = torch.Generator().manual_seed(7)
    dq, db, dm = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.randn(1, 6, 16, generator=g)
    before, after = merged(components, tmp_path, {
        "diffusion_model.blocks.0.self_attn.v.lora_A.weight": a,
        "diffusion_model.blocks.0.self_attn.v.lora_B.weight": b,
        "diffusion_model.blocks.0.self_attn.norm_q.diff": dq,       # norm weight delta
        "diffusion_model.blocks.0.cross_attn.o.diff_b": db,         # bias delta
        "diffusion_model.blocks.1.diff_m": dm,                      # modulation delta
    }, 0.5)
    torch.testing.assert_close(after["blocks.0.attn1.norm_q.weight"], before["blocks.0.attn1.norm_q.weight"] + 0.5 * dq)
    torch.testing.assert_close(after["blocks.0.attn2.to_out.0.bias"], before["blocks.0.attn2.to_out.0.bias"] + 0.5 * db)
    torch.testing.assert_close(after["blocks.1.scale_shift_table"], before["blocks.1.scale_shift_table"] + 0.5 * dm)
    torch.testing.assert_close(after["blocks.0.attn1.to_v.weight"],
                               expect(before["blocks.0.attn1.to_v.weight"], a, b, 0.5), rtol=1e-6, atol=1e-6)


def test_two_loras_sum_in_float32_and_round_once(components, tmp_path):
    components.transformer.to(torch.bfloat16)
    a1, b1 = factors(16, 16, 8)
    a2, b2 = factors(16, 16, 9)
    save_file({"blocks.0.attn1.to_k.lora_A.weight": a1, "blocks.0.attn1.to_k.lora_B.weight": b1},
              str(tmp_path / "one.safetensors"))
    save_file({"diffusion_model.blocks.0.self_attn.k.lora_A.weight": a2,
               "diffusion_model.blocks.0.self_attn.k.lora_B.weight": b2}, str(tmp_path / "two.safetensors"))
    deltas = read_lora(LoraFile(tmp_path / "one.safetensors", 1.0)).extend(
        read_lora(LoraFile(tmp_path / "two.safetensors", 0.25)))
    w = components.transformer.blocks[0].attn1.to_k.weight
    w0 = w.detach().clone()
    merge_deltas(components.transformer, deltas)
    bf = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
    want = (w0.float() + bf(b1) @ bf(a1) + 0.25 * (bf(b2) @ bf(a2))).to(torch.bfloat16)
    assert torch.equal(w, want)


def test_parse_lora_arg(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"")
    assert parse_lora_arg(str(f)) == LoraFile(f, 1.0)
    assert parse_lora_arg(f"{f}:0.75") == LoraFile(f, 0.75)
    for bad, msg in [(f"{f}:strong", "must be a number"), (f"{f}:nan", "finite"), (str(tmp_path / "no.pt"), "not a file"),
                     (f"{tmp_path}/no.safetensors:1", "not a file")]:
        with pytest.raises(Ex4dError, match=msg):
            parse_lora_arg(bad)


def test_bad_loras_are_refused_with_the_reason(components, tmp_path):
    a, b = factors(16, 16, 10)
    cases = [
        ({"blocks.0.attn1.to_q.lora_A.weight": a}, "needs both"),
        ({"blocks.0.attn1.to_q.lora_A.weight": a * float("nan"), "blocks.0.attn1.to_q.lora_B.weight": b}, "non-finite"),
        ({"blocks.0.attn1.to_q.lora_A.weight": a, "blocks.0.attn1.to_q.lora_B.weight": b,
          "blocks.0.attn1.to_q.dora_scale": b[:, 0].clone()}, "DoRA"),
        ({"blocks.0.attn1.to_q.lora_A.weight": a, "blocks.0.attn1.to_q.lora_B.weight": b,
          "something.else": a.clone()}, "no LoRA layout"),
        ({"blocks.7.attn1.to_q.lora_A.weight": a, "blocks.7.attn1.to_q.lora_B.weight": b}, "no such layer"),
        ({"blocks.0.ffn.net.2.lora_A.weight": a, "blocks.0.ffn.net.2.lora_B.weight": b}, "does not fit"),
    ]
    shapes = {k: tuple(v.shape) for k, v in components.transformer.named_parameters()}
    for i, (tensors, msg) in enumerate(cases):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(Ex4dError, match=msg):
            check_deltas_fit(read_lora(LoraFile(path)), shapes)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(Ex4dError, match="cannot read LoRA"):
        read_lora(LoraFile(tmp_path / "junk.safetensors"))
