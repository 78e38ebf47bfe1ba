"""fp8 matrix multiplies for the DiT blocks (``--fp8-matmul``): weights and activations in float8_e4m3fn.

Every linear layer of ``transformer.blocks`` becomes an :class:`Fp8Linear`:

* weight ``W`` [N, K] stored as e4m3 with one float32 scale per output channel,
  ``s_w[n] = max_k |W[n, k]| / 448`` (448 = largest finite e4m3 value);
* each call scales every input row (token) by its own ``s_x[m] = max_k |x[m, k]| / 448``,
  casts it to e4m3 and runs ``torch._scaled_mm`` (cuBLASLt/CUTLASS fp8 tensor cores on CUDA, fp32
  accumulation), giving ``y[m, n] ≈ s_x[m] · s_w[n] · Σ_k x̂[m, k] Ŵ[n, k] + b[n]`` in the compute dtype.

Row-wise scales on both sides ("per-row" or "row-wise" fp8 in torchao's terms) keep one outlier token or
channel from flattening the others. Everything else (norms, modulation, RoPE, attention, embeddings, the
output head) stays in bf16/fp32, so this changes results by a small amount: the README table gives the
measured deviation of the decoded video; the flag is off by default.

Why not torchao's ``Float8DynamicActivationFloat8WeightConfig``: it refuses to run without a CUDA GPU of
compute capability 8.9+, so none of it could be tested on a CPU, and it ties the project to its binary
builds for one torch version. The op underneath is the same ``torch._scaled_mm``, which also runs on the
CPU, so the tests check this module's numbers on tiny models. Under ``torch.compile`` the activation
scaling fuses into one kernel ahead of the matmul.

The weights take half the memory of bf16 (the 14B DiT: 16 GB instead of 32), so ``balanced`` keeps twice
as many blocks resident and ``low`` streams blocks that are already fp8 (no per-layer casting hooks,
which also lets ``low`` be compiled).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import Ex4dError
from .memory import blocks_on

__all__ = ["Fp8Linear", "FP8_MAX", "quantize_blocks_fp8", "quantize_block_fp8", "check_fp8_device", "fp8_rows"]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_MIN_AMAX = 1e-12  # all-zero rows get scale 1e-12 / 448 instead of a division by zero
# layers left in the compute dtype: peft's LoRA factors (tiny, and trained in bf16)
SKIP_PATTERNS = ("lora_",)


def fp8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise e4m3 quantization of ``x`` [M, K]: (x̂ [M, K] float8_e4m3fn, scale [M, 1] float32).

    ``x ≈ x̂ · scale`` with ``scale = max |row| / 448``; rows of zeros stay zeros.
    """
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=_MIN_AMAX)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


class Fp8Linear(nn.Module):
    """A linear layer computed as an fp8 × fp8 matmul with row-wise scales (see the module docstring).

    Parameters (``requires_grad=False``; inference only):

    ================  =====================  ===========================================
    ``weight``        [N, K] float8_e4m3fn   ``W / weight_scale.T``, row-major
    ``weight_scale``  [1, N] float32         per-output-channel scale
    ``bias``          [N] compute dtype      or None
    ================  =====================  ===========================================

    Input [..., K] in the compute dtype; output [..., N] in the input's dtype (computed in bf16).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, device=device, dtype=FP8_DTYPE),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones(1, out_features, device=device, dtype=torch.float32),
                                         requires_grad=False)
        self.bias = (nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
                     if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        """The fp8 twin of ``linear`` (on its device; the bias keeps its dtype)."""
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device,
                  dtype=w.dtype)
        q, scale = fp8_rows(w)
        out.weight.copy_(q)
        out.weight_scale.copy_(scale.T)
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q, scale = fp8_rows(x.reshape(-1, shape[-1]))
        # CUDA's row-wise fp8 kernels write bf16 only; an fp32/fp16 model gets that cast to its dtype
        bias = None if self.bias is None else self.bias.to(torch.bfloat16)
        y = torch._scaled_mm(q, self.weight.T, scale_a=scale, scale_b=self.weight_scale, bias=bias,
                             out_dtype=torch.bfloat16, use_fast_accum=True)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def check_fp8_device(device: torch.device | str) -> None:
    """Raise :class:`Ex4dError` unless fp8 matmuls run on ``device`` (CPU, or a CUDA GPU of capability 8.9+)."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise Ex4dError(f"fp8 matmuls (--fp8-matmul) run on CUDA GPUs and the CPU, not on {device}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise Ex4dError(
            f"fp8 matmuls (--fp8-matmul) need an NVIDIA GPU with fp8 tensor cores (compute capability 8.9 or "
            f"newer: Ada, Hopper, Blackwell); {torch.cuda.get_device_name(device)} has {major}.{minor}. "
            f"Drop --fp8-matmul (use --memory low to store the weights in fp8 and compute in bf16)")


def _fits(linear: nn.Linear) -> bool:
    # cuBLASLt's fp8 kernels need K and N divisible by 16 (every layer of Wan2.1-14B: 5120, 13824)
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


@torch.no_grad()
def quantize_blocks_fp8(transformer: nn.Module, device: torch.device | str | None = None, stay: bool = False) -> int:
    """Replace the linear layers of ``transformer.blocks`` by :class:`Fp8Linear`, in place; returns how many.

    Each block is moved to ``device`` to be quantized and back where it was, or left on ``device`` with
    ``stay`` (when the blocks will live there); see :func:`~ex4d.diffusion.memory.blocks_on`.
    Layers whose sizes are not multiples of 16 and peft's LoRA factors stay as they are. Call after LoRA
    merging (an unmerged LoRA keeps working: its base layer becomes fp8).
    """
    n = 0
    for _, block in blocks_on(transformer, device, stay=stay):
        n += quantize_block_fp8(block)
    return n


@torch.no_grad()
def quantize_block_fp8(block: nn.Module) -> int:
    """Replace the fitting linear layers of one DiT ``block`` by :class:`Fp8Linear` where it is; returns how many."""
    targets = [(name, m) for name, m in block.named_modules()
               if type(m) is nn.Linear and _fits(m) and not any(re.search(p, name) for p in SKIP_PATTERNS)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        setattr(parent, child, Fp8Linear.from_linear(linear))
    return len(targets)
