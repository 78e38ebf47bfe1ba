"""Benchmark of generation on several GPUs: one denoising step of the DiT, context parallel over N GPUs.

Run under ``torchrun`` with one process per GPU. Every run measures, in the same process group:

* 1 GPU — rank 0 alone, the plain single-GPU path (the baseline), while the other ranks wait;
* N GPUs — all ranks, diffusers' context parallelism (Ulysses by default; ``--ring`` for ring attention).

and prints seconds per step (CFG as one batch of 2, adapter hook on, LoRA merged), speed-up, scaling
efficiency (speed-up / N; goals ≥ 0.85 at 2 GPUs, ≥ 0.7 at 4) and the largest difference between the
N-GPU and the 1-GPU output of the same forward (bf16 tolerance). The table over 1, 2, 4, 8 GPUs is three runs::

    for n in 2 4 8; do
      torchrun --nproc-per-node $n bench/bench_parallel.py --json bench_parallel_$n.json
    done
    torchrun --nproc-per-node 2 bench/bench_parallel.py --tiny      # CPU smoke run (gloo, tiny models)

Random-initialised weights of the real size (Wan2.1-I2V-14B-480P DiT), built on each GPU from the same
seed, input 49×512×512 (13,312 tokens). NVLink multicast stays off (set before the process group starts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

GIB = 1024**3


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models on the CPU, gloo (a smoke run)")
    p.add_argument("--gpus", default=None, help="rows to measure: 1 and/or the world size (default: both)")
    p.add_argument("--ulysses", type=int, default=None, help="Ulysses degree (default: world size / ring)")
    p.add_argument("--ring", type=int, default=1, help="ring-attention degree (default 1)")
    p.add_argument("--attention", default=None,
                   help="diffusers attention backend (default: native; _native_cudnn with --ring > 1)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (default 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--json", help="write the results here (rank 0)")
    args = p.parse_args(argv)

    from ex4d.diffusion.parallel import enable_generator_context_parallel, init_distributed, set_no_multicast_env

    set_no_multicast_env()
    info = init_distributed("gloo" if args.tiny else None, device="cpu" if args.tiny else "auto")
    world, rank = info.world_size, info.rank
    if args.tiny:
        args.frames, args.height, args.width = 5, 32, 48
        torch.set_num_threads(1)
    gpus = sorted({int(g) for g in (args.gpus or f"1,{world}").split(",") if g})
    bad = [g for g in gpus if g not in (1, world)]
    if bad:
        raise SystemExit(f"--gpus {bad}: each run measures 1 GPU and all {world} processes; "
                         f"launch torchrun with --nproc-per-node {bad[0]} for that row")

    import torch.distributed as dist
    from bench_generate import adapter_for, dit_forward, dit_inputs, peak_gib, reset_peak, sync
    from diffusers.utils import logging as dlog

    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.pipeline import Ex4dGenerator
    from ex4d.diffusion.random_models import build_components

    dlog.set_verbosity_error()
    device = torch.device(info.device)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    comps = build_components("tiny" if args.tiny else "full", device=device, dtype=dtype, seed=0)
    adapter = adapter_for(comps, args)
    backend = args.attention or ("_native_cudnn" if args.ring > 1 and not args.tiny else "native")
    cfg = GenerateConfig(dtype="float32" if args.tiny else "bfloat16", device=str(device), attention_backend=backend)
    gen = Ex4dGenerator(comps, adapter, cfg)  # memory full, LoRA merged, hook on
    tr = gen.components.transformer
    inputs = dit_inputs(comps, args.frames, args.height, args.width, device, dtype, 2)
    x = inputs[0]
    D = tr.config.num_attention_heads * tr.config.attention_head_dim
    g = torch.Generator(device).manual_seed(1)
    tokens = (torch.randn((1, D, x.shape[2], x.shape[3] // 2, x.shape[4] // 2), generator=g, device=device)
              * 0.01).to(dtype)
    n_tokens = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    if rank == 0:
        print(f"{world} processes on {'cpu' if device.type == 'cpu' else torch.cuda.get_device_name(device)}, "
              f"{n_tokens} tokens, models built in {time.perf_counter() - t0:.1f} s", flush=True)

    def time_steps() -> float:
        for _ in range(args.warmup):
            dit_forward(tr, inputs)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            dit_forward(tr, inputs)
        sync(device)
        return (time.perf_counter() - start) / args.steps

    rows: list[dict] = []
    ref = None
    with gen.injection.conditioning(tokens):
        if 1 in gpus:
            if rank == 0:
                reset_peak(device)
                s = time_steps()
                ref = dit_forward(tr, inputs).float()
                rows.append({"gpus": 1, "step_s": s, "speedup": 1.0, "efficiency": 1.0,
                             "peak_gib": peak_gib(device), "max_abs_diff": 0.0})
                print(f"  1 GPU: {s:.3f} s / step", flush=True)
            dist.barrier()
        if world in gpus and world > 1:
            enable_generator_context_parallel(gen, args.ulysses, args.ring, None if backend == "native" else backend)
            reset_peak(device)
            s = time_steps()
            out = dit_forward(tr, inputs).float()
            times = [None] * world
            dist.all_gather_object(times, s)
            if rank == 0:
                step = max(times)  # the step ends when the slowest rank ends
                row = {"gpus": world, "ulysses": args.ulysses or world // args.ring, "ring": args.ring,
                       "step_s": step, "peak_gib": peak_gib(device)}
                base = rows[0]["step_s"] if rows else None
                if base:
                    row.update(speedup=base / step, efficiency=base / step / world)
                if ref is not None:
                    row["max_abs_diff"] = float((out - ref).abs().max())
                    row["rel_l2"] = float((out - ref).norm() / ref.norm().clamp_min(1e-12))
                rows.append(row)
                print(f"  {world} GPUs: {step:.3f} s / step", flush=True)

    result = {"machine": platform.node(), "device": "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "world_size": world,
              "tokens": n_tokens, "frames": args.frames, "height": args.height, "width": args.width,
              "attention": backend, "steps": args.steps, "rows": rows}
    if rank == 0:
        print(f"\nDiT step (CFG batch 2), {n_tokens} tokens, attention {backend}")
        print("| GPUs | s / step | speed-up | efficiency | peak GiB / GPU | max |Δ| vs 1 GPU |")
        print("|------|----------|----------|------------|----------------|------------------|")
        for r in rows:
            eff = f"{r['efficiency']:.2f}" if "efficiency" in r else "-"
            spd = f"{r['speedup']:.2f}×" if "speedup" in r else "-"
            pk = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
            dif = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else "-"
            print(f"| {r['gpus']:4d} | {r['step_s']:8.3f} | {spd:>8s} | {eff:>10s} | {pk:>14s} | {dif:>16s} |")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from ex4d.diffusion.parallel import end_worker

    main()
    end_worker(0)  # barrier, then exit without tearing gloo down (see end_worker)
