"""Ground-truth scenes and the novel-view benchmark at a tiny size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ex4d.cameras import default_intrinsics
from ex4d.errors import Ex4dError
from ex4d.eval import benchmark as B
from ex4d.eval import scenes as S


def test_example_source_render_is_make_example():
    from ex4d.example import make_example

    ex = make_example(2, 40, 32)
    frames, depth = S.render_source(S.get_scene("example"), 2, ex.K, 32, 40)
    assert np.array_equal(frames, ex.frames) and np.array_equal(depth, ex.depth)


@pytest.mark.parametrize("name", ["example", "layout", "layout-7"])
def test_scene_source_view_is_all_visible_and_maps_to_itself(name):
    scene = S.get_scene(name)
    K = default_intrinsics(48, 48)
    frames, depth = S.render_source(scene, 1, K, 48, 48)
    view = S.render_truth(scene, 0.0, K, np.eye(4), 48, 48)
    assert view.has.all() and S.visible_in_source(view.points, depth[0], K).all()
    uv = B.shown_source_coords(depth[0], K, np.eye(4), K)
    u, v = np.meshgrid(np.arange(48), np.arange(48))
    assert np.allclose(uv, np.stack([u, v], -1), atol=1e-6)


def test_visibility_of_a_hidden_point():
    K = default_intrinsics(32, 32)
    depth = np.full((32, 32), 5.0)
    depth[8:24, 8:24] = 2.0                                  # a box in front of a wall
    pts = np.array([[[0.0, 0.0, 5.0], [0.0, 0.0, 2.0], [-1.5, -1.5, 5.0], [0.0, 0.0, 20.0]]])
    vis = S.visible_in_source(pts, depth, K)                 # wall behind the box, box, wall corner, beyond the wall
    assert vis.tolist() == [[False, True, True, False]]
    assert not S.visible_in_source(np.full((1, 1, 3), np.nan), depth, K).any()


def test_degrade_depth():
    d = np.full((2, 16, 16), 3.0, np.float32)
    d[:, :, 8:] = 6.0
    blurred = S.degrade_depth(d, blur_px=2)
    assert blurred.dtype == np.float32 and 3.0 < blurred[0, 5, 7] < 6.0
    assert blurred[0, 5, 0] == pytest.approx(3.0, abs=1e-3)
    noisy = S.degrade_depth(d, noise=0.01, seed=3)
    assert np.std(noisy[0, :, :8] / 3.0 - 1) == pytest.approx(0.01, rel=0.3) and (noisy > 0).all()
    assert np.array_equal(noisy, S.degrade_depth(d, noise=0.01, seed=3))


def test_parse_range_and_method():
    assert B.parse_range("0-30") == (0, 30) and B.parse_range("-90-90") == (-90, 90)
    assert B.parse_range("+-90") == B.parse_range("±90") == B.parse_range("-90:90") == (-90, 90)
    assert B.parse_range("60") == (0, 60) and B.range_name("+-45") == "-45-45"
    for bad in ("30-0", "0-120", "a-b"):
        with pytest.raises(Ex4dError, match="camera range"):
            B.parse_range(bad)
    assert (B.parse_method("original").filter, B.parse_method("original").alpha_mode) == ("angle", "vertex")
    assert (B.parse_method("ours").filter, B.parse_method("ours").alpha_mode) == ("step", "face")
    assert B.parse_method("original").sharpen_mode == "none" and B.parse_method("ours").sharpen_mode == "snap"
    assert B.parse_method("boundary:vertex").alpha_mode == "vertex" and B.parse_method("angle").alpha_mode == "face"
    assert B.parse_method("angle/snap").sharpen == "snap" and B.parse_method("step:vertex/none").sharpen_mode == "none"
    assert B.parse_range_pitch("+-90@-15") == (-90, 90, -15) and B.range_name("+-90@-15") == "-90-90@-15"
    with pytest.raises(Ex4dError, match="pitch"):
        B.parse_range_pitch("0-30@x")
    with pytest.raises(Ex4dError, match="unknown masking method"):
        B.parse_method("sharp")
    with pytest.raises(Ex4dError, match="unknown masking method"):
        B.parse_method("step/blur")
    with pytest.raises(Ex4dError, match="ex4d eval"):
        B.BenchmarkConfig(fill="ex4d")


def test_range_cameras_sweep_the_range():
    w2c, yaw, pitch = B.range_cameras(-90, 90, 5, 3.0, pitch=10)
    assert yaw.tolist() == [-90, -45, 0, 45, 90] and pitch.tolist() == [10, 5, 0, 5, 10]
    assert np.array_equal(w2c[2], np.eye(4))                 # yaw 0 is exactly the source camera
    from ex4d.trajectory import relative_angles

    y, p = relative_angles(w2c)
    assert np.allclose(y, yaw, atol=1e-6) and np.allclose(p, pitch, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_report():
    config = B.BenchmarkConfig(size=96, frames=3, ranges=("0-60", "+-90"), scenes=("example",),
                               methods=("angle:face", "original", "ours"), variants=("exact", "blur3"), fill="classical",
                               fill_window=1, flicker=3)
    return B.run_benchmark(config, progress=False)


def test_tiny_benchmark_numbers_are_sane(tiny_report):
    rows = {(r["range"], r["depth"], r["method"]): r for r in tiny_report["summary"]}
    assert len(rows) == 2 * 2 * 3 and len(tiny_report["results"]) == 12
    for r in rows.values():
        assert 0 <= r["leak"] <= 1 and 0 <= r["recall"] <= 1
        assert 8 < r["known_psnr"] < 60 and 5 < r["fill_psnr"] < 60 and -1 <= r["fill_ssim"] <= 1
        assert r["counts"]["correct"] <= min(r["counts"]["known"], r["counts"]["visible"])
        assert r["counts"]["correct_knowable"] <= r["counts"]["knowable"] <= r["counts"]["visible"]
        assert 0 <= r["leak_in_view"] <= r["leak"] and r["recall_knowable"] >= r["recall"] - 1e-9
        # the leak's kinds partition it; the lost knowable pixels are either flagged or shown wrong
        c = r["counts"]
        assert c["leak_misplaced"] + c["leak_hidden"] + c["leak_out_of_view"] + c["leak_empty"] == c["known"] - c["correct"]
        assert math.isclose(r["leak_misplaced"] + r["leak_hidden"], r["leak_in_view"] - c["leak_empty"] / c["known"],
                            abs_tol=1e-12)
        assert math.isclose(r["lost_unknown"] + r["lost_wrong"], 1 - r["recall_knowable"], abs_tol=1e-12)
        assert r["lost_unknown"] >= 0 and r["lost_wrong"] >= 0
    # exact depth: the angle filter hardly leaks, and keeps most of what is visible (at ±90° and 96 px, a
    # stretched face where the ball touches the floor passes the per-face angle test: ~2% of the known pixels)
    for rng in ("0-60", "-90-90"):
        assert rows[rng, "exact", "angle:face"]["leak"] < (0.01 if rng == "0-60" else 0.03)
        assert rows[rng, "exact", "original"]["leak"] < 0.01
        assert rows[rng, "exact", "ours"]["leak"] < 0.01
        assert rows[rng, "exact", "angle:face"]["recall"] > 0.8
        # soft depth makes every method leak more
        for m in ("angle:face", "original", "ours"):
            assert rows[rng, "blur3", m]["leak"] > rows[rng, "exact", m]["leak"]
        # ours keeps at least 97 % of what can be known on exact depth, and leaks far less than the original on
        # soft depth
        assert rows[rng, "exact", "ours"]["recall_knowable"] > 0.97
        assert rows[rng, "blur3", "ours"]["leak"] < 0.5 * rows[rng, "blur3", "original"]["leak"]
    # wider ranges see more of what the source never saw
    assert rows["-90-90", "exact", "ours"]["recall"] < rows["0-60", "exact", "ours"]["recall"]
    # frames at yaw 0 copy the source: nothing leaks, everything is kept
    per = next(r for r in tiny_report["results"] if r["range"] == "-90-90" and r["depth"] == "exact")["per_frame"]
    assert per["yaw"][1] == 0 and per["leak"][1] == 0 and per["recall"][1] == 1 and per["recall_knowable"][1] == 1
    # the still-scene flicker test: exact depth never flickers (every frame is the same)
    fl = {(r["depth"], r["method"]): r for r in tiny_report["flicker"]["summary"]}
    assert fl["exact", "ours"]["flicker"] == 0 and 0 < fl["exact", "ours"]["flagged_share"] < 0.2


def test_benchmark_report_files(tiny_report, tmp_path):
    from ex4d.eval.report import have_matplotlib, write_benchmark_report

    paths = write_benchmark_report(tiny_report, tmp_path / "bench")
    data = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["config"]["size"] == 96 and len(data["summary"]) == 12
    md = paths["md"].read_text()
    assert "| depth | range | leak % angle:face | leak % original | leak % ours |" in md
    assert "recall of knowable % ours" in md and "## Flag flicker on still scenes" in md
    assert "### Where the leak and the lost recall come from" in md and "lost as unknown % ours" in md
    assert "-90…90°" in md and "## Fill (classical)" in md
    if have_matplotlib():
        assert {p.name for p in paths["plots"]} == {"mask_quality.png", "fill.png", "leak_vs_yaw.png"}
        assert all(p.stat().st_size > 1000 for p in paths["plots"])
    assert math.isfinite(data["timings"]["total_s"])
