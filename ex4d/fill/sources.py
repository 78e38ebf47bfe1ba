"""Which source frames the classical fill consults for each output frame, and with which camera.

With a fixed source camera (a tripod), frame s's DW-Mesh rendered with output
frame t's camera shows what s saw of the scene at t's novel viewpoint: the
temporal neighbours t ± 1, 2, 4, … (:func:`frame_offsets`) are consulted, as
before poses existed, and nothing else changes.

With a moving source camera every frame saw the static scene from somewhere
else: frame s's mesh (source-camera-s coordinates) is placed in the world by
``c2w_src[s]`` and rendered with the world-frame novel camera of t,
``w2c_world[t] @ c2w_src[s]`` (:func:`ex4d.cameras.source_view_w2c`). Beyond
the temporal neighbours, a bounded number of *keyframes* from the whole clip
is consulted: candidates are every ``stride``-th frame (at most
``max_candidates`` of them, spread over the clip), ranked by how close their
source camera is to the novel camera (distance of the centres relative to
the scene depth, plus the angle between the viewing directions), and the
best ``max_keyframes`` are used. So each output frame costs a bounded number
of renders and meshes whatever the clip's length, and frames are read one
index at a time.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..cameras import invert_w2c, is_static_poses, novel_w2c_world, source_view_w2c

__all__ = ["frame_offsets", "keyframe_candidates", "select_sources", "MeshCache"]


def frame_offsets(window: int) -> list[int]:
    """Offsets +1, −1, +2, −2, +4, −4, … with |offset| ≤ window (nearest frames first)."""
    out, k = [], 1
    while k <= window:
        out += [k, -k]
        k *= 2
    return out


def keyframe_candidates(num_frames: int, max_candidates: int = 64) -> np.ndarray:
    """[≤ max_candidates] int: frames spread evenly over the clip, the keyframe candidates."""
    n = min(num_frames, max_candidates)
    return np.unique(np.round(np.linspace(0, num_frames - 1, n)).astype(np.int64))


def select_sources(t: int, num_frames: int, window: int, w2c_rel_t: np.ndarray, w2c_src,
                   scene_depth: float, max_keyframes: int = 4, max_candidates: int = 64
                   ) -> list[tuple[int, np.ndarray, bool]]:
    """[(s, w2c [4, 4], is_keyframe)]: the source frames to consult for output frame t, the camera that renders
    s's mesh, and whether s is a keyframe (beyond the temporal neighbours; listed after them).

    Args:
        t: output frame.
        window: farthest temporal offset (:func:`frame_offsets`).
        w2c_rel_t: [4, 4] frame t's novel camera relative to source camera t (what the recon rendered).
        w2c_src: source poses [T, 4, 4] (world = frame 0), indexable per frame; None = a tripod.
        scene_depth: typical depth (scene units): the distance scale of the keyframe ranking.
        max_keyframes: keyframes beyond the temporal neighbours (0: neighbours only); none for a tripod.
    """
    near = [t + o for o in frame_offsets(window) if 0 <= t + o < num_frames]
    if w2c_src is None or is_static_poses(w2c_src):
        return [(s, w2c_rel_t, False) for s in near]
    w2c_world_t = novel_w2c_world(w2c_rel_t, w2c_src[t], "source")
    chosen = list(near)
    if max_keyframes > 0:
        cand = [int(s) for s in keyframe_candidates(num_frames, max_candidates) if s != t and s not in near]
        if cand:
            c2w_n = invert_w2c(w2c_world_t)
            c2w_s = invert_w2c(np.stack([np.asarray(w2c_src[s]) for s in cand]))
            dist = np.linalg.norm(c2w_s[:, :3, 3] - c2w_n[:3, 3], axis=1) / max(scene_depth, 1e-9)
            cosang = np.clip(c2w_s[:, :3, 2] @ c2w_n[:3, 2], -1.0, 1.0)
            score = dist + np.arccos(cosang)
            chosen += [cand[i] for i in np.argsort(score, kind="stable")[:max_keyframes]]
    return [(s, source_view_w2c(w2c_world_t, w2c_src[s]), i >= len(near)) for i, s in enumerate(chosen)]


class MeshCache:
    """The DW-Meshes of recently used source frames, at most ``capacity`` of them (least recently used go)."""

    def __init__(self, build, capacity: int):
        self.build = build
        self.capacity = max(1, int(capacity))
        self._meshes: OrderedDict[int, object] = OrderedDict()

    def __call__(self, s: int):
        if s in self._meshes:
            self._meshes.move_to_end(s)
            return self._meshes[s]
        mesh = self.build(s)
        self._meshes[s] = mesh
        while len(self._meshes) > self.capacity:
            self._meshes.popitem(last=False)
        return mesh

    def __len__(self) -> int:
        return len(self._meshes)
