"""Command line: ``ex4d recon | run | example | generate | depth | stereo | export | …``. A thin layer over the library.

User errors (:class:`ex4d.errors.Ex4dError`) are printed as one line and exit
with status 2; Ctrl-C exits with 130 and keeps every finished stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import Ex4dError

__all__ = ["main", "build_parser"]

S = argparse.SUPPRESS


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``ex4d run: error: … (see ex4d run --help)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _trajectory_help() -> str:
    from .trajectory import PRESETS

    lines = [f"  {name:11s} {text}".replace("%", "%%") for name, text in PRESETS.items()]
    return ("camera path: a preset, a keyframe .json, or a camera file (cameras.json / the original's .npz);\n"
            "default ex4d-90 (the original's 90° orbit).\n"
            "presets:\n" + "\n".join(lines))


def _add_common(p: argparse.ArgumentParser) -> None:
    """Flags shared by recon and run. Defaults live in RunConfig; flags left out keep them (or --config's)."""
    p.add_argument("video", nargs="?", default=S, help="input video (mp4/mov/webm/mkv/avi/gif) or a folder of images")
    p.add_argument("--example", action="store_true", default=S,
                   help="use the bundled example scene (exact depth, nothing to download)")
    p.add_argument("--example-size", type=int, default=S, help="example frame size in pixels (default 512)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="re-run with the parameters of a previous run's config.json "
                                    "(flags given here override it)")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that holds another run "
                                                            "(unchanged stages are still reused)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("frames")
    g.add_argument("--num-frames", type=int, default=S, help="frames to take (default 49; 0 = all)")
    g.add_argument("--start", type=int, default=S, help="first frame index (default 0)")
    g.add_argument("--stride", type=int, default=S, help="take every n-th frame (default 1)")
    g.add_argument("--max-res", type=int, default=S, help="longer side at most this many pixels (default 1024); "
                                                          "sides are rounded to multiples of 16")
    g.add_argument("--allow-short", action="store_true", default=S,
                   help="take what there is when the video has fewer frames than asked")

    g = p.add_argument_group("depth")
    g.add_argument("--depth", default=S, help="depth file: .npz (DepthCrafter 'depth', Video-Depth-Anything "
                                              "'depths'), .npy, or a folder of 16-bit PNGs")
    g.add_argument("--depth-kind", choices=["depth", "disparity", "depthcrafter"], default=S,
                   help="what the file holds: z-depth, relative disparity (normalised, then mapped as the original), "
                        "or DepthCrafter's normalised disparity with the original's exact mapping "
                        "(default: depthcrafter for key 'depth', disparity for 'depths', depth otherwise)")
    g.add_argument("--depth-key", default=S, help="array name inside an .npz")
    g.add_argument("--depth-scale", type=float, default=S, help="multiply the depth by this (e.g. 0.001 for mm PNGs)")
    g.add_argument("--depth-model", default=S,
                   help="estimate depth with a model: depthcrafter (the original's) or depth-anything-v2 "
                        "(video-depth-anything: run it yourself and pass its npz with --depth)")
    g.add_argument("--depth-weights", default=S, help="local folder with the depth model's weights")
    from .depth.cli import add_depth_option_args

    add_depth_option_args(p)

    g = p.add_argument_group("intrinsics (default: f = 500 px at 512 px, i.e. ≈54° across the longer side)")
    g.add_argument("--fov", type=float, default=S, help="field of view across the longer side, degrees")
    g.add_argument("--focal", type=float, default=S, help="focal length in pixels of the processed frames")
    g.add_argument("--intrinsics", default=S, help="camera file (cameras.json / .npz) to take K from")

    g = p.add_argument_group("source camera (see README: Source camera motion)")
    g.add_argument("--source-poses", default=S, metavar="estimate|static|FILE",
                   help="where the source camera was: estimate (default: tracks + depth → PnP → bundle adjustment, "
                        "no weights; a tripod shot gives exactly the identity), static (a tripod, as before), or a "
                        "cameras.json with \"frame\": \"world\" (e.g. source_cameras.json) or a COLMAP model folder. "
                        "Without --fov/--focal/--intrinsics, estimate also measures the focal length where the video "
                        "has parallax")
    g.add_argument("--align-depth", choices=["auto", "affine", "scale", "none"], default=S,
                   help="how relative depth is made consistent with the estimated poses, frame by frame: affine "
                        "(scale and shift of the disparity, fitted to the bundle adjustment's points; scale alone "
                        "where a frame's tracks span too little depth), scale, none; auto (default): affine for "
                        "relative depth (disparity, DepthCrafter, depth models), none for --depth-kind depth")
    g.add_argument("--path-frame", choices=["source", "world"], default=S,
                   help="source (default; EX-4D's meaning): each novel camera is relative to that frame's source "
                        "camera, so the path follows a moving source; world: the path is in the world (= source "
                        "frame 0), e.g. an orbit whose pivot stays put while a hand-held source wanders. A camera "
                        "file's own \"frame\" field wins")

    g = p.add_argument_group("camera path")
    g.add_argument("--trajectory", "--cam", default=S, metavar="SPEC", help=_trajectory_help())
    for name, kind, text in [("yaw", float, "degrees in [-90, 90], + moves right"),
                             ("pitch", float, "degrees in [-90, 90], + moves up"),
                             ("dolly", float, "fraction of the pivot distance, + pushes in"),
                             ("zoom", float, "focal length multiplier"),
                             ("pivot-depth", float, "depth of the orbit's pivot point (scene units)"),
                             ("ease", str, "smoothstep | smootherstep | linear"),
                             ("radius", float, "ex4d-* presets: override r"),
                             ("rounds", float, "ex4d-* presets: override the sweep multiplier")]:
        g.add_argument(f"--{name}", type=kind, default=S, help=text)

    g = p.add_argument_group("DW-Mesh and rendering")
    g.add_argument("--filter", choices=["step", "grazing", "angle", "boundary"], default=S,
                   help="which faces count as occluded: step (default: a face whose disparity jump no slope beside "
                        "it explains; keeps steep planes and limbs), grazing (the previous default: faces seen at "
                        "> 84°), angle (the original's default: smallest angle < 2.5°), boundary (the original's "
                        "alternative)")
    g.add_argument("--sharpen", choices=["auto", "none", "snap", "median"], default=S,
                   help="depth-edge pre-pass before meshing: snap (colour-guided: estimators' ramps become steps "
                        "where the colour changes), median (3D-photo's bilateral median), none; auto (default) = "
                        "snap with --filter step, none with the others")
    g.add_argument("--soft", choices=["auto", "on", "off"], default=S,
                   help="step filter: also drop faces seen at grazing angles (the grazing test) on soft, "
                        "estimated depth: auto (default: where most depth steps are ramps), on, off")
    g.add_argument("--cover", choices=["auto", "on", "off"], default=S,
                   help="occluded faces also occlude at their nearest corner's depth, so a surface that may reach "
                        "past its last pixel hides what is behind it: auto (default: with --filter step), on, off")
    g.add_argument("--step-min-angle", type=float, default=S,
                   help="step filter: smallest break, as an angle from the viewing ray in degrees (45)")
    g.add_argument("--min-angle", type=float, default=S, help="angle filter threshold in degrees (2.5)")
    g.add_argument("--grazing", type=float, default=S, help="grazing filter threshold in degrees (84)")
    g.add_argument("--alpha-mode", choices=["face", "vertex"], default=S,
                   help="face: per-face flags (default); vertex: the original's per-vertex alpha, thresholded at 125")
    g.add_argument("--backend", choices=["numba", "torch"], default=S,
                   help="rasterizer (default: torch on a CUDA GPU, else numba)")

    g = p.add_argument_group("outputs")
    g.add_argument("--png", action="store_true", default=S,
                   help="also write lossless frames color/*.png, mask/*.png (and output/*.png for run)")
    g.add_argument("--save-mesh", action="store_true", default=S, help="also write each frame's DW-Mesh as PLY")
    g.add_argument("--crf", type=int, default=S, help="H.264 quality of the mp4 outputs (0–51, lower is better; 18)")


def _add_fill(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fill")
    g.add_argument("--fill", choices=["classical", "ex4d", "none"], default=S,
                   help="classical: no weights, preview quality (default); ex4d: the EX-4D diffusion adapter "
                        "(needs --wan and --adapter); none: stop after the render")
    g.add_argument("--fill-window", type=int, default=S, help="classical: farthest frame offset to borrow from (4; each offset costs one render per frame)")
    g.add_argument("--wan", default=S, help="ex4d: local Wan2.1-I2V-14B-480P folder (diffusers layout)")
    g.add_argument("--adapter", default=S, help="ex4d: EX-4D adapter (ex4d.ckpt or our .safetensors)")
    g.add_argument("--memory", choices=["full", "balanced", "low"], default=S,
                   help="ex4d: GPU memory mode (full ≈ the whole model on the GPU; balanced/low offload)")
    g.add_argument("--steps", type=int, default=S, help="ex4d: denoising steps (25)")
    g.add_argument("--compile", action="store_true", default=S,
                   help="ex4d: torch.compile the DiT blocks (CUDA; --memory full or balanced, or low with "
                        "--fp8-matmul; faster after a warm-up)")
    g.add_argument("--step-cache", choices=["none", "first-block"], default=S,
                   help="ex4d: first-block cache, skipping DiT blocks on steps that barely change (faster, "
                        "changes results; none)")
    g.add_argument("--step-cache-threshold", type=float, default=S, help="ex4d: first-block cache threshold (0.05)")
    g.add_argument("--fp8-matmul", action="store_true", default=S,
                   help="ex4d: fp8 matmuls in the DiT blocks (GPUs of compute capability 8.9+; faster, changes "
                        "results slightly)")
    g.add_argument("--prompt", default=S, help="ex4d: text prompt (default: the original's)")
    g.add_argument("--seed", type=int, default=S, help="random seed (default 0)")
    g.add_argument("--window", type=int, default=S,
                   help="ex4d: frames per generation window, 4k+1 (49, the adapter's training length); longer clips "
                        "are generated in overlapping windows that continue each other")
    g.add_argument("--overlap", type=int, default=S,
                   help="ex4d: frames each window shares with the previous one, given to the model as known (9: the "
                        "I2V frame + two whole VAE latents)")
    g.add_argument("--lift", choices=["background", "none"], default=S,
                   help="ex4d: lift finished frames to 3D and show them again as known pixels in later windows "
                        "(background: weight-free depth completion, default; none: off)")
    g.add_argument("--no-lift", dest="lift", action="store_const", const="none", default=S,
                   help="ex4d: same as --lift none")
    from .scene_cli import add_stereo_args

    add_stereo_args(p.add_argument_group("stereo (also write stereo.mp4; the left eye is output.mp4)"), run=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ex4d", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Camera-controllable 4D video from one monocular video (EX-4D reimplementation).",
        epilog="examples:\n"
               "  ex4d run --example --out out/                       # the bundled example, end to end\n"
               "  ex4d recon input.mp4 --depth depth.npz --trajectory ex4d-90 --out out/\n"
               "  ex4d run input.mp4 --depth depth.npz --trajectory orbit --yaw 60 --out out/\n")
    parser.add_argument("--version", action="version", version=f"ex4d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fmt = argparse.RawTextHelpFormatter
    p = sub.add_parser("recon", formatter_class=fmt, help="video + depth → novel-view color.mp4 and mask.mp4",
                       description="Build each frame's DW-Mesh and render it along a new camera path: writes "
                                   "color.mp4, mask.mp4 (255 = known), cameras.json, cameras_ex4d.npz, config.json.")
    _add_common(p)
    p.set_defaults(func=_cmd_recon)

    p = sub.add_parser("run", formatter_class=fmt, help="the whole job: recon, then fill the unknown regions",
                       description="recon, then complete the masked video: writes output.mp4 and preview.mp4 "
                                   "(input | render with unknown in magenta | output) beside the recon outputs. "
                                   "Re-running the same command reuses finished stages.")
    _add_common(p)
    _add_fill(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("example", help="write the bundled example scene as a video and an exact depth file")
    p.add_argument("--out", required=True, help="folder for input.mp4 and depth.npz")
    p.add_argument("--num-frames", type=int, default=49, help="frames of the scene (default 49)")
    p.add_argument("--size", type=int, default=512, help="frame width and height in pixels, a multiple of 16 ≥ 64 "
                                                         "(default 512)")
    p.add_argument("--source-motion", choices=["static", "handheld", "pan", "travel"], default="static",
                   help="how the source camera moves (default static: the tripod example); a moving one also writes "
                        "the true poses as true_source_cameras.json (\"frame\": \"world\")")
    p.add_argument("--scene", choices=["example", "layout"], default="example",
                   help="example (room corner, box, pillar, rolling ball) or layout (another room with a spinning box "
                        "and a ball coming closer; roomier, for handheld and pan motions)")
    p.set_defaults(func=_cmd_example)

    for module in ("ex4d.poses.cli", "ex4d.diffusion.cli", "ex4d.depth.cli", "ex4d.eval.cli", "ex4d.train.cli",
                   "ex4d.app.cli", "ex4d.scene_cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:  # that part of the package is not installed: skip its commands
            if e.name and module.startswith(e.name):
                continue
            raise
        mod.register(sub)
    return parser


def _run_config(args: argparse.Namespace, with_fill: bool):
    """RunConfig from defaults ← --config file ← flags given on the command line."""
    from .dwmesh import MeshConfig
    from .errors import check
    from .pipeline import RunConfig
    from .recon import ReconConfig

    base: dict = {}
    if args.config:
        from .io.json_input import check_fields, read_json, require

        what = f"--config {args.config}"
        base = require(read_json(args.config, what), "run", dict, f"{what} (an ex4d config.json)")
        base = check_fields(RunConfig, base, f"{what}: 'run'")
    a = vars(args)
    direct = {"video": "video", "example": "example", "example_size": "example_size", "num_frames": "num_frames",
              "start": "start", "stride": "stride", "max_res": "max_res", "allow_short": "allow_short",
              "depth": "depth", "depth_kind": "depth_kind", "depth_key": "depth_key", "depth_scale": "depth_scale",
              "depth_model": "depth_model", "depth_weights": "depth_weights", "fov": "fov", "focal": "focal",
              "intrinsics": "intrinsics", "trajectory": "trajectory", "png": "png", "save_mesh": "save_mesh",
              "crf": "crf", "fill": "fill", "seed": "seed", "source_poses": "source_poses", "path_frame": "path_frame"}
    check("video" not in a or "example" not in a, "give either an input video or --example, not both")
    d = dict(base)
    for flag, key in direct.items():
        if flag in a:
            d[key] = a[flag]
    if d.get("num_frames") == 0:
        d["num_frames"] = None
    if d.get("video"):
        d["video"] = str(Path(d["video"]).resolve())
        d.pop("example", None)
        if "example" not in a:
            d["example"] = False
    for k in ("depth", "intrinsics"):
        if d.get(k):
            d[k] = str(Path(d[k]).resolve())
    if d.get("source_poses") not in (None, "estimate", "static"):
        d["source_poses"] = str(Path(d["source_poses"]).resolve())
    if "align_depth" in a:
        poses = d.get("poses")
        d["poses"] = dict(poses.to_dict() if hasattr(poses, "to_dict") else (poses or {}), align_depth=a["align_depth"])
    topts = dict(d.get("trajectory_options", {}))
    if "trajectory" in a and base.get("trajectory") != a["trajectory"]:
        topts = {}
    for name in ("yaw", "pitch", "dolly", "zoom", "pivot_depth", "ease", "radius", "rounds"):
        if name in a:
            topts[name] = a[name]
    d["trajectory_options"] = topts
    if d.get("depth_model"):
        from .depth.cli import depth_options

        dopts = dict(d.get("depth_options", {})) if "depth_model" not in a else {}
        dopts.update(depth_options(args, d["depth_model"]))
        d["depth_options"] = dopts
    if d.get("trajectory") and Path(d["trajectory"]).exists():
        d["trajectory"] = str(Path(d["trajectory"]).resolve())

    recon = dict(base.get("recon", {}))
    mesh = dict(recon.get("mesh", {}))
    for flag, key in (("filter", "filter"), ("min_angle", "min_angle_deg"), ("grazing", "grazing_deg"),
                      ("alpha_mode", "alpha_mode"), ("sharpen", "sharpen"), ("soft", "soft_mode"),
                      ("cover", "cover"), ("step_min_angle", "step_min_deg")):
        if flag in a:
            mesh[key] = a[flag]
    if "backend" in a:
        recon["backend"] = a["backend"]
    recon["mesh"] = mesh
    d["recon"] = ReconConfig.from_dict(recon)
    MeshConfig(**mesh)  # validate early

    fopts = dict(d.get("fill_options", {}))
    if with_fill:
        if "fill" in a and base.get("fill") != a["fill"]:
            fopts = {}
        fill = a.get("fill", base.get("fill", "classical"))
        for flag in ("window", "overlap", "lift"):
            if flag in a and fill != "ex4d":
                raise Ex4dError(f"--{flag} applies to --fill ex4d (generation windows); for the classical fill "
                                "use --fill-window (frames to borrow from)")
            if flag in a:
                fopts[flag] = a[flag]
        if "fill_window" in a:
            if fill == "ex4d":
                raise Ex4dError("--fill-window applies to --fill classical; for --fill ex4d use --window and "
                                "--overlap (generation windows)")
            fopts["window"] = a["fill_window"]
        for k in ("wan", "adapter"):
            if k in a:
                fopts[k] = str(Path(a[k]).resolve())
        for k in ("memory", "steps", "prompt", "compile", "step_cache", "step_cache_threshold", "fp8_matmul"):
            if k in a:
                fopts[k] = a[k]
    d["fill_options"] = fopts
    if with_fill:
        from .scene_cli import stereo_options

        d["stereo"], d["stereo_options"] = stereo_options(args, d.get("stereo"), d.get("stereo_options", {}))
    return RunConfig.from_dict({k: (v.to_dict() if k in ("recon", "poses") and hasattr(v, "to_dict") else v)
                                for k, v in d.items()})


def _warn(command: str):
    return lambda message: print(f"ex4d {command}: warning: {message}", file=sys.stderr)


def _cmd_recon(args) -> int:
    from .pipeline import run_pipeline

    summary = run_pipeline(_run_config(args, with_fill=False), args.out, overwrite=args.overwrite, fill=False,
                           progress=not args.quiet, warn=_warn("recon"))
    print(summary.line())
    return 0


def _cmd_run(args) -> int:
    from .pipeline import run_pipeline

    summary = run_pipeline(_run_config(args, with_fill=True), args.out, overwrite=args.overwrite, fill=True,
                           progress=not args.quiet, warn=_warn("run"))
    print(summary.line())
    return 0


def _cmd_example(args) -> int:
    from .example import make_example
    from .io.depth import save_depth_npz
    from .io.video import write_video

    from .errors import check
    from .io.outdir import check_output_location

    check(1 <= args.num_frames <= 10_000, f"--num-frames must be in [1, 10000], got {args.num_frames}")
    check(64 <= args.size <= 4096 and args.size % 16 == 0,
          f"--size must be a multiple of 16 in [64, 4096], got {args.size}")
    out = Path(args.out)
    check_output_location(out, "--out")
    if args.source_motion == "static" and args.scene == "example":
        scene = make_example(args.num_frames, args.size, args.size)
        frames, depth, fps = scene.frames, scene.depth, scene.fps
    else:
        from .cameras import default_intrinsics
        from .eval.scenes import get_scene, render_source, source_motion
        from .io.camera_files import write_cameras_json

        K = default_intrinsics(args.size, args.size)
        w2c = source_motion(args.source_motion, args.num_frames)
        try:
            frames, depth = render_source(get_scene(args.scene), args.num_frames, K, args.size, args.size, w2c,
                                          supersample=2)
        except Ex4dError:
            raise Ex4dError(f"the {args.scene} scene does not fill the view of a {args.source_motion} camera; "
                            "use --scene layout") from None
        fps = 24.0
        write_cameras_json(out / "true_source_cameras.json", w2c, K, args.size, args.size, fps, frame="world")
    write_video(out / "input.mp4", frames, fps)
    save_depth_npz(out / "depth.npz", depth)
    print(f"wrote {out / 'input.mp4'} and {out / 'depth.npz'} ({args.num_frames} frames, {args.size}×{args.size}, "
          "exact z-depth; use --depth-kind depth)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``ex4d`` command; returns the exit status (0 ok, 2 bad input, 130 Ctrl-C, 1 internal error)."""
    from .errors import report_error
    from .interrupt import sigint_deferred_in_native

    prog, resume = "ex4d", False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            if getattr(args, "command", None) is None:
                parser.print_help()
                return 2
            print(f"ex4d {args.command}: error: incomplete command (see `ex4d {args.command} --help`)",
                  file=sys.stderr)
            return 2
        prog, resume = f"ex4d {args.command}", args.command in ("run", "recon")
        with sigint_deferred_in_native():
            return int(args.func(args) or 0)
    except BaseException as e:  # noqa: BLE001 - every ending is decided in one place (report_error)
        return report_error(e, prog, resume_hint=resume)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
