"""The prepared dataset's bookkeeping: ``OUT/manifest.jsonl`` (append-only, fsynced) and ``OUT/config.json``.

A re-run of ``ex4d prepare`` reads the manifest to skip finished and skipped
videos (a torn last line, from a crash mid-write, is ignored; so is any line
that is not a record) and refuses an ``OUT`` prepared with other settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import Ex4dError, check
from ..io.atomic import atomic_write_json

__all__ = ["read_manifest", "Manifest", "video_record", "check_dataset_config"]


def video_record(video: Path, vid: str, status: str, reason: str, clips: list[str] | None = None) -> dict:
    """The manifest record of one video: ``status`` done | skipped | failed, with the reason and its clip ids."""
    return {"type": "video", "video": str(video), "video_id": vid, "status": status, "reason": reason,
            "clips": clips or []}


def read_manifest(out: str | os.PathLike) -> list[dict]:
    """Records of ``OUT/manifest.jsonl`` in order; a torn last line (a crash mid-write) is ignored."""
    path = Path(out) / "manifest.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("type"), str):
            records.append(record)
    return records


class Manifest:
    """Appends records to ``OUT/manifest.jsonl``: one JSON line each, flushed and fsynced (driver only)."""

    def __init__(self, out: Path) -> None:
        path = out / "manifest.jsonl"
        if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with open(path, "ab") as f:  # a torn last line: end it so the next record starts cleanly
                f.write(b"\n")
        self._f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def check_dataset_config(out: Path, settings: dict) -> None:
    """Refuse an ``out`` prepared with other settings (or holding other files); write ``config.json`` if new."""
    path = out / "config.json"
    if path.is_file():
        from .preflight import read_small_json

        saved = read_small_json(path, "the config.json of an ex4d prepare dataset")
        theirs = saved.get("prepare") if isinstance(saved, dict) else None
        check(isinstance(theirs, dict), f"{path} is not an ex4d prepare config (no 'prepare' object); "
                                        f"use another --out")
        diff = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
        check(not diff, f"{out} holds a dataset prepared with other settings (different: {', '.join(diff)}); "
                        f"re-run with the same settings to resume, or choose another --out")
        return
    if out.exists() and any(p.name not in (".tmp", "clips", "manifest.jsonl") for p in out.iterdir()):
        raise Ex4dError(f"{out} exists and holds files that are not an ex4d dataset; choose another --out")
    from .. import __version__

    atomic_write_json(path, {"prepare": settings, "ex4d_version": __version__})
