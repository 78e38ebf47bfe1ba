"""Multi-process generation on CPU (gloo): diffusers' Ulysses context parallelism with the EX-4D hook, job splitting.

The context-parallel test spawns 2 processes (gloo, a file store: no port),
each with the tiny random Wan + adapter; it compares, on every rank, the
context-parallel video with the same rank's single-process video, and what
``blocks.0`` receives with :func:`shard_sequence` of the single-process
sequence (patch tokens + camera tokens). Ring attention is not run here:
diffusers' CPU-capable ``native`` (SDPA) backend has no log-sum-exp output,
which ring attention needs (its LSE backends are CUDA/flash kernels).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ex4d.diffusion.parallel import (NO_MULTICAST_ENV, check_cp_degrees, check_injection_before_split,
                                     injected_sequence, job_indices, sequence_length, shard_sequence, split_jobs)
from ex4d.errors import Ex4dError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# ---------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("n,world", [(0, 1), (1, 4), (7, 3), (8, 8), (13, 2), (5, 8)])
def test_job_split_covers_every_job_once_and_balances(n, world):
    parts = [job_indices(n, r, world) for r in range(world)]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    jobs = [f"job{i}" for i in range(n)]
    assert [split_jobs(jobs, r, world) for r in range(world)] == [[jobs[i] for i in p] for p in parts]


def test_job_split_is_strided_and_checks_arguments():
    assert job_indices(7, 1, 3) == [1, 4]
    for bad in [(3, 3, 3), (3, -1, 3), (3, 0, 0), (-1, 0, 1)]:
        with pytest.raises(Ex4dError):
            job_indices(*bad)


def test_sequence_length_and_shard_mirror_diffusers():
    assert sequence_length(49, 512, 512) == 13_312
    assert all(13_312 % n == 0 for n in (2, 4, 8))
    x = torch.arange(2 * 12 * 3).reshape(2, 12, 3)
    parts = [shard_sequence(x, r, 4) for r in range(4)]
    assert torch.equal(torch.cat(parts, dim=1), x)
    from diffusers.hooks.context_parallel import EquipartitionSharder  # noqa: F401  (the cut we mirror)

    with pytest.raises(Ex4dError):
        shard_sequence(x, 0, 5)


def test_injected_sequence_is_the_hooked_model_input(components, adapter):
    """The flattened patch+camera tokens equal what the hooked DiT feeds blocks.0 (single process)."""
    from _ex4d_tiny import forward_inputs

    from ex4d.diffusion.adapter import TokenInjection

    tr = components.transformer
    inj = TokenInjection(tr)
    x, t, txt, img = forward_inputs(1)
    tokens = torch.randn(1, tr.config.num_attention_heads * tr.config.attention_head_dim, 2, 2, 3)
    seen = {}
    tr.blocks[0].norm1.register_forward_pre_hook(lambda m, a: seen.setdefault("h", a[0].clone()))
    with torch.no_grad(), inj.conditioning(tokens):
        tr(x, t, txt, encoder_hidden_states_image=img, return_dict=False)
        raw = torch.nn.functional.conv3d(x, tr.patch_embedding.weight, tr.patch_embedding.bias, stride=(1, 2, 2))
    assert torch.allclose(seen["h"], injected_sequence(raw, tokens), atol=1e-6)


def test_plan_check_accepts_diffusers_wan_and_refuses_an_early_split(components):
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    tr = components.transformer
    check_injection_before_split(tr)  # diffusers' own Wan plan: split at blocks.0
    early = {"": {"hidden_states": ContextParallelInput(split_dim=2, expected_dims=5)},
             "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
             "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}
    with pytest.raises(Ex4dError, match="before patch_embedding"):
        check_injection_before_split(tr, early)
    with pytest.raises(Ex4dError, match="patch_embedding"):
        check_injection_before_split(tr, {"patch_embedding": ContextParallelOutput(gather_dim=1, expected_dims=3)})


def test_cp_degree_checks(components):
    tr = components.transformer  # 2 heads
    check_cp_degrees(tr, 2, 1, 2, seq_len=12)
    with pytest.raises(Ex4dError, match="divide the 2 attention heads"):
        check_cp_degrees(tr, 4, 1, 4)
    with pytest.raises(Ex4dError, match="must equal the number of processes"):
        check_cp_degrees(tr, 2, 1, 4)
    with pytest.raises(Ex4dError, match="not divisible"):
        check_cp_degrees(tr, 2, 1, 2, seq_len=13)
    with pytest.raises(Ex4dError, match="log-sum-exp"):
        check_cp_degrees(tr, 1, 2, 2, attention_backend="native")
    check_cp_degrees(tr, 1, 2, 2, attention_backend="_native_cudnn")


def test_jobs_file_and_parser(tmp_path):
    from ex4d.diffusion.parallel_cli import build_parser, read_jobs

    (tmp_path / "jobs.txt").write_text("# color mask out\na/c.mp4 a/m.mp4 o/a.mp4\n\nb/c.mp4 b/m.mp4 o/b.mp4\n")
    jobs = read_jobs(tmp_path / "jobs.txt")
    assert jobs == [{"color": "a/c.mp4", "mask": "a/m.mp4", "out": "o/a.mp4"},
                    {"color": "b/c.mp4", "mask": "b/m.mp4", "out": "o/b.mp4"}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    assert read_jobs(tmp_path / "jobs.json") == jobs
    (tmp_path / "dup.json").write_text(json.dumps([jobs[0], jobs[0]]))
    with pytest.raises(Ex4dError, match="same output"):
        read_jobs(tmp_path / "dup.json")
    args = build_parser().parse_args(["--jobs", "j.json", "--wan", "w", "--adapter", "a.ckpt", "--ulysses", "2"])
    from ex4d.diffusion.cli import config_from_args

    assert args.jobs == "j.json" and args.ulysses == 2 and args.ring == 1 and config_from_args(args).steps == 25


def test_no_multicast_env_values():
    assert NO_MULTICAST_ENV == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                "NVSHMEM_DISABLE_NVLS": "1"}


# ---------------------------------------------------------------------------------------------- 2 processes


def _tiny_video():
    from _ex4d_tiny import H, T, W

    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    mask = np.zeros((T, H, W), bool)
    mask[:, :, : W // 2 + 4] = True
    mask[0] = True
    color[~mask] = 0
    return color, mask


def _cp_worker(rank: int, world: int, tmp: str) -> None:
    sys.path.insert(0, str(HERE))
    os.environ.update(NO_MULTICAST_ENV)
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        from _ex4d_tiny import tiny_config
        from diffusers.utils import logging as dlog

        from ex4d.diffusion.parallel import enable_generator_context_parallel, init_distributed
        from ex4d.diffusion.pipeline import Ex4dGenerator, model_spec
        from ex4d.diffusion.random_models import build_components, random_adapter

        dlog.set_verbosity_error()
        info = init_distributed()  # reuses the group
        assert (info.rank, info.world_size) == (rank, world)
        comps = build_components("tiny", seed=0)
        spec = dataclasses.replace(model_spec(comps), hidden=16, rank=4, alpha=4.0)
        gen = Ex4dGenerator(comps, random_adapter(spec, seed=1, scale=0.1), tiny_config())
        tr = gen.components.transformer
        seen: dict[str, list] = {"block0": [], "patch": [], "tokens": []}

        def pre_norm(m, a):
            seen["block0"].append(a[0].detach().clone())

        def patch_out(m, a, out):  # registered after TokenInjection: sees the injected, full-size output
            seen["patch"].append(tuple(out.shape))
            seen["tokens"].append(gen.injection.tokens.detach().clone())

        tr.blocks[0].norm1.register_forward_pre_hook(pre_norm)
        tr.patch_embedding.register_forward_hook(patch_out)
        color, mask = _tiny_video()
        ref = gen.generate(color, mask, progress=False)
        ref_seen = {k: list(v) for k, v in seen.items()}
        for v in seen.values():
            v.clear()
        enable_generator_context_parallel(gen)  # ulysses = 2
        out = gen.generate(color, mask, progress=False)
        torch.save({"ref": ref, "out": out, "ref_seen": ref_seen, "cp_seen": seen,
                    "calls": gen.injection.calls}, f"{tmp}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while another still has collectives in flight
    finally:
        dist.destroy_process_group()


def test_context_parallel_matches_single_process_and_splits_injected_tokens(tmp_path):
    """2 gloo processes, Ulysses 2: same video as one process; each rank's blocks.0 input = its shard of
    (patch tokens + camera tokens)."""
    import torch.multiprocessing as mp

    world = 2
    mp.start_processes(_cp_worker, args=(world, str(tmp_path)), nprocs=world, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for rank, res in enumerate(results):
        ref, out = res["ref"], res["out"]
        assert out.shape == ref.shape
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (rank, diff.max(), diff.mean())
        assert np.array_equal(out, results[0]["out"])  # every rank holds the same video
        rs, cs = res["ref_seen"], res["cp_seen"]
        n = len(rs["block0"])
        assert n == len(cs["block0"]) == 2  # 2 steps, batched CFG
        assert res["calls"] == 2 * n
        for i in range(n):
            # the hook sees the full patch output in CP mode too (the split comes after it)
            assert cs["patch"][i] == rs["patch"][i] and cs["patch"][i][2:] == (2, 2, 3)
            full = rs["block0"][i]  # [2, 12, D] single process
            assert cs["block0"][i].shape[1] == full.shape[1] // world
            assert torch.allclose(cs["block0"][i], shard_sequence(full, rank, world), atol=1e-5)
            assert torch.equal(cs["tokens"][i], rs["tokens"][i]) and cs["tokens"][i].abs().max() > 0


def test_bench_tiny_under_torchrun(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "bench" / "bench_parallel.py"), "--tiny", "--gpus", "1,2", "--steps", "2",
           "--json", str(tmp_path / "bench.json")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [row["gpus"] for row in rows] == [1, 2]
    assert rows[1]["max_abs_diff"] < 1e-4 and rows[1]["step_s"] > 0 and 0 < rows[1]["efficiency"]


def test_context_parallel_refuses_a_step_cache(components, adapter):
    from _ex4d_tiny import tiny_config

    from ex4d.diffusion.parallel import enable_generator_context_parallel
    from ex4d.diffusion.pipeline import Ex4dGenerator

    gen = Ex4dGenerator(components, adapter, tiny_config(step_cache="first-block"))
    with pytest.raises(Ex4dError, match="step cache"):
        enable_generator_context_parallel(gen)


def test_jobs_under_torchrun_end_to_end(tmp_path, wan_dirs, adapter, video):
    """``torchrun -m ex4d.diffusion.parallel --jobs``: each rank writes its videos, the run exits 0; a bad
    input exits 2 with the message."""
    from ex4d.diffusion.checkpoint import export_original_ckpt
    from ex4d.io.video import read_video, write_video

    diffusers_dir, _ = wan_dirs
    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    color, mask = video
    write_video(tmp_path / "c.mp4", color, 10.0, lossless=True)
    write_video(tmp_path / "m.mp4", mask, 10.0)
    jobs = [{"color": str(tmp_path / "c.mp4"), "mask": str(tmp_path / "m.mp4"), "out": str(tmp_path / f"o{i}.mp4")}
            for i in range(3)]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def torchrun(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "ex4d.diffusion.parallel", "--wan", str(diffusers_dir), "--adapter", str(tmp_path / "ex4d.ckpt"),
               "--device", "cpu", "--dtype", "float32", "--steps", "1", "-q", *argv]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    r = torchrun("--jobs", str(tmp_path / "jobs.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    for job in jobs:
        assert read_video(job["out"], num_frames=None, max_res=4096, multiple=1).frames.shape == color.shape
    assert sorted(json.loads(Path(j["out"]).with_suffix(".generate.json").read_text())["rank"]
                  for j in jobs) == [0, 0, 1]
    bad = torchrun("--color", str(tmp_path / "c.mp4"), "--mask", str(tmp_path / "m.mp4"), "--out",
                   str(tmp_path / "x.mp4"), "--num-frames", "4")
    assert bad.returncode != 0 and "4k+1" in bad.stderr and not (tmp_path / "x.mp4").exists()
