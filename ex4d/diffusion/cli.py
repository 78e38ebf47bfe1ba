"""``ex4d generate`` and ``ex4d convert-adapter``: thin command-line layers over :mod:`ex4d.diffusion`.

Registered into the main parser by ``ex4d.cli`` through :func:`register` (which also registers
``ex4d serve`` and ``ex4d warmup`` from :mod:`ex4d.diffusion.cli_serve`).
Imports nothing heavy until a command runs, so ``ex4d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import Ex4dError, check
from .cli_args import (COMMAND_START, add_frames_args, add_hardware_args, add_model_args, add_sampling_args,
                       apply_gpu_memory_cap, check_model_args, config_from_args, gpu_peak_gib, loras_from_args,
                       process_age_s)
from .config import DTYPES, GenerateConfig

__all__ = ["register", "run_generate", "run_convert_adapter", "config_from_args"]

_D = GenerateConfig()

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
  # many videos, the models loaded once (jobs.json: [{"color": ..., "mask": ..., "out": ..., "options": {...}}]):
  ex4d generate --jobs jobs.json --wan ... --adapter ... --compile --fp8-matmul
  # a warm worker: `ex4d serve --wan ... --adapter ...` once, then per video
  ex4d generate --server http://127.0.0.1:8765 --color out/color.mp4 --mask out/mask.mp4 --out out/output.mp4
  # a 4-step distillation LoRA (quality with the EX-4D adapter unchecked, see the README):
  ex4d generate ... --lora Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors --preset lightx2v-4step
  # a long clip: windows of 49 frames, each continuing the last 9 frames of the one before
  ex4d generate --color long/color.mp4 --mask long/mask.mp4 ... --window 49 --overlap 9 --out long/output.mp4

memory modes:
  full      everything on the GPU (fastest; ~45 GB peak at 49x512x512)
  balanced  DiT blocks that do not fit in --gpu-budget (22 GiB) streamed from pinned CPU memory,
            text encoder offloaded
  low       as balanced with a 10 GiB budget, the DiT's linear layers stored in fp8 (changes results
            slightly), text and image encoders offloaded, VAE tiled

The mask video is 255 where the render is known and 0 where it must be generated (as `ex4d recon` writes it).
Frames are used at their stored size: width and height must be multiples of 16. Any frame count works: a clip
longer than --window, or not 4k+1, is generated in overlapping windows (finished windows are kept in
.OUT.windows/ beside the output, so the same command resumes after a crash; --frames trim drops trailing
frames to 4k+1 instead; lifting generated content into later windows needs the render's depth and cameras:
`ex4d run --fill ex4d`). An existing --out is kept unless --overwrite; the video is
written atomically, with OUT.generate.json beside it: every setting and the time of each stage (load,
encode, denoise, decode, write, and the wall time since the process started). Prompt states are kept in
~/.cache/ex4d/prompts ($EX4D_CACHE_DIR; EX4D_PROMPT_CACHE=0 disables): a run with a prompt seen before
does not load the 11 GB text encoder.
"""


def register(subparsers, parallel: bool = False) -> None:
    """Add ``generate``, ``convert-adapter``, ``serve`` and ``warmup`` to the main parser's subcommands.

    ``parallel``: for ``ex4d.diffusion.parallel`` (torchrun), which brings its own ``--jobs`` and no server.
    """
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "generate", formatter_class=fmt, epilog=GENERATE_EPILOG,
        help="complete a masked render (color.mp4 + mask.mp4) with Wan2.1-I2V-14B + the EX-4D adapter",
        description="Fill the unknown regions of a novel-view render with the EX-4D video diffusion adapter "
                    "(Wan2.1-I2V-14B-480P, diffusers). Defaults reproduce the original EX-4D generate.py.")
    p.add_argument("--color", help="masked color video from `ex4d recon` (color.mp4)")
    p.add_argument("--mask", help="mask video, 255 = known, 0 = to generate (mask.mp4)")
    p.add_argument("--out", help="output video (.mp4, .mov, .mkv)")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its .generate.json) if it exists")
    if not parallel:
        p.add_argument("--jobs", metavar="FILE",
                       help="many videos with the models loaded once: a JSON list (or JSON lines) of "
                            "{color, mask, out[, options, num_frames, overwrite]}, or lines 'COLOR MASK OUT'; "
                            "paths relative to the file; options = per-video sampling settings. A failed job "
                            "is reported and the others still run (exit status 2 if any failed)")
        p.add_argument("--server", metavar="URL",
                       help="send the job to a running `ex4d serve` (models already loaded) instead of loading "
                            "them; --wan/--adapter and the hardware flags are the server's")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(p, required=False)
    add_sampling_args(p)
    add_frames_args(p)
    from .windowed import add_window_args

    add_window_args(p)
    add_hardware_args(p)
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


    from .cli_serve import register as register_serve

    if not parallel:
        register_serve(subparsers)


def _read_inputs(color_path: str, mask_path: str, num_frames: int):
    """(frames [T,H,W,3] uint8, mask [T,H,W] bool, fps) at the stored size (see ``jobs.read_inputs``)."""
    from .jobs import read_inputs

    return read_inputs(color_path, mask_path, num_frames)


def _single_job(args: argparse.Namespace, config: GenerateConfig):
    """(the one job of --color/--mask/--out, its inputs), checked before any weight is read."""
    from .conditioning import check_inputs
    from .jobs import check_output_path, parse_job

    missing = [f"--{k}" for k in ("color", "mask", "out") if not getattr(args, k)]
    check(not missing, f"{', '.join(missing)} required (or --jobs FILE)")
    job = parse_job({"color": args.color, "mask": args.mask, "out": args.out, "num_frames": args.num_frames,
                     "overwrite": args.overwrite}, config, where="generate")
    check_output_path(job.out, args.overwrite, [job.color, job.mask])
    color, mask, fps = _read_inputs(args.color, args.mask, args.num_frames)
    check_inputs(color, mask)
    from .windowed import check_window_frames, window_config_from_args

    check_window_frames(len(color), window_config_from_args(args), config.frames)  # before loading the weights
    return job, (color, mask, fps)


def _prompt_pairs(jobs, config: GenerateConfig) -> list[tuple[str, str | None]]:
    pairs = []
    for job in jobs:
        cfg = job.config(config)
        pair = (cfg.prompt, cfg.negative_prompt if cfg.cfg != 1.0 else None)
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``ex4d generate``; user errors raise :class:`Ex4dError`."""
    from ..io.atomic import atomic_write_json
    from .jobs import read_jobs, run_job

    if getattr(args, "server", None):
        return _generate_via_server(args)
    check_model_args(args)
    steps = {"cli_s": process_age_s()}  # process start → here: interpreter, torch and the CLI's imports
    t_mark = time.perf_counter()
    from .prefetch import prefetch_files

    prefetch_files(args.wan, args.wan_encoders)  # disk reads overlap the imports below
    config = config_from_args(args)
    loras = loras_from_args(args)
    from .windowed import window_config_from_args

    windows = window_config_from_args(args)
    inputs = None
    if getattr(args, "jobs", None):
        given = [f"--{k}" for k in ("color", "mask", "out") if getattr(args, k)]
        check(not given, f"--jobs FILE names every input and output; drop {', '.join(given)}")
        jobs = read_jobs(args.jobs, config, overwrite=args.overwrite, num_frames=args.num_frames)
    else:
        job, inputs = _single_job(args, config)
        jobs = [job]
    steps["inputs_s"] = round(time.perf_counter() - t_mark, 3)  # checks, reading the videos
    t_mark = time.perf_counter()
    from .pipeline import Ex4dGenerator  # heavy imports only now

    steps["imports_s"] = round(time.perf_counter() - t_mark, 3)

    cap = apply_gpu_memory_cap(config.device)
    started = process_age_s()
    t0 = time.perf_counter()
    adapter = None if args.no_adapter else args.adapter
    generator = Ex4dGenerator.load(args.wan, adapter, config, encoders=args.wan_encoders, loras=loras,
                                   overlap=True, prompts=_prompt_pairs(jobs, config))
    t_load = time.perf_counter() - t0
    record = {"wan": str(args.wan), "wan_encoders": args.wan_encoders, "adapter": adapter, "loras": generator.loras,
              "preset": getattr(args, "preset", None)}
    failed = 0
    for i, job in enumerate(jobs):
        t_job = time.perf_counter()
        try:
            rec = run_job(generator, job, config, record, progress=not args.quiet, inputs=inputs if i == 0 else None,
                          windows=windows)
        except Ex4dError as e:
            if len(jobs) == 1:
                raise
            failed += 1
            print(f"ex4d generate: job {i + 1}/{len(jobs)} ({job.out}) failed: {e}", flush=True)
            continue
        now = time.perf_counter()
        t = rec["timings_s"]
        if i == 0:
            t["load"] = round(t_load + t.get("dit_wait", 0.0), 3)  # until every model was ready
            t["load_call"] = round(t_load, 3)
            t["load_detail"] = generator.load_timings
            t["startup"] = round(started, 3) if started is not None else None  # process start → models start loading
            t["startup_detail"] = {k: (round(v, 3) if v is not None else None) for k, v in steps.items()}
        t["job"] = round(now - t_job, 3)
        t["command"] = round(now - COMMAND_START, 3)
        age = process_age_s()
        t["wall"] = round(age, 3) if age is not None else t["command"]  # since the process started
        rec["job_index"], rec["jobs"] = i, len(jobs)
        rec["gpu_peak_gib"], rec["gpu_cap_gib"] = gpu_peak_gib(config.device), cap
        atomic_write_json(job.out.with_name(job.out.stem + ".generate.json"), rec)
        print(f"wrote {job.out} ({rec['frames']} frames, {rec['width']}x{rec['height']}; "
              + (f"load {t['load']:.1f} s, " if i == 0 else "")
              + f"generate {t['generate']:.1f} s, wall {t['wall']:.1f} s)", flush=True)
    if failed:
        raise Ex4dError(f"{failed} of {len(jobs)} jobs failed (see above); the others were written")
    return 0


def _generate_via_server(args: argparse.Namespace) -> int:
    """``ex4d generate --server URL``: one job to a running ``ex4d serve``."""
    from .serve import ServeClient

    check(not getattr(args, "jobs", None), "--jobs and --server do not combine; submit each job to the server")
    missing = [f"--{k}" for k in ("color", "mask", "out") if not getattr(args, k)]
    check(not missing, f"{', '.join(missing)} required")
    cli_sampling = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
                    "erosion": list(args.erosion), "erosion_seed": args.erosion_seed, "frames": args.frames}
    for name in ("steps", "cfg", "shift", "sampler"):
        if getattr(args, name) is not None:
            cli_sampling[name] = getattr(args, name)
    if args.preset:
        from .presets import get_preset

        p = get_preset(args.preset)
        for name in ("steps", "cfg", "shift", "sampler"):
            cli_sampling.setdefault(name, getattr(p, name))
    client = ServeClient(args.server)
    t0 = time.perf_counter()
    rec = client.generate(args.color, args.mask, args.out, overwrite=args.overwrite, **cli_sampling)
    print(f"wrote {args.out} via {args.server} (queued and generated in {time.perf_counter() - t0:.1f} s; "
          f"generate {rec['result']['timings_s']['generate']:.1f} s)")
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
