"""Load Wan2.1-I2V from local files: the diffusers layout or the original Wan release files.

No network access: everything is read with ``local_files_only=True`` and a
missing file is an :class:`Ex4dError` naming it and the expected layout.

Diffusers layout (Wan-AI's ``Wan2.1-I2V-14B-480P-Diffusers``)::

    DIR/transformer/   config.json, diffusion_pytorch_model*.safetensors (+ .index.json)
    DIR/vae/           config.json, diffusion_pytorch_model.safetensors
    DIR/text_encoder/  config.json, model*.safetensors            (UMT5-XXL encoder)
    DIR/tokenizer/     tokenizer.json or spiece.model, tokenizer_config.json
    DIR/image_encoder/ config.json, model*.safetensors            (CLIP ViT-H/14 vision)
    (image_processor/ and scheduler/ are not needed: CLIP preprocessing and the
     flow-matching Euler sampler follow the original code)

Original layout (Wan-AI's ``Wan2.1-I2V-14B-480P``), for the DiT and the VAE::

    DIR/diffusion_pytorch_model-0000{1..7}-of-00007.safetensors (or one unsharded file)
    DIR/Wan2.1_VAE.pth
    DIR/config.json    (optional; num_heads is read from it, other dims from the weights)

converted on the fly by diffusers' single-file loaders. The text and image
encoders are then taken from a diffusers-layout folder (``encoders``), since
their original ``.pth`` formats have no diffusers/transformers loader.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import Ex4dError, check
from ._deps import require

__all__ = [
    "WanComponents",
    "detect_layout",
    "load_wan",
    "resolve_device",
    "torch_dtype",
    "transformer_weight_bytes",
    "original_transformer_config",
    "CPU_WEIGHT_LIMIT_BYTES",
]

CPU_WEIGHT_LIMIT_BYTES = 2 * 1024**3  # DiT weights above this on a CPU need force_cpu
ORIGINAL_VAE_FILE = "Wan2.1_VAE.pth"
DIFFUSERS_LAYOUT = (
    "a diffusers folder (as Wan-AI/Wan2.1-I2V-14B-480P-Diffusers) with transformer/, vae/, text_encoder/, "
    "tokenizer/, image_encoder/; or an original Wan2.1-I2V-14B-480P folder with "
    "diffusion_pytorch_model-*.safetensors and Wan2.1_VAE.pth (then pass the diffusers folder for the "
    "text/image encoders with --wan-encoders)"
)
_WAN_HEAD_DIM = 128


@dataclass
class WanComponents:
    """The loaded Wan2.1-I2V models (on the CPU after :func:`load_wan`).

    ====================  ==========================================  =================================
    field                 type                                        role
    ====================  ==========================================  =================================
    ``transformer``       diffusers ``WanTransformer3DModel``         DiT, 36 → 16 channels
    ``vae``               diffusers ``AutoencoderKLWan``              video ↔ latents, 8× space, 4× time
    ``text_encoder``      transformers ``UMT5EncoderModel``           prompt → [1, 512, 4096]
    ``tokenizer``         transformers tokenizer                      UMT5 vocabulary
    ``image_encoder``     transformers ``CLIPVisionModel``            first frame → [1, 257, 1280]
    ``source``            str                                         folder(s) read
    ====================  ==========================================  =================================
    """

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    image_encoder: Any
    source: str = ""


# --------------------------------------------------------------------------- small helpers


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` → ``torch.bfloat16`` (passes torch dtypes through)."""
    if isinstance(name, torch.dtype):
        return name
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "float32": torch.float32, "fp32": torch.float32}
    check(name in table, f"unknown dtype {name!r}; use one of bfloat16, float16, float32")
    return table[name]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available else CPU; a CUDA device that is absent is an Ex4dError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        check(torch.cuda.is_available(), f"device {device!r} asked for, but this torch sees no CUDA GPU "
                                         f"(torch {torch.__version__}); use --device cpu with tiny models only")
    return dev


def _weight_files(folder: Path, stem: str) -> list[Path]:
    """``stem.safetensors`` or its shards (``stem-00001-of-0000N.safetensors``), sorted."""
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    return sorted(folder.glob(f"{stem}-*-of-*.safetensors"))


def detect_layout(folder: str | os.PathLike) -> str:
    """``"diffusers"`` or ``"original"`` for a Wan folder; Ex4dError naming the expected layouts otherwise."""
    folder = Path(folder)
    check(folder.exists(), f"Wan weights folder {folder} does not exist; expected {DIFFUSERS_LAYOUT}")
    check(folder.is_dir(), f"Wan weights path {folder} is not a folder; expected {DIFFUSERS_LAYOUT}")
    if (folder / "transformer").is_dir() or (folder / "model_index.json").is_file():
        return "diffusers"
    if _weight_files(folder, "diffusion_pytorch_model") or (folder / ORIGINAL_VAE_FILE).is_file():
        return "original"
    raise Ex4dError(f"{folder} is neither Wan layout: expected {DIFFUSERS_LAYOUT}")


def transformer_weight_bytes(folder: str | os.PathLike) -> int:
    """Total size in bytes of the DiT weight files of a Wan folder (either layout)."""
    folder = Path(folder)
    sub = folder / "transformer" if detect_layout(folder) == "diffusers" else folder
    return sum(f.stat().st_size for f in _weight_files(sub, "diffusion_pytorch_model"))


def _need(path: Path, what: str) -> Path:
    check(path.exists(), f"missing {path} ({what}); expected {DIFFUSERS_LAYOUT}")
    return path


def _need_weights(folder: Path, stem: str, what: str) -> list[Path]:
    _need(folder / "config.json", f"{what} config")
    files = _weight_files(folder, stem)
    check(files, f"missing {what} weights in {folder}: expected {stem}.safetensors or "
                 f"{stem}-0000k-of-0000N.safetensors shards; expected {DIFFUSERS_LAYOUT}")
    index = folder / f"{stem}.safetensors.index.json"
    if len(files) > 1 or index.is_file():
        _check_shards(folder, index, files)
    return files


_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.safetensors$")


def _check_shards(folder: Path, index: Path, files: list[Path]) -> None:
    """All shards named by the index (or by the ``-of-N`` suffix) exist; a lone unsharded file passes."""
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            check(isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values()),
                  "weight_map is not a name -> file table")
        except (OSError, ValueError, KeyError, TypeError, Ex4dError) as e:
            raise Ex4dError(f"{index} is not a readable safetensors index (expected {{\"weight_map\": {{name: "
                            f"file}}}}): {e}; delete it if the folder holds one unsharded file") from None
        wanted = sorted(set(weight_map.values()))
    else:
        shards = [m for f in files if (m := _SHARD_RE.match(f.name))]
        if not shards:  # one unsharded file (diffusion_pytorch_model.safetensors): nothing to cross-check
            return
        counts = {int(m["n"]) for m in shards}
        check(len(counts) == 1, f"{folder} mixes shard sets of different sizes "
                                f"({', '.join(sorted(f.name for f in files))}); keep one set")
        n, stem = counts.pop(), shards[0]["stem"]
        width = len(shards[0]["i"])
        wanted = [f"{stem}-{i:0{width}d}-of-{n:0{width}d}.safetensors" for i in range(1, n + 1)]
    missing = [w for w in wanted if not (folder / w).is_file()]
    check(not missing, f"{folder} is missing weight shards {missing} (of {len(wanted)})")


# --------------------------------------------------------------------------- encoders (diffusers layout)


def _load_encoders(folder: Path, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    """(text_encoder, tokenizer, image_encoder) from the diffusers-layout ``folder``."""
    transformers = require("transformers")
    _need_weights(folder / "text_encoder", "model", "UMT5 text encoder")
    tok_dir = _need(folder / "tokenizer", "UMT5 tokenizer")
    check((tok_dir / "tokenizer.json").is_file() or (tok_dir / "spiece.model").is_file(),
          f"missing tokenizer files in {tok_dir}: expected tokenizer.json or spiece.model")
    _need_weights(folder / "image_encoder", "model", "CLIP image encoder")
    text_encoder = transformers.UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype,
                                                                 local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    image_encoder = transformers.CLIPVisionModel.from_pretrained(folder / "image_encoder", dtype=dtype,
                                                                 local_files_only=True)
    return text_encoder.eval(), tokenizer, image_encoder.eval()


# --------------------------------------------------------------------------- original layout


def _original_num_heads(dim: int, config_json: Path) -> int:
    """Attention heads of an original-layout DiT of width ``dim``: ``num_heads`` of config.json, else dim / 128.

    Wan2.1's DiTs all use 128-wide heads (1.3B: 12 × 128, 14B: 40 × 128), so a config.json without
    ``num_heads`` (or no config.json) is read as such; a width that 128 does not divide needs the field.
    """
    heads = None
    if config_json.is_file():
        try:
            cfg = json.loads(config_json.read_text())
        except (OSError, ValueError) as e:
            raise Ex4dError(f"{config_json} is not readable JSON ({e}); fix it or delete it (num_heads is then "
                            f"taken as width / {_WAN_HEAD_DIM})") from None
        check(isinstance(cfg, dict), f"{config_json} must hold a JSON object, got {type(cfg).__name__}")
        heads = cfg.get("num_heads")
        check(heads is None or (isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1),
              f"{config_json}: num_heads must be a positive integer, got {heads!r}")
    if heads is None:
        check(dim >= _WAN_HEAD_DIM and dim % _WAN_HEAD_DIM == 0,
              f"{config_json.parent}: the DiT is {dim} wide, which {_WAN_HEAD_DIM}-wide heads do not divide, and "
              f"{'config.json has no num_heads' if config_json.is_file() else 'there is no config.json'}; "
              f"add {{\"num_heads\": N}} to {config_json} (Wan2.1: 40 for the 14B model, 12 for the 1.3B)")
        heads = dim // _WAN_HEAD_DIM
    check(dim % heads == 0, f"{config_json}: num_heads {heads} does not divide the DiT width {dim}")
    return heads


_ORIGINAL_NEEDED = ("patch_embedding.weight", "head.head.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                    "blocks.0.ffn.0.weight")


def original_transformer_config(shapes: dict[str, tuple[int, ...]], config_json: Path) -> dict:
    """Diffusers ``WanTransformer3DModel`` config from the tensor shapes of original-format weights.

    ``shapes``: original key → shape (the safetensors headers suffice); ``num_heads`` comes from
    ``config_json`` when it has it (see :func:`_original_num_heads`).
    """
    missing = [k for k in _ORIGINAL_NEEDED if k not in shapes]
    check(not missing, f"{config_json.parent}: the DiT weights lack {missing}; not an original-format Wan DiT")
    pe = shapes["patch_embedding.weight"]  # [D, C_in, 1, 2, 2]
    check(len(pe) == 5, f"{config_json.parent}: patch_embedding.weight has shape {list(pe)}, expected 5 dims")
    dim, in_ch, patch = int(pe[0]), int(pe[1]), [int(s) for s in pe[2:]]
    blocks = [int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit()]
    check(blocks, f"{config_json.parent}: the DiT weights hold no blocks.N.* tensors; not a Wan DiT")
    num_layers = 1 + max(blocks)
    heads = _original_num_heads(dim, config_json)
    i2v = "img_emb.proj.0.weight" in shapes
    return {
        "_class_name": "WanTransformer3DModel",
        "patch_size": patch,
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": in_ch,
        "out_channels": int(shapes["head.head.weight"][0]) // (patch[0] * patch[1] * patch[2]),
        "text_dim": int(shapes["text_embedding.0.weight"][1]),
        "freq_dim": int(shapes["time_embedding.0.weight"][1]),
        "ffn_dim": int(shapes["blocks.0.ffn.0.weight"][0]),
        "num_layers": num_layers,
        "cross_attn_norm": "blocks.0.norm3.weight" in shapes,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": int(shapes["img_emb.proj.0.weight"][0]) if i2v else None,
        "added_kv_proj_dim": dim if i2v else None,
        "rope_max_seq_len": 1024,
    }


def _keep_fp32(model: Any) -> None:
    """Upcast the modules diffusers keeps in float32 (``_keep_in_fp32_modules``), as ``from_pretrained`` does."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for name, p in model.named_parameters():
        if keep & set(name.split(".")):
            p.data = p.data.float()


def _load_original_transformer(folder: Path, dtype: torch.dtype) -> Any:
    diffusers = require("diffusers")
    from safetensors.torch import load_file

    files = _weight_files(folder, "diffusion_pytorch_model")
    check(files, f"missing {folder}/diffusion_pytorch_model*.safetensors; expected {DIFFUSERS_LAYOUT}")
    _check_shards(folder, folder / "diffusion_pytorch_model.safetensors.index.json", files)
    sd: dict[str, torch.Tensor] = {}
    for f in files:  # memory-mapped by safetensors; converted tensor by tensor below
        sd.update(load_file(str(f)))
    check("patch_embedding.weight" in sd and "head.head.weight" in sd,
          f"{folder}: the safetensors files do not hold an original-format Wan DiT (no patch_embedding.weight)")
    cfg = original_transformer_config({k: tuple(v.shape) for k, v in sd.items()}, folder / "config.json")
    with tempfile.TemporaryDirectory(prefix="ex4d-wan-config-") as tmp:
        (Path(tmp) / "transformer").mkdir()
        (Path(tmp) / "transformer" / "config.json").write_text(json.dumps(cfg))
        model = diffusers.WanTransformer3DModel.from_single_file(
            sd, config=tmp, subfolder="transformer", torch_dtype=dtype, local_files_only=True)
    _keep_fp32(model)
    return model.eval()


def _load_original_vae(path: Path, dtype: torch.dtype, vae_config: dict | None) -> Any:
    diffusers = require("diffusers")
    check(path.is_file(), f"missing {path} (the Wan2.1 VAE); expected {DIFFUSERS_LAYOUT}")
    cfg = {"_class_name": "AutoencoderKLWan", **(vae_config or {})}  # defaults of AutoencoderKLWan = Wan2.1 VAE
    with tempfile.TemporaryDirectory(prefix="ex4d-wan-config-") as tmp:
        (Path(tmp) / "vae").mkdir()
        (Path(tmp) / "vae" / "config.json").write_text(json.dumps(cfg))
        vae = diffusers.AutoencoderKLWan.from_single_file(str(path), config=tmp, subfolder="vae", torch_dtype=dtype,
                                                          local_files_only=True)
    return vae.eval()


# --------------------------------------------------------------------------- entry point


def load_wan(wan: str | os.PathLike, encoders: str | os.PathLike | None = None, dtype: str | torch.dtype = "bfloat16",
             vae_dtype: str | torch.dtype | None = None, device: str | torch.device = "auto",
             force_cpu: bool = False, vae_config: dict | None = None) -> WanComponents:
    """Load Wan2.1-I2V components onto the CPU, ready to be placed by a memory mode.

    Args:
        wan: diffusers-layout folder, or original-layout folder (DiT + VAE).
        encoders: diffusers-layout folder for the text/image encoders and the
            tokenizer; default ``wan`` (required when ``wan`` is original-layout).
        dtype: DiT and encoder weights dtype (float32 modules diffusers keeps stay float32).
        vae_dtype: VAE dtype; default ``dtype``.
        device: where the models will run; only used for the CPU check here.
        force_cpu: allow full-size DiT weights (> 2 GiB of files) on a CPU.
        vae_config: AutoencoderKLWan config overrides for an original-layout
            VAE that is not the standard Wan2.1 VAE (tests).
    """
    diffusers = require("diffusers")
    wan = Path(wan)
    layout = detect_layout(wan)
    dtype = torch_dtype(dtype)
    vae_dtype = dtype if vae_dtype is None else torch_dtype(vae_dtype)
    _check_cpu(wan, resolve_device(device), force_cpu)
    if layout == "diffusers":
        _need_weights(wan / "transformer", "diffusion_pytorch_model", "transformer (DiT)")
        _need_weights(wan / "vae", "diffusion_pytorch_model", "VAE")
        transformer = diffusers.WanTransformer3DModel.from_pretrained(wan / "transformer", torch_dtype=dtype,
                                                                      local_files_only=True).eval()
        vae = diffusers.AutoencoderKLWan.from_pretrained(wan / "vae", torch_dtype=vae_dtype,
                                                         local_files_only=True).eval()
        enc_dir = Path(encoders) if encoders is not None else wan
    else:
        check(encoders is not None,
              f"{wan} is an original-layout Wan folder (DiT + VAE only); the UMT5 text encoder, tokenizer and CLIP "
              f"image encoder must come from a diffusers-layout folder: pass it as encoders= (--wan-encoders DIR)")
        transformer = _load_original_transformer(wan, dtype)
        vae = _load_original_vae(wan / ORIGINAL_VAE_FILE, vae_dtype, vae_config)
        enc_dir = Path(encoders)
        check(enc_dir.is_dir(), f"encoders folder {enc_dir} does not exist; expected {DIFFUSERS_LAYOUT}")
    check(transformer.config.image_dim is not None,
          f"{wan}: this Wan DiT has no image conditioning (image_dim is None): it is a text-to-video model; "
          f"EX-4D needs Wan2.1-I2V-14B-480P")
    text_encoder, tokenizer, image_encoder = _load_encoders(enc_dir, dtype)
    source = str(wan) if enc_dir == wan else f"{wan} + encoders {enc_dir}"
    return WanComponents(transformer, vae, text_encoder, tokenizer, image_encoder, source=source)


def _check_cpu(wan: Path, device: torch.device, force_cpu: bool) -> None:
    if device.type != "cpu" or force_cpu:
        return
    size = transformer_weight_bytes(wan)
    check(size <= CPU_WEIGHT_LIMIT_BYTES,
          f"{wan} holds {size / 1024**3:.1f} GiB of DiT weights and no CUDA GPU is in use: on a CPU one video "
          f"would take many hours to days. Run on a CUDA GPU (--device cuda), or pass --force-cpu "
          f"(force_cpu=True) to try anyway.")
