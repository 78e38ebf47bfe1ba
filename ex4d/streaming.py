"""A run's stages streamed chunk by chunk over on-disk caches: any clip length in bounded memory, resumable.

Each stage reads its inputs per frame index from the previous stage's cache
and writes its results to ``OUT/.ex4d/<stage>/`` as one file per chunk of
:data:`CHUNK` frames (:class:`~ex4d.io.chunks.ChunkStore`), then streams the
videos of the output folder from those chunks (:class:`~ex4d.io.video.VideoWriter`,
atomic). So memory holds a few chunks whatever the clip's length, and a
crash or Ctrl-C loses at most the chunk being computed: the same command
again keeps the finished chunks of a stage whose key is unchanged.

=================  ==========================================  =====================================
cache              fields per frame                            written by
=================  ==========================================  =====================================
``frames/``        ``rgb`` [H, W, 3] uint8 (+ ``depth`` for    :func:`read_clip`
                   the example: exact z-depth)
``depth/``         ``depth`` [H, W] float32 z-depth            :func:`depth_from_file`, :func:`depth_from_model`
``render/``        ``color`` uint8, ``mask`` bool, ``depth``    :func:`render_chunks`
                   float32 (inf = no scene surface)
``fill-pass1/``    ``out`` uint8, ``inpainted`` bool            :func:`classical_fill_chunks` (reproject + inpaint)
``fill/``          ``output`` [H, W, 3] uint8                  :func:`classical_fill_chunks`, the ex4d windows
=================  ==========================================  =====================================

The pipeline (:mod:`ex4d.pipeline`) computes the keys and wires the stages.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io.chunks import ChunkedArray, ChunkStore

__all__ = ["CHUNK", "Clip", "read_clip", "depth_from_file", "depth_from_model", "exact_depth", "ScaledDepth",
           "scaled_depth", "depth_store",
           "render_chunks", "render_store", "classical_fill_chunks", "fill_store", "write_fill_outputs",
           "tint_unknown", "make_preview", "progress_bar"]

#: Frames per cache chunk: 16 frames of 512² RGB + depth ≈ 28 MB.
CHUNK = 16


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "frame"):
    """A tqdm bar (with an ETA) or a no-op stand-in."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- frames

@dataclass(frozen=True)
class Clip:
    """The input clip, held on disk and read per frame.

    =============  ===========================  ==============================================
    field          type / shape                 meaning
    =============  ===========================  ==============================================
    frames         [T, H, W, 3] uint8 array-like  RGB frames (:class:`ChunkedArray`)
    fps            float                        frame rate of the clip (source fps / stride)
    indices        [T] int64                    index of each frame in the source
    total_frames   int                          frames in the source (-1 if unknown)
    example_depth  [T, H, W] float32 or None    the example's exact depth (array-like)
    =============  ===========================  ==============================================
    """

    frames: ChunkedArray
    fps: float
    indices: np.ndarray
    total_frames: int
    example_depth: ChunkedArray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, H, W)."""
        return tuple(self.frames.shape[:3])


def read_clip(config, folder: Path, key: str, progress: bool = True) -> Clip:
    """The frames of ``config`` (a RunConfig: video or example and the frame selection) cached in ``folder``.

    A video is decoded once, frame by frame, into chunks; a cache of the same
    ``key`` is reused, and an interrupted decode keeps its finished chunks.
    """
    if config.example:
        return _example_clip(config, folder, key, progress)
    from .io.video import VideoReader

    reader = VideoReader(config.video, num_frames=config.num_frames, start=config.start, stride=config.stride,
                         max_res=config.max_res, allow_short=config.allow_short)
    if ChunkStore.exists(folder, key):
        store = ChunkStore.load(folder, key)
        a = store.attrs
        return Clip(store.field("rgb"), a["fps"], np.asarray(a["indices"], np.int64), a["total_frames"])
    store = None
    buf, idx = [], []
    bar = progress_bar(reader.wanted, "read", progress)
    try:
        for index, image in reader:
            if store is None:
                store = ChunkStore.open(folder, key, None, CHUNK, {"rgb": (image.shape, np.uint8)})
            buf.append(image)
            idx.append(index)
            if len(buf) == CHUNK:
                _flush(store, len(idx) // CHUNK - 1, buf)
            bar.update(1)
        if buf:
            _flush(store, (len(idx) - 1) // CHUNK, buf)
    finally:
        bar.close()
    store.finish(len(idx))
    store.set_attrs(fps=reader.fps / config.stride, indices=[int(i) for i in idx], total_frames=reader.total_frames)
    return Clip(store.field("rgb"), reader.fps / config.stride, np.asarray(idx, np.int64), reader.total_frames)


def _flush(store: ChunkStore, c: int, buf: list) -> None:
    if not store.has(c):
        store.write(c, rgb=np.stack(buf))
    buf.clear()


def _example_clip(config, folder: Path, key: str, progress: bool) -> Clip:
    from .example import example_frame

    T, S = config.num_frames or 49, config.example_size
    store = ChunkStore.open(folder, key, T, CHUNK, {"rgb": ((S, S, 3), np.uint8), "depth": ((S, S), np.float32)})
    missing = store.missing()
    with progress_bar(sum(store.spans[c][1] - store.spans[c][0] for c in missing), "example scene",
                      progress and bool(missing)) as bar:
        for c in missing:
            a, b = store.spans[c]
            rgb = np.empty((b - a, S, S, 3), np.uint8)
            depth = np.empty((b - a, S, S), np.float32)
            for i, t in enumerate(range(a, b)):
                rgb[i], depth[i] = example_frame(t, T, S, S)
                bar.update(1)
            store.write(c, rgb=rgb, depth=depth)
    return Clip(store.field("rgb"), 24.0, np.arange(T), T, example_depth=store.field("depth"))


# ---------------------------------------------------------------------------------------------- depth

def depth_store(folder: Path, key: str, T: int, H: int, W: int) -> ChunkStore:
    """The depth cache of ``key`` (resumed when it exists)."""
    return ChunkStore.open(folder, key, T, CHUNK, {"depth": ((H, W), np.float32)})


def depth_from_file(clip: Clip, path, kind: str | None, key_name: str | None, scale: float, folder: Path,
                    key: str, progress: bool = True) -> ChunkedArray:
    """Depth [T, H, W] (array-like read per frame) of a depth file, converted and resized a chunk at a time."""
    from .io.depth import (check_depth_matches_frames, default_depth_kind, fit_depth_to_frames, select_depth_frames,
                           to_depth)
    from .io.depth_stream import open_depth_values

    T, H, W = clip.shape
    raw = open_depth_values(path, key_name)
    pick = select_depth_frames(raw.shape, clip.indices, clip.total_frames)
    pick = np.arange(T) if pick is None else pick
    check_depth_matches_frames((T, *raw.shape[1:]), H, W, f"--depth {path}")  # the whole selection's shape
    kind = kind or default_depth_kind(path, key_name)
    store = depth_store(folder, key, T, H, W)
    peak = None
    if kind == "disparity" and store.missing():  # normalised by the clip's largest disparity: one pass first
        peak = max(float(np.max(raw[int(s)])) for s in pick)
    missing = store.missing()
    with progress_bar(T, "depth", progress and bool(missing)) as bar:
        for c in missing:
            a, b = store.spans[c]
            d = fit_depth_to_frames(to_depth(raw[pick[a:b]], kind, scale=scale, peak=peak, first_frame=a), H, W,
                                    f"--depth {path}")
            store.write(c, depth=d)
            bar.update(b - a)
    return _finish_depth(store)


def _finish_depth(store: ChunkStore) -> ChunkedArray:
    """The depth field, with every frame's largest depth computed once and kept with the cache."""
    if "depth_frame_max" not in store.attrs:
        store.set_attrs(depth_frame_max=[float(v) for _, _, z in store.chunks() for v in z["depth"].max(axis=(1, 2))])
    return store.field("depth")


class ScaledDepth:
    """Depth [T, H, W] float32 read per frame, frame t aligned by ``scales[t]`` and ``shifts[t]`` (relative depth
    made consistent with the source poses, :func:`ex4d.poses.align_depth_frame`); :attr:`max_depth` is the
    clip's largest value."""

    def __init__(self, depth: ChunkedArray, scales, shifts=None):
        self.depth = depth
        T = len(depth)
        self.scales = np.ones(T) if scales is None else np.asarray(scales, np.float64).reshape(-1)
        self.shifts = np.zeros(T) if shifts is None else np.asarray(shifts, np.float64).reshape(-1)
        self.shape, self.dtype, self.ndim = tuple(depth.shape), np.dtype(np.float32), 3
        frame_max = np.asarray(depth.store.attrs["depth_frame_max"], np.float64)
        # the alignment is monotonic in depth: the largest depth of a frame maps to its largest aligned depth
        scaled = frame_max * self.scales
        disp = 1.0 / scaled
        self.max_depth = float(np.max(np.where(self.shifts == 0, scaled,
                                               1.0 / np.maximum(disp + self.shifts, 0.5 * disp))))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        from .poses import align_depth_frame

        if isinstance(index, (int, np.integer)):
            t = int(index) % self.shape[0]
            return align_depth_frame(self.depth[t], float(self.scales[t]), float(self.shifts[t]))
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        idx = np.asarray(index)
        frames = self.depth[idx]
        if np.allclose(self.scales[idx], 1.0) and not self.shifts[idx].any():
            return frames
        return np.stack([align_depth_frame(f, float(s), float(b))
                         for f, s, b in zip(frames, self.scales[idx], self.shifts[idx])])

    def __array__(self, dtype=None, copy=None):
        x = self[:]
        return x if dtype is None else x.astype(dtype)


def scaled_depth(depth: ChunkedArray, scales=None, shifts=None) -> ScaledDepth:
    """``depth`` (a depth cache's field) with per-frame scales and disparity shifts applied on reading (None: none)."""
    return ScaledDepth(depth, scales, shifts)


def depth_from_model(clip: Clip, model: str, weights, options: dict, folder: Path, key: str,
                     progress: bool = True) -> ChunkedArray:
    """Depth [T, H, W] (array-like read per frame) estimated by a depth model, written a chunk at a time."""
    from .depth import estimate_depth_chunks

    T, H, W = clip.shape
    store = depth_store(folder, key, T, H, W)
    if store.missing():
        estimate_depth_chunks(clip.frames, store, model=model, weights=weights, progress=progress, **options)
    return _finish_depth(store)


def exact_depth(clip: Clip) -> ChunkedArray:
    """The example's exact depth (with its per-frame maxima kept in the frames cache)."""
    store = clip.example_depth.store
    if "depth_frame_max" not in store.attrs:
        store.set_attrs(depth_frame_max=[float(v) for _, _, z in store.chunks() for v in z["depth"].max(axis=(1, 2))])
    return clip.example_depth


# ---------------------------------------------------------------------------------------------- render

def render_store(folder: Path, key: str, T: int, H: int, W: int) -> ChunkStore:
    """The render cache of ``key`` (resumed when it exists)."""
    return ChunkStore.open(folder, key, T, CHUNK, {"color": ((H, W, 3), np.uint8), "mask": ((H, W), bool),
                                                   "depth": ((H, W), np.float32)})


def render_chunks(clip: Clip, depth, K: np.ndarray, w2c: np.ndarray, K_out: np.ndarray, recon, far: float,
                  folder: Path, key: str, out: Path, png: bool, save_mesh: bool, crf: int,
                  progress: bool = True) -> tuple[ChunkStore, dict]:
    """Render every frame's DW-Mesh chunk by chunk into the cache and stream color.mp4 / mask.mp4 (+ PNGs, meshes).

    Returns (the render cache, {"known_sum", "known_frames", "known_all", "empty_moved", "empty_all", "mesh_s",
    "raster_s"}): the known fraction summed over frames whose camera moved (and over all), how many of them
    show nothing known, and seconds spent.
    """
    from .dwmesh import export_ply
    from .io.video import VideoWriter, write_png_frames
    from .recon import render_novel_views

    T, H, W = clip.shape
    store = render_store(folder, key, T, H, W)
    stats = {"known_sum": 0.0, "known_frames": 0, "known_all": 0.0, "empty_moved": 0, "empty_all": 0,
             "mesh_s": 0.0, "raster_s": 0.0}
    last = len(store.spans) - 1
    if save_mesh:
        (out / "meshes").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        color_w = stack.enter_context(VideoWriter(out / "color.mp4", clip.fps, crf=crf))
        mask_w = stack.enter_context(VideoWriter(out / "mask.mp4", clip.fps, crf=crf))
        bar = stack.enter_context(progress_bar(T, "render", progress))
        for c, (a, b) in enumerate(store.spans):
            meshes_there = not save_mesh or all((out / "meshes" / f"{t:05d}.ply").is_file() for t in range(a, b))
            if store.has(c) and meshes_there:
                z = store.read(c)
            else:
                on_mesh = None
                if save_mesh:
                    def on_mesh(t, mesh, a=a):
                        export_ply(mesh, out / "meshes" / f"{a + t:05d}.ply")
                res = render_novel_views(clip.frames[a:b], depth[a:b], K, w2c[a:b], K_out[a:b], config=recon,
                                         progress=False, on_mesh=on_mesh, far=far)
                z = {"color": res.color, "mask": res.mask, "depth": res.depth}
                store.write(c, **z)
                stats["mesh_s"] += res.timings["mesh_s"]
                stats["raster_s"] += res.timings["render_s"]
            color_w.write(z["color"])
            mask_w.write(z["mask"])
            if png:
                write_png_frames(out / "color", z["color"], start=a, prune=c == last)
                write_png_frames(out / "mask", z["mask"], start=a, prune=c == last)
            moved = [i for i, t in enumerate(range(a, b)) if not np.allclose(w2c[t], np.eye(4))]
            stats["known_sum"] += float(z["mask"][moved].mean(axis=(1, 2)).sum()) if moved else 0.0
            stats["known_frames"] += len(moved)
            stats["known_all"] += float(z["mask"].mean(axis=(1, 2)).sum())
            empty = ~z["mask"].any(axis=(1, 2))
            stats["empty_moved"] += int(empty[moved].sum()) if moved else 0
            stats["empty_all"] += int(empty.sum())
            bar.update(b - a)
    return store, stats


# ---------------------------------------------------------------------------------------------- fill

def fill_store(folder: Path, key: str, T: int, H: int, W: int) -> ChunkStore:
    """The fill output cache of ``key`` (resumed when it exists)."""
    return ChunkStore.open(folder, key, T, CHUNK, {"output": ((H, W, 3), np.uint8)})


def classical_fill_chunks(render: ChunkStore, clip: Clip, depth, K: np.ndarray, w2c: np.ndarray,
                          K_out: np.ndarray, recon, config, far: float, state_dir: Path, key: str,
                          progress: bool = True, w2c_src: np.ndarray | None = None) -> ChunkStore:
    """The classical fill of the whole clip, a chunk at a time: the pixels :func:`~ex4d.fill.classical_fill` gives.

    Pass 1 (reprojection from the temporal neighbours and, with a moving source camera, keyframes of the whole
    clip; inpainting) fills each chunk's frames reading every source per frame from the caches (``w2c``: the
    novel cameras relative to each source camera; ``w2c_src``: the source poses, None = a tripod); pass 2
    smooths the inpainted pixels over time with :func:`~ex4d.fill.smoothing_margin` frames of context, beyond
    which a frame's influence is below 1e-4 grey levels. Both passes are cached per chunk (pass 1's cache is
    removed once pass 2 is done).
    """
    from .fill import reproject_and_inpaint, smooth_inpainted, smoothing_margin

    T, H, W = clip.shape
    color, mask, vdepth = render.field("color"), render.field("mask"), render.field("depth")
    pass1 = ChunkStore.open(state_dir / "fill-pass1", key, T, CHUNK,
                            {"out": ((H, W, 3), np.uint8), "inpainted": ((H, W), bool)})
    missing = pass1.missing()
    with progress_bar(sum(pass1.spans[c][1] - pass1.spans[c][0] for c in missing), "fill", progress) as bar:
        for c in missing:
            a, b = pass1.spans[c]
            out, inp, _ = reproject_and_inpaint(color, mask, vdepth, clip.frames, depth, K, w2c, K_out, recon, config,
                                                progress=False, w2c_src=w2c_src, far=far, targets=range(a, b))
            pass1.write(c, out=out, inpainted=inp)
            bar.update(b - a)
    store = fill_store(state_dir / "fill", key, T, H, W)
    M = smoothing_margin(config.smooth)
    keep = 2 + 2 * (M // CHUNK + 1)
    p_out, p_inp = pass1.field("out", cache_chunks=keep), pass1.field("inpainted", cache_chunks=keep)
    for c in store.missing():
        a, b = store.spans[c]
        lo, hi = max(0, a - M), min(T, b + M)
        out = smooth_inpainted(p_out[lo:hi], p_inp[lo:hi], config.smooth)[a - lo:b - lo]
        known = mask[a:b]
        out[known] = color[a:b][known]
        store.write(c, output=out)
    import shutil

    shutil.rmtree(pass1.folder, ignore_errors=True)  # only needed to resume pass 2
    return store


def write_fill_outputs(out: Path, fill: ChunkStore, render: ChunkStore, clip: Clip, crf: int,
                       png: bool = False) -> None:
    """Stream output.mp4 and preview.mp4 (input | render with unknown tinted | output) from the caches
    (and ``output/00000.png`` … with ``png``)."""
    from .io.video import VideoWriter, write_png_frames

    color, mask = render.field("color"), render.field("mask")
    last = len(fill.spans) - 1
    with VideoWriter(out / "output.mp4", clip.fps, crf=crf) as ow, \
            VideoWriter(out / "preview.mp4", clip.fps, crf=crf) as pw:
        for c, (a, b, z) in enumerate(fill.chunks()):
            ow.write(z["output"])
            pw.write(make_preview(clip.frames[a:b], color[a:b], mask[a:b], z["output"]))
            if png:
                write_png_frames(out / "output", z["output"], start=a, prune=c == last)


def tint_unknown(color: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Render [..., H, W, 3] uint8 with unknown pixels ([..., H, W] False) shown in magenta."""
    out = color.copy()
    out[~mask] = (255, 0, 255)
    return out


def make_preview(frames: np.ndarray, color: np.ndarray, mask: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Side by side [T, H, 3W(+gaps), 3] uint8: input | render with unknown tinted | output."""
    T, H, W = mask.shape
    gap = np.full((T, H, 8, 3), 255, dtype=np.uint8)
    return np.concatenate([frames, gap, tint_unknown(color, mask), gap, output], axis=2)
