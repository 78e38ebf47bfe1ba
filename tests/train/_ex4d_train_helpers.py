"""Helpers shared by the training tests (fixtures are in conftest.py)."""

from __future__ import annotations

from ex4d.example import make_example
from ex4d.io.depth import save_depth_npz
from ex4d.io.video import write_video

CLIP_W, CLIP_H, CLIP_T = 48, 32, 5


def write_example_videos(folder, count: int, frames: int = 9, width: int = 64, height: int = 48):
    """``count`` example clips (different time windows) as mp4 + exact depth .npz; returns (videos, depth) dirs."""
    videos, depth = folder / "videos", folder / "depth"
    videos.mkdir(parents=True, exist_ok=True)
    depth.mkdir(parents=True, exist_ok=True)
    scene = make_example(frames + count, width, height)
    for i in range(count):
        write_video(videos / f"clip{i}.mp4", scene.frames[i:i + frames], 12.0, crf=10)
        save_depth_npz(depth / f"clip{i}.npz", scene.depth[i:i + frames])
    return videos, depth
