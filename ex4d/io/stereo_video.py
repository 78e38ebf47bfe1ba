"""Stereo video files: pack two eyes into one frame, tag the mp4 with its stereo mode, anaglyph.

Layouts (:data:`LAYOUTS`)
-------------------------
===========  ==========================================  ===========================  ===============
layout       frame                                       ``half=True``                ``st3d`` mode
===========  ==========================================  ===========================  ===============
``sbs``      left eye | right eye, 2W × H                each eye squeezed to W/2     2 (left-right)
``ou``       left eye over right eye, W × 2H             each eye squeezed to H/2     1 (top-bottom)
``anaglyph`` one W × H red/cyan image (Dubois)           —                            none (a flat video)
===========  ==========================================  ===========================  ===============

Stereo-mode metadata
--------------------
Players learn the layout from the Spherical Video V2 ``st3d`` box (Google's
spatial-media RFC): a FullBox (version 0, flags 0) holding one byte,
``stereo_mode`` (0 mono, 1 top-bottom with the left eye on top, 2 left-right
with the left eye on the left), placed in the video track's sample entry
(``moov/trak/mdia/minf/stbl/stsd/avc1``) after the codec's boxes and before
the optional ``pasp``/``clap`` boxes. FFmpeg reads it (``ffprobe`` reports
"Stereo 3D: side by side / top and bottom") and its mp4 muxer writes it only
from stream side data, which PyAV cannot set; the Matroska detour
(``stereo_mode`` tag → mkv → mp4 remux) quantises timestamps to milliseconds
(29.97 fps came back as 30/1). So :func:`write_st3d` inserts the box into the
file PyAV wrote: it rebuilds only ``moov`` (a few kB; every enclosing box's
size grows by 13 bytes, and chunk offsets move when ``moov`` precedes
``mdat``) and copies the media data untouched.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check

__all__ = ["LAYOUTS", "ST3D_MODES", "pack_stereo", "anaglyph", "write_stereo_video", "write_st3d", "read_st3d",
           "DUBOIS_LEFT", "DUBOIS_RIGHT"]

LAYOUTS = ("sbs", "ou", "anaglyph")
#: st3d stereo_mode of each packed layout (Spherical Video V2 RFC).
ST3D_MODES = {"sbs": 2, "ou": 1}

#: Dubois' least-squares red/cyan anaglyph matrices (linear RGB; rows = output R, G, B).
DUBOIS_LEFT = np.array([[0.456100, 0.500484, 0.176381],
                        [-0.0400822, -0.0378246, -0.0157589],
                        [-0.0152161, -0.0205971, -0.00546856]])
DUBOIS_RIGHT = np.array([[-0.0434706, -0.0879388, -0.00155529],
                         [0.378476, 0.73364, -0.0184503],
                         [-0.0721527, -0.112961, 1.2264]])


def _check_pair(left: np.ndarray, right: np.ndarray) -> None:
    check(isinstance(left, np.ndarray) and left.dtype == np.uint8 and left.ndim == 4 and left.shape[-1] == 3,
          f"left eye must be [T, H, W, 3] uint8, got {getattr(left, 'shape', None)} {getattr(left, 'dtype', None)}")
    check(isinstance(right, np.ndarray) and right.shape == left.shape and right.dtype == np.uint8,
          f"right eye must match the left eye {list(left.shape)} uint8, got {getattr(right, 'shape', None)}")


def _check_layout(layout: str) -> None:
    check(layout in LAYOUTS, f"unknown stereo layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def anaglyph(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Red/cyan anaglyph [..., H, W, 3] uint8 of two sRGB uint8 views [..., H, W, 3] (Dubois, in linear light).

    The left eye sees through the red filter, the right eye through the cyan one.
    """
    check(left.shape == right.shape and left.shape[-1] == 3 and left.dtype == np.uint8 == right.dtype,
          f"anaglyph needs two uint8 RGB views of one shape, got {left.shape} and {right.shape}")
    lut = _srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
    out = np.empty(left.shape, np.uint8)
    ml, mr = DUBOIS_LEFT.T.astype(np.float32), DUBOIS_RIGHT.T.astype(np.float32)
    frame = left.shape[-3:]
    flat_l, flat_r, flat_o = left.reshape((-1,) + frame), right.reshape((-1,) + frame), out.reshape((-1,) + frame)
    for i in range(flat_o.shape[0]):  # frame by frame: bounded temporaries
        lin = lut[flat_l[i]] @ ml + lut[flat_r[i]] @ mr
        flat_o[i] = np.clip(_linear_to_srgb(np.clip(lin, 0.0, 1.0)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def pack_stereo(left: np.ndarray, right: np.ndarray, layout: str, half: bool = False) -> np.ndarray:
    """One video [T, H', W', 3] uint8 holding both eyes [T, H, W, 3] uint8 in ``layout`` (module docstring).

    ``half`` squeezes each eye to half width (``sbs``) or half height (``ou``),
    so the frame keeps the eye's size (frame-compatible "half SBS / OU", for 3D TVs).
    """
    import cv2

    _check_pair(left, right)
    _check_layout(layout)
    if layout == "anaglyph":
        check(not half, "--half applies to the sbs and ou layouts, not to anaglyph")
        return anaglyph(left, right)
    T, H, W = left.shape[:3]
    if half:
        size = (max(1, W // 2), H) if layout == "sbs" else (W, max(1, H // 2))
        check(size[0] >= 2 and size[1] >= 2, f"frames of {W}×{H} are too small for a half-size layout")
        left = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in left])
        right = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in right])
    return np.concatenate([left, right], axis=2 if layout == "sbs" else 1)


# ---------------------------------------------------------------------------------------------- ISO-BMFF

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_VISUAL_SAMPLE_ENTRY_FIELDS = 78  # bytes of VisualSampleEntry fields between the box header and its child boxes
_AFTER_ST3D = {b"pasp", b"clap", b"btrt"}  # optional trailing boxes st3d must precede


def _boxes(buf: bytes, start: int, end: int):
    """(offset, size, type, header length) of each box in ``buf[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1:
            check(pos + 16 <= end, "truncated mp4 box header")
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise Ex4dError(f"malformed mp4: box {kind!r} at byte {pos} has size {size}")
        yield pos, size, kind, head
        pos += size


def _box(kind: bytes, payload: bytes) -> bytes:
    if len(payload) + 8 < 2**32:
        return struct.pack(">I4s", len(payload) + 8, kind) + payload
    return struct.pack(">I4sQ", 1, kind, len(payload) + 16) + payload


def _st3d_box(mode: int) -> bytes:
    return _box(b"st3d", struct.pack(">IB", 0, mode))


def _is_video_trak(buf: bytes, start: int, end: int) -> bool:
    for off, size, kind, head in _boxes(buf, start, end):
        if kind == b"mdia":
            for o2, s2, k2, h2 in _boxes(buf, off + head, off + size):
                if k2 == b"hdlr":
                    return buf[o2 + h2 + 8:o2 + h2 + 12] == b"vide"  # version/flags, pre_defined, handler_type
    return False


def _with_st3d(entry: bytes, mode: int) -> bytes:
    """A visual sample entry box with its st3d child set to ``mode`` (inserted, or replaced)."""
    kind, head = entry[4:8], 16 if struct.unpack_from(">I", entry)[0] == 1 else 8
    fields_end = head + _VISUAL_SAMPLE_ENTRY_FIELDS
    check(len(entry) >= fields_end, f"malformed mp4: sample entry {kind!r} is too short")
    children = [(o, s, k) for o, s, k, _ in _boxes(entry, fields_end, len(entry))]
    kept = [(o, s, k) for o, s, k in children if k != b"st3d"]
    at = next((i for i, (_, _, k) in enumerate(kept) if k in _AFTER_ST3D), len(kept))
    parts = [entry[o:o + s] for o, s, _ in kept]
    parts.insert(at, _st3d_box(mode))
    return _box(kind, entry[head:fields_end] + b"".join(parts))


def _rebuild(buf: bytes, off: int, size: int, kind: bytes, head: int, mode: int, found: list) -> bytes:
    """Box ``buf[off:off+size]`` rebuilt with st3d in the video track's sample entry."""
    if kind == b"trak" and not _is_video_trak(buf, off + head, off + size):
        return buf[off:off + size]
    if kind in _CONTAINERS:
        body = b"".join(_rebuild(buf, o, s, k, h, mode, found) for o, s, k, h in _boxes(buf, off + head, off + size))
        return _box(kind, body)
    if kind == b"stsd":
        # FullBox: version/flags (4) + entry_count (4), then the sample entries; the video's is the first
        start = off + head + 8
        entries = list(_boxes(buf, start, off + size))
        check(bool(entries), "malformed mp4: the video track has no sample entry")
        o, s, _, _ = entries[0]
        found.append(True)
        return _box(kind, buf[off + head:start] + _with_st3d(buf[o:o + s], mode) + buf[o + s:off + size])
    return buf[off:off + size]


def _shift_chunk_offsets(moov: bytes, by: int) -> bytes:
    """``moov`` with every stco/co64 chunk offset increased by ``by`` (the media data moved)."""
    out = bytearray(moov)

    def walk(start: int, end: int) -> None:
        for off, size, kind, head in _boxes(moov, start, end):
            if kind in _CONTAINERS:
                walk(off + head, off + size)
            elif kind in (b"stco", b"co64"):
                (n,) = struct.unpack_from(">I", moov, off + head + 4)
                fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
                base = off + head + 8
                for i in range(n):
                    (v,) = struct.unpack_from(fmt, moov, base + i * width)
                    if kind == b"stco" and v + by >= 2**32:
                        raise Ex4dError("mp4 too large to tag in place (32-bit chunk offsets overflow)")
                    struct.pack_into(fmt, out, base + i * width, v + by)

    walk(0, len(moov))
    return bytes(out)


def _top_level(path: Path):
    """(offset, size, type, header length) of the file's top-level boxes, read from their headers only."""
    total = path.stat().st_size
    out = []
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= total:
            f.seek(pos)
            hdr = f.read(16)
            size, kind = struct.unpack_from(">I4s", hdr)
            head = 8
            if size == 1:
                (size,) = struct.unpack_from(">Q", hdr, 8)
                head = 16
            elif size == 0:
                size = total - pos
            if size < head or pos + size > total:
                raise Ex4dError(f"{path}: malformed mp4 (box {kind!r} at byte {pos} has size {size})")
            out.append((pos, size, kind, head))
            pos += size
    return out


def write_st3d(path: str | os.PathLike, mode: int, dest: str | os.PathLike | None = None) -> Path:
    """Tag the mp4 ``path`` with st3d ``mode`` (0 mono, 1 top-bottom, 2 left-right) into ``dest`` (default: in place).

    Atomic; an existing st3d box is replaced. Only ``moov`` is rewritten.
    """
    from .atomic import atomic_path

    path = Path(path)
    dest = Path(dest) if dest is not None else path
    check(mode in (0, 1, 2, 4), f"st3d stereo_mode must be 0, 1, 2 or 4, got {mode}")
    check(path.is_file(), f"{path} is not a file")
    boxes = _top_level(path)
    moov = [b for b in boxes if b[2] == b"moov"]
    check(len(moov) == 1, f"{path} is not an mp4 with one movie box (found {len(moov)} 'moov')")
    m_off, m_size, _, m_head = moov[0]
    with open(path, "rb") as f:
        f.seek(m_off)
        old = f.read(m_size)
    found: list = []
    new = _rebuild(old, 0, m_size, b"moov", m_head, mode, found)
    check(bool(found), f"{path} has no video track to tag")
    if any(k == b"mdat" and o > m_off for o, _, k, _ in boxes):  # moov before the media data: offsets move
        new = _shift_chunk_offsets(new, len(new) - m_size)
    with atomic_path(dest) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(_Limited(src, m_off), dst)
        dst.write(new)
        src.seek(m_off + m_size)
        shutil.copyfileobj(src, dst)
    return dest


class _Limited:
    """File-like reader of the first ``n`` bytes of ``f``."""

    def __init__(self, f, n: int):
        self.f, self.left = f, n

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data


def read_st3d(path: str | os.PathLike) -> int | None:
    """The st3d stereo_mode of the mp4's video track, or None when it has none."""
    path = Path(path)
    for off, size, kind, head in _top_level(path):
        if kind != b"moov":
            continue
        with open(path, "rb") as f:
            f.seek(off)
            buf = f.read(size)

        def find(start: int, end: int):
            for o, s, k, h in _boxes(buf, start, end):
                if k == b"trak" and not _is_video_trak(buf, o + h, o + s):
                    continue
                if k in _CONTAINERS:
                    r = find(o + h, o + s)
                    if r is not None:
                        return r
                elif k == b"stsd":
                    for eo, es, _, eh in _boxes(buf, o + h + 8, o + s):
                        for co, cs, ck, ch in _boxes(buf, eo + eh + _VISUAL_SAMPLE_ENTRY_FIELDS, eo + es):
                            if ck == b"st3d" and cs >= ch + 5:
                                return buf[co + ch + 4]
                        return None
            return None

        return find(head, size)
    return None


def write_stereo_video(path: str | os.PathLike, left: np.ndarray, right: np.ndarray, fps: float, layout: str = "sbs",
                       half: bool = False, crf: int = 18) -> Path:
    """Encode the pair (each [T, H, W, 3] uint8) as one H.264 mp4 in ``layout``, tagged with its st3d mode; atomic."""
    from .atomic import atomic_path
    from .video import write_video

    path = Path(path)
    check(path.suffix.lower() == ".mp4", f"stereo output {path} must be an .mp4 file")
    frames = pack_stereo(left, right, layout, half)
    with atomic_path(path) as tmp:
        write_video(tmp, frames, fps, crf=crf)
        if layout in ST3D_MODES:
            write_st3d(tmp, ST3D_MODES[layout])
    return path
