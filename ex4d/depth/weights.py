"""Where each backend expects its weights on disk, and clear errors when they are not there.

Nothing is downloaded: users fetch the weights once (``huggingface-cli
download … --local-dir …``) and pass the folder. The layouts below are the
ones the Hugging Face repositories have, so a plain download works.

DepthCrafter (``--depth-weights DIR``)::

    DIR/unet/   tencent/DepthCrafter                    config.json, diffusion_pytorch_model.safetensors
    DIR/svd/    stabilityai/stable-video-diffusion-img2vid-xt (or -img2vid, the EX-4D original's choice):
                vae/, image_encoder/, scheduler/ (feature_extractor/ optional; unet/ not used)

  ``DIR`` may also be the DepthCrafter download itself (config.json at its
  top) with the SVD folder in ``DIR/svd`` or given separately (``svd_weights``,
  ``--svd-weights``).

Depth Anything V2 (``--depth-weights DIR``): a transformers checkpoint
(the ``-hf`` repositories), ``DIR/config.json`` (model_type
``depth_anything``), ``DIR/model.safetensors``, ``DIR/preprocessor_config.json``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import Ex4dError, check

__all__ = [
    "DEPTHCRAFTER_LAYOUT",
    "DEPTH_ANYTHING_LAYOUT",
    "VIDEO_DEPTH_ANYTHING_MESSAGE",
    "find_weight_files",
    "weights_variant",
    "resolve_depthcrafter_weights",
    "resolve_depth_anything_weights",
    "weights_fingerprint",
]

DEPTHCRAFTER_LAYOUT = """\
DepthCrafter expects --depth-weights DIR laid out as
  DIR/unet/  the DepthCrafter UNet: https://huggingface.co/tencent/DepthCrafter
             (config.json + diffusion_pytorch_model.safetensors)
  DIR/svd/   Stable Video Diffusion img2vid-xt (or img2vid), of which vae/, image_encoder/ and scheduler/ are used:
             https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt (gated: accept its licence first)
e.g.
  huggingface-cli download tencent/DepthCrafter --local-dir DIR/unet
  huggingface-cli download stabilityai/stable-video-diffusion-img2vid-xt --local-dir DIR/svd \\
      --include 'vae/*' 'image_encoder/*' 'scheduler/*' 'feature_extractor/*' 'model_index.json'
Alternatively pass the DepthCrafter download as DIR and the SVD folder with --svd-weights.
Licences: DepthCrafter weights are for academic, research and education use only (no commercial use);
SVD is under Stability AI's licence on its model card (non-commercial community licence)."""

DEPTH_ANYTHING_LAYOUT = """\
Depth Anything V2 expects --depth-weights DIR to be a transformers checkpoint (the "-hf" repositories), holding
config.json, model.safetensors and preprocessor_config.json, e.g.
  huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf --local-dir DIR
Relative: depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf.
Metric:   depth-anything/Depth-Anything-V2-Metric-{Indoor,Outdoor}-{Small,Base,Large}-hf.
The original .pth checkpoints are not read. Licences: Small is Apache-2.0; Base and Large are CC-BY-NC-4.0
(non-commercial)."""

VIDEO_DEPTH_ANYTHING_MESSAGE = """\
--depth-model video-depth-anything is not supported: its released checkpoints (video_depth_anything_vits.pth / \
_vitl.pth) need the exact temporal head of its reference code (the layout, sizes and positional encoding of the \
temporal attention layers inserted into the DPT head, and its 32-frame key-frame inference), which neither its paper \
nor transformers/diffusers describe, and ex4d does not copy third-party model code. Instead either
  * run Video-Depth-Anything yourself (https://github.com/DepthAnything/Video-Depth-Anything, \
run.py --save_npz) and pass its output with --depth out.npz (key 'depths', read as relative disparity; \
add --depth-kind depth for its metric model), or
  * use --depth-model depth-anything-v2 (per-frame Depth Anything V2 made temporally consistent by ex4d) or \
--depth-model depthcrafter."""

#: Weight file names, without and with the fp16 variant (diffusers / transformers naming).
_WEIGHT_NAMES = {
    "diffusers": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "transformers": ("model.safetensors", "pytorch_model.bin"),
}
_LFS_HEAD = b"version https://git-lfs"


def _variant_name(name: str, variant: str) -> str:
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def find_weight_files(folder: Path, library: str) -> list[Path]:
    """Weight files of a diffusers (``library="diffusers"``) or transformers model folder, incl. fp16 variants and shards."""
    names = _WEIGHT_NAMES[library]
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        for name in names:
            stem, ext = name.rsplit(".", 1)
            if p.name == name or p.name == _variant_name(name, "fp16") or (
                    p.name.startswith(stem + "-") and p.name.endswith("." + ext)) or p.name == name + ".index.json" \
                    or p.name == _variant_name(name, "fp16") + ".index.json":
                found.append(p)
    return found


def weights_variant(folder: Path, library: str) -> str | None:
    """``"fp16"`` when ``folder`` holds only fp16-variant weights (``*.fp16.safetensors``), else ``None``."""
    files = {p.name for p in find_weight_files(folder, library)}
    plain = any(n in files or n + ".index.json" in files for n in _WEIGHT_NAMES[library])
    return None if plain else ("fp16" if files else None)


def _check_not_lfs_pointer(files: list[Path]) -> None:
    for p in files:
        if p.stat().st_size < 1024:
            with open(p, "rb") as f:
                if f.read(len(_LFS_HEAD)) == _LFS_HEAD:
                    raise Ex4dError(f"{p} is a Git LFS pointer, not the weights: run `git lfs pull` in that "
                                    f"repository, or download it with huggingface-cli")


def _model_folder(folder: Path, library: str, what: str, layout: str) -> Path:
    """``folder`` if it holds a config and weights of ``library``; Ex4dError naming the layout otherwise."""
    config = "config.json" if library != "scheduler" else "scheduler_config.json"
    missing = []
    if not folder.is_dir():
        missing.append(f"the folder {folder}")
    elif not (folder / config).is_file():
        missing.append(f"{folder / config}")
    if library in _WEIGHT_NAMES and not missing:
        files = find_weight_files(folder, library)
        if not files:
            missing.append(f"weights in {folder} ({' or '.join(_WEIGHT_NAMES[library])}, or their .fp16 variants)")
        _check_not_lfs_pointer(files)
    if missing:
        raise Ex4dError(f"incomplete {what} weights: missing {missing[0]}.\n{layout}")
    return folder


def resolve_depthcrafter_weights(weights: str | os.PathLike, svd_weights: str | os.PathLike | None = None
                                 ) -> tuple[Path, Path]:
    """(unet folder, SVD folder) of a DepthCrafter weights folder (module docstring); Ex4dError if incomplete."""
    check(weights is not None, f"DepthCrafter needs --depth-weights.\n{DEPTHCRAFTER_LAYOUT}")
    root = Path(weights).expanduser()
    check(root.is_dir(), f"DepthCrafter weights folder {root} does not exist.\n{DEPTHCRAFTER_LAYOUT}")
    unet = root / "unet" if (root / "unet").is_dir() else root
    if unet == root and not (root / "config.json").is_file():
        raise Ex4dError(f"incomplete DepthCrafter weights: {root} has neither unet/ nor a config.json.\n"
                        f"{DEPTHCRAFTER_LAYOUT}")
    _model_folder(unet, "diffusers", "DepthCrafter UNet", DEPTHCRAFTER_LAYOUT)
    if svd_weights is not None:
        svd = Path(svd_weights).expanduser()
        check(svd.is_dir(), f"Stable Video Diffusion folder {svd} (--svd-weights) does not exist.\n{DEPTHCRAFTER_LAYOUT}")
    else:
        svd = root / "svd"
        check(svd.is_dir(), f"incomplete DepthCrafter weights: missing the Stable Video Diffusion folder {svd} "
                            f"(or pass it with --svd-weights).\n{DEPTHCRAFTER_LAYOUT}")
    _model_folder(svd / "vae", "diffusers", "Stable Video Diffusion VAE", DEPTHCRAFTER_LAYOUT)
    _model_folder(svd / "image_encoder", "transformers", "Stable Video Diffusion image encoder", DEPTHCRAFTER_LAYOUT)
    _model_folder(svd / "scheduler", "scheduler", "Stable Video Diffusion scheduler", DEPTHCRAFTER_LAYOUT)
    return unet, svd


def resolve_depth_anything_weights(weights: str | os.PathLike) -> Path:
    """The Depth Anything V2 checkpoint folder; Ex4dError naming the layout if it is missing or not one."""
    check(weights is not None, f"Depth Anything V2 needs --depth-weights.\n{DEPTH_ANYTHING_LAYOUT}")
    root = Path(weights).expanduser()
    check(root.is_dir(), f"Depth Anything V2 weights folder {root} does not exist.\n{DEPTH_ANYTHING_LAYOUT}")
    pth = sorted(p.name for p in root.glob("*.pth"))
    if pth and not (root / "config.json").is_file():
        raise Ex4dError(f"{root} holds original checkpoints ({', '.join(pth)}), which ex4d does not read; "
                        f"download the transformers version instead.\n{DEPTH_ANYTHING_LAYOUT}")
    _model_folder(root, "transformers", "Depth Anything V2", DEPTH_ANYTHING_LAYOUT)
    check((root / "preprocessor_config.json").is_file(),
          f"incomplete Depth Anything V2 weights: missing {root / 'preprocessor_config.json'}.\n{DEPTH_ANYTHING_LAYOUT}")
    from ..io.json_input import expect, read_json

    cfg = expect(read_json(root / "config.json", "Depth Anything config"), dict, f"{root / 'config.json'}")
    model_type = cfg.get("model_type")
    check(model_type == "depth_anything",
          f"{root} is a {model_type!r} checkpoint, not Depth Anything (model_type 'depth_anything').\n"
          f"{DEPTH_ANYTHING_LAYOUT}")
    return root


def weights_fingerprint(*folders: Path) -> str:
    """Short hex digest of the names, sizes and modification times of the files under ``folders``.

    Cheap (no file is read) and changes when weights are replaced, so cached
    depth made with other weights at the same path is not reused.
    """
    h = hashlib.sha256()
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and not p.name.startswith(".") and p.suffix in (".json", ".safetensors", ".bin"):
                st = p.stat()
                h.update(f"{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
