"""``ex4d train``: LoRA + camera-encoder training of the EX-4D adapter on accelerate (one GPU, DDP or FSDP).

The loop, per optimizer step (``grad_accum`` micro-steps of ``batch_size`` clips per process):

1. a batch of prepared clips (:class:`~ex4d.train.dataset.TripleDataset`, erosion as the original);
2. frozen encoders: VAE latents of target, condition and mask, CLIP states and I2V condition
   (:func:`~ex4d.train.inputs.encode_batch`); text states of the training prompt are computed
   once at start (the original trains with an empty prompt) and the text encoder is freed;
3. flow matching (:mod:`ex4d.train.objective`): σ from the shifted grid, x_σ = (1−σ)x0 + σε,
   loss = w(t)·‖v̂ − (ε − x0)‖²; noise and timesteps come from a generator seeded by
   (seed, step, micro-step, rank), so a resumed run draws exactly what an uninterrupted one would;
4. backward (bf16 autocast, DiT blocks recomputed under gradient checkpointing), clip, AdamW.

Outputs in ``RUN/``: ``config.json``, ``logs/metrics.jsonl`` (+ tensorboard), ``checkpoints/step-N/``
(:mod:`ex4d.train.checkpointing`), ``validation/step-N/*.mp4`` (condition | output | target) and, at
the end, ``adapter.safetensors`` (ours) and ``ex4d.ckpt`` (the original layout).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import check
from ..io.atomic import atomic_write_json
from .checkpointing import load_checkpoint, rotate_checkpoints, save_checkpoint
from .config import TrainConfig
from .dataset import ResumableSampler, TripleDataset, collate_triples, draw_seed, split_clips
from .inputs import ModelInputs, encode_batch
from .layout import list_clips
from .preflight import check_train_inputs
from .objective import flow_matching_loss, sample_noise, timestep_weights, training_sigmas

__all__ = ["train", "TrainResult", "VAL_SIGMA_INDICES"]

log = logging.getLogger(__name__)
GIB = 1024**3
VAL_SIGMA_INDICES = (125, 375, 625, 875)  # fixed grid points of the validation loss


@dataclass
class TrainResult:
    """What :func:`train` did: per-step metrics (main process), validation metrics, files written."""

    history: list = field(default_factory=list)
    validation: list = field(default_factory=list)
    step: int = 0
    resumed_from: str | None = None
    adapter: Path | None = None
    original_ckpt: Path | None = None
    main_process: bool = True


def _lr_lambda(config: TrainConfig):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
        if config.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, config.max_steps) / config.max_steps))
        return warm
    return f


class _Run:
    """State shared by the loop's pieces (models, data, accelerator)."""

    def __init__(self, config: TrainConfig, resume_from: Path | None, progress: bool) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config.check()
        self.out = Path(config.out)
        self.progress = progress
        log_with = None
        if config.tensorboard:
            try:
                import tensorboard  # noqa: F401
                log_with = "tensorboard"
            except ImportError:
                log.warning("tensorboard is not installed (pip install tensorboard): logging to metrics.jsonl only")
        self.acc = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                               log_with=log_with, project_dir=str(self.out), cpu=config.cpu)
        set_seed(config.seed, device_specific=True)
        self.device = self.acc.device
        self.resume_from = resume_from
        self._load_models()
        self._load_data()

    # ------------------------------------------------------------------ setup

    def _load_models(self) -> None:
        from ..diffusion.adapter import CamVidEncoder
        from ..diffusion.checkpoint import apply_adapter_weights, load_adapter
        from ..diffusion.encode import encode_prompts
        from ..diffusion.loading import load_wan, torch_dtype
        from .model import Ex4dTrainModel, adapter_spec, add_training_lora, trainable_parameters

        c = self.config
        comps = load_wan(c.wan, encoders=c.wan_encoders, dtype=c.weights_dtype, device=str(self.device),
                         force_cpu=True)
        with torch.no_grad():
            comps.text_encoder.to(self.device)
            texts = [c.prompt, c.val_prompt, c.val_negative_prompt]
            states = encode_prompts(comps.tokenizer, comps.text_encoder, texts, self.device)
        self.text, self.val_text_pos, self.val_text_neg = states[0:1], states[1:2], states[2:3]
        del comps.text_encoder  # ~11 GB in bf16 for UMT5-XXL, not needed again
        self.vae = comps.vae.to(self.device).requires_grad_(False).eval()
        self.image_encoder = comps.image_encoder.to(self.device).requires_grad_(False).eval()
        transformer = comps.transformer.requires_grad_(False)
        add_training_lora(transformer, c.rank, c.alpha, c.lora_targets)
        if c.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        z = int(self.vae.config.z_dim)
        self.spec = adapter_spec(transformer, z, c.hidden, c.rank, c.alpha)
        encoder = CamVidEncoder(z, c.hidden, self.spec.dim, self.spec.patch_size).float()
        if c.init_adapter:
            weights = load_adapter(c.init_adapter, expected=self.spec)
            check(weights.spec.rank == c.rank and weights.spec.hidden == c.hidden,
                  f"--init-adapter {c.init_adapter} has rank {weights.spec.rank}, hidden {weights.spec.hidden}; "
                  f"the run uses rank {c.rank}, hidden {c.hidden}")
            apply_adapter_weights(weights, transformer=transformer, encoder=encoder)
        model = Ex4dTrainModel(transformer, encoder)
        params = trainable_parameters(model)
        self.n_trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(c))
        self.model, self.optimizer = self.acc.prepare(model.to(self.device), optimizer)
        self.sigmas = training_sigmas(c.shift)
        self.weights = timestep_weights(self.sigmas, c.weighting)
        self.dtype = torch_dtype(c.weights_dtype)

    def _load_data(self) -> None:
        c = self.config
        clips = list_clips(c.data)
        if c.val_data:
            train, val = clips, list_clips(c.val_data)[: c.val_clips]
        else:
            train, val = split_clips(clips, min(c.val_clips, max(0, len(clips) - 1)))
        self.train_set = TripleDataset(train, c.num_frames, c.erosion)
        self.val_set = TripleDataset(val, c.num_frames, c.erosion) if val else None
        self._val_inputs: list[tuple[str, dict, ModelInputs]] | None = None
        self._cache: dict[tuple, ModelInputs] = {}

    def loader(self, start: int):
        """Infinite iterator of batches for this rank, starting after ``start`` consumed items."""
        c = self.config
        sampler = ResumableSampler(len(self.train_set), c.seed, self.acc.process_index, self.acc.num_processes, start)
        dl = torch.utils.data.DataLoader(self.train_set, batch_size=c.batch_size, sampler=sampler,
                                         num_workers=c.num_workers, collate_fn=collate_triples,
                                         persistent_workers=c.num_workers > 0)
        return iter(dl)

    # ------------------------------------------------------------------ one step

    def encode(self, batch: dict) -> ModelInputs:
        """Model inputs of a batch (from the in-memory cache when ``cache_latents``)."""
        if not self.config.cache_latents:
            return encode_batch(self.vae, self.image_encoder, batch, self.device)
        key = tuple(batch["clip"])
        if key not in self._cache:
            inputs = encode_batch(self.vae, self.image_encoder, batch, self.device)
            self._cache[key] = ModelInputs(*(x.cpu() for x in dataclasses.astuple(inputs)))
        return ModelInputs(*(x.to(self.device) for x in dataclasses.astuple(self._cache[key])))

    def loss_on(self, inputs: ModelInputs, generator: torch.Generator, index=None, weights=None):
        noisy, target, timestep, weight = sample_noise(inputs.latents, self.sigmas,
                                                       self.weights if weights is None else weights, generator, index)
        with self.acc.autocast():
            pred = self.model(noisy, inputs.y, timestep, self.text.expand(noisy.shape[0], -1, -1), inputs.image,
                              inputs.video_latents, inputs.mask_latents)
        return flow_matching_loss(pred, target, weight)

    def step_generator(self, step: int, micro: int) -> torch.Generator:
        step = 0 if self.config.overfit else step
        return torch.Generator("cpu").manual_seed(draw_seed(self.config.seed, step, micro, self.acc.process_index, 7))

    # ------------------------------------------------------------------ validation

    def val_inputs(self) -> list:
        if self._val_inputs is None:
            self._val_inputs = []
            for i in range(len(self.val_set)):
                item = self.val_set[(i, draw_seed(self.config.seed, i, 11))]
                batch = collate_triples([item])
                self._val_inputs.append((item["clip"], item, encode_batch(self.vae, self.image_encoder, batch,
                                                                          self.device)))
        return self._val_inputs

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """Fixed-noise loss on the held-out clips (and renders, if ``val_render``); collective on all ranks."""
        if self.val_set is None:
            return {}
        self.model.eval()
        ones = torch.ones_like(self.weights)
        losses = []
        for i, (name, item, inputs) in enumerate(self.val_inputs()):
            g = torch.Generator("cpu").manual_seed(draw_seed(self.config.seed, i, 13))
            idx = torch.tensor(VAL_SIGMA_INDICES)
            rep = _repeat(inputs, len(idx))
            losses.append(float(self.loss_on(rep, g, idx, ones)))
        metrics = {"val_loss": float(np.mean(losses))}
        if self.config.val_render:
            metrics.update(self._render(step))
        self.model.train()
        return metrics

    def _render(self, step: int) -> dict:
        from ..diffusion.conditioning import initial_noise
        from ..diffusion.encode import to_uint8_video, vae_decode
        from ..diffusion.sampling import make_scheduler
        from ..io.video import write_video

        c = self.config
        psnrs = []
        folder = self.out / "validation" / f"step-{step:06d}"
        for i, (name, item, inputs) in enumerate(self.val_inputs()):
            latents = initial_noise(c.seed + i, tuple(inputs.latents.shape)).to(self.device)
            scheduler = make_scheduler(c.val_steps, c.shift, device=self.device)
            cond = (inputs.image, inputs.video_latents, inputs.mask_latents)
            for t in scheduler.timesteps:
                ts = t.expand(1).to(self.device)
                with self.acc.autocast():
                    v = self.model(latents, inputs.y, ts, self.val_text_pos, *cond).float()
                    if c.val_cfg != 1.0:
                        v_neg = self.model(latents, inputs.y, ts, self.val_text_neg, *cond).float()
                        v = v_neg + c.val_cfg * (v - v_neg)
                latents = scheduler.step(v, t, latents, return_dict=False)[0]
            video = to_uint8_video(vae_decode(self.vae, latents, self.device))
            target, mask = item["target"], item["mask"]
            err = (video.astype(np.float64) - target) ** 2
            unknown = ~mask
            mse = err[unknown].mean() if unknown.any() else err.mean()
            psnrs.append(10 * math.log10(255.0**2 / max(mse, 1e-10)))
            if self.acc.is_main_process:
                write_video(folder / f"{name}.mp4", np.concatenate([item["condition"], video, target], axis=2), 8.0)
        return {"val_psnr_unknown": float(np.mean(psnrs))}


def _repeat(inputs: ModelInputs, n: int) -> ModelInputs:
    return ModelInputs(*(x.expand(n, *x.shape[1:]) for x in (inputs.latents, inputs.y, inputs.image,
                                                              inputs.video_latents, inputs.mask_latents)))


def _metrics_step(line: str) -> float:
    """The step of one metrics.jsonl line; a torn or foreign line counts as past every step (dropped)."""
    from ..errors import Ex4dError
    from ..io.json_input import parse_json

    try:
        rec = parse_json(line, "metrics line")
        step = rec.get("step", 0) if isinstance(rec, dict) else None
        return step if isinstance(step, (int, float)) and not isinstance(step, bool) else float("inf")
    except Ex4dError:
        return float("inf")


def train(config: TrainConfig, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Train the adapter as ``config`` says; ``resume``: None (fresh), ``"auto"`` (newest checkpoint) or a folder."""
    from ..diffusion.checkpoint import export_original_ckpt, save_adapter_safetensors
    from .model import export_adapter

    resume_from = check_train_inputs(config, resume)  # every input, before accelerate and 14B of weights
    run = _Run(config, resume_from, progress)
    acc, c, out = run.acc, run.config, run.out
    result = TrainResult()
    start = 0
    if run.resume_from is not None:
        state = load_checkpoint(run.resume_from, acc, run.model, run.optimizer, run.scheduler)
        start = int(state["step"])
        result.resumed_from = str(run.resume_from)
    if acc.is_main_process:
        atomic_write_json(out / "config.json", {"train": c.to_dict(), "adapter": dataclasses.asdict(run.spec),
                                               "trainable_parameters": run.n_trainable})
        metrics_path = out / "logs" / "metrics.jsonl"
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        kept = [ln for ln in (metrics_path.read_text().splitlines() if metrics_path.exists() else [])
                if _metrics_step(ln) <= start]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))
        metrics_file = open(metrics_path, "a")
    if acc.trackers == [] and acc.log_with:
        acc.init_trackers("ex4d", config={k: v for k, v in c.to_dict().items() if isinstance(v, (int, float, str, bool))})

    def export(sd, folder):
        save_adapter_safetensors(export_adapter(sd, run.spec, f"ex4d train step {step}"), folder / "adapter.safetensors")

    per_step = c.batch_size * c.grad_accum
    batches = run.loader(start * per_step)
    stop = c.stop_at or c.max_steps
    bar = None
    if progress and acc.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=start, desc="train", unit="step")
    run.model.train()
    step = start
    t_last = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while step < stop:
        losses, grad_norm = [], None
        for micro in range(c.grad_accum):
            inputs = run.encode(next(batches))
            with acc.accumulate(run.model):
                loss = run.loss_on(inputs, run.step_generator(step, micro))
                acc.backward(loss)
                losses.append(loss.detach())
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(run.model.parameters(), c.max_grad_norm) if c.max_grad_norm else None
                    run.optimizer.step()
                    run.scheduler.step()
                    run.optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_mean = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
        now = time.perf_counter()
        rec = {"step": step, "loss": loss_mean, "lr": run.scheduler.get_last_lr()[0],
               "samples_per_s": per_step * acc.num_processes / max(now - t_last, 1e-9)}
        if grad_norm is not None:
            rec["grad_norm"] = float(grad_norm)
        if torch.cuda.is_available():
            rec["gpu_mem_gib"] = torch.cuda.max_memory_allocated() / GIB
        t_last = now
        if c.validate_every and step % c.validate_every == 0 or step == c.max_steps:
            val = run.validate(step)
            if val:
                rec.update(val)
                result.validation.append({"step": step, **val})
        if acc.is_main_process:
            result.history.append(rec)
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{rec['lr']:.2e}")
        if step % c.log_every == 0 or step == stop or "val_loss" in rec:
            acc.log({k: v for k, v in rec.items() if k != "step"}, step=step)
        if (c.checkpoint_every and step % c.checkpoint_every == 0) or step == stop:
            state = {"step": step, "samples_seen": step * per_step, "config": c.to_dict()}
            save_checkpoint(out / "checkpoints" / f"step-{step:06d}", acc, run.model, run.optimizer, run.scheduler,
                            state, export)
            if acc.is_main_process:
                rotate_checkpoints(out, c.keep_checkpoints)
    if bar is not None:
        bar.close()
    result.step = step
    result.main_process = acc.is_main_process
    if step == c.max_steps:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(run.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                      ignore_frozen_params=True))
        if acc.is_main_process:
            weights = export_adapter(sd, run.spec, f"ex4d train {out} step {step}")
            result.adapter, result.original_ckpt = out / "adapter.safetensors", out / "ex4d.ckpt"
            save_adapter_safetensors(weights, result.adapter)
            export_original_ckpt(weights, result.original_ckpt)
    if acc.is_main_process:
        metrics_file.close()
    acc.end_training()
    return result
