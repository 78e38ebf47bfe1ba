"""Every input of ``ex4d train`` checked before anything heavy is loaded (14B of weights, accelerate, the data).

:func:`check_train_inputs` reads only small files (folder listings, ``meta.json``,
``config.json``, ``state.json``, the adapter's header) and raises one
:class:`~ex4d.errors.Ex4dError` naming the first problem:

* the numbers of the :class:`~ex4d.train.config.TrainConfig` (ranges, finite);
* ``data`` / ``val_data``: folders holding complete prepared clips whose ``meta.json`` is readable, whose
  frame size fits the model (multiples of 16, one size per batch) and whose frame count covers ``num_frames``;
* ``wan`` / ``wan_encoders``: the weight folder layout (diffusers or original + encoders), every part present;
* ``init_adapter``: metadata, keys, shapes and dtypes (no values), rank and hidden as the run's;
* ``out``: a folder that can be written, not holding a run unless resuming; ``--resume``: a checkpoint
  whose settings match this run's.

It returns the checkpoint folder to resume from (or None). :func:`check_prepare_inputs` does the same
for ``ex4d prepare`` before Ray starts (depth source, options, the output folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import Ex4dError, check
from . import layout

__all__ = ["check_train_inputs", "check_prepare_inputs", "check_dataset", "check_wan_folder", "check_output_folder",
           "read_small_json", "check_resume_config"]

_MAX_JSON_BYTES = 16 << 20


def read_small_json(path: Path, what: str, max_bytes: int = _MAX_JSON_BYTES):
    """The JSON value in ``path`` (at most ``max_bytes``), or Ex4dError naming the file and what it should be."""
    from ..io.json_input import read_json

    return read_json(path, f"{path} ({what})", max_bytes=max_bytes)


# --------------------------------------------------------------------------- data


def _clip_size(clip: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a prepared clip from its meta.json."""
    meta = read_small_json(clip / layout.META, "a clip's meta.json written by `ex4d prepare`")
    check(isinstance(meta, dict), f"{clip / layout.META} is not a JSON object; re-run `ex4d prepare`")
    size, frames = meta.get("size"), meta.get("frame_indices")
    check(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in size),
          f"{clip / layout.META}: size = {str(size)[:40]}; expected [width, height] (re-run `ex4d prepare`)")
    check(isinstance(frames, list), f"{clip / layout.META}: frame_indices = {str(frames)[:40]}; expected a list "
                                    f"(re-run `ex4d prepare`)")
    return len(frames), size[0], size[1]


def check_dataset(root: str | os.PathLike, flag: str, num_frames: int | None, batch_size: int,
                  min_clips: int = 1) -> list[Path]:
    """The complete clips under ``root`` after checking what training needs of them (module docstring)."""
    root = Path(root)
    hint = "the --out folder of `ex4d prepare`"
    check(root.exists(), f"{flag} {root} does not exist; expected {hint}")
    check(root.is_dir(), f"{flag} {root} is not a folder; expected {hint}")
    clips = layout.list_clips(root)
    if not clips:
        base = layout.clips_dir(root)
        partial = [p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")] if base.is_dir() \
            else []
        why = (f"{len(partial)} folder(s) there lack {', '.join(layout.CLIP_FILES)} (e.g. {partial[0]})" if partial
               else "it holds no clip folders")
        raise Ex4dError(f"{flag} {root} holds no complete prepared clip: {why}; expected {hint} "
                        f"(clips/<id>/{layout.TARGET}, {layout.CONDITION}, {layout.MASK}, {layout.META})")
    check(len(clips) >= min_clips, f"{flag} {root} holds {len(clips)} clip(s); this run needs at least {min_clips} "
                                   f"(lower --val-clips, or give --val-data)")
    sizes = {}
    for clip in clips:
        t, w, h = _clip_size(clip)
        check(w >= 16 and h >= 16 and w % 16 == 0 and h % 16 == 0,
              f"{clip}: frames are {w}x{h}; training needs multiples of 16 (re-prepare with --size W H)")
        if num_frames is not None:
            check(t >= num_frames, f"{clip}: {t} frames, fewer than --num-frames {num_frames}")
        else:
            check(t >= 5 and (t - 1) % 4 == 0, f"{clip}: {t} frames; training needs 4k+1 (e.g. 49): pass "
                                               f"--num-frames or re-prepare with --num-frames 49")
        sizes.setdefault((w, h), clip)
    if batch_size > 1:
        check(len(sizes) == 1, f"{flag} {root} mixes frame sizes "
                               f"({', '.join(f'{w}x{h} in {c.name}' for (w, h), c in list(sizes.items())[:3])}); "
                               f"--batch-size {batch_size} needs one size (use --batch-size 1)")
    return clips


# --------------------------------------------------------------------------- weights


def _has_weights(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.safetensors").is_file() or any(folder.glob(f"{stem}-*-of-*.safetensors")) \
        or (folder / f"{stem}.bin").is_file()


def _check_part(folder: Path, stem: str, what: str, source: Path) -> None:
    check(folder.is_dir(), f"--wan {source}: missing {folder.name}/ ({what})")
    check((folder / "config.json").is_file(), f"--wan {source}: missing {folder.name}/config.json ({what})")
    check(_has_weights(folder, stem), f"--wan {source}: no {what} weights in {folder.name}/ (expected {stem}"
                                      f".safetensors or its shards)")


def _check_encoders(folder: Path, flag: str) -> None:
    check(folder.is_dir(), f"{flag} {folder} is not a folder; expected a diffusers Wan2.1-I2V folder with "
                           f"text_encoder/, tokenizer/, image_encoder/")
    _check_part(folder / "text_encoder", "model", "UMT5 text encoder", folder)
    tok = folder / "tokenizer"
    check((tok / "tokenizer.json").is_file() or (tok / "spiece.model").is_file(),
          f"{flag} {folder}: missing tokenizer/tokenizer.json (or spiece.model)")
    _check_part(folder / "image_encoder", "model", "CLIP image encoder", folder)


def check_wan_folder(wan: str | os.PathLike, encoders: str | os.PathLike | None) -> None:
    """Ex4dError unless ``wan`` (+ ``encoders``) hold every part of Wan2.1-I2V that training loads (files only)."""
    from ..diffusion.loading import ORIGINAL_VAE_FILE, detect_layout

    wan = Path(wan)
    kind = detect_layout(wan)
    if kind == "diffusers":
        _check_part(wan / "transformer", "diffusion_pytorch_model", "DiT", wan)
        _check_part(wan / "vae", "diffusion_pytorch_model", "VAE", wan)
        _check_encoders(Path(encoders) if encoders else wan, "--wan-encoders" if encoders else "--wan")
        return
    check(_has_weights(wan, "diffusion_pytorch_model"),
          f"--wan {wan}: no DiT weights (diffusion_pytorch_model*.safetensors) in this original-layout folder")
    check((wan / ORIGINAL_VAE_FILE).is_file(), f"--wan {wan}: missing {ORIGINAL_VAE_FILE} (the VAE)")
    check(encoders is not None, f"--wan {wan} is an original-layout folder (DiT + VAE only); pass the diffusers "
                                f"folder for the text/image encoders with --wan-encoders DIR")
    _check_encoders(Path(encoders), "--wan-encoders")


# --------------------------------------------------------------------------- output and resume


def check_output_folder(out: str | os.PathLike, flag: str = "--out") -> Path:
    """``out`` as a Path after checking that it is (or can become) a folder this process can write."""
    out = Path(out)
    check(not out.exists() or out.is_dir(), f"{flag} {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    check(probe.is_dir(), f"{flag} {out}: {probe} is not a folder")
    check(os.access(probe, os.W_OK | os.X_OK), f"{flag} {out}: {probe} is not writable; choose another {flag}")
    return out


def check_resume_config(config, saved: dict, folder: Path) -> None:
    """Ex4dError unless ``config`` agrees with a checkpoint's saved config on every field that decides the run."""
    from .config import RESUME_FIELDS

    check(isinstance(saved, dict), f"cannot resume from {folder}: its state.json has no config")
    mine = config.to_dict()
    diff = [k for k in RESUME_FIELDS if json.dumps(mine.get(k)) != json.dumps(saved.get(k))]
    check(not diff, f"cannot resume from {folder}: the run used other {', '.join(diff)} "
                    f"({', '.join(f'{k}={saved.get(k)!r}' for k in diff)}); change them back or start a new --out")


def _check_resume(config, out: Path, resume: str | None) -> Path | None:
    from .checkpointing import resolve_resume

    if resume is None:
        ckpts = out / "checkpoints"
        check(not (ckpts.is_dir() and any(ckpts.iterdir())),
              f"{out} already holds checkpoints; pass --resume to continue that run or choose another --out")
        return None
    folder = resolve_resume(out, resume)
    if folder is None:
        return None  # --resume with nothing to resume yet: a fresh start
    state = read_small_json(folder / "state.json", "a training checkpoint's state.json")
    check(isinstance(state, dict) and isinstance(state.get("step"), int) and state["step"] >= 0,
          f"{folder / 'state.json'} has no step; the checkpoint is damaged (resume from an older one)")
    for name in ("trainable.pt", "optimizer.pt", "scheduler.pt"):
        check((folder / name).is_file(), f"checkpoint {folder} lacks {name}; resume from an older one")
    check_resume_config(config, state.get("config", {}), folder)
    check(state["step"] <= config.max_steps,
          f"checkpoint {folder} is at step {state['step']}, past --max-steps {config.max_steps}")
    return folder


# --------------------------------------------------------------------------- all of it


def check_train_inputs(config, resume: str | None = None) -> Path | None:
    """Check everything ``ex4d train`` will read or write (module docstring); returns the checkpoint to resume."""
    config.check()
    check_dataset(config.data, "--data", config.num_frames, config.batch_size)
    if config.val_data:
        check_dataset(config.val_data, "--val-data", config.num_frames, 1)
    check_wan_folder(config.wan, config.wan_encoders)
    if config.init_adapter:
        from ..diffusion.checkpoint import inspect_adapter

        spec = inspect_adapter(config.init_adapter)
        check(spec.rank == config.rank and spec.hidden == config.hidden,
              f"--init-adapter {config.init_adapter} has rank {spec.rank}, hidden {spec.hidden}; the run uses "
              f"rank {config.rank}, hidden {config.hidden} (pass --rank {spec.rank} --hidden {spec.hidden})")
    out = check_output_folder(config.out)
    return _check_resume(config, out, resume)


def check_prepare_inputs(out: str | os.PathLike, config, executor: str, num_workers: int | None,
                         gpus_per_worker: float, retries: int, depth_fn=None) -> Path:
    """Check what ``ex4d prepare`` needs besides the videos before Ray starts (module docstring); returns ``out``."""
    import math

    from .prepare import EXECUTORS

    check(executor in EXECUTORS, f"executor must be one of {EXECUTORS}, got {executor!r}")
    check(isinstance(retries, int) and 0 <= retries <= 100, f"--retries must be in 0..100, got {retries!r}")
    check(num_workers is None or (isinstance(num_workers, int) and num_workers >= 1),
          f"--workers must be >= 1, got {num_workers!r}")
    check(isinstance(gpus_per_worker, (int, float)) and math.isfinite(gpus_per_worker) and gpus_per_worker >= 0,
          f"--gpus-per-worker must be a finite number >= 0, got {gpus_per_worker!r}")
    if depth_fn is None:
        check(config.depth_dir is not None or config.depth_model is not None,
              "no depth source: pass --depth-dir DIR (depth files named after the videos) or --depth-model NAME "
              "--depth-weights DIR")
    if config.depth_dir is not None:
        d = Path(config.depth_dir)
        check(d.is_dir(), f"--depth-dir {d} is not a folder; expected depth files named after the videos "
                          f"(STEM.npz, STEM.npy or STEM/ of 16-bit PNGs)")
    if config.depth_model is not None and depth_fn is None:
        check(config.depth_weights is not None, "--depth-model needs --depth-weights (a local weights folder)")
        check(Path(config.depth_weights).is_dir(), f"--depth-weights {config.depth_weights} is not a folder")
    return check_output_folder(out)
