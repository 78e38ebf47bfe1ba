"""fp8 matmuls (--fp8-matmul): quantization math, layer replacement, generation in every memory mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _ex4d_tiny import forward_inputs, tiny_config
from torch import nn

from ex4d.diffusion.fp8 import FP8_MAX, Fp8Linear, check_fp8_device, fp8_rows, quantize_blocks_fp8
from ex4d.diffusion.pipeline import Ex4dGenerator
from ex4d.errors import Ex4dError


def test_fp8_rows_scales_each_row_to_the_e4m3_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=g) * torch.tensor([1e-3, 1, 10, 300, 1e4, 0]).view(6, 1)
    q, scale = fp8_rows(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert scale.shape == (6, 1) and scale.dtype == torch.float32
    back = q.float() * scale
    # each nonzero row uses the full range: its largest entry maps to ±448
    assert torch.allclose(q[:5].float().abs().amax(dim=1), torch.full((5,), FP8_MAX))
    # e4m3 keeps 3 mantissa bits: relative error ≤ 2^-4 for entries in the normal range of the row
    big = x.abs() > x.abs().amax(dim=1, keepdim=True) / 64
    assert ((back - x).abs()[big] <= x.abs()[big] / 16 + 1e-12).all()
    assert torch.equal(back[5], torch.zeros(64))  # a zero row stays zero (no division by zero)


def test_fp8_linear_is_the_dequantized_product_and_close_to_the_layer():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(torch.bfloat16)
    fp8 = Fp8Linear.from_linear(lin)
    assert fp8.weight.dtype == torch.float8_e4m3fn and fp8.weight.shape == (48, 64)
    assert fp8.weight_scale.shape == (1, 48) and not any(p.requires_grad for p in fp8.parameters())
    x = torch.randn(2, 7, 64, dtype=torch.bfloat16)
    y = fp8(x)
    assert y.shape == (2, 7, 48) and y.dtype == torch.bfloat16
    qx, sx = fp8_rows(x.reshape(-1, 64))
    ref = (qx.float() * sx) @ (fp8.weight.float() * fp8.weight_scale.T).T + lin.bias.float()
    torch.testing.assert_close(y.reshape(-1, 48).float(), ref, rtol=1e-2, atol=1e-2)
    exact = lin(x).float()
    rel = (y.float() - exact).norm() / exact.norm()
    assert 0 < rel < 0.06  # quantized: close, not equal
    assert Fp8Linear.from_linear(nn.Linear(64, 48, bias=False))(x.float()).dtype == torch.float32


def _block_layers(transformer):
    return [(name, type(m)) for name, m in transformer.blocks.named_modules() if isinstance(m, (nn.Linear, Fp8Linear))]


def test_quantize_blocks_replaces_every_block_linear_and_keeps_the_output_close(components):
    tr = components.transformer
    before = _block_layers(tr)
    x = forward_inputs(batch=2)
    with torch.no_grad():
        ref = tr(*x, return_dict=False)[0]
    n = quantize_blocks_fp8(tr)
    after = _block_layers(tr)
    assert n == len(before) > 0 and [a for a, _ in after] == [b for b, _ in before]
    assert all(kind is Fp8Linear for _, kind in after)
    assert type(tr.proj_out) is nn.Linear  # outside the blocks: unchanged
    assert tr.condition_embedder.time_proj.weight.dtype == torch.float32
    with torch.no_grad():
        out = tr(*x, return_dict=False)[0]
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert out.shape == ref.shape and 0.99 < cos < 1


def test_quantize_keeps_lora_factors_and_sizes_that_do_not_fit(components):
    from ex4d.diffusion.adapter import add_lora

    tr = components.transformer
    add_lora(tr, rank=16, alpha=16.0)  # 16: the LoRA factors would fit the fp8 kernels
    odd = nn.Linear(16, 10)  # N not a multiple of 16: the fp8 kernels refuse it
    tr.blocks[0].extra = odd
    quantize_blocks_fp8(tr)
    q = tr.blocks[0].attn1.to_q
    assert type(q.base_layer) is Fp8Linear and type(q.lora_A["ex4d"]) is nn.Linear
    assert tr.blocks[0].extra is odd


@pytest.mark.parametrize("memory,budget", [("full", None), ("balanced", 1.0), ("low", 1.0)])
def test_generation_with_fp8_matmuls_in_every_memory_mode(memory, budget, adapter, video):
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    bf = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(memory=memory, gpu_budget_gib=budget))
    ref = bf.generate(color, mask, progress=False)
    gen = Ex4dGenerator(build_components("tiny", seed=0), adapter,
                        tiny_config(memory=memory, gpu_budget_gib=budget, fp8_matmul=True))
    tr = gen.components.transformer
    assert type(tr.blocks[0].ffn.net[2]) is Fp8Linear and type(tr.blocks[1].attn2.add_k_proj) is Fp8Linear
    if memory == "low":  # the layers are fp8 already: streamed as they are, no per-layer casting hooks
        reg = getattr(tr.blocks[0].attn1.to_q, "_diffusers_hook", None)
        assert reg is None or reg.get_hook("layerwise_casting") is None
    a = gen.generate(color, mask, progress=False)
    assert a.shape == ref.shape and np.array_equal(a, gen.generate(color, mask, progress=False))
    diff = np.abs(a.astype(float) - ref)
    assert 0 < diff.mean() < 10  # close to the unquantized video, not equal (measured 2.2)


def test_fp8_with_unmerged_lora(adapter, video):
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    merged = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(fp8_matmul=True))
    unmerged = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(fp8_matmul=True, merge_lora=False))
    a, b = (g.generate(color, mask, progress=False) for g in (merged, unmerged))
    assert np.abs(a.astype(float) - b).mean() < 40


def test_fp8_settings_and_devices(monkeypatch):
    with pytest.raises(Ex4dError, match="fp8_matmul must be True or False"):
        tiny_config(fp8_matmul="yes").check()
    tiny_config(memory="low", compile=True, fp8_matmul=True).check()  # no casting hooks inside the graphs
    check_fp8_device("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100")
    with pytest.raises(Ex4dError, match=r"compute capability 8.9 or newer.*A100 has 8.0"):
        check_fp8_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    check_fp8_device("cuda")


def test_generate_cli_passes_the_flag():
    import argparse

    from ex4d.diffusion.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["generate", "--color", "c.mp4", "--mask", "m.mp4", "--wan", "w", "--no-adapter",
                              "--out", "o.mp4", "--fp8-matmul"])
    assert config_from_args(args).fp8_matmul is True


def test_fp8_blocks_compile_without_graph_breaks(video):
    """--compile --fp8-matmul: the quantized blocks trace as whole graphs (eager backend on the CPU), same video.

    Ex4dGenerator(compile=True) quantizes, compiles, then installs the offloading hooks; on the CPU the
    test does the first two itself (plain Wan: no LoRA to merge first).
    """
    from ex4d.diffusion.memory import compile_blocks
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    torch._dynamo.reset()
    cfg = tiny_config(fp8_matmul=True, memory="low", gpu_budget_gib=1.0)
    ref = Ex4dGenerator(build_components("tiny", seed=0), None, cfg).generate(color, mask, progress=False)
    comps = build_components("tiny", seed=0)
    quantize_blocks_fp8(comps.transformer)
    compile_blocks(comps.transformer, backend="eager")
    gen = Ex4dGenerator(comps, None, cfg)  # finds the layers quantized already; streams the blocks
    assert hasattr(gen.components.transformer.blocks[1], "_diffusers_hook")
    counts = torch._dynamo.utils.counters
    counts.clear()
    np.testing.assert_array_equal(gen.generate(color, mask, progress=False), ref)
    assert counts["stats"]["unique_graphs"] >= 1 and not counts["graph_break"]
    torch._dynamo.reset()
