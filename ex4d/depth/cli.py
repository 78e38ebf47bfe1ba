"""``ex4d depth``: estimate depth for a video and write it as a depth npz.

    ex4d depth input.mp4 --depth-model depth-anything-v2 --depth-weights /models/Depth-Anything-V2-Small-hf \\
        --out depth.npz

The npz (:func:`ex4d.io.depth.save_depth_npz`) holds ``depth`` [T, H, W]
float32 z-depth at the read frames' size, ``kind='depth'``, ``indices`` (the
source frame of each depth frame), ``params`` (JSON of model, weights and
options), ``model``, ``source``, ``fps``; ``ex4d run --depth depth.npz`` reads
it back.

:func:`add_depth_option_args` and :func:`depth_options` let other commands
(``ex4d run``) offer the same per-model flags (``--depth-steps``,
``--svd-weights``, …); :func:`add_depth_model_args` / :func:`depth_request`
add ``--depth-model`` and ``--depth-weights`` too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import check
from .common import DEPTH_MODELS

__all__ = ["register", "run_depth_command", "add_depth_model_args", "add_depth_option_args", "depth_options",
           "depth_request"]

#: flag dest → (option name, model it applies to)
_MODEL_FLAGS = {
    "depth_steps": ("num_inference_steps", "depthcrafter"),
    "depth_guidance": ("guidance_scale", "depthcrafter"),
    "depth_window": ("window_size", "depthcrafter"),
    "depth_overlap": ("overlap", "depthcrafter"),
    "depth_max_res": ("max_res", "depthcrafter"),
    "depth_seed": ("seed", "depthcrafter"),
    "svd_weights": ("svd_weights", "depthcrafter"),
    "depth_batch": ("batch_size", "depth-anything-v2"),
    "depth_input_size": ("input_size", "depth-anything-v2"),
    "depth_align": ("align", "depth-anything-v2"),
    "depth_smooth": ("smooth", "depth-anything-v2"),
}


def add_depth_model_args(parser: argparse.ArgumentParser, default_model: str | None = "depthcrafter") -> None:
    """Add ``--depth-model``, ``--depth-weights`` and :func:`add_depth_option_args`' flags to ``parser``."""
    g = parser.add_argument_group("depth model")
    g.add_argument("--depth-model", choices=DEPTH_MODELS, default=default_model,
                   help="monocular depth model (default: %(default)s, the EX-4D original's). "
                        "video-depth-anything is not supported: run it yourself and give its npz to `ex4d run --depth`")
    g.add_argument("--depth-weights", metavar="DIR",
                   help="local weights folder of the depth model (see the README for each model's layout)")
    add_depth_option_args(parser)


def add_depth_option_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--depth-dtype``, ``--svd-weights`` and the per-model ``--depth-*`` flags (all default to None = unset)."""
    g = parser.add_argument_group("depth model options")
    g.add_argument("--depth-dtype", choices=("auto", "float16", "bfloat16", "float32"),
                   help="compute precision (default auto: float16 on a GPU, float32 on CPU)")
    g.add_argument("--svd-weights", metavar="DIR",
                   help="DepthCrafter: Stable Video Diffusion img2vid(-xt) folder, if not DIR/svd of --depth-weights")
    g.add_argument("--depth-steps", metavar="N", type=int, help="DepthCrafter: denoising steps per window (default 5)")
    g.add_argument("--depth-guidance", metavar="G", type=float,
                   help="DepthCrafter: guidance scale (default 1.0: no guidance)")
    g.add_argument("--depth-window", metavar="N", type=int,
                   help="DepthCrafter: frames per window (default 110; lower it if the GPU runs out of memory)")
    g.add_argument("--depth-overlap", metavar="N", type=int,
                   help="DepthCrafter: frames shared by consecutive windows (default 25)")
    g.add_argument("--depth-max-res", metavar="PX", type=int, help="DepthCrafter: longer side it runs at (default 1024)")
    g.add_argument("--depth-seed", metavar="N", type=int, help="DepthCrafter: noise seed (default 42)")
    g.add_argument("--depth-batch", metavar="N", type=int,
                   help="Depth Anything V2: frames per forward pass (default 8)")
    g.add_argument("--depth-input-size", metavar="PX", type=int,
                   help="Depth Anything V2: shorter side fed to the model (default: the checkpoint's, 518)")
    g.add_argument("--depth-align", choices=("auto", "affine", "scale", "none"),
                   help="Depth Anything V2: per-frame alignment for temporal consistency (default auto: affine for "
                        "relative, scale for metric checkpoints)")
    g.add_argument("--depth-smooth", metavar="SIGMA", type=float,
                   help="Depth Anything V2: temporal Gaussian smoothing in frames (default 0: off)")


def depth_options(args: argparse.Namespace, model: str) -> dict:
    """Options for :func:`ex4d.depth.estimate_depth` from the flags of :func:`add_depth_option_args` that were given.

    Raises Ex4dError when a flag belongs to another model. Flags missing from
    ``args`` (e.g. defined with ``argparse.SUPPRESS``) count as not given.
    """
    options = {}
    for dest, (name, owner) in _MODEL_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        check(owner == model, f"--{dest.replace('_', '-')} applies to --depth-model {owner}, not {model}")
        options[name] = value
    dtype = getattr(args, "depth_dtype", None)
    if dtype not in (None, "auto"):
        options["dtype"] = dtype
    return options


def depth_request(args: argparse.Namespace) -> dict:
    """Keyword arguments for :func:`ex4d.depth.estimate_depth` (``model``, ``weights``, options) from parsed flags.

    Raises Ex4dError when a model-specific flag is given for another model or
    when ``--depth-weights`` is missing.
    """
    model = getattr(args, "depth_model", None)
    weights = getattr(args, "depth_weights", None)
    check(model is not None, "no depth model: pass --depth-model")
    check(model == "video-depth-anything" or weights is not None,
          f"--depth-model {model} needs --depth-weights DIR (the model's local weights folder)")
    return {"model": model, "weights": weights, **depth_options(args, model)}


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``depth`` command to ``subparsers``; its handler is ``args.func`` (:func:`run_depth_command`)."""
    p = subparsers.add_parser("depth", help="estimate depth for a video and save it as an npz",
                              description="Estimate z-depth for the frames of a video with a monocular depth model "
                                          "and write it to an npz that `ex4d run --depth` reads.")
    p.add_argument("input", help="video file (mp4/mov/webm/mkv/avi/gif) or folder of images")
    p.add_argument("--out", required=True, metavar="DEPTH.npz", help="output depth file (.npz)")
    p.add_argument("--num-frames", type=int, default=49, help="frames to read (default 49; 0 = all)")
    p.add_argument("--start", type=int, default=0, help="first source frame (default 0)")
    p.add_argument("--stride", type=int, default=1, help="step between source frames (default 1)")
    p.add_argument("--max-res", type=int, default=1024, help="longer side of the frames read (default 1024)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_depth_model_args(p)
    p.set_defaults(func=run_depth_command)
    return p


def run_depth_command(args: argparse.Namespace) -> int:
    """Handler of ``ex4d depth``: read frames, estimate depth, write the npz atomically; returns 0."""
    from ..io.depth import save_depth_npz
    from ..io.video import read_video
    from . import depth_params, estimate_depth

    out = Path(args.out)
    check(out.suffix.lower() == ".npz", f"--out {out} must end in .npz")
    request = depth_request(args)
    depth_params(device=args.device, **request)  # checks the weights folder and options before decoding the video
    frames = read_video(args.input, num_frames=args.num_frames or None, start=args.start, stride=args.stride,
                        max_res=args.max_res)
    t0 = time.perf_counter()
    res = estimate_depth(frames.frames, device=args.device, progress=not args.quiet, **request)
    seconds = time.perf_counter() - t0
    meta = {"indices": frames.indices, "params": json.dumps(res.params, sort_keys=True), "model": res.params["model"],
            "source": frames.source, "fps": frames.fps}
    if res.K is not None:
        meta["K"] = res.K
    save_depth_npz(out, res.depth, **meta)
    T, H, W = res.depth.shape
    print(f"wrote {out}: {T} frames {W}x{H}, depth {float(res.depth.min()):.4g}–{float(res.depth.max()):.4g} "
          f"({res.params['model']}, {seconds:.1f} s)")
    return 0
