"""``ex4d generate`` and ``ex4d convert-adapter``: thin command-line layers over :mod:`ex4d.diffusion`.

Registered into the main parser by ``ex4d.cli`` through :func:`register`.
Imports nothing heavy until a command runs, so ``ex4d --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import Ex4dError, check
from .config import DTYPES, FRAME_POLICIES, MEMORY_MODES, STEP_CACHES, GenerateConfig
from .windows import WindowConfig

__all__ = ["register", "run_generate", "run_convert_adapter", "config_from_args"]

_D = GenerateConfig()
_W = WindowConfig()

GENERATE_EPILOG = """\
examples:
  ex4d generate --color out/color.mp4 --mask out/mask.mp4 \\
      --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt --out out/output.mp4
  # original Wan release files for the DiT and VAE, encoders from the diffusers folder:
  ex4d generate ... --wan /models/Wan2.1-I2V-14B-480P --wan-encoders /models/Wan2.1-I2V-14B-480P-Diffusers
  # a 24 GB GPU (as fast as full on an H200, measured), a 12 GB GPU:
  ex4d generate ... --memory balanced --compile
  ex4d generate ... --memory low
  # fp8 matmuls (GPUs of compute capability 8.9+; 1.37x faster steps on an H200, results change slightly);
  # with low: a 12 GB GPU, compiled, faster than full in bf16
  ex4d generate ... --compile --fp8-matmul
  ex4d generate ... --memory low --compile --fp8-matmul

memory modes:
  full      everything on the GPU (fastest; ~45 GB peak at 49x512x512)
  balanced  DiT blocks that do not fit in --gpu-budget (22 GiB) streamed from pinned CPU memory,
            text encoder offloaded
  low       as balanced with a 10 GiB budget, the DiT's linear layers stored in fp8 (changes results
            slightly), text and image encoders offloaded, VAE tiled

  # a long clip: windows of 49 frames, each continuing the last 9 frames of the one before
  ex4d generate --color long/color.mp4 --mask long/mask.mp4 ... --window 49 --overlap 9 --out long/output.mp4

The mask video is 255 where the render is known and 0 where it must be generated (as `ex4d recon` writes it).
Frames are used at their stored size: width and height must be multiples of 16. Any frame count works: clips
longer than --window are generated in overlapping windows (finished windows are kept in .OUT.windows/ beside
the output, so the same command resumes after a crash). A JSON file with every setting is written next to
the output. Lifting generated content into later windows needs the render's depth and cameras: use
`ex4d run --fill ex4d`.
"""


def register(subparsers) -> None:
    """Add ``generate`` and ``convert-adapter`` to the main parser's subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "generate", formatter_class=fmt, epilog=GENERATE_EPILOG,
        help="complete a masked render (color.mp4 + mask.mp4) with Wan2.1-I2V-14B + the EX-4D adapter",
        description="Fill the unknown regions of a novel-view render with the EX-4D video diffusion adapter "
                    "(Wan2.1-I2V-14B-480P, diffusers). Defaults reproduce the original EX-4D generate.py.")
    p.add_argument("--color", required=True, help="masked color video from `ex4d recon` (color.mp4)")
    p.add_argument("--mask", required=True, help="mask video, 255 = known, 0 = to generate (mask.mp4)")
    p.add_argument("--wan", required=True, help="Wan2.1-I2V-14B-480P folder: diffusers layout "
                                                "(transformer/, vae/, text_encoder/, tokenizer/, image_encoder/) or "
                                                "the original release (diffusion_pytorch_model-*.safetensors, "
                                                "Wan2.1_VAE.pth)")
    p.add_argument("--wan-encoders", metavar="DIR", help="diffusers-layout folder for the text/image encoders and "
                                                         "tokenizer (needed when --wan is the original release)")
    ad = p.add_mutually_exclusive_group(required=True)
    ad.add_argument("--adapter", help="EX-4D adapter: the released ex4d.ckpt or a .safetensors from convert-adapter")
    ad.add_argument("--no-adapter", action="store_true", help="plain Wan I2V from the first frame (a baseline)")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    g = p.add_argument_group("sampling (defaults = the original EX-4D)")
    g.add_argument("--prompt", default=_D.prompt, help="text prompt (default: the original's camera-motion prompt)")
    g.add_argument("--negative-prompt", default=_D.negative_prompt, help="negative prompt (default: Wan's standard)")
    g.add_argument("--steps", type=int, default=_D.steps, help="flow-matching Euler steps (%(default)s)")
    g.add_argument("--cfg", type=float, default=_D.cfg, help="classifier-free guidance scale; 1 = off (%(default)s)")
    g.add_argument("--shift", type=float, default=_D.shift, help="sigma shift of the schedule (%(default)s)")
    g.add_argument("--seed", type=int, default=_D.seed, help="noise seed (%(default)s)")
    g.add_argument("--erosion", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(_D.erosion),
                   help="per-frame mask erosion, kernel size drawn from MIN..MAX px; 0 0 disables (2 8)")
    g.add_argument("--erosion-seed", type=int, default=None, help="seed of the erosion draws (default: --seed)")

    g = p.add_argument_group("frames and windows")
    g.add_argument("--num-frames", type=int, default=0, help="use the first N frames (0 = all; any count)")
    g.add_argument("--frames", choices=FRAME_POLICIES, default=_D.frames,
                   help="exact = every frame, any count (default; windows cover it without padding), "
                        "trim = drop trailing frames down to 4k+1, pad = same as exact")
    g.add_argument("--window", type=int, default=_W.window,
                   help="frames per generation window, 4k+1 (%(default)s, the adapter's training length); longer "
                        "clips are generated in windows that continue each other")
    g.add_argument("--overlap", type=int, default=_W.overlap,
                   help="frames each window shares with the previous one, given to the model as known "
                        "(%(default)s: the I2V frame + two whole VAE latents)")

    g = p.add_argument_group("hardware")
    g.add_argument("--memory", choices=MEMORY_MODES, default=_D.memory, help="GPU memory mode (%(default)s)")
    g.add_argument("--device", default=_D.device, help="auto | cuda | cuda:N | cpu (%(default)s)")
    g.add_argument("--dtype", choices=DTYPES, default=_D.dtype, help="weights/compute dtype (%(default)s)")
    g.add_argument("--vae-dtype", choices=DTYPES, default=None, help="VAE dtype (default: --dtype)")
    g.add_argument("--force-cpu", action="store_true", help="allow full-size weights on a CPU (takes days)")
    g.add_argument("--no-merge-lora", action="store_true", help="keep LoRA unmerged (slower; for comparison)")
    g.add_argument("--no-cfg-batch", action="store_true", help="run the two CFG branches as separate forwards")
    g.add_argument("--attention", default=_D.attention_backend, metavar="BACKEND",
                   help="diffusers attention backend: auto (= native, PyTorch's SDPA choice), _native_cudnn, _native_flash, ... "
                        "(%(default)s)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the DiT blocks (CUDA; --memory full or balanced, or low with --fp8-matmul; "
                        "first video slower)")
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
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser(
        "convert-adapter", help="convert an EX-4D adapter between ex4d.ckpt (original) and .safetensors (ours)",
        description="Read the released ex4d.ckpt (or our .safetensors), check every key and shape, and write it in "
                    "the other format: OUT ending in .safetensors = ours (with dims in the metadata), anything else "
                    "= the original torch layout.")
    p.add_argument("input", help="ex4d.ckpt or an ex4d .safetensors adapter")
    p.add_argument("output", help="OUT.safetensors (ours) or OUT.ckpt (original layout)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the written tensors (%(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    p.set_defaults(func=run_convert_adapter)


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The :class:`GenerateConfig` described by ``ex4d generate``'s flags (validated)."""
    tiling = {"auto": None, "on": True, "off": False}[args.vae_tiling]
    return GenerateConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps, cfg=args.cfg, shift=args.shift,
        seed=args.seed, erosion=tuple(args.erosion), erosion_seed=args.erosion_seed, frames=args.frames,
        dtype=args.dtype, vae_dtype=args.vae_dtype, memory=args.memory, device=args.device, force_cpu=args.force_cpu,
        merge_lora=not args.no_merge_lora, cfg_batch=not args.no_cfg_batch, attention_backend=args.attention,
        compile=args.compile, vae_tiling=tiling, gpu_budget_gib=args.gpu_budget, step_cache=args.step_cache,
        step_cache_threshold=args.step_cache_threshold, fp8_matmul=args.fp8_matmul).check()


def _read_inputs(color_path: str, mask_path: str, num_frames: int):
    """(frames [T,H,W,3] uint8, mask [T,H,W] bool, fps) at the stored size."""
    from ..io.video import read_mask_video, read_video

    check(num_frames >= 0, f"--num-frames must be >= 0, got {num_frames}")
    n = num_frames or None
    color = read_video(color_path, num_frames=n, max_res=1 << 16, multiple=1)
    mask = read_mask_video(mask_path, num_frames=n, size=color.size)
    check(mask.shape[0] == color.num_frames,
          f"{mask_path} has {mask.shape[0]} frames, {color_path} {color.num_frames}; pass --num-frames")
    check(mask.shape[1:] == color.frames.shape[1:3],
          f"mask {mask_path} is {mask.shape[2]}x{mask.shape[1]}, color {color_path} "
          f"{color.frames.shape[2]}x{color.frames.shape[1]}; they must have one size")
    return color.frames, mask, color.fps


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``ex4d generate``; user errors raise :class:`Ex4dError`."""
    from ..io.atomic import atomic_write_json
    from .windowed import generate_video_files

    config = config_from_args(args)
    windows = WindowConfig(window=args.window, overlap=args.overlap, lift="none")
    out = Path(args.out)
    check(out.suffix.lower() in (".mp4", ".mov", ".mkv"), f"--out must end in .mp4, .mov or .mkv, got {out}")
    adapter = None if args.no_adapter else args.adapter

    def load():
        from .pipeline import Ex4dGenerator  # heavy imports only now

        return Ex4dGenerator.load(args.wan, adapter, config, encoders=args.wan_encoders)

    from .loading import detect_layout

    detect_layout(args.wan)  # a missing weights folder is an error before any work
    if adapter is not None:
        check(Path(adapter).is_file(), f"adapter file {adapter} does not exist; give the released ex4d.ckpt or "
                                       "an ex4d .safetensors (or --no-adapter)")
    info = generate_video_files(args.color, args.mask, out, load, config, windows, args.num_frames,
                                progress=not args.quiet)
    atomic_write_json(out.with_name(out.stem + ".generate.json"), {
        "config": config.to_json(), "windows": windows.to_dict(), "color": str(args.color), "mask": str(args.mask),
        "wan": str(args.wan), "wan_encoders": args.wan_encoders, "adapter": adapter, "fps": info["fps"],
        "frames": info["frames"], "width": info["width"], "height": info["height"], "num_windows": info["windows"],
        "timings_s": {"load": round(info["load_s"], 3), "generate": round(info["generate_s"], 3)},
    })
    print(f"wrote {out} ({info['frames']} frames, {info['width']}x{info['height']}, {info['windows']} window(s); "
          f"load {info['load_s']:.1f} s, generate {info['generate_s']:.1f} s)")
    return 0


def run_convert_adapter(args: argparse.Namespace) -> int:
    """Handler of ``ex4d convert-adapter``: every check before reading the tensors, an atomic write at the end."""
    from .checkpoint import export_original_ckpt, load_adapter, save_adapter_safetensors
    from .loading import torch_dtype

    src, dst = Path(args.input), Path(args.output)
    check(dst.name not in ("", ".", ".."), f"output {dst} is not a file name")
    check(not dst.is_dir(), f"output {dst} is a folder; give a file name ending in .safetensors or .ckpt")
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise Ex4dError(f"input and output are the same file: {src}")
    check(not dst.exists() or getattr(args, "overwrite", False),
          f"output {dst} exists; pass --overwrite to replace it, or choose another name")
    parent = dst.parent if str(dst.parent) else Path(".")
    check(not parent.exists() or parent.is_dir(), f"cannot write {dst}: {parent} is not a folder")
    weights = load_adapter(src)  # metadata, keys, shapes and dtypes are checked before any value is read
    dtype = torch_dtype(args.dtype)
    try:
        if dst.suffix == ".safetensors":
            save_adapter_safetensors(weights, dst, dtype=dtype)
        else:
            export_original_ckpt(weights, dst, dtype=dtype)
    except OSError as e:
        raise Ex4dError(f"cannot write {dst}: {e.strerror or e}") from None
    print(f"wrote {dst}: {weights.spec.describe()}, {len(weights.lora)} LoRA + {len(weights.encoder)} encoder tensors")
    return 0
