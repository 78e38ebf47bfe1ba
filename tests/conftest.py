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
