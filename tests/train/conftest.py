"""Fixtures of the training tests: example-scene videos with exact depth, a prepared dataset, tiny Wan folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny models on a shared 2-core machine: one intra-op thread is ~30x faster than two contended ones.
torch.set_num_threads(1)

from _ex4d_train_helpers import CLIP_H, CLIP_T, CLIP_W, write_example_videos  # noqa: E402
from ex4d.example import make_example  # noqa: E402
from ex4d.io.depth import save_depth_npz  # noqa: E402
from ex4d.io.video import write_video  # noqa: E402

@pytest.fixture(autouse=True)
def _quiet():
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def example_videos(tmp_path_factory):
    """(videos dir, depth dir): three good clips, one too short, one not a video."""
    root = tmp_path_factory.mktemp("videos")
    videos, depth = write_example_videos(root, 3)
    scene = make_example(3, 64, 48)
    write_video(videos / "short.mp4", scene.frames, 12.0)
    save_depth_npz(depth / "short.npz", scene.depth)
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    return videos, depth


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, example_videos):
    """A prepared dataset (local executor) of the three good example clips at 48×32, 5 frames."""
    from ex4d.train.prepare import PrepareConfig, prepare_dataset

    videos, depth = example_videos
    out = tmp_path_factory.mktemp("prepared") / "data"
    config = PrepareConfig(num_frames=CLIP_T, width=CLIP_W, height=CLIP_H, depth_dir=str(depth), depth_kind="depth")
    summary = prepare_dataset([videos], out, config, executor="local", progress=False)
    assert summary.new_clips == 3, summary
    return out


def _tiny_wan(folder, **transformer):
    from ex4d.diffusion.random_models import build_components, save_diffusers_layout, wan_configs

    comps = build_components("tiny", seed=0)
    if transformer:
        import diffusers

        cfg = wan_configs("tiny")["transformer"]
        cfg.update(transformer)
        torch.manual_seed(0)
        comps.transformer = diffusers.WanTransformer3DModel(**cfg).eval()
    return save_diffusers_layout(comps, folder)


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory):
    """The tiny random Wan2.1-I2V of ex4d.diffusion.random_models (DiT width 16), diffusers layout."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    return _tiny_wan(tmp_path_factory.mktemp("wan") / "tiny")


@pytest.fixture(scope="session")
def wide_wan(tmp_path_factory):
    """A tiny Wan whose DiT is 256 wide (2 blocks): wide enough for its frozen output head to fit a target."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    return _tiny_wan(tmp_path_factory.mktemp("wan") / "wide", num_attention_heads=4, attention_head_dim=64,
                     ffn_dim=512, added_kv_proj_dim=256)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
