"""What the browser is shown never names a path on the server: paths become relative to the job folder.

The library's messages and ``config.json`` name files by their absolute paths
(right on the command line, wrong in a web page: they tell a visitor where the
server keeps its work and weights). Before a message or a config leaves the
server, :func:`redact_text` / :func:`redact_json` rewrite

* a path inside the job's folder → relative to it (``input/video.mp4``),
* another job's folder or the work root → ``<job>`` / ``<workdir>``,
* any other absolute path (model weights, the installed package, a temp file) → its last component.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

__all__ = ["redact_text", "redact_json"]

# An absolute POSIX path (two or more components) not glued to a word, or a Windows one (C:\...).
_ABS_PATH = re.compile(r"(?<![\w.~/-])(?:/[^\s'\"`<>|:;,()\[\]{}]+){2,}|\b[A-Za-z]:\\[^\s'\"`<>|;,()\[\]{}]+")
_TOKEN_DIR = r"[A-Za-z0-9_-]{22}"
_OURS = ("/api/", "/static/", "/view")


def _variants(path: Path) -> list[str]:
    out = {str(path)}
    try:
        out.add(str(path.resolve()))
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


def redact_text(text: str, job_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                hidden: Iterable[str | os.PathLike] = ()) -> str:
    """``text`` with every server path rewritten (module docstring)."""
    text = str(text)
    if job_dir is not None:
        for v in _variants(Path(job_dir)):
            text = text.replace(v + os.sep, "").replace(v, ".")
    if root is not None:
        for v in _variants(Path(root)):
            text = re.sub(re.escape(v + os.sep) + _TOKEN_DIR + r"[^\s'\"]*", "<another job>", text)
            text = text.replace(v, "<workdir>")
    for h in hidden:
        if h:
            for v in _variants(Path(h)):
                text = text.replace(v, Path(v).name or "<server path>")
    return _ABS_PATH.sub(_last_part, text)


def _last_part(m: re.Match) -> str:
    path = m.group(0)
    if path.startswith(_OURS):  # the app's own URLs are not server paths
        return path
    tail = "." if path.endswith(".") else ""
    return (re.split(r"[\\/]", path.rstrip("./\\"))[-1] or "<server path>") + tail


def redact_json(value, job_dir=None, root=None, hidden: Iterable[str | os.PathLike] = ()):
    """A copy of the JSON value ``value`` with :func:`redact_text` applied to every string (keys included)."""
    hidden = list(hidden)
    if isinstance(value, str):
        return redact_text(value, job_dir, root, hidden)
    if isinstance(value, list):
        return [redact_json(v, job_dir, root, hidden) for v in value]
    if isinstance(value, dict):
        return {redact_text(str(k), job_dir, root, hidden): redact_json(v, job_dir, root, hidden)
                for k, v in value.items()}
    return value
