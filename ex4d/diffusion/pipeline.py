"""Generation: masked render (color + mask) → completed novel-view video, with Wan2.1-I2V + the EX-4D adapter.

One video, step by step (shapes for T frames of H × W, T' = (T−1)/4+1, h = H/8):

1. checks: color [T, H, W, 3] uint8, mask [T, H, W] bool, H, W multiples of 16, T = 4k+1
   (or ``frames="trim"|"pad"``);
2. mask erosion (seeded, per frame), condition = (color·mask)·2−1, mask·2−1;
3. prompt states (cached per prompt pair), CLIP states of the I2V first frame,
   I2V condition y = [first-frame mask (4), VAE latents of (first frame, zeros…) (16)];
4. camera tokens = CamVidEncoder(VAE(cond), VAE(mask·2−1 … i.e. values {−3, +1}));
5. noise from ``torch.Generator('cpu').manual_seed(seed)``, 25 Euler steps with CFG,
   the tokens added after patch embedding in every DiT forward;
6. VAE decode → uint8 frames.

Use :class:`Ex4dGenerator` to keep the models loaded across calls, or
:func:`generate_video` for one call.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import Ex4dError, check
from .adapter import CamVidEncoder, TokenInjection, add_lora, merge_lora, transformer_dims
from .checkpoint import AdapterSpec, AdapterWeights, apply_adapter_weights, inspect_adapter, load_adapter
from .conditioning import (check_inputs, condition_tensors, erode_masks, first_frame_mask, fit_frames,
                           i2v_first_frame, initial_noise, latent_shape)
from .config import MODEL_FIELDS, GenerateConfig
from .encode import encode_image, encode_prompts, to_uint8_video, vae_decode, vae_encode
from .loading import WanComponents, load_wan, resolve_device, torch_dtype
from .fp8 import check_fp8_device, quantize_blocks_fp8
from .memory import MemoryPlan, apply_memory_plan, compile_blocks, memory_plan
from .sampling import denoise, make_scheduler

__all__ = ["Ex4dGenerator", "generate_video", "model_spec", "set_step_cache"]

log = logging.getLogger(__name__)


def model_spec(components: WanComponents) -> AdapterSpec:
    """The :class:`AdapterSpec` dims an adapter must have to fit these Wan components."""
    dims = transformer_dims(components.transformer)
    return AdapterSpec(num_layers=dims["num_layers"], dim=dims["dim"], ffn_dim=dims["ffn_dim"],
                       z_dim=int(components.vae.config.z_dim),
                       patch_size=tuple(int(p) for p in components.transformer.config.patch_size))


class Ex4dGenerator:
    """Loaded Wan2.1-I2V + EX-4D adapter, placed by a memory mode, for repeated :meth:`generate` calls.

    Args:
        components: loaded Wan models (CPU), e.g. from :func:`~ex4d.diffusion.loading.load_wan`.
        adapter: EX-4D adapter weights, or None for plain Wan I2V (no camera tokens, no LoRA).
        config: load-time fields (dtype, memory, device, merge_lora, attention_backend,
            compile, vae_tiling) are applied here; the others are the defaults of :meth:`generate`.
        loras: extra LoRAs (:class:`~ex4d.diffusion.extra_lora.LoraFile`), merged into the DiT.
        prepared: what :func:`~ex4d.diffusion.fastload.load_models` loaded (LoRAs merged, fp8 applied,
            blocks placed; the DiT possibly still loading); ``components`` and ``adapter`` are then its own.

    Build from files with :meth:`load`.
    """

    def __init__(self, components: WanComponents, adapter: AdapterWeights | None = None,
                 config: GenerateConfig = GenerateConfig(), loras: list | tuple = (), *, prepared=None) -> None:
        self.config = config.check()
        self.components = components
        self.device = resolve_device(config.device)
        self.dtype = torch_dtype(config.dtype)
        self.spec = model_spec(components)
        self.encoder: CamVidEncoder | None = None
        self.injection: TokenInjection | None = None
        self.last_timings: dict[str, float] = {}  # seconds per stage of the last generate()
        self.load_timings: dict = dict(prepared.timings) if prepared is not None else {}
        self.loras: list[str] = list(prepared.loras) if prepared is not None else []
        self._prepared = prepared
        self._prompt_store = prepared.prompt_store if prepared is not None else None
        self._prompt_cache: dict[tuple[str, str | None], tuple[torch.Tensor, torch.Tensor | None]] = {}
        if loras and prepared is None:  # into the base weights, before the adapter's LoRA wraps them
            from .extra_lora import check_deltas_fit, merge_deltas, read_lora

            for lf in loras:
                deltas = read_lora(lf)
                check_deltas_fit(deltas, {k: tuple(p.shape) for k, p in components.transformer.named_parameters()})
                merge_deltas(components.transformer, deltas)
                self.loras += deltas.sources
        if adapter is not None:
            self._attach(adapter, merged=prepared is not None)
        self.plan: MemoryPlan = memory_plan(config.memory, self.device, config.vae_tiling, config.gpu_budget_gib,
                                            fp8_matmul=config.fp8_matmul)
        self._set_attention(config.attention_backend)
        if config.fp8_matmul and prepared is None:  # after LoRA merging, before compiling and placing
            check_fp8_device(self.device)
            n = quantize_blocks_fp8(components.transformer, self.device, stay=config.memory == "full")
            log.info("fp8 matmuls: %d linear layers of the DiT blocks quantized", n)
        if config.compile:  # before the offloading and cache hooks, which then wrap the compiled blocks
            check(self.device.type == "cuda", "compile=True needs a CUDA device")
            from .compile_cache import enable_compile_cache

            enable_compile_cache()  # compiled kernels kept across processes (~/.cache/ex4d/torch-compile)
            compile_blocks(components.transformer)
        extra = [self.encoder] if self.encoder is not None else []
        others = ("text_encoder", "image_encoder", "vae")
        apply_memory_plan(self.plan, components, extra, compute_dtype=self.dtype,
                          parts=others if prepared is not None else ("transformer",) + others)
        self._dit_placed = prepared is None
        if prepared is None:
            set_step_cache(components.transformer, config.step_cache, config.step_cache_threshold)
        elif prepared.dit_ready is None:
            self.ensure_transformer()

    @classmethod
    def load(cls, wan: str | os.PathLike, adapter: str | os.PathLike | None,
             config: GenerateConfig = GenerateConfig(), encoders: str | os.PathLike | None = None,
             loras: list | tuple = (), overlap: bool = False,
             prompts: list[tuple[str, str | None]] | None = None) -> "Ex4dGenerator":
        """Load Wan from ``wan`` (see ``load_wan``), the adapter file (``ex4d.ckpt`` or ours) and ``loras``, then place them.

        With ``config.merge_lora`` (the default) this goes through :func:`~ex4d.diffusion.fastload.load_models`:
        the DiT streamed straight to its device with the LoRAs merged and fp8 applied block by block, the
        encoders loaded in parallel, the text encoder skipped when every one of ``prompts`` (pairs of
        prompt, negative or None) is in the prompt cache. ``overlap``: return before the DiT is loaded;
        :meth:`generate` runs the encoders meanwhile and waits for it before denoising. ``EX4D_FASTLOAD=0``
        takes the CPU loader (``load_wan``) instead, as ``merge_lora=False`` does.
        """
        config = config.check()
        if adapter is not None:  # metadata, keys, shapes, dtypes: a bad adapter fails before the 14B load
            inspect_adapter(adapter)
        if config.merge_lora and os.environ.get("EX4D_FASTLOAD", "1").strip() not in ("0", "off", "no"):
            from .fastload import load_models

            models = load_models(wan, adapter, config, encoders=encoders, loras=loras, overlap=overlap,
                                 prompts=prompts)
            return cls(models.components, models.adapter, config, prepared=models)
        components = load_wan(wan, encoders=encoders, dtype=config.dtype, vae_dtype=config.vae_dtype,
                              device=config.device, force_cpu=config.force_cpu)
        weights = load_adapter(adapter, expected=model_spec(components)) if adapter is not None else None
        return cls(components, weights, config, loras=loras)

    def ensure_transformer(self) -> None:
        """Wait until the DiT is loaded (see ``overlap``) and place it; a no-op once done."""
        if self._dit_placed:
            return
        prepared = self._prepared
        prepared.wait()
        self.plan = memory_plan(self.config.memory, self.device, self.config.vae_tiling, self.config.gpu_budget_gib,
                                resident_blocks=prepared.resident_blocks, fp8_matmul=self.config.fp8_matmul)
        apply_memory_plan(self.plan, self.components, compute_dtype=self.dtype, parts=("transformer",))
        set_step_cache(self.components.transformer, self.config.step_cache, self.config.step_cache_threshold)
        self._dit_placed = True

    def _text_encoder(self):
        """The UMT5 encoder, loaded now if the prompt cache had spared it so far."""
        c = self.components
        if c.text_encoder is None:
            t = time.perf_counter()
            c.text_encoder = self._prepared.load_text_encoder()
            apply_memory_plan(self.plan, c, compute_dtype=self.dtype, parts=("text_encoder",))
            self.load_timings["text_encoder_late_s"] = round(time.perf_counter() - t, 3)
        return c.text_encoder

    # ------------------------------------------------------------------ setup

    def _attach(self, weights: AdapterWeights, merged: bool = False) -> None:
        """Camera encoder + token hook from ``weights``; the LoRA too unless the loader ``merged`` it already."""
        spec = weights.spec
        for name in ("num_layers", "dim", "ffn_dim", "z_dim", "patch_size"):
            check(getattr(spec, name) == getattr(self.spec, name),
                  f"adapter {weights.source} has {name} {getattr(spec, name)}, the Wan model {getattr(self.spec, name)}")
        transformer = self.components.transformer
        self.encoder = CamVidEncoder(spec.z_dim, spec.hidden, spec.dim, spec.patch_size).eval()
        self.encoder.to(self.dtype)
        apply_adapter_weights(weights, encoder=self.encoder)
        if merged:
            self.injection = TokenInjection(transformer)
            return
        add_lora(transformer, rank=spec.rank, alpha=spec.alpha)
        apply_adapter_weights(weights, transformer=transformer)
        if self.config.merge_lora:
            merge_lora(transformer, device=self.device)  # on the GPU when there is one, layer by layer
        transformer.requires_grad_(False)
        self.injection = TokenInjection(transformer)

    def _set_attention(self, backend: str) -> None:
        # "auto" = PyTorch's own SDPA choice. On an H200 (torch 2.11) forcing cuDNN for every layer or only
        # for the self-attention was no faster (bench/bench_generate.py --sections attn)
        if backend not in ("auto", "native"):
            self.components.transformer.set_attention_backend(backend)

    # ------------------------------------------------------------------ pieces

    def prompt_states(self, prompt: str, negative: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UMT5 states ([1, 512, C], [1, 512, C] or None) of the prompt pair, cached across calls."""
        key = (prompt, negative)
        if key not in self._prompt_cache:
            c = self.components
            texts = [prompt] if negative is None else [prompt, negative]
            states = self._prompt_store.get(texts) if self._prompt_store is not None else None
            if states is None:
                states = encode_prompts(c.tokenizer, self._text_encoder(), texts, self.device)
                if self._prompt_store is not None:
                    self._prompt_store.put(texts, states)
            states = states.to(self.device)
            pos, neg = states[:1], (states[1:] if negative is not None else None)
            self._prompt_cache = {key: (pos, neg)}  # keep one pair: the 14B model's states are small, but bounded
        return self._prompt_cache[key]

    def camera_tokens(self, cond: torch.Tensor, mask_pm1: torch.Tensor) -> torch.Tensor:
        """Adapter tokens [1, D, T', H/16, W/16] from cond and mask·2−1 (each [1, 3, T, H, W])."""
        vae = self.components.vae
        video_latents = vae_encode(vae, cond, self.device)
        mask_latents = vae_encode(vae, mask_pm1 * 2 - 1, self.device)  # the original encodes mask·2−1 again
        with torch.no_grad():
            return self.encoder(video_latents, mask_latents)

    def i2v_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP states [1, N, C], y [1, 4 + z, T', h, w]) from the first frame of ``cond`` [1, 3, T, H, W]."""
        c = self.components
        image = i2v_first_frame(cond)  # [1, 3, H, W] float32
        _, _, t, h, w = cond.shape
        clip_states = encode_image(c.image_encoder, image, self.device)
        video = torch.cat([image[:, :, None], image.new_zeros(1, 3, t - 1, h, w)], dim=2)  # [1, 3, T, H, W]
        latents = vae_encode(c.vae, video, self.device)
        mask = first_frame_mask(t, h // 8, w // 8).to(latents.device)
        return clip_states, torch.cat([mask, latents], dim=1)

    # ------------------------------------------------------------------ generate

    def _call_config(self, config: GenerateConfig | None) -> GenerateConfig:
        if config is None:
            return self.config
        config.check()
        changed = [f for f in MODEL_FIELDS if getattr(config, f) != getattr(self.config, f)]
        check(not changed, f"these settings are fixed when the models load and differ from the loaded ones: "
                           f"{changed}; make a new Ex4dGenerator to change them")
        return config

    def generate(self, color: np.ndarray, mask: np.ndarray, config: GenerateConfig | None = None,
                 progress: bool = True) -> np.ndarray:
        """Completed video [T, H, W, 3] uint8 RGB from ``color`` [T, H, W, 3] uint8 and ``mask`` [T, H, W] bool.

        ``mask`` True = known (rendered), False = to be generated. H, W must be
        multiples of 16 and T = 4k+1 unless ``config.frames`` trims or pads.
        """
        cfg = self._call_config(config)
        check_inputs(color, mask)
        color, mask, keep = fit_frames(color, mask, cfg.frames)
        t, h, w = color.shape[:3]
        clock = _Clock(self.device)
        mask = erode_masks(mask, cfg.erosion_kernels, cfg.erosion_rng_seed)
        cond, mask_pm1 = condition_tensors(color, mask, self.dtype)
        text_pos, text_neg = self.prompt_states(cfg.prompt, cfg.negative_prompt if cfg.cfg != 1.0 else None)
        clock.lap("prompt_s")
        clip_states, y = self.i2v_condition(cond)
        clock.lap("image_s")
        conditioning = None
        if self.encoder is not None:
            tokens = self.camera_tokens(cond, mask_pm1)
            conditioning = lambda: self.injection.conditioning(tokens)  # noqa: E731
        clock.lap("tokens_s")
        self.ensure_transformer()
        clock.lap("dit_wait_s")
        latents = initial_noise(cfg.seed, latent_shape(t, h, w, int(self.components.vae.config.z_dim))).to(self.device)
        scheduler = make_scheduler(cfg.steps, cfg.shift, device=self.device, sampler=cfg.sampler)
        step_noise = torch.Generator("cpu").manual_seed((cfg.seed + 1) % 2**63) if cfg.sampler == "lcm" else None
        steps: dict = {}
        latents = denoise(self.components.transformer, scheduler, latents, y, text_pos, text_neg, clip_states,
                          cfg.cfg, cfg.cfg_batch, self.dtype, conditioning, progress, generator=step_noise,
                          timings=steps)
        clock.lap("denoise_s")
        clock.laps.update({k: round(v, 3) for k, v in steps.items()})  # first step vs the rest (within denoise_s)
        check(bool(torch.isfinite(latents).all()),
              "the sampler produced non-finite latents (NaN or inf), which would decode to a black video; with "
              "--dtype float16 use bfloat16, otherwise check the adapter and the Wan weights")
        video = vae_decode(self.components.vae, latents, self.device)  # [1, 3, T, H, W]
        clock.lap("decode_s")
        self.last_timings = clock.laps
        return to_uint8_video(video)[:keep]


def set_step_cache(transformer, mode: str, threshold: float = 0.05) -> None:
    """Enable (``"first-block"``) or leave off (``"none"``) diffusers' first-block cache on ``transformer``.

    With it, each step runs the first DiT block and compares its residual with the previous step's
    (relative mean absolute change); below ``threshold`` the other blocks are skipped and their previous
    residual is reused. :func:`~ex4d.diffusion.sampling.denoise` runs every forward inside the
    transformer's cache context and resets the cache at the start of each video.
    """
    if mode == "none":
        return
    check(mode == "first-block", f"unknown step cache {mode!r}; choose none or first-block")
    from diffusers.hooks import FirstBlockCacheConfig

    transformer.enable_cache(FirstBlockCacheConfig(threshold=float(threshold)))


class _Clock:
    """Wall-clock laps (seconds), synchronising CUDA at each lap so GPU work is attributed to its stage."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.laps: dict[str, float] = {}
        self._t = self._now()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self, name: str) -> None:
        now = self._now()
        self.laps[name] = now - self._t
        self._t = now


def generate_video(color: np.ndarray, mask: np.ndarray, wan: str | Path, adapter: str | Path | None,
                   config: GenerateConfig = GenerateConfig(), progress: bool = True,
                   encoders: str | Path | None = None, timings: dict | None = None) -> np.ndarray:
    """Completed video [T, H, W, 3] uint8 from ``color`` [T, H, W, 3] uint8 and ``mask`` [T, H, W] bool (True = known).

    Loads Wan2.1-I2V from ``wan`` (diffusers or original layout; ``encoders``
    = diffusers folder for the text/image encoders when ``wan`` is original)
    and the EX-4D adapter from ``adapter`` (``ex4d.ckpt`` or our
    ``.safetensors``; None = plain Wan I2V), then runs one generation. For
    several videos keep an :class:`Ex4dGenerator` instead. ``timings``: filled with the seconds
    of each stage (``load_s``, the loader's detail under ``load``, then the generation's stages).
    """
    config = config.check()
    check_inputs(color, mask)
    fit_frames(color, mask, config.frames)  # frame-count errors before loading ~40 GB of weights
    t0 = time.perf_counter()
    pair = [(config.prompt, config.negative_prompt if config.cfg != 1.0 else None)]
    gen = Ex4dGenerator.load(wan, adapter, config, encoders=encoders, overlap=True, prompts=pair)
    load_s = time.perf_counter() - t0
    video = gen.generate(color, mask, config, progress)
    if timings is not None:
        timings.update(load_s=round(load_s + gen.last_timings.get("dit_wait_s", 0.0), 3), load=gen.load_timings,
                       **{k: round(v, 3) for k, v in gen.last_timings.items()})
    return video
