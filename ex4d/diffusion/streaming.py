"""Tensors from safetensors files straight into device memory: header index, parallel reads, pinned staging.

The safetensors format is an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``
and the raw little-endian tensor bytes (offsets relative to the end of the header).
:func:`read_header` reads only the header, so a loader knows every tensor's
file, dtype, shape and byte range without touching the data.

:class:`TensorStreamer` then copies groups of tensors (e.g. one DiT block) to a
device:

* on a CUDA device, reader threads ``pread`` each tensor's bytes (in chunks of
  ``chunk_mib``) into their own page-locked staging buffer and issue the
  host-to-device copy on their own CUDA stream; one group's bytes land in one
  device allocation, viewed as the tensors. No copy of the weights is ever held
  in (pageable) host memory, and reads of the next group overlap with the caller's
  work on the current one (:meth:`TensorStreamer.groups` prefetches).
* on the CPU the same reads go straight into the destination tensors.

Tensors come out in the file's dtype unless ``dtype_for(name)`` asks for another
(cast on the device). :class:`PinnedArena` hands out page-locked host tensors
packed into 1 GiB chunks (PyTorch's pinned allocator rounds every allocation up to
a power of two, so one allocation per tensor would waste up to half of it); the
streamed DiT blocks of ``balanced``/``low`` live there.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from ..errors import Ex4dError, check

__all__ = ["TensorEntry", "read_header", "index_files", "TensorStreamer", "PinnedArena", "SAFETENSORS_DTYPES"]

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 * 1024**2  # the format's own limit on the header size


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: ``file``, absolute byte range [``start``, ``end``), its dtype and shape."""

    file: Path
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """(name → :class:`TensorEntry`, ``__metadata__``) of one ``.safetensors`` file, reading only its header."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            check(len(head) == 8, f"{path} is not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            check(0 < n <= _MAX_HEADER, f"{path} is not a safetensors file (header length {n})")
            header = json.loads(f.read(n))
        size = path.stat().st_size
    except (OSError, ValueError) as e:
        raise Ex4dError(f"cannot read the safetensors header of {path}: {e}") from None
    check(isinstance(header, dict), f"{path}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    entries = {}
    for name, info in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise Ex4dError(f"{path}: malformed safetensors entry {name!r} ({e!r})") from None
        numel = 1
        for s in shape:
            numel *= s
        check(0 <= begin <= end and base + end <= size and end - begin == numel * dtype.itemsize,
              f"{path}: tensor {name!r} ({info['dtype']} {list(shape)}) has byte range [{begin}, {end}) that does not "
              f"fit its shape or the file ({size} bytes); the file is truncated or corrupt")
        entries[name] = TensorEntry(path, name, dtype, shape, base + begin, base + end)
    return entries, meta


def index_files(files: Iterable[str | os.PathLike]) -> dict[str, TensorEntry]:
    """name → :class:`TensorEntry` over several shards; a name in two shards is an :class:`Ex4dError`."""
    index: dict[str, TensorEntry] = {}
    for f in files:
        entries, _ = read_header(f)
        twice = sorted(set(entries) & set(index))
        check(not twice, f"tensors {twice[:5]} are in both {index[twice[0]].file.name} and {Path(f).name}" if twice
              else "")
        index.update(entries)
    return index


class PinnedArena:
    """Page-locked host tensors carved out of ``chunk_bytes`` chunks (see the module docstring).

    ``pin=False`` (no CUDA) gives ordinary host memory through the same interface.
    """

    ALIGN = 512

    def __init__(self, chunk_bytes: int = 1024**3, pin: bool = True) -> None:
        self.chunk_bytes = int(chunk_bytes)
        self.pin = pin
        self._chunk: torch.Tensor | None = None
        self._used = 0
        self.allocated = 0  # bytes of chunks (and oversize tensors) allocated

    def _new(self, nbytes: int) -> torch.Tensor:
        self.allocated += nbytes
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A host tensor of ``shape`` and ``dtype`` (uninitialised), page-locked when the arena pins."""
        numel = 1
        for s in shape:
            numel *= int(s)
        nbytes = numel * dtype.itemsize
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        if nbytes > self.chunk_bytes // 4:  # big tensors get their own allocation, rounded to a 2^k by PyTorch
            return self._new(nbytes).view(dtype).view(shape)
        if self._chunk is None or self._used + nbytes > self.chunk_bytes:
            self._chunk, self._used = self._new(self.chunk_bytes), 0
        out = self._chunk[self._used:self._used + nbytes]
        self._used = -(-(self._used + nbytes) // self.ALIGN) * self.ALIGN
        return out.view(dtype).view(shape)

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """A page-locked host copy of ``tensor`` (any device)."""
        out = self.empty(tuple(tensor.shape), tensor.dtype)
        out.copy_(tensor.detach())
        return out


class _Reader:
    """One reader thread's file handles, staging buffer and CUDA stream."""

    def __init__(self, device: torch.device, chunk: int) -> None:
        self.fds: dict[Path, int] = {}
        self.cuda = device.type == "cuda"
        self.staging = torch.empty(chunk, dtype=torch.uint8, pin_memory=self.cuda) if self.cuda else None
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def fd(self, path: Path) -> int:
        if path not in self.fds:
            self.fds[path] = os.open(path, os.O_RDONLY)
        return self.fds[path]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _pread_into(fd: int, buf: memoryview, offset: int, path: Path) -> None:
    got = 0
    while got < len(buf):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [buf[got:]], offset + got)
        else:  # no preadv (e.g. older macOS): read, then copy
            data = os.pread(fd, len(buf) - got, offset + got)
            n = len(data)
            buf[got:got + n] = data
        if n <= 0:
            raise Ex4dError(f"{path}: unexpected end of file at byte {offset + got} (the file is truncated)")
        got += n


class TensorStreamer:
    """Copies groups of safetensors tensors to ``device`` with ``threads`` parallel readers (module docstring).

    Args:
        index: name → entry (:func:`index_files`).
        device: destination.
        threads: reader threads (each holds one ``chunk_mib`` staging buffer on CUDA).
        chunk_mib: read / copy granularity.

    Use as a context manager (it owns threads, file handles and pinned buffers).
    ``bytes_read`` counts what was read so far.
    """

    def __init__(self, index: dict[str, TensorEntry], device: torch.device | str, threads: int = 4,
                 chunk_mib: int = 64) -> None:
        self.index = index
        self.device = torch.device(device)
        self.chunk = int(chunk_mib) * 1024**2
        self.threads = max(1, int(threads))
        self._local = threading.local()
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ex4d-read")
        self.bytes_read = 0

    def __enter__(self) -> "TensorStreamer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for r in self._readers:
            r.close()
        self._readers.clear()

    def _reader(self) -> _Reader:
        r = getattr(self._local, "reader", None)
        if r is None:
            r = self._local.reader = _Reader(self.device, self.chunk)
            with self._lock:
                self._readers.append(r)
        return r

    def _copy_range(self, entry: TensorEntry, lo: int, hi: int, dest: torch.Tensor) -> None:
        """Bytes [lo, hi) of ``entry`` into ``dest`` (a uint8 slice on the device)."""
        r = self._reader()
        fd = r.fd(entry.file)
        n = hi - lo
        if not r.cuda:
            _pread_into(fd, memoryview(dest.numpy()), entry.start + lo, entry.file)
        else:
            _pread_into(fd, memoryview(r.staging[:n].numpy()), entry.start + lo, entry.file)
            with torch.cuda.stream(r.stream):
                dest.copy_(r.staging[:n], non_blocking=True)
            r.stream.synchronize()  # the staging buffer is reused by this thread's next range
        with self._lock:
            self.bytes_read += n

    def submit(self, names: list[str]) -> Future:
        """Start reading ``names``; the future gives name → tensor on the device (file dtype, file shape)."""
        missing = [n for n in names if n not in self.index]
        check(not missing, f"tensors not in the weight files: {missing[:5]}")
        entries = [self.index[n] for n in names]
        total = sum(-(-e.nbytes // 512) * 512 for e in entries)
        buf = torch.empty(total, dtype=torch.uint8, device=self.device)
        views, jobs, off = {}, [], 0
        for e in entries:
            views[e.name] = buf[off:off + e.nbytes].view(e.dtype).view(e.shape) if e.nbytes else torch.empty(
                e.shape, dtype=e.dtype, device=self.device)
            for lo in range(0, e.nbytes, self.chunk):
                hi = min(e.nbytes, lo + self.chunk)
                jobs.append(self._pool.submit(self._copy_range, e, lo, hi, buf[off + lo:off + hi]))
            off += -(-e.nbytes // 512) * 512
        done: Future = Future()
        remaining = [len(jobs)]

        def finished(job: Future) -> None:
            err = job.exception()
            with self._lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if err is not None and not done.done():
                done.set_exception(err)
            elif last and not done.done():
                done.set_result(views)

        if not jobs:
            done.set_result(views)
        for j in jobs:
            j.add_done_callback(finished)
        return done

    def load(self, names: list[str], dtype_for: Callable[[str], torch.dtype | None] | None = None
             ) -> dict[str, torch.Tensor]:
        """name → tensor on the device, cast to ``dtype_for(name)`` where that is given and differs."""
        return _cast(self.submit(names).result(), dtype_for)

    def groups(self, groups: list[list[str]], dtype_for: Callable[[str], torch.dtype | None] | None = None,
               prefetch: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Yield each group's tensors (as :meth:`load`), reading the next ``prefetch`` groups meanwhile."""
        pending: deque[Future] = deque()
        for g in groups:
            pending.append(self.submit(g))
            if len(pending) > prefetch:
                yield _cast(pending.popleft().result(), dtype_for)
        while pending:
            yield _cast(pending.popleft().result(), dtype_for)


def _cast(tensors: dict[str, torch.Tensor], dtype_for) -> dict[str, torch.Tensor]:
    if dtype_for is None:
        return tensors
    out = {}
    for name, t in tensors.items():
        want = dtype_for(name)
        out[name] = t.to(want) if want is not None and want != t.dtype and t.is_floating_point() else t
    return out
