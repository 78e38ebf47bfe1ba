"""Diffusion fill: Wan2.1-I2V-14B + the EX-4D adapter, on diffusers (``ex4d generate``, ``--fill ex4d``).

Public API (heavy modules — torch, diffusers, transformers, peft — load on
first attribute access, so ``import ex4d.diffusion`` stays light):

* :func:`generate_video` — color [T,H,W,3] uint8 + mask [T,H,W] bool → video [T,H,W,3] uint8
* :class:`Ex4dGenerator` — loaded models for repeated calls
* :class:`GenerateConfig` — every setting, defaults = the original EX-4D
* :func:`load_wan`, :class:`WanComponents` — Wan from a diffusers or original-layout folder
* :func:`load_adapter`, :func:`save_adapter_safetensors`, :func:`export_original_ckpt`,
  :class:`AdapterWeights`, :class:`AdapterSpec` — adapter checkpoints
* :class:`CamVidEncoder`, :class:`TokenInjection`, :func:`add_lora`, :func:`merge_lora` — the adapter parts
* :class:`LoraFile`, :func:`read_lora` — extra LoRAs (``--lora``) in the layouts users have
* :class:`ServeClient` — client of a running ``ex4d serve`` (the warm worker)

Needs the ``diffusion`` extra: ``pip install 'ex4d[diffusion]'``.
"""

from __future__ import annotations

import importlib

from .config import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, GenerateConfig

__all__ = [
    "GenerateConfig",
    "DEFAULT_PROMPT",
    "DEFAULT_NEGATIVE_PROMPT",
    "generate_video",
    "Ex4dGenerator",
    "load_wan",
    "WanComponents",
    "load_adapter",
    "save_adapter_safetensors",
    "export_original_ckpt",
    "AdapterWeights",
    "AdapterSpec",
    "CamVidEncoder",
    "TokenInjection",
    "add_lora",
    "merge_lora",
    "memory_plan",
    "LoraFile",
    "read_lora",
    "ServeClient",
]

_LAZY = {
    "generate_video": "pipeline",
    "Ex4dGenerator": "pipeline",
    "load_wan": "loading",
    "WanComponents": "loading",
    "load_adapter": "checkpoint",
    "save_adapter_safetensors": "checkpoint",
    "export_original_ckpt": "checkpoint",
    "AdapterWeights": "checkpoint",
    "AdapterSpec": "checkpoint",
    "CamVidEncoder": "adapter",
    "TokenInjection": "adapter",
    "add_lora": "adapter",
    "merge_lora": "adapter",
    "memory_plan": "memory",
    "LoraFile": "extra_lora",
    "read_lora": "extra_lora",
    "ServeClient": "serve",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
