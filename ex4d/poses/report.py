"""The poses' quality report (JSON, one row per frame) and a plot of the camera path (PNG, needs matplotlib)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..cameras import invert_w2c
from ..io.atomic import atomic_write_json

__all__ = ["pose_report", "write_report", "plot_path"]


def _num(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def pose_report(poses) -> dict:
    """JSON-able report of :class:`ex4d.poses.SourcePoses`: summary plus per-frame rows."""
    from .solver import rotation_angle_deg

    c2w = invert_w2c(poses.w2c)
    angle = rotation_angle_deg(c2w[:, :3, :3])
    q = poses.quality
    frames = []
    for t in range(len(poses.w2c)):
        row = {"frame": t, "status": str(q["status"][t]) if q else "static",
               "centre": [_num(v) for v in c2w[t, :3, 3]], "rotation_deg": _num(angle[t])}
        if q:
            row.update({"tracks": int(q["tracks"][t]), "pnp_inliers": int(q["pnp_inliers"][t]),
                        "ba_inliers": int(q["ba_inliers"][t]), "reproj_px": _num(q["reproj_px"][t]),
                        "depth_err": _num(q["depth_err"][t]), "depth_scale": _num(poses.depth_scale[t]),
                        "depth_shift": _num(poses.depth_shift[t])})
        frames.append(row)
    reproj = np.asarray(q["reproj_px"], float) if q else np.zeros(0)
    return {
        "method": poses.method,
        "static": poses.static,
        "note": poses.note,
        "focal": _num(poses.K[0, 0]),
        "focal_std": _num(poses.focal_std),
        "focal_source": poses.focal_source,
        "path_length": _num(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()),
        "max_rotation_deg": _num(angle.max()),
        "median_reproj_px": _num(np.nanmedian(reproj)) if reproj.size and np.isfinite(reproj).any() else None,
        "interpolated_frames": [r["frame"] for r in frames if r["status"] == "interpolated"],
        "timings": {k: _num(v) for k, v in poses.timings.items()},
        "frames": frames,
    }


def write_report(path: str | os.PathLike, poses) -> dict:
    """Write :func:`pose_report` atomically as JSON; returns it."""
    rep = pose_report(poses)
    atomic_write_json(Path(path), rep)
    return rep


def plot_path(path: str | os.PathLike, poses) -> str | None:
    """Write a PNG of the source camera path (top view and side view) and per-frame errors.

    Returns None on success, or a note saying why no plot was written (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    from ..io.atomic import atomic_path

    c2w = invert_w2c(poses.w2c)
    C = c2w[:, :3, 3]
    fwd = c2w[:, :3, 2]
    T = len(C)
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    span = max(float(np.ptp(C[:, [0, 2]], axis=0).max()), 1e-3)
    step = max(1, T // 12)
    for a, (i, j, name) in zip(ax[:2], [(0, 2, "top view: x (right) / z (forward)"), (0, 1, "front view: x / y (down)")]):
        a.plot(C[:, i], C[:, j], "-", color="0.6", lw=1)
        sc = a.scatter(C[:, i], C[:, j], c=np.arange(T), cmap="viridis", s=12, zorder=3)
        for t in range(0, T, step):
            a.arrow(C[t, i], C[t, j], 0.15 * span * fwd[t, i], 0.15 * span * fwd[t, j], head_width=0.02 * span,
                    color="tab:red", alpha=0.6, length_includes_head=True)
        a.set_title(name)
        a.set_aspect("equal", adjustable="datalim")
        if j == 1:
            a.invert_yaxis()
    fig.colorbar(sc, ax=ax[1], label="frame")
    q = poses.quality
    if q:
        ax[2].plot(np.asarray(q["reproj_px"], float), label="median reprojection error (px)")
        ax2 = ax[2].twinx()
        ax2.plot(q["ba_inliers"], color="tab:orange", label="inlier tracks")
        ax2.set_ylabel("inlier tracks")
        ax[2].set_xlabel("frame")
        ax[2].legend(loc="upper left", fontsize=8)
        ax2.legend(loc="upper right", fontsize=8)
    else:
        ax[2].text(0.5, 0.5, poses.note or poses.method, ha="center", va="center", wrap=True)
        ax[2].axis("off")
    fig.suptitle(f"source camera: {poses.method}, f = {poses.K[0, 0]:.1f} px ({poses.focal_source})")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return None
