"""The trainable EX-4D model: frozen Wan DiT + LoRA (peft) + the camera/video encoder, as one ``nn.Module``.

One module so that DDP/FSDP see every trainable parameter (LoRA A/B inside
the DiT, the whole :class:`~ex4d.diffusion.adapter.CamVidEncoder`) and its
forward runs the encoder and the DiT together: the encoder's tokens are added
after patch embedding by :class:`~ex4d.diffusion.adapter.TokenInjection`.

LoRA targets are named either way (the original's DiffSynth names
``self_attn.q`` … ``ffn.2`` or diffusers' ``attn1.to_q`` …), or as groups:
``self_attn``, ``cross_attn``, ``ffn``, ``all`` (default, the original's ten).
Layers outside the original's ten (e.g. ``k_img``) are refused: the adapter
formats, ours and the original ``ex4d.ckpt``, have no place for them. An
adapter trained on a subset exports zero LoRA for the other layers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..diffusion._deps import require
from ..diffusion.adapter import (DEFAULT_ADAPTER_NAME, LORA_TARGETS, CamVidEncoder,
                                 TokenInjection, lora_layers, transformer_dims)
from ..diffusion.adapter_spec import TARGET_GROUPS, resolve_targets  # torch-free: the training config uses them
from ..diffusion.checkpoint import AdapterSpec, AdapterWeights, canonical_lora_shapes
from ..errors import check

__all__ = ["Ex4dTrainModel", "resolve_targets", "add_training_lora", "adapter_spec", "export_adapter",
           "trainable_parameters", "TARGET_GROUPS"]



def add_training_lora(transformer: nn.Module, rank: int = 16, alpha: float = 16.0,
                      targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Wrap ``targets`` of every block with peft LoRA (A kaiming, B zero), in float32, trainable; returns the count."""
    peft = require("peft", "LoRA training")
    check(rank >= 1, f"LoRA rank must be >= 1, got {rank}")
    check(alpha > 0, f"LoRA alpha must be > 0, got {alpha}")
    patterns = [rf"blocks\.\d+\.{t.replace('.', chr(92) + '.')}" for t in targets]
    config = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules="|".join(f"({p})" for p in patterns),
                             init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=DEFAULT_ADAPTER_NAME)
    n = 0
    for name, p in transformer.named_parameters():
        if ".lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
            n += 1
    expected = transformer_dims(transformer)["num_layers"] * len(targets)
    if len(lora_layers(transformer)) != expected:
        raise RuntimeError(f"peft wrapped {len(lora_layers(transformer))} layers, expected {expected}")
    return len(lora_layers(transformer))


class Ex4dTrainModel(nn.Module):
    """Frozen DiT (with LoRA) + camera encoder; :meth:`forward` predicts the flow-matching velocity.

    Args:
        transformer: diffusers ``WanTransformer3DModel`` (I2V), LoRA already added.
        encoder: :class:`CamVidEncoder` (trainable, float32).
    """

    def __init__(self, transformer: nn.Module, encoder: CamVidEncoder) -> None:
        super().__init__()
        self.transformer = transformer
        self.encoder = encoder
        self.injection = TokenInjection(transformer)

    def forward(self, noisy: torch.Tensor, y: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                image: torch.Tensor, video_latents: torch.Tensor, mask_latents: torch.Tensor) -> torch.Tensor:
        """Velocity [B, z, T', h, w] (the DiT's output dtype).

        Args:
            noisy: [B, z, T', h, w] noisy target latents x_σ = (1−σ)·x0 + σ·ε.
            y: [B, 4 + z, T', h, w] I2V condition (first-frame mask channels, first-frame latents).
            timestep: [B] 1000·σ.
            text: [B, 512, C_text] prompt states; image: [B, N, C_img] CLIP states.
            video_latents, mask_latents: [B, z, T', h, w] latents of the condition and of mask·2−1.
        """
        tokens = self.encoder(video_latents, mask_latents)
        dtype = self.transformer.patch_embedding.weight.dtype
        x = torch.cat([noisy, y], dim=1).to(dtype)
        with self.injection.conditioning(tokens):
            return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text.to(dtype),
                                    encoder_hidden_states_image=image.to(dtype), return_dict=False)[0]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (LoRA A/B and the encoder)."""
    return [p for p in model.parameters() if p.requires_grad]


def adapter_spec(transformer: nn.Module, z_dim: int, hidden: int, rank: int, alpha: float) -> AdapterSpec:
    """:class:`AdapterSpec` of an adapter for ``transformer``."""
    dims = transformer_dims(transformer)
    return AdapterSpec(num_layers=dims["num_layers"], dim=dims["dim"], ffn_dim=dims["ffn_dim"], z_dim=int(z_dim),
                       hidden=int(hidden), rank=int(rank), alpha=float(alpha),
                       patch_size=tuple(int(p) for p in transformer.config.patch_size))


def export_adapter(state: dict[str, torch.Tensor], spec: AdapterSpec, source: str = "ex4d train") -> AdapterWeights:
    """:class:`AdapterWeights` (float32, CPU) from a trainable state dict of :class:`Ex4dTrainModel`.

    ``state`` keys: ``encoder.<name>`` and ``transformer.blocks.{i}.<layer>.lora_{A,B}.ex4d.weight``
    (as ``named_parameters`` gives them). LoRA layers not trained get zeros.
    """
    encoder = {k[len("encoder."):]: v.detach().float().cpu() for k, v in state.items() if k.startswith("encoder.")}
    lora = {k: torch.zeros(s) for k, s in canonical_lora_shapes(spec).items()}
    suffix = f".{DEFAULT_ADAPTER_NAME}.weight"
    found = 0
    for k, v in state.items():
        if k.startswith("transformer.") and k.endswith(suffix) and ".lora_" in k:
            name = k[len("transformer."):-len(suffix)]  # blocks.0.attn1.to_q.lora_A
            check(name in lora, f"trained LoRA weight {k} has no place in the adapter format")
            check(tuple(v.shape) == tuple(lora[name].shape), f"{k}: shape {tuple(v.shape)}, expected "
                                                             f"{tuple(lora[name].shape)}")
            lora[name] = v.detach().float().cpu().clone()
            found += 1
    check(found > 0, "no LoRA weights in the state dict")
    return AdapterWeights(spec=dataclasses.replace(spec), encoder=encoder, lora=lora, source=source)
