"""Chunked on-disk arrays: a [T, ...] video-sized array as one file per chunk of frames, resumable.

A run's caches (frames, depth, renders, fill output) are too large to hold in
memory for long clips (2,000 frames of 512² RGB + depth + render ≈ 7 GB), so
each is a folder::

    NAME/meta.json        {"key", "num_frames", "chunk", "fields": {name: {"shape", "dtype"}}, "compress", "attrs"}
    NAME/00000.npz        frames [0, chunk) of every field (bool fields packed to bits)
    NAME/00001.npz        frames [chunk, 2·chunk) …

Every chunk file is written atomically, so a crash or Ctrl-C loses at most the
chunk being written; :meth:`ChunkStore.open` with the same key keeps the
finished chunks and :meth:`ChunkStore.missing` says what is left to do. A
different key (the stage's inputs changed) empties the folder.

:meth:`ChunkStore.field` gives an array-like over one field that loads only
the chunks it is asked for (``a[t]``, ``a[t0:t1]``, ``a[[s, …]]``, ``len(a)``,
``a.shape``), keeping a few recently used chunks: what the classical fill's
per-index access to source frames and depth needs.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import Ex4dError, check
from .atomic import atomic_save_npz, atomic_write_json

__all__ = ["ChunkStore", "ChunkedArray", "chunk_spans", "concat_field"]

_META = "meta.json"


def chunk_spans(num_frames: int, chunk: int) -> list[tuple[int, int]]:
    """[(start, end), …] (end exclusive) of consecutive chunks of ``chunk`` frames covering ``num_frames``."""
    check(num_frames >= 0 and chunk >= 1, f"need num_frames >= 0 and chunk >= 1, got {num_frames}, {chunk}")
    return [(a, min(a + chunk, num_frames)) for a in range(0, num_frames, chunk)]


def _norm_fields(fields: dict) -> dict:
    out = {}
    for name, (shape, dtype) in fields.items():
        out[name] = {"shape": [int(s) for s in shape], "dtype": np.dtype(dtype).str}
    return out


class ChunkStore:
    """A folder of chunk files holding named fields, each [num_frames, *shape] of one dtype.

    Build with :meth:`open` (resumes a store of the same key) or :meth:`load` (an existing, finished store).
    """

    def __init__(self, folder: Path, meta: dict):
        self.folder = Path(folder)
        self.meta = meta
        self.key = meta["key"]
        self.chunk = int(meta["chunk"])
        self.fields = {n: (tuple(f["shape"]), np.dtype(f["dtype"])) for n, f in meta["fields"].items()}
        self.compress = bool(meta.get("compress", False))
        self._set_length(meta["num_frames"])

    def _set_length(self, num_frames: int | None) -> None:
        self.num_frames = None if num_frames is None else int(num_frames)
        self.spans = [] if num_frames is None else chunk_spans(self.num_frames, self.chunk)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, folder: str | os.PathLike, key: str, num_frames: int | None, chunk: int, fields: dict,
             compress: bool = False) -> "ChunkStore":
        """The store in ``folder`` for ``key``: finished chunks of the same key and layout are kept, else emptied.

        ``fields``: {name: (per-frame shape, dtype)}, e.g. ``{"color": ((H, W, 3), np.uint8)}``.
        ``num_frames=None``: a stream of unknown length (a video being decoded): chunks are
        written in order, each of ``chunk`` frames but the last, and :meth:`finish` sets the length.
        """
        folder = Path(folder)
        meta = {"key": key, "num_frames": None if num_frames is None else int(num_frames), "chunk": int(chunk),
                "fields": _norm_fields(fields), "compress": bool(compress), "attrs": {}}
        old = _read_meta(folder)
        same = old is not None and all(old.get(k) == meta[k] for k in ("key", "chunk", "fields", "compress"))
        same = same and (num_frames is None or old.get("num_frames") in (None, meta["num_frames"]))
        if same:
            meta["attrs"] = old.get("attrs", {})
            meta["num_frames"] = old.get("num_frames") if num_frames is None else meta["num_frames"]
            for p in folder.glob(".*.tmp-*"):  # what a killed run was writing
                p.unlink(missing_ok=True)
        else:
            _empty(folder)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / _META, meta)
        return cls(folder, meta)

    @classmethod
    def load(cls, folder: str | os.PathLike, key: str | None = None) -> "ChunkStore":
        """An existing store (every chunk present); Ex4dError if it is missing, incomplete or of another key."""
        folder = Path(folder)
        meta = _read_meta(folder)
        check(meta is not None, f"{folder} holds no chunked cache; re-run the job that writes it")
        store = cls(folder, meta)
        check(key is None or store.key == key, f"{folder} holds a cache of other inputs; re-run the job")
        check(store.complete, f"{folder} is incomplete ({len(store.missing())} of {len(store.spans)} chunks "
                              "missing); re-run the same command to finish it")
        return store

    @classmethod
    def resume(cls, folder: str | os.PathLike, key: str) -> "ChunkStore | None":
        """The store in ``folder`` if it was opened for ``key`` (finished or not), else None."""
        meta = _read_meta(Path(folder))
        return cls(Path(folder), meta) if meta is not None and meta.get("key") == key else None

    @staticmethod
    def exists(folder: str | os.PathLike, key: str) -> bool:
        """Whether ``folder`` holds a finished store of ``key``."""
        meta = _read_meta(Path(folder))
        if meta is None or meta.get("key") != key:
            return False
        return ChunkStore(Path(folder), meta).complete

    # ------------------------------------------------------------------ chunks

    def path(self, c: int) -> Path:
        """File of chunk ``c``."""
        return self.folder / f"{c:05d}.npz"

    def has(self, c: int) -> bool:
        return self.path(c).is_file()

    def missing(self) -> list[int]:
        """Indices of the chunks not written yet (of a stream store of unknown length: none known)."""
        return [c for c in range(len(self.spans)) if not self.has(c)]

    @property
    def complete(self) -> bool:
        return self.num_frames is not None and not self.missing()

    def chunk_of(self, t: int) -> int:
        return int(t) // self.chunk

    def write(self, c: int, **arrays: np.ndarray) -> None:
        """Write chunk ``c`` (atomically): every field, each [end − start, *shape] of its dtype."""
        check(set(arrays) == set(self.fields), f"chunk needs fields {sorted(self.fields)}, got {sorted(arrays)}")
        if self.num_frames is None:  # a stream: any length up to a chunk
            n = len(next(iter(arrays.values())))
            check(c >= 0 and 1 <= n <= self.chunk, f"chunk {c} of a stream must hold 1..{self.chunk} frames, got {n}")
        else:
            check(0 <= c < len(self.spans), f"chunk {c} is outside the store's {len(self.spans)} chunks")
            a, b = self.spans[c]
            n = b - a
        out = {}
        for name, x in arrays.items():
            shape, dtype = self.fields[name]
            x = np.asarray(x)
            check(x.shape == (n, *shape), f"chunk {c} field {name}: shape {x.shape}, expected {(n, *shape)}")
            # masks as bits: 8× smaller on disk at no compression cost
            out[name] = np.packbits(x.astype(bool), axis=-1) if dtype == bool else np.ascontiguousarray(x, dtype=dtype)
        atomic_save_npz(self.path(c), compress=self.compress, **out)

    def finish(self, num_frames: int) -> None:
        """Set the length of a stream store (after writing every chunk) and record it."""
        check(num_frames >= 1, "a stream store needs at least one frame")
        self._set_length(num_frames)
        check(self.complete, f"{self.folder}: chunks {self.missing()} missing at the end of the stream")
        self.meta["num_frames"] = self.num_frames
        atomic_write_json(self.folder / _META, self.meta)

    def read(self, c: int) -> dict[str, np.ndarray]:
        """Every field of chunk ``c`` ({name: [end − start, *shape]})."""
        try:
            with np.load(self.path(c), allow_pickle=False) as z:
                return {name: (np.unpackbits(z[name], axis=-1, count=shape[-1]).astype(bool) if dtype == bool
                               else z[name]) for name, (shape, dtype) in self.fields.items()}
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise Ex4dError(f"cannot read cache chunk {self.path(c)} ({e}); delete {self.folder} and re-run") from None

    def chunks(self) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(start, end, fields) of every chunk in order (loaded one at a time)."""
        for c, (a, b) in enumerate(self.spans):
            yield a, b, self.read(c)

    def field(self, name: str, cache_chunks: int = 3) -> "ChunkedArray":
        """Array-like [num_frames, *shape] over field ``name`` that loads chunks on demand."""
        check(name in self.fields, f"no field {name!r} in {self.folder}; fields: {sorted(self.fields)}")
        return ChunkedArray(self, name, cache_chunks)

    # ------------------------------------------------------------------ attributes

    @property
    def attrs(self) -> dict:
        """Small JSON metadata stored with the chunks (e.g. the clip's largest depth)."""
        return dict(self.meta.get("attrs", {}))

    def set_attrs(self, **attrs) -> None:
        self.meta["attrs"] = {**self.meta.get("attrs", {}), **attrs}
        atomic_write_json(self.folder / _META, self.meta)


class ChunkedArray:
    """Read-only array-like [T, *shape] over one field of a :class:`ChunkStore`, loading chunks on demand.

    Supports ``len(a)``, ``a.shape``, ``a.dtype``, ``a.ndim``, ``a[t]``,
    ``a[t0:t1]`` (step 1), ``a[index array]`` and ``np.asarray(a)`` (everything:
    for small clips only). Keeps the ``cache_chunks`` most recently used chunks.
    """

    def __init__(self, store: ChunkStore, name: str, cache_chunks: int = 3):
        self.store, self.name = store, name
        shape, self.dtype = store.fields[name]
        self.shape = (store.num_frames, *shape)
        self.ndim = len(self.shape)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._keep = max(1, int(cache_chunks))

    def __len__(self) -> int:
        return self.shape[0]

    def _chunk(self, c: int) -> np.ndarray:
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        x = self.store.read(c)[self.name]
        self._cache[c] = x
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return x

    def _frame(self, t: int) -> np.ndarray:
        T = self.shape[0]
        if t < 0:
            t += T
        if not 0 <= t < T:
            raise IndexError(f"frame {t} outside [0, {T})")
        c = t // self.store.chunk
        return self._chunk(c)[t - self.store.spans[c][0]]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._frame(int(index))
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                return self[np.arange(start, stop, step)]
            if stop <= start:
                return np.empty((0, *self.shape[1:]), self.dtype)
            parts = []
            for c in range(start // self.store.chunk, (stop - 1) // self.store.chunk + 1):
                a, b = self.store.spans[c]
                parts.append(self._chunk(c)[max(start, a) - a:min(stop, b) - a])
            return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
        idx = np.asarray(index)
        check(idx.ndim == 1 and idx.dtype.kind in "iu", f"unsupported index {index!r}")
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        for i, t in enumerate(idx):
            out[i] = self._frame(int(t))
        return out

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype)


def concat_field(folder: str | os.PathLike, name: str) -> np.ndarray:
    """Every frame of field ``name`` of the finished store in ``folder`` as one array (small clips only)."""
    return np.asarray(ChunkStore.load(folder).field(name))


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or not {"key", "num_frames", "chunk", "fields"} <= set(meta):
        return None
    return meta


def _empty(folder: Path) -> None:
    """Remove the chunk files and meta of a store (nothing else in the folder)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and (p.name == _META or (p.suffix == ".npz" and p.stem.isdigit()) or ".tmp-" in p.name):
            p.unlink()
