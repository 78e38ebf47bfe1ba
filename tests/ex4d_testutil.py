"""Analytic test scenes with exact depth, shared by the top-level tests (a uniquely named module, not conftest)."""

from __future__ import annotations

import numpy as np


def box_on_plane(H: int = 48, W: int = 64, fg: float = 2.0, bg: float = 5.0, seed: int = 0):
    """(rgb [H,W,3] uint8, depth [H,W] float64): a fronto-parallel box at depth fg in front of a plane at bg."""
    rng = np.random.default_rng(seed)
    depth = np.full((H, W), bg)
    depth[H // 4 : 3 * H // 4, W // 4 : W // 2] = fg
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return rgb, depth
