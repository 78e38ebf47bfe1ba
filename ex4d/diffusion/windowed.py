"""Windowed generation (:mod:`.windows`) on the run's caches (``ex4d run --fill ex4d``) and on files (``ex4d generate``).

Both stream: the inputs are read per window from chunked caches, the output is
written chunk by chunk, so a clip of any length runs in the memory of one
window; both resume at the window in flight.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import check
from .windows import WindowConfig, WindowResult, generate_windows

__all__ = ["fill_windows", "write_window_chunks", "generate_video_files", "lift_backend"]


def lift_backend(memory: str, backend: str | None = None) -> str | None:
    """Rasterizer for the lifted meshes: ``backend`` if given; on the CPU (numba) in memory mode ``low``, whose
    budget (a 12 GB GPU) leaves no room for a 512² frame's ~0.6 GB of GPU raster temporaries; else the default."""
    if backend is not None:
        return backend
    return "numba" if memory == "low" else None


def _lazy_generator(load):
    """``generate(color, mask, seed)`` over an Ex4dGenerator that ``load()`` makes on the first call."""
    holder: dict = {}

    def generate(color, mask, seed):
        if "g" not in holder:
            t0 = time.perf_counter()
            holder["g"] = load()
            holder["load_s"] = time.perf_counter() - t0
        g = holder["g"]
        return g.generate(color, mask, g.config.replace(seed=seed), progress=False)

    generate.holder = holder
    return generate


def fill_windows(render, clip, w2c: np.ndarray, K_out: np.ndarray, wan, adapter, gen_config, config: WindowConfig,
                 cache: Path, key: str, encoders=None, progress: bool = True, lift_config=None,
                 backend: str | None = None):
    """``ex4d run --fill ex4d``: the render cache generated in windows; returns the fill output cache.

    Loads the models only when a window is left to generate. ``cache`` is the run's ``.ex4d`` folder.
    """
    from ..streaming import CHUNK, fill_store
    from .pipeline import Ex4dGenerator

    color, mask, vdepth = render.field("color"), render.field("mask"), render.field("depth")
    T, H, W = mask.shape
    generate = _lazy_generator(lambda: Ex4dGenerator.load(wan, adapter, gen_config, encoders=encoders))
    result = generate_windows(color, mask, generate, config, cache / "windows", key, seed=gen_config.seed,
                              view_depth=vdepth, w2c=w2c, K=K_out, lift_config=lift_config,
                              backend=lift_backend(gen_config.memory, backend), progress=progress)
    return write_window_chunks(result, fill_store(cache / "fill", key, T, H, W), CHUNK)


def write_window_chunks(result: WindowResult, store, chunk: int):
    """Write the stitched output of ``result`` into the ChunkStore ``store`` (field ``output``); returns it."""
    buf, c = [], 0
    for _, frames in result.chunks():
        for f in frames:
            buf.append(f)
            if len(buf) == chunk:
                if not store.has(c):
                    store.write(c, output=np.stack(buf))
                buf, c = [], c + 1
    if buf and not store.has(c):
        store.write(c, output=np.stack(buf))
    return store


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def generate_video_files(color_path, mask_path, out, load, gen_config, config: WindowConfig, num_frames: int = 0,
                         progress: bool = True) -> dict:
    """``ex4d generate``: color + mask videos → ``out`` (.mp4), generated in windows, streamed, resumable.

    ``load()`` gives the Ex4dGenerator (called only when a window is left to generate). The inputs are
    cached per chunk and the finished windows kept in ``.<out name>.windows/`` beside ``out``: a re-run of
    the same command continues there; the folder is removed once ``out`` is written. Returns
    ``{"frames", "width", "height", "fps", "windows", "load_s", "generate_s"}``.
    """
    from ..io.chunks import ChunkStore
    from ..io.video import VideoReader, VideoWriter
    from ..streaming import CHUNK
    from .conditioning import check_inputs

    out = Path(out)
    color_path, mask_path = Path(color_path), Path(mask_path)
    check(num_frames >= 0, f"--num-frames must be >= 0, got {num_frames}")
    work = out.parent / f".{out.name}.windows"
    key = hashlib.blake2b(json.dumps([_file_hash(color_path) if color_path.is_file() else str(color_path),
                                      _file_hash(mask_path) if mask_path.is_file() else str(mask_path),
                                      num_frames, gen_config.to_json(), config.to_dict()],
                                     sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    t0 = time.perf_counter()
    colors = VideoReader(color_path, num_frames=num_frames or None, max_res=1 << 16, multiple=1)
    masks = iter(VideoReader(mask_path, num_frames=num_frames or None, max_res=1 << 16, multiple=1, mask=True))
    store = None
    n = 0
    buf_c, buf_m = [], []
    for _, c in colors:
        try:
            _, m = next(masks)
        except StopIteration:
            check(False, f"{mask_path} has fewer frames than {color_path} ({n}); pass --num-frames")
        H, W = c.shape[:2]
        check(m.shape[0] >= H and m.shape[1] >= W,
              f"mask {mask_path} is {m.shape[1]}x{m.shape[0]}, color {color_path} {W}x{H}; they must have one size")
        m = m[:H, :W]  # a mask of odd size was padded to even when written
        if store is None:
            check_inputs(c[None], m[None])
            store = ChunkStore.open(work / "inputs", key, None, CHUNK, {"color": ((H, W, 3), np.uint8),
                                                                       "mask": ((H, W), bool)})
        buf_c.append(c)
        buf_m.append(m)
        n += 1
        if len(buf_c) == CHUNK:
            if not store.has(n // CHUNK - 1):
                store.write(n // CHUNK - 1, color=np.stack(buf_c), mask=np.stack(buf_m))
            buf_c, buf_m = [], []
    if buf_c and not store.has((n - 1) // CHUNK):
        store.write((n - 1) // CHUNK, color=np.stack(buf_c), mask=np.stack(buf_m))
    if next(masks, None) is not None and num_frames == 0:
        check(False, f"{mask_path} has more frames than {color_path} ({n}); pass --num-frames")
    store.finish(n)
    if gen_config.frames == "trim" and n % 4 != 1:
        n = (n - 1) // 4 * 4 + 1
    generate = _lazy_generator(load)
    color, mask = store.field("color"), store.field("mask")
    if n < len(color):
        color, mask = _Head(color, n), _Head(mask, n)
    result = generate_windows(color, mask, generate, config, work / "windows", key, seed=gen_config.seed,
                              progress=progress)
    with VideoWriter(out, colors.fps) as writer:
        for _, frames in result.chunks():
            writer.write(frames)
    shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0
    load_s = generate.holder.get("load_s", 0.0)
    return {"frames": n, "width": int(color.shape[2]), "height": int(color.shape[1]), "fps": colors.fps,
            "windows": len(result.plan), "load_s": load_s, "generate_s": total - load_s}


class _Head:
    """The first ``n`` frames of an array-like."""

    def __init__(self, a, n: int):
        self.a, self.n = a, n
        self.shape = (n, *a.shape[1:])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        check(isinstance(index, slice) and (index.stop or 0) <= self.n, f"index {index} outside the first {self.n}")
        return self.a[index]
