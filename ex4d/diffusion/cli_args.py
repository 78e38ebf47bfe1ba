"""Command-line flags shared by ``ex4d generate``, ``ex4d serve`` and ``ex4d warmup``, and their translation.

Light: no torch import here, so ``ex4d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import time

from ..errors import check
from .config import DTYPES, FRAME_POLICIES, MEMORY_MODES, SAMPLERS, STEP_CACHES, GenerateConfig

__all__ = ["add_model_args", "add_sampling_args", "add_frames_args", "add_hardware_args", "config_from_args",
           "loras_from_args", "check_model_args", "process_age_s", "COMMAND_START", "apply_gpu_memory_cap",
           "gpu_peak_gib"]

_D = GenerateConfig()
COMMAND_START = time.perf_counter()  # when the CLI module was imported (≈ the command's start)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that is not known."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def apply_gpu_memory_cap(device: str = "auto") -> float | None:
    """Cap PyTorch's CUDA memory at ``$EX4D_GPU_MEMORY_CAP_GIB`` GiB (emulates a smaller card); returns the cap.

    For trying a memory mode against a card size on a bigger GPU (the benchmarks do); allocations past the
    cap raise CUDA out-of-memory as on that card.
    """
    value = os.environ.get("EX4D_GPU_MEMORY_CAP_GIB", "").strip()
    if not value:
        return None
    try:
        cap = float(value)
    except ValueError:
        cap = -1.0
    check(cap > 0, f"EX4D_GPU_MEMORY_CAP_GIB must be a number of GiB > 0, got {value!r}")
    import torch

    if not torch.cuda.is_available() or not (device in ("auto", "cuda") or device.startswith("cuda")):
        return None
    dev = torch.device("cuda" if device in ("auto", "cuda") else device)
    if dev.index is None:  # set_per_process_memory_fraction needs an index ("cuda" alone is refused)
        dev = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(dev).total_memory / 1024**3
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), dev)
    return cap


def gpu_peak_gib(device: str = "auto") -> dict | None:
    """{"allocated", "reserved"}: peak GiB PyTorch allocated / held on the CUDA device so far (None without CUDA)."""
    import torch

    if not torch.cuda.is_available() or not (device in ("auto", "cuda") or device.startswith("cuda")):
        return None
    dev = torch.device("cuda" if device in ("auto", "cuda") else device)
    return {"allocated": round(torch.cuda.max_memory_allocated(dev) / 1024**3, 2),
            "reserved": round(torch.cuda.max_memory_reserved(dev) / 1024**3, 2)}


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--wan, --wan-encoders, --adapter / --no-adapter, --lora (checked by :func:`check_model_args`)."""
    p.add_argument("--wan", help="Wan2.1-I2V-14B-480P folder: diffusers layout (transformer/, vae/, text_encoder/, "
                                 "tokenizer/, image_encoder/) or the original release "
                                 "(diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth)"
                                 + ("" if required else "; required unless --server"))
    p.add_argument("--wan-encoders", metavar="DIR", help="diffusers-layout folder for the text/image encoders and "
                                                         "tokenizer (needed when --wan is the original release)")
    ad = p.add_mutually_exclusive_group()
    ad.add_argument("--adapter", help="EX-4D adapter: the released ex4d.ckpt or a .safetensors from convert-adapter")
    ad.add_argument("--no-adapter", action="store_true", help="plain Wan I2V from the first frame (a baseline)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="an extra LoRA merged into the DiT at strength SCALE (default 1); repeat for several. "
                        "Layouts: diffusers/peft, ComfyUI (diffusion_model.*, lora_A/B or lora_down/up + alpha), "
                        "kohya/musubi (lora_unet_*), .diff/.diff_b full deltas")


def check_model_args(args: argparse.Namespace) -> None:
    check(bool(args.wan), "--wan DIR is required (the local Wan2.1-I2V-14B-480P folder)")
    check(bool(args.adapter) or args.no_adapter, "give --adapter FILE (the EX-4D adapter) or --no-adapter")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .presets import preset_help

    g = p.add_argument_group("sampling (defaults = the original EX-4D)")
    g.add_argument("--prompt", default=_D.prompt, help="text prompt (default: the original's camera-motion prompt)")
    g.add_argument("--negative-prompt", default=_D.negative_prompt, help="negative prompt (default: Wan's standard)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="sampling settings of a step-distillation LoRA (needs --lora FILE); sets these unless "
                        "given:\n" + preset_help())
    g.add_argument("--steps", type=int, default=None, help=f"denoising steps (default {_D.steps}, or the preset's)")
    g.add_argument("--cfg", type=float, default=None,
                   help=f"classifier-free guidance scale; 1 = off, one forward per step (default {_D.cfg:g})")
    g.add_argument("--shift", type=float, default=None, help=f"sigma shift of the schedule (default {_D.shift:g})")
    g.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="euler: flow-matching Euler (the original's; default); lcm: predict x0 and re-noise "
                        "(step-distilled models)")
    g.add_argument("--seed", type=int, default=_D.seed, help="noise seed (%(default)s)")
    g.add_argument("--erosion", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(_D.erosion),
                   help="per-frame mask erosion, kernel size drawn from MIN..MAX px; 0 0 disables (2 8)")
    g.add_argument("--erosion-seed", type=int, default=None, help="seed of the erosion draws (default: --seed)")


def add_frames_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frames")
    g.add_argument("--num-frames", type=int, default=0, help="use the first N frames (0 = all; must be 4k+1)")
    g.add_argument("--frames", choices=FRAME_POLICIES, default=_D.frames,
                   help="when the count is not 4k+1: exact = error (default), trim = drop trailing frames, "
                        "pad = repeat the last frame, generate, cut back")


def add_hardware_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hardware")
    g.add_argument("--memory", choices=MEMORY_MODES, default=_D.memory, help="GPU memory mode (%(default)s)")
    g.add_argument("--device", default=_D.device, help="auto | cuda | cuda:N | cpu (%(default)s)")
    g.add_argument("--dtype", choices=DTYPES, default=_D.dtype, help="weights/compute dtype (%(default)s)")
    g.add_argument("--vae-dtype", choices=DTYPES, default=None, help="VAE dtype (default: --dtype)")
    g.add_argument("--force-cpu", action="store_true", help="allow full-size weights on a CPU (takes days)")
    g.add_argument("--no-merge-lora", action="store_true", help="keep LoRA unmerged (slower; for comparison)")
    g.add_argument("--no-cfg-batch", action="store_true", help="run the two CFG branches as separate forwards")
    g.add_argument("--attention", default=_D.attention_backend, metavar="BACKEND",
                   help="diffusers attention backend: auto (= native, PyTorch's SDPA choice), _native_cudnn, "
                        "_native_flash, ... (%(default)s)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the DiT blocks (CUDA; --memory full or balanced, or low with --fp8-matmul). "
                        "Compiled kernels are kept in ~/.cache/ex4d/torch-compile ($EX4D_COMPILE_CACHE), so only "
                        "the first run of a shape on a machine compiles; `ex4d warmup` does that ahead")
    g.add_argument("--step-cache", choices=STEP_CACHES, default=_D.step_cache,
                   help="skip DiT blocks on steps whose first-block output barely changed (diffusers' first-block "
                        "cache; faster, changes results; default %(default)s)")
    g.add_argument("--step-cache-threshold", type=float, default=_D.step_cache_threshold, metavar="T",
                   help="first-block cache: relative change below which a step reuses the cached blocks "
                        "(default %(default)s; higher = faster, further from the uncached result)")
    g.add_argument("--fp8-matmul", action="store_true",
                   help="the DiT blocks' linear layers as fp8 matmuls with row-wise scales (NVIDIA GPUs of compute "
                        "capability 8.9+: Ada, Hopper, Blackwell; faster, half the DiT weight memory, changes results "
                        "slightly; off by default)")
    g.add_argument("--vae-tiling", choices=["auto", "on", "off"], default="auto",
                   help="tiled VAE (auto: on for low)")
    g.add_argument("--gpu-budget", type=float, default=None, metavar="GIB",
                   help="--memory balanced/low: GPU memory (GiB) to fill with resident DiT blocks; the rest are "
                        "streamed (default 22 balanced, 10 low)")


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The :class:`GenerateConfig` described by the flags (validated): explicit flag > ``--preset`` > default."""
    from .presets import get_preset

    preset = get_preset(args.preset) if getattr(args, "preset", None) else None
    if preset is not None:
        check(getattr(args, "lora", None), f"--preset {args.preset} is the sampling of a distillation LoRA: add "
                                           f"--lora FILE (e.g. {preset.lora.split(' ')[0]}:{preset.lora_scale:g})")

    def pick(name: str):
        value = getattr(args, name, None)
        if value is not None:
            return value
        return getattr(preset, name) if preset is not None else getattr(_D, name)

    tiling = {"auto": None, "on": True, "off": False}[args.vae_tiling]
    return GenerateConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=pick("steps"), cfg=pick("cfg"),
        shift=pick("shift"), sampler=pick("sampler"), seed=args.seed, erosion=tuple(args.erosion),
        erosion_seed=args.erosion_seed, frames=args.frames, dtype=args.dtype, vae_dtype=args.vae_dtype,
        memory=args.memory, device=args.device, force_cpu=args.force_cpu, merge_lora=not args.no_merge_lora,
        cfg_batch=not args.no_cfg_batch, attention_backend=args.attention, compile=args.compile, vae_tiling=tiling,
        gpu_budget_gib=args.gpu_budget, step_cache=args.step_cache, step_cache_threshold=args.step_cache_threshold,
        fp8_matmul=args.fp8_matmul).check()


def loras_from_args(args: argparse.Namespace) -> list:
    """The ``--lora`` arguments as :class:`~ex4d.diffusion.extra_lora.LoraFile` (files checked)."""
    from .extra_lora import parse_lora_arg

    return [parse_lora_arg(a) for a in getattr(args, "lora", None) or []]
