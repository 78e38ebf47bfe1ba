"""Source-pose benchmark: time and accuracy of ``estimate_source_poses`` on synthetic scenes filmed by a known camera.

    python bench/bench_poses.py [--frames 49] [--size 512] [--motions static,handheld,pan,travel] [--focal] [--json F]

The ``layout`` scene (exact depth, a spinning box and a ball coming towards the camera as moving
objects) is rendered antialiased (2× supersampling) for each source motion of
:func:`ex4d.eval.scenes.source_motion`, at 60° field of view. Each row: seconds for tracking and
for solving, the worst rotation error (degrees) and camera-centre error (% of the median scene
depth) over the clip, the focal error when ``--focal`` (self-calibration from the default 54°), and
the ratio of the time to the tripod row measured in the same run (the baseline: a static camera
is recognised from the tracks and skips the solver). Writes JSON to --json and, when the OUT
environment variable is set, to $OUT/bench_poses.json.
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
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    from ex4d.cameras import default_intrinsics, intrinsics_from_fov, invert_w2c
    from ex4d.eval.scenes import get_scene, render_source, source_motion
    from ex4d.poses import estimate_source_poses
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
    result = {"frames": T, "size": S, "cpu_count": os.cpu_count(), "rows": rows}
    for path in [args.json, os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "bench_poses.json")]:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
