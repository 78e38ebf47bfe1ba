"""Depth files read a frame at a time: the files of :func:`ex4d.io.depth.load_depth_file`, for long clips.

:func:`open_depth_values` gives an array-like ``[Td, h, w]`` of a depth
file's raw values (``len``, ``.shape``, ``a[t]``, ``a[t0:t1]``, ``a[indices]``,
float32 on access) without reading the whole file:

* ``.npy``: each frame read from its offset in the file (not memory-mapped:
  a mapping's pages would count towards the process's resident memory);
* ``.npz``: an uncompressed member likewise, inside the archive; a
  compressed one (``np.savez_compressed``, DepthCrafter's output) is
  decompressed as a stream, forwards (reading frames in order costs one pass);
* a folder of PNGs: one file per frame, read when asked for; a single
  ``.png``: one frame.

The file's layout rules ([T, H, W], [H, W], [T, H, W, 1], [T, 1, H, W]) and
errors are those of :func:`~ex4d.io.depth.load_depth_file`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .depth import check_depth_array, load_depth_png, npz_depth_key
from .video import natural_key

__all__ = ["open_depth_values", "DepthValues"]


class DepthValues:
    """Array-like [T, H, W] float32 over frames that ``frame(t)`` reads one at a time."""

    def __init__(self, shape: tuple[int, int, int], frame, source: str):
        self.shape = tuple(int(s) for s in shape)
        self.ndim, self.dtype = 3, np.dtype(np.float32)
        self._frame, self.source = frame, source

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            t = int(index) + (self.shape[0] if index < 0 else 0)
            if not 0 <= t < self.shape[0]:
                raise IndexError(f"frame {index} outside [0, {self.shape[0]})")
            return np.asarray(self._frame(t), dtype=np.float32)
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        idx = np.asarray(index)
        check(idx.ndim == 1 and idx.dtype.kind in "iu", f"unsupported index {index!r}")
        out = np.empty((len(idx), *self.shape[1:]), np.float32)
        for i, t in enumerate(idx):
            out[i] = self[int(t)]
        return out

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype)


def _layout(shape: tuple[int, ...], source: str) -> tuple[int, int, int]:
    """(T, H, W) of a depth array of ``shape``: the layouts :func:`~ex4d.io.depth.load_depth_file` accepts."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        out = (1, *shape)
    elif len(shape) == 3:
        out = shape
    elif len(shape) == 4 and shape[3] == 1:
        out = shape[:3]
    elif len(shape) == 4 and shape[1] == 1:
        out = (shape[0], *shape[2:])
    else:
        out = ()
    if len(out) != 3 or min(out) == 0:
        raise Ex4dError(f"{source}: depth must be [T, H, W], [H, W] or [T, H, W, 1], got shape {shape}")
    return out


def _frames_view(values: np.ndarray, source: str) -> np.ndarray:
    """``values`` (an array or memmap) as [T, H, W] without copying."""
    check_depth_array(values.shape, values.dtype, source)
    return values.reshape(_layout(values.shape, source))


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy stream ``f``, which is left at the start of the data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _array_values(values: np.ndarray, source: str) -> DepthValues:
    v = _frames_view(values, source)
    return DepthValues(v.shape, lambda t: v[t], source)


def _file_values(path: Path, offset: int, shape: tuple, fortran: bool, dtype: np.dtype, source: str) -> DepthValues:
    """Frames of a C-ordered array stored raw at ``offset`` of ``path``, each read from its place when asked for."""
    check_depth_array(shape, dtype, source)
    T, H, W = _layout(shape, source)
    if fortran and len(shape) > 2:  # frames are not contiguous: map the array (rare; numpy writes C order)
        return _array_values(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F"), source)
    size = H * W * dtype.itemsize

    def frame(t):
        with open(path, "rb") as f:
            f.seek(offset + t * size)
            data = f.read(size)
        check(len(data) == size, f"{source}: truncated array data at frame {t}")
        return np.frombuffer(data, dtype).reshape(H, W)

    return DepthValues((T, H, W), frame, source)


class _NpyStream:
    """Frames of a C-ordered .npy stream (a compressed npz member), decompressed forwards as they are asked for."""

    def __init__(self, open_member, source: str):
        self._open_member, self.source = open_member, source
        self._f = None
        self._next = 0
        with open_member() as f:
            self.shape, self.fortran, self.dtype = _read_header(f)

    def frame(self, t: int, count: int) -> np.ndarray:
        """[count] values of frame ``t`` (a rewind when going backwards)."""
        size = count * self.dtype.itemsize
        if self._f is None or t < self._next:
            if self._f is not None:
                self._f.close()
            self._f = self._open_member()
            _read_header(self._f)
            self._next = 0
        while self._next < t:  # skip forwards
            self._f.read(size)
            self._next += 1
        data = self._f.read(size)
        check(len(data) == size, f"{self.source}: truncated array data at frame {t}")
        self._next += 1
        return np.frombuffer(data, self.dtype)


def _npz_values(path: Path, key: str | None) -> DepthValues:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise Ex4dError(f"cannot read {path} as .npz ({e})") from None
    names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    name = npz_depth_key(names, key, path)
    info = archive.getinfo(f"{name}.npy")
    source = f"{path}[{name!r}]"
    if info.compress_type == zipfile.ZIP_STORED:
        # the member's bytes lie as they are in the file: memory-map them past its local header and .npy header
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            check(local[:4] == b"PK\x03\x04", f"{path}: not a valid zip archive")
            skip = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            f.seek(info.header_offset + 30 + skip)
            shape, fortran, dtype = _read_header(f)
            offset = f.tell()
        archive.close()
        return _file_values(path, offset, shape, fortran, dtype, source)
    stream = _NpyStream(lambda: archive.open(info), source)
    check_depth_array(stream.shape, stream.dtype, source)
    T, H, W = _layout(stream.shape, source)
    if stream.fortran:  # frames are not contiguous: read the whole array (rare; numpy writes C order)
        return _array_values(np.load(path)[name], source)
    return DepthValues((T, H, W), lambda t: stream.frame(t, H * W).reshape(H, W), source)


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header (None if it is not a PNG: it is then checked when read)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def open_depth_values(path: str | os.PathLike, key: str | None = None) -> DepthValues:
    """Raw values [T, h, w] of a depth file as an array-like that reads frames on access (see the module doc).

    Args:
        path: ``.npz``, ``.npy``, a ``.png`` file or a folder of PNGs.
        key: npz key to read; ``None`` picks ``depth``, then ``depths``, then the only array.
    """
    path = Path(path)
    check(path.exists(), f"depth file {path} does not exist")
    if path.is_dir():
        check(key is None, f"--depth-key applies to .npz files, but {path} is a folder")
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".png"
                        and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        check(len(files) > 0, f"depth folder {path} holds no .png files")
        first = load_depth_png(files[0])
        h0, w0 = first.shape
        for f in files[1:]:  # every size from the PNG headers, before any frame is used
            size = _png_size(f)
            check(size is None or size == (w0, h0),
                  f"depth folder {path}: {f.name} is {size[0]}×{size[1]} but {files[0].name} is {w0}×{h0}; "
                  "every depth frame must have the same size" if size else "")

        def frame(t):
            image = load_depth_png(files[t], files[0])
            check(image.shape == first.shape, f"depth image {files[t]} is {image.shape[1]}x{image.shape[0]}, "
                                              f"{files[0]} {first.shape[1]}x{first.shape[0]}; all must have one size")
            return image

        return DepthValues((len(files), *first.shape), frame, str(path))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz_values(path, key)
    if suffix == ".npy":
        check(key is None, f"--depth-key applies to .npz files, but {path} is .npy")
        try:
            with open(path, "rb") as f:
                shape, fortran, dtype = _read_header(f)
                offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise Ex4dError(f"cannot read {path} as .npy ({e})") from None
        return _file_values(path, offset, shape, fortran, dtype, str(path))
    if suffix == ".png":
        image = load_depth_png(path)
        return DepthValues((1, *image.shape), lambda t: image, str(path))
    raise Ex4dError(f"unsupported depth file {path}: expected .npz, .npy, .png or a folder of PNGs")
