"""Wan's flow-matching training objective, as DiffSynth-Studio trains Wan (the base of the original EX-4D).

* σ grid: s = linspace(1, 0, N + 1)[:-1] with N = 1000 training steps, shifted
  like inference, σ = shift·s / (1 + (shift − 1)·s) (shift 5); timestep t = 1000·σ.
* timestep sampling: an index uniform in [0, N) per sample, so σ follows the
  shifted grid (more weight at high noise, as the sampler spends its steps).
* noising x_σ = (1 − σ)·x0 + σ·ε, target v = ε − x0 (the velocity the sampler integrates).
* loss = mean((v̂ − v)²) · w(t), w a bell over the timestep,
  w ∝ exp(−2·((t − 500)/1000)²) − min, normalised to mean 1 over the grid
  (``weighting="bell"``); ``"none"`` gives w = 1.
"""

from __future__ import annotations

import torch

from ..errors import check

__all__ = ["WEIGHTINGS", "training_sigmas", "timestep_weights", "sample_noise", "flow_matching_loss"]

WEIGHTINGS = ("bell", "none")


def training_sigmas(shift: float = 5.0, steps: int = 1000) -> torch.Tensor:
    """σ grid [steps] float32, descending from 1: shift·s / (1 + (shift−1)·s), s = linspace(1, 0, steps+1)[:-1]."""
    check(shift > 0 and steps >= 1, f"need shift > 0 and steps >= 1, got {shift}, {steps}")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)[:-1]
    return shift * s / (1 + (shift - 1) * s)


def timestep_weights(sigmas: torch.Tensor, weighting: str = "bell") -> torch.Tensor:
    """Loss weight [steps] float32 of each grid timestep (mean 1 for ``bell``; ones for ``none``)."""
    check(weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    n = sigmas.numel()
    if weighting == "none":
        return torch.ones(n)
    t = sigmas * 1000.0
    y = torch.exp(-2 * ((t - n / 2) / n) ** 2)
    y = y - y.min()
    return y * (n / y.sum())


def sample_noise(latents: torch.Tensor, sigmas: torch.Tensor, weights: torch.Tensor, generator: torch.Generator,
                 index: torch.Tensor | None = None):
    """(noisy, target, timestep [B], weight [B]) for clean ``latents`` [B, …] float32.

    Noise and timestep indices come from ``generator`` (CPU), so a fixed seed
    fixes them whatever happened before; ``index`` [B] forces grid indices.
    """
    b = latents.shape[0]
    if index is None:
        index = torch.randint(0, sigmas.numel(), (b,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device)
    sigma = sigmas[index].to(latents.device).view(b, *([1] * (latents.dim() - 1)))
    noisy = (1 - sigma) * latents + sigma * noise
    target = noise - latents
    return noisy, target, (sigmas[index] * 1000.0).to(latents.device), weights[index].to(latents.device)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scalar: mean over the batch of w_b · mean((pred_b − target_b)²), in float32."""
    per = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return (per * weight.float()).mean()
