"""Generation on several GPUs: diffusers context parallelism for one video, data parallelism for many.

Two ways to use N processes (launched by ``torchrun``, one per GPU):

* **context parallel** (one video, ``--ulysses``/``--ring``): every rank holds
  the whole DiT; diffusers' own context parallelism for Wan
  (``WanTransformer3DModel._cp_plan`` applied by ``transformer.enable_parallelism``)
  splits the 13,312-token sequence over the ranks at the input of ``blocks.0``
  (and the RoPE tables the same way), runs Ulysses (all-to-all over heads) and/or
  ring attention in the self-attention layers, and all-gathers the sequence
  after ``proj_out``. Every rank runs the same sampler on the gathered output,
  so all ranks hold the same latents; rank 0 writes the video.
* **data parallel** (many videos, ``--jobs``): each rank loads the whole model
  and takes every N-th job (:func:`split_jobs`).

The EX-4D token injection and the sequence split
------------------------------------------------
:class:`~ex4d.diffusion.adapter.TokenInjection` is a forward hook on
``transformer.patch_embedding``. In diffusers' Wan plan the first split is on
``blocks.0``'s ``hidden_states``, i.e. *after* ``patch_embedding`` → flatten →
transpose. So the hook still sees the full ``[B, D, T', H', W']`` patch
output, adds the full camera tokens, and the sum is then split by diffusers
exactly like the patch tokens (``x.chunk(N, dim=1)[rank]`` of the flattened
``[B, T'·H'·W', D]`` sequence). Nothing needs sharding on our side: the
tokens and the patch tokens cannot be split differently because they are one
tensor when the split happens. :func:`check_injection_before_split` asserts
this on the plan before enabling it (a future diffusers that split at
``patch_embedding`` or at the model input would be refused, and the hook's
shape check would raise on a partial patch output anyway);
``tests/diffusion/test_parallel.py`` compares what each rank's ``blocks.0``
receives with :func:`shard_sequence` of the single-process tensor.

Constraints (checked): Ulysses needs ``heads % ulysses == 0`` (Wan-14B: 40 heads
→ 2, 4, 5, 8 work) and the sequence must divide by ``ulysses·ring`` (13,312 =
2^10·13 → 2, 4, 8 work); ring attention needs an attention backend that
returns the log-sum-exp (``_native_cudnn``, ``_native_flash``, ``flash``,
``sage``), diffusers' ``native`` (SDPA) backend only supports Ulysses. Memory
mode must be ``full`` (offloading hooks and the CP hooks do not mix).
NVLink multicast stays off (:data:`NO_MULTICAST_ENV`), as the machines ask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, NoReturn, Sequence, TypeVar

import torch

from ..errors import Ex4dError, check

__all__ = [
    "NO_MULTICAST_ENV",
    "set_no_multicast_env",
    "DistInfo",
    "init_distributed",
    "end_worker",
    "split_jobs",
    "job_indices",
    "shard_sequence",
    "injected_sequence",
    "sequence_length",
    "check_injection_before_split",
    "check_cp_degrees",
    "LSE_BACKENDS",
    "enable_context_parallel",
    "enable_generator_context_parallel",
]

T = TypeVar("T")

# NVLink SHARP / multicast off (NCCL, PyTorch symmetric memory, NVSHMEM), as the multi-GPU machines require.
NO_MULTICAST_ENV: dict[str, str] = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                    "NVSHMEM_DISABLE_NVLS": "1"}

# attention backends whose context-parallel path supports ring attention (they return the log-sum-exp)
LSE_BACKENDS = ("_native_cudnn", "_native_flash", "flash", "flash_hub", "_flash_3_hub", "sage", "sage_hub")


def set_no_multicast_env() -> None:
    """Set :data:`NO_MULTICAST_ENV` in ``os.environ`` (before the process group is created)."""
    os.environ.update(NO_MULTICAST_ENV)


# ---------------------------------------------------------------------------------------------- process group


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and compute ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None, device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group (env ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), or run alone.

    ``backend`` None = NCCL with CUDA, else gloo. With CUDA each process uses
    ``cuda:LOCAL_RANK``. Multicast env vars are set first. Reuses an already
    initialised group.
    """
    set_no_multicast_env()
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    dev = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    if world == 1:
        return DistInfo(0, 1, 0, dev)
    backend = backend or ("nccl" if cuda else "gloo")
    kw = {"device_id": torch.device(dev)} if cuda else {}
    dist.init_process_group(backend=backend, **kw)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, initialized_here=True)


def end_worker(code: int = 0) -> NoReturn:
    """End a ``torchrun`` worker process whose outputs are written: wait for every rank, then exit at once.

    On success every rank meets at a barrier first (no rank leaves while another still has collectives
    in flight); on failure the rank exits straight away and torchrun stops the others. The process
    group is not destroyed and the interpreter's teardown is skipped (``os._exit``): a gloo rank torn
    down normally aborted about once in twenty CPU runs with "terminate called without an active
    exception", after all its work was done, which turned a finished run into a failed one. The
    operating system frees what the process held.
    """
    import torch.distributed as dist

    if code == 0 and dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---------------------------------------------------------------------------------------------- data parallel


def job_indices(n_jobs: int, rank: int, world_size: int) -> list[int]:
    """Indices of the jobs rank ``rank`` of ``world_size`` runs: ``rank, rank+N, rank+2N, …``.

    Strided, so ranks differ by at most one job and similar neighbouring jobs
    (e.g. one clip's trajectories) spread over the GPUs. Every index is taken
    by exactly one rank.
    """
    check(isinstance(n_jobs, int) and n_jobs >= 0, f"n_jobs must be an integer >= 0, got {n_jobs!r}")
    check(isinstance(world_size, int) and world_size >= 1, f"world_size must be >= 1, got {world_size!r}")
    check(isinstance(rank, int) and 0 <= rank < world_size, f"rank must be in [0, {world_size}), got {rank!r}")
    return list(range(rank, n_jobs, world_size))


def split_jobs(jobs: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The jobs of rank ``rank`` (see :func:`job_indices`)."""
    return [jobs[i] for i in job_indices(len(jobs), rank, world_size)]


# ---------------------------------------------------------------------------------------------- sequence split


def shard_sequence(x: torch.Tensor, rank: int, world_size: int, dim: int = 1) -> torch.Tensor:
    """Rank ``rank``'s part of ``x`` along ``dim`` as diffusers' ``EquipartitionSharder`` cuts it.

    ``x.chunk(world_size, dim)[rank]`` with the length divisible by ``world_size``.
    """
    n = x.shape[dim]
    check(n % world_size == 0, f"sequence length {n} is not divisible by {world_size} ranks")
    return x.chunk(world_size, dim=dim)[rank]


def injected_sequence(patch_tokens: torch.Tensor, camera_tokens: torch.Tensor) -> torch.Tensor:
    """The token sequence ``[B, T'·H'·W', D]`` that enters ``blocks.0``: patch output + camera tokens, flattened.

    Mirrors ``WanTransformer3DModel.forward`` (``flatten(2).transpose(1, 2)``)
    after :class:`~ex4d.diffusion.adapter.TokenInjection`.
    """
    return (patch_tokens + camera_tokens).flatten(2).transpose(1, 2)


def sequence_length(frames: int, height: int, width: int, patch_size: Sequence[int] = (1, 2, 2),
                    temporal: int = 4, spatial: int = 8) -> int:
    """DiT tokens of a ``frames``×``height``×``width`` video (49×512×512 → 13·32·32 = 13,312)."""
    t = (frames - 1) // temporal + 1
    return (t // patch_size[0]) * (height // spatial // patch_size[1]) * (width // spatial // patch_size[2])


def check_injection_before_split(transformer: torch.nn.Module, plan: dict[str, Any] | None = None) -> None:
    """Raise unless the context-parallel plan splits the token sequence only after ``patch_embedding``.

    The EX-4D hook adds full-size tokens to the full ``patch_embedding``
    output; that stays right as long as the plan's first split of the
    latent/token sequence is at ``blocks.*`` (diffusers' Wan plan:
    ``blocks.0.hidden_states``). A split of the model's ``hidden_states``
    input or of ``patch_embedding`` would give the hook a partial sequence.
    """
    plan = plan if plan is not None else getattr(transformer, "_cp_plan", None)
    check(plan, f"{type(transformer).__name__} has no context-parallel plan (_cp_plan) in this diffusers version")
    check("patch_embedding" not in plan,
          "the context-parallel plan touches patch_embedding; the EX-4D token hook needs its full output")
    root = plan.get("", {})
    if isinstance(root, dict):
        check("hidden_states" not in root and 0 not in root,
              "the context-parallel plan splits the model's hidden_states input, before patch_embedding; "
              "the EX-4D token hook would see a partial sequence")
    blocks = [k for k in plan if k.startswith("blocks")]
    check(blocks and isinstance(plan[blocks[0]], dict) and "hidden_states" in plan[blocks[0]],
          f"expected the plan to split blocks.*'s hidden_states (diffusers' Wan plan), got keys {sorted(plan)}")


def check_cp_degrees(transformer: torch.nn.Module, ulysses: int, ring: int, world_size: int,
                     seq_len: int | None = None, attention_backend: str | None = None) -> None:
    """Raise :class:`Ex4dError` if ``ulysses``×``ring`` context parallelism cannot run this model/sequence."""
    check(ulysses >= 1 and ring >= 1, f"ulysses and ring degrees must be >= 1, got {ulysses}, {ring}")
    check(ulysses * ring > 1, "context parallelism needs ulysses * ring > 1")
    check(ulysses * ring == world_size,
          f"ulysses ({ulysses}) x ring ({ring}) must equal the number of processes ({world_size}); "
          f"for several videos on more GPUs use data parallelism (--jobs)")
    heads = int(transformer.config.num_attention_heads)
    check(heads % ulysses == 0, f"Ulysses degree {ulysses} must divide the {heads} attention heads")
    if seq_len is not None:
        check(seq_len % (ulysses * ring) == 0,
              f"the {seq_len}-token sequence is not divisible by {ulysses * ring} ranks")
    if ring > 1:
        check(attention_backend in LSE_BACKENDS,
              f"ring attention needs an attention backend returning the log-sum-exp, one of {LSE_BACKENDS} "
              f"(e.g. _native_cudnn on CUDA), got {attention_backend!r}; diffusers' 'native' SDPA path is "
              f"Ulysses-only")


@contextlib.contextmanager
def _cpu_device_count_fix():
    # diffusers' ModelMixin._resolve_parallel_config picks `rank % torch.accelerator.device_count()`,
    # which divides by zero on a CPU-only build (gloo tests): report one "device" there.
    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def enable_context_parallel(transformer: torch.nn.Module, ulysses: int | None = None, ring: int = 1,
                            attention_backend: str | None = None, seq_len: int | None = None):
    """Make a diffusers ``WanTransformer3DModel`` context-parallel over the current process group.

    Args:
        transformer: the DiT, fully on this rank's device (memory mode ``full``), EX-4D hook attached or not.
        ulysses: Ulysses degree (default: world size / ring).
        ring: ring-attention degree (needs an LSE backend, see :data:`LSE_BACKENDS`).
        attention_backend: diffusers backend to set first (None = keep the model's; ring defaults to
            ``_native_cudnn``).
        seq_len: token count to check divisibility for (optional).

    Returns the diffusers ``ContextParallelConfig``. Call once per model, inside ``torchrun``.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    check(dist.is_available() and dist.is_initialized(),
          "context parallelism needs a process group: launch with torchrun and call init_distributed() first")
    world = dist.get_world_size()
    check(ring >= 1 and world % ring == 0, f"ring degree {ring} must divide the world size {world}")
    ulysses = ulysses or world // ring
    if ring > 1 and attention_backend is None:
        attention_backend = "_native_cudnn"
    check_cp_degrees(transformer, ulysses, ring, world, seq_len, attention_backend or "native")
    check_injection_before_split(transformer)
    if attention_backend not in (None, "auto"):
        transformer.set_attention_backend(attention_backend)
    cp = ContextParallelConfig(ulysses_degree=ulysses, ring_degree=ring)
    with _cpu_device_count_fix():
        transformer.enable_parallelism(config=cp)
    return cp


def enable_generator_context_parallel(generator, ulysses: int | None = None, ring: int = 1,
                                      attention_backend: str | None = None):
    """:func:`enable_context_parallel` on an :class:`~ex4d.diffusion.pipeline.Ex4dGenerator`'s DiT.

    The generator must be in memory mode ``full`` on this rank's device. Its
    token-injection hook stays as is (see the module docstring). Every rank
    must then call ``generator.generate`` with the same inputs and config.
    """
    check(generator.config.memory == "full",
          f"context parallelism needs memory='full', got {generator.config.memory!r}")
    # each rank would judge its own shard's first-block change and could skip blocks that others run,
    # leaving their collectives unmatched
    check(generator.config.step_cache == "none",
          "a step cache (--step-cache) cannot be combined with context parallelism; use one of them")
    backend = attention_backend
    if backend is None and generator.config.attention_backend not in ("auto", "native"):
        backend = generator.config.attention_backend
    return enable_context_parallel(generator.components.transformer, ulysses, ring, backend)


if __name__ == "__main__":
    from .parallel_cli import main

    end_worker(main())
