"""``torchrun … -m ex4d.diffusion.parallel``: ``ex4d generate`` on several GPUs.

One video, context parallel (the sequence split over the GPUs; rank 0 writes)::

    torchrun --nproc-per-node 4 -m ex4d.diffusion.parallel --color color.mp4 --mask mask.mp4 \\
        --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt --out out.mp4 --ulysses 4

Many videos, data parallel (every rank loads the model and takes every N-th job)::

    torchrun --nproc-per-node 8 -m ex4d.diffusion.parallel --jobs jobs.json \\
        --wan /models/Wan2.1-I2V-14B-480P-Diffusers --adapter /models/EX-4D/ex4d.ckpt

``jobs.json``: a list of ``{"color": ..., "mask": ..., "out": ...}`` (or a text
file with one ``COLOR MASK OUT`` per line). All other flags are those of
``ex4d generate``. NVLink multicast is switched off before the process group
starts (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``,
``NVSHMEM_DISABLE_NVLS=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import Ex4dError, check

__all__ = ["build_parser", "read_jobs", "main"]

_OPTIONAL_IN_JOBS_MODE = ("color", "mask", "out")


def build_parser() -> argparse.ArgumentParser:
    """``ex4d generate``'s parser plus ``--ulysses``, ``--ring``, ``--jobs``, ``--backend``."""
    from . import cli

    root = argparse.ArgumentParser(prog="ex4d-generate-parallel")
    sub = root.add_subparsers()
    cli.register(sub, parallel=True)
    p = sub.choices["generate"]
    p.prog = "torchrun --nproc-per-node N -m ex4d.diffusion.parallel"
    p.description = ("ex4d generate on several GPUs: one video split over them (--ulysses/--ring, context "
                     "parallel) or many videos shared out (--jobs, data parallel). Launch with torchrun.")
    p.epilog = __doc__.split("\n\n", 1)[1]
    for action in p._actions:  # --color/--mask/--out come from the jobs file in --jobs mode
        if action.dest in _OPTIONAL_IN_JOBS_MODE:
            action.required = False
    g = p.add_argument_group("several GPUs")
    g.add_argument("--ulysses", type=int, default=0,
                   help="Ulysses degree of context parallelism (default: world size / --ring)")
    g.add_argument("--ring", type=int, default=1, help="ring-attention degree (needs --attention _native_cudnn "
                                                       "or another LSE backend; default 1)")
    g.add_argument("--jobs", metavar="FILE", help="data parallel: JSON list of {color, mask, out} or lines "
                                                  "'COLOR MASK OUT'; each rank takes every N-th job")
    g.add_argument("--backend", default=None, help="torch.distributed backend (default: nccl with CUDA, else gloo)")
    return p


def read_jobs(path: str | os.PathLike) -> list[dict]:
    """Jobs ``[{"color", "mask", "out"}, …]`` from a JSON list or a ``COLOR MASK OUT`` text file."""
    from ..io.json_input import expect, read_json

    path = Path(path)
    check(path.is_file(), f"--jobs {path}: no such file")
    text = path.read_bytes()[:1 << 20].decode("utf-8", "replace")
    if text.lstrip().startswith("["):
        jobs = expect(read_json(path, f"--jobs {path}"), list, f"--jobs {path}")
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        jobs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            check(len(parts) == 3, f"{path}:{n}: expected 'COLOR MASK OUT', got {line!r}")
            jobs.append(dict(zip(("color", "mask", "out"), parts)))
    for i, job in enumerate(jobs):
        check(isinstance(job, dict) and all(isinstance(job.get(k), str) and job[k] for k in ("color", "mask", "out")),
              f"{path}: job {i} must be an object with the paths color, mask and out (strings), got {job!r:.200}")
    outs = [str(Path(j["out"]).resolve()) for j in jobs]
    check(len(set(outs)) == len(outs), f"{path}: two jobs write the same output")
    return jobs


def _write(out: Path, video, fps, config, args, extra: dict) -> None:
    from ..io.atomic import atomic_write_json
    from ..io.video import write_video

    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, video, fps)
    atomic_write_json(out.with_name(out.stem + ".generate.json"), {
        "config": config.to_json(), "wan": str(args.wan), "wan_encoders": args.wan_encoders,
        "adapter": None if args.no_adapter else args.adapter, "fps": fps, "frames": int(video.shape[0]),
        "width": int(video.shape[2]), "height": int(video.shape[1]), **extra})


def run(args: argparse.Namespace) -> int:
    """Handler: joins the process group, loads the models on every rank, then CP or DP generation."""
    from .cli import _read_inputs, config_from_args
    from .cli_args import check_model_args, loras_from_args
    from .parallel import enable_generator_context_parallel, init_distributed, split_jobs

    jobs = read_jobs(args.jobs) if args.jobs else None
    if jobs is None:
        missing = [f"--{k}" for k in _OPTIONAL_IN_JOBS_MODE if not getattr(args, k)]
        check(not missing, f"{', '.join(missing)} required (or --jobs FILE)")
    check_model_args(args)
    loras = loras_from_args(args)
    info = init_distributed(args.backend, args.device)
    config = config_from_args(args)
    if info.device.startswith("cuda"):
        config = config.replace(device=info.device)
    from .pipeline import Ex4dGenerator

    adapter = None if args.no_adapter else args.adapter
    t0 = time.perf_counter()
    gen = Ex4dGenerator.load(args.wan, adapter, config, encoders=args.wan_encoders, loras=loras)
    mode = "single"
    if jobs is None and info.world_size > 1:
        check(args.ulysses >= 0 and args.ring >= 1, "--ulysses must be >= 0 and --ring >= 1")
        backend = args.attention if args.attention not in ("auto", "native") else None
        enable_generator_context_parallel(gen, args.ulysses or None, args.ring, backend)
        mode = f"context-parallel ulysses={args.ulysses or info.world_size // args.ring} ring={args.ring}"
    elif jobs is not None:
        mode = f"data-parallel over {info.world_size}"
    load_s = time.perf_counter() - t0
    progress = info.is_main and not args.quiet
    extra = {"parallel": {"mode": mode, "world_size": info.world_size}}
    if jobs is None:
        color, mask, fps = _read_inputs(args.color, args.mask, args.num_frames)
        t1 = time.perf_counter()
        video = gen.generate(color, mask, progress=progress)  # every rank, same inputs: CP needs all of them
        gen_s = time.perf_counter() - t1
        if info.is_main:
            _write(Path(args.out), video, fps, config, args, {
                **extra, "color": str(args.color), "mask": str(args.mask),
                "timings_s": {"load": round(load_s, 3), "generate": round(gen_s, 3)}})
            print(f"wrote {args.out} ({mode}; load {load_s:.1f} s, generate {gen_s:.1f} s)")
    else:
        mine = split_jobs(jobs, info.rank, info.world_size)
        for job in mine:
            color, mask, fps = _read_inputs(job["color"], job["mask"], args.num_frames)
            t1 = time.perf_counter()
            video = gen.generate(color, mask, progress=progress)
            gen_s = time.perf_counter() - t1
            _write(Path(job["out"]), video, fps, config, args, {
                **extra, "rank": info.rank, "color": str(job["color"]), "mask": str(job["mask"]),
                "timings_s": {"generate": round(gen_s, 3)}})
            print(f"[rank {info.rank}] wrote {job['out']} (generate {gen_s:.1f} s)", flush=True)
    return 0  # the process group stays up: end_worker ends the process


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Ex4dError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from .parallel import end_worker

    end_worker(main())
