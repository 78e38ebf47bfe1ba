"""Self-attention kernels at the DiT's shape: is there a faster one than PyTorch's cuDNN path on this GPU?

One Wan2.1-14B self-attention call of a 49×512² video with CFG as one batch: q, k, v [2, 40, 13,312, 128] bf16.
Times (mean of 20 calls after 3 warm-up calls) PyTorch SDPA with the cuDNN and the flash-attention-2 back-ends
and, when the package is installed, SageAttention 1 (``pip install sageattention``: INT8 QKᵀ, FP16 PV, Triton;
the only SageAttention on PyPI, and older than what diffusers' ``sage`` back-end accepts), with each output's
relative L2 error against float32 attention on two heads.

    python bench/bench_attention_kernels.py            # CUDA only; prints a table

Measured on an H200 (2026-12-04, torch 2.11, Triton 3.6): cuDNN 11.8 ms (617 TFLOP/s), flash 2 20.7 ms,
SageAttention 1 17.4 ms (error 0.014 against cuDNN's 0.003): no faster kernel to adopt.
"""

from __future__ import annotations

import time


def bench(fn, n: int = 20) -> float:
    """Mean milliseconds per call of ``fn`` (CUDA synchronised)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def main() -> int:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        print("bench_attention_kernels: needs a CUDA GPU")
        return 1
    torch.manual_seed(0)
    B, H, N, D = 2, 40, 13312, 128
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    exact = F.scaled_dot_product_attention(q[:1, :2].float(), k[:1, :2].float(), v[:1, :2].float())

    def err(out):
        return ((out[:1, :2].float() - exact).norm() / exact.norm()).item()

    rows = []
    for name, backend in (("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION), ("SDPA flash 2", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(q, k, v)
            rows.append((name, bench(lambda: F.scaled_dot_product_attention(q, k, v)), err(out)))
    try:
        from sageattention import sageattn
    except ImportError:
        print("(sageattention not installed: SageAttention 1 skipped)")
    else:
        out = sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        rows.append(("SageAttention 1 (Triton)", bench(lambda: sageattn(q, k, v, tensor_layout="HND", is_causal=False)),
                     err(out)))
    flops = 4 * B * H * N * N * D
    base = rows[0][1]
    print(f"self-attention [{B}, {H}, {N}, {D}] bf16 on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| kernel | ms | TFLOP/s | vs cuDNN | rel. L2 error vs fp32 |")
    print("|---|---|---|---|---|")
    for name, ms, e in rows:
        print(f"| {name} | {ms:.2f} | {flops / ms / 1e9:.0f} | {base / ms:.2f}x | {e:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
