"""Sampling presets for step-distillation LoRAs (``ex4d generate --preset NAME --lora FILE``).

A preset sets ``--steps``, ``--cfg``, ``--shift`` and ``--sampler`` to what the LoRA's authors publish
(flags given on the command line still win). The LoRA itself is the user's file, given with ``--lora``:
the preset is refused without one (the base model at 4 steps without CFG gives a blurred video).
Both LoRAs below were trained on the plain Wan2.1 model, not with the EX-4D adapter: how well they
combine with it could not be checked here (no real weights); see the README's "Time to video".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import check

__all__ = ["Preset", "PRESETS", "preset_help"]


@dataclass(frozen=True)
class Preset:
    """Published sampling settings of one distillation LoRA."""

    steps: int
    cfg: float
    shift: float
    sampler: str
    lora_scale: float
    lora: str
    source: str


PRESETS: dict[str, Preset] = {
    "lightx2v-4step": Preset(
        steps=4, cfg=1.0, shift=5.0, sampler="lcm", lora_scale=1.0,
        lora="Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors (lightx2v's Wan2.1-I2V-14B-480P "
             "step + CFG distillation LoRA)",
        source="lightx2v's configs/distill/wan_i2v_distill_4step_cfg_lora.json: 4 steps on timesteps "
               "[1000, 750, 500, 250] with shift 5 (= our 4-step schedule), enable_cfg false, strength 1.0, "
               "sampled by their WanStepDistillScheduler (predict x0, re-noise: our --sampler lcm)"),
    "causvid": Preset(
        steps=6, cfg=1.0, shift=5.0, sampler="euler", lora_scale=0.5,
        lora="Wan21_CausVid_14B_T2V_lora_rank32.safetensors (Kijai's LoRA extracted from CausVid, a T2V model)",
        source="its published notes: CFG 1, strength about 0.5 for 4-9 steps (more steps, more motion), "
               "or 0.3 for about 12 steps; use --lora FILE:0.5"),
}


def preset_help() -> str:
    """One line per preset for ``--help``."""
    return "\n".join(f"  {name:15s} --steps {p.steps} --cfg {p.cfg:g} --shift {p.shift:g} --sampler {p.sampler}; "
                     f"--lora FILE:{p.lora_scale:g} with {p.lora}" for name, p in PRESETS.items())


def get_preset(name: str) -> Preset:
    check(name in PRESETS, f"unknown --preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
