"""Source-pose benchmark: time and accuracy of ``estimate_source_poses`` on synthetic scenes filmed by a known camera.

    python bench/bench_poses.py [--frames 49] [--size 512] [--motions static,handheld,pan,travel] [--focal]
                                [--relative] [--json F]

The ``layout`` scene (exact depth, a spinning box and a ball coming towards the camera as moving
objects) is rendered antialiased (2× supersampling) for each source motion of
:func:`ex4d.eval.scenes.source_motion`, at 60° field of view. Each row: seconds for tracking and
for solving, the worst rotation error (degrees) and camera-centre error (% of the median scene
depth) over the clip, the focal error when ``--focal`` (self-calibration from the default 54°), and
the ratio of the time to the tripod row measured in the same run (the baseline: a static camera
is recognised from the tracks and skips the solver). Writes JSON to --json and, when the OUT
environment variable is set, to $OUT/bench_poses.json.

``--relative`` adds the hand-held clip with *relative* depth: its disparity drifting per frame in scale
(±5 %) and shift (±25 % of the median disparity), frame 0 exact, as an affine-invariant depth model's can;
one row per ``align_depth`` mode (scale, affine), with the aligned depth's error against the truth (the
worst frame's median and the clip's 99th percentile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--motions", default="static,handheld,pan,travel")
    ap.add_argument("--focal", action="store_true", help="also estimate the focal length (starting from 54°)")
    ap.add_argument("--relative", action="store_true", help="also relative depth drifting in scale and shift")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    from ex4d.cameras import default_intrinsics, intrinsics_from_fov, invert_w2c
    from ex4d.eval.scenes import get_scene, render_source, source_motion
    from ex4d.poses import PosesConfig, align_depth_frame, estimate_source_poses
    from ex4d.poses.solver import rotation_angle_deg

    T, S = args.frames, args.size
    K = intrinsics_from_fov(S, S, 60.0)
    scene = get_scene("layout")
    estimate_source_poses(*render_source(scene, 3, K, 64, 64, source_motion("handheld", 3)),
                          intrinsics_from_fov(64, 64, 60.0))  # imports and first calls, not timed
    rows = []
    for motion in args.motions.split(","):
        w2c = source_motion(motion, T)
        frames, depth = render_source(scene, T, K, S, S, w2c, supersample=2)
        for focal in ([False, True] if args.focal else [False]):
            K0 = default_intrinsics(S, S) if focal else K
            t0 = time.perf_counter()
            poses = estimate_source_poses(frames, depth, K0, estimate_focal=focal)
            total = time.perf_counter() - t0
            rot = float(rotation_angle_deg((poses.w2c @ invert_w2c(w2c))[:, :3, :3]).max())
            pos = float(np.abs(invert_w2c(poses.w2c)[:, :3, 3] - invert_w2c(w2c)[:, :3, 3]).max())
            rows.append({"motion": motion, "focal": focal, "seconds": total,
                         "track_s": poses.timings.get("track_s", 0.0), "solve_s": poses.timings.get("solve_s", 0.0),
                         "rot_err_deg": rot, "pos_err_pct_depth": 100 * pos / float(np.median(depth)),
                         "focal_err_pct": 100 * (poses.K[0, 0] / K[0, 0] - 1) if focal else None,
                         "focal_source": poses.focal_source, "static": poses.static,
                         "reproj_px": float(np.nanmedian(poses.quality["reproj_px"])) if poses.quality else 0.0})
    base = next((r["seconds"] for r in rows if r["motion"] == "static"), None)
    print(f"source poses, {T} frames {S}×{S}, layout scene, {os.cpu_count()} CPU cores ({platform.processor() or '?'})")
    print(f"{'motion':9s} {'focal':>5s} {'total s':>8s} {'track s':>8s} {'solve s':>8s} {'vs tripod':>9s} "
          f"{'rot err°':>8s} {'pos err %':>9s} {'focal err %':>11s} {'reproj px':>9s}")
    for r in rows:
        ratio = f"{r['seconds'] / base:.2f}×" if base else "—"
        fe = f"{r['focal_err_pct']:+.2f}" if r["focal_err_pct"] is not None else "—"
        print(f"{r['motion']:9s} {'est' if r['focal'] else 'given':>5s} {r['seconds']:8.2f} {r['track_s']:8.2f} "
              f"{r['solve_s']:8.2f} {ratio:>9s} {r['rot_err_deg']:8.3f} {r['pos_err_pct_depth']:9.3f} {fe:>11s} "
              f"{r['reproj_px']:9.3f}")
    relative = []
    if args.relative:
        w2c = source_motion("handheld", T)
        frames, depth = render_source(scene, T, K, S, S, w2c, supersample=2)
        disp = 1.0 / depth.astype(np.float64)
        phase = np.linspace(0, 3, T)
        a = 1.0 + 0.05 * np.sin(phase)
        b = 0.25 * float(np.median(disp)) * np.sin(1.7 * phase)
        rel = (1.0 / (a[:, None, None] * disp + b[:, None, None])).astype(np.float32)
        for mode in ("scale", "affine"):
            t0 = time.perf_counter()
            poses = estimate_source_poses(frames, rel, K, relative_depth=True, config=PosesConfig(align_depth=mode))
            total = time.perf_counter() - t0
            aligned = np.stack([align_depth_frame(rel[t], poses.depth_scale[t], poses.depth_shift[t]) for t in range(T)])
            err = np.abs(aligned / depth - 1.0)
            relative.append({"align_depth": mode, "seconds": total, "solve_s": poses.timings.get("solve_s", 0.0),
                             "rot_err_deg": float(rotation_angle_deg((poses.w2c @ invert_w2c(w2c))[:, :3, :3]).max()),
                             "pos_err_pct_depth": 100 * float(np.abs(invert_w2c(poses.w2c)[:, :3, 3]
                                                                     - invert_w2c(w2c)[:, :3, 3]).max())
                             / float(np.median(depth)),
                             "depth_err_median_pct": 100 * float(np.max(np.median(err, axis=(1, 2)))),
                             "depth_err_p99_pct": 100 * float(np.percentile(err, 99))})
        print("\nhand-held, relative depth (disparity drifting ±5 % in scale, ±25 % of its median in shift)")
        print(f"{'align':7s} {'total s':>8s} {'solve s':>8s} {'rot err°':>8s} {'pos err %':>9s} "
              f"{'depth err % (worst frame median / p99)':>40s}")
        for r in relative:
            print(f"{r['align_depth']:7s} {r['seconds']:8.2f} {r['solve_s']:8.2f} {r['rot_err_deg']:8.3f} "
                  f"{r['pos_err_pct_depth']:9.3f} {r['depth_err_median_pct']:19.2f} / {r['depth_err_p99_pct']:.2f}")
    result = {"frames": T, "size": S, "cpu_count": os.cpu_count(), "rows": rows, "relative": relative}
    for path in [args.json, os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "bench_poses.json")]:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
