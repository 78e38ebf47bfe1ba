"""Prompt states kept on disk, so a run whose prompt was seen before never loads the 11 GB text encoder.

Most runs use the same prompt pair (the original's camera prompt and Wan's negative prompt). Its UMT5
states ([1, 512, 4096] bf16 each, 4 MiB) are stored under ``cache_dir()/prompts/<key>.safetensors``,
the key a SHA-256 of everything that decides them: the prompt texts, the text encoder's and tokenizer's
files (path, size, modification time), the dtype, the device kind and name, and the torch/transformers
versions. A stored entry gives back exactly the tensors the encoder would compute in this setting.

Where: ``$EX4D_CACHE_DIR/prompts`` (default ``$XDG_CACHE_HOME/ex4d`` or ``~/.cache/ex4d``);
``EX4D_PROMPT_CACHE=0`` turns it off. Entries are written atomically; an unreadable entry is
ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..io.atomic import atomic_path

__all__ = ["cache_dir", "PromptStore", "prompt_store_for"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """ex4d's cache folder: ``$EX4D_CACHE_DIR``, else ``$XDG_CACHE_HOME/ex4d``, else ``~/.cache/ex4d``."""
    if os.environ.get("EX4D_CACHE_DIR"):
        return Path(os.environ["EX4D_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ex4d"


def _files_identity(folders: list[Path]) -> list:
    out = []
    for folder in folders:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                st = f.stat()
                out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


class PromptStore:
    """Disk cache of prompt states for one text encoder setup (``identity``: JSON-able, see the module docstring)."""

    def __init__(self, identity: object, root: Path | None = None) -> None:
        self.root = (root or cache_dir()) / "prompts"
        self._base = json.dumps(identity, sort_keys=True)

    def _path(self, texts: list[str]) -> Path:
        digest = hashlib.sha256((self._base + "\0" + json.dumps(texts)).encode()).hexdigest()[:40]
        return self.root / f"{digest}.safetensors"

    def has(self, texts: list[str]) -> bool:
        return self._path(texts).is_file()

    def get(self, texts: list[str]) -> torch.Tensor | None:
        """The stored states [len(texts), 512, C] (CPU) or None."""
        path = self._path(texts)
        if not path.is_file():
            return None
        try:
            from safetensors.torch import load_file

            states = load_file(str(path))["states"]
        except Exception as e:  # a truncated or foreign file: recompute and overwrite
            log.warning("ignoring unreadable prompt cache entry %s (%s)", path, e)
            return None
        return states if states.shape[0] == len(texts) else None

    def put(self, texts: list[str], states: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(texts)
        try:
            with atomic_path(path) as tmp:
                save_file({"states": states.detach().to("cpu").contiguous()}, str(tmp),
                          metadata={"texts": json.dumps(texts)[:4000]})
        except OSError as e:  # a read-only cache folder only costs the next run the text encoder
            log.warning("could not write the prompt cache entry %s (%s)", path, e)


def prompt_store_for(encoder_folder: Path, dtype: torch.dtype, device: torch.device) -> PromptStore | None:
    """The :class:`PromptStore` of the text encoder in the diffusers-layout ``encoder_folder``, or None if off."""
    if os.environ.get("EX4D_PROMPT_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    import transformers

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    identity = {"files": _files_identity([encoder_folder / "text_encoder", encoder_folder / "tokenizer"]),
                "dtype": str(dtype), "device": [device.type, device_name], "torch": torch.__version__,
                "transformers": transformers.__version__, "text_len": 512, "version": 1}
    return PromptStore(identity)
