"""Generation jobs: one video each, for ``ex4d generate --jobs FILE`` and ``ex4d serve``, on models loaded once.

A job (JSON object)::

    {"color": "a/color.mp4", "mask": "a/mask.mp4", "out": "a/output.mp4",      # or "inputs": "a.npz"
     "options": {"seed": 3, "steps": 4, "prompt": "..."},                     # optional, per video
     "num_frames": 0, "overwrite": false}                                     # optional

``options`` may set every :class:`~ex4d.diffusion.config.GenerateConfig` field that does not decide how
the models are loaded (prompt, negative_prompt, steps, cfg, shift, sampler, seed, erosion, erosion_seed,
frames); ``inputs`` is an ``.npz`` with ``color`` [T, H, W, 3] uint8 and ``mask`` [T, H, W] bool (the
Python client's way to pass arrays); ``out`` may end in ``.npz`` (writes ``video`` [T, H, W, 3] uint8)
instead of a video. A jobs file is a JSON list of jobs, JSON lines (one job per line), or lines of
``COLOR MASK OUT``; relative paths are taken from the jobs file's folder. Every job is checked before the
models load: a bad one is an :class:`~ex4d.errors.Ex4dError` naming it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .config import MODEL_FIELDS, GenerateConfig

__all__ = ["Job", "parse_job", "read_jobs", "run_job", "read_inputs", "read_job_inputs", "write_output", "write_record", "check_output_path", "JOB_OPTION_FIELDS",
           "MAX_JOBS", "MAX_JOBS_FILE_BYTES"]

MAX_JOBS = 10_000
MAX_JOBS_FILE_BYTES = 16 * 1024**2
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
_KEYS = {"color", "mask", "inputs", "out", "options", "num_frames", "overwrite", "id"}
JOB_OPTION_FIELDS = tuple(f for f in GenerateConfig.__dataclass_fields__ if f not in MODEL_FIELDS and f != "extra")


@dataclass(frozen=True)
class Job:
    """One checked job: input paths (``color`` + ``mask`` or ``inputs``), ``out``, per-job config overrides."""

    out: Path
    color: Path | None = None
    mask: Path | None = None
    inputs: Path | None = None
    options: dict = field(default_factory=dict)
    num_frames: int = 0
    overwrite: bool = False
    id: str = ""

    def config(self, base: GenerateConfig) -> GenerateConfig:
        """``base`` with this job's options applied (checked)."""
        opts = dict(self.options)
        if "erosion" in opts:
            opts["erosion"] = tuple(opts["erosion"])
        return base.replace(**opts).check()

    def to_json(self) -> dict:
        return {"id": self.id, "out": str(self.out), "color": str(self.color) if self.color else None,
                "mask": str(self.mask) if self.mask else None, "inputs": str(self.inputs) if self.inputs else None,
                "options": self.options, "num_frames": self.num_frames}


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def check_output_path(out: Path, overwrite: bool, inputs: list[Path] = (), what: str = "--out") -> None:
    """``out`` is a new file (or ``overwrite``), not one of ``inputs``, in a folder that can be created and written."""
    check(not out.is_dir(), f"{what} {out} is a folder; give a file name such as {out / 'output.mp4'}")
    check(out.suffix.lower() in VIDEO_SUFFIXES + (".npz",),
          f"{what} {out} must end in .mp4, .mov, .mkv (or .npz for arrays)")
    for src in inputs:
        if src is not None and src.exists() and out.exists():
            check(not out.samefile(src), f"{what} {out} is also an input; write the output elsewhere")
    check(overwrite or not out.exists(), f"{what} {out} exists; pass --overwrite to replace it, or choose another name")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Ex4dError(f"cannot create the folder of {what} {out}: {e.strerror or e}") from None
    check(os.access(parent, os.W_OK | os.X_OK), f"cannot write into {parent} (permission denied); choose another {what}")


def parse_job(obj, base: GenerateConfig, root: Path | None = None, where: str = "job", num_frames: int = 0) -> Job:
    """A checked :class:`Job` from a JSON object (paths relative to ``root``); Ex4dError naming ``where`` otherwise.

    ``num_frames``: the job's ``num_frames`` when it gives none (the command's ``--num-frames``).
    """
    check(isinstance(obj, dict), f"{where}: a job must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    check(not unknown, f"{where}: unknown keys {unknown}; a job has {sorted(_KEYS)}")
    for k in ("color", "mask", "inputs", "out", "id"):
        check(obj.get(k) is None or (isinstance(obj[k], str) and obj[k] and len(obj[k]) < 4096),
              f"{where}: {k} must be a non-empty path string")

    def path(key: str) -> Path | None:
        if obj.get(key) is None:
            return None
        p = Path(obj[key]).expanduser()
        return p if p.is_absolute() or root is None else root / p

    check(obj.get("out") is not None, f"{where}: out is missing (the output video)")
    color, mask, inputs = path("color"), path("mask"), path("inputs")
    check((inputs is None) != (color is None and mask is None) and (inputs is not None or (color and mask)),
          f"{where}: give color and mask (videos), or inputs (an .npz with color and mask)")
    for p in (color, mask, inputs):
        check(p is None or p.is_file(), f"{where}: input {p} is not a file")
    check(inputs is None or inputs.suffix == ".npz", f"{where}: inputs {inputs} must be an .npz")
    options = obj.get("options") or {}
    check(isinstance(options, dict), f"{where}: options must be a JSON object")
    fixed = sorted(set(options) & set(MODEL_FIELDS))
    check(not fixed, f"{where}: options {fixed} decide how the models load and cannot change per job; "
                     f"pass them as flags of the command")
    bad = sorted(set(options) - set(JOB_OPTION_FIELDS))
    check(not bad, f"{where}: unknown options {bad}; per-job options are {list(JOB_OPTION_FIELDS)}")
    for k, v in options.items():
        check(_scalar(v) or (isinstance(v, list) and len(v) <= 8 and all(_scalar(x) for x in v)),
              f"{where}: option {k} must be a number, string, bool or a short list of them")
    num_frames = obj.get("num_frames", num_frames)
    check(isinstance(num_frames, int) and not isinstance(num_frames, bool) and num_frames >= 0,
          f"{where}: num_frames must be an integer >= 0")
    overwrite = obj.get("overwrite", False)
    check(isinstance(overwrite, bool), f"{where}: overwrite must be true or false")
    job = Job(out=path("out"), color=color, mask=mask, inputs=inputs, options=dict(options), num_frames=num_frames,
              overwrite=overwrite, id=str(obj.get("id") or ""))
    try:
        job.config(base)
    except Ex4dError as e:
        raise Ex4dError(f"{where}: {e}") from None
    return job


def read_jobs(path: str | os.PathLike, base: GenerateConfig, overwrite: bool = False, num_frames: int = 0) -> list[Job]:
    """Every job of a jobs file (module docstring), checked; outputs must be distinct and writable."""
    path = Path(path)
    check(path.is_file(), f"--jobs {path} is not a file")
    size = path.stat().st_size
    check(size <= MAX_JOBS_FILE_BYTES, f"--jobs {path} is {size} bytes; at most {MAX_JOBS_FILE_BYTES} are read")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise Ex4dError(f"cannot read --jobs {path}: {e}") from None
    stripped = text.lstrip()
    objs: list = []
    try:
        if stripped.startswith("["):
            objs = json.loads(text)
            check(isinstance(objs, list), f"{path}: expected a JSON list of jobs")
        elif stripped.startswith("{"):
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split()
                check(len(parts) == 3, f"{path}:{n}: expected 'COLOR MASK OUT', got {line!r}")
                objs.append(dict(zip(("color", "mask", "out"), parts)))
    except (ValueError, RecursionError) as e:
        raise Ex4dError(f"{path} is not valid JSON / JSON lines: {e}") from None
    check(objs, f"{path} holds no jobs")
    check(len(objs) <= MAX_JOBS, f"{path} holds {len(objs)} jobs; at most {MAX_JOBS}")
    jobs = [parse_job(o, base, path.parent, where=f"{path} job {i + 1}", num_frames=num_frames)
            for i, o in enumerate(objs)]
    outs = [str(j.out.resolve()) for j in jobs]
    twice = sorted({o for o in outs if outs.count(o) > 1})
    if twice:
        raise Ex4dError(f"{path}: several jobs write {twice[0]}")
    for i, j in enumerate(jobs):
        check_output_path(j.out, overwrite or j.overwrite, [j.color, j.mask, j.inputs], f"{path} job {i + 1}: out")
    return jobs


def read_job_inputs(job: Job):
    """(color [T,H,W,3] uint8, mask [T,H,W] bool, fps) of ``job``."""
    if job.inputs is not None:
        try:
            with np.load(job.inputs, allow_pickle=False) as z:
                color, mask = z["color"], z["mask"]
                fps = float(z["fps"]) if "fps" in z.files else 16.0
        except (OSError, KeyError, ValueError) as e:
            raise Ex4dError(f"cannot read {job.inputs}: {e} (expected an .npz with color and mask)") from None
        if job.num_frames:
            color, mask = color[:job.num_frames], mask[:job.num_frames]
        return color, mask.astype(bool) if mask.dtype != bool else mask, fps
    return read_inputs(str(job.color), str(job.mask), job.num_frames)


def read_inputs(color_path: str, mask_path: str, num_frames: int = 0):
    """(frames [T,H,W,3] uint8, mask [T,H,W] bool, fps) of a color / mask video pair, at the stored size."""
    from ..io.video import read_mask_video, read_video

    check(num_frames >= 0, f"--num-frames must be >= 0, got {num_frames}")
    n = num_frames or None
    color = read_video(color_path, num_frames=n, max_res=1 << 16, multiple=1)
    mask = read_mask_video(mask_path, num_frames=n, size=color.size)
    check(mask.shape[0] == color.num_frames,
          f"{mask_path} has {mask.shape[0]} frames, {color_path} {color.num_frames}; pass --num-frames")
    check(mask.shape[1:] == color.frames.shape[1:3],
          f"mask {mask_path} is {mask.shape[2]}x{mask.shape[1]}, color {color_path} "
          f"{color.frames.shape[2]}x{color.frames.shape[1]}; they must have one size")
    return color.frames, mask, color.fps


def write_output(out: Path, video: np.ndarray, fps: float) -> None:
    """``video`` [T, H, W, 3] uint8 to ``out`` (video file, or ``.npz`` with ``video``), atomically."""
    if out.suffix.lower() == ".npz":
        from ..io.atomic import atomic_save_npz

        atomic_save_npz(out, compress=False, video=video, fps=np.float64(fps))
    else:
        from ..io.video import write_video

        write_video(out, video, fps)


def run_job(generator, job: Job, base: GenerateConfig, record: dict, progress: bool = False,
            inputs: tuple | None = None, windows=None) -> dict:
    """Generate and write one job's video with ``generator``; returns its record (see :func:`write_record`).

    ``record``: fields added to the record (e.g. the weights); ``inputs``: (color, mask, fps) already read;
    ``windows``: a :class:`~ex4d.diffusion.windows.WindowConfig` for clips longer than one window (default:
    its defaults), resumable in ``.OUT.windows/`` beside the output.
    The record's ``timings_s`` has read / encode (prompt + image + camera tokens) / dit_wait / denoise /
    decode / generate / write seconds and every stage of the generator (``stages``).
    """
    cfg = job.config(base)
    t0 = time.perf_counter()
    color, mask, fps = inputs if inputs is not None else read_job_inputs(job)
    t1 = time.perf_counter()
    from .windowed import generate_in_windows

    video, num_windows = generate_in_windows(generator, color, mask, cfg, windows, job.out, progress=progress)
    t2 = time.perf_counter()
    write_output(job.out, video, fps)
    t3 = time.perf_counter()
    laps = generator.last_timings
    timings = {"read": round(t1 - t0, 3),
               "encode": round(sum(laps.get(k, 0.0) for k in ("prompt_s", "image_s", "tokens_s")), 3),
               "dit_wait": round(laps.get("dit_wait_s", 0.0), 3), "denoise": round(laps.get("denoise_s", 0.0), 3),
               "decode": round(laps.get("decode_s", 0.0), 3), "generate": round(t2 - t1, 3),
               "write": round(t3 - t2, 3), "stages": {k: round(v, 3) for k, v in laps.items()}}
    return {**record, "job": job.to_json(), "config": cfg.to_json(), "fps": fps, "windows": num_windows,
            "frames": int(video.shape[0]),
            "width": int(video.shape[2]), "height": int(video.shape[1]), "timings_s": timings}


def write_record(job: Job, record: dict) -> None:
    """``record`` as ``OUT.generate.json`` beside a video output (nothing for an ``.npz`` output), atomically."""
    from ..io.atomic import atomic_write_json

    if job.out.suffix.lower() != ".npz":
        atomic_write_json(job.out.with_name(job.out.stem + ".generate.json"), record)
