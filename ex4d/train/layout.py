"""The prepared-dataset layout: one folder per training sample, named as the original EX-4D loader expects.

::

    OUT/
      config.json              the PrepareConfig of the run (a resumed run must match it)
      manifest.jsonl           append-only log: one JSON line per finished, skipped or failed clip/video
      clips/
        <clip_id>/
          gt.mp4               target: the source frames [T, H, W, 3] (H.264)
          render_180.mp4       condition: target × mask (0 where unknown)
          mask_180.mp4         mask: 255 = known, 0 = to be generated
          depth.npz            z-depth [T, H, W] float16 (key ``depth``, ``kind='depth'``), optional
          cameras.json         the sampled novel cameras (ex4d cameras.json)
          meta.json            source video, frame indices, fps, K, sampled camera, mask stats; written last
      .tmp/                    clips being written (renamed into clips/ when complete)

The three videos are the triple the original's loader read (its ``dataset.py``
globbed ``*/*mask_180.mp4`` under a folder, took ``render_180.mp4`` beside
it as the condition and ``gt.mp4`` as the target; "180" was its camera
name and is kept only for that compatibility). A clip folder exists only once
complete: it is assembled in ``.tmp/`` and renamed into place, ``meta.json``
being its last file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = [
    "TARGET",
    "CONDITION",
    "MASK",
    "DEPTH",
    "CAMERAS",
    "META",
    "CLIP_FILES",
    "clips_dir",
    "is_complete",
    "video_id",
    "list_clips",
]

TARGET = "gt.mp4"
CONDITION = "render_180.mp4"
MASK = "mask_180.mp4"
DEPTH = "depth.npz"
CAMERAS = "cameras.json"
META = "meta.json"
CLIP_FILES = (TARGET, CONDITION, MASK, CAMERAS, META)


def clips_dir(root: str | Path) -> Path:
    """``root/clips`` if it exists (a prepared dataset), else ``root`` itself (a bare folder of clip folders)."""
    root = Path(root)
    return root / "clips" if (root / "clips").is_dir() else root


def is_complete(clip: Path) -> bool:
    """True when ``clip`` holds every file of a finished sample (meta.json is written last)."""
    return all((clip / name).is_file() for name in CLIP_FILES)


def video_id(path: str | Path, root: str | Path | None = None) -> str:
    """Stable, file-system-safe id of a video: its sanitised stem + 8 hex digits of its path relative to ``root``."""
    path = Path(path)
    rel = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:48] or "video"
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def list_clips(root: str | Path) -> list[Path]:
    """Complete clip folders under ``root`` (a prepared dataset or a folder of clip folders), sorted by name."""
    base = clips_dir(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p))
