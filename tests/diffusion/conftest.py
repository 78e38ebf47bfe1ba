"""Tiny random Wan2.1-I2V components (built offline, on the CPU) and their files in both layouts."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402

from ex4d.diffusion.random_models import (build_components, random_adapter, save_diffusers_layout,  # noqa: E402
                                          save_original_layout)

from _ex4d_tiny import H, T, W  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    torch.manual_seed(0)
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    yield


@pytest.fixture
def components():
    """Fresh tiny float32 components (tests may add LoRA, hooks, offloading to them)."""
    return build_components("tiny", seed=0)


@pytest.fixture
def spec(components):
    from ex4d.diffusion.pipeline import model_spec

    return dataclasses.replace(model_spec(components), hidden=16, rank=4, alpha=4.0)


@pytest.fixture
def adapter(spec):
    return random_adapter(spec, seed=1, scale=0.1)


@pytest.fixture(scope="session")
def wan_dirs(tmp_path_factory):
    """(diffusers-layout folder, original-layout folder) holding the same tiny random weights."""
    root = tmp_path_factory.mktemp("wan")
    comps = build_components("tiny", seed=0)
    return save_diffusers_layout(comps, root / "diffusers"), save_original_layout(comps, root / "original")


@pytest.fixture
def video():
    """(color [T,H,W,3] uint8, mask [T,H,W] bool) with a known left part and unknown right part."""
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    mask = np.zeros((T, H, W), bool)
    mask[:, :, : W // 2 + 4] = True
    mask[0] = True
    color[~mask] = 0
    return color, mask
