"""What the whole server lends out, bounded: sessions it issued, disk for job folders, upload slots.

A client cannot get round these by inventing cookies: a session is a random
token the server issued and remembers. Each bound fails with an
:class:`~ex4d.errors.Ex4dError` subclass the HTTP layer turns into its status:

=====================  ======  ===============================================================
error                  status  when
=====================  ======  ===============================================================
:class:`UnknownSession`  403   a session token this server did not issue (or has forgotten)
:class:`QueueFull`       429   the queue or the upload slots are full: try again in a while
:class:`ServerBusy`      503   the server keeps as many jobs or busy sessions as it may
:class:`DiskFull`        507   the job folders use the disk they may, or the disk is nearly full
=====================  ======  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import Ex4dError

__all__ = ["UnknownSession", "QueueFull", "ServerBusy", "DiskFull", "SessionRegistry", "DiskBudget", "UploadSlots",
           "new_token"]


class UnknownSession(Ex4dError):
    """A session token this server did not issue (or has forgotten): the page must be reloaded (HTTP 403)."""


class QueueFull(Ex4dError):
    """Too many jobs are waiting, or too many uploads are in progress (HTTP 429: try again in a while)."""


class ServerBusy(Ex4dError):
    """The server holds as many jobs or sessions as it keeps (HTTP 503)."""


class DiskFull(Ex4dError):
    """The job folders use the disk space this server allows (HTTP 507)."""


def new_token() -> str:
    """A fresh 128-bit URL-safe random token (22 characters)."""
    return secrets.token_urlsafe(16)


class SessionRegistry:
    """Session tokens issued by this server, each with the time it was last seen; at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def issue(self, busy: set[str], owners: set[str]) -> tuple[str, list[str]]:
        """(a new token, the tokens forgotten to make room for it).

        When full, sessions without jobs (``owners``) are forgotten first, then the longest idle;
        sessions with queued or running work (``busy``) never: ServerBusy if only those are left.
        """
        with self._lock:
            forgotten: list[str] = []
            if len(self._seen) >= self.limit:
                idle = sorted((t for t in self._seen if t not in busy), key=lambda t: (t in owners, self._seen[t]))
                if not idle:
                    raise ServerBusy(f"this server has {len(self._seen)} sessions with work in progress, the most it "
                                     f"keeps; try again later")
                forgotten = idle[: len(self._seen) - self.limit + 1]
                for t in forgotten:
                    del self._seen[t]
            token = new_token()
            self._seen[token] = time.monotonic()
            return token, forgotten

    def known(self, token) -> bool:
        """True if ``token`` was issued here and not forgotten since (and marks it as seen now)."""
        with self._lock:
            if not isinstance(token, str) or token not in self._seen:
                return False
            self._seen[token] = time.monotonic()
            return True


class DiskBudget:
    """Bytes the job folders under ``root`` may still use: ``max_bytes`` in all, ``min_free_bytes`` left on the disk."""

    def __init__(self, root: Path, max_bytes: int, min_free_bytes: int, max_age: float = 2.0) -> None:
        self.root, self.max_bytes, self.min_free_bytes, self.max_age = Path(root), max_bytes, min_free_bytes, max_age
        self._measured: tuple[float, int] = (-1e9, 0)  # (when, bytes)

    def invalidate(self) -> None:
        """Measure again at the next call (after something was written)."""
        self._measured = (-1e9, 0)

    def used(self) -> int:
        """Bytes in the job folders (measured at most every ``max_age`` seconds)."""
        when, used = self._measured
        now = time.monotonic()
        if now - when <= self.max_age:
            return used
        used = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                try:
                    used += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        self._measured = (now, used)
        return used

    def left(self) -> int:
        """Bytes the job folders may still grow by (the cap and the file system's free space)."""
        try:
            free = shutil.disk_usage(self.root).free - self.min_free_bytes
        except OSError:
            free = 0
        return max(0, min(self.max_bytes - self.used(), free))

    def check(self, need: int = 0) -> None:
        """DiskFull unless ``need`` more bytes fit."""
        if self.left() <= need:
            raise DiskFull(f"the server's job storage is full ({self.used() / 1024**3:.1f} GB used of "
                           f"{self.max_bytes / 1024**3:g} GB allowed, or the disk is nearly full); try again once "
                           f"older jobs have expired")


class UploadSlots:
    """At most ``limit`` uploads at once (each holds a file being streamed and then checked), one per key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold a slot for ``key`` (a job id) while uploading; QueueFull when none is free or ``key`` holds one."""
        with self._lock:
            if key in self.active:
                raise QueueFull("an upload to this job is already in progress; wait for it to finish")
            if len(self.active) >= self.limit:
                raise QueueFull(f"{len(self.active)} uploads are in progress, the most this server takes at once; "
                                f"try again in a moment")
            self.active.add(key)
        try:
            yield
        finally:
            with self._lock:
                self.active.discard(key)
