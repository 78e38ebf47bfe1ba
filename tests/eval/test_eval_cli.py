"""``ex4d eval`` and ``ex4d benchmark novel-view`` through their argparse registration."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.eval.cli import register
from ex4d.io.video import write_png_frames, write_video


def _run(*argv) -> int:
    parser = argparse.ArgumentParser(prog="ex4d")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _clip(T=4, H=32, W=48, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((T, H, W, 3)), (0, 2, 2, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture
def files(tmp_path):
    ref = _clip()
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, :, :24] = True
    pred = ref.copy()
    pred[~mask] = 255 - pred[~mask]                      # the "fill" is wrong where it had to generate
    render = np.where(mask[..., None], ref, 0).astype(np.uint8)
    paths = {k: tmp_path / k for k in ("ref", "pred", "mask", "render")}
    for key, arr in (("ref", ref), ("pred", pred), ("mask", mask), ("render", render)):
        write_png_frames(paths[key], arr)
    return paths


def _load(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_eval_identical_videos(files, tmp_path, capsys):
    out = tmp_path / "r" / "same.json"
    assert _run("eval", "--pred", files["ref"], "--ref", files["ref"], "--out", out) == 0
    rep = _load(out)
    assert rep["psnr"]["all"] == "inf" and rep["ssim"]["all"] == pytest.approx(1.0)
    assert rep["frames"] == 4 and rep["width"] == 48 and rep["height"] == 32
    assert rep["temporal"]["warp_error"]["all"] == pytest.approx(rep["temporal"]["warp_error_ref"]["all"])
    assert set(rep["skipped"]) >= {"lpips", "fid", "fvd", "geometric"}
    text = capsys.readouterr().out
    assert "PSNR vs ref" in text and "lpips: skipped (no --lpips-weights given)" in text


def test_eval_regions_and_geometry(files, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert _run("eval", "--pred", files["pred"], "--ref", files["ref"], "--mask", files["mask"],
                "--render", files["render"], "--out", out, "--flow", "farneback") == 0
    rep = _load(out)
    assert rep["regions"]["known"] == pytest.approx(0.5)
    assert rep["psnr"]["known"] == "inf" and rep["psnr"]["generated"] < 15 and rep["psnr"]["all"] < 20
    assert rep["ssim"]["generated"] < 0 < 0.85 < rep["ssim"]["known"] < 1  # windows at the seam see the change
    assert rep["geometric"] == {"psnr": "inf", "mae": 0.0, "changed": 0.0}
    assert len(rep["per_frame"]["psnr_all"]) == 4 and len(rep["per_frame"]["warp_error_all"]) == 3
    from ex4d.eval.report import have_matplotlib

    if have_matplotlib():
        assert (tmp_path / "report_frames.png").stat().st_size > 1000 and rep["plot"].endswith("report_frames.png")
    assert "generated" in capsys.readouterr().out


def test_eval_reads_mp4_and_its_mask(tmp_path):
    ref = _clip(T=3, H=30, W=46)                          # odd-free sizes for yuv420p
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, 10:] = True
    write_video(tmp_path / "ref.mp4", ref, 24, lossless=True)
    write_video(tmp_path / "mask.mp4", mask, 24)
    out = tmp_path / "r.json"
    assert _run("eval", "--pred", tmp_path / "ref.mp4", "--ref", tmp_path / "ref.mp4", "--mask", tmp_path / "mask.mp4",
                "--out", out, "--no-plot", "-q") == 0
    rep = _load(out)
    assert rep["regions"]["known"] == pytest.approx(mask.mean()) and rep["psnr"]["known"] == "inf"


def test_eval_error_paths(files, tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(Ex4dError, match="pred .*missing.* not found"):
        _run("eval", "--pred", tmp_path / "missing", "--ref", files["ref"], "--out", out)
    other = tmp_path / "other"
    write_png_frames(other, _clip(W=40))
    with pytest.raises(Ex4dError, match=r"shape \[4, 32, 48, 3\].*shape \[4, 32, 40, 3\]"):
        _run("eval", "--pred", files["pred"], "--ref", other, "--out", out)
    short = tmp_path / "short"
    write_png_frames(short, _clip(T=3))
    with pytest.raises(Ex4dError, match="4 frames of 48×32.*3 frames of 48×32.*--num-frames"):
        _run("eval", "--pred", files["pred"], "--ref", short, "--out", out)
    assert _run("eval", "--pred", files["pred"], "--ref", short, "--num-frames", 3, "--out", out, "-q",
                "--no-plot") == 0
    assert _load(out)["frames"] == 3
    with pytest.raises(Ex4dError, match="--render needs --mask"):
        _run("eval", "--pred", files["pred"], "--render", files["render"], "--out", out)
    with pytest.raises(Ex4dError, match=r"must end in \.json"):
        _run("eval", "--pred", files["pred"], "--out", tmp_path / "r.txt")
    small_mask = tmp_path / "small_mask"
    write_png_frames(small_mask, np.ones((4, 16, 16), bool))
    with pytest.raises(Ex4dError, match="mask .*differ"):
        _run("eval", "--pred", files["pred"], "--mask", small_mask, "--out", out)
    (tmp_path / "inc.pt").write_bytes(b"nope")
    with pytest.raises(Ex4dError, match="not a TorchScript model"):
        _run("eval", "--pred", files["pred"], "--ref", files["ref"], "--inception-weights", tmp_path / "inc.pt",
             "--out", out)


def test_eval_without_reference(files, tmp_path):
    out = tmp_path / "r.json"
    assert _run("eval", "--pred", files["pred"], "--mask", files["mask"], "--out", out, "-q", "--no-plot") == 0
    rep = _load(out)
    assert "psnr" not in rep and "temporal" in rep and "no reference" in rep["skipped"]["psnr/ssim/lpips/fid/fvd"]
    assert math.isfinite(rep["temporal"]["warp_error"]["generated"])


def test_benchmark_cli(tmp_path, capsys):
    out = tmp_path / "bench"
    assert _run("benchmark", "novel-view", "--out", out, "--size", 32, "--frames", 2, "--ranges", "30", "+-30",
                "--scenes", "example", "--filters", "ours", "--blur", "--noise", "--fill", "none", "-q") == 0
    rep = _load(out / "report.json")
    assert [r["range"] for r in rep["summary"]] == ["0-30", "-30-30"] and rep["config"]["blur"] == []
    assert "| exact | 0…30° |" in (out / "report.md").read_text()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(Ex4dError, match="camera range"):
        _run("benchmark", "novel-view", "--out", out, "--ranges", "0-120")
    with pytest.raises(Ex4dError, match="unknown benchmark scene"):
        _run("benchmark", "novel-view", "--out", out, "--scenes", "forest")
    with pytest.raises(Ex4dError, match="name the benchmark to run: novel-view"):
        _run("benchmark")
