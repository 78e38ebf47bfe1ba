"""Benchmark of ``ex4d train``: seconds per training step and peak GPU memory, random full-size weights.

One training step as the trainer runs it (batch 1, 49×512×512 → 13 latent frames of 64×64 → 13,312 DiT tokens):
encode the clip with the frozen VAE (target, condition, mask, first frame) and CLIP, then the adapter model
(Wan2.1-I2V-14B DiT in bf16 + LoRA rank 16 on the ten original targets + camera encoder) forward and
backward under bf16 autocast, gradient clipping, AdamW. Measured with and without gradient checkpointing
(without it the 14B model usually runs out of memory on an 80 GB GPU; the row then says so). The baseline,
measured in the same run, is one inference forward of the same DiT (no grad), so the ratio is the cost of a
training step in inference forwards (about 3 with checkpointing: forward, recomputed forward, backward ≈ 2).

    python bench/bench_train.py                      # CUDA GPU: full size, 49x512x512
    python bench/bench_train.py --json train.json    # also write the numbers
    python bench/bench_train.py --tiny               # CPU smoke run with tiny random models
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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(size: str, device: torch.device, dtype: torch.dtype, rank: int, hidden: int, checkpointing: bool):
    """(model, vae, image_encoder, text_dim) with random weights built on ``device``: no text encoder (the trainer
    frees it after encoding the prompt once)."""
    import diffusers
    import transformers

    from ex4d.diffusion.adapter import CamVidEncoder
    from ex4d.diffusion.loading import _keep_fp32
    from ex4d.diffusion.random_models import wan_configs
    from ex4d.train.model import Ex4dTrainModel, add_training_lora

    cfg = wan_configs(size)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = diffusers.WanTransformer3DModel(**cfg["transformer"])
            image_encoder = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**cfg["image_encoder"]))
            vae = diffusers.AutoencoderKLWan(**cfg["vae"])
    finally:
        torch.set_default_dtype(previous)
    if dtype != torch.float32:
        _keep_fp32(transformer)
    transformer.requires_grad_(False)
    vae.requires_grad_(False).eval()
    image_encoder.requires_grad_(False).eval()
    add_training_lora(transformer, rank, float(rank))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    z = int(vae.config.z_dim)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    encoder = CamVidEncoder(z, hidden, dim, tuple(transformer.config.patch_size)).to(device)
    model = Ex4dTrainModel(transformer, encoder).train()
    return model, vae, image_encoder, int(transformer.config.text_dim)


def fake_batch(frames: int, height: int, width: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, (1, frames, height, width, 3), dtype=np.uint8)
    mask = np.ones((1, frames, height, width), bool)
    mask[:, 1:, :, width // 2:] = False
    cond = np.where(mask[..., None], target, 0).astype(np.uint8)
    return {"target": torch.from_numpy(target), "condition": torch.from_numpy(cond), "mask": torch.from_numpy(mask)}


def measure(args, device, dtype, checkpointing: bool) -> dict:
    from ex4d.train.inputs import encode_batch
    from ex4d.train.model import trainable_parameters
    from ex4d.train.objective import flow_matching_loss, sample_noise, timestep_weights, training_sigmas

    size = "tiny" if args.tiny else "full"
    model, vae, clip, text_dim = build(size, device, dtype, args.rank, args.hidden, checkpointing)
    params = trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-5)
    sigmas = training_sigmas(5.0)
    weights = timestep_weights(sigmas)
    text = torch.randn(1, 512, text_dim, device=device, dtype=dtype)
    batch = fake_batch(args.frames, args.height, args.width)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    row = {"gradient_checkpointing": checkpointing, "trainable_params_M": sum(p.numel() for p in params) / 1e6}

    def encode():
        return encode_batch(vae, clip, batch, device)

    def step(inputs, i):
        g = torch.Generator("cpu").manual_seed(i)
        noisy, target, t, w = sample_noise(inputs.latents, sigmas, weights, g)
        with amp:
            pred = model(noisy, inputs.y, t, text, inputs.image, inputs.video_latents, inputs.mask_latents)
        loss = flow_matching_loss(pred, target, w)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        inputs = encode()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(args.warmup):
            step(inputs, i)
        sync(device)
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(inputs, 100 + i)
        sync(device)
        row["step_s"] = (time.perf_counter() - t0) / args.steps
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        t0 = time.perf_counter()
        for _ in range(args.steps):
            encode()
        sync(device)
        row["encode_s"] = (time.perf_counter() - t0) / args.steps
        model.eval()
        with torch.no_grad(), amp:
            noisy = torch.randn_like(inputs.latents)
            t = torch.full((1,), 500.0, device=device)
            fwd = lambda: model(noisy, inputs.y, t, text, inputs.image, inputs.video_latents, inputs.mask_latents)  # noqa: E731
            fwd()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fwd()
            sync(device)
        row["forward_s"] = (time.perf_counter() - t0) / args.steps
    except torch.OutOfMemoryError:
        row["error"] = "out of GPU memory"
    return row


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (smoke run)")
    p.add_argument("--frames", type=int, default=None, help="frames (49; tiny: 5)")
    p.add_argument("--height", type=int, default=None, help="height (512; tiny: 32)")
    p.add_argument("--width", type=int, default=None, help="width (512; tiny: 48)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--hidden", type=int, default=None, help="camera encoder width (1024; tiny: 16)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip-no-checkpointing", action="store_true", help="only the gradient-checkpointing row")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    small = args.tiny
    args.frames = args.frames or (5 if small else 49)
    args.height = args.height or (32 if small else 512)
    args.width = args.width or (48 if small else 512)
    args.hidden = args.hidden or (16 if small else 1024)
    if small:
        args.rank = min(args.rank, 4)
    device = torch.device("cuda" if torch.cuda.is_available() and not small else "cpu")
    if not small and device.type != "cuda":
        print("no CUDA GPU: the full-size benchmark needs one (use --tiny for a CPU smoke run)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = [measure(args, device, dtype, True)]
    free(device)
    if not args.skip_no_checkpointing:
        rows.append(measure(args, device, dtype, False))
        free(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\nex4d train step, {'tiny' if small else 'Wan2.1-I2V-14B'} random weights, {args.frames}x{args.height}x"
          f"{args.width}, LoRA rank {args.rank}, batch 1, on {name}")
    print(f"{'grad ckpt':>9} | {'step s':>7} | {'encode s':>8} | {'fwd s (baseline)':>16} | {'step/fwd':>8} | "
          f"{'peak GiB':>8} | trainable M")
    for r in rows:
        if "error" in r:
            print(f"{str(r['gradient_checkpointing']):>9} | {r['error']}")
            continue
        peak = f"{r['peak_gib']:8.1f}" if "peak_gib" in r else f"{'-':>8}"
        print(f"{str(r['gradient_checkpointing']):>9} | {r['step_s']:7.3f} | {r['encode_s']:8.3f} | "
              f"{r['forward_s']:16.3f} | {r['step_s'] / r['forward_s']:8.2f} | {peak} | {r['trainable_params_M']:.1f}")
    print("step s: DiT forward + backward + clip + AdamW (inputs encoded once); encode s: VAE x4 + CLIP per clip "
          "(add it per step unless latents are cached); fwd s: one no-grad forward of the same model.")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
