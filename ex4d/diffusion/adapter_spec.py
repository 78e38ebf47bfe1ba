"""An adapter's dimensions (:class:`AdapterSpec`) and the checks an adapter file must pass before it is used.

Nothing in an adapter file is trusted: every metadata field of our
``.safetensors`` format is parsed strictly (ASCII integers, finite floats,
bounded JSON) and range-checked, the dimensions are checked against each
other and against the tensors the file holds, and every tensor must be a
floating-point array of finite values. Each failure is one
:class:`~ex4d.errors.Ex4dError` line naming the file, the field, its value
and what is accepted, so a malformed adapter never runs (``alpha = nan``
would otherwise give an all-black video) and never allocates from a size it
declares (``num_layers = 100000000``).

Metadata of our format (all values are strings, as safetensors stores them):

======================  =============================================  ====================================
field                   accepted                                       meaning
======================  =============================================  ====================================
``format``              ``ex4d-adapter``
``format_version``      ``1``
``rank``                integer 1..4096, ≤ ``dim`` and ``ffn_dim``         LoRA rank r
``alpha``               finite number in (0, 1e6]                      LoRA alpha (scaling = alpha / r)
``targets``             JSON list of exactly the ten LoRA layers       diffusers layer names
``original_targets``    (optional) JSON list of the original names
``num_layers``          integer 1..1024                                DiT blocks
``dim``, ``ffn_dim``    integers 1..131072                             DiT width D, feed-forward width F
``z_dim``               integer 1..1024                                VAE latent channels z
``hidden``              integer 1..131072                              camera encoder width H
``patch_size``          JSON list of 3 integers 1..16                  DiT patch size (t, h, w)
``source``              any text (shown, never used)
======================  =============================================  ====================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import Ex4dError, check

__all__ = [
    "LORA_TARGETS",
    "TARGET_GROUPS",
    "resolve_targets",
    "ORIGINAL_TO_DIFFUSERS",
    "AdapterSpec",
    "LIMITS",
    "spec_from_metadata",
    "check_block_indices",
    "check_tensor_dtype",
    "check_finite",
    "FLOAT_DTYPES",
]

# Original (DiffSynth WanModel) layer name → diffusers WanTransformer3DModel layer name, inside blocks.{i}.
ORIGINAL_TO_DIFFUSERS: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
LORA_TARGETS: tuple[str, ...] = tuple(ORIGINAL_TO_DIFFUSERS.values())

#: Named groups of LoRA target layers (``--lora-targets``).
TARGET_GROUPS = {
    "all": LORA_TARGETS,
    "self_attn": tuple(t for t in LORA_TARGETS if t.startswith("attn1")),
    "cross_attn": tuple(t for t in LORA_TARGETS if t.startswith("attn2")),
    "attn": tuple(t for t in LORA_TARGETS if t.startswith("attn")),
    "ffn": tuple(t for t in LORA_TARGETS if t.startswith("ffn")),
}


def resolve_targets(names) -> tuple[str, ...]:
    """Diffusers layer names (in :data:`LORA_TARGETS` order) for target ``names`` (list or comma string)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = set()
    for n in names:
        if n in TARGET_GROUPS:
            out.update(TARGET_GROUPS[n])
        elif n in ORIGINAL_TO_DIFFUSERS:
            out.add(ORIGINAL_TO_DIFFUSERS[n])
        elif n in LORA_TARGETS:
            out.add(n)
        else:
            raise Ex4dError(f"unknown LoRA target {n!r}; use groups {sorted(TARGET_GROUPS)} or layer names "
                               f"{list(ORIGINAL_TO_DIFFUSERS)} (original) / {list(LORA_TARGETS)} (diffusers)")
    check(out, "no LoRA targets given")
    return tuple(t for t in LORA_TARGETS if t in out)


#: Inclusive bounds of each dimension (generous: Wan2.1-14B is 40 / 5120 / 13824 / 16 / 1024 / 16).
LIMITS = {"num_layers": (1, 1024), "dim": (1, 1 << 17), "ffn_dim": (1, 1 << 17), "z_dim": (1, 1024),
          "hidden": (1, 1 << 17), "rank": (1, 4096), "patch": (1, 16)}
ALPHA_MAX = 1e6
#: Tensor dtypes an adapter may store (by torch name and by the safetensors header's code).
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_INT_RE = re.compile(r"^[0-9]{1,12}$")
_FLOAT_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$")
_MAX_JSON_CHARS = 4096
_MAX_SHOWN = 60


def _show(value) -> str:
    """``repr`` of a value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…'"


@dataclass(frozen=True)
class AdapterSpec:
    """Dimensions an adapter was trained for (defaults: EX-4D on Wan2.1-I2V-14B)."""

    num_layers: int = 40
    dim: int = 5120
    ffn_dim: int = 13824
    z_dim: int = 16
    hidden: int = 1024
    rank: int = 16
    alpha: float = 16.0
    patch_size: tuple[int, int, int] = (1, 2, 2)

    def describe(self) -> str:
        """One line: ``40 blocks, width 5120, ffn 13824, z 16, hidden 1024, rank 16, alpha 16``."""
        return (f"{self.num_layers} blocks, width {self.dim}, ffn {self.ffn_dim}, z {self.z_dim}, "
                f"hidden {self.hidden}, rank {self.rank}, alpha {self.alpha:g}")

    def validate(self, source: str = "adapter") -> "AdapterSpec":
        """Raise :class:`Ex4dError` naming the first field out of range (types, bounds, consistency); returns self."""
        for name in ("num_layers", "dim", "ffn_dim", "z_dim", "hidden", "rank"):
            v = getattr(self, name)
            lo, hi = LIMITS[name]
            check(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                  f"{source}: {name} = {_show(v)}; expected an integer in {lo}..{hi}")
        a = self.alpha
        check(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and 0 < a <= ALPHA_MAX,
              f"{source}: alpha = {_show(a)}; expected a finite number in (0, {ALPHA_MAX:g}]")
        p = self.patch_size
        lo, hi = LIMITS["patch"]
        check(isinstance(p, tuple) and len(p) == 3
              and all(isinstance(s, int) and not isinstance(s, bool) and lo <= s <= hi for s in p),
              f"{source}: patch_size = {_show(p)}; expected 3 integers in {lo}..{hi} (Wan: (1, 2, 2))")
        check(self.rank <= min(self.dim, self.ffn_dim),
              f"{source}: rank = {self.rank} exceeds the layer width (dim {self.dim}, ffn_dim {self.ffn_dim}); "
              f"a LoRA rank must not exceed the width of its layers")
        return self


# --------------------------------------------------------------------------- metadata


def _meta_int(meta: dict, name: str, source: str) -> int:
    raw = meta.get(name)
    check(raw is not None, f"{source}: adapter metadata has no {name!r}; expected an integer "
                           f"(write the file with `ex4d convert-adapter`)")
    lo, hi = LIMITS[name]
    check(isinstance(raw, str) and bool(_INT_RE.match(raw)) and lo <= int(raw) <= hi,
          f"{source}: metadata {name} = {_show(raw)}; expected an integer in {lo}..{hi}")
    return int(raw)


def _meta_json(meta: dict, name: str, source: str, expected: str):
    from ..io.json_input import parse_json

    raw = meta.get(name)
    check(isinstance(raw, str), f"{source}: adapter metadata has no {name!r}; expected {expected}")
    try:
        return parse_json(raw, f"{source}: metadata {name}", max_bytes=_MAX_JSON_CHARS, max_depth=4)
    except Ex4dError as e:
        raise Ex4dError(f"{e}; expected {expected}") from None


def _meta_names(meta: dict, name: str, source: str, wanted: tuple[str, ...]) -> None:
    what = f"a JSON list of the {len(wanted)} names {list(wanted)}"
    v = _meta_json(meta, name, source, what)
    check(isinstance(v, list) and all(isinstance(s, str) for s in v),
          f"{source}: metadata {name} = {_show(meta[name])}; expected {what}")
    check(len(v) == len(set(v)) and set(v) == set(wanted),
          f"{source}: metadata {name} = {_show(meta[name])}; expected {what} (this ex4d trains and loads exactly "
          f"those layers)")


def spec_from_metadata(meta: dict, source: str) -> AdapterSpec:
    """The validated :class:`AdapterSpec` of our safetensors format's metadata (module docstring), or Ex4dError."""

    _meta_names(meta, "targets", source, LORA_TARGETS)
    if "original_targets" in meta:
        _meta_names(meta, "original_targets", source, tuple(ORIGINAL_TO_DIFFUSERS))
    dims = {name: _meta_int(meta, name, source) for name in ("num_layers", "dim", "ffn_dim", "z_dim", "hidden", "rank")}
    raw = meta.get("alpha")
    check(isinstance(raw, str) and bool(_FLOAT_RE.match(raw.strip())),
          f"{source}: metadata alpha = {_show(raw)}; expected a finite number in (0, {ALPHA_MAX:g}]")
    alpha = float(raw)
    patch = _meta_json(meta, "patch_size", source, "a JSON list of 3 integers, e.g. [1, 2, 2]")
    check(isinstance(patch, list) and len(patch) == 3
          and all(isinstance(s, int) and not isinstance(s, bool) for s in patch),
          f"{source}: metadata patch_size = {_show(meta['patch_size'])}; expected a JSON list of 3 integers, "
          f"e.g. [1, 2, 2]")
    return AdapterSpec(alpha=alpha, patch_size=tuple(patch), **dims).validate(f"{source}: metadata")


# --------------------------------------------------------------------------- tensors


def check_block_indices(indices: set[int], source: str) -> int:
    """Number of DiT blocks named by LoRA keys whose block indices are ``indices`` (must be 0..N−1, N ≤ 1024)."""
    lo, hi = LIMITS["num_layers"]
    if not indices:
        return 0
    top = max(indices)
    check(top < hi, f"{source}: LoRA keys name block {top}; expected blocks 0..N-1 with N ≤ {hi}")
    gaps = sorted(set(range(top + 1)) - indices)
    check(not gaps, f"{source}: LoRA keys name blocks 0..{top} but none of block(s) "
                    f"{', '.join(map(str, gaps[:8]))}{' …' if len(gaps) > 8 else ''}; expected every block "
                    f"0..{top} (the file is truncated or not an EX-4D adapter)")
    return top + 1


def check_tensor_dtype(key: str, dtype, source: str) -> None:
    """Ex4dError unless ``dtype`` (a torch dtype or a safetensors code such as ``"F32"``) is a float type we read."""
    name = _SAFETENSORS_DTYPES.get(dtype) if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    check(name in FLOAT_DTYPES, f"{source}: tensor {key} has dtype {dtype}; expected one of "
                                f"{', '.join(FLOAT_DTYPES)} (adapter weights are floating point)")


def check_finite(key: str, tensor, source: str, what: str = "") -> None:
    """Ex4dError if ``tensor`` holds NaN or ±inf (``what``: an extra clause, e.g. ``" after casting to float16"``)."""
    import torch

    bad = int((~torch.isfinite(tensor)).sum())
    check(bad == 0, f"{source}: tensor {key} holds {bad} non-finite value(s) (NaN or inf){what} of {tensor.numel()}; "
                    f"expected finite weights (the file is corrupt, or training diverged)")
