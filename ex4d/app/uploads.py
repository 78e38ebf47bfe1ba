"""Uploads: limits, file-type checks by content (never by the name), validation with ex4d's readers.

An upload is written by the server to a fixed name inside its job's folder
(the user's file name is never used as a path); these functions decide
whether the bytes are what they claim to be before any decoder sees them.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check

__all__ = ["AppLimits", "sniff_video", "sniff_depth", "check_video_file", "check_depth_file", "depth_header_info",
           "UPLOAD_KINDS"]

#: What can be uploaded to a job → the fixed file stem it is stored under.
UPLOAD_KINDS = {"video": "video", "depth": "depth"}


@dataclass(frozen=True)
class AppLimits:
    """What one job, one session and the whole server may ask of the machine (``ex4d app`` flags set them)."""

    max_upload_mb: float = 200.0        #: per uploaded file
    max_duration_s: float = 120.0       #: of an uploaded video
    max_source_pixels: int = 4096 * 4096  #: width × height of an uploaded video
    max_frames: int = 49                #: frames a job may process
    max_res: int = 512                  #: longer side of the processed frames
    max_depth_mb: float = 512.0         #: uncompressed size of an uploaded .npz/.npy (from its headers)
    max_queue: int = 8                  #: jobs waiting at once, all sessions (one more runs)
    max_jobs_per_session: int = 20      #: kept at once per browser session (oldest finished ones are removed)
    max_jobs: int = 200                 #: job folders kept at once, all sessions together
    max_sessions: int = 1000            #: browser sessions the server remembers (idle ones are forgotten first)
    max_disk_gb: float = 20.0           #: disk used by all job folders together
    min_free_gb: float = 1.0            #: free space kept on the work folder's file system
    max_concurrent_uploads: int = 4     #: uploads streamed or checked at once, all sessions
    keep_hours: float = 24.0            #: finished jobs older than this are deleted

    def __post_init__(self):
        def number(name, lo, hi, integer=False):
            v = getattr(self, name)
            ok = (isinstance(v, int) if integer else isinstance(v, (int, float))) and not isinstance(v, bool)
            check(ok and math.isfinite(v) and lo <= v <= hi,
                  f"{name} must be {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}], got {v!r}")

        number("max_upload_mb", 1e-3, 1e6)
        number("max_duration_s", 1e-3, 1e6)
        number("max_source_pixels", 1, 1 << 30, integer=True)
        number("max_frames", 1, 10000, integer=True)
        check(isinstance(self.max_res, int) and 64 <= self.max_res <= 4096 and self.max_res % 16 == 0,
              f"max_res must be a multiple of 16 in [64, 4096], got {self.max_res!r}")
        number("max_depth_mb", 1e-3, 1e6)
        number("max_queue", 1, 10000, integer=True)
        number("max_jobs_per_session", 1, 10000, integer=True)
        number("max_jobs", 1, 1_000_000, integer=True)
        number("max_sessions", 1, 1_000_000, integer=True)
        number("max_disk_gb", 1e-6, 1e6)
        number("min_free_gb", 0, 1e6)
        number("max_concurrent_uploads", 1, 1000, integer=True)
        number("keep_hours", 1e-3, 1e6)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_depth_bytes(self) -> int:
        return int(self.max_depth_mb * 1024 * 1024)

    @property
    def max_disk_bytes(self) -> int:
        return int(self.max_disk_gb * 1024**3)

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_gb * 1024**3)

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


_MAX_NPZ_MEMBERS = 16
_MAX_NPY_HEADER = 1 << 16


def _npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of the .npy stream ``f``, without reading the array."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        check(version in ((1, 0), (2, 0), (3, 0)), f"{where}: unknown .npy format version {version}")
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
        else:
            shape, _, dtype = npformat.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
    except Ex4dError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as e:
        raise Ex4dError(f"{where} is not a valid .npy array ({str(e)[:120]})") from None
    check(not dtype.hasobject, f"{where} holds Python objects; expected a numeric array (np.save of floats)")
    check(dtype.kind in "fiubUS", f"{where} has dtype {dtype}; expected a numeric array (float, int or bool)")
    return tuple(int(n) for n in shape), dtype


def _check_zip_directory(path: Path) -> None:
    """Refuse an archive whose central directory is large before ``zipfile`` parses it (each entry is an object)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    check(at >= 0 and len(tail) - at >= 22, "the uploaded depth file is not a valid .npz (no zip directory)")
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[at:at + 22])
    check(entries != 0xFFFF and cd_size != 0xFFFFFFFF, "the uploaded .npz is a zip64 archive (over 4 GB or 65535 "
                                                       "members); this app takes plain np.savez files")
    check(entries <= _MAX_NPZ_MEMBERS and cd_size <= _MAX_NPZ_MEMBERS * 1024,
          f"the uploaded .npz lists {entries} members; expected at most {_MAX_NPZ_MEMBERS} arrays (np.savez)")


def depth_header_info(path: Path, limits: AppLimits) -> dict:
    """Arrays of an uploaded .npz/.npy from its headers only: ``{name: (shape, dtype)}``; Ex4dError above the limits.

    Nothing is decompressed or loaded: the zip directory gives each member's
    uncompressed size and each .npy header its shape and dtype, and both must
    stay within ``limits.max_depth_mb`` (a few-MB zip can unpack to gigabytes).
    """
    limit, limit_text = limits.max_depth_bytes, f"{limits.max_depth_mb:g} MB"
    arrays: dict = {}
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:6] == b"\x93NUMPY":
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f, "the uploaded .npy")
            offset = f.tell()
        nbytes = math.prod(shape) * dtype.itemsize
        check(nbytes <= limit, f"the uploaded .npy holds {_mb(nbytes)} ({'×'.join(map(str, shape))} {dtype}); this "
                               f"app takes at most {limit_text}")
        check(path.stat().st_size >= offset + nbytes, "the uploaded .npy is truncated (shorter than its header says)")
        return {"": (shape, dtype)}
    _check_zip_directory(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            check(infos, "the uploaded .npz is empty")
            check(len(infos) <= _MAX_NPZ_MEMBERS, f"the uploaded .npz holds {len(infos)} members; expected at most "
                                                  f"{_MAX_NPZ_MEMBERS} arrays (np.savez)")
            bad = [i.filename for i in infos if not i.filename.endswith(".npy") or i.is_dir()]
            check(not bad, f"the uploaded .npz holds non-array members {bad[:3]}; expected only arrays (np.savez)")
            total = sum(i.file_size for i in infos)
            check(total <= limit, f"the uploaded .npz unpacks to {_mb(total)}; this app takes at most {limit_text}")
            declared = 0
            for info in infos:
                name = info.filename[:-4]
                with z.open(info) as member:
                    shape, dtype = _npy_header(member, f"the uploaded .npz's array {name!r}")
                nbytes = math.prod(shape) * dtype.itemsize
                declared += nbytes
                check(declared <= limit, f"the uploaded .npz's arrays hold {_mb(declared)} or more; this app takes "
                                         f"at most {limit_text}")
                check(nbytes <= info.file_size, f"the uploaded .npz's array {name!r} is truncated (its header says "
                                                f"{'×'.join(map(str, shape))} {dtype})")
                arrays[name] = (shape, dtype)
    except zipfile.BadZipFile as e:
        raise Ex4dError(f"the uploaded depth file is not a valid .npz ({e})") from None
    except (NotImplementedError, RuntimeError) as e:  # unsupported compression, encrypted member
        raise Ex4dError(f"the uploaded .npz cannot be read ({str(e)[:120]}); save it with np.savez") from None
    return arrays


def check_depth_file(path: Path, limits: AppLimits) -> dict:
    """{"frames", "width", "height", "format", "keys"} of an uploaded depth file (.npz/.npy), or Ex4dError."""
    from ..io.depth import load_depth_file

    with open(path, "rb") as f:
        head = f.read(16)
    fmt = sniff_depth(head)
    check(fmt is not None, "the uploaded depth file is neither .npz nor .npy (recognised by content): save depth "
                           "with numpy (np.savez / np.save), keys 'depth' or 'depths'")
    arrays = depth_header_info(path, limits)  # sizes from the headers, before anything is decompressed
    keys = sorted(arrays) if fmt == "npz" else []
    values = load_depth_file(path)
    T, h, w = values.shape
    return {"frames": int(T), "width": int(w), "height": int(h), "format": fmt, "keys": keys}
