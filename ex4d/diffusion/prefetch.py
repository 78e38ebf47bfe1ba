"""Start reading weight files into the page cache before Python has even imported torch.

No torch import here: the commands call :func:`prefetch_files` first thing, so the kernel reads the
files from disk while the interpreter spends its seconds importing torch, diffusers and transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["prefetch_files"]


def prefetch_files(*folders: str | os.PathLike | None) -> int:
    """Ask the kernel to start reading the weight files under ``folders`` into the page cache (non-blocking).

    Called first thing by the commands, so the disk reads overlap the seconds Python spends importing
    torch, diffusers and transformers; files already cached cost nothing. Returns the bytes asked for.
    """
    if not hasattr(os, "posix_fadvise"):
        return 0
    total = 0
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for f in Path(folder).rglob("*"):
            if f.suffix in (".safetensors", ".pth") and f.is_file() and "text_encoder" not in f.parts:
                try:
                    fd = os.open(f, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                        total += f.stat().st_size
                    finally:
                        os.close(fd)
                except OSError:
                    pass
    return total
