"""The compact 4D scene export: what the browser meshes must be the run's DW-Mesh."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ex4d.app.export import decode_scene, encode_scene, export_run_scene, export_stride, read_scene, run_inputs
from ex4d.cameras import default_intrinsics, unproject_depth
from ex4d.dwmesh import MeshConfig, grid_occlusion
from ex4d.errors import Ex4dError


def scene(T=3, H=40, W=56, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    depth = np.full((T, H, W), 5.0, np.float32)
    depth[:, 10:30, 15:35] = 1.5  # a box in front of a wall: occluded faces at its rim
    depth *= np.linspace(1.0, 1.2, T, dtype=np.float32)[:, None, None]
    return frames, depth, default_intrinsics(W, H)


def test_round_trip_depth_occlusion_colour():
    frames, depth, K = scene()
    mesh = MeshConfig(filter="angle")
    sc = decode_scene(encode_scene(frames, depth, K, 24.0, mesh, max_size=512))
    h = sc.header
    assert (h["num_frames"], h["width"], h["height"], h["stride"]) == (3, 56, 40, 1)
    assert h["mesh"]["filter"] == "angle" and h["fps"] == 24.0
    np.testing.assert_allclose(sc.depth, depth, rtol=2e-5)  # log-uint16 over a 4× range
    for t in range(3):
        expected = grid_occlusion(depth[t], K, mesh).reshape(2, 39, 55)
        np.testing.assert_array_equal(sc.occluded[t], expected)
    assert sc.occluded.any() and not sc.occluded.all()
    err = np.abs(sc.colors.astype(int) - frames)
    assert np.median(err) <= 6 and np.percentile(err, 99) <= 30  # JPEG of per-pixel noise


def test_subsampled_grid_lies_on_the_full_mesh():
    """Grid pixel (i, j) of a stride-s export unprojects to the full mesh's vertex (s·i, s·j)."""
    frames, depth, K = scene(T=1, H=64, W=96)
    sc = decode_scene(encode_scene(frames, depth, K, 30.0, max_size=32))
    s = export_stride(96, 64, 32)
    assert s == 3 and sc.header["stride"] == 3 and sc.depth.shape == (1, 22, 32)
    Ks = np.array(sc.header["K"])
    np.testing.assert_allclose(unproject_depth(sc.depth[0], Ks), unproject_depth(depth[0], K)[::s, ::s], rtol=3e-5)
    assert sc.header["source_size"] == [96, 64]
    np.testing.assert_allclose(sc.header["source_K"], K)


def test_gzip_file_and_checks(tmp_path):
    from ex4d.app.export import write_scene

    frames, depth, K = scene(T=1)
    p = write_scene(tmp_path / "s.bin.gz", encode_scene(frames, depth, K, 24.0))
    assert p.read_bytes()[:2] == b"\x1f\x8b" and read_scene(p).depth.shape == (1, 40, 56)
    with pytest.raises(Ex4dError, match="finite and > 0"):
        encode_scene(frames, depth * 0, K, 24.0)
    with pytest.raises(Ex4dError, match="depth must be"):
        encode_scene(frames, depth[:, :10], K, 24.0)
    with pytest.raises(Ex4dError, match="bad magic"):
        decode_scene(b"NOTASCENE" * 4)


def test_export_of_a_run(run_out):
    frames, depth, K, fps, config = run_inputs(run_out)
    assert frames.shape == (9, 64, 64, 3) and depth.shape == (9, 64, 64) and config.example
    p = export_run_scene(run_out, max_size=32)
    sc = read_scene(p)
    assert sc.header["stride"] == 2 and sc.depth.shape == (9, 32, 32)
    params = json.loads((run_out / "config.json").read_text())["trajectory"]["params"]
    assert sc.header["pivot_depth"] == pytest.approx(params["pivot_depth"])
    assert export_run_scene(run_out, max_size=32) == p  # cached


def test_export_of_a_non_run(tmp_path):
    with pytest.raises(Ex4dError, match="holds no ex4d run"):
        run_inputs(tmp_path)
