"""End-to-end generation on tiny random models: shapes, determinism, equivalences, memory modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _ex4d_tiny import H, T, W, forward_inputs, tiny_config

from ex4d.diffusion.checkpoint import export_original_ckpt
from ex4d.diffusion.encode import vae_encode
from ex4d.diffusion.memory import memory_plan
from ex4d.diffusion.pipeline import Ex4dGenerator, generate_video
from ex4d.errors import Ex4dError


def test_generate_from_files_shape_and_determinism(tmp_path, wan_dirs, adapter, video):
    diffusers_dir, _ = wan_dirs
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    gen = Ex4dGenerator.load(diffusers_dir, tmp_path / "ex4d.ckpt", tiny_config())
    color, mask = video
    a = gen.generate(color, mask, progress=False)
    assert a.shape == (T, H, W, 3) and a.dtype == np.uint8
    b = gen.generate(color, mask, progress=False)
    assert np.array_equal(a, b)
    c = gen.generate(color, mask, tiny_config(seed=1), progress=False)
    assert not np.array_equal(a, c)
    assert gen.injection.calls == 3 * 2  # 2 steps × one batched CFG forward, 3 videos
    d = generate_video(color, mask, diffusers_dir, tmp_path / "ex4d.ckpt", tiny_config(), progress=False)
    assert np.array_equal(a, d)


def test_adapter_matters_and_plain_mode_runs(components, adapter, video):
    color, mask = video
    ours = Ex4dGenerator(components, adapter, tiny_config()).generate(color, mask, progress=False)
    from ex4d.diffusion.random_models import build_components

    plain = Ex4dGenerator(build_components("tiny", seed=0), None, tiny_config()).generate(color, mask, progress=False)
    assert plain.shape == ours.shape and not np.array_equal(plain, ours)


def test_camera_tokens_follow_the_original_formula(components, adapter, video):
    from test_adapter import reference_encoder

    gen = Ex4dGenerator(components, adapter, tiny_config())
    color, mask = video
    from ex4d.diffusion.conditioning import condition_tensors

    cond, mpm = condition_tensors(color, mask, torch.float32)
    vae, dev = components.vae, torch.device("cpu")
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        lat_c = (vae.encode(cond).latent_dist.mean - mean) / std
        lat_m = (vae.encode(mpm * 2 - 1).latent_dist.mean - mean) / std  # mask values {-3, +1}
        ref = reference_encoder(adapter.encoder, lat_c, lat_m)
    assert set(torch.unique(mpm * 2 - 1).tolist()) == {-3.0, 1.0}
    torch.testing.assert_close(gen.camera_tokens(cond, mpm), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vae_encode(vae, cond, dev), lat_c, rtol=1e-5, atol=1e-5)


def test_cfg_batching_matches_separate_forwards(components, adapter, video):
    color, mask = video
    gen = Ex4dGenerator(components, adapter, tiny_config())
    batched = gen.generate(color, mask, progress=False)
    separate = gen.generate(color, mask, tiny_config(cfg_batch=False), progress=False)
    assert np.abs(batched.astype(int) - separate.astype(int)).max() <= 1


def test_merged_and_unmerged_lora_agree(components, adapter, video):
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    merged = Ex4dGenerator(components, adapter, tiny_config()).generate(color, mask, progress=False)
    unmerged = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(merge_lora=False)).generate(
        color, mask, progress=False)
    assert np.abs(merged.astype(int) - unmerged.astype(int)).max() <= 1


@pytest.mark.parametrize("mode,budget", [("balanced", None), ("balanced", 1.0), ("low", None), ("low", 1.0)])
def test_memory_modes_run_on_cpu(mode, budget, adapter, video):
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    full = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config()).generate(color, mask, progress=False)
    gen = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(memory=mode, gpu_budget_gib=budget))
    out = gen.generate(color, mask, progress=False)
    assert out.shape == full.shape and out.dtype == np.uint8
    assert gen.components.vae.use_tiling == (mode == "low")
    hooked = hasattr(gen.components.transformer.blocks[0], "_diffusers_hook")
    assert hooked == (budget is not None)  # the default budgets keep the tiny DiT resident
    tr = gen.components.transformer
    if hooked:  # only blocks are streamed: the embeddings stay on the device, without offloading hooks
        assert not hasattr(tr.condition_embedder, "_diffusers_hook") and not hasattr(tr.patch_embedding, "_diffusers_hook")
    if mode == "low":
        assert gen.components.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
        assert np.abs(out.astype(float) - full).mean() < 40  # fp8 weights: close, not equal
    else:
        assert np.abs(out.astype(int) - full.astype(int)).max() <= 1  # offloading keeps the numerics


def test_balanced_keeps_leading_blocks_resident(components, video):
    from ex4d.diffusion.memory import apply_memory_plan, resident_block_count, streamed_block_indices

    for n in (2, 5, 39, 40):
        for k in range(n + 1):
            idx = streamed_block_indices(n, k)
            assert len(idx) == n - k and len(set(idx)) == n - k and all(0 <= i < n for i in idx)
            assert k == 0 or 0 not in idx  # block 0 stays resident
    assert streamed_block_indices(40, 30) == [3, 7, 10, 14, 18, 21, 25, 29, 32, 36]  # spread out, not the tail
    assert max(len(r) for r in "".join("s" if i in streamed_block_indices(40, 18) else "r"
                                       for i in range(40)).split("r")) <= 2

    x = forward_inputs()
    with torch.no_grad():
        ref = components.transformer(*x, return_dict=False)[0]
    plan = memory_plan("balanced", "cpu", resident_blocks=1)
    apply_memory_plan(plan, components)
    tr = components.transformer
    assert not hasattr(tr.blocks[0], "_diffusers_hook") and hasattr(tr.blocks[1], "_diffusers_hook")  # [1] streamed
    assert len(tr.blocks) == 2
    with torch.no_grad():
        assert torch.equal(tr(*x, return_dict=False)[0], ref)
    assert resident_block_count(tr.blocks, budget_gib=8.0) == 0
    assert resident_block_count(tr.blocks, budget_gib=22.0) == 2


def test_fp8_cast_ahead_matches_diffusers_layerwise_casting():
    """The block-wise fp8 cast picks exactly the layers diffusers' layerwise casting stores in fp8."""
    from ex4d.diffusion.memory import cast_blocks_fp8
    from ex4d.diffusion.random_models import build_components

    fast = build_components("tiny", seed=0).transformer
    n = cast_blocks_fp8(fast, "cpu")
    ref = build_components("tiny", seed=0).transformer
    ref.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    fp8 = {name for name, p in ref.named_parameters() if p.dtype == torch.float8_e4m3fn and name.startswith("blocks.")}
    assert fp8 and {name for name, p in fast.named_parameters() if p.dtype == torch.float8_e4m3fn} == fp8
    assert n == len({name.rsplit(".", 1)[0] for name in fp8})
    assert all(p.dtype == torch.float32 for name, p in fast.named_parameters() if not name.startswith("blocks."))
    fast.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    x = forward_inputs()
    with torch.no_grad():
        torch.testing.assert_close(fast(*x, return_dict=False)[0], ref(*x, return_dict=False)[0], rtol=0, atol=0)


@pytest.mark.parametrize("memory", ["full", "balanced"])
def test_compiled_blocks_run_inside_offloading_and_cache_hooks(adapter, video, memory):
    """compile_blocks before the hooks: same video, hooks outside the graphs (eager backend on the CPU)."""
    from ex4d.diffusion.memory import compile_blocks
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    torch._dynamo.reset()
    base = dict(steps=3, memory=memory, gpu_budget_gib=1.0 if memory == "balanced" else None,
                step_cache="first-block", step_cache_threshold=0.0)
    ref = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(**base)).generate(color, mask,
                                                                                                   progress=False)
    comps = build_components("tiny", seed=0)
    compile_blocks(comps.transformer, backend="eager")
    gen = Ex4dGenerator(comps, adapter, tiny_config(**base))
    assert memory == "full" or hasattr(gen.components.transformer.blocks[1], "_diffusers_hook")
    counts = torch._dynamo.utils.counters
    counts.clear()
    out = gen.generate(color, mask, progress=False)
    np.testing.assert_array_equal(out, ref)
    assert counts["stats"]["unique_graphs"] >= 1 and not counts["graph_break"]
    torch._dynamo.reset()


def test_user_errors(components, adapter, video):
    color, mask = video
    gen = Ex4dGenerator(components, adapter, tiny_config())
    with pytest.raises(Ex4dError, match="4k\\+1"):
        gen.generate(color[:4], mask[:4], progress=False)
    assert gen.generate(color[:4], mask[:4], tiny_config(frames="pad"), progress=False).shape[0] == 4
    with pytest.raises(Ex4dError, match="multiple of 16"):
        gen.generate(color[:, :24], mask[:, :24], progress=False)
    with pytest.raises(Ex4dError, match="fixed when the models load"):
        gen.generate(color, mask, tiny_config(memory="low"), progress=False)
    with pytest.raises(Ex4dError, match="4k\\+1"):  # before any weights are read
        generate_video(color[:4], mask[:4], "/nonexistent", None, tiny_config())


def _block_calls(gen) -> list:
    calls = []
    # inside the block: the cache still calls the block module, but skips its layers
    gen.components.transformer.blocks[-1].ffn.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_first_block_cache_skips_steps_and_threshold_zero_is_exact(adapter, video, cfg_batch):
    from ex4d.diffusion.random_models import build_components

    color, mask = video
    base = dict(steps=4, cfg_batch=cfg_batch)
    plain = Ex4dGenerator(build_components("tiny", seed=0), adapter, tiny_config(**base))
    ref = plain.generate(color, mask, progress=False)

    exact = Ex4dGenerator(build_components("tiny", seed=0), adapter,
                          tiny_config(**base, step_cache="first-block", step_cache_threshold=0.0))
    calls = _block_calls(exact)
    np.testing.assert_array_equal(exact.generate(color, mask, progress=False), ref)
    assert len(calls) == 4 * (1 if cfg_batch else 2)  # every step ran the last block

    skipping = Ex4dGenerator(build_components("tiny", seed=0), adapter,
                             tiny_config(**base, step_cache="first-block", step_cache_threshold=1e9))
    calls = _block_calls(skipping)
    a = skipping.generate(color, mask, progress=False)
    assert len(calls) == 1 * (1 if cfg_batch else 2)  # only the first step ran past block 0
    assert not np.array_equal(a, ref)
    b = skipping.generate(color, mask, progress=False)  # the cache is reset between videos
    assert np.array_equal(a, b) and len(calls) == 2 * (1 if cfg_batch else 2)


def test_step_cache_settings_are_checked():
    with pytest.raises(Ex4dError, match="step_cache must be one of"):
        tiny_config(step_cache="magic").check()
    with pytest.raises(Ex4dError, match="step_cache_threshold"):
        tiny_config(step_cache="first-block", step_cache_threshold=-1).check()
    tiny_config(step_cache="first-block", compile=True).check()  # hooks wrap the compiled blocks
    with pytest.raises(Ex4dError, match=r"--compile\) does not work with memory 'low'"):
        tiny_config(memory="low", compile=True).check()

