"""Memory modes: where each Wan component lives while a video is generated.

Sizes in bf16: DiT 16.4 B params = 32.6 GB (40 blocks of 0.81 GB), UMT5-XXL encoder 11.4 GB,
CLIP ViT-H 1.3 GB, VAE 0.25 GB.

=============  ===============================================  ======================================
mode           DiT                                              text encoder / others
=============  ===============================================  ======================================
``full``       resident on the GPU                              all resident
``balanced``   K blocks resident (K fills the GPU budget,       text encoder: leaf-level group
               default 22 GiB ≈ 23.6 GB), the others spread     offloading; CLIP, VAE, camera encoder
               between them and streamed from pinned CPU        resident; no VAE tiling
               memory, each prefetched on a CUDA stream while
               the blocks before it compute (diffusers
               block-level group offloading)
``low``        fp8 (e4m3) weight storage, computed in bf16      text + image encoders: leaf-level
               (layerwise casting), leaf-level group            group offloading; VAE, camera encoder
               offloading on a CUDA stream                      resident; VAE tiling
=============  ===============================================  ======================================

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

__all__ = ["Placement", "MemoryPlan", "memory_plan", "apply_memory_plan", "resident_block_count",
           "streamed_block_indices",
           "BALANCED_BUDGET_GIB", "BALANCED_RESERVE_GIB"]

GIB = 1024**3
BALANCED_BUDGET_GIB = 22.0  # ≈ 23.6 GB: the 24 GB goal with a margin
BALANCED_RESERVE_GIB = 8.0  # non-block weights, CLIP, VAE, activations, one streamed block + prefetch (measured 6.5)


@dataclass(frozen=True)
class Placement:
    """How one component is placed: ``resident``, ``block`` (block-level groups) or ``leaf`` (leaf-level).

    ``resident_blocks``: for ``block``, how many leading DiT blocks stay on the GPU (None = from the budget).
    """

    how: str = "resident"
    fp8: bool = False
    resident_blocks: int | None = None


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
    budget_gib: float | None = None


def memory_plan(mode: str, device: torch.device | str, vae_tiling: bool | None = None,
                budget_gib: float | None = None, resident_blocks: int | None = None) -> MemoryPlan:
    """The :class:`MemoryPlan` of ``mode`` (full | balanced | low) on ``device``; see the module table.

    ``budget_gib`` (balanced): GPU memory to fill with resident DiT blocks (default 22 GiB);
    ``resident_blocks`` overrides the count derived from it.
    """
    check(mode in MEMORY_MODES, f"memory mode must be one of {MEMORY_MODES}, got {mode!r}")
    check(budget_gib is None or budget_gib > 0, f"GPU memory budget must be > 0 GiB, got {budget_gib}")
    device = torch.device(device)
    stream = device.type == "cuda"
    resident = Placement()
    if mode == "full":
        plan = dict(transformer=resident, text_encoder=resident, image_encoder=resident, vae=resident, tiling=False)
    elif mode == "balanced":
        plan = dict(transformer=Placement("block", resident_blocks=resident_blocks), text_encoder=Placement("leaf"),
                    image_encoder=resident, vae=resident, tiling=False)
        budget_gib = BALANCED_BUDGET_GIB if budget_gib is None else budget_gib
    else:
        plan = dict(transformer=Placement("leaf", fp8=True), text_encoder=Placement("leaf"),
                    image_encoder=Placement("leaf"), vae=resident, tiling=True)
    default_tiling = plan.pop("tiling")
    tiling = default_tiling if vae_tiling is None else bool(vae_tiling)
    return MemoryPlan(mode=mode, device=device, vae_tiling=tiling, use_stream=stream, budget_gib=budget_gib, **plan)


def resident_block_count(blocks: nn.ModuleList, budget_gib: float, reserve_gib: float = BALANCED_RESERVE_GIB) -> int:
    """How many leading ``blocks`` fit in ``budget_gib`` − ``reserve_gib`` of GPU memory (0 … len(blocks))."""
    block_bytes = max(1, sum(p.numel() * p.element_size() for p in blocks[0].parameters()))
    return int(min(len(blocks), max(0, (budget_gib - reserve_gib) * GIB // block_bytes)))


def _offload_kwargs(plan: MemoryPlan) -> dict:
    return dict(onload_device=plan.device, offload_device=torch.device("cpu"), use_stream=plan.use_stream)


def streamed_block_indices(n: int, resident: int) -> list[int]:
    """Indices of the ``n − resident`` blocks to stream, spread evenly between the resident ones.

    A streamed block is prefetched while the blocks before it compute (back to
    the previous streamed block): spreading them gives each copy the compute
    time of resident blocks to hide behind. Block 0 stays resident when any does.
    """
    s = n - resident
    if s <= 0:
        return []
    if resident == 0:
        return list(range(n))
    if resident <= s:  # resident blocks are the minority: spread them, stream the rest
        keep = {int(i * n / resident) for i in range(resident)}
        return [i for i in range(n) if i not in keep]
    return sorted(int((i + 1) * n / (s + 1)) for i in range(s))


def _stream_blocks(transformer: nn.Module, plan: MemoryPlan, resident: int) -> None:
    """Keep ``resident`` DiT blocks on the GPU; stream the others with block-level group offloading.

    diffusers offloads every block of a ModuleList; to keep some resident, the
    hooks are installed while ``transformer.blocks`` holds only the streamed
    blocks, then the full list (same block objects, same order) is put back.
    On CUDA each streamed block is prefetched on a side stream while the
    blocks before it compute (the first one while the model's embeddings run).
    """
    hooks = require("diffusers.hooks")
    blocks = list(transformer.blocks)
    streamed_idx = streamed_block_indices(len(blocks), resident)
    transformer.to("cpu")
    for i, block in enumerate(blocks):
        if i not in streamed_idx:
            block.to(plan.device)
    if not streamed_idx:
        transformer.to(plan.device)
        return
    transformer.blocks = nn.ModuleList([blocks[i] for i in streamed_idx])
    try:
        hooks.apply_group_offloading(transformer, offload_type="block_level", num_blocks_per_group=1,
                                     **_offload_kwargs(plan))
    finally:
        transformer.blocks = nn.ModuleList(blocks)


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
    elif placement.how == "block":
        resident = placement.resident_blocks
        if resident is None:
            resident = resident_block_count(module.blocks, plan.budget_gib or BALANCED_BUDGET_GIB)
        _stream_blocks(module, plan, min(resident, len(module.blocks)))
    else:
        module.to("cpu")
        hooks.apply_group_offloading(module, offload_type="leaf_level", **_offload_kwargs(plan))


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
