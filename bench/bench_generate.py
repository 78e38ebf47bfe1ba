"""Benchmark of ``ex4d generate``: one DiT forward, per-step time, a whole video, peak GPU memory per memory mode.

Random-initialised weights of the real sizes (Wan2.1-I2V-14B-480P DiT, UMT5-XXL, CLIP ViT-H/14, Wan VAE),
built directly on the GPU in bf16; input 49×512×512 (13,312 DiT tokens). The baseline is plain diffusers,
measured in the same run: ``WanTransformer3DModel`` forward at batch 1 with the default attention (two per
step for CFG), and ``WanImageToVideoPipeline`` for a whole video.

    python bench/bench_generate.py --json bench.json                 # GPU: DiT section + full-mode video
    python bench/bench_generate.py --sections modes --modes full+compile,balanced+compile,low --e2e-steps 4
    python bench/bench_generate.py --sections dit --compile --fp8 --profile     # fp8 matmuls + kernel profiles
    python bench/bench_generate.py --tiny --json /tmp/b.json           # CPU smoke run with tiny models

Sections: ``dit`` (forward variants; with ``--fp8`` then the same DiT quantized for ``--fp8-matmul``, and with
``--profile`` the kernel time of one forward by kind), ``e2e`` (baseline pipeline + ours in full mode), ``modes``
(ours in the modes named by --modes, each ``MODE[+compile][+fp8]``; with --e2e-steps < --steps the video time is
extrapolated as other stages + steps × measured per-step time, and marked so), ``cache`` (step cache thresholds,
and with ``--fp8`` fp8 videos, each against the bf16 video on the same seed), ``floor`` (attention and linear
layers of one block alone, bf16 and fp8), ``attn`` (attention backends).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GIB = 1024**3


# --------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def peak_reserved_gib(device: torch.device) -> float | None:
    """Peak memory held by PyTorch's caching allocator (what nvidia-smi shows, less the CUDA context)."""
    return torch.cuda.max_memory_reserved(device) / GIB if device.type == "cuda" else None


def timeit(fn, device: torch.device, warmup: int = 1, iters: int = 3) -> float:
    """Mean seconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def dit_inputs(comps, frames: int, height: int, width: int, device, dtype, batch: int):
    """Random DiT inputs for a ``frames``×``height``×``width`` video: x [B,36,T',h,w], t [B], text, image."""
    cfg = comps.transformer.config
    g = torch.Generator(device).manual_seed(0)
    t_lat, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    n_img = (comps.image_encoder.config.image_size // comps.image_encoder.config.patch_size) ** 2 + 1
    x = torch.randn(1, cfg.in_channels, t_lat, h, w, generator=g, device=device).to(dtype)
    text = torch.randn(1, 512, cfg.text_dim, generator=g, device=device).to(dtype)
    image = torch.randn(1, n_img, cfg.image_dim, generator=g, device=device).to(dtype)
    t = torch.full((1,), 500.0, device=device)
    exp = lambda a: a.expand(batch, *a.shape[1:])  # noqa: E731
    return exp(x), t.expand(batch), exp(text), exp(image)


def camera_tokens(transformer, x: torch.Tensor, device, dtype) -> torch.Tensor:
    """Small random adapter tokens [1, D, T', h/2, w/2] for DiT input ``x`` [B, 36, T', h, w]."""
    cfg = transformer.config
    shape = (1, cfg.num_attention_heads * cfg.attention_head_dim, x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
    return torch.randn(shape, device=device, dtype=dtype) * 0.01


def dit_forward(model, inputs):
    with torch.no_grad():
        return model(*inputs, return_dict=False)[0]


# --------------------------------------------------------------------------- sections


def bench_dit(comps, adapter, args, device, dtype) -> tuple[list[dict], object]:
    """Forward timings of the plain DiT and of ours; returns (rows, generator with merged LoRA in full mode)."""
    from ex4d.diffusion.adapter import merge_lora
    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.pipeline import Ex4dGenerator

    tr = comps.transformer
    rows = []
    one = dit_inputs(comps, args.frames, args.height, args.width, device, dtype, 1)
    two = dit_inputs(comps, args.frames, args.height, args.width, device, dtype, 2)

    def add(name, seconds, batch, note=""):
        rows.append({"variant": name, "forward_s": seconds, "batch": batch, "per_sample_s": seconds / batch,
                     "per_step_s": seconds * (2 / batch), "peak_gib": peak_gib(device), "note": note})
        print(f"  {name:55s} {seconds:8.3f} s / forward (batch {batch})", flush=True)

    reset_peak(device)
    add("diffusers plain, batch 1 (baseline)", timeit(lambda: dit_forward(tr, one), device, iters=args.iters), 1)
    reset_peak(device)
    add("diffusers plain, batch 2", timeit(lambda: dit_forward(tr, two), device, iters=args.iters), 2)

    cfg = GenerateConfig(dtype=args.dtype, device=str(device), merge_lora=False, attention_backend="native",
                         steps=args.steps)
    gen = Ex4dGenerator(comps, adapter, cfg)  # peft LoRA (unmerged) + hook, resident
    tokens = camera_tokens(tr, one[0], device, dtype)
    with gen.injection.conditioning(tokens):
        reset_peak(device)
        add("ours: adapter + peft LoRA unmerged, CFG batch 2", timeit(lambda: dit_forward(tr, two), device,
                                                                      iters=args.iters), 2)
        merge_lora(tr, device=device)
        best = ("native", float("inf"))
        for backend in args.backends:
            try:
                tr.set_attention_backend(backend)
                reset_peak(device)
                s = timeit(lambda: dit_forward(tr, two), device, iters=args.iters)
            except Exception as e:  # backend not available on this machine
                print(f"  backend {backend}: unavailable ({type(e).__name__}: {str(e)[:120]})")
                continue
            add(f"ours: merged LoRA, CFG batch 2, attention {backend}", s, 2)
            best = min(best, (backend, s), key=lambda b: b[1])
        tr.set_attention_backend(best[0])
        gen.best_backend = best[0]
        if args.compile and device.type == "cuda":
            from ex4d.diffusion.memory import compile_blocks

            t0 = time.perf_counter()
            forwards = [b.forward for b in tr.blocks]
            try:
                compile_blocks(tr)  # what --compile does
                dit_forward(tr, two)
                sync(device)
            except Exception as e:  # keep the eager numbers (and the video after) when compilation fails
                print(f"  compile failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                for b, f in zip(tr.blocks, forwards):
                    b.forward = f
                return rows, gen
            compile_s = time.perf_counter() - t0
            reset_peak(device)
            add(f"ours: merged, batch 2, {best[0]}, compiled blocks",
                timeit(lambda: dit_forward(tr, two), device, iters=args.iters), 2, note=f"compile {compile_s:.0f} s")
    return rows, gen


def kernel_profile(fn, device, top: int = 12) -> dict:
    """GPU time of one ``fn()`` by kernel class (matmul, attention, fused elementwise, other) and its top kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    kernels = [(e.key, e.device_time_total / 1e3, e.count) for e in prof.key_averages()
               if e.device_time_total > 0 and not e.key.startswith(("ProfilerStep", "cuda"))]
    kernels = [k for k in kernels if not any(w in k[0] for w in ("aten::", "Memcpy", "Memset"))] or kernels

    def kind(name: str) -> str:
        n = name.lower()
        if any(w in n for w in ("flash", "fmha", "attention", "cudnn")):
            return "attention"
        if any(w in n for w in ("gemm", "xmma", "cutlass", "nvjet", "matmul", "f8f8bf16")):
            return "matmul"
        if n.startswith("triton"):
            return "fused elementwise (Triton)"
        return "other"

    by_kind: dict[str, float] = {}
    for name, ms, _ in kernels:
        k = kind(name)
        by_kind[k] = by_kind.get(k, 0.0) + ms
    kernels.sort(key=lambda k: -k[1])
    return {"total_ms": sum(by_kind.values()), "by_kind_ms": by_kind,
            "top": [{"kernel": n[:120], "ms": ms, "calls": c} for n, ms, c in kernels[:top]]}


def print_profile(label: str, prof: dict) -> None:
    print(f"  kernel time of one forward, {label}: {prof['total_ms']:.0f} ms", flush=True)
    for k, ms in sorted(prof["by_kind_ms"].items(), key=lambda kv: -kv[1]):
        print(f"    {k:28s} {ms:8.1f} ms  {100 * ms / prof['total_ms']:5.1f} %", flush=True)
    for t in prof["top"]:
        print(f"      {t['ms']:8.1f} ms {t['calls']:5d}×  {t['kernel'][:100]}", flush=True)


def bench_dit_fp8(gen, args, device, dtype) -> tuple[list[dict], dict]:
    """The compiled batch-2 forward after ``--fp8-matmul``'s quantization of the same (merged) DiT, and profiles.

    Quantizes ``gen``'s transformer in place (what ``Ex4dGenerator(fp8_matmul=True)`` does after merging
    the LoRA), so run it after every bf16 measurement. Returns (rows, kernel profiles by variant).
    """
    from ex4d.diffusion.fp8 import quantize_blocks_fp8

    comps = gen.components
    tr = comps.transformer
    two = dit_inputs(comps, args.frames, args.height, args.width, device, dtype, 2)
    tokens = camera_tokens(tr, two[0], device, dtype)
    rows, profiles = [], {}
    tag = "compiled, " if args.compile and device.type == "cuda" else ""
    with gen.injection.conditioning(tokens):
        if args.profile and device.type == "cuda":
            profiles["bf16"] = kernel_profile(lambda: dit_forward(tr, two), device)
            print_profile(f"{tag}bf16", profiles["bf16"])
        ref = dit_forward(tr, two).float()
        t0 = time.perf_counter()
        n = quantize_blocks_fp8(tr, device)
        sync(device)
        q_s = time.perf_counter() - t0
        out = dit_forward(tr, two)  # recompiles the blocks for the fp8 layers
        sync(device)
        first = time.perf_counter() - t0 - q_s
        reset_peak(device)
        t = timeit(lambda: dit_forward(tr, two), device, iters=args.iters)
        rel = float((out.float() - ref).norm() / ref.norm())
        rows.append({"variant": f"ours: merged, batch 2, {tag}fp8 matmuls", "forward_s": t, "batch": 2,
                     "per_sample_s": t / 2, "per_step_s": t, "peak_gib": peak_gib(device),
                     "note": f"{n} layers quantized in {q_s:.1f} s; first call {first:.0f} s; relative L2 "
                             f"difference of the output vs bf16 {rel:.3g}"})
        print(f"  fp8 matmuls: {t:.3f} s / CFG step ({t / 2:.3f} s per sample), {n} layers quantized in {q_s:.1f} s, "
              f"first call {first:.0f} s, relative L2 vs bf16 {rel:.3g}", flush=True)
        if args.profile and device.type == "cuda":
            profiles["fp8"] = kernel_profile(lambda: dit_forward(tr, two), device)
            print_profile(f"{tag}fp8 matmuls", profiles["fp8"])
    gen.config = gen.config.replace(fp8_matmul=True)
    return rows, profiles


def video_inputs(frames: int, height: int, width: int):
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    mask = np.ones((frames, height, width), bool)
    mask[1:, :, width // 2:] = False  # right half unknown after frame 0
    color[~mask] = 0
    return color, mask


def bench_baseline_video(comps, args, device, dtype) -> dict:
    """Plain diffusers WanImageToVideoPipeline (unbatched CFG, default attention, no adapter), whole video."""
    import diffusers
    from PIL import Image
    from transformers import CLIPImageProcessor

    from ex4d.diffusion.encode import encode_prompts

    processor = CLIPImageProcessor(do_resize=True, size={"shortest_edge": comps.image_encoder.config.image_size},
                                   crop_size={"height": comps.image_encoder.config.image_size,
                                              "width": comps.image_encoder.config.image_size},
                                   do_center_crop=True, resample=3,
                                   image_mean=[0.48145466, 0.4578275, 0.40821073],
                                   image_std=[0.26862954, 0.26130258, 0.27577711])
    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=comps.tokenizer, text_encoder=comps.text_encoder, vae=comps.vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0), image_processor=processor,
        image_encoder=comps.image_encoder, transformer=comps.transformer)
    pipe.set_progress_bar_config(disable=True)
    color, _ = video_inputs(args.frames, args.height, args.width)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    # prompt states via our encoder call (diffusers' prompt_clean needs ftfy, not needed for the timing)
    states = encode_prompts(comps.tokenizer, comps.text_encoder, ["a prompt", "a negative prompt"], device)
    steps = args.steps
    pipe(image=Image.fromarray(color[0]), prompt_embeds=states[:1].to(dtype),
         negative_prompt_embeds=states[1:].to(dtype), height=args.height, width=args.width,
         num_frames=args.frames, num_inference_steps=steps, guidance_scale=5.0,
         generator=torch.Generator(device).manual_seed(0), output_type="np")
    sync(device)
    total = time.perf_counter() - t0
    print(f"  diffusers WanImageToVideoPipeline: {total:.2f} s for {steps} steps", flush=True)
    return {"variant": "diffusers WanImageToVideoPipeline (baseline)", "memory": "full", "steps": steps,
            "total_s": total, "per_step_s": None, "peak_gib": peak_gib(device), "extrapolated": False}


def bench_our_video(gen, args, device, mode: str, label: str) -> dict:
    color, mask = video_inputs(args.frames, args.height, args.width)
    cfg = gen.config.replace(steps=args.e2e_steps or args.steps)
    gen.generate(color, mask, cfg, progress=False) if args.warm_video else None
    reset_peak(device)
    t0 = time.perf_counter()
    gen.generate(color, mask, cfg, progress=False)
    sync(device)
    total = time.perf_counter() - t0
    lap = dict(gen.last_timings)
    per_step = lap["denoise_s"] / cfg.steps
    extrapolated = cfg.steps != args.steps
    if extrapolated:
        total = total - lap["denoise_s"] + per_step * args.steps
    print(f"  {label}: {total:.2f} s for {args.steps} steps{' (extrapolated)' if extrapolated else ''}, "
          f"{per_step:.3f} s/step, peak {peak_gib(device)} GiB allocated, {peak_reserved_gib(device)} reserved",
          flush=True)
    return {"variant": label, "memory": mode, "steps": args.steps, "total_s": total, "per_step_s": per_step,
            "peak_gib": peak_gib(device), "peak_reserved_gib": peak_reserved_gib(device),
            "extrapolated": extrapolated, "stages_s": lap}


def warm_compiled(gen, args) -> float:
    """Seconds of a 1-step video: compiles the blocks (and warms the caches) outside the timings."""
    color, mask = video_inputs(args.frames, args.height, args.width)
    t0 = time.perf_counter()
    gen.generate(color, mask, gen.config.replace(steps=1), progress=False)
    return time.perf_counter() - t0


def video_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two uint8 videos of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def bench_step_cache(comps, adapter, args, device, dtype) -> list[dict]:
    """Whole videos with diffusers' first-block cache at each threshold, against the same generator without it.

    Deviation = PSNR and max |Δ| of the decoded video against the uncached video on the same seed; "full
    steps" counts the steps that ran past the first block (from a hook inside the last block).
    """
    from diffusers.hooks import FirstBlockCacheConfig

    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.pipeline import Ex4dGenerator

    from ex4d.diffusion.memory import compile_blocks

    compiled = args.compile and (device.type == "cuda" or args.tiny)
    cfg = GenerateConfig(dtype=args.dtype, device=str(device), steps=args.steps)
    gen = Ex4dGenerator(comps, adapter, cfg)
    tr = gen.components.transformer
    color, mask = video_inputs(args.frames, args.height, args.width)
    rows = []
    if compiled:  # what --compile does, measured against the eager video on the same seed
        reset_peak(device)
        t0 = time.perf_counter()
        eager = gen.generate(color, mask, progress=False)
        sync(device)
        eager_s = time.perf_counter() - t0
        rows.append({"variant": "ours, eager (reference of --compile)", "memory": "full", "steps": args.steps,
                     "total_s": eager_s, "per_step_s": gen.last_timings["denoise_s"] / args.steps,
                     "peak_gib": peak_gib(device), "extrapolated": False})
        compile_blocks(tr, backend="inductor" if device.type == "cuda" else "eager")
        print(f"  eager video {eager_s:.2f} s; compiled in {warm_compiled(gen, args):.0f} s (1-step warm-up video)",
              flush=True)
    tag = ", compiled" if compiled else ""
    calls: list[int] = []
    last = tr.blocks[-1]
    inner = last.forward  # counted beneath the cache's hooks (and outside a compiled graph)

    def counted(*a, **k):
        calls.append(1)
        return inner(*a, **k)

    last.forward = counted
    reset_peak(device)
    t0 = time.perf_counter()
    ref = gen.generate(color, mask, progress=False)
    sync(device)
    base_s = time.perf_counter() - t0
    rows.append({"variant": f"ours{tag}, no step cache (reference)", "memory": "full", "steps": args.steps,
                 "total_s": base_s, "per_step_s": gen.last_timings["denoise_s"] / args.steps,
                 "peak_gib": peak_gib(device), "extrapolated": False, "full_steps": len(calls),
                 "psnr_db": float("inf"), "max_abs": 0})
    print(f"  ours{tag} without step cache: {base_s:.2f} s", flush=True)
    if compiled:
        d = int(np.abs(ref.astype(int) - eager.astype(int)).max())
        rows[-1]["vs_eager"] = {"psnr_db": video_psnr(ref, eager), "max_abs": d}
        print(f"  --compile against eager, same seed: PSNR {video_psnr(ref, eager):.1f} dB, max |Δ| {d}", flush=True)
    def variant(name: str, th: float | None) -> None:
        if th is not None:
            tr.enable_cache(FirstBlockCacheConfig(threshold=th))
        calls.clear()
        reset_peak(device)
        t0 = time.perf_counter()
        out = gen.generate(color, mask, progress=False)
        sync(device)
        total = time.perf_counter() - t0
        if th is not None:
            tr.disable_cache()
        diff = int(np.abs(out.astype(int) - ref.astype(int)).max())
        rows.append({"variant": name, "memory": "full", "steps": args.steps,
                     "total_s": total, "per_step_s": gen.last_timings["denoise_s"] / args.steps,
                     "peak_gib": peak_gib(device), "extrapolated": False, "full_steps": len(calls),
                     "psnr_db": video_psnr(out, ref), "max_abs": diff})
        vs_eager = ""
        if compiled:  # against the plain (eager) bf16 video too: the reference
            d = int(np.abs(out.astype(int) - eager.astype(int)).max())
            rows[-1]["vs_eager"] = {"psnr_db": video_psnr(out, eager), "max_abs": d}
            vs_eager = f"; vs eager bf16 PSNR {video_psnr(out, eager):.1f} dB, max |Δ| {d}"
        print(f"  {name}: {total:.2f} s, {len(calls)}/{args.steps} full steps, "
              f"PSNR {video_psnr(out, ref):.1f} dB vs the bf16 reference, max |Δ| {diff}{vs_eager}", flush=True)

    for th in args.step_cache:
        variant(f"ours{tag}, first-block cache {th:g}", th)
    if args.fp8:  # what --fp8-matmul does to the same merged DiT; the reference stays the bf16 video
        from ex4d.diffusion.fp8 import quantize_blocks_fp8

        quantize_blocks_fp8(tr, device)  # swaps layers inside the blocks; the step counter stays on
        if compiled:
            print(f"  fp8: recompiled in {warm_compiled(gen, args):.0f} s (1-step warm-up video)", flush=True)
        variant(f"ours{tag}, fp8 matmuls", None)
        for th in args.step_cache:
            variant(f"ours{tag}, fp8 matmuls, first-block cache {th:g}", th)
    last.forward = inner
    return rows


def bench_floor(args, device, dtype) -> list[dict]:
    """Time the DiT's two heavy parts alone at the model's shapes: what the kernels on this machine allow.

    Per block and CFG step (batch 2, N tokens, width 5120, 40 heads of 128): self-attention (SDPA under each
    backend) and the linear layers (q, k, v, o; cross-attention q, o; FFN in and out; the text/image k, v are
    on 769 context tokens and left out). 40 × (best attention + linears) is the step's floor without the
    elementwise work.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, hd, width, ffn = (40, 128, 5120, 13824) if not args.tiny else (2, 8, 16, 32)
    n = ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16)
    q, k, v = (torch.randn(2, heads, n, hd, device=device, dtype=dtype) for _ in range(3))
    rows = []
    attn_flop = 4 * 2 * heads * n * n * hd
    best = float("inf")
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)):
        if name == "math" and device.type == "cuda":
            continue
        try:
            with sdpa_kernel(be):
                t = timeit(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), device, iters=args.iters)
        except Exception as e:  # backend not available here
            print(f"  attention {name}: unavailable ({type(e).__name__})", flush=True)
            continue
        best = min(best, t)
        rows.append({"part": f"self-attention, SDPA {name}", "ms": t * 1e3, "tflops": attn_flop / t / 1e12})
    # cross-attention of the same queries to the 512 text and the 257 CLIP image tokens (I2V), per backend
    cross_flop = 4 * 2 * heads * n * (512 + 257) * hd
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        kv = [torch.randn(2, heads, m, hd, device=device, dtype=dtype) for m in (512, 512, 257, 257)]
        try:
            with sdpa_kernel(be):
                F_ = torch.nn.functional
                t = timeit(lambda: (F_.scaled_dot_product_attention(q, kv[0], kv[1]),
                                    F_.scaled_dot_product_attention(q, kv[2], kv[3])), device, iters=args.iters)
        except Exception as e:  # backend not available here
            print(f"  cross-attention {name}: unavailable ({type(e).__name__})", flush=True)
            continue
        rows.append({"part": f"cross-attention (text 512 + image 257), SDPA {name}", "ms": t * 1e3,
                     "tflops": cross_flop / t / 1e12})
    del q, k, v
    x = torch.randn(2 * n, width, device=device, dtype=dtype)
    h = torch.randn(2 * n, ffn, device=device, dtype=dtype)
    w_sq = torch.randn(width, width, device=device, dtype=dtype)
    w_in = torch.randn(ffn, width, device=device, dtype=dtype)
    w_out = torch.randn(width, ffn, device=device, dtype=dtype)
    F = torch.nn.functional

    def linears():
        for _ in range(6):  # self q, k, v, o; cross q, o
            F.linear(x, w_sq)
        F.linear(x, w_in)
        F.linear(h, w_out)

    t_lin = timeit(linears, device, iters=args.iters)
    lin_flop = 2 * 2 * n * (6 * width * width + 2 * width * ffn)
    rows.append({"part": "linear layers of one block (cuBLAS)", "ms": t_lin * 1e3, "tflops": lin_flop / t_lin / 1e12})
    t_fp8 = None
    if device.type == "cpu" or torch.cuda.get_device_capability(device) >= (8, 9):
        from ex4d.diffusion.fp8 import fp8_rows

        (xq, xs), (hq, hs) = fp8_rows(x), fp8_rows(h)
        wq = [(q, sc.T.contiguous()) for q, sc in (fp8_rows(w) for w in (w_sq, w_in, w_out))]

        def mm(a, s_a, w):
            return torch._scaled_mm(a, w[0].T, scale_a=s_a, scale_b=w[1], out_dtype=torch.bfloat16,
                                    use_fast_accum=True)

        def linears_fp8():
            for _ in range(6):
                mm(xq, xs, wq[0])
            mm(xq, xs, wq[1])
            mm(hq, hs, wq[2])

        t_fp8 = timeit(linears_fp8, device, iters=args.iters)
        rows.append({"part": "same linear layers, fp8 row-wise (inputs quantized ahead)", "ms": t_fp8 * 1e3,
                     "tflops": lin_flop / t_fp8 / 1e12})
    layers = 40 if not args.tiny else 2
    rows.append({"part": f"floor of one CFG step: {layers} × (best attention + linears)",
                 "ms": layers * (best + t_lin) * 1e3, "tflops": layers * (attn_flop + lin_flop) / (best + t_lin) / layers
                 / 1e12})
    if t_fp8 is not None:
        rows.append({"part": f"same with fp8 linears: {layers} × (best attention + fp8 linears)",
                     "ms": layers * (best + t_fp8) * 1e3, "tflops": (attn_flop + lin_flop) / (best + t_fp8) / 1e12})
    for r in rows:
        print(f"  {r['part']:58s} {r['ms']:9.2f} ms  {r['tflops']:7.1f} TFLOP/s", flush=True)
    return rows


def bench_attention(comps, adapter, args, device, dtype) -> tuple[list[dict], list[dict]]:
    """Compiled batch-2 CFG step under each attention backend, then a whole video with the fastest.

    Backends: auto (PyTorch's SDPA choice), then diffusers' forced cuDNN and flash. The output
    difference is against auto on the same inputs.
    """
    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.pipeline import Ex4dGenerator

    cfg = GenerateConfig(dtype=args.dtype, device=str(device), steps=args.steps, compile=device.type == "cuda")
    gen = Ex4dGenerator(comps, adapter, cfg)
    tr = gen.components.transformer
    two = dit_inputs(comps, args.frames, args.height, args.width, device, dtype, 2)
    tokens = camera_tokens(tr, two[0], device, dtype)
    rows, ref = [], None
    tag = "compiled, " if cfg.compile else ""
    settings = ("native", "_native_cudnn", "_native_flash") if device.type == "cuda" else ("native",)
    with torch.no_grad(), gen.injection.conditioning(tokens):
        for setting in settings:
            try:
                tr.set_attention_backend(setting)
                t0 = time.perf_counter()
                out = dit_forward(tr, two)
                sync(device)
                first = time.perf_counter() - t0
                reset_peak(device)
                t = timeit(lambda: dit_forward(tr, two), device, iters=args.iters)
            except Exception as e:  # backend not available here
                print(f"  attention {setting}: failed ({type(e).__name__}: {str(e)[:160]})", flush=True)
                continue
            out = out[0] if isinstance(out, (tuple, list)) else out
            ref = out.float() if ref is None else ref
            diff = float((out.float() - ref).abs().max())
            rows.append({"variant": f"ours, {tag}attention {setting}", "forward_s": t, "batch": 2,
                         "per_sample_s": t / 2, "per_step_s": t, "peak_gib": peak_gib(device),
                         "note": f"first call {first:.0f} s, max |Δ| vs native {diff:.3g}"})
            print(f"  attention {setting:14s} {t:.3f} s / CFG step ({t / 2:.3f} s per sample), first call {first:.0f} s, "
                  f"max |Δ| vs native {diff:.3g}", flush=True)
    videos = []
    tr.set_attention_backend("native")  # also diffusers' process-wide default again
    if rows:
        best = min(rows, key=lambda r: r["forward_s"])["variant"].rsplit(" ", 1)[1]
        tr.set_attention_backend(best)
        gen.config = gen.config.replace(attention_backend=best)
        videos.append(bench_our_video(gen, args, device, "full", f"ours, {tag}attention {best}"))
    return rows, videos


# --------------------------------------------------------------------------- main


def build(args, device, dtype, where: str):
    """Random components, constructed on ``device`` and moved to ``where``."""
    from ex4d.diffusion.random_models import build_components

    comps = build_components("tiny" if args.tiny else "full", device=device, dtype=dtype)
    if torch.device(where) != device:
        for m in (comps.transformer, comps.text_encoder, comps.image_encoder, comps.vae):
            m.to(where)
        free()
    return comps


def adapter_for(comps, args):
    import dataclasses

    from ex4d.diffusion.pipeline import model_spec
    from ex4d.diffusion.random_models import random_adapter

    spec = model_spec(comps)
    if args.tiny:
        spec = dataclasses.replace(spec, hidden=16, rank=4, alpha=4.0)
    return random_adapter(spec, seed=0, scale=0.01)


def print_tables(result: dict) -> None:
    dit = result.get("dit", [])
    if dit:
        base = dit[0]["per_step_s"]
        print("\nDiT forward ({} tokens)".format(result["tokens"]))
        print(f"| {'variant':55s} | s/forward | batch | s/step (2 samples) | vs baseline | peak GiB |")
        print(f"|{'-' * 57}|-----------|-------|--------------------|-------------|----------|")
        for r in dit:
            pk = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
            print(f"| {r['variant']:55s} | {r['forward_s']:9.3f} | {r['batch']:5d} | {r['per_step_s']:18.3f} | "
                  f"{base / r['per_step_s']:10.2f}× | {pk:>8s} |")
    videos = result.get("video", [])
    if videos:
        base = next((v["total_s"] for v in videos if "baseline" in v["variant"]), None)
        print(f"\nWhole video ({result['frames']}×{result['height']}×{result['width']}, {result['steps']} steps, "
              "CFG 5, text + image encoders, 3 VAE encodes, VAE decode)")
        print(f"| {'variant':58s} | memory   | total s | s/step | vs baseline | peak GiB (reserved) |")
        print(f"|{'-' * 60}|----------|---------|--------|-------------|---------------------|")
        for v in videos:
            ratio = f"{base / v['total_s']:10.2f}×" if base else "-"
            ps = f"{v['per_step_s']:6.3f}" if v["per_step_s"] else "     -"
            pk = f"{v['peak_gib']:.1f}" if v["peak_gib"] is not None else "-"
            if v.get("peak_reserved_gib") is not None:
                pk += f" ({v['peak_reserved_gib']:.1f})"
            star = "*" if v["extrapolated"] else " "
            extra = f" full steps {v['full_steps']}, PSNR {v['psnr_db']:.1f} dB" if "psnr_db" in v else ""
            if "vs_eager" in v:
                extra += f"; vs eager PSNR {v['vs_eager']['psnr_db']:.1f} dB, max |Δ| {v['vs_eager']['max_abs']}"
            print(f"| {v['variant']:58s} | {v['memory']:8s} | {v['total_s']:6.1f}{star} | {ps} | {ratio:>11s} | "
                  f"{pk:>19s} |{extra}")
        if any(v["extrapolated"] for v in videos):
            print("* extrapolated: measured stages + steps × measured s/step")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (a smoke test)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sections", default="dit,e2e",
                   help="comma list of dit, e2e, modes, cache, floor, attn (%(default)s)")
    p.add_argument("--step-cache", default="0.05,0.1",
                   help="first-block cache thresholds for the 'cache' section (%(default)s)")
    p.add_argument("--modes", default="balanced,low",
                   help="memory modes for the 'modes' section, each optionally +compile (%(default)s)")
    p.add_argument("--gpu-budget", type=float, default=None, help="GiB for resident DiT blocks (mode default)")
    p.add_argument("--cap", default="",
                   help="modes: cap PyTorch's GPU memory per mode to simulate a smaller GPU, e.g. "
                        "'balanced=21.5,low=10.5' (GiB; a 24 GB / 12 GB card less the CUDA context)")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--steps", type=int, default=25, help="steps of a video (%(default)s)")
    p.add_argument("--e2e-steps", type=int, default=0, help="steps actually run in 'modes' (0 = --steps)")
    p.add_argument("--iters", type=int, default=3, help="timed forwards per variant (%(default)s)")
    p.add_argument("--backends", default="native,_native_cudnn,_native_flash,_native_efficient",
                   help="attention backends to try (%(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="dit: also time compiled blocks; e2e, cache: compiled (CUDA)")
    p.add_argument("--warm-video", action="store_true", help="run each video once before timing it")
    p.add_argument("--fp8", action="store_true",
                   help="dit (+e2e): then quantize the DiT for --fp8-matmul and time it (and its video); cache: also "
                        "the fp8 videos, against the bf16 reference")
    p.add_argument("--profile", action="store_true", help="with --fp8: kernel-time profile of one forward, bf16 and fp8")
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width = 5, 32, 48
        args.steps, args.iters, args.dtype = min(args.steps, 2), 1, "float32"
        args.sections = "dit,e2e,modes,cache,floor,attn"
        args.compile = True  # the cache section compiles with torch.compile's eager backend on the CPU
        args.modes = "balanced,low+fp8"
        args.fp8 = True
    args.backends = [b for b in args.backends.split(",") if b] if torch.cuda.is_available() and not args.tiny \
        else ["native"]
    sections = set(args.sections.split(","))
    for variant in args.modes.split(","):
        unknown = set(variant.split("+")[1:]) - {"compile", "fp8"}
        if unknown:
            p.error(f"--modes: unknown flag(s) {sorted(unknown)} in {variant!r}; use MODE[+compile][+fp8]")
    args.step_cache = [float(x) for x in args.step_cache.split(",") if x]
    args.cap = {k: float(v) for k, v in (kv.split("=") for kv in args.cap.split(",") if kv)}
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True

    result = {"machine": platform.node(), "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "frames": args.frames,
              "height": args.height, "width": args.width, "steps": args.steps, "dtype": args.dtype,
              "tokens": ((args.frames - 1) // 4 + 1) * (args.height // 16) * (args.width // 16),
              "dit": [], "video": []}
    import diffusers
    import transformers

    result["diffusers"], result["transformers"] = diffusers.__version__, transformers.__version__
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    print(f"device {result['device']}, torch {torch.__version__}, diffusers {diffusers.__version__}", flush=True)

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))

    if sections & {"dit", "e2e"}:
        t0 = time.perf_counter()
        comps = build(args, device, dtype, where=device)
        print(f"built full-mode components in {time.perf_counter() - t0:.1f} s", flush=True)
        adapter = adapter_for(comps, args)
        if "e2e" in sections:
            result["video"].append(bench_baseline_video(comps, args, device, dtype))
            save()
        rows, gen = bench_dit(comps, adapter, args, device, dtype)
        if "dit" in sections:
            result["dit"] = rows
            save()
        if "e2e" in sections:
            gen.config = gen.config.replace(attention_backend=getattr(gen, "best_backend", "native"))
            label = "ours (adapter, merged LoRA, CFG batch 2{})".format(
                ", compiled" if args.compile and device.type == "cuda" else "")
            result["video"].append(bench_our_video(gen, args, device, "full", label))
            save()
        if args.fp8 and "dit" in sections:
            rows, result["profiles"] = bench_dit_fp8(gen, args, device, dtype)
            result["dit"] += rows
            save()
            if "e2e" in sections:
                result["video"].append(bench_our_video(gen, args, device, "full", label[:-1] + ", fp8 matmuls)"))
                save()
        del gen, comps
        free()

    if "attn" in sections:
        comps = build(args, device, dtype, where=device)
        rows, videos = bench_attention(comps, adapter_for(comps, args), args, device, dtype)
        result["dit"] += rows
        result["video"] += videos
        del comps
        free()
        save()

    if "floor" in sections:
        result["floor"] = bench_floor(args, device, dtype)
        free()
        save()

    if "cache" in sections:
        comps = build(args, device, dtype, where=device)
        result["video"] += bench_step_cache(comps, adapter_for(comps, args), args, device, dtype)
        del comps
        free()
        save()

    if "modes" in sections:
        from ex4d.diffusion.config import GenerateConfig
        from ex4d.diffusion.pipeline import Ex4dGenerator

        for variant in [m for m in args.modes.split(",") if m]:
            mode, *flags = variant.split("+")
            compiled = "compile" in flags and device.type == "cuda"
            fp8 = "fp8" in flags
            t0 = time.perf_counter()
            gen = comps = None
            cap = args.cap.get(mode) if device.type == "cuda" else None
            try:
                comps = build(args, device, dtype, where=device if mode == "full" else "cpu")
                if cap:  # a smaller GPU from here on (the random weights are built on the GPU, then moved):
                    # the caching allocator may hold at most cap GiB and frees its cache to stay under
                    free()
                    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
                    torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GIB / total), torch.cuda.current_device())
                    print(f"  PyTorch capped at {cap} GiB of GPU memory for {variant}", flush=True)
                adapter = adapter_for(comps, args)
                cfg = GenerateConfig(dtype=args.dtype, device=str(device), memory=mode, steps=args.steps,
                                     compile=compiled, gpu_budget_gib=args.gpu_budget, fp8_matmul=fp8)
                gen = Ex4dGenerator(comps, adapter, cfg)
                print(f"built + placed {variant} in {time.perf_counter() - t0:.1f} s", flush=True)
                if compiled:
                    print(f"  compiled in {warm_compiled(gen, args):.0f} s (1-step warm-up video)", flush=True)
                label = (f"ours, memory {mode}{', compiled' if compiled else ''}{', fp8 matmuls' if fp8 else ''}"
                         f"{f', cap {cap:g} GiB' if cap else ''}")
                result["video"].append(bench_our_video(gen, args, device, mode, label))
                result["video"][-1]["cap_gib"] = cap
            except Exception as e:  # keep the other modes' numbers; record what failed
                if args.tiny:
                    raise
                import traceback

                traceback.print_exc()
                result.setdefault("errors", {})[variant] = f"{type(e).__name__}: {e}"
            del gen, comps
            free()
            if cap:
                torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())
            save()

    print_tables(result)
    save()
    return result


if __name__ == "__main__":
    main()
