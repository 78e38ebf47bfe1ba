"""A run's lifted scene on disk: lift a run's output, make its stereo file and its 4D assets.

The glue between a run folder and :mod:`ex4d.stereo` / :mod:`ex4d.assets`,
used by the ``stereo`` stage of ``ex4d run --stereo`` (with the arrays in
memory) and by ``ex4d stereo RUN`` / ``ex4d export RUN`` (reading the folder).

A run folder holds all it takes: ``output.mp4`` (the left eye), the render
cache ``.ex4d/render/`` (chunked: mask and z-buffer of every novel view: exact
depth where known), ``cameras.json`` (each output frame's camera) and
``config.json``. Caches written here, each with a JSON record of what it was
made from (so a changed output or option remakes it):

==========================  =================================================================
``.ex4d/lifted.npz``        the lifted output frames (:func:`ex4d.lift.save_lifted`), lossless
                            when written by ``ex4d run`` (lifted from the output in memory)
``.ex4d/right.npz``         the finished right eye (and its known / borrowed masks), so another
                            layout of the same pair is only a re-encode
``stereo.json``             beside each stereo file: layout, IPD, convergence, how they were
                            chosen, the right eye's unknown share
==========================  =================================================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Ex4dError, check
from .lift import LiftConfig, LiftedFrame, lift_frame, load_lifted, save_lifted
from .stereo import StereoConfig

__all__ = ["RunViews", "read_run", "read_output", "lift_run", "run_stereo", "run_export", "stereo_config_from"]

STATE = ".ex4d"


@dataclass(frozen=True)
class RunViews:
    """What a run knows about its novel views.

    ========  ===================  ==============================================================
    field     shape, dtype         meaning
    ========  ===================  ==============================================================
    out       Path                 the run folder
    config    RunConfig            the run's parameters
    fps       float                frame rate
    w2c       [T, 4, 4] float64    OpenCV world-to-camera of each output frame (world frame)
    K         [T, 3, 3] float64    intrinsics of each output frame
    mask      [T, H, W] bool       the render's known pixels
    depth     [T, H, W] float32    the render's z-buffer (exact where known; the occluding face's
                                   depth elsewhere, inf where no scene surface)
    source_K  [3, 3] float64       intrinsics of the source video, or None
    ========  ===================  ==============================================================
    """

    out: Path
    config: object
    fps: float
    w2c: np.ndarray
    K: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    source_K: np.ndarray | None = None

    @property
    def lift_config(self) -> LiftConfig:
        """Lifted meshes use the run's DW-Mesh filter."""
        return LiftConfig(mesh=self.config.recon.mesh)


def read_run(out: str | os.PathLike) -> RunViews:
    """:class:`RunViews` of a finished run folder (config.json, cameras.json, the render cache); clear errors if not."""
    from .io.camera_files import read_cameras_json
    from .pipeline import read_run_record

    out = Path(out)
    check(out.is_dir(), f"{out} is not a folder; give the --out folder of an `ex4d run`")
    record, config = read_run_record(out)
    check((out / "output.mp4").is_file(),
          f"{out} holds no finished output (output.mp4): the left eye is the filled video; run "
          f"`ex4d run ... --out {out}` with a fill (classical or ex4d, not none) first")
    cache = out / STATE / "render"
    check((cache / "meta.json").is_file(), f"{cache} is missing; re-run `ex4d run` into {out} (it keeps the render there)")
    cams = read_cameras_json(out / "cameras.json")
    w2c = cams.w2c  # the lifted scene lives in the world frame (source frame 0): neighbours must line up
    if cams.frame != "world":  # relative to each source camera: place them with the source poses
        from .cameras import novel_w2c_world

        src = out / "source_cameras.json"
        w2c = novel_w2c_world(w2c, read_cameras_json(src).w2c if src.is_file() else None, "source")
    from .io.chunks import ChunkStore

    render = ChunkStore.load(cache)
    mask, depth = np.asarray(render.field("mask")).astype(bool), np.asarray(render.field("depth")).astype(np.float32)
    check(mask.shape[0] == cams.num_frames and mask.shape[1:] == (cams.height, cams.width),
          f"{out}: the render cache ({list(mask.shape)}) does not match cameras.json "
          f"({cams.num_frames} × {cams.height}×{cams.width}); re-run the job")
    K = record.get("intrinsics")
    return RunViews(out=out, config=config, fps=float(record.get("fps") or cams.fps or 24.0), w2c=w2c, K=cams.K,
                    mask=mask, depth=depth, source_K=None if K is None else np.asarray(K, dtype=np.float64))


def read_output(views: RunViews) -> np.ndarray:
    """The run's output video [T, H, W, 3] uint8 (decoded ``output.mp4``, checked against the render's size)."""
    from .io.video import read_video

    T, H, W = views.mask.shape
    fr = read_video(views.out / "output.mp4", num_frames=None, max_res=max(H, W))
    check(fr.frames.shape[:3] == (T, H, W),
          f"{views.out / 'output.mp4'} holds {list(fr.frames.shape[:3])} frames × size but the render has "
          f"{[T, H, W]}; re-run `ex4d run` into {views.out}")
    return fr.frames


def _file_key(path: Path) -> str:
    from .pipeline import hash_inputs

    return hash_inputs(path)


def _record(path: Path) -> dict:
    from .io.json_input import read_json

    try:  # a missing or unreadable record means "not made yet": the stage is redone
        record = read_json(path, "stage record")
    except Ex4dError:
        return {}
    return record if isinstance(record, dict) else {}


def lift_run(views: RunViews, output: np.ndarray | None = None, progress: bool = True) -> list[LiftedFrame]:
    """The run's output frames lifted into 3D (cached in ``.ex4d/lifted.npz``; ``output`` [T,H,W,3] uint8 if in memory)."""
    from .io.atomic import atomic_write_json

    cache, rec_path = views.out / STATE / "lifted.npz", views.out / STATE / "lifted.json"
    lift_cfg = views.lift_config
    key = {"output": _file_key(views.out / "output.mp4"), "lift": json.loads(json.dumps(lift_cfg.to_dict())),
           "cameras": _file_key(views.out / "cameras.json")}
    if output is None and cache.is_file() and _record(rec_path) == key:
        return load_lifted(cache)
    if output is None:
        output = read_output(views)
    T = views.mask.shape[0]
    check(output.shape[:3] == views.mask.shape, f"output {list(output.shape)} does not match the render {list(views.mask.shape)}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="lift", unit="frame", leave=False)
    frames = []
    fallback = _fallback(views.depth)  # once: a median over the whole clip
    for t in range(T):
        frames.append(lift_frame(output[t], views.depth[t], views.mask[t], views.K[t], views.w2c[t], config=lift_cfg,
                                 fallback=fallback))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    save_lifted(cache, frames)
    atomic_write_json(rec_path, key)
    return frames


def _fallback(depth: np.ndarray) -> float:
    """Depth for a frame that knows no pixel: the median of the clip's known surfaces."""
    d = depth[np.isfinite(depth)]
    return float(np.median(d)) if d.size else 1.0


def stereo_config_from(options: dict) -> tuple[StereoConfig, bool]:
    """(StereoConfig, half) from a run's ``stereo_options`` ({"ipd", "convergence", "half", …})."""
    opts = dict(options or {})
    half = bool(opts.pop("half", False))
    unknown = sorted(set(opts) - set(StereoConfig.__dataclass_fields__))
    check(not unknown, f"unknown stereo options {unknown}; known: half, {', '.join(StereoConfig.__dataclass_fields__)}")
    return StereoConfig(**opts), half


def run_stereo(views: RunViews, layout: str, config: StereoConfig | None = None, half: bool = False,
               dest: str | os.PathLike | None = None, output: np.ndarray | None = None, fill: str | None = None,
               fill_options: dict | None = None, progress: bool = True) -> dict:
    """Write the run's stereo video (``dest``, default ``RUN/stereo.mp4``) and ``stereo.json`` beside it.

    The left eye is the output; the right eye is rendered from the lifted
    output and filled with ``fill`` (default: the run's fill, with its options).
    Returns the record written to the JSON file.
    """
    from .io.atomic import atomic_save_npz, atomic_write_json
    from .io.stereo_video import LAYOUTS, ST3D_MODES, write_stereo_video
    from .stereo import fill_right_eye, render_right_eye, stereo_geometry

    config = config or StereoConfig()
    check(layout in LAYOUTS, f"unknown stereo layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    check(not (half and layout == "anaglyph"), "--half applies to the sbs and ou layouts, not to anaglyph")
    dest = Path(dest) if dest is not None else views.out / "stereo.mp4"
    check(dest.suffix.lower() == ".mp4", f"--out {dest} must be an .mp4 file")
    run_fill = views.config.fill
    fill = fill or (run_fill if run_fill in ("classical", "ex4d") else "classical")
    if fill_options is None:
        fill_options = dict(views.config.fill_options) if fill == run_fill else {}
    if fill == "ex4d":  # the weights and adapter are checked before the lifting and rendering, not after them
        check(bool(fill_options.get("wan")),
              "the ex4d fill of the second eye needs the model weights: --wan DIR and --adapter FILE (or --fill "
              "classical, which needs none)")
        from .diffusion.fastload import check_model_files

        check_model_files(fill_options["wan"], fill_options.get("adapter"), fill_options.get("encoders"))
    frames = lift_run(views, output, progress)
    left = np.stack([f.rgb for f in frames])
    geometry = stereo_geometry([f.depth for f in frames], config)
    right_path, rec_path = views.out / STATE / "right.npz", views.out / STATE / "right.json"
    key = json.loads(json.dumps({"lifted": _record(views.out / STATE / "lifted.json"), "geometry": geometry.to_dict(),
                                 "stereo": config.to_dict(), "fill": fill, "fill_options": fill_options,
                                 "seed": views.config.seed}, default=str))
    if right_path.is_file() and _record(rec_path) == key:
        with np.load(right_path) as z:
            right, known, borrowed = z["right"], z["known"], z["borrowed"]
    else:
        eye = render_right_eye(frames, geometry, config, views.lift_config, backend=views.config.recon.backend,
                               progress=progress)
        import hashlib

        # the right eye's generation windows are kept beside the run's (a re-run after a crash resumes)
        windows = (views.out / STATE / "windows-right", hashlib.sha256(json.dumps(key, sort_keys=True).encode())
                   .hexdigest()[:16])
        right = fill_right_eye(eye, fill, fill_options, views.config.seed, progress, windows=windows)
        known, borrowed = eye.known, eye.borrowed
        atomic_save_npz(right_path, compress=True, right=right, known=known, borrowed=borrowed)
        atomic_write_json(rec_path, key)
    write_stereo_video(dest, left, right, views.fps, layout, half, crf=views.config.crf)
    record = {"file": dest.name, "layout": layout, "half": half, "st3d_mode": ST3D_MODES.get(layout),
              "left_eye": "output.mp4", **geometry.to_dict(), "fill": fill,
              "right_known_fraction": float(known.mean()), "right_borrowed_fraction": float(borrowed.mean()),
              "right_filled_fraction": float((~(known | borrowed)).mean()),
              "how": "right eye = the lifted output seen ipd along the left camera's +x axis, principal point "
                     "shifted by fx*ipd/convergence (zero parallax at the convergence depth)"}
    atomic_write_json(dest.with_suffix(".json"), record)
    return record


def run_export(views: RunViews, fmt: str | None, dest: str | os.PathLike, max_size: int = 128,
               output: np.ndarray | None = None, progress: bool = True) -> Path:
    """Write the run's lifted scene as a GLB file or a PLY sequence folder (``fmt`` from ``dest``'s suffix if None)."""
    from .assets import ASSET_FORMATS, write_glb, write_ply_sequence

    dest = Path(dest)
    if fmt is None:
        fmt = "glb" if dest.suffix.lower() == ".glb" else "ply"
    check(fmt in ASSET_FORMATS, f"unknown export format {fmt!r}; choose one of {', '.join(ASSET_FORMATS)}")
    frames = lift_run(views, output, progress)
    if fmt == "glb":
        return write_glb(dest, frames, views.fps, max_size, views.lift_config, source_K=views.source_K,
                         progress=progress)
    check(dest.suffix == "", f"--out {dest}: --format ply writes a folder (00000.ply …); give a folder name")
    return write_ply_sequence(dest, frames, views.fps, max_size, views.lift_config, progress=progress)
