"""Training the EX-4D adapter from monocular videos: simulated masks, dataset preparation, the LoRA trainer.

Public API (heavy modules — torch, diffusers, ray — load on first attribute access):

* masks: :class:`MaskConfig`, :func:`simulate_masks`, :func:`round_trip`, :func:`propagate_masks`,
  :func:`apply_mask`, :func:`mask_preview`
* preparation: :class:`PrepareConfig`, :func:`prepare_dataset` (``ex4d prepare``; its bookkeeping in
  :mod:`.manifest`, the Ray executor in :mod:`.ray_run`)
* training: :class:`TrainConfig`, :func:`train` (``ex4d train``), :class:`TripleDataset`
* :func:`check_train_inputs` — every input of a training run checked before anything heavy loads (:mod:`.preflight`)
* :func:`accelerate_config` — path of a bundled accelerate config (``ddp``, ``fsdp``, ``single``)

Needs the ``diffusion`` extra for training, ``ray`` for ``prepare`` on Ray, ``tensorboard`` for logging.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = [
    "MaskConfig", "simulate_masks", "round_trip", "propagate_masks", "apply_mask", "mask_preview",
    "PrepareConfig", "prepare_dataset", "TrainConfig", "train", "TripleDataset", "accelerate_config",
    "check_train_inputs",
]

_LAZY = {
    "MaskConfig": "masks", "simulate_masks": "masks", "round_trip": "masks", "propagate_masks": "masks",
    "apply_mask": "masks", "mask_preview": "masks",
    "PrepareConfig": "prepare", "prepare_dataset": "prepare",
    "TrainConfig": "config", "train": "trainer", "TripleDataset": "dataset", "check_train_inputs": "preflight",
}

ACCELERATE_CONFIGS = ("single", "ddp", "fsdp")


def accelerate_config(name: str) -> Path:
    """Path of the bundled accelerate config ``name`` (single | ddp | fsdp), for ``accelerate launch --config_file``."""
    from ..errors import check

    check(name in ACCELERATE_CONFIGS, f"unknown accelerate config {name!r}; bundled: {ACCELERATE_CONFIGS}")
    return Path(__file__).with_name("configs") / f"{name}.yaml"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
