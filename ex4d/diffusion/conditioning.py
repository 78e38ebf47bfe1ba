"""Inputs of the EX-4D denoiser: checked frames, eroded masks, the condition video, the I2V first frame.

All functions follow the original ``generate.py`` exactly where users depend
on it (DESIGN.md, "Generation"), and say so where they differ:

* mask erosion: per frame, a square kernel of k × k px with k uniform in
  [lo, hi] (the original: ``random.randint(2, 8)``, unseeded; here seeded);
  ``cv2.erode`` (anchor at the kernel centre, border = no erosion);
* condition = (color · mask) · 2 − 1, mask → mask · 2 − 1 (±1), with the
  product rounded to the compute dtype first, as the original does in bf16;
* the I2V image is the first frame of the condition video after the
  original's 8-bit round trip (``to_pil_image``: x·255 truncated to uint8,
  then x·2/255 − 1).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import Ex4dError, check

__all__ = [
    "check_inputs",
    "fit_frames",
    "erode_masks",
    "condition_tensors",
    "i2v_first_frame",
    "clip_pixels",
    "first_frame_mask",
    "initial_noise",
    "latent_shape",
    "CLIP_MEAN",
    "CLIP_STD",
]

SPATIAL = 16  # VAE 8× · patch 2×
TEMPORAL = 4  # VAE temporal compression
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_inputs(color: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """(T, H, W) of a valid ``color`` [T, H, W, 3] uint8 and ``mask`` [T, H, W] bool; Ex4dError otherwise.

    H and W must be multiples of 16 (VAE 8× · DiT patch 2×): re-render the
    recon outputs at such a size (e.g. 512×512, 832×480) — nothing is resized here.
    """
    check(isinstance(color, np.ndarray) and color.dtype == np.uint8 and color.ndim == 4 and color.shape[3] == 3,
          f"color must be a [T, H, W, 3] uint8 array, got {getattr(color, 'dtype', type(color))} "
          f"{getattr(color, 'shape', '')}")
    check(isinstance(mask, np.ndarray) and mask.dtype == bool and mask.ndim == 3,
          f"mask must be a [T, H, W] bool array (True = known), got {getattr(mask, 'dtype', type(mask))} "
          f"{getattr(mask, 'shape', '')}")
    t, h, w = color.shape[:3]
    check(mask.shape == (t, h, w), f"mask {mask.shape} does not match color {color.shape[:3]} (T, H, W)")
    check(t >= 1, "color has no frames")
    check(h % SPATIAL == 0 and w % SPATIAL == 0 and h > 0 and w > 0,
          f"frame size {w}x{h} is not a multiple of {SPATIAL} in both sides; render the color/mask videos at "
          f"e.g. {max(SPATIAL, w // SPATIAL * SPATIAL)}x{max(SPATIAL, h // SPATIAL * SPATIAL)} "
          f"(ex4d resizes nothing here, to avoid squashing)")
    return t, h, w


def fit_frames(color: np.ndarray, mask: np.ndarray, policy: str = "exact") -> tuple[np.ndarray, np.ndarray, int]:
    """(color, mask, T_out): frames made 4k+1 by ``policy``; T_out = frames to keep from the output.

    ``exact``: T must already be 4k+1 (Ex4dError otherwise); ``trim``: drop
    trailing frames down to 4k+1; ``pad``: repeat the last frame up to 4k+1
    (the padded frames are generated, then cut: T_out = T).
    """
    t = color.shape[0]
    if t % TEMPORAL == 1:
        return color, mask, t
    lower, upper = (t - 1) // TEMPORAL * TEMPORAL + 1, ((t - 1) // TEMPORAL + 1) * TEMPORAL + 1
    if policy == "trim":
        return color[:lower], mask[:lower], lower
    if policy == "pad":
        extra = upper - t
        color = np.concatenate([color, np.repeat(color[-1:], extra, axis=0)])
        mask = np.concatenate([mask, np.repeat(mask[-1:], extra, axis=0)])
        return color, mask, t
    raise Ex4dError(f"the video has {t} frames, but Wan needs 4k+1 frames (e.g. {lower} or {upper}); "
                    f"pass --num-frames {lower}, or --frames trim (keep {lower}) or --frames pad "
                    f"(generate {upper}, keep {t})")


def erode_masks(mask: np.ndarray, kernels: tuple[int, int] = (2, 8), seed: int = 0) -> np.ndarray:
    """``mask`` [T, H, W] bool eroded per frame by a k×k square, k drawn uniformly from [lo, hi] (inclusive).

    (0, 0) (or any k ≤ 1) leaves a frame unchanged. Draws come from
    ``np.random.default_rng(seed)``, one per frame, so a seed fixes the result.
    """
    lo, hi = kernels
    if hi <= 1:
        return mask.copy()
    rng = np.random.default_rng(seed)
    out = np.empty_like(mask)
    for i, frame in enumerate(mask):
        k = int(rng.integers(lo, hi + 1))
        if k <= 1:
            out[i] = frame
            continue
        eroded = cv2.erode(frame.astype(np.uint8) * np.uint8(255), np.ones((k, k), np.uint8), iterations=1)
        out[i] = eroded > 127
    return out


def condition_tensors(color: np.ndarray, mask: np.ndarray,
                      dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, mask_pm1), both [1, 3, T, H, W] in ``dtype``: (color·mask)·2−1 in [−1, 1] and mask·2−1 in {−1, 1}.

    Args:
        color: [T, H, W, 3] uint8 RGB.
        mask: [T, H, W] bool, True = known (rendered), False = to generate.
    """
    c = torch.from_numpy(np.ascontiguousarray(color)).permute(3, 0, 1, 2)[None].float() / 255.0  # [1,3,T,H,W]
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float().expand_as(c)  # [1,3,T,H,W] {0,1}
    cond = (c * m).to(dtype) * 2 - 1
    mask_pm1 = m.to(dtype) * 2 - 1
    return cond.contiguous(), mask_pm1.contiguous()


def i2v_first_frame(cond: torch.Tensor) -> torch.Tensor:
    """[1, 3, H, W] float32 in [−1, 1]: frame 0 of ``cond`` [1, 3, T, H, W] after the original's 8-bit round trip."""
    x = cond[:, :, 0].float() * 0.5 + 0.5  # [1,3,H,W] in [0,1]
    u8 = (x * 255).to(torch.uint8)  # truncation, as torchvision's to_pil_image
    return u8.float() * (2 / 255) - 1


def clip_pixels(image: torch.Tensor, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """CLIP input [B, 3, size, size]: ``image`` [B, 3, H, W] in [−1, 1] squashed by bicubic resize, normalised.

    The original Wan CLIP preprocessing (no centre crop, unlike diffusers'
    ``CLIPImageProcessor``).
    """
    x = torch.nn.functional.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def latent_shape(t: int, h: int, w: int, z: int = 16) -> tuple[int, int, int, int, int]:
    """Latent shape [1, z, (T−1)/4+1, H/8, W/8] of a T×H×W video."""
    return (1, z, (t - 1) // TEMPORAL + 1, h // 8, w // 8)


def first_frame_mask(t: int, h: int, w: int) -> torch.Tensor:
    """Wan I2V mask channels [1, 4, T', h, w] float32: 1 on the 4 sub-frames of latent frame 0, else 0.

    ``t`` video frames (4k+1), ``h``, ``w`` latent height/width.
    """
    m = torch.zeros(1, t, h, w)
    m[:, 0] = 1
    m = torch.cat([m[:, :1].repeat(1, TEMPORAL, 1, 1), m[:, 1:]], dim=1)  # [1, T+3, h, w]
    return m.view(1, m.shape[1] // TEMPORAL, TEMPORAL, h, w).transpose(1, 2).contiguous()


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """float32 CPU noise of ``shape`` from ``torch.Generator('cpu').manual_seed(seed)`` (as the original)."""
    gen = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen, device="cpu", dtype=torch.float32)
