"""Additional LoRAs on the Wan DiT (``--lora FILE[:SCALE]``), merged into the weights like the EX-4D adapter.

Layouts read (the ones Wan LoRAs are published in), all to diffusers layer names
(``blocks.3.attn1.to_q``, ``condition_embedder.time_proj`` …):

==========================================  ==============================================================
layout                                      keys (per layer)
==========================================  ==============================================================
diffusers / peft                            ``[transformer.|base_model.model.]<layer>.lora_A[.default].weight``,
                                            ``lora_B…``; alpha from the file's ``lora_adapter_metadata``
                                            (diffusers), an ``adapter_config.json`` beside the file (peft),
                                            or ``<layer>.alpha``; else alpha = rank
ComfyUI / original Wan names                ``diffusion_model.blocks.3.self_attn.q.lora_{A,B}.weight`` or
                                            ``….lora_down/lora_up.weight`` + ``….alpha`` (lightx2v, CausVid)
kohya / musubi-tuner                        ``lora_unet_blocks_3_self_attn_q.lora_down/lora_up.weight`` +
                                            ``.alpha``
full deltas (ComfyUI, lightx2v)             ``<module>.diff`` (weight), ``.diff_b`` (bias), ``.diff_m``
                                            (modulation), in either naming
==========================================  ==============================================================

Original Wan names (ComfyUI, and kohya/musubi after undoing its underscores) are renamed with
diffusers' own Wan checkpoint rename table (``convert_wan_transformer_to_diffusers``), layer by layer,
so partial LoRAs (a few layers, ``k_img`` without ``v_img``, mixed ``lora_A``/``lora_down`` naming)
load too; diffusers' LoRA converters want every layer of every block. ``.alpha`` scales by alpha / rank.
A key this module cannot place, a layer the model does not have, a shape that does not
fit, a non-finite value or DoRA factors are an :class:`~ex4d.errors.Ex4dError`: a LoRA is
never silently half-applied.

Merging: ``W ← W + Σ scale·(alpha/rank)·B @ A`` (+ ``scale·diff``), summed in float32 from
the factors rounded to the layer's dtype (as peft holds them) and rounded back once.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import Ex4dError, check

__all__ = ["LoraFile", "LowRank", "LoraDeltas", "parse_lora_arg", "read_lora", "adapter_deltas", "merge_deltas",
           "check_deltas_fit", "original_to_diffusers_names"]

_MAX_LISTED = 8
_LORA_EXTS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class LoraFile:
    """One ``--lora`` argument: the file and the strength it is applied with (1 = as trained)."""

    path: Path
    scale: float = 1.0

    def describe(self) -> str:
        return f"{self.path.name}:{self.scale:g}"


def parse_lora_arg(text: str) -> LoraFile:
    """``FILE`` or ``FILE:SCALE`` → :class:`LoraFile` (a path that itself holds ':' works when it exists)."""
    check(isinstance(text, str) and text.strip(), "--lora needs FILE or FILE:SCALE")
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head and not Path(text).exists():
        try:
            scale = float(tail)
        except ValueError:
            raise Ex4dError(f"--lora {text!r}: the part after ':' must be a number (the strength), got {tail!r}; "
                            f"write FILE or FILE:SCALE") from None
        path = head
    check(math.isfinite(scale), f"--lora {text!r}: the strength must be a finite number, got {scale}")
    p = Path(path)
    check(p.is_file(), f"--lora {text!r}: {p} is not a file (expected a LoRA .safetensors)")
    check(p.suffix.lower() in _LORA_EXTS, f"--lora {p}: expected a {', '.join(_LORA_EXTS)} file")
    return LoraFile(p, scale)


@dataclass
class LowRank:
    """One low-rank update of a layer's weight: ``scale · up @ down`` (``down`` [r, in], ``up`` [out, r])."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float
    source: str = ""


@dataclass
class LoraDeltas:
    """What a set of LoRAs changes, in diffusers names.

    ``low_rank``: layer → updates of ``layer.weight``; ``params``: parameter name → list of
    (full delta tensor, scale), e.g. ``blocks.0.attn1.to_q.bias`` or ``blocks.0.scale_shift_table``.
    """

    low_rank: dict[str, list[LowRank]] = field(default_factory=dict)
    params: dict[str, list[tuple[torch.Tensor, float]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.low_rank or self.params)

    def extend(self, other: "LoraDeltas") -> "LoraDeltas":
        for k, v in other.low_rank.items():
            self.low_rank.setdefault(k, []).extend(v)
        for k, v in other.params.items():
            self.params.setdefault(k, []).extend(v)
        self.sources.extend(other.sources)
        return self

    def under(self, prefix: str) -> "LoraDeltas":
        """The part that touches modules under ``prefix`` (e.g. ``"blocks.3."``), names kept whole."""
        return LoraDeltas({k: v for k, v in self.low_rank.items() if k.startswith(prefix)},
                          {k: v for k, v in self.params.items() if k.startswith(prefix)}, list(self.sources))

    def outside(self, prefix: str) -> "LoraDeltas":
        """The part that touches no module under ``prefix``."""
        return LoraDeltas({k: v for k, v in self.low_rank.items() if not k.startswith(prefix)},
                          {k: v for k, v in self.params.items() if not k.startswith(prefix)}, list(self.sources))

    def layers(self) -> int:
        return len(set(self.low_rank) | {k.rpartition(".")[0] for k in self.params})


# --------------------------------------------------------------------------- reading files


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # corrupt header, truncated file …
            raise Ex4dError(f"cannot read LoRA {path} as safetensors: {e}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise Ex4dError(f"cannot read LoRA {path} as a torch checkpoint with weights_only=True: {e}") from None
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "module", "model"):
        obj = next(iter(obj.values()))
    check(isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()),
          f"LoRA {path} does not hold a flat name → tensor state dict")
    return obj, {}


def _alpha_from_metadata(path: Path, meta: dict[str, str]) -> tuple[float | None, int | None]:
    """(lora_alpha, r) from diffusers' ``lora_adapter_metadata`` or a peft ``adapter_config.json``, else (None, None)."""
    cfg = None
    if "lora_adapter_metadata" in meta:
        try:
            cfg = json.loads(meta["lora_adapter_metadata"])
        except ValueError as e:
            raise Ex4dError(f"LoRA {path}: unreadable lora_adapter_metadata ({e})") from None
        if isinstance(cfg, dict) and "transformer.lora_alpha" in cfg:
            cfg = {k.split(".", 1)[1]: v for k, v in cfg.items() if k.startswith("transformer.")}
    elif (path.parent / "adapter_config.json").is_file() and path.name.startswith("adapter_model"):
        try:
            cfg = json.loads((path.parent / "adapter_config.json").read_text())
        except (OSError, ValueError) as e:
            raise Ex4dError(f"LoRA {path}: unreadable {path.parent / 'adapter_config.json'} ({e})") from None
    if not isinstance(cfg, dict) or "lora_alpha" not in cfg:
        return None, None
    check(not cfg.get("alpha_pattern") and not cfg.get("rank_pattern"),
          f"LoRA {path}: per-layer rank/alpha patterns are not supported; merge it with peft and save plain factors")
    check(not cfg.get("use_dora"), f"LoRA {path} is a DoRA adapter; only plain LoRA can be merged here")
    alpha, r = cfg["lora_alpha"], cfg.get("r")
    check(isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha),
          f"LoRA {path}: lora_alpha must be a finite number, got {alpha!r}")
    check(r is None or (isinstance(r, int) and r >= 1), f"LoRA {path}: r must be a positive integer, got {r!r}")
    return float(alpha), r


_DIFF_SUFFIX = {".diff": "weight", ".diff_b": "bias", ".diff_m": "modulation"}


def _split_diffs(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(factor keys, full deltas as ``<module>.<param>`` in the file's naming) of a state dict."""
    rest, diffs = {}, {}
    for k, v in sd.items():
        for suffix, param in _DIFF_SUFFIX.items():
            if k.endswith(suffix):
                module = k[: -len(suffix)]
                diffs[f"{module}.{param}" if module else param] = v
                break
        else:
            rest[k] = v
    return rest, diffs


_RENAME_CACHE: dict[frozenset, dict[str, str]] = {}


def original_to_diffusers_names(keys: list[str]) -> dict[str, str]:
    """Original Wan parameter names → diffusers names, as diffusers' Wan checkpoint converter renames them.

    Runs ``convert_wan_transformer_to_diffusers`` on placeholder tensors and follows each one; a key
    the converter drops or computes (instead of renaming) is left out of the result.
    """
    cache_key = frozenset(keys)
    if cache_key in _RENAME_CACHE:
        return _RENAME_CACHE[cache_key]
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    placeholders = {k: torch.empty(0) for k in keys}
    ids = {id(v): k for k, v in placeholders.items()}
    try:
        converted = convert_wan_transformer_to_diffusers(dict(placeholders))
    except Exception as e:  # a key layout the converter does not know
        raise Ex4dError(f"diffusers could not convert these Wan weight names ({e!r}); e.g. {keys[:3]}") from None
    out = {ids[id(v)]: k for k, v in converted.items() if id(v) in ids}
    _RENAME_CACHE[cache_key] = out
    return out


def _strip_prefixes(key: str) -> str:
    for prefix in ("transformer.", "base_model.model.", "model.diffusion_model.", "diffusion_model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return re.sub(r"\.(lora_[AB]|lora_down|lora_up)\.default\.", r".\1.", key)


_MUSUBI = [(re.compile(r"^lora_unet_blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img)\.(.+)$"),
            r"diffusion_model.blocks.\1.\2.\3.\4"),
           (re.compile(r"^lora_unet_blocks_(\d+)_ffn_(0|2)\.(.+)$"), r"diffusion_model.blocks.\1.ffn.\2.\3"),
           (re.compile(r"^lora_unet_(time_embedding|text_embedding|time_projection)_(\d)\.(.+)$"),
            r"diffusion_model.\1.\2.\3"),
           (re.compile(r"^lora_unet_img_emb_proj_(\d)\.(.+)$"), r"diffusion_model.img_emb.proj.\1.\2"),
           (re.compile(r"^lora_unet_head_head\.(.+)$"), r"diffusion_model.head.head.\1")]


def _musubi_to_comfy(key: str) -> str | None:
    """kohya / musubi-tuner's ``lora_unet_blocks_3_self_attn_q.lora_down.weight`` → ComfyUI's dotted name."""
    for pattern, repl in _MUSUBI:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


_FACTOR_RE = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)\.(?P<param>weight|bias)$")


def _comfy_to_diffusers(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Factor keys in original Wan module names (``diffusion_model.blocks.0.self_attn.q.lora_down.weight``,
    ``….alpha``) renamed to diffusers module names, by diffusers' own Wan checkpoint rename table."""
    parsed = {}
    for k in sd:
        key = _strip_prefixes(k)
        m = _FACTOR_RE.match(key)
        if m is not None:
            parsed[k] = (m["module"], f".{m['kind']}.{m['param']}")
        elif key.endswith(".alpha"):
            parsed[k] = (key[: -len(".alpha")], ".alpha")
        else:
            raise Ex4dError(f"LoRA {path}: key {k} is in no LoRA layout this loader reads")
    modules = sorted({mod for mod, _ in parsed.values()})
    renamed = original_to_diffusers_names([f"{mod}.weight" for mod in modules])
    lost = [mod for mod in modules if f"{mod}.weight" not in renamed]
    check(not lost, f"LoRA {path}: no layer of the Wan DiT is called {lost[:_MAX_LISTED]}")
    return {renamed[f"{mod}.weight"][: -len(".weight")] + suffix: sd[k] for k, (mod, suffix) in parsed.items()}


def _diff_param_names(diffs: dict[str, torch.Tensor], original: bool, path: Path) -> dict[str, torch.Tensor]:
    """Full deltas keyed by diffusers parameter names; ``original``: the file uses original Wan names."""
    stripped = {_strip_prefixes(k): v for k, v in diffs.items()}
    if not original or not stripped:
        return stripped
    renamed = original_to_diffusers_names(list(stripped))
    lost = sorted(set(stripped) - set(renamed))
    check(not lost, f"LoRA {path}: cannot place the full deltas of {lost[:_MAX_LISTED]} in the Wan DiT")
    return {renamed[k]: v for k, v in stripped.items()}


def _factors(sd: dict[str, torch.Tensor], path: Path, meta: dict[str, str]
             ) -> tuple[dict[str, LowRank], dict[str, torch.Tensor]]:
    """(layer → LowRank with scale alpha/rank, layer → lora_B bias) from a diffusers-layout state dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unplaced = []
    for k, v in sd.items():
        key = _strip_prefixes(k)
        m = re.match(r"^(.+)\.(lora_A|lora_B|lora_down|lora_up)\.(weight|bias)$", key)
        if m is not None:
            kind = {"lora_down": "lora_A", "lora_up": "lora_B"}.get(m.group(2), m.group(2))
            groups.setdefault(m.group(1), {})[kind + (".bias" if m.group(3) == "bias" else "")] = v
        elif key.endswith(".alpha"):
            groups.setdefault(key[: -len(".alpha")], {})["alpha"] = v
        else:
            unplaced.append(k)
    check(not unplaced, f"LoRA {path}: keys in no LoRA layout this loader reads: {unplaced[:_MAX_LISTED]}"
                        + (f" (… {len(unplaced) - _MAX_LISTED} more)" if len(unplaced) > _MAX_LISTED else ""))
    meta_alpha, meta_r = _alpha_from_metadata(path, meta)
    low_rank, biases = {}, {}
    for layer, parts in groups.items():
        check("lora_A" in parts and "lora_B" in parts,
              f"LoRA {path}: layer {layer} has {sorted(parts)}, needs both lora_A/lora_down and lora_B/lora_up")
        a, b = parts["lora_A"], parts["lora_B"]
        check(a.ndim == 2 and b.ndim == 2 and a.shape[0] == b.shape[1] and a.shape[0] >= 1,
              f"LoRA {path}: layer {layer} has down {tuple(a.shape)} and up {tuple(b.shape)}; expected [r, in] and "
              f"[out, r] (linear layers only)")
        rank = int(a.shape[0])
        if "alpha" in parts:
            check(parts["alpha"].numel() == 1, f"LoRA {path}: {layer}.alpha must be one number")
            alpha = float(parts["alpha"].float().item())
        elif meta_alpha is not None:
            check(meta_r is None or meta_r == rank, f"LoRA {path}: the metadata says r={meta_r}, layer {layer} has "
                                                    f"rank {rank}")
            alpha = meta_alpha
        else:
            alpha = float(rank)
        check(math.isfinite(alpha), f"LoRA {path}: {layer} has alpha {alpha}")
        low_rank[layer] = LowRank(a, b, alpha / rank, str(path))
        if "lora_B.bias" in parts:  # peft's lora_bias: part of the LoRA output, scaled with it
            biases[layer] = parts["lora_B.bias"] * (alpha / rank)
    return low_rank, biases


def read_lora(lora: LoraFile) -> LoraDeltas:
    """The :class:`LoraDeltas` of one LoRA file at its strength (diffusers names; checked for finite values)."""
    path = lora.path
    sd, meta = _load_tensors(path)
    check(sd, f"LoRA {path} holds no tensors")
    check(not any("dora_scale" in k for k in sd), f"LoRA {path} is a DoRA adapter (dora_scale keys); only plain "
                                                   f"LoRA can be merged here")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    check(not bad, f"LoRA {path}: non-finite values (nan/inf) in {bad[:_MAX_LISTED]}")
    if any(k.startswith("lora_unet_") for k in sd):
        # diffusers' own musubi converter needs every layer of every block; renaming to the ComfyUI
        # layout lets its (lenient) Wan converter take partial files too
        renamed = {k: _musubi_to_comfy(k) for k in sd}
        odd = [k for k, v in renamed.items() if v is None]
        check(not odd, f"LoRA {path}: kohya/musubi keys of no known Wan layer: {odd[:_MAX_LISTED]}")
        sd = {renamed[k]: v for k, v in sd.items()}
    factors_sd, diffs = _split_diffs(sd)
    original = any(k.startswith("diffusion_model.") for k in sd)
    if original:
        factors_sd = _comfy_to_diffusers(factors_sd, path)
    deltas = LoraDeltas(sources=[lora.describe()])
    low_rank, biases = _factors(factors_sd, path, meta)
    for layer, item in low_rank.items():
        item.scale *= lora.scale
        deltas.low_rank[layer] = [item]
    for layer, bias in biases.items():
        deltas.params.setdefault(layer + ".bias", []).append((bias, lora.scale))
    for name, value in _diff_param_names(diffs, original, path).items():
        deltas.params.setdefault(name, []).append((value, lora.scale))
    check(deltas, f"LoRA {path} changes nothing (no LoRA factors or deltas found)")
    return deltas


def adapter_deltas(weights) -> LoraDeltas:
    """The EX-4D adapter's LoRA (``AdapterWeights``) as :class:`LoraDeltas` (scale alpha / rank)."""
    scale = float(weights.spec.alpha) / float(weights.spec.rank)
    out = LoraDeltas(sources=[f"EX-4D adapter {Path(weights.source).name}"])
    for key, value in weights.lora.items():
        if key.endswith(".lora_A"):
            layer = key[: -len(".lora_A")]
            out.low_rank[layer] = [LowRank(value, weights.lora[layer + ".lora_B"], scale, weights.source)]
    return out


# --------------------------------------------------------------------------- checking and merging


def check_deltas_fit(deltas: LoraDeltas, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every updated layer / parameter exists in the model (``shapes``: parameter name → shape) and fits it."""
    problems = []
    for layer, items in deltas.low_rank.items():
        w = shapes.get(layer + ".weight")
        if w is None:
            problems.append(f"{layer}: no such layer")
            continue
        for it in items:
            if len(w) != 2 or tuple(it.up.shape[:1]) + tuple(it.down.shape[1:]) != tuple(w):
                problems.append(f"{layer}: LoRA gives [{it.up.shape[0]}, {it.down.shape[1]}], the weight is {list(w)}")
    for name, items in deltas.params.items():
        s = shapes.get(name)
        if s is None:
            problems.append(f"{name}: no such parameter")
            continue
        for value, _ in items:
            if value.numel() != math.prod(s):
                problems.append(f"{name}: delta {list(value.shape)}, the parameter is {list(s)}")
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED]) + (f"; … ({len(problems) - _MAX_LISTED} more)"
                                                     if len(problems) > _MAX_LISTED else "")
        raise Ex4dError(f"LoRA {', '.join(deltas.sources)} does not fit this Wan DiT ({shown}). Is it a LoRA for "
                        f"Wan2.1-I2V-14B (or T2V-14B: same layers but k_img/v_img)?")


def _factor(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 on ``like``'s device, first rounded to ``like``'s dtype (as a peft layer would hold it)."""
    dtype = like.dtype if like.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.float32
    return t.to(like.device, dtype).float()


@torch.no_grad()
def merge_deltas(target: nn.Module | dict[str, torch.Tensor], deltas: LoraDeltas) -> int:
    """Add ``deltas`` in place to the parameters of ``target`` (a module, or name → tensor); returns layers changed.

    Names are relative to ``target``; each parameter gets all its updates summed in float32 and rounded
    once to its dtype. Entries of ``deltas`` that ``target`` (a dict) does not hold are an error.
    """
    touched = set()
    params = dict(target.named_parameters()) if isinstance(target, nn.Module) else target
    for layer, items in deltas.low_rank.items():
        w = params[layer + ".weight"]
        acc = w.float()
        for it in items:
            acc = acc + it.scale * (_factor(it.up, w) @ _factor(it.down, w))
        w.copy_(acc.to(w.dtype))
        touched.add(layer)
    for name, items in deltas.params.items():
        p = params[name]
        acc = p.float()
        for value, scale in items:
            acc = acc + scale * _factor(value, p).reshape(p.shape)
        p.copy_(acc.to(p.dtype))
        touched.add(name.rpartition(".")[0])
    return len(touched)
