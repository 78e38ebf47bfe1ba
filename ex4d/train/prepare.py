"""``ex4d prepare``: monocular videos → simulated (target, condition, mask) training samples, on Ray.

Each video gives ``clips_per_video`` clips of ``num_frames`` frames (evenly
spaced starts); each clip is read, cropped (or squashed) to the training size,
given depth (a depth file per video, or a depth model run by the worker), and
turned into a sample by :func:`ex4d.train.masks.simulate_masks`. The layout
is described in :mod:`ex4d.train.layout`, the manifest and ``config.json`` in
:mod:`ex4d.train.manifest`, the Ray executor in :mod:`ex4d.train.ray_run`.

Robustness
----------
* **Atomic samples.** A worker assembles a clip in ``OUT/.tmp/`` and renames
  the folder into ``OUT/clips/`` when every file is written, so a crash or a
  ``kill -9`` at any moment leaves either a complete sample or none. A
  complete sample is never rewritten.
* **Resumable.** The driver appends one line per finished, skipped or failed
  video (and per clip) to ``OUT/manifest.jsonl`` (flushed and fsynced; a torn
  last line is ignored). Re-running the same command skips videos the
  manifest lists as done or skipped and, inside the others, clips whose folder
  is complete; failed videos are tried again.
* **Workers that die.** On Ray each worker is an actor restarted after a
  crash, and its task retried (``retries`` times); a video that still fails is
  recorded as failed, never fatal for the batch.
* **Bad input.** A video that cannot be decoded, is shorter than one clip, or
  has no depth file is reported (progress bar, summary, manifest) and skipped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import Ex4dError, check
from ..io.atomic import atomic_save_npz, atomic_write_json
from . import layout, ray_run
from .manifest import Manifest, check_dataset_config, read_manifest, video_record
from .masks import MaskConfig

__all__ = [
    "PrepareConfig",
    "PrepareSummary",
    "ClipWorker",
    "VIDEO_SUFFIXES",
    "find_videos",
    "clip_starts",
    "read_manifest",
    "prepare_dataset",
]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v")
RESIZE_MODES = ("crop", "squash")
EXECUTORS = ("ray", "local")


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``ex4d prepare`` (saved as ``OUT/config.json``; a resumed run must use the same).

    ==================  ==============  ==========================================================
    field               default         meaning
    ==================  ==============  ==========================================================
    ``num_frames``      49              frames per clip (4k+1, as Wan needs)
    ``stride``          1               take every n-th source frame
    ``clips_per_video`` 1               clips per video, starts evenly spaced over the video
    ``width/height``    512 / 512       training size (multiples of 16)
    ``resize``          "crop"          crop: centre-crop to the aspect ratio, then resize;
                                        squash: resize, ignoring the aspect ratio (the original)
    ``depth_dir``       None            folder of depth files named after the videos (``STEM.npz``,
                                        ``STEM.npy`` or a folder ``STEM/`` of 16-bit PNGs)
    ``depth_kind``      None            depth | disparity | depthcrafter (None: by file, as ``recon``)
    ``depth_scale``     1.0             multiply file depth by this
    ``depth_model``     None            estimate depth instead: depthcrafter | depth-anything-v2
    ``depth_weights``   None            the depth model's local weights folder
    ``masks``           MaskConfig()    simulated masks (see :mod:`ex4d.train.masks`)
    ``seed``            0               sample seeds derive from (seed, clip id): order-independent
    ``crf``             15              H.264 quality of gt/render videos
    ``save_depth``      True            also store the clip's depth (float16)
    ``source_poses``    "estimate"      estimate | static: the source camera's motion (see
                                        :mod:`ex4d.poses`); a fixed ("flow") novel camera is then
                                        fixed in the world while the source moves
    ==================  ==============  ==========================================================
    """

    num_frames: int = 49
    stride: int = 1
    clips_per_video: int = 1
    width: int = 512
    height: int = 512
    resize: str = "crop"
    depth_dir: str | None = None
    depth_kind: str | None = None
    depth_scale: float = 1.0
    depth_model: str | None = None
    depth_weights: str | None = None
    masks: MaskConfig = field(default_factory=MaskConfig)
    seed: int = 0
    crf: int = 15
    save_depth: bool = True
    source_poses: str = "estimate"

    def __post_init__(self):
        if isinstance(self.masks, dict):
            object.__setattr__(self, "masks", MaskConfig.from_dict(self.masks))
        check(isinstance(self.num_frames, int) and self.num_frames >= 5 and (self.num_frames - 1) % 4 == 0,
              f"num_frames must be 4k+1 and >= 5 (Wan's VAE packs 4 frames per latent), got {self.num_frames}; "
              f"e.g. 49, 33, 17")
        check(self.stride >= 1, f"stride must be >= 1, got {self.stride}")
        check(self.clips_per_video >= 1, f"clips_per_video must be >= 1, got {self.clips_per_video}")
        check(self.width % 16 == 0 and self.height % 16 == 0 and self.width > 0 and self.height > 0,
              f"width and height must be positive multiples of 16, got {self.width}x{self.height}")
        check(self.resize in RESIZE_MODES, f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        check(not (self.depth_dir and self.depth_model), "give either depth_dir (--depth-dir) or depth_model "
                                                         "(--depth-model), not both")
        check(0 <= self.crf <= 51, f"crf must be in 0..51, got {self.crf}")
        check(isinstance(self.depth_scale, (int, float)) and math.isfinite(self.depth_scale) and self.depth_scale > 0,
              f"depth_scale must be a finite number > 0, got {self.depth_scale!r}")
        check(self.depth_kind in (None, "depth", "disparity", "depthcrafter"),
              f"depth_kind must be depth, disparity or depthcrafter, got {self.depth_kind!r}")
        from ..depth.common import DEPTH_MODELS

        check(self.depth_model is None or self.depth_model in DEPTH_MODELS,
              f"depth_model must be one of {', '.join(DEPTH_MODELS)}, got {self.depth_model!r}")
        check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        check(self.source_poses in ("estimate", "static"),
              f"source_poses must be estimate or static, got {self.source_poses!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["masks"] = self.masks.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrepareConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        check(not unknown, f"unknown PrepareConfig keys {unknown}")
        return cls(**d)


@dataclass
class PrepareSummary:
    """What one ``prepare_dataset`` call did."""

    new_clips: int = 0
    reused_clips: int = 0
    skipped: list = field(default_factory=list)  #: (video, reason)
    failed: list = field(default_factory=list)   #: (video, reason)
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"{self.new_clips} new clips", f"{self.reused_clips} already done"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} videos skipped")
        if self.failed:
            parts.append(f"{len(self.failed)} videos failed (re-run to retry)")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


# --------------------------------------------------------------------------- inputs


def find_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Video files named by ``inputs``: files, folders (searched recursively) or ``.txt`` lists (one path a line)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        check(p.exists(), f"input {p} does not exist")
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
        elif p.suffix.lower() == ".txt":
            try:
                lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as e:
                raise Ex4dError(f"cannot read the video list {p} ({e}); expected a UTF-8 text file, one path a "
                                f"line") from None
            found += [Path(ln) if Path(ln).is_absolute() else p.parent / ln for ln in lines if ln and not ln.startswith("#")]
        else:
            found.append(p)
    seen, unique = set(), []
    for f in found:
        key = str(f.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(f.resolve())
    check(unique, f"no videos found in {[str(i) for i in inputs]} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return unique


def clip_starts(total: int, num_frames: int, stride: int, clips: int) -> list[int]:
    """First source-frame index of each clip: up to ``clips`` evenly spaced starts; [] when the video is too short."""
    span = (num_frames - 1) * stride + 1
    if total < span:
        return []
    last = total - span
    return sorted({int(round(s)) for s in np.linspace(0, last, clips)}) if clips > 1 else [0]


def _crop_box(w: int, h: int, out_w: int, out_h: int, mode: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) as fractions of the source frame kept before resizing."""
    if mode == "squash":
        return 0.0, 0.0, 1.0, 1.0
    src, dst = w / h, out_w / out_h
    if src > dst:  # too wide: crop the sides
        f = dst / src
        return (1 - f) / 2, 0.0, (1 + f) / 2, 1.0
    f = src / dst
    return 0.0, (1 - f) / 2, 1.0, (1 + f) / 2


def _fit_frames(frames: np.ndarray, out_w: int, out_h: int, mode: str) -> np.ndarray:
    """[T, h, w, 3] uint8 → [T, out_h, out_w, 3] uint8 by crop-and-resize or squash."""
    import cv2

    T, h, w = frames.shape[:3]
    x0, y0, x1, y1 = _crop_box(w, h, out_w, out_h, mode)
    c = frames[:, int(round(y0 * h)):int(round(y1 * h)), int(round(x0 * w)):int(round(x1 * w))]
    interp = cv2.INTER_AREA if c.shape[1] >= out_h and c.shape[2] >= out_w else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (out_w, out_h), interpolation=interp) for f in c])


def _fit_depth(depth: np.ndarray, src_w: int, src_h: int, out_w: int, out_h: int, mode: str) -> np.ndarray:
    """Depth [T, h, w] (any resolution, covering the source frame) cropped like the frames and resized (in 1/z)."""
    from ..io.depth import resize_depth

    T, h, w = depth.shape
    x0, y0, x1, y1 = _crop_box(src_w, src_h, out_w, out_h, mode)
    c = depth[:, int(round(y0 * h)):max(int(round(y1 * h)), int(round(y0 * h)) + 1),
              int(round(x0 * w)):max(int(round(x1 * w)), int(round(x0 * w)) + 1)]
    return resize_depth(np.ascontiguousarray(c), out_h, out_w).astype(np.float32)


def _depth_file(depth_dir: Path, video: Path) -> Path | None:
    for cand in (depth_dir / f"{video.stem}.npz", depth_dir / f"{video.stem}.npy", depth_dir / video.stem):
        if cand.exists():
            return cand
    return None


# --------------------------------------------------------------------------- the worker


class ClipWorker:
    """Turns one video into its clips (run in-process, or as a Ray actor holding a depth model).

    Args:
        out: the dataset folder.
        config: :class:`PrepareConfig` as a dict (cheap to ship to Ray workers).
        depth_fn: optional ``frames [T,H,W,3] uint8 → depth [T,H,W] float32`` used instead of
            ``depth_dir`` / ``depth_model`` (library use and tests; must be picklable for Ray).
    """

    def __init__(self, out: str, config: dict, depth_fn: Callable | None = None) -> None:
        self.out = Path(out)
        self.config = PrepareConfig.from_dict(config)
        self.depth_fn = depth_fn
        self._model = None

    def process(self, job: dict) -> list[dict]:
        """Manifest records (dicts) for ``job`` = ``{"video", "video_id", "done": [clip ids already complete]}``."""
        from ..io.video import probe_video

        video, vid = Path(job["video"]), job["video_id"]
        cfg = self.config
        try:
            total, fps, src_w, src_h = probe_video(video)
        except Ex4dError as e:
            return [video_record(video, vid, "skipped", f"cannot read the video: {e}")]
        except Exception as e:  # PyAV and friends on broken files
            return [video_record(video, vid, "skipped", f"cannot read the video: {type(e).__name__}: {e}")]
        starts = clip_starts(total, cfg.num_frames, cfg.stride, cfg.clips_per_video)
        span = (cfg.num_frames - 1) * cfg.stride + 1
        if not starts:
            return [video_record(video, vid, "skipped", f"too short: {total} frames, a clip needs {span} "
                                                         f"({cfg.num_frames} frames at stride {cfg.stride})")]
        ids = [f"{vid}-c{i:02d}" for i in range(len(starts))]
        depth_path = None
        if self.depth_fn is None and cfg.depth_model is None:
            check(cfg.depth_dir is not None, "no depth source: give depth_dir (--depth-dir) or depth_model "
                                             "(--depth-model)")
            depth_path = _depth_file(Path(cfg.depth_dir), video)
            if depth_path is None:
                return [video_record(video, vid, "skipped", f"no depth file {video.stem}.npz/.npy or folder "
                                                             f"{video.stem}/ in {cfg.depth_dir}")]
        records = []
        for clip_id, start in zip(ids, starts):
            if clip_id in job.get("done", ()) or layout.is_complete(self.out / "clips" / clip_id):
                records.append({"type": "clip", "clip": clip_id, "video": str(video), "status": "done",
                                "reused": True})
                continue
            t0 = time.perf_counter()
            try:
                info = self._make_clip(video, clip_id, start, total, fps, (src_w, src_h), depth_path)
            except Ex4dError as e:
                return records + [video_record(video, vid, "skipped", str(e), ids)]
            records.append({"type": "clip", "clip": clip_id, "video": str(video), "status": "done",
                            "seconds": round(time.perf_counter() - t0, 3), **info})
        records.append(video_record(video, vid, "done", "", ids))
        return records

    # ------------------------------------------------------------------ one clip

    def _depth(self, frames: np.ndarray, indices: np.ndarray, total: int, src_size, depth_path: Path | None):
        cfg = self.config
        if self.depth_fn is not None:
            return np.asarray(self.depth_fn(frames), dtype=np.float32)
        if depth_path is not None:
            from ..io.depth import check_depth_matches_frames, load_depth, match_depth_to_frames

            raw = load_depth(depth_path, cfg.depth_kind, scale=cfg.depth_scale)
            raw = match_depth_to_frames(raw, indices, total)
            check_depth_matches_frames(raw.shape, src_size[1], src_size[0], str(depth_path))
            return _fit_depth(raw, src_size[0], src_size[1], cfg.width, cfg.height, cfg.resize)
        if self._model is None:
            from ..depth.estimate import load_depth_model

            check(cfg.depth_weights is not None, "--depth-model needs --depth-weights (a local weights folder)")
            self._model = load_depth_model(cfg.depth_model, cfg.depth_weights)
        return np.asarray(self._model.estimate(frames, progress=False).depth, dtype=np.float32)

    def _make_clip(self, video: Path, clip_id: str, start: int, total: int, fps: float, src_size,
                   depth_path: Path | None) -> dict:
        from ..cameras import default_intrinsics
        from ..io.camera_files import write_cameras_json
        from ..io.video import read_video, write_video
        from .masks import apply_mask, simulate_masks

        cfg = self.config
        read = read_video(video, num_frames=cfg.num_frames, start=start, stride=cfg.stride, max_res=1 << 16,
                          multiple=1)
        frames = _fit_frames(read.frames, cfg.width, cfg.height, cfg.resize)
        depth = self._depth(frames, read.indices, total, read.source_size, depth_path)
        check(depth.shape == frames.shape[:3], f"depth {depth.shape} does not match the frames {frames.shape[:3]}")
        K = default_intrinsics(cfg.width, cfg.height)
        seed = _clip_seed(cfg.seed, clip_id)
        w2c_src, poses_note = None, "static (not estimated)"
        if cfg.source_poses == "estimate":
            from ..poses import estimate_source_poses

            poses = estimate_source_poses(frames, depth, K)
            w2c_src, poses_note = (None if poses.static else poses.w2c), poses.note
        sim = simulate_masks(frames, depth, K, cfg.masks, seed=seed, w2c_src=w2c_src)
        cond = apply_mask(frames, sim.mask)
        out_fps = float(fps) / cfg.stride

        tmp_root = self.out / ".tmp"
        tmp = tmp_root / f"{clip_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            write_video(tmp / layout.TARGET, frames, out_fps, crf=cfg.crf)
            write_video(tmp / layout.CONDITION, cond, out_fps, crf=cfg.crf)
            write_video(tmp / layout.MASK, sim.mask, out_fps)
            if cfg.save_depth:
                atomic_save_npz(tmp / layout.DEPTH, compress=True, depth=depth.astype(np.float16),
                                kind=np.array("depth"))
            write_cameras_json(tmp / layout.CAMERAS, sim.w2c, K, cfg.width, cfg.height, out_fps)
            unknown = (1.0 - sim.mask.mean(axis=(1, 2))).round(4).tolist()
            meta = {"clip": clip_id, "video": str(video), "frame_indices": read.indices.tolist(), "fps": out_fps,
                    "source_size": list(read.source_size), "size": [cfg.width, cfg.height], "K": K.tolist(),
                    "seed": seed, "camera": sim.camera.to_dict(), "source_poses": poses_note,
                    "w2c_src": None if w2c_src is None else np.round(w2c_src, 9).tolist(), "mask_tries": sim.tries,
                    "unknown_fraction": round(sim.unknown_fraction, 4), "unknown_per_frame": unknown,
                    "depth": str(depth_path) if depth_path else (cfg.depth_model or "depth_fn")}
            atomic_write_json(tmp / layout.META, meta)
            dest = self.out / "clips" / clip_id
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, dest)  # atomic; fails if a finished sample is already there
            except OSError:
                if not layout.is_complete(dest):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return {"unknown": round(sim.unknown_fraction, 4), "tracking": sim.camera.tracking}


def _clip_seed(seed: int, clip_id: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------- the driver


def prepare_dataset(videos: Iterable[str | os.PathLike], out: str | os.PathLike, config: PrepareConfig = PrepareConfig(),
                    executor: str = "ray", ray_address: str | None = None, num_workers: int | None = None,
                    gpus_per_worker: float = 0.0, retries: int = 2, progress: bool = True,
                    depth_fn: Callable | None = None) -> PrepareSummary:
    """Prepare training samples from ``videos`` into ``out`` (resumable; see the module docstring).

    Args:
        videos: video files, folders (recursive) or ``.txt`` lists.
        out: dataset folder (created; re-running resumes).
        config: :class:`PrepareConfig`.
        executor: ``ray`` (default; a local Ray instance unless ``ray_address``) or ``local`` (in-process, serial).
        ray_address: Ray cluster address (``auto`` = the running cluster).
        num_workers: Ray actors (default: CPUs // 2, or GPUs / ``gpus_per_worker``).
        gpus_per_worker: GPUs each Ray worker holds (e.g. 1 with a depth model).
        retries: restarts of a crashed worker / retries of its video before it counts as failed.
        progress: show a progress bar.
        depth_fn: ``frames → depth`` callable overriding the config's depth source.
    """
    from .preflight import check_prepare_inputs

    t_start = time.perf_counter()
    out = check_prepare_inputs(out, config, executor, num_workers, gpus_per_worker, retries, depth_fn)
    files = find_videos(videos)
    check_dataset_config(out, config.to_dict())
    shutil.rmtree(out / ".tmp", ignore_errors=True)  # clips a killed run left half-written
    (out / "clips").mkdir(parents=True, exist_ok=True)

    finished = {}
    for r in read_manifest(out):
        if r.get("type") == "video" and isinstance(r.get("video"), str):
            finished[r["video"]] = r.get("status")
    jobs = []
    summary = PrepareSummary()
    for f in files:
        status = finished.get(str(f))
        if status in ("done", "skipped"):
            if status == "done":
                summary.reused_clips += sum(1 for _ in (out / "clips").glob(f"{layout.video_id(f)}-c*"))
            continue
        vid = layout.video_id(f)
        done = [p.name for p in (out / "clips").glob(f"{vid}-c*") if layout.is_complete(p)]
        jobs.append({"video": str(f), "video_id": vid, "done": done})

    manifest = Manifest(out)
    bar = None
    if progress and jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="prepare", unit="video")

    def consume(records: list[dict]) -> None:
        for r in records:
            if r["type"] == "clip":
                if r.get("reused"):
                    summary.reused_clips += 1
                    continue
                summary.new_clips += 1
            elif r["status"] == "skipped":
                summary.skipped.append((r["video"], r["reason"]))
                if bar is not None:
                    bar.write(f"skipped {r['video']}: {r['reason']}")
            elif r["status"] == "failed":
                summary.failed.append((r["video"], r["reason"]))
                if bar is not None:
                    bar.write(f"failed {r['video']}: {r['reason']}")
            manifest.write(r)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(clips=summary.new_clips, skipped=len(summary.skipped), failed=len(summary.failed))

    try:
        if executor == "local":
            worker = ClipWorker(str(out), config.to_dict(), depth_fn)
            for job in jobs:
                consume(_safe(worker.process, job))
        elif jobs:
            ray_run.run_on_ray(jobs, ClipWorker, (str(out), config.to_dict(), depth_fn), ray_address, num_workers,
                               gpus_per_worker, retries, consume)
    finally:
        manifest.close()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def _safe(fn, job) -> list[dict]:
    try:
        return fn(job)
    except Exception as e:  # a bug or an environment problem: record it, keep going
        return [video_record(Path(job["video"]), job["video_id"], "failed", _describe(e))]


def _describe(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {e}{where}"[:2000]
