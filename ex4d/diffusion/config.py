"""Settings of the diffusion fill stage (``ex4d generate``), in one frozen dataclass.

Light on purpose: no torch, no diffusers. The CLI builds a
:class:`GenerateConfig` from its flags; the library validates it once with
:meth:`GenerateConfig.check` and saves it as JSON next to every output.

Defaults are the original EX-4D ``generate.py`` settings (DESIGN.md,
"Generation"): 25 flow-matching Euler steps, CFG 5, shift 5, seed 0, the
camera-motion prompt and Wan's standard negative prompt, a per-frame mask
erosion with a random kernel of 2–8 px, bf16 weights.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..errors import Ex4dError, check

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_NEGATIVE_PROMPT",
    "MEMORY_MODES",
    "FRAME_POLICIES",
    "DTYPES",
    "GenerateConfig",
    "MODEL_FIELDS",
    "STEP_CACHES",
    "SAMPLERS",
]

DEFAULT_PROMPT = (
    "4K ultra HD, surround motion, realistic tone, panoramic shot, wide-angle view, cinematic quality"
)
# Wan2.1's standard negative prompt (as in the original EX-4D generate.py).
DEFAULT_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)

MEMORY_MODES = ("full", "balanced", "low")
FRAME_POLICIES = ("exact", "trim", "pad")
DTYPES = ("bfloat16", "float16", "float32")
STEP_CACHES = ("none", "first-block")
SAMPLERS = ("euler", "lcm")
ATTENTION_BACKENDS = ("auto", "native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math",
                      "flash", "_flash_3", "sage", "xformers", "flex")

# Fields fixed when the models are loaded (an Ex4dGenerator refuses a per-call
# config that changes them); all other fields may change from call to call.
MODEL_FIELDS = ("dtype", "vae_dtype", "memory", "device", "force_cpu", "merge_lora", "attention_backend",
                "compile", "vae_tiling", "gpu_budget_gib", "step_cache", "step_cache_threshold", "fp8_matmul")


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that decides a generated video, besides the inputs and the weights.

    =====================  ================  ==========================================================
    field                  default           meaning
    =====================  ================  ==========================================================
    ``prompt``             camera prompt     text condition (the original's fixed prompt)
    ``negative_prompt``    Wan's standard    text for the unconditional CFG branch
    ``steps``              25                flow-matching Euler steps
    ``cfg``                5.0               classifier-free guidance scale (1 = no CFG, one forward)
    ``shift``              5.0               sigma shift: s' = shift·s / (1 + (shift−1)·s)
    ``sampler``            "euler"           "euler": flow-matching Euler (the original); "lcm":
                                             predict x0, re-noise to the next sigma (the
                                             sampler of lightx2v's step-distilled Wan2.1;
                                             noise from ``seed + 1``)
    ``seed``               0                 initial noise: ``torch.Generator('cpu').manual_seed(seed)``
    ``erosion``            (2, 8)            per-frame mask erosion kernel, uniform in [lo, hi] px
                                             (inclusive); (0, 0) disables
    ``erosion_seed``       None              seed of the kernel draws; None = ``seed``
    ``frames``             "exact"           T must be 4k+1 ("exact"), or drop trailing frames down to
                                             4k+1 ("trim"), or repeat the last frame up to 4k+1 and
                                             cut the output back to T ("pad")
    ``dtype``              "bfloat16"        weights/compute dtype of DiT, text and image encoders
    ``vae_dtype``          None              VAE dtype; None = ``dtype`` (the original: bf16)
    ``memory``             "full"            full | balanced | low (see ``ex4d.diffusion.memory``)
    ``device``             "auto"            "auto" (CUDA if present, else CPU), "cuda", "cuda:1", "cpu"
    ``force_cpu``          False             allow full-size weights on a CPU (very slow)
    ``merge_lora``         True              fold LoRA into the base weights after loading (faster)
    ``cfg_batch``          True              both CFG branches in one batch-2 forward
    ``attention_backend``  "auto"            diffusers attention backend; "auto" = PyTorch's SDPA choice
    ``compile``            False             ``torch.compile`` of the DiT blocks (CUDA; full, balanced; low with fp8_matmul)
    ``vae_tiling``         None              None = by memory mode (low tiles), True/False
    ``gpu_budget_gib``     None              balanced, low: GPU memory to fill with resident DiT blocks
                                             (None = 22 GiB balanced, 10 GiB low); the others are streamed
    ``step_cache``         "none"            "first-block": diffusers' first-block cache — a step
                                             whose first-block residual changed by less than
                                             ``step_cache_threshold`` (relative mean abs) reuses the
                                             previous step's residual of the other blocks (faster,
                                             changes results; off by default)
    ``step_cache_threshold``  0.05           see ``step_cache``; higher = more steps skipped
    ``fp8_matmul``         False             the DiT blocks' linear layers as fp8 × fp8 matmuls with
                                             row-wise scales (``ex4d.diffusion.fp8``; CUDA capability
                                             8.9+ or CPU; faster, half the weight memory, changes
                                             results slightly; off by default)
    =====================  ================  ==========================================================
    """

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    steps: int = 25
    cfg: float = 5.0
    shift: float = 5.0
    sampler: str = "euler"
    seed: int = 0
    erosion: tuple[int, int] = (2, 8)
    erosion_seed: int | None = None
    frames: str = "exact"
    dtype: str = "bfloat16"
    vae_dtype: str | None = None
    memory: str = "full"
    device: str = "auto"
    force_cpu: bool = False
    merge_lora: bool = True
    cfg_batch: bool = True
    attention_backend: str = "auto"
    compile: bool = False
    vae_tiling: bool | None = None
    gpu_budget_gib: float | None = None
    step_cache: str = "none"
    step_cache_threshold: float = 0.05
    fp8_matmul: bool = False
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes saved with the config

    def check(self) -> "GenerateConfig":
        """Raise :class:`Ex4dError` naming the first bad field; returns ``self`` for chaining."""
        check(isinstance(self.prompt, str), f"prompt must be a string, got {type(self.prompt).__name__}")
        check(isinstance(self.negative_prompt, str),
              f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        check(_is_int(self.steps) and self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")
        check(_is_num(self.cfg) and self.cfg >= 1.0, f"cfg must be a number >= 1 (1 disables guidance), got {self.cfg!r}")
        check(_is_num(self.shift) and self.shift > 0, f"shift must be a number > 0, got {self.shift!r}")
        check(self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        check(_is_int(self.seed) and 0 <= self.seed < 2**63, f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        check(self.erosion_seed is None or (_is_int(self.erosion_seed) and self.erosion_seed >= 0),
              f"erosion_seed must be None or an integer >= 0, got {self.erosion_seed!r}")
        ero = tuple(self.erosion) if isinstance(self.erosion, (tuple, list)) else None
        check(ero is not None and len(ero) == 2 and all(_is_int(k) for k in ero) and 0 <= ero[0] <= ero[1] <= 64,
              f"erosion must be two integers 0 <= lo <= hi <= 64 (kernel sizes in px; 0 0 disables), "
              f"got {self.erosion!r}")
        check(self.frames in FRAME_POLICIES, f"frames must be one of {FRAME_POLICIES}, got {self.frames!r}")
        check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        check(self.vae_dtype is None or self.vae_dtype in DTYPES,
              f"vae_dtype must be None or one of {DTYPES}, got {self.vae_dtype!r}")
        check(self.memory in MEMORY_MODES, f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        check(isinstance(self.device, str) and (self.device in ("auto", "cpu") or self.device.startswith("cuda")),
              f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        check(self.attention_backend in ATTENTION_BACKENDS,
              f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        check(self.gpu_budget_gib is None or (_is_num(self.gpu_budget_gib) and self.gpu_budget_gib > 0),
              f"gpu_budget_gib must be None or a number > 0, got {self.gpu_budget_gib!r}")
        check(self.step_cache in STEP_CACHES, f"step_cache must be one of {STEP_CACHES}, got {self.step_cache!r}")
        check(_is_num(self.step_cache_threshold) and self.step_cache_threshold >= 0,
              f"step_cache_threshold must be a number >= 0, got {self.step_cache_threshold!r}")
        check(isinstance(self.fp8_matmul, bool), f"fp8_matmul must be True or False, got {self.fp8_matmul!r}")
        check(not (self.compile and self.memory == "low" and not self.fp8_matmul),
              "compile (--compile) does not work with memory 'low' (--memory low) alone: its fp8 casting hooks sit "
              "inside the compiled blocks; add --fp8-matmul (fp8 layers, no casting hooks), use --memory full or "
              "balanced with --compile, or drop --compile")
        return self

    @property
    def erosion_kernels(self) -> tuple[int, int]:
        """(lo, hi) kernel range as a tuple of ints."""
        return int(self.erosion[0]), int(self.erosion[1])

    @property
    def erosion_rng_seed(self) -> int:
        """Seed of the per-frame erosion kernel draws."""
        return int(self.seed if self.erosion_seed is None else self.erosion_seed)

    def replace(self, **changes) -> "GenerateConfig":
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as e:
            raise Ex4dError(f"unknown GenerateConfig field: {e}") from None

    def to_json(self) -> dict:
        """JSON-ready dict of all fields (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["erosion"] = list(self.erosion)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "GenerateConfig":
        """Inverse of :meth:`to_json`; unknown keys are an :class:`Ex4dError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        check(not unknown, f"unknown GenerateConfig keys {unknown}; known: {sorted(names)}")
        data = dict(data)
        if "erosion" in data:
            data["erosion"] = tuple(data["erosion"])
        return cls(**data)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
