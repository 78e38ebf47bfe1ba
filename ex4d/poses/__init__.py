"""Source camera poses and focal length: where the camera that filmed the video was, frame by frame.

``w2c_src`` [T, 4, 4] float64, OpenCV world-to-camera with world = source
frame 0 (``w2c_src[0] = I``), translations in the depth's units. Frame t's
DW-Mesh lives in source camera t's coordinates; ``c2w_src[t]`` places it in
the world. Without weights: point tracks (:mod:`.tracks`) lifted with the
depth, PnP/RANSAC and bundle adjustment (:mod:`.solver`); or from a file
(:mod:`.files`). A tripod shot gives exactly the identity (see
:class:`PosesConfig` ``static_px``), so every output is what it was before
poses existed.

Conversions between novel cameras relative to the source and in the world
live in :mod:`ex4d.cameras` (``novel_w2c_world``, ``relative_to_source``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import check
from .solver import SolverConfig, SolverResult, rotation_angle_deg, solve_poses
from .tracks import TrackConfig, Tracks, track_points

__all__ = ["PosesConfig", "SourcePoses", "SOURCE_POSE_MODES", "DEPTH_ALIGN_MODES", "estimate_source_poses",
           "static_source_poses", "resolve_source_poses", "align_depth_frame", "write_poses_outputs",
           "image_motion_px", "TrackConfig", "SolverConfig", "Tracks", "track_points", "solve_poses"]

#: ``--source-poses`` values besides a file path.
SOURCE_POSE_MODES = ("estimate", "static")
#: How the depth is made consistent with the poses (see :class:`PosesConfig`).
DEPTH_ALIGN_MODES = ("auto", "affine", "scale", "none")


@dataclass(frozen=True)
class PosesConfig:
    """Options of the poses stage (saved in config.json as ``poses``)."""

    source: str = "estimate"        #: estimate | static | a cameras.json ("frame": "world") or COLMAP folder
    static_px: float = 0.3          #: a clip whose tracks move less than this (median, pixels) is a tripod shot
    static_deg: float = 0.05        #: ... and so are estimated poses within this rotation (degrees)
    static_trans: float = 0.002     #: ... and this translation (fraction of the median depth) of frame 0
    #: auto (relative depth: affine; metric / exact depth: none) | affine (per-frame scale and disparity shift,
    #: solved in the bundle adjustment) | scale | none
    align_depth: str = "auto"
    track: TrackConfig = field(default_factory=TrackConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)

    def __post_init__(self):
        check(self.align_depth in DEPTH_ALIGN_MODES,
              f"depth alignment must be one of {', '.join(DEPTH_ALIGN_MODES)}, got {self.align_depth!r}")
        check(self.static_px >= 0 and self.static_deg >= 0 and self.static_trans >= 0,
              "static thresholds must be ≥ 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PosesConfig":
        d = dict(d)
        if "track" in d:
            d["track"] = TrackConfig(**d["track"])
        if "solver" in d:
            s = dict(d["solver"])
            if "focal_range" in s:
                s["focal_range"] = tuple(s["focal_range"])
            d["solver"] = SolverConfig(**s)
        return cls(**d)


@dataclass(frozen=True, eq=False)
class SourcePoses:
    """The source camera, frame by frame.

    ============  ==============  =========================================================
    field         shape / type    meaning
    ============  ==============  =========================================================
    w2c           [T, 4, 4] f64   OpenCV world-to-camera, world = source frame 0
    K             [3, 3] f64      source intrinsics (pixels) at the frame size
    focal_std     float           standard deviation of the focal (pixels), NaN if not estimated
    focal_source  str             "given", "estimated" or "default (…why…)"
    static        bool            a tripod shot: every w2c is exactly the identity
    depth_scale   [T] f64         with depth_shift, what makes depth[t] consistent with the poses
    depth_shift   [T] f64         (:func:`align_depth_frame`): disparity 1/d → 1/(d·scale) + shift (1/depth
                                  units; 0 = scale only, and scale 1 + shift 0 = unchanged)
    method        str             "estimate", "static" or "file"
    note          str             one line for the log and the report
    quality       dict            per-frame arrays (status, tracks, inliers, errors); {} when not estimated
    timings       dict            seconds per step
    ============  ==============  =========================================================
    """

    w2c: np.ndarray
    K: np.ndarray
    focal_std: float = float("nan")
    focal_source: str = "given"
    static: bool = True
    depth_scale: np.ndarray | None = None
    depth_shift: np.ndarray | None = None
    method: str = "static"
    note: str = ""
    quality: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.depth_scale is None:
            object.__setattr__(self, "depth_scale", np.ones(len(self.w2c)))
        if self.depth_shift is None:
            object.__setattr__(self, "depth_shift", np.zeros(len(self.w2c)))

    @property
    def num_frames(self) -> int:
        return int(len(self.w2c))

    @property
    def c2w(self) -> np.ndarray:
        from ..cameras import invert_w2c

        return invert_w2c(self.w2c)


def static_source_poses(num_frames: int, K: np.ndarray, note: str = "static camera (--source-poses static)",
                        focal_source: str = "given") -> SourcePoses:
    """A tripod: every pose the identity."""
    return SourcePoses(w2c=np.tile(np.eye(4), (num_frames, 1, 1)), K=np.asarray(K, np.float64), static=True,
                       method="static", note=note, focal_source=focal_source)


def image_motion_px(tracks: Tracks) -> float:
    """How far the view moves: over frames, the largest median distance (pixels) of tracks from where they started.

    Moving objects are a minority of the tracks, so the median sees the static scene; 0 for a tripod.
    """
    if tracks.track.size == 0:
        return 0.0
    order = np.lexsort((tracks.frame, tracks.track))
    tr = tracks.track[order]
    first = np.r_[0, np.flatnonzero(np.diff(tr)) + 1]
    start = np.repeat(tracks.uv[order][first], np.diff(np.r_[first, len(tr)]), axis=0)
    dist = np.linalg.norm(tracks.uv[order] - start, axis=1)
    fr = tracks.frame[order]
    med = [np.median(dist[fr == t]) for t in range(tracks.num_frames) if np.any(fr == t)]
    return float(max(med)) if med else 0.0


def estimate_source_poses(frames, depth, K: np.ndarray, estimate_focal: bool = False,
                          config: PosesConfig | None = None, relative_depth: bool = False,
                          progress: bool = False) -> SourcePoses:
    """Source poses (and the focal length if ``estimate_focal``) from the video itself; no weights.

    Args:
        frames: [T, H, W, 3] uint8, indexed per frame only.
        depth: [T, H, W] z-depth (> 0), indexed per frame only.
        K: [3, 3] intrinsics; with ``estimate_focal`` its focal is replaced when the video shows enough
            parallax or rotation to measure it (else kept, and ``focal_source`` says why).
        relative_depth: the depth is relative (per-frame scale drifts): with ``align_depth="auto"`` the
            per-frame depth scales found by the bundle adjustment are returned for use.
    """
    config = config or PosesConfig()
    K = np.asarray(K, dtype=np.float64)
    T = len(frames)
    timings = {}
    t0 = time.perf_counter()
    tracks = track_points(frames, depth, config.track, progress=progress)
    timings["track_s"] = time.perf_counter() - t0
    motion = image_motion_px(tracks)
    default_note = "default (no camera motion to measure it from)"
    if motion <= config.static_px:
        return SourcePoses(w2c=np.tile(np.eye(4), (T, 1, 1)), K=K, static=True, method="estimate",
                           focal_source=default_note if estimate_focal else "given",
                           note=f"static camera: the scene's tracks move {motion:.2f} px at most (≤ {config.static_px})",
                           timings=timings)
    t0 = time.perf_counter()
    mode = ("affine" if relative_depth else "none") if config.align_depth == "auto" else config.align_depth
    aligning = mode in ("affine", "scale")
    solver_config = replace(config.solver, depth_shifts=mode == "affine", align_pass=aligning,
                            depth_scales=config.solver.depth_scales or aligning)
    res = solve_poses(tracks, K, estimate_focal=estimate_focal, config=solver_config)
    focal_source = "given"
    focal_std = float("nan")
    K_out = K
    if estimate_focal:
        rel = res.focal_std / res.focal if math.isfinite(res.focal_std) else float("inf")
        if rel <= config.solver.focal_max_rel_std:
            K_out = K.copy()
            K_out[0, 0] = K_out[1, 1] = res.focal
            focal_source = "estimated"
            focal_std = res.focal_std
        else:
            focal_source = (f"default (the video has too little parallax or rotation to measure it: "
                            f"estimate {res.focal:.1f} ± {res.focal_std:.1f} px)")
            res = solve_poses(tracks, K, estimate_focal=False, config=solver_config)
    timings["solve_s"] = time.perf_counter() - t0
    w2c = res.w2c
    c2w_t = np.linalg.norm(np.linalg.inv(w2c)[:, :3, 3], axis=1)
    med_depth = float(np.nanmedian(tracks.depth)) if np.isfinite(tracks.depth).any() else 1.0
    angle = rotation_angle_deg(w2c[:, :3, :3])
    static = bool(angle.max() <= config.static_deg and c2w_t.max() <= config.static_trans * med_depth)
    scale, shift = np.ones(T), np.zeros(T)
    if not static and mode in ("scale", "affine"):
        scale, shift = res.depth_scale, res.depth_shift
    quality = {"status": res.status, "tracks": tracks.per_frame_count(), "pnp_inliers": res.pnp_inliers,
               "ba_inliers": res.ba_inliers, "reproj_px": res.reproj_px, "depth_err": res.depth_err}
    n_interp = int(np.sum(res.status == "interpolated"))
    note = (f"{'static camera (estimated motion below tolerance)' if static else 'moving camera'}: "
            f"{res.num_tracks} tracks, median reprojection error {np.nanmedian(res.reproj_px):.2f} px, "
            f"path {np.linalg.norm(np.diff(np.linalg.inv(w2c)[:, :3, 3], axis=0), axis=1).sum():.3g} units, "
            f"rotation up to {angle.max():.1f}°" + (f", {n_interp} frames interpolated (too few tracks)" if n_interp
                                                    else ""))
    if static:
        w2c = np.tile(np.eye(4), (T, 1, 1))
    return SourcePoses(w2c=w2c, K=K_out, focal_std=focal_std, focal_source=focal_source, static=static,
                       depth_scale=scale, depth_shift=shift, method="estimate", note=note, quality=quality,
                       timings=timings)


def resolve_source_poses(source: str, frames, depth, K: np.ndarray, estimate_focal: bool = False,
                         config: PosesConfig | None = None, relative_depth: bool = False,
                         progress: bool = False) -> SourcePoses:
    """Source poses by ``source``: ``"estimate"``, ``"static"`` or a file (cameras.json / COLMAP folder)."""
    config = config or PosesConfig()
    T = len(frames)
    H, W = np.asarray(depth[0]).shape
    if source == "static":
        return static_source_poses(T, K, focal_source="default" if estimate_focal else "given")
    if source == "estimate":
        return estimate_source_poses(frames, depth, K, estimate_focal, config, relative_depth, progress)
    from ..cameras import is_static_poses
    from .files import load_source_poses

    loaded = load_source_poses(source, T, W, H, depth)
    K_out = loaded.K if estimate_focal else np.asarray(K, np.float64)
    return SourcePoses(w2c=loaded.w2c, K=K_out, static=is_static_poses(loaded.w2c), method="file",
                       note=loaded.note, focal_source="from the file" if estimate_focal else "given")


def align_depth_frame(depth_t: np.ndarray, scale_t: float, shift_t: float = 0.0) -> np.ndarray:
    """Depth [H, W] float32 of one frame made consistent with the poses.

    Disparity ``1/d`` becomes ``1/(d·scale_t) + shift_t`` (``shift_t`` = 0: ``d·scale_t``), floored at half of
    ``1/(d·scale_t)`` so that a negative shift can never push far pixels (which no track may have sampled) to
    or past infinity.
    """
    d = np.asarray(depth_t, dtype=np.float32)
    if shift_t == 0.0:
        return d if scale_t == 1.0 else (d * np.float32(scale_t))
    disp = 1.0 / (d.astype(np.float64) * scale_t)
    return (1.0 / np.maximum(disp + shift_t, 0.5 * disp)).astype(np.float32)


def write_poses_outputs(out: str | Path, poses: SourcePoses, width: int, height: int, fps: float,
                        plot: bool = True) -> list[Path]:
    """Write source_cameras.json, poses_report.json and (with matplotlib) poses.png into ``out``.

    Returns the files written; a missing matplotlib only skips the plot (the report's note says so).
    """
    from ..io.camera_files import write_cameras_json
    from .report import plot_path, write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"focal_std": None if not math.isfinite(poses.focal_std) else poses.focal_std,
             "focal_source": poses.focal_source, "static": poses.static, "method": poses.method}
    write_cameras_json(out / "source_cameras.json", poses.w2c, poses.K, width, height, fps, frame="world",
                       extra=extra)
    files = [out / "source_cameras.json", out / "poses_report.json"]
    note = plot_path(out / "poses.png", poses) if plot else "no plot (not asked for)"
    if note is None:
        files.append(out / "poses.png")
    else:
        poses = SourcePoses(**{**poses.__dict__, "note": f"{poses.note}; {note}"})
    write_report(out / "poses_report.json", poses)
    return files
