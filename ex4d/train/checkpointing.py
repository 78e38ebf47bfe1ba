"""Training checkpoints with full resume: trainable weights, optimizer, LR scheduler, RNG of every rank, data position.

::

    RUN/checkpoints/step-000500/
      trainable.pt          LoRA A/B + camera encoder (full, unsharded; frozen Wan weights are not saved)
      optimizer.pt          AdamW state of those parameters (full, unsharded)
      scheduler.pt          LR scheduler state
      rng/rank{r}.pt        python, numpy, torch CPU (and CUDA) generator states of rank r
      state.json            {"step", "samples_seen" (per rank), "world_size", "config"}
      adapter.safetensors   the adapter at this step, in ex4d's format (loads in ``ex4d generate``)

Weights and optimizer go through ``torch.distributed.checkpoint.state_dict``
(``full_state_dict``, ``ignore_frozen_params``), which gathers DDP, FSDP and
plain modules alike, so a run can resume on a different number of GPUs
(RNG states then restart from the seed; data order stays deterministic). A
checkpoint is written into ``step-000500.tmp`` and renamed when complete, so
a crash never leaves a half-written one that resume would pick up.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import Ex4dError, check
from ..io.atomic import atomic_write_json

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rotate_checkpoints", "rng_state",
           "set_rng_state"]

_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    """Generator states of python, numpy, torch CPU and (when present) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s output."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def save_checkpoint(folder: Path, accelerator, model, optimizer, scheduler, state: dict, export=None) -> Path:
    """Write a checkpoint to ``folder`` (collective: every rank calls it); returns ``folder``.

    ``export``: called on the main process with the trainable state dict, to write extra
    files (the adapter) into the temporary folder before it is renamed.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(cpu_offload=True,
                                                                           ignore_frozen_params=True))
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / "rng" / f"rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(model_sd, tmp / "trainable.pt")
        torch.save(optim_sd, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if export is not None:
            export(model_sd, tmp)
        atomic_write_json(tmp / "state.json", {**state, "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(folder: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the (prepared) objects; returns its state.json."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    folder = Path(folder)
    check((folder / "state.json").is_file(), f"{folder} is not a complete ex4d training checkpoint (no state.json)")
    from ..io.json_input import expect, read_json

    state = expect(read_json(folder / "state.json", "checkpoint state"), dict, f"{folder}/state.json")
    model_sd = torch.load(folder / "trainable.pt", map_location="cpu", weights_only=False)
    optim_sd = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=_options(strict=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=False))
    rng = folder / "rng" / f"rank{accelerator.process_index}.pt"
    if state.get("world_size") == accelerator.num_processes and rng.is_file():
        set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
    return state


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete ``RUN/checkpoints/step-N`` (by N), or None."""
    base = Path(run) / "checkpoints"
    if not base.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in base.iterdir() if (m := _NAME.match(p.name)) and (p / "state.json").is_file()]
    return max(found)[1] if found else None


def rotate_checkpoints(run: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (and stale ``.tmp`` folders)."""
    base = Path(run) / "checkpoints"
    if not base.is_dir():
        return
    found = sorted((int(m.group(1)), p) for p in base.iterdir() if (m := _NAME.match(p.name)))
    for _, p in found[:-keep] if keep > 0 else found:
        shutil.rmtree(p, ignore_errors=True)


def resolve_resume(run: Path, resume: str | None) -> Path | None:
    """Checkpoint folder to resume from: None (fresh), ``"auto"`` (the newest, if any) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run)
    path = Path(resume)
    if path.name == "checkpoints" or (path / "checkpoints").is_dir():
        found = latest_checkpoint(path.parent if path.name == "checkpoints" else path)
        check(found is not None, f"no checkpoint in {path}")
        return found
    if not (path / "state.json").is_file():
        raise Ex4dError(f"--resume {path}: not a checkpoint folder (expected RUN/checkpoints/step-N with state.json)")
    return path
