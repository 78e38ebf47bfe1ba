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
from .adapter_spec import AdapterSpec, check_block_indices, check_finite, check_tensor_dtype, spec_from_metadata

__all__ = [
    "AdapterSpec",
    "AdapterWeights",
    "original_key_shapes",
    "canonical_lora_shapes",
    "encoder_shapes",
    "load_adapter",
    "load_original_ckpt",
    "load_adapter_safetensors",
    "save_adapter_safetensors",
    "export_original_ckpt",
    "adapter_from_original_state_dict",
    "apply_adapter_weights",
    "inspect_adapter",
    "check_adapter_fits",
]

FORMAT = "ex4d-adapter"
FORMAT_VERSION = "1"
ENCODER_KEYS = ("latent_encoder.0", "latent_encoder.2", "latent_encoder.4", "latent_patch_embedding")
_ORIGINAL_LORA_RE = re.compile(r"^blocks\.([0-9]{1,9})\.(.+)\.lora_([AB])\.default\.weight$")
_MAX_LISTED = 12
_MAX_HEADER = 16 << 20  # bytes of a safetensors JSON header (1024 blocks of LoRA need ~3 MiB)


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


def encoder_shapes(spec: AdapterSpec) -> dict[str, tuple[int, ...]]:
    """Every camera-encoder tensor of an adapter for ``spec`` (``latent_encoder.0.weight`` …) → its shape."""
    h, d = spec.hidden, spec.dim
    return {
        "latent_encoder.0.weight": (h, 2 * spec.z_dim, 1, 1, 1), "latent_encoder.0.bias": (h,),
        "latent_encoder.2.weight": (h, h, 1, 1, 1), "latent_encoder.2.bias": (h,),
        "latent_encoder.4.weight": (h, h, 1, 1, 1), "latent_encoder.4.bias": (h,),
        "latent_patch_embedding.weight": (d, h, *spec.patch_size), "latent_patch_embedding.bias": (d,),
    }


def canonical_lora_shapes(spec: AdapterSpec) -> dict[str, tuple[int, ...]]:
    """Every LoRA tensor of an adapter for ``spec`` in our naming (``blocks.{i}.{layer}.lora_A``) → its shape."""
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
    shapes.update(encoder_shapes(spec))
    return shapes


# --------------------------------------------------------------------------- validation


def _check_keys(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str,
                spec: AdapterSpec, allow_unexpected: bool = False) -> None:
    """Raise one Ex4dError listing missing, unexpected and mis-shaped keys (if any); ``found``: key → shape."""
    missing = [k for k in expected if k not in found]
    unexpected = [] if allow_unexpected else [k for k in found if k not in expected]
    misshaped = [f"{k}: {tuple(found[k])} (expected {expected[k]})"
                 for k in expected if k in found and tuple(found[k]) != expected[k]]
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


def _infer_spec(shapes: dict[str, tuple[int, ...]], alpha: float, source: str) -> AdapterSpec:
    """Validated dims of an original-layout state dict (``key → shape``); the 14B defaults where a key is absent."""
    base = AdapterSpec()
    blocks = {int(m.group(1)) for k in shapes if (m := _ORIGINAL_LORA_RE.match(k))}
    num_layers = check_block_indices(blocks, source) or base.num_layers
    w0 = shapes.get("latent_encoder.0.weight")
    wp = shapes.get("latent_patch_embedding.weight")
    qa = shapes.get("blocks.0.self_attn.q.lora_A.default.weight")
    fb = shapes.get("blocks.0.ffn.0.lora_B.default.weight")
    w0 = w0 if w0 is not None and len(w0) == 5 else None
    wp = wp if wp is not None and len(wp) == 5 else None
    qa = qa if qa is not None and len(qa) == 2 else None
    fb = fb if fb is not None and len(fb) == 2 else None
    spec = AdapterSpec(
        num_layers=num_layers,
        dim=int(wp[0]) if wp else (int(qa[1]) if qa else base.dim),
        ffn_dim=int(fb[0]) if fb else base.ffn_dim,
        z_dim=max(1, int(w0[1]) // 2) if w0 else base.z_dim,
        hidden=int(w0[0]) if w0 else base.hidden,
        rank=int(qa[0]) if qa else base.rank,
        alpha=float(alpha),
        patch_size=tuple(int(s) for s in wp[2:]) if wp else base.patch_size,
    )
    return spec.validate(source)


def check_adapter_fits(spec: AdapterSpec, expected: AdapterSpec | None, source: str) -> None:
    """Ex4dError unless an adapter of ``spec`` fits a model of ``expected``'s dims (None: no check)."""
    if expected is None:
        return
    diffs = [f"{name} {getattr(spec, name)} (model: {getattr(expected, name)})"
             for name in ("num_layers", "dim", "ffn_dim", "z_dim", "patch_size")
             if getattr(spec, name) != getattr(expected, name)]
    check(not diffs, f"{source} was made for a different model: " + ", ".join(diffs)
          + ". EX-4D's released adapter fits Wan2.1-I2V-14B-480P.")


def _checked_float(key: str, tensor: torch.Tensor, source: str) -> torch.Tensor:
    """``tensor`` as float32 on the CPU, after checking its dtype and that every value is finite."""
    check_tensor_dtype(key, tensor.dtype, source)
    out = tensor.detach().to("cpu", torch.float32)
    check_finite(key, out, source)
    return out


def _cast_checked(key: str, tensor: torch.Tensor, dtype: torch.dtype, dest) -> torch.Tensor:
    """``tensor`` cast to ``dtype`` for writing; Ex4dError if a value does not fit (e.g. > 65504 in float16)."""
    out = tensor.to(dtype).contiguous()
    if out.is_floating_point():
        check_finite(key, out, f"writing {dest}", f" after casting to {str(dtype).removeprefix('torch.')}")
    return out


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


def _original_spec(sd: dict[str, torch.Tensor], source: str, expected: AdapterSpec | None, alpha: float,
                   allow_unexpected: bool) -> AdapterSpec:
    """Dims of an original-layout state dict after checking every key, shape and dtype (no values read)."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    spec = _infer_spec(shapes, alpha, source)
    _check_keys(shapes, original_key_shapes(spec), source, spec, allow_unexpected)
    check_adapter_fits(spec, expected, source)
    for key in original_key_shapes(spec):
        check_tensor_dtype(key, sd[key].dtype, source)
    return spec


def adapter_from_original_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict",
                                     expected: AdapterSpec | None = None, alpha: float = 16.0,
                                     allow_unexpected: bool = False) -> AdapterWeights:
    """Validated :class:`AdapterWeights` from an original-layout state dict (see module docstring)."""
    spec = _original_spec(sd, source, expected, alpha, allow_unexpected)
    encoder = {k: _checked_float(k, sd[k], source) for k in encoder_shapes(spec)}
    lora = {}
    for i in range(spec.num_layers):
        for orig, target in ORIGINAL_TO_DIFFUSERS.items():
            for ab in "AB":
                key = f"blocks.{i}.{orig}.lora_{ab}.default.weight"
                lora[f"blocks.{i}.{target}.lora_{ab}"] = _checked_float(key, sd[key], source)
    return AdapterWeights(spec=spec, encoder=encoder, lora=lora, source=source)


def _torch_load(path: Path):
    """The object in a torch checkpoint, memory-mapped when the file allows it (nothing is read before the checks)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e) and "zip" not in str(e):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) torch file


def _read_original(path: Path):
    _check_file(path)
    try:
        return _torch_load(path)
    except Exception as e:  # corrupt file, pickle with non-tensor objects, zip error …
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise Ex4dError(f"cannot read {path} as a torch checkpoint with weights_only=True: {first}") from None


def load_original_ckpt(path: str | os.PathLike, expected: AdapterSpec | None = None, alpha: float = 16.0,
                       allow_unexpected: bool = False) -> AdapterWeights:
    """Load the released ``ex4d.ckpt`` (``torch.load(weights_only=True)``), checking every key, shape and value."""
    path = Path(path)
    sd = _unwrap(_read_original(path), str(path))
    return adapter_from_original_state_dict(sd, str(path), expected, alpha, allow_unexpected)


def export_original_ckpt(weights: AdapterWeights, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
    """Write ``weights`` as an original-layout torch state dict (loadable by the original EX-4D code; atomic)."""
    sd = {k: _cast_checked(k, v, dtype, path) for k, v in weights.encoder.items()}
    for i in range(weights.spec.num_layers):
        for orig, target in ORIGINAL_TO_DIFFUSERS.items():
            for ab in "AB":
                key = f"blocks.{i}.{target}.lora_{ab}"
                sd[f"blocks.{i}.{orig}.lora_{ab}.default.weight"] = _cast_checked(key, weights.lora[key], dtype, path)
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)


# --------------------------------------------------------------------------- our safetensors format


def save_adapter_safetensors(weights: AdapterWeights, path: str | os.PathLike,
                             dtype: torch.dtype = torch.float32) -> None:
    """Write ``weights`` in our safetensors format with its dims in the metadata (atomic)."""
    from safetensors.torch import save_file

    s = weights.spec.validate("adapter to write")
    tensors = {f"encoder.{k}": _cast_checked(k, v, dtype, path) for k, v in weights.encoder.items()}
    tensors.update({f"lora.{k}": _cast_checked(k, v, dtype, path) for k, v in weights.lora.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "rank": str(s.rank), "alpha": repr(float(s.alpha)),
            "targets": json.dumps(list(LORA_TARGETS)), "original_targets": json.dumps(list(ORIGINAL_TO_DIFFUSERS)),
            "num_layers": str(s.num_layers), "dim": str(s.dim), "ffn_dim": str(s.ffn_dim), "z_dim": str(s.z_dim),
            "hidden": str(s.hidden), "patch_size": json.dumps(list(s.patch_size)),
            "source": str(weights.source)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _safetensors_spec(f, path: Path, expected: AdapterSpec | None) -> AdapterSpec:
    """Dims of an open safetensors adapter after checking its metadata, keys, shapes and dtypes (no values read)."""
    meta = f.metadata() or {}
    check(meta.get("format") == FORMAT,
          f"{path} is a safetensors file but not an ex4d adapter (metadata format={str(meta.get('format'))[:40]!r}); "
          f"convert the released ex4d.ckpt with `ex4d convert-adapter`")
    check(meta.get("format_version") == FORMAT_VERSION,
          f"{path}: metadata format_version = {str(meta.get('format_version'))[:40]!r}; this ex4d reads "
          f"{FORMAT_VERSION!r} (a file from another ex4d version; convert it again with `ex4d convert-adapter`)")
    spec = spec_from_metadata(meta, str(path))
    keys = f.keys()
    n = len(encoder_shapes(spec)) + len(LORA_TARGETS) * 2 * spec.num_layers
    check(len(keys) <= 2 * n + 64, f"{path} holds {len(keys)} tensors; an EX-4D adapter for {spec.describe()} has {n}")
    slices = {k: f.get_slice(k) for k in keys}
    shapes = {k: tuple(s.get_shape()) for k, s in slices.items()}
    expected_shapes = {f"encoder.{k}": v for k, v in encoder_shapes(spec).items()}
    expected_shapes.update({f"lora.{k}": v for k, v in canonical_lora_shapes(spec).items()})
    _check_keys(shapes, expected_shapes, str(path), spec)
    check_adapter_fits(spec, expected, str(path))
    for k, s in slices.items():
        check_tensor_dtype(k, s.get_dtype(), str(path))
    return spec


def _open_safetensors(path: Path):
    """``safe_open`` of ``path`` after checking that its JSON header is of adapter size (≤ 16 MiB)."""
    from safetensors import safe_open

    _check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    check(len(head) == 8, f"cannot read {path} as safetensors: the file is {len(head)} bytes long")
    header = int.from_bytes(head, "little")
    check(header <= _MAX_HEADER, f"cannot read {path} as an ex4d adapter: its safetensors header is {header:,} bytes "
                                 f"(an adapter's is under {_MAX_HEADER >> 20} MiB)")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # not safetensors, truncated, malformed header …
        raise Ex4dError(f"cannot read {path} as safetensors: {str(e)[:300]}") from None


def load_adapter_safetensors(path: str | os.PathLike, expected: AdapterSpec | None = None) -> AdapterWeights:
    """Load our safetensors format, checking metadata, every key, shape, dtype and value (in that order)."""
    path = Path(path)
    f = _open_safetensors(path)
    with f:
        spec = _safetensors_spec(f, path, expected)
        encoder, lora = {}, {}
        for k in f.keys():
            t = _checked_float(k, f.get_tensor(k), str(path))
            if k.startswith("encoder."):
                encoder[k[len("encoder."):]] = t
            else:
                lora[k[len("lora."):]] = t
    return AdapterWeights(spec=spec, encoder=encoder, lora=lora, source=str(path))


def inspect_adapter(path: str | os.PathLike, expected: AdapterSpec | None = None) -> AdapterSpec:
    """The dims of an adapter file after every check that needs no tensor values (metadata, keys, shapes, dtypes).

    Cheap (the header only; an original ``ex4d.ckpt`` is memory-mapped): commands
    call it before loading a 14B model, so a bad adapter fails in a second.
    Values (NaN, inf) are checked by :func:`load_adapter`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        with _open_safetensors(path) as f:
            return _safetensors_spec(f, path, expected)
    sd = _unwrap(_read_original(path), str(path))
    return _original_spec(sd, str(path), expected, 16.0, False)


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
