"""Windowed generation (:mod:`.windows`) on the run's caches (``ex4d run --fill ex4d``) and on arrays (``ex4d generate``).

``ex4d run`` streams: the render is read per window from its chunked cache and
the output written chunk by chunk, so a clip of any length runs in the memory
of one window. ``ex4d generate`` works on the clip's arrays (its jobs read
whole videos). Both resume at the window in flight.
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

__all__ = ["fill_windows", "write_window_chunks", "generate_in_windows", "add_window_args", "window_config_from_args",
           "check_window_frames", "lift_backend"]


def lift_backend(memory: str, backend: str | None = None) -> str | None:
    """Rasterizer for the lifted meshes: ``backend`` if given; on the CPU (numba) in memory mode ``low``, whose
    budget (a 12 GB GPU) leaves no room for a 512² frame's ~0.6 GB of GPU raster temporaries; else the default."""
    if backend is not None:
        return backend
    return "numba" if memory == "low" else None


#: ``fill_options`` keys of ``--fill ex4d`` that name the weights, and those of the windows (:class:`WindowConfig`);
#: every other key is a :class:`~ex4d.diffusion.config.GenerateConfig` field
WEIGHT_OPTIONS = ("wan", "adapter", "encoders")
WINDOW_OPTIONS = ("window", "overlap", "lift", "lift_keep", "lift_every")


def split_fill_options(opts: dict) -> tuple[dict, dict, dict]:
    """(weights, GenerateConfig fields, WindowConfig fields) of a run's ``--fill ex4d`` options."""
    opts = dict(opts or {})
    return ({k: v for k, v in opts.items() if k in WEIGHT_OPTIONS},
            {k: v for k, v in opts.items() if k not in WEIGHT_OPTIONS + WINDOW_OPTIONS},
            {k: v for k, v in opts.items() if k in WINDOW_OPTIONS})


_SHARED: dict = {}  # the one generator kept across the stages of a run: {"key": ..., "holder": {"g", "load_s"}}


def shared_generator(wan, adapter, gen_config, encoders=None):
    """``generate(color, mask, seed)`` for ``gen_config`` over an Ex4dGenerator loaded on its first call, once per
    process and key.

    The fill and the stereo stage of ``ex4d run --fill ex4d --stereo`` share it, so the models are read once.
    The key is the weight files and the loading fields of ``gen_config``
    (:data:`~ex4d.diffusion.config.MODEL_FIELDS`); another key drops the kept generator first. The sampling
    settings (prompt, steps, …) are ``gen_config``'s on every call. ``generate.holder`` holds the generator
    (``"g"``) and its load time (``"load_s"``) once loaded; :func:`release_shared_generator` frees it.
    """
    from .config import MODEL_FIELDS

    key = (str(wan), None if adapter is None else str(adapter), None if encoders is None else str(encoders),
           tuple((f, repr(getattr(gen_config, f))) for f in MODEL_FIELDS))
    if _SHARED.get("key") != key:
        release_shared_generator()
        _SHARED.update(key=key, holder={})
    holder = _SHARED["holder"]

    def generate(color, mask, seed):
        if "g" not in holder:
            from .pipeline import Ex4dGenerator

            pair = [(gen_config.prompt, gen_config.negative_prompt if gen_config.cfg != 1.0 else None)]
            t0 = time.perf_counter()
            holder["g"] = Ex4dGenerator.load(wan, adapter, gen_config, encoders=encoders, overlap=True, prompts=pair)
            holder["load_s"] = time.perf_counter() - t0
        return holder["g"].generate(color, mask, gen_config.replace(seed=seed), progress=False)

    generate.holder = holder
    return generate


def release_shared_generator() -> None:
    """Drop the generator :func:`shared_generator` keeps (its GPU memory is freed)."""
    had = _SHARED.get("holder", {}).get("g") is not None
    _SHARED.clear()
    if had:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def fill_windows(render, clip, w2c: np.ndarray, K_out: np.ndarray, wan, adapter, gen_config, config: WindowConfig,
                 cache: Path, key: str, encoders=None, progress: bool = True, lift_config=None,
                 backend: str | None = None):
    """``ex4d run --fill ex4d``: the render cache generated in windows; returns the fill output cache.

    Loads the models only when a window is left to generate. ``cache`` is the run's ``.ex4d`` folder.
    """
    from ..streaming import CHUNK, fill_store

    color, mask, vdepth = render.field("color"), render.field("mask"), render.field("depth")
    T, H, W = mask.shape
    generate = shared_generator(wan, adapter, gen_config, encoders)
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


def add_window_args(p) -> None:
    """``--window`` and ``--overlap`` of ``ex4d generate``."""
    d = WindowConfig()
    g = p.add_argument_group("windows (clips longer than one window)")
    g.add_argument("--window", type=int, default=d.window,
                   help="frames per generation window, 4k+1 (%(default)s, the adapter's training length); longer "
                        "clips are generated in windows that continue each other")
    g.add_argument("--overlap", type=int, default=d.overlap,
                   help="frames each window shares with the previous one, given to the model as known "
                        "(%(default)s: the I2V frame + two whole VAE latents)")


def window_config_from_args(args) -> WindowConfig:
    """The WindowConfig of ``ex4d generate``'s flags (no lifting: it needs the render's depth and cameras)."""
    d = WindowConfig()
    return WindowConfig(window=getattr(args, "window", d.window), overlap=getattr(args, "overlap", d.overlap),
                        lift="none")


def check_window_frames(num_frames: int, windows: WindowConfig | None, policy: str = "exact") -> None:
    """Ex4dError before any weight is read when ``num_frames`` cannot be generated (policy: GenerateConfig.frames)."""
    from .windows import plan_windows

    check(num_frames >= 1, "the clip has no frames")
    if policy == "trim":
        return
    w = windows or WindowConfig()
    if policy == "pad" and num_frames <= w.window:
        return
    plan_windows(num_frames, w.window, w.overlap)


def _array_key(*arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def generate_in_windows(generator, color: np.ndarray, mask: np.ndarray, config, windows: WindowConfig | None,
                        out: Path, progress: bool = True) -> tuple[np.ndarray, int]:
    """(video [T', H, W, 3] uint8, number of windows) of ``generator`` on a clip of any length.

    A clip that one window holds (4k+1 frames ≤ ``windows.window``; or any count ≤ it with ``frames="pad"``)
    is one :meth:`Ex4dGenerator.generate` call, exactly as before windows existed. Longer clips (or other counts)
    go through :func:`~ex4d.diffusion.windows.generate_windows`, window k with seed + k; ``frames="trim"`` drops
    trailing frames down to 4k+1 first. The finished windows are kept in ``.<out name>.windows/`` beside
    ``out`` while the job runs (the same job again resumes there) and removed once the video is made.
    """
    from .windows import plan_windows

    windows = windows or WindowConfig(lift="none")
    T = len(color)
    if config.frames == "trim" and T % 4 != 1:
        T = (T - 1) // 4 * 4 + 1
        color, mask = color[:T], mask[:T]
    if (T % 4 == 1 and T <= windows.window) or (config.frames == "pad" and T <= windows.window):
        return generator.generate(color, mask, config, progress=progress), 1
    plan = plan_windows(T, windows.window, windows.overlap)
    work = Path(out).parent / f".{Path(out).name}.windows"
    key = hashlib.blake2b(json.dumps([_array_key(color, mask), config.to_json(), windows.to_dict()],
                                     sort_keys=True, default=str).encode(), digest_size=16).hexdigest()

    def generate(c, m, seed):
        return generator.generate(c, m, config.replace(seed=seed), progress=False)

    result = generate_windows(color, mask, generate, windows, work, key, seed=config.seed, progress=progress)
    video = result.video()
    shutil.rmtree(work, ignore_errors=True)
    return video, len(plan)
