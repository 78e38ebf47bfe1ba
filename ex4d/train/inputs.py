"""A training batch → the adapter model's inputs, with the frozen Wan encoders (VAE, CLIP).

The same conditioning as generation (:mod:`ex4d.diffusion.pipeline`), batched:

* condition = (target·mask)·2−1 and mask·2−1 (±1, three channels), from
  :func:`ex4d.diffusion.conditioning.condition_tensors`;
* camera-encoder inputs: VAE latents of the condition and of ``mask·2−1``
  encoded once more as ``(mask·2−1)·2−1`` (values {−3, +1}), as the original;
* I2V: CLIP states and first-frame latents of frame 0 of the condition after
  the 8-bit round trip, with Wan's 4-channel first-frame mask;
* the clean target latents x0 (VAE posterior means, normalised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.conditioning import condition_tensors, first_frame_mask, i2v_first_frame
from ..diffusion.encode import encode_image, vae_encode

__all__ = ["ModelInputs", "encode_batch"]


@dataclass
class ModelInputs:
    """Encoded batch (float32 unless noted), B samples, T' = (T−1)/4+1 latent frames of h = H/8, w = W/8.

    ===============  ========================  ==========================================
    field            shape                     meaning
    ===============  ========================  ==========================================
    latents          [B, z, T', h, w]          clean target latents x0
    y                [B, 4 + z, T', h, w]      I2V condition
    image            [B, N, C_img]             CLIP states of the first frame (encoder dtype)
    video_latents    [B, z, T', h, w]          latents of the condition video
    mask_latents     [B, z, T', h, w]          latents of the mask video
    ===============  ========================  ==========================================
    """

    latents: torch.Tensor
    y: torch.Tensor
    image: torch.Tensor
    video_latents: torch.Tensor
    mask_latents: torch.Tensor


def _pm1(video_u8: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, 3] uint8 → [B, 3, T, H, W] float32 in [−1, 1]."""
    return video_u8.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


@torch.no_grad()
def encode_batch(vae, image_encoder, batch: dict, device: torch.device) -> ModelInputs:
    """:class:`ModelInputs` of ``batch`` (``target``/``condition`` [B, T, H, W, 3] uint8, ``mask`` [B, T, H, W] bool)."""
    conds, masks = [], []
    for color, mask in zip(batch["condition"].numpy(), batch["mask"].numpy()):
        c, m = condition_tensors(color, mask, torch.float32)  # [1, 3, T, H, W] each
        conds.append(c)
        masks.append(m)
    cond = torch.cat(conds).to(device)
    mask_pm1 = torch.cat(masks).to(device)
    target = _pm1(batch["target"]).to(device)
    b, _, t, h, w = target.shape
    latents = vae_encode(vae, target, device)
    video_latents = vae_encode(vae, cond, device)
    mask_latents = vae_encode(vae, mask_pm1 * 2 - 1, device)
    first = i2v_first_frame(cond)  # [B, 3, H, W]
    image = encode_image(image_encoder, first, device)
    still = torch.cat([first[:, :, None], first.new_zeros(b, 3, t - 1, h, w)], dim=2)
    first_latents = vae_encode(vae, still, device)
    ff_mask = first_frame_mask(t, h // 8, w // 8).to(device).expand(b, -1, -1, -1, -1)
    y = torch.cat([ff_mask, first_latents], dim=1)
    return ModelInputs(latents=latents, y=y, image=image, video_latents=video_latents, mask_latents=mask_latents)
