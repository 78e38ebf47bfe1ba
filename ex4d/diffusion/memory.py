"""Memory modes: where each Wan component lives while a video is generated.

=============  ===========================================  =========================================
mode           DiT (14B, 28.6 GB in bf16)                   text encoder (UMT5-XXL, 11 GB) / others
=============  ===========================================  =========================================
``full``       resident on the GPU                          all resident
``balanced``   group offloading, one block per group,       text encoder: leaf-level group offloading;
               prefetched on a CUDA stream                  CLIP, VAE, camera encoder resident;
                                                            VAE tiling
``low``        fp8 (e4m3) weight storage, computed in bf16  text + image encoders: leaf-level group
               (layerwise casting), leaf-level group        offloading; VAE, camera encoder resident;
               offloading on a CUDA stream                  VAE tiling
=============  ===========================================  =========================================

Offloading uses diffusers' hooks (``apply_group_offloading``,
``enable_layerwise_casting``); streams are used only on CUDA. On a CPU
device the same hooks are installed with CPU as both onload and offload
device, so the mode logic is exercised by CPU tests with tiny models.
``low`` changes the numerics (fp8 weights); ``full`` and ``balanced`` do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import check
from ._deps import require
from .config import MEMORY_MODES

__all__ = ["Placement", "MemoryPlan", "memory_plan", "apply_memory_plan"]


@dataclass(frozen=True)
class Placement:
    """How one component is placed: ``resident``, ``block`` (block-level groups) or ``leaf`` (leaf-level)."""

    how: str = "resident"
    fp8: bool = False
    blocks_per_group: int = 1


@dataclass(frozen=True)
class MemoryPlan:
    """Placement of every component for one memory mode on one device."""

    mode: str
    device: torch.device
    transformer: Placement
    text_encoder: Placement
    image_encoder: Placement
    vae: Placement
    vae_tiling: bool
    use_stream: bool


def memory_plan(mode: str, device: torch.device | str, vae_tiling: bool | None = None) -> MemoryPlan:
    """The :class:`MemoryPlan` of ``mode`` (full | balanced | low) on ``device``; see the module table."""
    check(mode in MEMORY_MODES, f"memory mode must be one of {MEMORY_MODES}, got {mode!r}")
    device = torch.device(device)
    stream = device.type == "cuda"
    resident = Placement()
    if mode == "full":
        plan = dict(transformer=resident, text_encoder=resident, image_encoder=resident, vae=resident, tiling=False)
    elif mode == "balanced":
        plan = dict(transformer=Placement("block", blocks_per_group=1), text_encoder=Placement("leaf"),
                    image_encoder=resident, vae=resident, tiling=True)
    else:
        plan = dict(transformer=Placement("leaf", fp8=True), text_encoder=Placement("leaf"),
                    image_encoder=Placement("leaf"), vae=resident, tiling=True)
    default_tiling = plan.pop("tiling")
    tiling = default_tiling if vae_tiling is None else bool(vae_tiling)
    return MemoryPlan(mode=mode, device=device, vae_tiling=tiling, use_stream=stream, **plan)


def _place(module: nn.Module, placement: Placement, plan: MemoryPlan, compute_dtype: torch.dtype) -> None:
    hooks = require("diffusers.hooks")
    if placement.fp8:
        # weights stored as float8_e4m3fn, cast to compute_dtype per layer; diffusers skips norms,
        # patch/condition embeddings and peft layers by default
        if hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
        else:
            hooks.apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                          skip_modules_pattern=("norm", "embed", "shared"))
    if placement.how == "resident":
        module.to(plan.device)
        return
    module.to("cpu")
    kwargs = dict(onload_device=plan.device, offload_device=torch.device("cpu"), use_stream=plan.use_stream)
    if placement.how == "block":
        kwargs.update(offload_type="block_level", num_blocks_per_group=placement.blocks_per_group)
    else:
        kwargs.update(offload_type="leaf_level")
    hooks.apply_group_offloading(module, **kwargs)


def apply_memory_plan(plan: MemoryPlan, components, extra: list[nn.Module] | tuple = (),
                      compute_dtype: torch.dtype = torch.bfloat16) -> None:
    """Place ``components`` (a ``WanComponents``) and the ``extra`` modules (always resident) by ``plan``.

    Call once, after LoRA merging and before the first forward.
    """
    _place(components.transformer, plan.transformer, plan, compute_dtype)
    _place(components.text_encoder, plan.text_encoder, plan, compute_dtype)
    _place(components.image_encoder, plan.image_encoder, plan, compute_dtype)
    _place(components.vae, plan.vae, plan, compute_dtype)
    if plan.vae_tiling:
        components.vae.enable_tiling()
    for module in extra:
        module.to(plan.device)
