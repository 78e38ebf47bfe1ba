"""The EX-4D adapter on a diffusers ``WanTransformer3DModel``: camera/video encoder, token injection, LoRA.

Three pieces, each usable alone:

* :class:`CamVidEncoder` — VAE latents of the masked condition video and of
  the mask (16 + 16 channels) → a 1×1×1-conv MLP (32→H, SiLU, H→H, SiLU, H→H)
  → a zero-initialised Conv3d with kernel = stride = (1, 2, 2) to the DiT
  width. Its parameter names equal the original's (``latent_encoder.{0,2,4}``,
  ``latent_patch_embedding``) so the released checkpoint maps one to one.
* :class:`TokenInjection` — a forward hook on ``transformer.patch_embedding``
  that adds the encoder output to the patch tokens, i.e. right after patch
  embedding and before the time embedding and every block (where the
  original adds its ``ray_latent``). The tokens are set per call and
  broadcast over the batch, so both CFG branches get the same conditioning.
* LoRA via peft on the layers the original targets (DiffSynth names
  ``self_attn.{q,k,v,o}``, ``cross_attn.{q,k,v,o}``, ``ffn.0``, ``ffn.2`` —
  not ``k_img``/``v_img``), mapped to diffusers names with the same rename
  table diffusers uses to convert Wan checkpoints
  (``diffusers.loaders.single_file_utils.convert_wan_transformer_to_diffusers``):
  ``self_attn→attn1``, ``cross_attn→attn2``, ``.q→.to_q``, ``.o→.to_out.0``,
  ``ffn.0→ffn.net.0.proj``, ``ffn.2→ffn.net.2``. :func:`merge_lora` folds
  the LoRA product into the base weights (in float32, one rounding) and
  removes the peft wrappers, so inference runs plain ``nn.Linear`` layers.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..errors import Ex4dError, check
from ._deps import require
from .adapter_spec import LORA_TARGETS, ORIGINAL_TO_DIFFUSERS  # torch-free constants (the CLI imports them)

__all__ = [
    "CamVidEncoder",
    "TokenInjection",
    "ORIGINAL_TO_DIFFUSERS",
    "LORA_TARGETS",
    "DEFAULT_ADAPTER_NAME",
    "add_lora",
    "lora_layers",
    "merge_lora",
    "transformer_dims",
]

DEFAULT_ADAPTER_NAME = "ex4d"



class CamVidEncoder(nn.Module):
    """Conditioning tokens from the VAE latents of the condition video and of the mask.

    Args:
        in_channels: VAE latent channels z (16 for Wan2.1); the input has 2·z.
        hidden_channels: width of the 1×1×1 MLP (1024 in EX-4D).
        out_channels: DiT width (5120 for Wan2.1-14B).
        patch_size: (t, h, w) kernel = stride of the output conv, equal to the DiT's patch size.

    The output conv starts at zero, so a fresh encoder leaves the DiT unchanged.
    """

    def __init__(self, in_channels: int = 16, hidden_channels: int = 1024, out_channels: int = 5120,
                 patch_size: tuple[int, int, int] = (1, 2, 2)) -> None:
        super().__init__()
        self.latent_encoder = nn.Sequential(
            nn.Conv3d(2 * in_channels, hidden_channels, kernel_size=1),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=1),
            nn.SiLU(),
            nn.Conv3d(hidden_channels, hidden_channels, kernel_size=1),
        )
        self.latent_patch_embedding = nn.Conv3d(hidden_channels, out_channels, kernel_size=patch_size,
                                                stride=patch_size)
        nn.init.zeros_(self.latent_patch_embedding.weight)
        nn.init.zeros_(self.latent_patch_embedding.bias)

    def forward(self, video_latents: torch.Tensor, mask_latents: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, D, T', h/p_h, w/p_w]`` from normalised VAE latents.

        Args:
            video_latents: ``[B, z, T', h, w]`` latents of the masked condition video (VAE-normalised).
            mask_latents: ``[B, z, T', h, w]`` latents of the mask video (VAE-normalised).
        """
        x = torch.cat([video_latents, mask_latents], dim=1)  # [B, 2z, T', h, w]
        x = self.latent_encoder(x.to(self.latent_patch_embedding.weight.dtype))
        return self.latent_patch_embedding(x)  # [B, D, T', h/2, w/2]


class TokenInjection:
    """Adds conditioning tokens to the output of ``transformer.patch_embedding`` on every forward.

    Use :meth:`conditioning` around the denoising loop::

        inj = TokenInjection(transformer)
        with inj.conditioning(tokens):      # tokens [1 or B, D, T', H', W']
            transformer(...)

    A forward without tokens set raises (it would silently drop the camera
    conditioning). ``calls`` counts the forwards the hook has modified.
    """

    def __init__(self, transformer: nn.Module) -> None:
        check(hasattr(transformer, "patch_embedding"),
              f"{type(transformer).__name__} has no patch_embedding; expected a diffusers WanTransformer3DModel")
        self.tokens: torch.Tensor | None = None
        self.calls = 0
        self._handle = transformer.patch_embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if self.tokens is None:
            raise RuntimeError("TokenInjection: the DiT ran without conditioning tokens; "
                               "call it inside `with injection.conditioning(tokens):`")
        tokens = self.tokens
        if tokens.shape[0] != 1 and tokens.shape[0] != output.shape[0]:
            raise RuntimeError(f"conditioning tokens have batch {tokens.shape[0]}, the DiT batch is {output.shape[0]}")
        if tokens.shape[1:] != output.shape[1:]:
            raise RuntimeError(f"conditioning tokens {tuple(tokens.shape)} do not match the patch tokens "
                               f"{tuple(output.shape)} (width, latent frames, height/2, width/2)")
        self.calls += 1
        return output + tokens.to(device=output.device, dtype=output.dtype)

    @contextlib.contextmanager
    def conditioning(self, tokens: torch.Tensor) -> Iterator["TokenInjection"]:
        """Set ``tokens`` ``[1 or B, D, T', H', W']`` for the forwards inside the block."""
        previous, self.tokens = self.tokens, tokens
        try:
            yield self
        finally:
            self.tokens = previous

    def remove(self) -> None:
        """Detach the hook; the transformer is plain again."""
        self._handle.remove()


def transformer_dims(transformer: nn.Module) -> dict[str, int]:
    """``{"num_layers", "dim", "ffn_dim"}`` of a diffusers WanTransformer3DModel."""
    cfg = transformer.config
    return {"num_layers": int(cfg.num_layers), "dim": int(cfg.num_attention_heads * cfg.attention_head_dim),
            "ffn_dim": int(cfg.ffn_dim)}


def add_lora(transformer: nn.Module, rank: int = 16, alpha: float = 16.0,
             adapter_name: str = DEFAULT_ADAPTER_NAME) -> None:
    """Wrap the EX-4D LoRA target layers of ``transformer`` with peft LoRA (A kaiming, B zero).

    Targets: ``blocks.{i}.{attn1,attn2}.{to_q,to_k,to_v,to_out.0}``, ``blocks.{i}.ffn.net.0.proj``,
    ``blocks.{i}.ffn.net.2``; scale = alpha / rank.
    """
    peft = require("peft", "the EX-4D LoRA")
    check(rank >= 1, f"LoRA rank must be >= 1, got {rank}")
    config = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=list(LORA_TARGETS),
                             init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=adapter_name)
    n = len(lora_layers(transformer))
    expected = transformer_dims(transformer)["num_layers"] * len(LORA_TARGETS)
    if n != expected:
        raise RuntimeError(f"peft wrapped {n} layers, expected {expected}; the diffusers Wan layer names changed?")


def lora_layers(transformer: nn.Module) -> dict[str, nn.Module]:
    """Name → peft LoRA layer for every wrapped layer of ``transformer`` (empty if none)."""
    tuners = require("peft.tuners.tuners_utils", "the EX-4D LoRA")
    return {name: m for name, m in transformer.named_modules() if isinstance(m, tuners.BaseTunerLayer)}


@torch.no_grad()
def merge_lora(transformer: nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME,
               device: torch.device | str | None = None) -> int:
    """Fold LoRA into the base weights, W ← W + (alpha/r)·B·A, and unwrap the peft layers; returns the count.

    The sum is formed in float32 and rounded once to the weight's dtype
    (``device`` = where to compute it, default the weight's own device; the
    result is written back in place). Afterwards the model has no peft layers.
    """
    layers = lora_layers(transformer)
    for name, layer in layers.items():
        if adapter_name not in layer.lora_A:
            raise Ex4dError(f"layer {name} has no LoRA adapter {adapter_name!r} (has {list(layer.lora_A)})")
        base = layer.get_base_layer()
        w = base.weight
        dev = torch.device(device) if device is not None else w.device
        a = layer.lora_A[adapter_name].weight.to(dev, torch.float32)  # [r, in]
        b = layer.lora_B[adapter_name].weight.to(dev, torch.float32)  # [out, r]
        merged = w.to(dev, torch.float32) + layer.scaling[adapter_name] * (b @ a)
        w.copy_(merged.to(w.dtype))
        _replace_module(transformer, name, base)
    if hasattr(transformer, "_hf_peft_config_loaded"):
        transformer._hf_peft_config_loaded = False
    if hasattr(transformer, "peft_config"):
        del transformer.peft_config
    return len(layers)


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
