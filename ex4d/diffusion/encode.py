"""Encoders around the DiT: prompt → UMT5 states, first frame → CLIP states, video ↔ VAE latents.

Thin functions over the loaded diffusers/transformers models, matching the
original Wan/DiffSynth preprocessing: prompts are whitespace-cleaned (no
ftfy), tokenised to 512 tokens, encoded with the attention mask, and the
states past each prompt's length are zeroed; CLIP takes the penultimate
hidden states of a bicubic-squashed 224² image; VAE latents are the
posterior means, normalised per channel as ``(z − mean) · (1/std)``.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .conditioning import clip_pixels

__all__ = ["TEXT_LEN", "clean_prompt", "encode_prompts", "encode_image", "vae_encode", "vae_decode",
           "to_uint8_video"]

TEXT_LEN = 512  # Wan's text length; diffusers' Wan attention assumes it for I2V


def clean_prompt(text: str) -> str:
    """``text`` with whitespace runs collapsed to one space and stripped (the original's 'whitespace' clean)."""
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    """UMT5 states [B, 512, C] in the encoder's dtype on ``device``; zero past each prompt's token count."""
    tok = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=TEXT_LEN, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
    states = text_encoder(ids, mask).last_hidden_state  # [B, 512, C]
    keep = mask.bool().unsqueeze(-1)  # [B, 512, 1]
    return torch.where(keep, states, torch.zeros((), dtype=states.dtype, device=states.device)).to(device)


@torch.no_grad()
def encode_image(image_encoder, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CLIP penultimate hidden states [B, N, C] of ``image`` [B, 3, H, W] in [−1, 1] (N = 257 for ViT-H/14)."""
    cfg = image_encoder.config
    pixels = clip_pixels(image.to(device), size=int(cfg.image_size))
    dtype = next(image_encoder.parameters()).dtype
    out = image_encoder(pixel_values=pixels.to(dtype), output_hidden_states=True)
    return out.hidden_states[-2]


def _latent_stats(vae, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device).view(1, z, 1, 1, 1)
    return mean, std


@torch.no_grad()
def vae_encode(vae, video: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Normalised latents [B, z, (T−1)/4+1, H/8, W/8] float32 of ``video`` [B, 3, T, H, W] in [−1, 1]."""
    dtype = next(vae.parameters()).dtype
    latents = vae.encode(video.to(device=device, dtype=dtype)).latent_dist.mode().float()
    mean, std = _latent_stats(vae, latents.device)
    return (latents - mean) * (1.0 / std)


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Video [B, 3, T, H, W] float32 in [−1, 1] from normalised ``latents`` [B, z, T', h, w]."""
    dtype = next(vae.parameters()).dtype
    mean, std = _latent_stats(vae, device)
    raw = latents.to(device=device, dtype=torch.float32) * std + mean
    return vae.decode(raw.to(dtype)).sample.float().clamp(-1, 1)


def to_uint8_video(video: torch.Tensor) -> np.ndarray:
    """[T, H, W, 3] uint8 from ``video`` [1, 3, T, H, W] in [−1, 1]: ((x+1)·127.5) clipped, truncated (as the original)."""
    x = ((video[0].float() + 1) * 127.5).clamp(0, 255)
    return x.permute(1, 2, 3, 0).to(torch.uint8).cpu().numpy()
