"""Video input/output: decode a clip into RGB frames, encode frames and masks.

Reading goes through PyAV (mp4, mov, webm, mkv, avi, gif, anything FFmpeg
opens) or a folder of images (png, jpg, jpeg, webp, bmp in natural order).
Every problem a user can fix comes back as :class:`~ex4d.errors.Ex4dError`,
never as a PyAV traceback.

Frame size rule (:func:`output_size`)
-------------------------------------
Keep the aspect ratio; scale by ``s = min(1, max_res / max(W, H))`` (never
upscale); round each side to the *nearest* multiple of ``multiple``
(``floor(x / multiple + 0.5) * multiple``, so .5 rounds up), at least
``multiple``, and at most ``max_res`` rounded down to a multiple. Examples
with ``max_res=1024, multiple=16``: 1920×1080 → 1024×576, 500×300 → 496×304,
512×512 → 512×512. Rounding may enlarge one side by less than
``multiple / 2`` pixels; frames are resized with ``cv2.INTER_AREA`` when
neither side grows and ``cv2.INTER_LINEAR`` otherwise.

:class:`VideoReader` decodes one frame at a time (for clips too long to hold
in memory); :func:`read_video` collects them. Writing lives in
:mod:`ex4d.io.video_write` (re-exported here): atomic (a temporary file
beside the destination, renamed at the end), whole or batch by batch
(:class:`VideoWriter`), so an interrupted run never leaves a truncated video.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import Ex4dError, check
from .video_write import VideoWriter, write_png_frames, write_video

__all__ = [
    "Frames",
    "IMAGE_SUFFIXES",
    "DEFAULT_FOLDER_FPS",
    "natural_key",
    "list_images",
    "output_size",
    "probe_video",
    "read_video",
    "read_mask_video",
    "read_mask_frames",
    "VideoReader",
    "VideoWriter",
    "write_video",
    "write_png_frames",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Frame rate reported for a folder of images when none is given.
DEFAULT_FOLDER_FPS = 24.0
#: Luma above this is "known" when a mask is read back (robust to codec noise).
MASK_THRESHOLD = 127


@dataclass(frozen=True)
class Frames:
    """Frames read from a video or an image folder.

    ================  ======================  =================================================
    field             type / shape            meaning
    ================  ======================  =================================================
    ``frames``        [T, H, W, 3] uint8      RGB, resized by :func:`output_size`
    ``fps``           float                   frame rate of the *source* (not divided by stride)
    ``source``        str                     path of the video file or image folder
    ``indices``       [T] int64               index of each frame in the source (0-based)
    ``source_size``   (int, int)              (W, H) of the source frames before resizing,
                                              after applying the container's rotation
    ``total_frames``  int                     frames in the source, or -1 if unknown
    ================  ======================  =================================================
    """

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float
    source: str
    indices: np.ndarray  # [T] int64
    source_size: tuple[int, int]  # (W, H)
    total_frames: int

    @property
    def num_frames(self) -> int:
        """T, the number of frames held."""
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the held frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


# --------------------------------------------------------------------------- helpers


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", name) if part]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (png/jpg/jpeg/webp/bmp) directly inside ``folder``, in natural order.

    Raises :class:`Ex4dError` if the folder holds none.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    check(len(files) > 0, f"folder {folder} holds no images (accepted: {', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: natural_key(p.name))


def output_size(width: int, height: int, max_res: int = 1024, multiple: int = 16) -> tuple[int, int]:
    """(W, H) that frames of size ``width``×``height`` are resized to; see the module docstring."""
    check(multiple >= 1, f"multiple must be an integer >= 1, got {multiple}")
    check(max_res >= multiple, f"max_res must be >= multiple ({multiple}), got {max_res}")
    scale = min(1.0, max_res / max(width, height))
    cap = (max_res // multiple) * multiple

    def snap(x: float) -> int:
        return int(min(cap, max(multiple, math.floor(x * scale / multiple + 0.5) * multiple)))

    return snap(width), snap(height)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` [H, W, C] or [H, W] resized to ``width``×``height`` (INTER_AREA when shrinking)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _check_selection(num_frames: int | None, start: int, stride: int) -> int | None:
    """Validate frame-selection arguments; returns ``num_frames`` with 0 mapped to None (= all)."""
    for name, value in (("start", start), ("stride", stride)):
        check(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
              f"{name} must be an integer, got {value!r}")
    if num_frames is not None:
        check(isinstance(num_frames, (int, np.integer)) and not isinstance(num_frames, bool),
              f"num_frames must be an integer (0 or None = all frames), got {num_frames!r}")
        check(num_frames >= 0, f"num_frames must be >= 0 (0 or None = all frames), got {num_frames}")
    check(start >= 0, f"start must be a frame index >= 0, got {start}")
    check(stride >= 1, f"stride must be >= 1, got {stride}")
    return None if not num_frames else int(num_frames)


def _available(total: int, start: int, stride: int) -> int:
    """How many frames ``start, start+stride, …`` fit in a source of ``total`` frames."""
    return max(0, (total - start + stride - 1) // stride)


def _check_enough(got: int, wanted: int | None, total: int, start: int, stride: int,
                  allow_short: bool, source: str) -> None:
    """Raise :class:`Ex4dError` unless ``got`` frames satisfy the request."""
    if got == 0:
        raise Ex4dError(f"{source} has {total} frames: no frame left from start={start} with stride={stride}; "
                        f"use a start below {total}")
    if wanted is not None and got < wanted and not allow_short:
        raise Ex4dError(
            f"{source} has {total} frames; from start={start} with stride={stride} only {got} are available, "
            f"but {wanted} were asked. Use --num-frames {got} (or lower), or --allow-short to take the "
            f"{got} frames there are.")


def _to_rgb8(image: np.ndarray, source: Path) -> np.ndarray:
    """Image as read by ``cv2.IMREAD_UNCHANGED`` (gray/BGR/BGRA, 8/16-bit) → [H, W, 3] uint8 RGB.

    Alpha is dropped (the colour channels are kept as they are).
    """
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float64) * (255.0 if image.max() <= 1.0 else 1.0), 0, 255)
        image = (image + 0.5).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise Ex4dError(f"{source}: unsupported image with {image.shape[2]} channels")


def _read_image(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of one image file."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    check(image is not None, f"cannot read image {path} (not an image, or a format OpenCV cannot decode)")
    return _to_rgb8(image, path)


# --------------------------------------------------------------------------- PyAV reading


def _open(path: Path):
    """Open ``path`` with PyAV and return (container, video stream); Ex4dError if it is not a video."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise Ex4dError(f"cannot open {path} as a video ({e.__class__.__name__}: {e.strerror or e}); "
                        f"accepted: mp4, mov, webm, mkv, avi, gif or a folder of images") from None
    if not container.streams.video:
        container.close()
        raise Ex4dError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _stream_fps(stream) -> float:
    """Frame rate of a PyAV stream: average, then guessed, then base rate; 24 if none is known."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return DEFAULT_FOLDER_FPS


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` turned counter-clockwise by ``degrees`` (the display matrix's rotation, a multiple of 90)."""
    k = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _decode(path: Path, container, stream) -> Iterator[tuple[int, object]]:
    """Yield (index, av.VideoFrame) for every decoded frame; PyAV errors become Ex4dError."""
    import av

    index = 0
    try:
        for frame in container.decode(stream):
            yield index, frame
            index += 1
    except av.FFmpegError as e:
        raise Ex4dError(f"cannot decode {path} after {index} frames ({e.__class__.__name__}: {e}); "
                        f"the file may be corrupt or truncated") from None


def _count_packets(path: Path) -> int:
    """Number of video packets in ``path`` (demuxed, not decoded: cheap); one packet is one frame."""
    import av

    container, stream = _open(path)
    count = 0
    try:
        with container:
            for packet in container.demux(stream):
                if packet.size > 0:
                    count += 1
    except av.FFmpegError as e:
        raise Ex4dError(f"cannot read {path} ({e.__class__.__name__}: {e})") from None
    return count


def _check_exists(path: Path) -> None:
    check(path.exists(), f"input {path} does not exist")


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """(num_frames, fps, width, height) of a video file or image folder.

    ``width``/``height`` are the displayed size (after the container's
    rotation). When the container does not store a frame count (webm, mkv),
    the packets are counted without decoding them.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = list_images(path)
        h, w = _read_image(files[0]).shape[:2]
        return len(files), DEFAULT_FOLDER_FPS, w, h
    container, stream = _open(path)
    with container:
        count = int(stream.frames or 0)
        fps = _stream_fps(stream)
        first = next(_decode(path, container, stream), None)
        check(first is not None, f"{path} holds no decodable video frame")
        frame = first[1]
        w, h = frame.width, frame.height
        if int(round(frame.rotation / 90.0)) % 2:
            w, h = h, w
    if count <= 0:
        count = _count_packets(path)
    return count, fps, w, h


def _iter_video(path: Path, start: int, stride: int, num_frames: int | None, fmt: str,
                sizer: Callable[[int, int], tuple[int, int]] | None = None,
                info: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the selected frames of ``path``, one at a time.

    Yields (index, [H, W(, C)] uint8 in ``fmt``). Each selected frame is
    rotated upright and, if ``sizer`` maps the source (W, H) to an output
    (W, H), resized at once, so long or large clips never sit in memory at
    full size. Decoding stops as soon as ``num_frames`` frames are selected.
    When the generator is exhausted, ``info`` holds ``fps``, ``size`` (the
    displayed source (W, H)) and ``total``: the container's frame count (-1 if
    it stores none) when decoding stopped early, the number of decoded frames
    when the end was reached.
    """
    info = {} if info is None else info
    container, stream = _open(path)
    size = out_size = None
    rotation = 0.0
    picked = 0
    with container:
        header_total = int(stream.frames or 0)
        info["fps"] = _stream_fps(stream)
        decoded = 0
        reached_end = True
        for index, frame in _decode(path, container, stream):
            decoded = index + 1
            if size is None:
                rotation = frame.rotation
                size = (frame.height, frame.width) if int(round(rotation / 90.0)) % 2 else (frame.width, frame.height)
                out_size = sizer(*size) if sizer is not None else size
                info["size"] = size
            if index >= start and (index - start) % stride == 0:
                image = _rotate(frame.to_ndarray(format=fmt), rotation)
                yield index, _resize(image, *out_size)
                picked += 1
                if num_frames is not None and picked == num_frames:
                    reached_end = False
                    break
    check(size is not None, f"{path} holds no decodable video frame")
    info["total"] = decoded if reached_end else (header_total if header_total > 0 else -1)


def _check_fps(fps) -> None:
    check(fps is None or (isinstance(fps, (int, float, np.integer, np.floating)) and math.isfinite(fps) and fps > 0),
          f"fps must be a positive number, got {fps!r}")


class VideoReader:
    """The frames of a video file or image folder, decoded one at a time (for clips too long to hold).

    Same arguments, selection, size rule and errors as :func:`read_video`;
    iterating yields ``(index in the source, [H, W, 3] uint8 RGB)``, or with
    ``mask=True`` ``[H, W] bool`` (luma > 127, True = known: a mask video as
    :func:`read_mask_video` reads it). Once the
    iteration has finished, :attr:`fps`, :attr:`source_size` (W, H),
    :attr:`total_frames` and :attr:`count` (frames yielded) are set; the
    "too few frames" error is raised at the end, after the frames there are.
    """

    def __init__(self, path: str | os.PathLike, num_frames: int | None = 49, start: int = 0, stride: int = 1,
                 max_res: int = 1024, multiple: int = 16, allow_short: bool = False, fps: float | None = None,
                 mask: bool = False):
        self.path = Path(path)
        self.mask = bool(mask)
        self.wanted = _check_selection(num_frames, start, stride)
        check(isinstance(multiple, (int, np.integer)) and multiple >= 1,
              f"multiple must be an integer >= 1, got {multiple!r}")
        check(isinstance(max_res, (int, np.integer)) and max_res >= multiple,
              f"max_res must be an integer >= multiple ({multiple}), got {max_res!r}")
        _check_fps(fps)
        _check_exists(self.path)
        self.start, self.stride, self.max_res, self.multiple = int(start), int(stride), int(max_res), int(multiple)
        self.allow_short = bool(allow_short)
        self._fps = fps
        self.fps: float | None = None
        self.source_size: tuple[int, int] | None = None
        self.total_frames: int | None = None
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.count = 0
        frames = self._folder() if self.path.is_dir() else self._file()
        for index, image in frames:
            self.count += 1
            yield index, image
        _check_enough(self.count, self.wanted, self.total_frames, self.start, self.stride, self.allow_short,
                      str(self.path))

    def _folder(self) -> Iterator[tuple[int, np.ndarray]]:
        files = list_images(self.path)
        total = len(files)
        stop = total if self.wanted is None else min(total, self.start + self.wanted * self.stride)
        chosen = list(range(self.start, stop, self.stride))
        _check_enough(len(chosen), self.wanted, total, self.start, self.stride, self.allow_short, str(self.path))
        self.fps = float(self._fps if self._fps is not None else DEFAULT_FOLDER_FPS)
        self.total_frames = total
        for n, i in enumerate(chosen):
            image = _read_image(files[i])
            if n == 0:
                h0, w0 = image.shape[:2]
                self.source_size = (int(w0), int(h0))
                out_w, out_h = output_size(w0, h0, self.max_res, self.multiple)
            elif image.shape[:2] != (h0, w0):
                raise Ex4dError(f"{files[i]} is {image.shape[1]}x{image.shape[0]} but {files[chosen[0]]} is "
                                f"{w0}x{h0}; all images in a folder must have one size")
            image = _resize(image, out_w, out_h)
            yield i, (_binarize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)) if self.mask else image)

    def _file(self) -> Iterator[tuple[int, np.ndarray]]:
        info: dict = {}
        sizer = lambda w, h: output_size(w, h, self.max_res, self.multiple)  # noqa: E731
        fmt = "gray" if self.mask else "rgb24"
        for index, image in _iter_video(self.path, self.start, self.stride, self.wanted, fmt, sizer, info):
            if self.fps is None:
                self.fps = float(self._fps if self._fps is not None else info["fps"])
                self.source_size = tuple(int(v) for v in info["size"])
            yield index, (_binarize(image) if self.mask else image)
        self.fps = float(self._fps if self._fps is not None else info["fps"])
        self.source_size = tuple(int(v) for v in info["size"])
        self.total_frames = int(info["total"])


def read_video(path: str | os.PathLike, num_frames: int | None = 49, start: int = 0, stride: int = 1,
               max_res: int = 1024, multiple: int = 16, allow_short: bool = False,
               fps: float | None = None) -> Frames:
    """:class:`Frames` with frames ``start, start+stride, …`` (``num_frames`` of them) of a video or image folder.

    Args:
        path: video file (anything FFmpeg decodes) or folder of images
            (png/jpg/jpeg/webp/bmp, natural sort; all of the same size).
        num_frames: frames to return; ``None`` or 0 = every frame from ``start``.
        start: index of the first frame in the source.
        stride: step between selected source frames.
        max_res, multiple: size rule, see :func:`output_size`.
        allow_short: return the frames there are (at least one) instead of
            raising when fewer than ``num_frames`` are available.
        fps: frame rate to report; ``None`` = the container's (24 for folders).

    Frames of any pixel format (alpha, gray, 10-bit, palette) become 8-bit
    RGB; alpha is dropped. The container's display rotation (phone videos) is
    applied. Decoding stops once enough frames are selected. For clips too
    long to hold in memory iterate a :class:`VideoReader` instead.
    """
    reader = VideoReader(path, num_frames=num_frames, start=start, stride=stride, max_res=max_res,
                         multiple=multiple, allow_short=allow_short, fps=fps)
    picked = list(reader)
    frames = np.stack([image for _, image in picked])
    indices = np.array([i for i, _ in picked], dtype=np.int64)
    return Frames(frames=frames, fps=reader.fps, source=str(reader.path), indices=indices,
                  source_size=reader.source_size, total_frames=int(reader.total_frames))


def _binarize(gray: np.ndarray) -> np.ndarray:
    """[..., H, W] uint8 luma → bool, ``True`` (known) where luma > 127."""
    return gray > MASK_THRESHOLD


def read_mask_video(path: str | os.PathLike, num_frames: int | None = None, start: int = 0, stride: int = 1,
                    allow_short: bool = False, size: tuple[int, int] | None = None) -> np.ndarray:
    """Mask [T, H, W] bool (True = known) from a mask video: luma > 127, at the stored size.

    Args:
        path: mask video as written by :func:`write_video` (255 = known, 0 = unknown).
        num_frames, start, stride, allow_short: frame selection as in :func:`read_video`.
        size: (W, H) to crop to, for masks of odd size that :func:`write_video`
            padded to even; ``None`` keeps the stored size. The mask is not resized.
    """
    path = Path(path)
    wanted = _check_selection(num_frames, start, stride)
    _check_exists(path)
    check(path.is_file(), f"mask video {path} is not a file")
    info: dict = {}
    picked = list(_iter_video(path, start, stride, wanted, "gray", info=info))
    _check_enough(len(picked), wanted, info["total"], start, stride, allow_short, str(path))
    masks = _binarize(np.stack([image for _, image in picked]))
    return _crop(masks, size, path)


def _crop(masks: np.ndarray, size: tuple[int, int] | None, path: Path) -> np.ndarray:
    """``masks`` [T, H, W] cropped to ``size`` (W, H) at the top-left; Ex4dError if larger than stored."""
    if size is None:
        return masks
    w, h = size
    check(w <= masks.shape[2] and h <= masks.shape[1],
          f"cannot crop mask {path} of size {masks.shape[2]}x{masks.shape[1]} to {w}x{h}")
    return np.ascontiguousarray(masks[:, :h, :w])


def read_mask_frames(folder: str | os.PathLike) -> np.ndarray:
    """Mask [T, H, W] bool (True = known) from a folder of images: luma > 127."""
    folder = Path(folder)
    _check_exists(folder)
    check(folder.is_dir(), f"mask folder {folder} is not a folder")
    masks = []
    for file in list_images(folder):
        rgb = _read_image(file)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if masks and gray.shape != masks[0].shape:
            raise Ex4dError(f"mask {file} is {gray.shape[1]}x{gray.shape[0]}, the first one "
                            f"{masks[0].shape[1]}x{masks[0].shape[0]}; all masks must have one size")
        masks.append(gray)
    return _binarize(np.stack(masks))
