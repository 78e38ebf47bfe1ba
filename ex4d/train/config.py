"""Settings of ``ex4d train`` in one frozen dataclass (no torch import), saved with every checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..diffusion.adapter_spec import LORA_TARGETS, resolve_targets
from ..diffusion.config import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT
from ..errors import check

__all__ = ["TrainConfig", "LR_SCHEDULES", "MIXED_PRECISION", "RESUME_FIELDS"]

LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("bf16", "fp16", "no")
# Fields a resumed run must share with the checkpoint (they decide the model, the data order or the objective).
RESUME_FIELDS = ("rank", "alpha", "lora_targets", "hidden", "seed", "batch_size", "grad_accum", "shift",
                 "weighting", "erosion", "num_frames", "val_clips", "max_steps", "lr_schedule", "warmup_steps",
                 "learning_rate")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the data and the Wan weights.

    ======================  ==============  ========================================================
    field                   default         meaning
    ======================  ==============  ========================================================
    ``data``                (required)      prepared dataset folder (``ex4d prepare --out``)
    ``wan``                 (required)      Wan2.1-I2V folder (diffusers or original layout)
    ``out``                 (required)      run folder: checkpoints, logs, validation, exports
    ``wan_encoders``        None            diffusers folder for text/image encoders (original ``wan``)
    ``val_data``            None            held-out dataset; None = hold out ``val_clips`` of ``data``
    ``val_clips``           2               validation clips (held out of ``data`` when no ``val_data``)
    ``init_adapter``        None            start from this adapter (ex4d.ckpt or ours)
    ``rank``, ``alpha``     16, 16          LoRA (the original's)
    ``lora_targets``        the ten         layers with LoRA (see :mod:`ex4d.train.model`)
    ``hidden``              1024            camera encoder width (the original's)
    ``learning_rate``       1e-4            AdamW learning rate
    ``weight_decay``        0.01            AdamW weight decay
    ``lr_schedule``         "constant"      constant | cosine (to 0 at max_steps), after warmup
    ``warmup_steps``        100             linear warmup
    ``max_grad_norm``       1.0             gradient clipping (0 = off)
    ``max_steps``           10000           optimizer steps of the run
    ``stop_at``             None            stop (with a checkpoint) at this step; resume later
    ``batch_size``          1               clips per process per micro-step
    ``grad_accum``          1               micro-steps per optimizer step
    ``num_frames``          None            frames per clip (4k+1; None = as stored)
    ``erosion``             (2, 8)          per-frame mask erosion kernel range (the original's)
    ``shift``               5.0             σ shift of the training grid (as sampling)
    ``weighting``           "bell"          timestep loss weighting: bell | none
    ``mixed_precision``     "bf16"          bf16 | fp16 | no (accelerate autocast)
    ``weights_dtype``       "bfloat16"      dtype of the frozen Wan weights
    ``gradient_checkpointing`` True         recompute DiT blocks in the backward pass
    ``seed``                0               data order, erosion, noise and timesteps
    ``overfit``             False           debug: the same noise and timesteps at every step (with one
                                            clip the loss must fall towards 0: a wiring check)
    ``cache_latents``       False           keep each clip's encoded inputs in memory (only with
                                            erosion (0, 0): eroded masks differ at every draw)
    ``num_workers``         2               DataLoader worker processes
    ``log_every``           10              console / tensorboard logging period (steps)
    ``checkpoint_every``    500             checkpoint period (steps); 0 = only at the end
    ``keep_checkpoints``    3               newest checkpoints kept
    ``validate_every``      500             validation period (steps); 0 = only at the end
    ``val_render``          True            render held-out clips at validation (else loss only)
    ``val_steps``           25              sampling steps of validation renders
    ``val_cfg``             5.0             CFG of validation renders
    ``prompt``              ""              training prompt (the original: empty)
    ``val_prompt``          camera prompt   validation prompt / negative: the generation defaults
    ``tensorboard``         True            log to tensorboard (needs the tensorboard package)
    ``cpu``                 False           force the CPU (tests, tiny models)
    ======================  ==============  ========================================================
    """

    data: str
    wan: str
    out: str
    wan_encoders: str | None = None
    val_data: str | None = None
    val_clips: int = 2
    init_adapter: str | None = None
    rank: int = 16
    alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    hidden: int = 1024
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    lr_schedule: str = "constant"
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    max_steps: int = 10000
    stop_at: int | None = None
    batch_size: int = 1
    grad_accum: int = 1
    num_frames: int | None = None
    erosion: tuple[int, int] = (2, 8)
    shift: float = 5.0
    weighting: str = "bell"
    mixed_precision: str = "bf16"
    weights_dtype: str = "bfloat16"
    gradient_checkpointing: bool = True
    seed: int = 0
    cache_latents: bool = False
    overfit: bool = False
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    val_render: bool = True
    val_steps: int = 25
    val_cfg: float = 5.0
    prompt: str = ""
    val_prompt: str = DEFAULT_PROMPT
    val_negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    tensorboard: bool = True
    cpu: bool = False

    def __post_init__(self):
        object.__setattr__(self, "lora_targets", resolve_targets(self.lora_targets))
        object.__setattr__(self, "erosion", tuple(int(k) for k in self.erosion))

    def check(self) -> "TrainConfig":
        """Raise :class:`Ex4dError` naming the first bad field; returns ``self``."""
        from .objective import WEIGHTINGS

        for name in ("rank", "hidden", "max_steps", "batch_size", "grad_accum", "log_every", "val_steps"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "checkpoint_every", "validate_every", "num_workers", "val_clips", "seed"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        for name in ("alpha", "learning_rate", "weight_decay", "max_grad_norm", "shift", "val_cfg"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                  f"{name} must be a finite number, got {v!r}")
        check(self.rank <= 4096 and self.hidden <= 1 << 17 and self.alpha <= 1e6,
              f"rank must be <= 4096, hidden <= 131072 and alpha <= 1e6 (what an adapter file may hold), got rank "
              f"{self.rank}, hidden {self.hidden}, alpha {self.alpha}")
        check(self.stop_at is None or isinstance(self.stop_at, int), f"stop_at must be an integer, got {self.stop_at!r}")
        check(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.weight_decay >= 0 and self.max_grad_norm >= 0, "weight_decay and max_grad_norm must be >= 0")
        check(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        check(self.weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        check(self.mixed_precision in MIXED_PRECISION,
              f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        check(self.weights_dtype in ("bfloat16", "float16", "float32"),
              f"weights_dtype must be bfloat16, float16 or float32, got {self.weights_dtype!r}")
        check(self.num_frames is None or (self.num_frames >= 5 and (self.num_frames - 1) % 4 == 0),
              f"num_frames must be 4k+1 (e.g. 49), got {self.num_frames}")
        check(0 <= self.erosion[0] <= self.erosion[1] <= 64, f"erosion must be 0 <= lo <= hi <= 64, got {self.erosion}")
        check(self.shift > 0 and self.val_cfg >= 1, "shift must be > 0 and val_cfg >= 1")
        check(self.stop_at is None or 1 <= self.stop_at <= self.max_steps,
              f"stop_at must be in [1, max_steps={self.max_steps}], got {self.stop_at}")
        check(not (self.cache_latents and self.erosion[1] > 1),
              f"cache_latents needs erosion (0, 0) (eroded masks differ at every draw), got erosion {self.erosion}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["erosion"] = list(self.erosion)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        check(not unknown, f"unknown TrainConfig keys {unknown}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
