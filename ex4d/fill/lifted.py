"""Lifted content as known pixels: what earlier fill windows generated, shown again in later frames' conditions.

A bounded memory of lifted output frames (:mod:`ex4d.lift`): after a fill
window is finished, some of its output frames are lifted (completed depth +
DW-Mesh); before the next window is generated, their meshes are rendered with
each of its cameras and fill *unknown* pixels of the condition, which then
count as known (condition colour = the lifted colour, mask 255). So a wall
that window 1 invented looks the same when window 2 sees it again.

The occlusion rule is the classical fill's: a lifted surface may fill an
unknown pixel only if it lies behind the current render's occluding surface
there (``depth ≥ view_depth · (1 − tolerance)``; the render's depth at an
unknown pixel is that of the stretched face in front of the hole), or where
the render has no scene surface at all (inf). Known pixels never change.

Memory: at most ``keep`` lifted frames and their meshes (a 512² lifted frame
is ≈ 2 MB, its mesh ≈ 15 MB). The newest half is kept by recency (the camera
path is continuous, so the latest windows see most of what the next one will);
the older half by viewpoint: when one more must go, it is the older frame of
the two older kept cameras that are closest to each other (centre distance +
viewing-angle difference × the scene's depth), so a path that swings back
finds what it generated there still kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from ..lift import LiftConfig, LiftedFrame, lift_frame, lifted_mesh, render_lifted

__all__ = ["LiftedMemory", "LiftedFill"]


@dataclass(frozen=True)
class LiftedFill:
    """A frame's condition with lifted content added.

    ======  ===================  =====================================================
    field   shape, dtype         meaning
    ======  ===================  =====================================================
    color   [H, W, 3] uint8      render colour, lifted colour where ``filled``
    mask    [H, W] bool          render mask | ``filled`` (True = known)
    depth   [H, W] float32       render depth, the lifted surface's where ``filled``
    filled  [H, W] bool          pixels that lifted content made known
    ======  ===================  =====================================================
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    filled: np.ndarray


class LiftedMemory:
    """The last ``keep`` lifted output frames; :meth:`fill` renders them into a frame's condition."""

    def __init__(self, keep: int = 8, config: LiftConfig | None = None, backend: str | None = None):
        check(keep >= 1, f"keep must be >= 1 lifted frames, got {keep}")
        self.keep, self.config, self.backend = int(keep), config or LiftConfig(), backend
        self.frames: list[LiftedFrame] = []
        self.ids: list[int] = []  # output frame index of each lifted frame
        self._meshes: list = []

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, t: int, frame: LiftedFrame) -> None:
        """Keep lifted output frame ``t`` (dropping the oldest beyond ``keep``)."""
        if t in self.ids:
            i = self.ids.index(t)
            del self.ids[i], self.frames[i], self._meshes[i]
        self.ids.append(int(t))
        self.frames.append(frame)
        self._meshes.append(None)
        while len(self.frames) > self.keep:
            i = self._redundant()
            del self.ids[i], self.frames[i], self._meshes[i]

    def _redundant(self) -> int:
        """Index of the frame to drop: among the older ones (all but the newest ``keep // 2``), the older of the
        closest pair of viewpoints."""
        older = len(self.frames) - max(1, self.keep // 2)
        if older < 2:
            return 0
        from ..cameras import invert_w2c

        c2w = [invert_w2c(f.w2c) for f in self.frames[:older]]
        scale = float(np.median([np.median(f.depth) for f in self.frames[:older]]))
        best, drop = np.inf, 0
        for i in range(older):
            for j in range(i + 1, older):
                d = float(np.linalg.norm(c2w[i][:3, 3] - c2w[j][:3, 3]))
                cos = float(np.clip(np.dot(c2w[i][:3, 2], c2w[j][:3, 2]), -1.0, 1.0))
                d += np.arccos(cos) * scale
                if d < best:
                    best, drop = d, i  # i < j: the older of the pair
        return drop

    def lift(self, t: int, rgb: np.ndarray, render_depth: np.ndarray, known: np.ndarray, K: np.ndarray,
             w2c: np.ndarray) -> None:
        """Lift finished output frame ``t`` (rgb [H,W,3] uint8; its condition's depth, known mask; K, w2c) and keep it."""
        self.add(t, lift_frame(rgb, render_depth, known, np.array(K, np.float64), np.array(w2c, np.float64),
                               config=self.config))

    def meshes(self) -> list:
        for i, m in enumerate(self._meshes):
            if m is None:
                self._meshes[i] = lifted_mesh(self.frames[i], config=self.config)
        return list(self._meshes)

    def fill(self, color: np.ndarray, mask: np.ndarray, view_depth: np.ndarray, K: np.ndarray,
             w2c: np.ndarray) -> LiftedFill:
        """The condition of one frame (color [H,W,3] uint8, mask [H,W] bool, view_depth [H,W]) with lifted content.

        ``K`` [3, 3], ``w2c`` [4, 4] (OpenCV, world frame) of that frame.
        """
        H, W = mask.shape
        view_depth = np.asarray(view_depth, np.float32)
        if not self.frames or mask.all():
            return LiftedFill(color, mask, view_depth, np.zeros((H, W), bool))
        r = render_lifted(self.frames, np.array(K, np.float64), np.array(w2c, np.float64), H, W, config=self.config,
                          backend=self.backend, meshes=self.meshes())
        behind = ~np.isfinite(view_depth) | (r.depth >= view_depth * (1 - self.config.depth_tolerance))
        filled = ~mask & r.mask & behind
        color = color.copy()
        color[filled] = r.color[filled]
        return LiftedFill(color=color, mask=mask | filled, depth=np.where(filled, r.depth, view_depth),
                          filled=filled)
