"""Helpers shared by the diffusion tests (fixtures are in conftest.py)."""

from __future__ import annotations

import torch

from ex4d.diffusion.random_models import wan_configs

T, H, W = 5, 32, 48
TINY_VAE = wan_configs("tiny")["vae"]  # AutoencoderKLWan kwargs of the tiny VAE


def tiny_config(**kw):
    """A GenerateConfig for the tiny CPU models (float32, 2 steps)."""
    from ex4d.diffusion.config import GenerateConfig

    base = dict(dtype="float32", device="cpu", steps=2, prompt="a cat walking", erosion=(2, 4))
    base.update(kw)
    return GenerateConfig(**base)


def forward_inputs(batch: int = 1, seed: int = 0):
    """Random inputs of the tiny DiT: (x [B,36,2,4,6], t [B], text [B,512,32], image [B,17,24])."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 36, 2, 4, 6, generator=g), torch.full((batch,), 500.0),
            torch.randn(batch, 512, 32, generator=g), torch.randn(batch, 17, 24, generator=g))
