"""What the app shows before a run: the input's DW-Meshes and the camera path, from a RunConfig.

Both use the library exactly as a run does (the same frame reader, depth
conversion, intrinsics and :func:`ex4d.trajectory.make_trajectory`), so the
path drawn in the browser is the path the run renders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .export import encode_scene, write_scene

__all__ = ["InputClip", "load_input_clip", "input_key", "prepare_preview", "path_preview"]


@dataclass(frozen=True)
class InputClip:
    """A run's input at the size it is processed.

    ======  ===================  ========================================
    field   shape, dtype         meaning
    ======  ===================  ========================================
    frames  [T, H, W, 3] uint8   RGB
    depth   [T, H, W] float32    z-depth (None: a depth model will make it)
    K       [3, 3] float64       source intrinsics (pixels)
    fps     float                frame rate of the processed clip
    ======  ===================  ========================================
    """

    frames: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray
    fps: float


def input_key(config) -> str:
    """Hash of the RunConfig fields that decide the input clip (frames, depth, K)."""
    d = config.to_dict()
    keep = ("video", "example", "example_size", "num_frames", "start", "stride", "max_res", "allow_short", "depth",
            "depth_kind", "depth_key", "depth_scale", "depth_model", "fov", "focal")
    return hashlib.blake2b(json.dumps({k: d[k] for k in keep}, sort_keys=True, default=str).encode(),
                           digest_size=8).hexdigest()


def _intrinsics(config, width: int, height: int) -> np.ndarray:
    from ..cameras import default_intrinsics, intrinsics_from_focal, intrinsics_from_fov

    if config.focal is not None:
        return intrinsics_from_focal(width, height, config.focal)
    if config.fov is not None:
        return intrinsics_from_fov(width, height, config.fov)
    return default_intrinsics(width, height)


def load_input_clip(config) -> InputClip:
    """The frames, depth (if a file or the example gives it) and K that ``run_pipeline(config)`` would use."""
    if config.example:
        from ..example import make_example

        scene = make_example(config.num_frames or 49, config.example_size, config.example_size)
        depth = None if config.depth_model else scene.depth
        return InputClip(frames=scene.frames, depth=depth, K=scene.K, fps=scene.fps)
    from ..io.depth import default_depth_kind, load_depth_file, match_depth_to_frames, resize_depth, to_depth
    from ..io.video import read_video

    fr = read_video(config.video, num_frames=config.num_frames, start=config.start, stride=config.stride,
                    max_res=config.max_res, allow_short=config.allow_short)
    T, H, W = fr.frames.shape[:3]
    depth = None
    if config.depth:
        raw = match_depth_to_frames(load_depth_file(config.depth, key=config.depth_key), fr.indices, fr.total_frames)
        kind = config.depth_kind or default_depth_kind(config.depth, config.depth_key)
        depth = to_depth(raw, kind, scale=config.depth_scale)
        if depth.shape[1:] != (H, W):
            depth = resize_depth(depth, H, W)
        depth = np.ascontiguousarray(depth, dtype=np.float32)
    return InputClip(frames=fr.frames, depth=depth, K=_intrinsics(config, W, H), fps=fr.fps / config.stride)


def _info(clip: InputClip) -> dict:
    T, H, W = clip.frames.shape[:3]
    return {"num_frames": int(T), "width": int(W), "height": int(H), "fps": float(clip.fps), "K": clip.K.tolist()}


def prepare_preview(config, folder: str | Path, max_size: int = 256) -> dict:
    """Make (or reuse) the input's scene export and frame-0 depth in ``folder``.

    Returns ``{"key", "scene": path of the .bin.gz, "info": {num_frames, width, height, fps, K}}``.
    Raises Ex4dError when the depth comes from a model (no preview before the run).
    """
    from ..trajectory import pivot_depth_from_depth

    folder = Path(folder)
    key = input_key(config)
    scene = folder / f"{key}-{max_size}.bin.gz"
    meta = folder / f"{key}.npz"
    if scene.is_file() and meta.is_file():
        with np.load(meta) as z:
            info = json.loads(str(z["info"]))
        return {"key": key, "scene": scene, "info": info}
    clip = load_input_clip(config)
    check(clip.depth is not None, "the 3D preview needs depth: with a depth model it appears once the run has "
                                  "estimated depth (open the result in the 4D viewer)")
    info = _info(clip)
    info["pivot_depth"] = pivot_depth_from_depth(clip.depth[0])
    write_scene(scene, encode_scene(clip.frames, clip.depth, clip.K, clip.fps, config.recon.mesh, max_size=max_size))
    from ..io.atomic import atomic_save_npz

    atomic_save_npz(meta, depth0=clip.depth[0], info=np.array(json.dumps(info)))
    return {"key": key, "scene": scene, "info": info}


def path_preview(config, folder: str | Path) -> dict:
    """The run's camera path as JSON: ``{"w2c": [T][4][4] OpenCV, "K": [T][3][3], "width", "height", "params"}``.

    Needs :func:`prepare_preview` to have run for this input (it holds frame 0's depth for the pivot).
    """
    from ..trajectory import make_trajectory

    folder = Path(folder)
    meta = folder / f"{input_key(config)}.npz"
    if not meta.is_file():
        raise Ex4dError("load the 3D preview first (the path's pivot comes from frame 0's depth)")
    with np.load(meta) as z:
        depth0 = z["depth0"]
        info = json.loads(str(z["info"]))
    K = np.asarray(info["K"])
    traj = make_trajectory(config.trajectory, info["num_frames"], K, info["width"], info["height"], depth0=depth0,
                           **config.trajectory_options)
    return {"w2c": traj.w2c.tolist(), "K": traj.K.tolist(), "width": info["width"], "height": info["height"],
            "name": traj.name, "params": json.loads(json.dumps(traj.params, default=str))}
