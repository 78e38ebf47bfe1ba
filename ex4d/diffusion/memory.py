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
``low``        as balanced, with the blocks' linear layers      text + image encoders: leaf-level
               stored in fp8 (e4m3) and computed in bf16        group offloading; VAE, camera encoder
               (layerwise casting); budget 10 GiB               resident; VAE tiling
=============  ===============================================  ======================================

Offloading uses diffusers' hooks (``apply_group_offloading``,
``enable_layerwise_casting``); on CUDA the copies are non-blocking on a side
stream and the copied weights are ``record_stream``-ed, so the host never waits
for the compute stream and keeps queuing kernels while a block is copied. The
DiT's embeddings and output layers stay resident; only blocks are streamed. On
a CPU device the same hooks are installed with CPU as both onload and offload
device, so the mode logic is exercised by CPU tests with tiny models.
``low`` changes the numerics (fp8 weights); ``full`` and ``balanced`` do not. With
``fp8_matmul`` (``ex4d.diffusion.fp8``) the blocks' layers are fp8 already, in
every mode: ``low`` then streams them without casting hooks (``memory_plan(fp8_matmul=True)``).

:func:`compile_blocks` compiles each DiT block's own ``forward`` before any
hook is installed, so the offloading and step-cache hooks stay outside the
compiled graphs and run eagerly around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import check
from ._deps import require
from .config import MEMORY_MODES

__all__ = ["Placement", "MemoryPlan", "memory_plan", "apply_memory_plan", "resident_block_count",
           "streamed_block_indices", "compile_blocks", "tied_root_children", "cast_blocks_fp8", "cast_block_fp8", "blocks_on",
           "BALANCED_BUDGET_GIB", "BALANCED_RESERVE_GIB", "LOW_BUDGET_GIB", "LOW_RESERVE_GIB"]

GIB = 1024**3
BALANCED_BUDGET_GIB = 22.0  # ≈ 23.6 GB: the 24 GB goal with a margin
BALANCED_RESERVE_GIB = 8.0  # non-block weights, CLIP, VAE, activations, one streamed block + prefetch (measured 6.5)
LOW_BUDGET_GIB = 10.0  # ≈ 10.7 GB: the 12 GB goal with a margin
LOW_RESERVE_GIB = 6.0  # non-block weights (bf16), VAE (tiled), activations, two fp8 blocks in flight


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
    reserve_gib: float = BALANCED_RESERVE_GIB


def memory_plan(mode: str, device: torch.device | str, vae_tiling: bool | None = None,
                budget_gib: float | None = None, resident_blocks: int | None = None,
                fp8_matmul: bool = False) -> MemoryPlan:
    """The :class:`MemoryPlan` of ``mode`` (full | balanced | low) on ``device``; see the module table.

    ``budget_gib`` (balanced, low): GPU memory to fill with resident DiT blocks (default 22 GiB for
    balanced, 10 GiB for low); ``resident_blocks`` overrides the count derived from it. ``fp8_matmul``:
    the DiT blocks' linear layers are :class:`~ex4d.diffusion.fp8.Fp8Linear` already (fp8 weights), so
    ``low`` streams them as they are instead of storing bf16 layers in fp8 behind casting hooks.
    """
    check(mode in MEMORY_MODES, f"memory mode must be one of {MEMORY_MODES}, got {mode!r}")
    check(budget_gib is None or budget_gib > 0, f"GPU memory budget must be > 0 GiB, got {budget_gib}")
    device = torch.device(device)
    stream = device.type == "cuda"
    resident = Placement()
    reserve = BALANCED_RESERVE_GIB
    if mode == "full":
        plan = dict(transformer=resident, text_encoder=resident, image_encoder=resident, vae=resident, tiling=False)
    elif mode == "balanced":
        plan = dict(transformer=Placement("block", resident_blocks=resident_blocks), text_encoder=Placement("leaf"),
                    image_encoder=resident, vae=resident, tiling=False)
        budget_gib = BALANCED_BUDGET_GIB if budget_gib is None else budget_gib
    else:
        plan = dict(transformer=Placement("block", fp8=not fp8_matmul, resident_blocks=resident_blocks),
                    text_encoder=Placement("leaf"), image_encoder=Placement("leaf"), vae=resident, tiling=True)
        budget_gib = LOW_BUDGET_GIB if budget_gib is None else budget_gib
        reserve = LOW_RESERVE_GIB
    default_tiling = plan.pop("tiling")
    tiling = default_tiling if vae_tiling is None else bool(vae_tiling)
    return MemoryPlan(mode=mode, device=device, vae_tiling=tiling, use_stream=stream, budget_gib=budget_gib,
                      reserve_gib=reserve, **plan)


def resident_block_count(blocks: nn.ModuleList, budget_gib: float, reserve_gib: float = BALANCED_RESERVE_GIB) -> int:
    """How many ``blocks`` fit in ``budget_gib`` − ``reserve_gib`` of GPU memory (0 … len(blocks)).

    Counts the bytes of the blocks' parameters as stored (after an fp8 cast: 1 byte per weight).
    """
    block_bytes = max(1, sum(p.numel() * p.element_size() for p in blocks[0].parameters()))
    return int(min(len(blocks), max(0, (budget_gib - reserve_gib) * GIB // block_bytes)))


def _offload_kwargs(plan: MemoryPlan) -> dict:
    # non_blocking + record_stream: without them diffusers blocks the host on every copy and synchronizes
    # the compute stream after every streamed group, so the host cannot queue kernels ahead of the GPU
    stream = plan.use_stream
    return dict(onload_device=plan.device, offload_device=torch.device("cpu"), use_stream=stream,
                non_blocking=stream, record_stream=stream)


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

    diffusers offloads every block of a ModuleList, and every other child as one
    synchronous group. To keep some blocks and the embedding/output layers
    resident, the hooks are installed while the transformer holds only the
    streamed blocks and its small output projection (needed: the top-level
    group's hook records the execution order that prefetching follows), then
    the children (same objects, same order) are put back. On CUDA each streamed
    block is prefetched on a side stream while the blocks before it compute.
    """
    hooks = require("diffusers.hooks")
    blocks = list(transformer.blocks)
    streamed_idx = streamed_block_indices(len(blocks), resident)
    keep_offloaded = {"blocks", "proj_out"}
    # move only what changes place: blocks loaded by ex4d.diffusion.fastload are where they belong already
    # (streamed ones in page-locked host memory, which diffusers then uses as is instead of copying)
    for name, child in transformer.named_children():
        if name not in keep_offloaded:
            child.to(plan.device)
    transformer.proj_out.to("cpu")
    for p in transformer.parameters(recurse=False):  # scale_shift_table: offloaded with proj_out
        p.data = p.data.to("cpu")
    for i, block in enumerate(blocks):
        block.to("cpu" if i in streamed_idx else plan.device)
    if not streamed_idx:
        transformer.to(plan.device)
        return
    children = transformer._modules
    transformer._modules = type(children)((k, v) for k, v in children.items() if k in keep_offloaded)
    transformer.blocks = nn.ModuleList([blocks[i] for i in streamed_idx])
    try:
        hooks.apply_group_offloading(transformer, offload_type="block_level", num_blocks_per_group=1,
                                     **_offload_kwargs(plan))
    finally:
        transformer._modules = children
        transformer.blocks = nn.ModuleList(blocks)


def _fp8_skip_patterns(model: nn.Module) -> tuple[str, ...]:
    """Name patterns diffusers' ``enable_layerwise_casting`` leaves in the compute dtype for ``model``."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    pats = list(DEFAULT_SKIP_MODULES_PATTERN)
    pats += list(getattr(model, "_keep_in_fp32_modules", None) or ())
    pats += list(getattr(model, "_skip_layerwise_casting_patterns", None) or ())
    return tuple(pats) + ("lora_",)  # peft LoRA layers (diffusers skips them too)


def blocks_on(transformer: nn.Module, device: torch.device | str | None, stay: bool = False):
    """Yield (index, block) of ``transformer.blocks``, each moved to ``device`` while the caller works on it.

    Afterwards each block goes back where it was, or stays on ``device`` with ``stay``. One block at a
    time: converting 16 B weights takes about a second on a GPU, minutes on a CPU, and only one block's
    worth of GPU memory.
    """
    for i, block in enumerate(transformer.blocks):
        home = next(block.parameters()).device
        if device is not None:
            block.to(device)
        yield i, block
        if not stay:
            block.to(home)


def cast_blocks_fp8(transformer: nn.Module, device: torch.device | str) -> int:
    """Store the linear weights of ``transformer.blocks`` as float8_e4m3fn, one block at a time on ``device``.

    The same layers diffusers' layerwise casting stores in fp8 (it skips norms
    and embeddings); done ahead of it, block by block on ``device`` (see
    :func:`blocks_on`), because diffusers would cast on the CPU. Blocks go back where they were.
    Returns the number of layers cast. ``enable_layerwise_casting`` must still
    be called: it installs the hooks that compute in bf16 (and casts any layer
    missed here).
    """
    n = 0
    for i, block in blocks_on(transformer, device):
        n += cast_block_fp8(block, f"blocks.{i}", transformer)
    return n


def cast_block_fp8(block: nn.Module, prefix: str, transformer: nn.Module) -> int:
    """Store the linear weights of one DiT ``block`` (named ``prefix`` in ``transformer``) as float8_e4m3fn, in place.

    The layers :func:`cast_blocks_fp8` casts; returns how many.
    """
    skip = _fp8_skip_patterns(transformer)
    n = 0
    for name, layer in block.named_modules():
        if isinstance(layer, nn.Linear) and not any(re.search(p, f"{prefix}.{name}") for p in skip):
            layer.to(torch.float8_e4m3fn)
            n += 1
    return n


def _blocks_need_cast(transformer: nn.Module) -> bool:
    """Whether some block linear layer that :func:`cast_block_fp8` casts is not float8 yet (the loader may have)."""
    skip = _fp8_skip_patterns(transformer)
    for i, block in enumerate(transformer.blocks):
        for name, layer in block.named_modules():
            if (isinstance(layer, nn.Linear) and layer.weight.dtype != torch.float8_e4m3fn
                    and not any(re.search(p, f"blocks.{i}.{name}") for p in skip)):
                return True
    return False


def _check_fp8_hooked(transformer: nn.Module, compute_dtype: torch.dtype) -> None:
    """Put back in ``compute_dtype`` any fp8 layer that diffusers gave no casting hook (it would fail to run)."""
    for layer in transformer.modules():
        params = list(layer.parameters(recurse=False))
        if params and any(p.dtype == torch.float8_e4m3fn for p in params):
            registry = getattr(layer, "_diffusers_hook", None)
            if registry is None or registry.get_hook("layerwise_casting") is None:
                layer.to(compute_dtype)


def compile_blocks(transformer: nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` (fullgraph) the ``forward`` of every DiT block, in place.

    Call before any offloading, casting or caching hook is installed on the
    blocks: those hooks then wrap the compiled function and run eagerly around
    it, so the same compiled graph serves resident, streamed and cached blocks.
    All blocks share one compilation (same code; weights are graph inputs).
    """
    for block in transformer.blocks:
        block.forward = torch.compile(block.forward, fullgraph=True, backend=backend)


def _place(module: nn.Module, placement: Placement, plan: MemoryPlan, compute_dtype: torch.dtype) -> None:
    hooks = require("diffusers.hooks")
    if placement.fp8 and hasattr(module, "blocks") and _blocks_need_cast(module):
        cast_blocks_fp8(module, plan.device)  # fast path; the hooks below find these layers already in fp8
    if placement.fp8:
        # weights stored as float8_e4m3fn, cast to compute_dtype per layer; diffusers skips norms,
        # patch/condition embeddings and peft layers by default
        if hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
        else:
            hooks.apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                          skip_modules_pattern=("norm", "embed", "shared"))
        _check_fp8_hooked(module, compute_dtype)
    if placement.how == "resident":
        module.to(plan.device)
    elif placement.how == "block":
        resident = placement.resident_blocks
        if resident is None:
            resident = resident_block_count(module.blocks, plan.budget_gib or BALANCED_BUDGET_GIB, plan.reserve_gib)
        _stream_blocks(module, plan, min(resident, len(module.blocks)))
    else:
        _leaf_offload(module, plan)


def tied_root_children(module: nn.Module) -> list[str]:
    """Names of ``module``'s direct children whose parameters are all the same objects as a deeper module's.

    T5-family encoders (UMT5 here) keep the token embedding as ``shared`` and run it as
    ``encoder.embed_tokens`` with the same weight: ``shared`` itself never runs.
    """
    owners: dict[int, set[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), set()).add(name)
    tied = []
    for child_name, child in module.named_children():
        params = list(child.parameters())
        if params and all(any(not o.startswith(child_name + ".") for o in owners[id(p)]) for p in params):
            tied.append(child_name)
    return tied


def _leaf_offload(module: nn.Module, plan: MemoryPlan) -> None:
    """Leaf-level group offloading of ``module``, leaving out children that only alias another module's weights.

    Such a child (UMT5's ``shared``) never runs, and diffusers' prefetching would report it as
    "not executed during the forward pass"; its weight is offloaded through the module that runs it.
    """
    hooks = require("diffusers.hooks")
    module.to("cpu")
    hidden = set(tied_root_children(module))
    children = module._modules
    module._modules = type(children)((k, v) for k, v in children.items() if k not in hidden)
    try:
        hooks.apply_group_offloading(module, offload_type="leaf_level", **_offload_kwargs(plan))
    finally:
        module._modules = children


COMPONENTS = ("transformer", "text_encoder", "image_encoder", "vae")


def apply_memory_plan(plan: MemoryPlan, components, extra: list[nn.Module] | tuple = (),
                      compute_dtype: torch.dtype = torch.bfloat16, parts: tuple[str, ...] = COMPONENTS) -> None:
    """Place ``components`` (a ``WanComponents``) and the ``extra`` modules (always resident) by ``plan``.

    Call once per component, after LoRA merging (and fp8 quantization) and before its first forward;
    ``parts`` limits it to some components (a component that is None, not loaded yet, is skipped).
    """
    for name in parts:
        module = getattr(components, name)
        if module is not None:
            _place(module, getattr(plan, name), plan, compute_dtype)
    if plan.vae_tiling and "vae" in parts:
        components.vae.enable_tiling()
    for module in extra:
        module.to(plan.device)
