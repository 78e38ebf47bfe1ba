"""Uploads: limits, file-type checks by content (never by the name), validation with ex4d's readers.

An upload is written by the server to a fixed name inside its job's folder
(the user's file name is never used as a path); these functions decide
whether the bytes are what they claim to be before any decoder sees them.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check

__all__ = ["AppLimits", "sniff_video", "sniff_depth", "check_video_file", "check_depth_file", "UPLOAD_KINDS"]

#: What can be uploaded to a job → the fixed file stem it is stored under.
UPLOAD_KINDS = {"video": "video", "depth": "depth"}


@dataclass(frozen=True)
class AppLimits:
    """What one job may ask of the machine (``ex4d app`` flags set them)."""

    max_upload_mb: float = 200.0        #: per uploaded file
    max_duration_s: float = 120.0       #: of an uploaded video
    max_source_pixels: int = 4096 * 4096  #: width × height of an uploaded video
    max_frames: int = 49                #: frames a job may process
    max_res: int = 512                  #: longer side of the processed frames
    max_depth_mb: float = 2048.0        #: uncompressed size of an uploaded .npz/.npy
    max_queue: int = 8                  #: jobs waiting at once (further runs are refused until one ends)
    max_jobs_per_session: int = 20      #: kept at once per browser session (oldest finished ones are removed)
    keep_hours: float = 24.0            #: finished jobs older than this are deleted

    def __post_init__(self):
        check(self.max_upload_mb > 0, f"max upload size must be > 0 MB, got {self.max_upload_mb}")
        check(self.max_duration_s > 0, f"max duration must be > 0 s, got {self.max_duration_s}")
        check(1 <= self.max_frames <= 10000, f"max frames must be in [1, 10000], got {self.max_frames}")
        check(64 <= self.max_res <= 4096 and self.max_res % 16 == 0,
              f"max resolution must be a multiple of 16 in [64, 4096], got {self.max_res}")
        check(self.max_queue >= 1, f"max queue must be ≥ 1, got {self.max_queue}")
        check(self.keep_hours > 0, f"keep hours must be > 0, got {self.keep_hours}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_dict(self) -> dict:
        return asdict(self)


def sniff_video(head: bytes) -> str | None:
    """Container of a video from its first bytes (≥ 64 recommended): mp4 | mov | webm | mkv | avi | gif, or None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"  # old QuickTime files without ftyp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def sniff_depth(head: bytes) -> str | None:
    """Type of a depth file from its first bytes: npz | npy, or None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    return None


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def check_video_file(path: Path, limits: AppLimits) -> dict:
    """{"frames", "fps", "width", "height", "duration_s", "container"} of an uploaded video, or Ex4dError."""
    from ..io.video import probe_video

    with open(path, "rb") as f:
        head = f.read(64)
    container = sniff_video(head)
    check(container is not None, "the uploaded file is not a video this app accepts (mp4, mov, webm, mkv, avi or "
                                 "gif, recognised by content, not by name)")
    frames, fps, width, height = probe_video(path)
    check(frames >= 1, "the uploaded video holds no frame")
    duration = frames / fps if fps > 0 else math.inf
    check(duration <= limits.max_duration_s,
          f"the video lasts {duration:.1f} s; this app takes at most {limits.max_duration_s:g} s (trim it first)")
    check(width * height <= limits.max_source_pixels,
          f"the video is {width}×{height}; this app takes at most {limits.max_source_pixels / 1e6:.1f} megapixels")
    return {"frames": int(frames), "fps": float(fps), "width": int(width), "height": int(height),
            "duration_s": float(duration), "container": container}


def _check_npz_members(path: Path, limits: AppLimits) -> None:
    """Refuse zip bombs and non-array members before numpy opens the archive."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except zipfile.BadZipFile as e:
        raise Ex4dError(f"the uploaded depth file is not a valid .npz ({e})") from None
    check(infos, "the uploaded .npz is empty")
    bad = [i.filename for i in infos if not i.filename.endswith(".npy")]
    check(not bad, f"the uploaded .npz holds non-array members {bad[:3]}; expected only arrays (np.savez)")
    total = sum(i.file_size for i in infos)
    check(total <= limits.max_depth_mb * 1024 * 1024,
          f"the uploaded .npz unpacks to {_mb(total)}; this app takes at most {limits.max_depth_mb:g} MB")


def check_depth_file(path: Path, limits: AppLimits) -> dict:
    """{"frames", "width", "height", "format", "keys"} of an uploaded depth file (.npz/.npy), or Ex4dError."""
    from ..io.depth import load_depth_file

    with open(path, "rb") as f:
        head = f.read(16)
    fmt = sniff_depth(head)
    check(fmt is not None, "the uploaded depth file is neither .npz nor .npy (recognised by content): save depth "
                           "with numpy (np.savez / np.save), keys 'depth' or 'depths'")
    keys = []
    if fmt == "npz":
        _check_npz_members(path, limits)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
    values = load_depth_file(path)
    T, h, w = values.shape
    return {"frames": int(T), "width": int(w), "height": int(h), "format": fmt, "keys": keys}
