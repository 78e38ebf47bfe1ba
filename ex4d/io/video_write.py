"""Video output: H.264 files written whole or frame by frame, and numbered PNG frames; every write atomic.

:class:`VideoWriter` encodes a video a batch of frames at a time (long clips
never sit in memory) into a temporary file beside the destination and renames
it over the destination only when closed without error: an interrupted run
never leaves a truncated video behind, and an older complete file stays as it
was. :func:`write_video` is the one-call form.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import Ex4dError, check
from .atomic import atomic_path

__all__ = ["VideoWriter", "write_video", "write_png_frames", "check_write_frames"]

_WRITE_SUFFIXES = (".mp4", ".mov", ".mkv")
_BT601, _LIMITED_RANGE = 6, 1  # AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG


def check_write_frames(frames: np.ndarray) -> np.ndarray:
    """Validate frames to write; returns [T, H, W, 3] uint8 RGB or [T, H, W] uint8 gray (bool → 0/255)."""
    frames = np.asarray(frames)
    if frames.dtype == bool:
        check(frames.ndim == 3, f"a mask must be [T, H, W] bool, got shape {frames.shape}")
        return frames.astype(np.uint8) * np.uint8(255)
    check(frames.dtype == np.uint8,
          f"frames must be uint8 ([T, H, W, 3] RGB or [T, H, W] gray) or bool masks, got dtype {frames.dtype}")
    check((frames.ndim == 4 and frames.shape[3] == 3) or frames.ndim == 3,
          f"frames must be [T, H, W, 3] RGB or [T, H, W] gray, got shape {frames.shape}")
    check(frames.shape[0] >= 1 and frames.shape[1] >= 1 and frames.shape[2] >= 1,
          f"frames must hold at least one non-empty frame, got shape {frames.shape}")
    return frames


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """``frame`` [H, W(, C)] padded to even H and W by repeating its last row/column (yuv420p needs even sizes)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if not (pad_h or pad_w):
        return frame
    return np.pad(frame, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (frame.ndim - 2), mode="edge")


class VideoWriter:
    """H.264 video written batch by batch to ``path`` (.mp4, .mov or .mkv), atomically.

    Use as a context manager::

        with VideoWriter(out / "color.mp4", fps=24) as w:
            for chunk in chunks:
                w.write(chunk)        # [n, H, W, 3] uint8, [n, H, W] uint8 gray or [n, H, W] bool mask

    The file appears (replacing any older one) when the block ends without an
    exception; on an exception or Ctrl-C the temporary file is removed and an
    older file at ``path`` is left untouched. Every batch must have the first
    batch's size and kind (RGB or gray). Options as :func:`write_video`.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, lossless: bool = False):
        self.path = Path(path)
        check(self.path.suffix.lower() in _WRITE_SUFFIXES,
              f"video output {self.path} must end in one of {', '.join(_WRITE_SUFFIXES)}")
        check(isinstance(fps, (int, float, np.integer, np.floating)) and math.isfinite(fps) and fps > 0,
              f"fps must be a positive number, got {fps!r}")
        check(isinstance(crf, (int, np.integer)) and 0 <= crf <= 51, f"crf must be an integer in 0..51, got {crf!r}")
        self.rate = Fraction(float(fps)).limit_denominator(1001)
        self.crf, self.lossless = int(crf), bool(lossless)
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = self._stream = None
        self._shape: tuple[int, ...] | None = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, typ, value, tb) -> bool:
        if typ is None:
            self.close()
        else:
            self.abort(typ, value, tb)
        return False

    def _start(self, first: np.ndarray) -> None:
        import av

        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._container = av.open(str(tmp), mode="w")
        if self.lossless:
            stream = self._container.add_stream("libx264rgb", rate=self.rate, options={"qp": "0"})
            stream.pix_fmt = "rgb24"
        else:
            # no-mbtree: x264's macroblock-tree rate control gave different pixels from one write of
            # the same frames to the next here (measured, threaded or not); without it, output is
            # repeatable, so a run reproduced from its config.json gives identical videos.
            stream = self._container.add_stream("libx264", rate=self.rate, options={"crf": str(self.crf),
                                                                                     "x264-params": "no-mbtree=1"})
            stream.pix_fmt = "yuv420p"
        height, width = _pad_even(first).shape[:2]
        stream.width, stream.height = width, height
        if not self.lossless:
            # Tag the matrix that the RGB→YUV conversion uses (BT.601, limited range), so players
            # do not guess BT.709 for HD sizes and shift the colours.
            stream.codec_context.colorspace = _BT601
            stream.codec_context.color_range = _LIMITED_RANGE
        self._stream = stream
        self._shape = first.shape

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` [n, H, W, 3] uint8 RGB, [n, H, W] uint8 gray or [n, H, W] bool (255 = True)."""
        import av

        frames = check_write_frames(frames)
        try:
            if self._stream is None:
                self._start(frames[0])
            check(frames.shape[1:] == self._shape,
                  f"{self.path}: frames of shape {frames.shape[1:]} after frames of shape {self._shape}")
            for frame in frames:
                if self.lossless and frame.ndim == 2:
                    frame = np.repeat(frame[:, :, None], 3, axis=2)
                image = _pad_even(np.ascontiguousarray(frame))
                video_frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "rgb24")
                for packet in self._stream.encode(video_frame):
                    self._container.mux(packet)
                self.frames_written += 1
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Flush the encoder and move the finished file to ``path``; Ex4dError if no frame was written."""
        if self._stream is None:
            raise Ex4dError(f"no frames were written to {self.path}")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        stack, self._stack, self._stream = self._stack, None, None
        stack.close()  # renames the temporary file over the destination

    def abort(self, typ=None, value=None, tb=None) -> None:
        """Drop the temporary file (``path`` is left as it was)."""
        if self._stack is None:
            return
        with contextlib.suppress(Exception):
            self._container.close()
        stack, self._stack, self._stream = self._stack, None, None
        err = value if value is not None else Ex4dError("video writing aborted")
        with contextlib.suppress(BaseException):
            stack.__exit__(type(err), err, err.__traceback__)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18,
                lossless: bool = False) -> None:
    """Encode ``frames`` as H.264 to ``path`` (.mp4, .mov or .mkv), atomically.

    Args:
        path: destination; replaced only once the whole video is written.
        frames: [T, H, W, 3] uint8 RGB, or [T, H, W] uint8 gray, or
            [T, H, W] bool mask (written as gray 0/255, 255 = known).
        fps: frame rate (> 0); stored as a fraction (e.g. 29.97 → 2997/100).
        crf: libx264 quality (0–51, lower is better) for lossy output.
        lossless: encode with ``libx264rgb`` at qp 0 in RGB (exact round trip
            of RGB frames; plays in FFmpeg-based players, not in browsers).

    Lossy output is ``libx264``, ``yuv420p``, which needs even sizes: odd
    heights/widths are padded by one row/column repeating the last one, so
    the file is (W + W%2)×(H + H%2); crop back with ``size=`` in
    :func:`~ex4d.io.video.read_mask_video` or by slicing. For clips too long
    to hold in memory use :class:`VideoWriter`.
    """
    frames = check_write_frames(frames)
    with VideoWriter(path, fps, crf=crf, lossless=lossless) as writer:
        writer.write(frames)


_PNG_NAME = re.compile(r"^(\d{5,})\.png$")


def write_png_frames(folder: str | os.PathLike, frames: np.ndarray, start: int = 0,
                     prune: bool = True) -> list[Path]:
    """Write ``frames`` as ``folder/{start:05d}.png, …`` (each file atomic); returns the paths.

    Args:
        folder: created if missing.
        frames: [T, H, W, 3] uint8 RGB (8-bit RGB PNGs), [T, H, W] uint8 gray
            or bool mask (8-bit gray PNGs, 0/255).
        start: number of the first frame (to write a long clip chunk by chunk).
        prune: remove numbered PNGs (``NNNNN.png``) from ``start + T`` on, left
            from an earlier, longer sequence, so the folder reads back as
            exactly the frames written (pass False for all but the last chunk).
    """
    folder = Path(folder)
    frames = check_write_frames(frames)
    check(not folder.exists() or folder.is_dir(), f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames, start=int(start)):
        dest = folder / f"{i:05d}.png"
        image = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        with atomic_path(dest) as tmp:
            if not cv2.imwrite(str(tmp), image):
                raise Ex4dError(f"could not write {dest}")
        paths.append(dest)
    if prune:
        end = int(start) + len(frames)
        for stale in folder.iterdir():
            match = _PNG_NAME.match(stale.name)
            if match and int(match.group(1)) >= end:
                stale.unlink()
    return paths
