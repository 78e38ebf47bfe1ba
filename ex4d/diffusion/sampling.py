"""The sampler: the original's flow-matching Euler schedule on diffusers' scheduler, and the denoising loop.

Schedule (DiffSynth ``FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)``):
s = linspace(1, 0, steps + 1)[:-1] (float32), σ = shift·s / (1 + (shift − 1)·s),
timesteps t = 1000·σ, then x ← x + (σ_next − σ)·v with σ_next = 0 after the
last step. diffusers' ``FlowMatchEulerDiscreteScheduler`` computes the same
numbers when given s as custom sigmas (tested bit for bit).

Guidance: v = v_neg + cfg·(v_pos − v_neg) in float32, the two branches either
in one batch-2 forward (``cfg_batch``, faster on a GPU) or in two forwards
(the original's order). The conditioning tokens are broadcast to the batch,
so both branches get the same camera/video conditioning.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ._deps import require

__all__ = ["original_sigmas", "make_scheduler", "denoise"]


def original_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The original's σ sequence [steps] float32: shift·s / (1 + (shift−1)·s), s = linspace(1, 0, steps+1)[:-1]."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)[:-1]
    return shift * s / (1 + (shift - 1) * s)


def make_scheduler(steps: int, shift: float, device: torch.device | str | None = None, sampler: str = "euler"):
    """A fresh diffusers scheduler on the original's sigmas (``steps`` steps, ``shift``).

    ``sampler``: ``"euler"`` = ``FlowMatchEulerDiscreteScheduler`` (the original's sampler);
    ``"lcm"`` = ``FlowMatchLCMScheduler`` (x0 = x − σ·v, then x ← (1 − σ')·x0 + σ'·noise: the sampler
    lightx2v's step-distilled Wan2.1 models and LoRAs are made for).
    """
    diffusers = require("diffusers")
    cls = {"euler": diffusers.FlowMatchEulerDiscreteScheduler, "lcm": diffusers.FlowMatchLCMScheduler}[sampler]
    scheduler = cls(num_train_timesteps=1000, shift=float(shift))
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)[:-1]
    scheduler.set_timesteps(sigmas=s.numpy(), device=device)
    return scheduler


@torch.no_grad()
def denoise(transformer, scheduler, latents: torch.Tensor, y: torch.Tensor, text_pos: torch.Tensor,
            text_neg: torch.Tensor | None, image_states: torch.Tensor, cfg: float, cfg_batch: bool = True,
            dtype: torch.dtype = torch.bfloat16, conditioning: Callable[[], contextlib.AbstractContextManager] | None = None,
            progress: bool = True, generator: torch.Generator | None = None,
            timings: dict | None = None) -> torch.Tensor:
    """Denoised latents [1, z, T', h, w] float32.

    Args:
        transformer: diffusers ``WanTransformer3DModel`` (I2V: 36 input channels).
        scheduler: from :func:`make_scheduler` (stateful: one per video).
        latents: [1, z, T', h, w] float32 initial noise, on the compute device.
        y: [1, 4 + z, T', h, w] I2V condition (first-frame mask channels, then first-frame latents).
        text_pos, text_neg: [1, 512, C] prompt states (``text_neg`` unused when cfg == 1).
        image_states: [1, N, C_img] CLIP states.
        cfg: guidance scale; 1 = conditional branch only.
        cfg_batch: run both branches as one batch of 2.
        dtype: compute dtype of the DiT inputs.
        conditioning: context manager factory wrapping the whole loop (token injection).
        progress: show a tqdm bar over the steps.
        generator: noise of a stochastic scheduler's steps (the ``lcm`` sampler).
        timings: when given, gets ``first_step_s`` (the first step's wall time, the device synchronised
            after it: in a new process it holds what ``--compile`` pays per process: Dynamo's tracing and
            loading the cached kernels) and ``rest_steps_s`` (the other steps, synchronised at the end).
    """
    import time

    from tqdm.auto import tqdm

    guided = cfg != 1.0
    batched = guided and cfg_batch
    if batched:
        text = torch.cat([text_pos, text_neg]).to(dtype)
        image = image_states.to(dtype).expand(2, -1, -1)
    y = y.to(latents.device)
    cached = bool(getattr(transformer, "is_cache_enabled", False))  # a step cache (diffusers CacheMixin)
    if cached:
        transformer._reset_stateful_cache()  # nothing carries over from the previous video

    def branch(name: str):  # the cache keeps one state per branch ("cond", "uncond", or the CFG batch)
        return transformer.cache_context(name) if cached else contextlib.nullcontext()

    def sync():
        if latents.device.type == "cuda":
            torch.cuda.synchronize(latents.device)

    ctx = conditioning() if conditioning is not None else contextlib.nullcontext()
    t_start = time.perf_counter()
    with ctx:
        for i, t in enumerate(tqdm(scheduler.timesteps, desc="denoising", disable=not progress, leave=False)):
            if i == 1 and timings is not None:
                sync()
                timings["first_step_s"] = time.perf_counter() - t_start
                t_start = time.perf_counter()
            x = torch.cat([latents, y], dim=1).to(dtype)  # [1, 36, T', h, w]
            if batched:
                with branch("cfg_batch"):
                    v = transformer(hidden_states=x.expand(2, -1, -1, -1, -1),
                                    timestep=t.expand(2).to(latents.device), encoder_hidden_states=text,
                                    encoder_hidden_states_image=image, return_dict=False)[0].float()
                v_pos, v_neg = v.chunk(2)
            else:
                with branch("cond"):
                    v_pos = _forward(transformer, x, t, text_pos, image_states, dtype)
                v_neg = None
                if guided:
                    with branch("uncond"):
                        v_neg = _forward(transformer, x, t, text_neg, image_states, dtype)
            v = v_neg + cfg * (v_pos - v_neg) if guided else v_pos
            step_kw = {"generator": generator} if generator is not None else {}
            latents = scheduler.step(v, t, latents, return_dict=False, **step_kw)[0]
    if timings is not None:
        sync()
        key = "rest_steps_s" if "first_step_s" in timings else "first_step_s"  # a one-step run has only the first
        timings[key] = time.perf_counter() - t_start
    return latents


def _forward(transformer, x, t, text, image, dtype) -> torch.Tensor:
    return transformer(hidden_states=x, timestep=t.expand(1).to(x.device), encoder_hidden_states=text.to(dtype),
                       encoder_hidden_states_image=image.to(dtype), return_dict=False)[0].float()
