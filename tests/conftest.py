"""Shared fixtures: analytic scenes with exact depth, and paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FLOWER = SHARED / "reference" / "ex4d-flower"


@pytest.fixture
def flower_dir() -> Path:
    if not FLOWER.exists():
        pytest.skip(f"reference example not found at {FLOWER}")
    return FLOWER


def box_on_plane(H: int = 48, W: int = 64, fg: float = 2.0, bg: float = 5.0, seed: int = 0):
    """(rgb [H,W,3] uint8, depth [H,W] float64): a fronto-parallel box at depth fg in front of a plane at bg."""
    rng = np.random.default_rng(seed)
    depth = np.full((H, W), bg)
    depth[H // 4 : 3 * H // 4, W // 4 : W // 2] = fg
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return rgb, depth
