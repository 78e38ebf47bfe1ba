"""Evaluation: metrics on arrays, ``ex4d eval`` on videos, and the ground-truth novel-view benchmark.

* :mod:`.metrics` — PSNR, SSIM (Gaussian 11×11, σ 1.5), warping error through optical flow, geometric
  consistency with the DW-Mesh render (numpy + OpenCV).
* :mod:`.features` — LPIPS, FID, FVD from local weights (torch, lazy; no torchvision, no downloads).
* :mod:`.evaluate` — all of them on an output video (and its reference, mask, render).
* :mod:`.scenes`, :mod:`.benchmark` — synthetic scenes rendered exactly from any camera; mask precision/recall
  and fill quality per camera range, the original's masking against ours.
* :mod:`.report` — JSON, tables, markdown, PNG plots; :mod:`.cli` — the ``eval`` and ``benchmark`` commands.
"""

from .benchmark import BenchmarkConfig, run_benchmark
from .evaluate import EvalConfig, evaluate_files, evaluate_video
from .metrics import geometric_consistency, psnr, psnr_frames, ssim, ssim_frames, ssim_map, warping_error
from .report import benchmark_markdown, format_eval_table, write_benchmark_report

__all__ = ["EvalConfig", "evaluate_video", "evaluate_files", "BenchmarkConfig", "run_benchmark", "psnr",
           "psnr_frames", "ssim", "ssim_frames", "ssim_map", "warping_error", "geometric_consistency",
           "format_eval_table", "benchmark_markdown", "write_benchmark_report"]
