"""Benchmark of the depth backends: seconds per clip and peak GPU memory, random full-size weights.

Models are random-initialised at their released sizes, built directly on the device (nothing is downloaded):

* ``depthcrafter``: DepthCrafter = the SVD img2vid-xt UNet (1.5 B parameters), SVD's temporal VAE and CLIP
  ViT-H/14 image encoder, SVD's Euler scheduler; 5 steps, guidance 1.0, window 110 (one window for 49 frames).
* ``depth-anything-v2-{small,base,large}``: ``DepthAnythingForDepthEstimation`` with the -hf configs
  (ViT-S/B/L DINOv2 + DPT head) and its image processor (518 px), batch 8, plus the temporal alignment.

For each backend the table gives the whole ``estimate()`` call on a 49-frame 512×512 clip (frames in, z-depth
out), the peak GPU memory, and a *floor* measured in the same run: the bare network forwards the backend
cannot avoid (DepthCrafter: 5 UNet forwards on the clip's latents; Depth Anything: the forward passes on
already-preprocessed batches). ``ratio`` = backend / floor, the cost of everything around the network
(preprocessing, VAE, CLIP, alignment, conversion). ``vs DC`` compares each backend with DepthCrafter, the
EX-4D original's choice.

    python bench/bench_depth.py --json bench_depth.json          # GPU (fp16)
    python bench/bench_depth.py --tiny --json /tmp/bd.json       # CPU smoke run with tiny models

Needs torch, diffusers and transformers (numpy comes with them); opencv is not needed for the timed path.
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

#: Stable Video Diffusion img2vid-xt's scheduler_config.json.
SVD_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
                     num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                     steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)

#: Depth Anything V2 -hf configs: (hidden, layers, heads, out_indices, neck sizes, fusion size).
DA_SIZES = {
    "small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


# --------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def allocated_gib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None


def timeit(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Mean seconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def params_of(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def make_frames(num_frames: int, size: int) -> np.ndarray:
    """[T, size, size, 3] uint8: a moving gradient with noise (content is irrelevant to the timing)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1) * (255.0 / size)
    return np.stack([np.clip(base + 2 * t + rng.integers(0, 16, base.shape), 0, 255)
                     for t in range(num_frames)]).astype(np.uint8)


# --------------------------------------------------------------------------- models


def build_depthcrafter(device: torch.device, dtype: str, tiny: bool):
    """A :class:`ex4d.depth.depthcrafter.DepthCrafter` with random weights (SVD-xt sizes, or tiny)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ex4d.depth.depthcrafter import DepthCrafter

    torch.manual_seed(0)
    with torch.device(device):
        if tiny:
            unet = UNetSpatioTemporalConditionModel(
                sample_size=8, down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                block_out_channels=(32, 32), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
                layers_per_block=1, cross_attention_dim=16, num_attention_heads=(2, 2), num_frames=4)
            vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                               latent_channels=4, layers_per_block=1)
            enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=16, projection_dim=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                image_size=32, patch_size=16))
        else:
            unet = UNetSpatioTemporalConditionModel()  # diffusers' defaults are SVD's UNet (DepthCrafter's layout)
            vae = AutoencoderKLTemporalDecoder(block_out_channels=(128, 256, 512, 512),
                                               down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2,
                                               latent_channels=4)
            enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"))
    want = getattr(torch, dtype)
    unet, vae, enc = (m if m.dtype == want else m.to(want) for m in (unet, vae, enc))
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER)
    return DepthCrafter(unet, vae, enc, scheduler, str(device), dtype)


def build_depth_anything(size: str, device: torch.device, dtype: str, tiny: bool):
    """A :class:`ex4d.depth.depth_anything.DepthAnythingV2` with random weights (-hf config of ``size``, or tiny)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from ex4d.depth.depth_anything import DepthAnythingV2

    hidden, layers, heads, out_indices, neck, fusion = (
        (16, 4, 2, [1, 2, 3, 4], [8, 8, 16, 16], 8) if tiny else DA_SIZES[size])
    image = 28 if tiny else 518
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
                            image_size=image, patch_size=14, out_indices=out_indices, reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=hidden, neck_hidden_sizes=neck,
                                 fusion_hidden_size=fusion, head_hidden_size=8 if tiny else 32, patch_size=14)
    torch.manual_seed(0)
    with torch.device(device):
        model = DepthAnythingForDepthEstimation(config)
    model = model if model.dtype == getattr(torch, dtype) else model.to(getattr(torch, dtype))
    processor = DPTImageProcessor(size={"height": image, "width": image}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                  resample=3, do_pad=False, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    return DepthAnythingV2(model, processor, str(device), dtype)


# --------------------------------------------------------------------------- benchmarks


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _runner(backend, frames, options, notes: set):
    """``fn()`` running the whole ``estimate()`` (without opencv, needed only for the final resize: the model part).

    Random weights may give non-finite or constant output, which the backends refuse after all the work is
    done; that is noted in ``notes`` and does not stop the timing.
    """
    from ex4d.errors import Ex4dError

    def run():
        try:
            if _has_cv2():
                return backend.estimate(frames, progress=False, **options)
            notes.add("timed without the final resize/conversion (opencv not installed)")
            if hasattr(backend, "disparity"):
                from ex4d.depth.depthcrafter import DepthCrafterOptions

                return backend.disparity(frames, DepthCrafterOptions(**options), False)
            from ex4d.depth.align import align_scale_shift
            from ex4d.depth.depth_anything import DepthAnythingOptions

            return align_scale_shift(backend.predict(frames, DepthAnythingOptions(**options), False))
        except Ex4dError as e:
            notes.add(f"random weights: {e}")
    return run


def bench_depthcrafter(frames, device, dtype, tiny, warmup, iters) -> dict:
    from ex4d.depth.depthcrafter import processing_size

    reset_peak(device)
    model = build_depthcrafter(device, dtype, tiny)
    weights = allocated_gib(device)
    options = dict(num_inference_steps=5, guidance_scale=1.0, window_size=110, overlap=25, max_res=1024)
    T, H, W = frames.shape[:3]
    notes: set = set()
    reset_peak(device)
    with torch.inference_mode():
        seconds = timeit(_runner(model, frames, options, notes), device, warmup, iters)
    peak = peak_gib(device)

    # floor: 5 UNet forwards on the clip's latents (one window), nothing else
    w, h = processing_size(W, H, 1024, model.size_multiple)
    sample = torch.randn(1, min(T, 110), model.unet.config.in_channels, h // model.vae_scale, w // model.vae_scale,
                         device=device, dtype=model.torch_dtype)
    emb = torch.randn(1, 1, model.unet.config.cross_attention_dim, device=device, dtype=model.torch_dtype)
    ids = torch.tensor([[7.0, 127.0, 0.02]], device=device, dtype=model.torch_dtype)

    def floor():
        for _ in range(options["num_inference_steps"]):
            model.unet(sample, 10.0, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)

    with torch.inference_mode():
        floor_s = timeit(floor, device, 1, iters)
    out = {"backend": "depthcrafter", "params_m": params_of(model.unet, model.vae, model.image_encoder) / 1e6,
           "seconds": seconds, "fps": T / seconds, "peak_gib": peak, "weights_gib": weights, "floor_s": floor_s,
           "floor": f"{options['num_inference_steps']} UNet forwards, {min(T, 110)} frames at {w}x{h}",
           "options": options, "notes": sorted(notes)}
    model.close()
    return out


def bench_depth_anything(size, frames, device, dtype, tiny, warmup, iters) -> dict:
    reset_peak(device)
    model = build_depth_anything(size, device, dtype, tiny)
    weights = allocated_gib(device)
    options = dict(batch_size=8)
    T = frames.shape[0]
    notes: set = set()
    reset_peak(device)
    with torch.inference_mode():
        seconds = timeit(_runner(model, frames, options, notes), device, warmup, iters)
    peak = peak_gib(device)

    t0 = time.perf_counter()
    pixels = [model.processor(images=list(frames[i:i + 8]), return_tensors="pt")["pixel_values"]
              for i in range(0, T, 8)]
    preprocess_s = time.perf_counter() - t0
    pixels = [p.to(device, model.torch_dtype) for p in pixels]

    def floor():
        for p in pixels:
            model.model(pixel_values=p)

    with torch.inference_mode():
        floor_s = timeit(floor, device, 1, iters)
    out = {"backend": f"depth-anything-v2-{size}", "params_m": params_of(model.model) / 1e6, "seconds": seconds,
           "fps": T / seconds, "peak_gib": peak, "weights_gib": weights, "floor_s": floor_s,
           "floor": f"forwards on preprocessed batches of 8 at {tuple(pixels[0].shape[-2:])}",
           "preprocess_s": preprocess_s, "processor": type(model.processor).__name__, "options": options,
           "notes": sorted(notes)}
    model.close()
    return out


def print_table(rows: list[dict]) -> None:
    dc = next((r["seconds"] for r in rows if r["backend"] == "depthcrafter"), None)
    head = (f"{'backend':26s} {'params':>8s} {'s/clip':>8s} {'fps':>7s} {'peak GiB':>9s} {'floor s':>8s} "
            f"{'ratio':>6s} {'vs DC':>6s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        vs = f"{r['seconds'] / dc:.2f}" if dc else "-"
        print(f"{r['backend']:26s} {r['params_m']:7.0f}M {r['seconds']:8.3f} {r['fps']:7.1f} {peak:>9s} "
              f"{r['floor_s']:8.3f} {r['seconds'] / r['floor_s']:6.2f} {vs:>6s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (CPU smoke run)")
    ap.add_argument("--backends", default="depthcrafter,depth-anything-v2-small,depth-anything-v2-large",
                    help="comma-separated: depthcrafter, depth-anything-v2-{small,base,large}")
    ap.add_argument("--frames", type=int, help="clip length (default 49; 6 with --tiny)")
    ap.add_argument("--size", type=int, help="frame side in pixels (default 512; 32 with --tiny)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--dtype", default=None, help="default: float16 on GPU, float32 on CPU")
    ap.add_argument("--iters", type=int, default=None, help="timed runs per backend (default 3; 1 with --tiny)")
    args = ap.parse_args(argv)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = args.dtype or ("float16" if device.type == "cuda" else "float32")
    T = args.frames or (6 if args.tiny else 49)
    size = args.size or (32 if args.tiny else 512)
    iters = args.iters or (1 if args.tiny else 3)
    warmup = 1
    frames = make_frames(T, size)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "dtype": dtype, "frames": T, "size": size, "tiny": args.tiny, "iters": iters,
           "python": platform.python_version()}
    for lib in ("diffusers", "transformers"):
        env[lib] = __import__(lib).__version__
    print(json.dumps(env))

    rows = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name == "depthcrafter":
            rows.append(bench_depthcrafter(frames, device, dtype, args.tiny, warmup, iters))
        elif name.startswith("depth-anything-v2-") and name.rsplit("-", 1)[1] in DA_SIZES:
            rows.append(bench_depth_anything(name.rsplit("-", 1)[1], frames, device, dtype, args.tiny, warmup, iters))
        else:
            ap.error(f"unknown backend {name!r}")
        print(f"  {rows[-1]['backend']}: {rows[-1]['seconds']:.3f} s", flush=True)
    print_table(rows)
    for r in rows:
        for note in r["notes"]:
            print(f"note ({r['backend']}): {note}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
