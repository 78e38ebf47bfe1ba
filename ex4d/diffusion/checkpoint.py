"""EX-4D adapter weights: the released ``ex4d.ckpt``, our safetensors format, and export back.

The released checkpoint is one flat torch state dict (loaded with
``weights_only=True``) holding, for a Wan2.1-14B DiT (L = 40 blocks,
D = 5120, F = 13824, r = 16) and the camera encoder (z = 16, H = 1024):

==========================================================  ===============
key                                                         shape
==========================================================  ===============
``blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}.lora_A.default.weight``  [r, D]
``blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}.lora_B.default.weight``  [D, r]
``blocks.{i}.ffn.0.lora_A.default.weight`` / ``lora_B``        [r, D] / [F, r]
``blocks.{i}.ffn.2.lora_A.default.weight`` / ``lora_B``        [r, F] / [D, r]
``latent_encoder.0.weight`` / ``.bias``                        [H, 2z, 1, 1, 1] / [H]
``latent_encoder.{2,4}.weight`` / ``.bias``                    [H, H, 1, 1, 1] / [H]
``latent_patch_embedding.weight`` / ``.bias``                  [D, H, 1, 2, 2] / [D]
==========================================================  ===============

The original loads it with ``strict=False`` and so silently loads nothing on
a key mismatch; :func:`load_adapter` instead checks every key and shape and
raises :class:`Ex4dError` listing what is missing, unexpected or mis-shaped.
LoRA alpha is not stored there; the original uses alpha = 16.

Our own format (``.safetensors``): keys ``encoder.<name>`` and
``lora.blocks.{i}.<diffusers layer>.lora_{A,B}`` with metadata
``format=ex4d-adapter``, ``format_version``, ``rank``, ``alpha``, ``targets``
(JSON), and the model dims ``num_layers``, ``dim``, ``ffn_dim``, ``z_dim``,
``hidden``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import Ex4dError, check
from ..io.atomic import atomic_path
from .adapter import DEFAULT_ADAPTER_NAME, LORA_TARGETS, ORIGINAL_TO_DIFFUSERS, lora_layers

__all__ = [
    "AdapterSpec",
    "AdapterWeights",
    "original_key_shapes",
    "load_adapter",
    "load_original_ckpt",
    "load_adapter_safetensors",
    "save_adapter_safetensors",
    "export_original_ckpt",
    "adapter_from_original_state_dict",
    "apply_adapter_weights",
]

FORMAT = "ex4d-adapter"
FORMAT_VERSION = "1"
ENCODER_KEYS = ("latent_encoder.0", "latent_encoder.2", "latent_encoder.4", "latent_patch_embedding")
_ORIGINAL_LORA_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.lora_([AB])\.default\.weight$")
_MAX_LISTED = 12


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


@dataclass
class AdapterWeights:
    """Adapter tensors in our canonical naming (float32, CPU).

    ``encoder``: CamVidEncoder state dict (``latent_encoder.0.weight`` …).
    ``lora``: ``blocks.{i}.{diffusers layer}.lora_A`` ``[r, in]`` and ``.lora_B`` ``[out, r]``.
    """

    spec: AdapterSpec
    encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""


# --------------------------------------------------------------------------- expected layout


def _layer_io(spec: AdapterSpec, target: str) -> tuple[int, int]:
    """(in, out) features of a LoRA target layer (diffusers name)."""
    if target == "ffn.net.0.proj":
        return spec.dim, spec.ffn_dim
    if target == "ffn.net.2":
        return spec.ffn_dim, spec.dim
    return spec.dim, spec.dim


def _encoder_shapes(spec: AdapterSpec) -> dict[str, tuple[int, ...]]:
    h, d = spec.hidden, spec.dim
    return {
        "latent_encoder.0.weight": (h, 2 * spec.z_dim, 1, 1, 1), "latent_encoder.0.bias": (h,),
        "latent_encoder.2.weight": (h, h, 1, 1, 1), "latent_encoder.2.bias": (h,),
        "latent_encoder.4.weight": (h, h, 1, 1, 1), "latent_encoder.4.bias": (h,),
        "latent_patch_embedding.weight": (d, h, *spec.patch_size), "latent_patch_embedding.bias": (d,),
    }


def _canonical_lora_shapes(spec: AdapterSpec) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(spec.num_layers):
        for target in LORA_TARGETS:
            fin, fout = _layer_io(spec, target)
            shapes[f"blocks.{i}.{target}.lora_A"] = (spec.rank, fin)
            shapes[f"blocks.{i}.{target}.lora_B"] = (fout, spec.rank)
    return shapes


def original_key_shapes(spec: AdapterSpec = AdapterSpec()) -> dict[str, tuple[int, ...]]:
    """Every key of an original-layout ``ex4d.ckpt`` for ``spec`` → its shape."""
    shapes = {}
    for i in range(spec.num_layers):
        for orig, target in ORIGINAL_TO_DIFFUSERS.items():
            fin, fout = _layer_io(spec, target)
            shapes[f"blocks.{i}.{orig}.lora_A.default.weight"] = (spec.rank, fin)
            shapes[f"blocks.{i}.{orig}.lora_B.default.weight"] = (fout, spec.rank)
    shapes.update(_encoder_shapes(spec))
    return shapes


# --------------------------------------------------------------------------- validation


def _check_keys(found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str,
                spec: AdapterSpec, allow_unexpected: bool = False) -> None:
    """Raise one Ex4dError listing missing, unexpected and mis-shaped keys (if any)."""
    missing = [k for k in expected if k not in found]
    unexpected = [] if allow_unexpected else [k for k in found if k not in expected]
    misshaped = [f"{k}: {tuple(found[k].shape)} (expected {expected[k]})"
                 for k in expected if k in found and tuple(found[k].shape) != expected[k]]
    if not (missing or unexpected or misshaped):
        return
    parts = [f"{source} is not a complete EX-4D adapter for {spec.describe()}:"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED]) + (f", … ({len(items) - _MAX_LISTED} more)"
                                                       if len(items) > _MAX_LISTED else "")
            parts.append(f"  {len(items)} {label}: {shown}")
    parts.append(f"  ({len(found)} keys found, {len(expected)} expected). Use the released EX-4D ex4d.ckpt "
                 f"or a file written by `ex4d convert-adapter`.")
    raise Ex4dError("\n".join(parts))


def _infer_spec(sd: dict[str, torch.Tensor], alpha: float) -> AdapterSpec:
    """Dimensions from an original-layout state dict; falls back to the 14B defaults where a key is absent."""
    base = AdapterSpec()
    w0 = sd.get("latent_encoder.0.weight")
    wp = sd.get("latent_patch_embedding.weight")
    qa = sd.get("blocks.0.self_attn.q.lora_A.default.weight")
    fb = sd.get("blocks.0.ffn.0.lora_B.default.weight")
    blocks = [int(m.group(1)) for k in sd if (m := _ORIGINAL_LORA_RE.match(k))]
    return AdapterSpec(
        num_layers=max(blocks) + 1 if blocks else base.num_layers,
        dim=int(wp.shape[0]) if wp is not None and wp.ndim == 5 else (int(qa.shape[1]) if qa is not None and qa.ndim == 2 else base.dim),
        ffn_dim=int(fb.shape[0]) if fb is not None and fb.ndim == 2 else base.ffn_dim,
        z_dim=int(w0.shape[1]) // 2 if w0 is not None and w0.ndim == 5 else base.z_dim,
        hidden=int(w0.shape[0]) if w0 is not None and w0.ndim == 5 else base.hidden,
        rank=int(qa.shape[0]) if qa is not None and qa.ndim == 2 else base.rank,
        alpha=float(alpha),
        patch_size=tuple(int(s) for s in wp.shape[2:]) if wp is not None and wp.ndim == 5 else base.patch_size,
    )


def _check_spec(spec: AdapterSpec, expected: AdapterSpec | None, source: str) -> None:
    if expected is None:
        return
    diffs = [f"{name} {getattr(spec, name)} (model: {getattr(expected, name)})"
             for name in ("num_layers", "dim", "ffn_dim", "z_dim", "patch_size")
             if getattr(spec, name) != getattr(expected, name)]
    check(not diffs, f"{source} was made for a different model: " + ", ".join(diffs)
          + ". EX-4D's released adapter fits Wan2.1-I2V-14B-480P.")


# --------------------------------------------------------------------------- original layout


def _unwrap(obj, source: str) -> dict[str, torch.Tensor]:
    """The flat tensor dict inside a loaded checkpoint (accepts a ``{"state_dict": {...}}`` wrapper)."""
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "module", "model"):
        obj = next(iter(obj.values()))
    check(isinstance(obj, dict) and all(isinstance(k, str) for k in obj),
          f"{source} does not hold a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    check(not bad, f"{source}: entries that are not tensors: {bad[:_MAX_LISTED]}")
    return obj


def adapter_from_original_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict",
                                     expected: AdapterSpec | None = None, alpha: float = 16.0,
                                     allow_unexpected: bool = False) -> AdapterWeights:
    """Validated :class:`AdapterWeights` from an original-layout state dict (see module docstring)."""
    spec = _infer_spec(sd, alpha)
    _check_keys(sd, original_key_shapes(spec), source, spec, allow_unexpected)
    _check_spec(spec, expected, source)
    encoder = {k: sd[k].detach().to("cpu", torch.float32) for k in _encoder_shapes(spec)}
    lora = {}
    for i in range(spec.num_layers):
        for orig, target in ORIGINAL_TO_DIFFUSERS.items():
            for ab in "AB":
                lora[f"blocks.{i}.{target}.lora_{ab}"] = sd[f"blocks.{i}.{orig}.lora_{ab}.default.weight"].detach().to(
                    "cpu", torch.float32)
    return AdapterWeights(spec=spec, encoder=encoder, lora=lora, source=source)


def load_original_ckpt(path: str | os.PathLike, expected: AdapterSpec | None = None, alpha: float = 16.0,
                       allow_unexpected: bool = False) -> AdapterWeights:
    """Load the released ``ex4d.ckpt`` (``torch.load(weights_only=True)``), checking every key and shape."""
    path = Path(path)
    _check_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with non-tensor objects, zip error …
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Ex4dError(f"cannot read {path} as a torch checkpoint with weights_only=True: {first}") from None
    return adapter_from_original_state_dict(_unwrap(obj, str(path)), str(path), expected, alpha, allow_unexpected)


def export_original_ckpt(weights: AdapterWeights, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
    """Write ``weights`` as an original-layout torch state dict (loadable by the original EX-4D code)."""
    sd = {k: v.to(dtype).contiguous() for k, v in weights.encoder.items()}
    for i in range(weights.spec.num_layers):
        for orig, target in ORIGINAL_TO_DIFFUSERS.items():
            for ab in "AB":
                sd[f"blocks.{i}.{orig}.lora_{ab}.default.weight"] = weights.lora[f"blocks.{i}.{target}.lora_{ab}"].to(
                    dtype).contiguous()
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)


# --------------------------------------------------------------------------- our safetensors format


def save_adapter_safetensors(weights: AdapterWeights, path: str | os.PathLike,
                             dtype: torch.dtype = torch.float32) -> None:
    """Write ``weights`` in our safetensors format with its dims in the metadata (atomic)."""
    from safetensors.torch import save_file

    s = weights.spec
    tensors = {f"encoder.{k}": v.to(dtype).contiguous() for k, v in weights.encoder.items()}
    tensors.update({f"lora.{k}": v.to(dtype).contiguous() for k, v in weights.lora.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "rank": str(s.rank), "alpha": repr(float(s.alpha)),
            "targets": json.dumps(list(LORA_TARGETS)), "original_targets": json.dumps(list(ORIGINAL_TO_DIFFUSERS)),
            "num_layers": str(s.num_layers), "dim": str(s.dim), "ffn_dim": str(s.ffn_dim), "z_dim": str(s.z_dim),
            "hidden": str(s.hidden), "patch_size": json.dumps(list(s.patch_size)),
            "source": str(weights.source)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_adapter_safetensors(path: str | os.PathLike, expected: AdapterSpec | None = None) -> AdapterWeights:
    """Load our safetensors format, checking metadata, every key and shape."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise Ex4dError(f"cannot read {path} as safetensors: {e}") from None
    check(meta.get("format") == FORMAT,
          f"{path} is a safetensors file but not an ex4d adapter (metadata format={meta.get('format')!r}); "
          f"convert the released ex4d.ckpt with `ex4d convert-adapter`")
    check(meta.get("format_version") == FORMAT_VERSION,
          f"{path} has adapter format version {meta.get('format_version')!r}; this ex4d reads {FORMAT_VERSION!r}")
    targets = json.loads(meta.get("targets", "[]"))
    check(tuple(targets) == LORA_TARGETS, f"{path} targets LoRA layers {targets}, expected {list(LORA_TARGETS)}")
    try:
        spec = AdapterSpec(num_layers=int(meta["num_layers"]), dim=int(meta["dim"]), ffn_dim=int(meta["ffn_dim"]),
                           z_dim=int(meta["z_dim"]), hidden=int(meta["hidden"]), rank=int(meta["rank"]),
                           alpha=float(meta["alpha"]), patch_size=tuple(json.loads(meta["patch_size"])))
    except (KeyError, ValueError) as e:
        raise Ex4dError(f"{path}: adapter metadata incomplete or malformed ({e})") from None
    expected_shapes = {f"encoder.{k}": v for k, v in _encoder_shapes(spec).items()}
    expected_shapes.update({f"lora.{k}": v for k, v in _canonical_lora_shapes(spec).items()})
    _check_keys(tensors, expected_shapes, str(path), spec)
    _check_spec(spec, expected, str(path))
    return AdapterWeights(
        spec=spec,
        encoder={k[len("encoder."):]: v.float() for k, v in tensors.items() if k.startswith("encoder.")},
        lora={k[len("lora."):]: v.float() for k, v in tensors.items() if k.startswith("lora.")},
        source=str(path))


def load_adapter(path: str | os.PathLike, expected: AdapterSpec | None = None,
                 allow_unexpected: bool = False) -> AdapterWeights:
    """Load an adapter by file type: ``.safetensors`` = ours, anything else = the original torch checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_adapter_safetensors(path, expected)
    return load_original_ckpt(path, expected, allow_unexpected=allow_unexpected)


def _check_file(path: Path) -> None:
    check(path.exists(), f"adapter file {path} does not exist (expected the EX-4D ex4d.ckpt or an "
                         f"ex4d .safetensors adapter)")
    check(path.is_file(), f"adapter path {path} is not a file")


# --------------------------------------------------------------------------- into modules


@torch.no_grad()
def apply_adapter_weights(weights: AdapterWeights, transformer: nn.Module | None = None,
                          encoder: nn.Module | None = None, adapter_name: str = DEFAULT_ADAPTER_NAME) -> None:
    """Copy ``weights`` into a peft-wrapped ``transformer`` (see ``add_lora``) and/or a ``CamVidEncoder``.

    Every LoRA tensor must find its layer and shape; Ex4dError otherwise.
    """
    if encoder is not None:
        missing, unexpected = encoder.load_state_dict(
            {k: v.to(next(encoder.parameters()).dtype) for k, v in weights.encoder.items()}, strict=False)
        check(not missing and not unexpected,
              f"camera encoder weights do not fit: missing {missing}, unexpected {unexpected}")
    if transformer is None:
        return
    layers = lora_layers(transformer)
    check(layers, "the transformer has no LoRA layers; call ex4d.diffusion.adapter.add_lora first")
    used = set()
    for key, value in weights.lora.items():
        name, _, ab = key.rpartition(".")
        layer = layers.get(name)
        check(layer is not None, f"LoRA weight {key}: the model has no LoRA layer {name}")
        param = (layer.lora_A if ab == "lora_A" else layer.lora_B)[adapter_name].weight
        check(tuple(param.shape) == tuple(value.shape),
              f"LoRA weight {key} has shape {tuple(value.shape)}, the model's is {tuple(param.shape)}")
        param.copy_(value.to(param.dtype))
        layer.scaling[adapter_name] = weights.spec.alpha / weights.spec.rank
        used.add(name)
    unused = sorted(set(layers) - used)
    check(not unused, f"{len(unused)} LoRA layers got no weights, e.g. {unused[:5]}")
