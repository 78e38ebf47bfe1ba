"""``ex4d poses VIDEO --depth D --out DIR``: the source camera's poses and focal length, a report and a plot."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser(
        "poses", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="estimate the source camera's poses and focal length (no weights)",
        description="Where the camera that filmed the video was, frame by frame: OpenCV point tracks lifted with the "
                    "depth, PnP/RANSAC, bundle adjustment (moving objects are outliers). Writes DIR/source_cameras.json "
                    "(OpenCV w2c, \"frame\": \"world\" = source frame 0, in the depth's units; give it back to a run "
                    "with --source-poses), DIR/poses_report.json (per-frame tracks, inliers, reprojection error) and "
                    "DIR/poses.png (the path; needs matplotlib). The focal length is estimated unless "
                    "--fov/--focal/--intrinsics is given; a video without parallax keeps the default (54° across the "
                    "longer side) and the report says so.",
        epilog="example:\n  ex4d poses handheld.mp4 --depth depth.npz --out poses/")
    p.add_argument("video", help="input video file or image folder")
    p.add_argument("--depth", required=True, help="depth file (.npz / .npy / PNG folder), as for ex4d run")
    p.add_argument("--depth-kind", choices=["depth", "disparity", "depthcrafter"], default=None,
                   help="what the depth file holds (default: by file type, as for ex4d run)")
    p.add_argument("--depth-key", default=None, help="array name inside an .npz")
    p.add_argument("--depth-scale", type=float, default=1.0, help="multiply the depth by this (default 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-frames", type=int, default=49, help="frames to take (default 49; 0 = all)")
    p.add_argument("--start", type=int, default=0, help="first frame index (default 0)")
    p.add_argument("--stride", type=int, default=1, help="take every n-th frame (default 1)")
    p.add_argument("--allow-short", action="store_true", help="take what there is when the video is shorter")
    p.add_argument("--max-res", type=int, default=1024, help="longer side at most this many pixels (default 1024)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fov", type=float, help="field of view across the longer side, degrees (no focal estimate)")
    g.add_argument("--focal", type=float, help="focal length in pixels of the processed frames (no focal estimate)")
    g.add_argument("--intrinsics", help="camera file (cameras.json / .npz) to take K from (no focal estimate)")
    p.add_argument("--align-depth", choices=["auto", "affine", "scale", "none"], default="auto",
                   help="per-frame depth alignment to the poses, reported in poses_report.json: affine (disparity "
                        "scale and shift), scale, none; auto (default): affine for relative depth, none for "
                        "--depth-kind depth")
    p.add_argument("--no-plot", action="store_true", help="do not write poses.png")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_poses)


def _cmd_poses(args) -> int:
    import numpy as np

    from ..cameras import default_intrinsics, intrinsics_from_focal, intrinsics_from_fov, scale_intrinsics
    from ..io.depth import default_depth_kind, fit_depth_to_frames, load_depth_file, match_depth_to_frames, to_depth
    from ..io.video import read_video
    from ..recon import check_frames_depth
    from . import estimate_source_poses, write_poses_outputs

    fr = read_video(args.video, num_frames=args.num_frames or None, start=args.start, stride=args.stride,
                    max_res=args.max_res, allow_short=args.allow_short)
    frames = fr.frames
    T, H, W = frames.shape[:3]
    raw = match_depth_to_frames(load_depth_file(args.depth, key=args.depth_key), fr.indices, fr.total_frames)
    kind = args.depth_kind or default_depth_kind(args.depth, args.depth_key)
    depth = fit_depth_to_frames(to_depth(raw, kind, scale=args.depth_scale), H, W, f"--depth {args.depth}")
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    check_frames_depth(frames, depth)
    if args.focal is not None:
        K = intrinsics_from_focal(W, H, args.focal)
    elif args.fov is not None:
        K = intrinsics_from_fov(W, H, args.fov)
    elif args.intrinsics is not None:
        from ..io.camera_files import load_camera_file

        cam = load_camera_file(args.intrinsics)
        K = cam.K[0] if (cam.width, cam.height) == (W, H) else scale_intrinsics(cam.K[0], W / cam.width, H / cam.height)
    else:
        K = default_intrinsics(W, H)
    given = any(x is not None for x in (args.focal, args.fov, args.intrinsics))
    from . import PosesConfig

    poses = estimate_source_poses(frames, depth, K, estimate_focal=not given, relative_depth=kind != "depth",
                                  config=PosesConfig(align_depth=args.align_depth), progress=not args.quiet)
    files = write_poses_outputs(Path(args.out), poses, W, H, fr.fps / args.stride, plot=not args.no_plot)
    f = poses.K[0, 0]
    std = f" ± {poses.focal_std:.1f}" if np.isfinite(poses.focal_std) else ""
    print(f"{T} frames {W}×{H}: {poses.note}")
    print(f"focal {f:.1f}{std} px ({poses.focal_source})")
    print("wrote " + ", ".join(str(p) for p in files))
    return 0
