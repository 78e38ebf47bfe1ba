"""The whole job on files, with resumable stages: video → depth → novel views → fill → preview.

``ex4d recon`` runs the first three stages, ``ex4d run`` all of them. Every
stage has a *key*: a hash of everything it depends on (input file contents,
parameters, the upstream stage's key). A finished stage records its key in
``OUT/.ex4d/stages.json`` after its files are written (atomically), so

* re-running the same command skips stages whose key is unchanged (depth,
  meshes and renders are reused) and recomputes those whose inputs changed;
* Ctrl-C or a crash never leaves half-written files, and loses only the
  stage that was running.

An output folder that holds a run with *different* parameters, or anything
that is not an ex4d output, is not touched without ``overwrite=True``.

Output folder
-------------
=====================  =========================================================
file                   content
=====================  =========================================================
color.mp4              novel-view render, black where unknown
mask.mp4               255 = known, 0 = to be generated
cameras.json           our camera file (OpenCV w2c, K, size, fps, "frame": source | world as the path)
cameras_ex4d.npz       the original's camera file (OpenGL-style w2c), when K is constant
source_cameras.json    the source camera's poses ("frame": "world") and K (estimated or given)
poses_report.json      per-frame quality of the source poses (tracks, inliers, reprojection error)
poses.png              plot of the source camera path (when matplotlib is installed)
config.json            every parameter, versions, input hashes, timings, summary
output.mp4             (run) the completed video
preview.mp4            (run) input | render with unknown tinted | output
color/, mask/, output/ (--png) lossless frames 00000.png … (output/: run only)
meshes/                (--save-mesh) one DW-Mesh per frame, 00000.ply …
.ex4d/                 stage records and lossless chunked caches (frames/, depth/, render/, fill/:
                       one file per 16 frames, see ex4d.streaming), so a run resumes mid-stage
=====================  =========================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .cameras import check_intrinsics, default_intrinsics, intrinsics_from_focal, intrinsics_from_fov
from . import streaming
from .errors import Ex4dError, check, collect_warnings
from .fill import FILL_BACKENDS, ClassicalFillConfig
from .poses import PosesConfig
from .io.atomic import atomic_save_npz, atomic_write_json
from .io.outdir import STATE_DIR, OutputFolder
from .plausibility import check_camera_file, check_depth_values, check_path_start, report_known_fraction
from .recon import ReconConfig

__all__ = ["RunConfig", "run_pipeline", "RunSummary", "STATE_DIR", "read_run_record"]

_OUR_FILES = {"color.mp4", "mask.mp4", "cameras.json", "cameras_ex4d.npz", "config.json", "output.mp4",
              "preview.mp4", "color", "mask", "output", "meshes", STATE_DIR, "stereo.mp4", "stereo.json",
              "source_cameras.json", "poses_report.json", "poses.png"}
#: Timings that are parts of another (recon_s holds mesh_s and raster_s): not added up in the summary.
_PART_TIMES = {"mesh_s", "raster_s"}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on (saved as ``run`` in config.json; ``ex4d run --config`` reads it back)."""

    video: str | None = None           #: input video file or image folder (None with example=True)
    example: bool = False              #: use the bundled procedural example scene
    example_size: int = 512            #: example frame size (square)
    num_frames: int | None = 49        #: frames to take (None = all)
    start: int = 0
    stride: int = 1
    max_res: int = 1024
    allow_short: bool = False
    depth: str | None = None           #: depth file (.npz/.npy/PNG folder)
    depth_kind: str | None = None      #: depth | disparity | depthcrafter (None: by file type)
    depth_key: str | None = None
    depth_scale: float = 1.0
    depth_model: str | None = None     #: depth backend when no depth file is given
    depth_weights: str | None = None
    depth_options: dict = field(default_factory=dict)
    fov: float | None = None           #: field of view across the longer side, degrees
    focal: float | None = None         #: focal length in pixels (of the processed frames)
    intrinsics: str | None = None      #: camera file whose K (first frame) is the source intrinsics
    trajectory: str = "ex4d-90"
    trajectory_options: dict = field(default_factory=dict)
    source_poses: str = "estimate"     #: estimate | static | a cameras.json ("frame": "world") or COLMAP folder
    path_frame: str = "source"         #: the path is relative to each source frame (EX-4D) | in the world
    poses: PosesConfig = field(default_factory=PosesConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    fill: str = "classical"            #: classical | ex4d | none
    fill_options: dict = field(default_factory=dict)
    png: bool = False
    save_mesh: bool = False
    crf: int = 18
    seed: int = 0
    stereo: str | None = None          #: sbs | ou | anaglyph: also write stereo.mp4 (left eye = output.mp4)
    stereo_options: dict = field(default_factory=dict)  #: ipd, convergence, half, … (ex4d.stereo.StereoConfig)

    def __post_init__(self):
        check(not (self.video and self.example), "give either an input video or --example, not both")
        check(bool(self.video) or self.example, "no input: give a video file or folder, or --example")
        check(self.fill in FILL_BACKENDS, f"unknown fill {self.fill!r}; choose one of {', '.join(FILL_BACKENDS)}")
        check(0 <= self.crf <= 51, f"--crf must be in [0, 51], got {self.crf}")
        check(not (self.depth and self.depth_model), "give either --depth (a file) or --depth-model, not both")
        check(sum(x is not None for x in (self.fov, self.focal, self.intrinsics)) <= 1,
              "give at most one of --fov, --focal and --intrinsics")
        check(self.fill != "ex4d" or bool(self.fill_options.get("wan")),
              "--fill ex4d needs the model weights: --wan DIR (Wan2.1-I2V-14B-480P, diffusers layout) and "
              "--adapter ex4d.ckpt (the released EX-4D adapter); or use --fill classical, which needs no weights")
        from .cameras import PATH_FRAMES

        check(self.path_frame in PATH_FRAMES,
              f"--path-frame must be one of {', '.join(PATH_FRAMES)}, got {self.path_frame!r}")
        check(self.source_poses in ("estimate", "static") or Path(self.source_poses).exists(),
              f"--source-poses {self.source_poses!r}: choose estimate, static, or give an existing cameras.json "
              "(\"frame\": \"world\") or COLMAP model folder")
        check(self.example_size >= 64 and self.example_size % 16 == 0,
              f"example size must be a multiple of 16, ≥ 64, got {self.example_size}")
        _check_numbers(self)
        if self.fill == "classical":
            from .io.json_input import check_fields

            ClassicalFillConfig(**check_fields(ClassicalFillConfig, self.fill_options, "classical fill options"))
        if self.stereo is not None or self.stereo_options:
            from .io.stereo_video import LAYOUTS
            from .run_scene import stereo_config_from

            check(self.stereo in LAYOUTS, f"unknown --stereo layout {self.stereo!r}; choose one of {', '.join(LAYOUTS)}")
            check(self.fill != "none", "--stereo needs a fill: the left eye is output.mp4, which --fill none does not write")
            stereo_config_from(self.stereo_options)  # bad --ipd / --convergence fail before any work

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        check(not unknown, f"config has unknown fields {unknown}; it was written by another version of ex4d?")
        if "recon" in d:
            d["recon"] = ReconConfig.from_dict(d["recon"])
        if isinstance(d.get("poses"), dict):
            d["poses"] = PosesConfig.from_dict(d["poses"])
        return cls(**d)


def _check_numbers(c: RunConfig) -> None:
    """Ranges of the frame selection and camera numbers, checked before any work."""
    import math

    check(c.num_frames is None or c.num_frames >= 1, f"--num-frames must be ≥ 1 (0 = all), got {c.num_frames}")
    check(c.start >= 0, f"--start must be ≥ 0, got {c.start}")
    check(c.stride >= 1, f"--stride must be ≥ 1, got {c.stride}")
    check(c.max_res >= 16, f"--max-res must be ≥ 16 pixels, got {c.max_res}")
    check(math.isfinite(c.depth_scale) and c.depth_scale > 0,
          f"--depth-scale must be a positive number, got {c.depth_scale}")
    check(c.fov is None or (math.isfinite(c.fov) and 0 < c.fov < 180), f"--fov must be in (0, 180) degrees, got {c.fov}")
    check(c.focal is None or (math.isfinite(c.focal) and c.focal > 0),
          f"--focal must be a positive number of pixels, got {c.focal}")


@dataclass(frozen=True)
class RunSummary:
    """What a run produced: output folder, frame count, size, known fraction, seconds per stage."""

    out: Path
    num_frames: int
    width: int
    height: int
    known_fraction: float
    timings: dict
    reused: list

    def line(self) -> str:
        reused = f", reused {', '.join(self.reused)}" if self.reused else ""
        total = sum(v for k, v in self.timings.items() if isinstance(v, float) and k not in _PART_TIMES)
        return (f"{self.num_frames} frames {self.width}×{self.height}, known {100 * self.known_fraction:.1f}% "
                f"of novel-view pixels, {total:.1f} s{reused} → {self.out}")


# ---------------------------------------------------------------------------------------------- hashing

def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def hash_inputs(path: str | os.PathLike) -> str:
    """Content hash (blake2b, hex) of a file, or of every file in a folder (names and contents)."""
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode())
            _hash_file(f, h)
    elif p.is_file():
        _hash_file(p, h)
    else:
        raise Ex4dError(f"input not found: {p}")
    return h.hexdigest()


def _key(*parts) -> str:
    return hashlib.blake2b(json.dumps([__version__, *parts], sort_keys=True, default=str).encode(),
                           digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------- state

class _State:
    """Stage records in OUT/.ex4d/stages.json: {stage: key}."""

    def __init__(self, out: Path):
        self.path = out / STATE_DIR / "stages.json"
        from .io.json_input import read_json

        try:  # unreadable or odd records mean "nothing finished": every stage is recomputed
            keys = read_json(self.path, "stage records") if self.path.exists() else {}
        except Ex4dError:
            keys = {}
        self.keys = {k: v for k, v in keys.items() if isinstance(v, str)} if isinstance(keys, dict) else {}

    def done(self, stage: str, key: str, files: list[Path]) -> bool:
        return self.keys.get(stage) == key and all(f.exists() for f in files)

    def mark(self, stage: str, key: str) -> None:
        self.keys[stage] = key
        atomic_write_json(self.path, self.keys)

    def forget(self, stage: str) -> None:
        if self.keys.pop(stage, None) is not None:
            atomic_write_json(self.path, self.keys)


# ---------------------------------------------------------------------------------------------- stages

def _input_ident(config: RunConfig) -> dict:
    """What identifies the input frames (hashes the video's contents)."""
    if config.example:
        return {"example": True, "num_frames": config.num_frames or 49, "size": config.example_size}
    return {"video": hash_inputs(config.video), "num_frames": config.num_frames, "start": config.start,
            "stride": config.stride, "max_res": config.max_res, "allow_short": config.allow_short}


def _check_scene(config: RunConfig, depth, K, width: int, height: int) -> None:
    """Plausibility of the depth and of a camera file against the scene (ex4d.plausibility): warnings, or a refusal.

    Judged against frame 0's scene with the source intrinsics ``K``, before the source poses: a camera file's
    w2c are relative to source frame 0 (``"frame": "world"``) or to each frame's own source camera
    (``"source"``), which for this check is the same up to the source camera's motion.
    """
    from .trajectory import make_trajectory

    source = f"--depth {config.depth}" if config.depth else "depth"
    check_depth_values(depth, config.recon.near, source)
    traj = make_trajectory(config.trajectory, depth.shape[0], K, width, height, depth0=depth[0],
                           **config.trajectory_options)
    if traj.name == "file":
        from .io.camera_files import load_camera_file

        convention = load_camera_file(config.trajectory).convention
        check_camera_file(traj.w2c, traj.K, width, height, depth[0], K, config.recon.near,
                          f"--trajectory {config.trajectory}", convention)
    check_path_start(traj.w2c[0], traj.K[0], K, traj.name if traj.name != "file" else config.trajectory)


def _intrinsics(config: RunConfig, width: int, height: int, example_K) -> np.ndarray:
    if config.focal is not None:
        return intrinsics_from_focal(width, height, config.focal)
    if config.fov is not None:
        return intrinsics_from_fov(width, height, config.fov)
    if config.intrinsics is not None:
        from .io.camera_files import load_camera_file

        from .errors import warn
        from .io.camera_files import fit_camera_size

        cam = load_camera_file(config.intrinsics)
        source = f"--intrinsics {config.intrinsics}"
        if not np.allclose(cam.K, cam.K[0]):
            warn(f"{source}: its intrinsics vary over its {cam.num_frames} cameras; the first camera's K is used")
        K, note = fit_camera_size(cam.K[:1], cam.width, cam.height, width, height, source)
        if note:
            warn(note)
        return check_intrinsics(K[0], f"intrinsics from {config.intrinsics}")
    if example_K is not None:
        return example_K
    return default_intrinsics(width, height)


def _depth_stage(config: RunConfig, clip, frames_key: str, out: Path, state: _State, progress: bool):
    """(depth [T,H,W] array-like read per frame, key, reused?)."""
    from .io.chunks import ChunkStore

    folder = out / STATE_DIR / "depth"
    if clip.example_depth is not None and not config.depth and not config.depth_model:
        return streaming.exact_depth(clip), _key("depth", frames_key, "example-exact"), True
    if config.depth:
        params = {"file": hash_inputs(config.depth), "kind": config.depth_kind, "key": config.depth_key,
                  "scale": config.depth_scale}
    elif config.depth_model:
        from .depth import depth_params

        # fingerprints the weights and fills in every default, so the key changes exactly when the result would
        params = depth_params(config.depth_model, config.depth_weights, **config.depth_options)
    else:
        raise Ex4dError("no depth: give a depth file with --depth (DepthCrafter/Video-Depth-Anything .npz, .npy, "
                        "or a folder of 16-bit PNGs) or a depth model with --depth-model")
    key = _key("depth", frames_key, params)
    reused = state.done("depth", key, [folder / "meta.json"]) and ChunkStore.exists(folder, key)
    if not reused:
        state.forget("depth")
    if config.depth:
        depth = streaming.depth_from_file(clip, config.depth, config.depth_kind, config.depth_key,
                                          config.depth_scale, folder, key, progress)
    else:
        depth = streaming.depth_from_model(clip, config.depth_model, config.depth_weights,
                                           config.depth_options, folder, key, progress)
    state.mark("depth", key)
    return depth, key, reused


def _poses_stage(config: RunConfig, frames, depth, K, given_K: bool, depth_key: str, fps: float, out: Path,
                 state: _State, progress: bool):
    """(SourcePoses, key, reused?): the source camera (estimated, static or from a file), cached in .ex4d/poses.npz."""
    from .poses import SourcePoses, resolve_source_poses, static_source_poses, write_poses_outputs

    T, H, W = depth.shape
    if config.example and config.source_poses == "estimate":  # the example's camera is known: a tripod
        return static_source_poses(T, K, note="the example's camera is fixed"), _key("poses", "example"), True
    estimate_focal = not given_K
    src = config.source_poses
    src_id = src if src in ("estimate", "static") else hash_inputs(src)
    kind = config.depth_kind
    if kind is None and config.depth:
        from .io.depth import default_depth_kind

        kind = default_depth_kind(config.depth, config.depth_key)
    relative = kind != "depth"
    # "disparity-affine": the key of caches from before the depth's per-frame shift (they hold scales only)
    key = _key("poses", depth_key, src_id, K.tolist(), estimate_focal, relative, config.poses.to_dict(),
               "disparity-affine")
    cache = out / STATE_DIR / "poses.npz"
    files = [cache, out / "source_cameras.json", out / "poses_report.json"]
    if state.done("poses", key, files):
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        return SourcePoses(w2c=z["w2c"], K=z["K"], depth_scale=z["depth_scale"], depth_shift=z["depth_shift"],
                           **meta), key, True
    state.forget("poses")
    poses = resolve_source_poses(src, frames, depth, K, estimate_focal, config.poses, relative, progress)
    write_poses_outputs(out, poses, W, H, fps)
    meta = {"focal_std": poses.focal_std, "focal_source": poses.focal_source, "static": poses.static,
            "method": poses.method, "note": poses.note}
    atomic_save_npz(cache, compress=False, w2c=poses.w2c, K=poses.K, depth_scale=poses.depth_scale,
                    depth_shift=poses.depth_shift, meta=np.array(json.dumps(meta)))
    state.mark("poses", key)
    return poses, key, False


def _write_cameras(out: Path, traj_w2c, traj_K, width, height, fps, frame: str = "source",
                   w2c_rel=None) -> list[Path]:
    """cameras.json in the path's ``frame``; cameras_ex4d.npz relative to the source (the original's meaning)."""
    from .io.camera_files import write_cameras_json, write_ex4d_npz

    write_cameras_json(out / "cameras.json", traj_w2c, traj_K, width, height, fps, frame=frame)
    files = [out / "cameras.json"]
    if np.allclose(traj_K, traj_K[0]):
        write_ex4d_npz(out / "cameras_ex4d.npz", traj_w2c if w2c_rel is None else w2c_rel, traj_K[0])
        files.append(out / "cameras_ex4d.npz")
    else:
        (out / "cameras_ex4d.npz").unlink(missing_ok=True)  # the original format has one K: not for zooms
    return files


tint_unknown = streaming.tint_unknown
make_preview = streaming.make_preview


def _versions() -> dict:
    import numba
    import torch

    return {"ex4d": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__}


def read_run_record(out: str | os.PathLike) -> tuple[dict, RunConfig]:
    """(config.json as a dict, its RunConfig) of a finished run folder, every field it is read for checked.

    Ex4dError (one line) when the folder holds no run or its config.json is malformed: read through
    :func:`ex4d.io.json_input.read_json`; ``run`` checked against RunConfig; ``intrinsics`` a finite 3×3
    matrix and ``fps`` a positive number when present.
    """
    import math

    from .io.json_input import check_fields, expect, float_array, read_json, require

    cfg = Path(out) / "config.json"
    check(cfg.is_file(), f"{out} holds no ex4d run (no config.json); run `ex4d run ... --out {out}` first")
    record = expect(read_json(cfg, "run record"), dict, str(cfg))
    run = require(record, "run", dict, f"{cfg} (an ex4d config.json)")
    config = RunConfig.from_dict(check_fields(RunConfig, run, f"{cfg}: 'run'"))
    if record.get("intrinsics") is not None:
        record["intrinsics"] = float_array(record["intrinsics"], f"{cfg}: 'intrinsics'", (3, 3)).tolist()
    fps = record.get("fps")
    check(fps is None or (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps)
                          and fps > 0), f"{cfg}: 'fps' must be a positive number, got {fps!r}")
    return record, config


def _config_record(config: RunConfig) -> dict:
    """The run's parameters as JSON values (what config.json's ``run`` holds)."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def _writes(config: RunConfig, fill: bool) -> set[str]:
    """Top-level names a run with ``config`` writes (the rest of an overwritten folder's outputs is removed)."""
    names = {"color.mp4", "mask.mp4", "cameras.json", "cameras_ex4d.npz", "config.json", STATE_DIR}
    if not config.example:  # the source poses stage (ex4d.poses) writes its camera file and report
        names |= {"source_cameras.json", "poses_report.json", "poses.png"}
    filled = fill and config.fill != "none"
    if config.png:
        names |= {"color", "mask"} | ({"output"} if filled else set())
    if config.save_mesh:
        names.add("meshes")
    if filled:
        names |= {"output.mp4", "preview.mp4"}
    if filled and config.stereo:
        names |= {"stereo.mp4", "stereo.json"}
    return names


def run_pipeline(config: RunConfig, out: str | os.PathLike, overwrite: bool = False, fill: bool = True,
                 progress: bool = True, log=print, warn=None) -> RunSummary:
    """Run the job described by ``config`` into folder ``out``; ``fill=False`` stops after the recon stage.

    The folder is held for the whole run (:class:`ex4d.io.outdir.OutputFolder`): checked, marked,
    locked against a second run, cleaned of a killed run's temp files; with ``overwrite`` every
    output this run does not rewrite is removed first. Warnings about the inputs and the result
    (:mod:`ex4d.plausibility`) go to ``warn(message)`` (default: stderr) and into config.json.
    """
    out = Path(out)
    if fill:
        _check_fill_ready(config)
    _check_files(config)
    with OutputFolder(out, _config_record(config), overwrite=overwrite, ours=_OUR_FILES, label="--out") as folder, \
            collect_warnings(warn) as notes:
        state = _State(out)
        if overwrite:
            filled = fill and config.fill != "none"
            caches = {"stages.json", "frames", "depth", "depth-raw", "depth-values", "poses.npz", "render"} | (
                {"fill", "fill-pass1", "windows", "windows-right", "lifted.npz", "right.npz"} if filled else set())
            folder.remove_outputs(keep=_writes(config, fill), state_keep=caches)
            for stage, kept in (("fill", filled), ("stereo", filled and config.stereo)):
                if not kept:
                    state.forget(stage)
        try:
            return _run_stages(config, out, state, fill, progress, notes)
        except Ex4dError:
            _drop_decoded_frames(out)
            raise
        finally:
            if config.fill == "ex4d":  # the generator shared by the fill and stereo stages
                from .diffusion.windowed import release_shared_generator

                release_shared_generator()


def _drop_decoded_frames(out: Path) -> None:
    """A refused run that wrote no output keeps no decoded frames (re-decoded in moments), so it leaves no folder."""
    import shutil

    if not any(p.name != STATE_DIR for p in out.iterdir()):
        shutil.rmtree(out / STATE_DIR / "frames", ignore_errors=True)


def _run_stages(config: RunConfig, out: Path, state: "_State", fill: bool, progress: bool,
                notes: list[str]) -> RunSummary:
    """The stages, in a folder held by :func:`run_pipeline`, each streamed chunk by chunk through ``OUT/.ex4d``
    (:mod:`ex4d.streaming`): memory stays bounded whatever the clip's length, and an interrupted run resumes at
    the chunk (or window) it was in."""
    from .cameras import novel_w2c_world, relative_to_source
    from .io.chunks import ChunkStore
    from .trajectory import make_trajectory

    cache = out / STATE_DIR
    np.random.seed(config.seed)
    timings: dict = {}
    reused: list[str] = []

    t0 = time.perf_counter()
    ident = _input_ident(config)
    frames_key = _key("frames", ident)
    clip = streaming.read_clip(config, cache / "frames", frames_key, progress)
    T, H, W = clip.shape
    fps = clip.fps
    timings["read_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    depth, depth_key, depth_reused = _depth_stage(config, clip, frames_key, out, state, progress)
    if depth_reused and (config.depth or config.depth_model):
        reused.append("depth")
    timings["depth_s"] = time.perf_counter() - t0

    K = _intrinsics(config, W, H, None)  # the example's K is the default one
    _check_scene(config, depth, K, W, H)  # before the poses stage writes anything
    given_K = config.example or any(x is not None for x in (config.focal, config.fov, config.intrinsics))
    t0 = time.perf_counter()
    poses, poses_key, poses_reused = _poses_stage(config, clip.frames, depth, K, given_K, depth_key, fps, out, state,
                                                  progress)
    if poses_reused and not poses.static:  # a tripod run reads as it did before poses existed
        reused.append("poses")
    timings["poses_s"] = time.perf_counter() - t0
    K = poses.K
    # relative depth made consistent with the poses (per-frame scale and disparity shift)
    depth = streaming.scaled_depth(depth, poses.depth_scale, poses.depth_shift)
    traj = make_trajectory(config.trajectory, T, K, W, H, depth0=depth[0], **config.trajectory_options)
    path_frame = traj.frame if traj.name == "file" else config.path_frame
    w2c_rel = relative_to_source(traj.w2c, poses.w2c, path_frame)
    far = config.recon.mesh.far_scale * depth.max_depth  # dwmesh.default_far of the whole clip

    # ----- recon: meshes + renders, chunk by chunk
    render_dir = cache / "render"
    recon_files = [render_dir / "meta.json", out / "color.mp4", out / "mask.mp4", out / "cameras.json"]
    if config.png:
        recon_files += [out / "color", out / "mask"]
    if config.save_mesh:
        recon_files.append(out / "meshes")
    render_data_key = _key("render", depth_key, poses_key, K.tolist(), w2c_rel.tolist(), traj.K.tolist(),
                           config.recon.to_dict(), path_frame)
    render_key = _key(render_data_key, config.png, config.save_mesh, config.crf)
    t0 = time.perf_counter()
    if state.done("render", render_key, recon_files) and ChunkStore.exists(render_dir, render_data_key):
        render = ChunkStore.load(render_dir, render_data_key)
        reused.append("render")
    else:
        state.forget("render")
        render, stats = streaming.render_chunks(clip, depth, K, w2c_rel, traj.K, config.recon, far, render_dir,
                                                render_data_key, out, config.png, config.save_mesh, config.crf,
                                                progress)
        timings["mesh_s"], timings["raster_s"] = stats["mesh_s"], stats["raster_s"]
        moved = stats["known_frames"]
        render.set_attrs(known_fraction=(stats["known_sum"] / moved) if moved else stats["known_all"] / T,
                         novel_frames=moved or T, empty_frames=stats["empty_moved"] if moved else stats["empty_all"])
        _write_cameras(out, traj.w2c if path_frame == "world" else w2c_rel, traj.K, W, H, fps, path_frame, w2c_rel)
        state.mark("render", render_key)
    timings["recon_s"] = time.perf_counter() - t0

    if fill and config.fill != "none":
        fill_data_key = _key("fill", render_data_key, config.fill, config.fill_options, config.seed)
        fill_key = _key(fill_data_key, config.crf, config.png)
        fill_files = [out / "output.mp4", out / "preview.mp4"] + ([out / "output"] if config.png else [])
        t0 = time.perf_counter()
        if state.done("fill", fill_key, fill_files):
            reused.append("fill")
        else:
            state.forget("fill")
            w2c_world = novel_w2c_world(w2c_rel, poses.w2c, "source")  # one frame for the lifted scene
            filled = _fill(config, render, clip, depth, K, w2c_rel, w2c_world, traj.K, poses.w2c, far, cache,
                           fill_data_key, progress)
            streaming.write_fill_outputs(out, filled, render, clip, config.crf, png=config.png)
            state.mark("fill", fill_key)
        timings["fill_s"] = time.perf_counter() - t0

        if config.stereo:  # the second eye from the lifted output (ex4d.stereo); its own key
            stereo_key = _key("stereo", fill_key, config.stereo, config.stereo_options)
            t0 = time.perf_counter()
            if state.done("stereo", stereo_key, [out / "stereo.mp4"]):
                reused.append("stereo")
            else:
                from .io.chunks import concat_field
                from .run_scene import RunViews, run_stereo, stereo_config_from

                state.forget("stereo")
                # the stereo stage holds the clip (ex4d.stereo works on whole arrays); the output comes lossless
                # from the fill cache
                output = concat_field(cache / "fill", "output") if (cache / "fill" / "meta.json").is_file() else None
                # world-frame cameras: the right eye borrows from neighbouring frames' lifted meshes, which
                # must share one frame when the source camera moves
                views = RunViews(out=out, config=config, fps=fps, w2c=novel_w2c_world(w2c_rel, poses.w2c, "source"),
                                 K=traj.K,
                                 mask=np.asarray(render.field("mask")), depth=np.asarray(render.field("depth")),
                                 source_K=K)
                sconf, half = stereo_config_from(config.stereo_options)
                run_stereo(views, config.stereo, sconf, half, output=output, progress=progress)
                state.mark("stereo", stereo_key)
            timings["stereo_s"] = time.perf_counter() - t0

    a = render.attrs
    known = report_known_fraction(float(a.get("known_fraction", 0.0)), int(a.get("empty_frames", 0)),
                                  int(a.get("novel_frames", T)))
    summary = RunSummary(out=out, num_frames=T, width=W, height=H, known_fraction=known, timings=timings,
                         reused=reused)
    atomic_write_json(out / "config.json", {
        "run": _config_record(config),
        "versions": _versions(),
        "inputs": ident,
        "intrinsics": K.tolist(),
        "trajectory": {"name": traj.name, "params": json.loads(json.dumps(traj.params, default=str)),
                       "frame": path_frame},
        "source_poses": {"method": poses.method, "static": poses.static, "note": poses.note,
                         "focal_source": poses.focal_source},
        "fps": fps,
        "summary": {"num_frames": T, "width": W, "height": H, "known_fraction": summary.known_fraction},
        "timings": timings,
        "warnings": list(notes),
        "reproduce": "ex4d run --config config.json --out OUT" if fill else "ex4d recon --config config.json --out OUT",
    })
    return summary


def _check_files(config: RunConfig) -> None:
    """The camera path and camera files, checked before anything heavy (frames, depth models, weights)."""
    from .trajectory import check_trajectory_spec

    T = (config.num_frames or 49) if config.example else (None if config.allow_short else config.num_frames)
    check_trajectory_spec(config.trajectory, T, **config.trajectory_options)
    if config.intrinsics is not None:
        from .io.camera_files import load_camera_file

        load_camera_file(config.intrinsics)
    for flag, path in (("input video", config.video), ("--depth", config.depth)):
        check(path is None or Path(path).exists(), f"{flag} {path} does not exist")


def _check_fill_ready(config: RunConfig) -> None:
    """Fail before any work when the chosen fill cannot run (missing extra, missing weight files)."""
    if config.fill != "ex4d":
        return
    import importlib.util

    missing = [m for m in ("diffusers", "transformers", "peft") if importlib.util.find_spec(m) is None]
    check(not missing, f"--fill ex4d needs the diffusion extra ({', '.join(missing)} not installed): "
                       "pip install 'ex4d[diffusion]'")
    wan = Path(config.fill_options["wan"])
    check(wan.exists(), f"--wan {wan} does not exist; give the local Wan2.1-I2V-14B-480P folder "
                        "(diffusers layout, e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers)")
    adapter = config.fill_options.get("adapter")
    check(adapter is None or Path(adapter).is_file(),
          f"--adapter {adapter} is not a file; give the released EX-4D ex4d.ckpt or our .safetensors")
    _generate_config(config).check()  # e.g. --compile with --step-cache, before the recon
    _window_config(config)
    from .diffusion.fastload import check_model_files

    # the folder's layout, files, headers and config, and the adapter against this model: a bad weight
    # folder or adapter fails now, not after a recon of many minutes
    check_model_files(wan, adapter, config.fill_options.get("encoders"))


def _generate_config(config: RunConfig):
    """The GenerateConfig of ``--fill ex4d``: the run's seed and every fill option but weights and windows."""
    from .diffusion.config import GenerateConfig
    from .diffusion.windowed import split_fill_options

    return GenerateConfig(**{"seed": config.seed, **split_fill_options(config.fill_options)[1]})


def _window_config(config: RunConfig):
    """The WindowConfig of ``--fill ex4d`` (window, overlap, lifting)."""
    from .diffusion.windowed import split_fill_options
    from .diffusion.windows import WindowConfig

    return WindowConfig(**split_fill_options(config.fill_options)[2])


def _fill(config: RunConfig, render, clip, depth, K, w2c_rel, w2c_world, K_out, w2c_src, far, cache: Path, key: str,
          progress: bool):
    """The fill output cache (a finished ChunkStore with field ``output``).

    ``w2c_rel``: the novel cameras relative to each source camera (what the recon rendered); ``w2c_world``: the
    same in the world frame (source frame 0), where the lifted frames of different times meet.
    """
    if config.fill == "classical":
        return streaming.classical_fill_chunks(render, clip, depth, K, w2c_rel, K_out, config.recon,
                                               ClassicalFillConfig(**config.fill_options), far, cache, key,
                                               progress, w2c_src=w2c_src)
    try:
        from .diffusion.windowed import fill_windows
    except ImportError as e:
        raise Ex4dError(f"--fill ex4d needs the diffusion extra: pip install 'ex4d[diffusion]' ({e})")
    from .lift import LiftConfig

    opts = config.fill_options
    return fill_windows(render, clip, w2c_world, K_out, opts["wan"], opts.get("adapter"), _generate_config(config),
                        _window_config(config), cache, key, encoders=opts.get("encoders"), progress=progress,
                        lift_config=LiftConfig(mesh=config.recon.mesh), backend=config.recon.backend)
