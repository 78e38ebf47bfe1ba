"""``ex4d serve`` (a warm worker with the models loaded) and ``ex4d warmup`` (compile once per machine).

Thin layers over :mod:`ex4d.diffusion.serve` and :class:`~ex4d.diffusion.pipeline.Ex4dGenerator`.
"""

from __future__ import annotations

import argparse
import time

from ..errors import Ex4dError, check
from .cli_args import (add_hardware_args, add_model_args, add_sampling_args, apply_gpu_memory_cap, check_model_args,
                       config_from_args, gpu_peak_gib, loras_from_args)

__all__ = ["register", "run_serve", "run_warmup"]

SERVE_EPILOG = """\
examples:
  ex4d serve --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt --compile --fp8-matmul
  ex4d generate --server http://127.0.0.1:8765 --color out/color.mp4 --mask out/mask.mp4 --out out/output.mp4
  curl -s localhost:8765/health
  curl -s -X POST localhost:8765/jobs -d '{"color": "/abs/color.mp4", "mask": "/abs/mask.mp4", "out": "/abs/o.mp4"}'
  curl -s localhost:8765/jobs/000001          # state, message, and the record with every stage's time

API: GET /health, POST /jobs (a job as in `ex4d generate --jobs`; 202 {"id"}), GET /jobs/ID, GET /jobs,
DELETE /jobs/ID (cancel a queued job), POST /shutdown. Jobs run one at a time in submission order; the
sampling flags given here are the defaults of every job, which may override them in "options" (not the
flags that decide how the models load). /health answers {"state": "loading"} until the models are ready.
The server binds 127.0.0.1: a job names files it reads and writes as your user.
"""

WARMUP_EPILOG = """\
examples:
  ex4d warmup --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt --compile --fp8-matmul
  ex4d warmup ... --compile --size 832x480 --num-frames 81
  ex4d warmup ... --compile --fp8-matmul --lora distill.safetensors --preset lightx2v-4step   # CFG off: batch 1

Runs one short generation on a synthetic input of that size with exactly the flags of the later runs,
so torch.compile's kernels land in its on-disk cache (~/.cache/ex4d/torch-compile, or $EX4D_COMPILE_CACHE)
and the prompt states in ~/.cache/ex4d/prompts. Compiled graphs depend on the frame count x size, the
CFG batch (--cfg 1 or not), the dtype, --fp8-matmul and the attention backend: warm up each combination
you use. Nothing is written besides the caches.
"""


def register(subparsers) -> None:
    """Add ``serve`` and ``warmup``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "serve", formatter_class=fmt, epilog=SERVE_EPILOG,
        help="a warm worker: load the models once, take generation jobs over local HTTP",
        description="Load Wan2.1-I2V-14B + the EX-4D adapter once and run generation jobs sent over HTTP "
                    "(by `ex4d generate --server URL`, ex4d.diffusion.serve.ServeClient, or curl), one at a time.")
    add_model_args(p)
    add_sampling_args(p)
    add_hardware_args(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    g.add_argument("--port", type=int, default=8765, help="port (%(default)s; 0 = any free port)")
    g.add_argument("--allow-remote", action="store_true", help="allow a --host other than the loopback address")
    g.add_argument("--ready-file", metavar="FILE", help="write {\"url\", \"pid\"} here once the models are loaded")
    g.add_argument("--max-queue", type=int, default=1000, help="most queued jobs (%(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-job lines")
    p.set_defaults(func=run_serve, frames="exact", num_frames=0)

    p = subparsers.add_parser(
        "warmup", formatter_class=fmt, epilog=WARMUP_EPILOG,
        help="compile the DiT for one shape ahead of time (torch.compile's on-disk cache)",
        description="Load the models with the given flags and run a short generation on a synthetic input, "
                    "so the first real video of that shape on this machine does not pay compilation.")
    add_model_args(p)
    add_sampling_args(p)
    add_hardware_args(p)
    g = p.add_argument_group("shape")
    g.add_argument("--size", default="512x512", metavar="WxH", help="frame width x height (%(default)s)")
    g.add_argument("--num-frames", type=int, default=49, help="frames, 4k+1 (%(default)s)")
    g.add_argument("--warmup-steps", type=int, default=2, help="denoising steps to run (%(default)s)")
    p.add_argument("--record", metavar="FILE", help="also write the timings (load, the short run, each stage) as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_warmup, frames="exact")


def _load(args: argparse.Namespace, prompts):
    from .pipeline import Ex4dGenerator

    check_model_args(args)
    from .prefetch import prefetch_files

    prefetch_files(args.wan, args.wan_encoders)
    config = config_from_args(args)
    loras = loras_from_args(args)
    apply_gpu_memory_cap(config.device)
    t0 = time.perf_counter()
    gen = Ex4dGenerator.load(args.wan, None if args.no_adapter else args.adapter, config, encoders=args.wan_encoders,
                             loras=loras, prompts=prompts(config))
    return gen, config, time.perf_counter() - t0


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``ex4d serve``: listen first (a busy port fails before the load), load, then take jobs."""
    from .serve import GenerateService, Listener, print_ready

    check(1 <= args.max_queue <= 100_000, f"--max-queue must be in 1..100000, got {args.max_queue}")
    check(0 <= args.port <= 65535, f"--port must be in 0..65535, got {args.port}")
    check_model_args(args)
    config_from_args(args)  # flag errors before binding
    listener = Listener(args.host, args.port, allow_remote=args.allow_remote)
    try:
        gen, config, load_s = _load(args, lambda c: [(c.prompt, c.negative_prompt if c.cfg != 1.0 else None)])
        record = {"wan": str(args.wan), "wan_encoders": args.wan_encoders,
                  "adapter": None if args.no_adapter else args.adapter, "loras": gen.loras, "preset": args.preset,
                  "models": {"wan": str(args.wan), "adapter": None if args.no_adapter else args.adapter,
                             "loras": gen.loras, "memory": config.memory, "compile": config.compile,
                             "fp8_matmul": config.fp8_matmul, "load_s": round(load_s, 3)}}
        service = GenerateService(gen, config, record, max_queue=args.max_queue)
        listener.start(service, ready_file=args.ready_file,
                       on_ready=lambda url: print_ready(url, load_s))
        listener.wait()
    finally:
        listener.close()
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise Ex4dError(f"--size must be WIDTHxHEIGHT, e.g. 512x512, got {text!r}") from None
    check(w > 0 and h > 0 and w % 16 == 0 and h % 16 == 0, f"--size {text}: both sides must be multiples of 16")
    return w, h


def run_warmup(args: argparse.Namespace) -> int:
    """Handler of ``ex4d warmup``."""
    import numpy as np

    from .compile_cache import compile_cache_dir

    w, h = _parse_size(args.size)
    t = args.num_frames
    check(t >= 1 and t % 4 == 1, f"--num-frames must be 4k+1 (49, 81, ...), got {t}")
    check(1 <= args.warmup_steps <= 1000, f"--warmup-steps must be in 1..1000, got {args.warmup_steps}")
    if not args.compile:
        print("ex4d warmup: without --compile there is nothing to compile; this loads the models and fills the "
              "prompt cache only")
    gen, config, load_s = _load(args, lambda c: [(c.prompt, c.negative_prompt if c.cfg != 1.0 else None)])
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    mask = np.zeros((t, h, w), bool)
    mask[:, :, : w // 2] = True
    mask[0] = True
    color[~mask] = 0
    t0 = time.perf_counter()
    gen.generate(color, mask, config.replace(steps=min(config.steps, args.warmup_steps)), progress=not args.quiet)
    first = time.perf_counter() - t0
    where = compile_cache_dir() if config.compile else None
    if args.record:
        from ..io.atomic import atomic_write_json

        atomic_write_json(args.record, {"load_s": round(load_s, 3), "run_s": round(first, 3),
                                        "steps": min(config.steps, args.warmup_steps), "size": [w, h], "frames": t,
                                        "load_detail": gen.load_timings, "stages": gen.last_timings,
                                        "compile_cache": str(where) if where else None,
                                        "gpu_peak_gib": gpu_peak_gib(config.device)})
    print(f"ex4d warmup: {t}x{h}x{w}, {args.warmup_steps} steps in {first:.1f} s (models loaded in {load_s:.1f} s)"
          + (f"; compiled kernels cached in {where}" if where else ""), flush=True)
    return 0
