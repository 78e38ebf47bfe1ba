"""``ex4d prepare``, ``ex4d train``, ``ex4d masks``: thin command-line layers over :mod:`ex4d.train`.

Registered into the main parser by ``ex4d.cli`` through :func:`register`; also
``python -m ex4d.train COMMAND ...`` (no command = ``train``, so
``accelerate launch -m ex4d.train --data ... --wan ... --out ...`` works).
Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import Ex4dError

__all__ = ["register", "main", "build_parser"]

MASKS_MAX_FRAMES = 1000  # ex4d masks is a preview: a few hundred frames at most
MASKS_MAX_SIZE = 4096

PREPARE_EPILOG = """\
examples:
  ex4d prepare /data/videos --out /data/ex4d-train --depth-model depthcrafter --depth-weights /models/DepthCrafter
  ex4d prepare /data/videos --out /data/ex4d-train --depth-dir /data/depth --ray-address auto
  ex4d prepare list.txt --out /data/ex4d-train --depth-dir /data/depth --executor local   # no Ray

Re-running the same command resumes: finished clips are kept, failed videos are retried.
Each clip: clips/<id>/{gt.mp4, render_180.mp4, mask_180.mp4, depth.npz, cameras.json, meta.json}.
"""

TRAIN_EPILOG = """\
examples:
  ex4d train --data /data/ex4d-train --wan /models/Wan2.1-I2V-14B-480P-Diffusers --out runs/exp1
  ex4d train ... --out runs/exp1 --resume                      # continue from the newest checkpoint
  accelerate launch --config_file $(python -c "import ex4d.train as t; print(t.accelerate_config('ddp'))") \\
      -m ex4d.train --data ... --wan ... --out runs/exp1       # 8 GPUs, DDP (or 'fsdp')

Writes runs/exp1/{config.json, logs/ (metrics.jsonl, tensorboard), checkpoints/step-N/, validation/step-N/,
adapter.safetensors, ex4d.ckpt}; both adapters load in `ex4d generate --adapter`.
"""


def _add_mask_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulated masks (see ex4d.train.masks)")
    g.add_argument("--tracking", choices=["path", "flow", "mixed"], default="mixed",
                   help="path: per-frame round trips along one smooth camera path; flow: one novel camera, the "
                        "anchor frame's mask carried along optical flow; mixed: per clip (%(default)s)")
    g.add_argument("--path-probability", type=float, default=0.7, help="mixed: share of 'path' clips (0.7)")
    g.add_argument("--yaw", type=float, nargs=2, default=[10.0, 90.0], metavar=("MIN", "MAX"),
                   help="|yaw| of the sampled camera in degrees, either side (10 90)")
    g.add_argument("--pitch", type=float, default=30.0, help="pitch uniform in ±PITCH degrees (30)")
    g.add_argument("--dolly", type=float, default=0.3, help="dolly uniform in ±DOLLY (0.3), on --dolly-probability")
    g.add_argument("--dolly-probability", type=float, default=0.3, help="share of cameras that dolly (0.3)")
    g.add_argument("--filter", choices=["grazing", "angle", "boundary"], default="grazing",
                   help="DW-Mesh occlusion filter of the round trip (as `ex4d recon`)")


def _mask_config(args):
    from ..dwmesh import MeshConfig
    from .masks import MaskConfig

    return MaskConfig(tracking=args.tracking, path_probability=args.path_probability, yaw_range=tuple(args.yaw),
                      pitch_max=args.pitch, dolly_max=args.dolly, dolly_probability=args.dolly_probability,
                      mesh=MeshConfig(filter=args.filter))


def register(subparsers) -> None:
    """Add ``prepare``, ``train`` and ``masks`` to the main parser's subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("prepare", formatter_class=fmt, epilog=PREPARE_EPILOG,
                              help="monocular videos → simulated (target, condition, mask) training clips (Ray)",
                              description="Turn monocular videos into EX-4D training samples: depth, simulated "
                                          "novel-view masks, condition = source × mask, target = source.")
    p.add_argument("videos", nargs="+", help="video files, folders (searched recursively) or .txt lists")
    p.add_argument("--out", required=True, help="dataset folder (re-running resumes)")
    g = p.add_argument_group("clips")
    g.add_argument("--num-frames", type=int, default=49, help="frames per clip, 4k+1 (%(default)s)")
    g.add_argument("--stride", type=int, default=1, help="take every n-th frame (%(default)s)")
    g.add_argument("--clips-per-video", type=int, default=1, help="clips per video, evenly spaced (%(default)s)")
    g.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("W", "H"),
                   help="training size, multiples of 16 (512 512)")
    g.add_argument("--resize", choices=["crop", "squash"], default="crop",
                   help="crop: centre-crop to the aspect ratio (default); squash: the original's plain resize")
    g = p.add_argument_group("depth (one of)")
    g.add_argument("--depth-dir", help="folder of depth files named after the videos (STEM.npz / STEM.npy / STEM/)")
    g.add_argument("--depth-kind", choices=["depth", "disparity", "depthcrafter"], default=None,
                   help="what the depth files hold (default: by file, as `ex4d recon`)")
    g.add_argument("--depth-scale", type=float, default=1.0, help="multiply file depth by this")
    g.add_argument("--depth-model", help="estimate depth: depthcrafter | depth-anything-v2")
    g.add_argument("--depth-weights", help="local weights folder of --depth-model")
    g.add_argument("--source-poses", choices=["estimate", "static"], default="estimate",
                   help="estimate (default): the source camera's motion from the clip (no weights), so a fixed "
                        "novel camera ('flow' masks) stays fixed in the world while the source moves; static: "
                        "treat every clip as a tripod shot")
    _add_mask_args(p)
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=["ray", "local"], default="ray",
                   help="ray (default: a local Ray instance, or --ray-address) or local (this process, serial)")
    g.add_argument("--ray-address", default=None, help="Ray cluster to join (e.g. auto)")
    g.add_argument("--workers", type=int, default=None, help="Ray workers (default: CPUs/2, or GPUs/--gpus-per-worker)")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per Ray worker (default: 1 with --depth-model when GPUs exist, else 0)")
    g.add_argument("--retries", type=int, default=2, help="restarts of a crashed worker per video (%(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the simulated cameras (%(default)s)")
    g.add_argument("--crf", type=int, default=15, help="H.264 quality of the clip videos (%(default)s)")
    g.add_argument("--no-depth", action="store_true", help="do not store depth.npz per clip")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)

    p = subparsers.add_parser("train", formatter_class=fmt, epilog=TRAIN_EPILOG,
                              help="train the EX-4D adapter (LoRA + camera encoder) on prepared clips (accelerate)",
                              description="Train the EX-4D adapter on Wan2.1-I2V-14B: LoRA (rank/alpha/targets) and "
                                          "the zero-initialised camera encoder, Wan's flow-matching objective, bf16, "
                                          "gradient checkpointing, checkpoints with full resume.")
    add_train_args(p)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("masks", help="preview simulated masks: a video of source | mask | condition",
                              description="Simulate training masks for one clip and write a side-by-side video "
                                          "(source | mask, white = known | condition = source × mask).")
    p.add_argument("video", nargs="?", help="input video (or --example)")
    p.add_argument("--example", action="store_true", help="use the bundled example scene (exact depth)")
    p.add_argument("--depth", help="depth file of the video (.npz/.npy/PNG folder)")
    p.add_argument("--depth-kind", choices=["depth", "disparity", "depthcrafter"], default=None)
    p.add_argument("--out", required=True, help="preview video (.mp4)")
    p.add_argument("--num-frames", type=int, default=49, help="frames (%(default)s)")
    p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("W", "H"), help="frame size (512 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled camera (%(default)s)")
    p.add_argument("--camera", type=float, nargs=3, metavar=("YAW", "PITCH", "DOLLY"),
                   help="use this camera instead of sampling one")
    _add_mask_args(p)
    p.set_defaults(func=run_masks)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The ``ex4d train`` flags (defaults = :class:`~ex4d.train.config.TrainConfig`'s)."""
    from .config import TrainConfig

    d = TrainConfig(data="", wan="", out="")
    p.add_argument("--data", required=True, help="prepared dataset (ex4d prepare --out)")
    p.add_argument("--wan", required=True, help="Wan2.1-I2V-14B-480P folder (diffusers or original layout)")
    p.add_argument("--wan-encoders", help="diffusers folder for the text/image encoders (with an original --wan)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue from the newest checkpoint in --out (or from CKPT)")
    p.add_argument("--init-adapter", help="start from an adapter (ex4d.ckpt or .safetensors)")
    p.add_argument("--val-data", help="held-out dataset (default: hold out --val-clips of --data)")
    p.add_argument("--val-clips", type=int, default=d.val_clips, help="validation clips (%(default)s)")
    g = p.add_argument_group("adapter")
    g.add_argument("--rank", type=int, default=d.rank, help="LoRA rank (%(default)s, the original's)")
    g.add_argument("--alpha", type=float, default=d.alpha, help="LoRA alpha (%(default)s, the original's)")
    g.add_argument("--lora-targets", default="all",
                   help="comma list: all | self_attn | cross_attn | attn | ffn | layer names (%(default)s)")
    g.add_argument("--hidden", type=int, default=d.hidden, help="camera encoder width (%(default)s)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=d.learning_rate, help="AdamW learning rate (%(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--lr-schedule", choices=["constant", "cosine"], default=d.lr_schedule)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    g.add_argument("--max-steps", type=int, default=d.max_steps)
    g.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) at this step")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per GPU per micro-step")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--num-frames", type=int, default=None, help="frames per clip, 4k+1 (default: as stored)")
    g.add_argument("--erosion", type=int, nargs=2, default=list(d.erosion), metavar=("MIN", "MAX"),
                   help="per-frame mask erosion kernel px (2 8, the original's); 0 0 disables")
    g.add_argument("--shift", type=float, default=d.shift)
    g.add_argument("--weighting", choices=["bell", "none"], default=d.weighting)
    g.add_argument("--mixed-precision", choices=["bf16", "fp16", "no"], default=d.mixed_precision)
    g.add_argument("--weights-dtype", choices=["bfloat16", "float16", "float32"], default=d.weights_dtype)
    g.add_argument("--no-gradient-checkpointing", action="store_true")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--cache-latents", action="store_true", help="keep encoded clips in memory (needs --erosion 0 0)")
    g.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers")
    g.add_argument("--cpu", action="store_true", help="run on the CPU (tiny models only)")
    g = p.add_argument_group("logging, checkpoints, validation")
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    g.add_argument("--validate-every", type=int, default=d.validate_every)
    g.add_argument("--no-val-render", action="store_true", help="validation loss only, no sampled videos")
    g.add_argument("--val-steps", type=int, default=d.val_steps)
    g.add_argument("--val-cfg", type=float, default=d.val_cfg)
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def train_config_from_args(args):
    """The :class:`~ex4d.train.config.TrainConfig` of ``ex4d train``'s flags (validated)."""
    from .config import TrainConfig

    return TrainConfig(
        data=str(Path(args.data).resolve()), wan=str(Path(args.wan).resolve()), out=str(Path(args.out).resolve()),
        wan_encoders=args.wan_encoders, val_data=args.val_data, val_clips=args.val_clips,
        init_adapter=args.init_adapter, rank=args.rank, alpha=args.alpha, lora_targets=args.lora_targets,
        hidden=args.hidden, learning_rate=args.lr, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm, max_steps=args.max_steps,
        stop_at=args.stop_at, batch_size=args.batch_size, grad_accum=args.grad_accum, num_frames=args.num_frames,
        erosion=tuple(args.erosion), shift=args.shift, weighting=args.weighting,
        mixed_precision=args.mixed_precision, weights_dtype=args.weights_dtype,
        gradient_checkpointing=not args.no_gradient_checkpointing, seed=args.seed, cache_latents=args.cache_latents,
        num_workers=args.num_workers, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, validate_every=args.validate_every,
        val_render=not args.no_val_render, val_steps=args.val_steps, val_cfg=args.val_cfg,
        tensorboard=not args.no_tensorboard, cpu=args.cpu).check()


def run_prepare(args) -> int:
    from .prepare import PrepareConfig, prepare_dataset

    w, h = args.size
    config = PrepareConfig(num_frames=args.num_frames, stride=args.stride, clips_per_video=args.clips_per_video,
                           width=w, height=h, resize=args.resize, depth_dir=args.depth_dir, depth_kind=args.depth_kind,
                           depth_scale=args.depth_scale, depth_model=args.depth_model,
                           depth_weights=args.depth_weights, masks=_mask_config(args), seed=args.seed, crf=args.crf,
                           save_depth=not args.no_depth, source_poses=args.source_poses)
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if args.depth_model and _has_cuda() else 0.0
    summary = prepare_dataset(args.videos, args.out, config, executor=args.executor, ray_address=args.ray_address,
                              num_workers=args.workers, gpus_per_worker=gpus, retries=args.retries,
                              progress=not args.quiet)
    for video, reason in summary.skipped + summary.failed:
        print(f"  {video}: {reason}", file=sys.stderr)
    print(f"{args.out}: {summary.line()}")
    return 1 if summary.failed else 0


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def run_train(args) -> int:
    from .preflight import check_train_inputs

    config = train_config_from_args(args)
    check_train_inputs(config, args.resume)  # every input checked before torch/accelerate/Wan are loaded
    from .trainer import train

    result = train(config, resume=args.resume, progress=not args.quiet)
    if not result.main_process:
        return 0
    last = result.history[-1] if result.history else {}
    msg = f"{config.out}: step {result.step}"
    if "loss" in last:
        msg += f", loss {last['loss']:.4f}"
    if result.adapter is not None:
        msg += f"; adapter {result.adapter} and {result.original_ckpt}"
    else:
        msg += f"; resume with --resume (stopped before --max-steps {config.max_steps})"
    print(msg)
    return 0


def run_masks(args) -> int:
    import numpy as np

    from ..cameras import default_intrinsics
    from ..io.video import write_video
    from .masks import CameraSample, apply_mask, camera_path, mask_preview, render_masks, simulate_masks
    from .prepare import _fit_depth, _fit_frames

    w, h = args.size
    _check_masks_args(args)
    if args.example:
        from ..example import make_example

        scene = make_example(args.num_frames, w, h)
        frames, depth, fps = scene.frames, scene.depth, scene.fps
    else:
        if not args.video or not args.depth:
            raise Ex4dError("give a video and its --depth file, or --example")
        from ..io.depth import check_depth_matches_frames, load_depth, match_depth_to_frames
        from ..io.video import read_video

        read = read_video(args.video, num_frames=args.num_frames, max_res=1 << 16, multiple=1, allow_short=True)
        frames = _fit_frames(read.frames, w, h, "crop")
        raw = match_depth_to_frames(load_depth(args.depth, args.depth_kind), read.indices, read.total_frames)
        check_depth_matches_frames(raw.shape, read.source_size[1], read.source_size[0], f"--depth {args.depth}")
        depth = _fit_depth(raw, read.source_size[0], read.source_size[1], w, h, "crop")
        fps = read.fps
    K = default_intrinsics(w, h)
    config = _mask_config(args)
    if args.camera:
        yaw, pitch, dolly = args.camera
        tracking = "flow" if args.tracking == "flow" else "path"
        sample = CameraSample(tracking, "orbit", yaw, pitch, dolly)
        w2c = camera_path(sample, len(frames), K, depth[0], config.ease)
        if tracking == "flow":
            from .masks import propagate_masks, round_trip

            mask = propagate_masks(frames, round_trip(frames[0], depth[0], K, w2c[0], config=config)[0])
        else:
            mask = render_masks(frames, depth, K, w2c, config)
        mask[0] = True
    else:
        sim = simulate_masks(frames, depth, K, config, seed=args.seed)
        mask, sample = sim.mask, sim.camera
    write_video(args.out, mask_preview(frames, mask, apply_mask(frames, mask)), fps)
    print(f"wrote {args.out}: source | mask | condition, {len(frames)} frames; camera {sample.to_dict()}; "
          f"{100 * (1 - float(np.mean(mask))):.1f}% unknown")
    return 0


def _check_masks_args(args) -> None:
    """``ex4d masks``' numbers and files, before any frame is read or allocated."""
    import math

    from ..errors import check
    from .preflight import check_output_folder

    w, h = args.size
    check(1 <= args.num_frames <= MASKS_MAX_FRAMES, f"--num-frames must be in 1..{MASKS_MAX_FRAMES}, got "
                                                    f"{args.num_frames}")
    check(16 <= w <= MASKS_MAX_SIZE and 16 <= h <= MASKS_MAX_SIZE,
          f"--size must be in 16..{MASKS_MAX_SIZE} per side, got {w} {h}")
    if args.camera:
        yaw, pitch, dolly = args.camera
        check(all(math.isfinite(v) for v in args.camera), f"--camera values must be finite, got {args.camera}")
        check(abs(yaw) <= 180 and abs(pitch) <= 90 and abs(dolly) < 1,
              f"--camera YAW PITCH DOLLY must be within ±180°, ±90° and (-1, 1), got {yaw:g} {pitch:g} {dolly:g}")
    for flag in ("video", "depth"):
        v = getattr(args, flag)
        check(v is None or Path(v).exists(), f"{'input' if flag == 'video' else '--depth'} {v} does not exist")
    check_output_folder(Path(args.out).parent if str(Path(args.out).parent) else ".", "--out's folder")
    check(not Path(args.out).is_dir(), f"--out {args.out} is a folder; give a video file name (.mp4)")
    check(Path(args.out).suffix.lower() in (".mp4", ".mov", ".mkv"),
          f"--out {args.out} must end in .mp4, .mov or .mkv (a video file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ex4d.train",
                                     description="EX-4D training: prepare | train | masks (default: train)")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m ex4d.train``; without a command name the arguments are ``train``'s."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("prepare", "train", "masks", "-h", "--help"):
        argv = ["train", *argv]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Ex4dError as e:
        print(f"ex4d {args.command}: error: {e}", file=sys.stderr)
        return 2
