"""Tiny random depth models in their real folder layouts, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_depth_weights(tmp_path_factory):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from test_depth_backends import build_tiny_depth_anything, build_tiny_depthcrafter

    root = tmp_path_factory.mktemp("depth_weights")
    return {"depthcrafter": build_tiny_depthcrafter(root / "DepthCrafter"),
            "relative": build_tiny_depth_anything(root / "Depth-Anything-V2-Tiny-hf"),
            "metric": build_tiny_depth_anything(root / "Depth-Anything-V2-Metric-Tiny-hf", metric=True)}
