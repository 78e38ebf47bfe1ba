"""Generation in overlapping windows: the plan, known overlap frames, seams, resuming, lifted content."""

from __future__ import annotations

import numpy as np
import pytest

from ex4d.diffusion.windows import Window, WindowConfig, blend_overlap, generate_windows, plan_windows
from ex4d.errors import Ex4dError


# ---------------------------------------------------------------------------------------------- the plan

@pytest.mark.parametrize("T", [1, 2, 4, 5, 6, 13, 30, 48, 49, 50, 53, 88, 89, 90, 97, 130, 201])
@pytest.mark.parametrize("window, overlap", [(49, 9), (17, 5), (9, 5)])
def test_windows_cover_any_length_without_padding(T, window, overlap):
    plan = plan_windows(T, window, overlap)
    assert plan[0].start == 0 and plan[0].known == 0 and plan[-1].end == T
    if 1 < T < 5:
        assert len(plan) == 1 and plan[0].pad == 5 - T  # the one padded case: no 4k+1 window fits twice
        return
    for k, w in enumerate(plan):
        assert w.pad == 0 and w.length % 4 == 1 and w.length <= window, w
        if k:
            prev = plan[k - 1]
            assert w.known == prev.end - w.start and w.end > prev.end  # continues, adds new frames
            if k < len(plan) - 1:
                assert w.length == window and w.known == overlap  # full windows share exactly the overlap
            else:  # the last: the shortest 4k+1 window reaching the end with at least `overlap` known frames
                assert overlap <= w.known <= overlap + 3 or w.length == (T - 1) // 4 * 4 + 1


def test_window_plan_examples():
    assert plan_windows(49) == [Window(0, 49)]
    assert plan_windows(89) == [Window(0, 49), Window(40, 89, known=9)]
    assert plan_windows(97) == [Window(0, 49), Window(40, 89, known=9), Window(80, 97, known=9)]
    assert plan_windows(50) == [Window(0, 49), Window(37, 50, known=12)]
    assert plan_windows(6) == [Window(0, 5), Window(1, 6, known=4)]
    assert len(plan_windows(2000)) == 50  # 49 + 49·40 + a last window


def test_window_settings_are_checked():
    for kw in ({"window": 50}, {"window": 49, "overlap": 0}, {"window": 49, "overlap": 46}, {"lift": "x"}):
        with pytest.raises(Ex4dError):
            WindowConfig(**kw)


def test_blend_goes_from_old_to_new():
    old, new = np.zeros((5, 2, 2, 3), np.uint8), np.full((5, 2, 2, 3), 200, np.uint8)
    b = blend_overlap(old, new)
    assert list(b[:, 0, 0, 0]) == [0, 50, 100, 150, 200]


# ---------------------------------------------------------------------------------------------- a stand-in model

class ContinuingDouble:
    """TEST DOUBLE, not a model: output = condition colour (+ a constant drift) where known; where unknown,
    the previous output frame's colour (it continues what it sees), or a per-window colour on its first frame.

    Records the (color, mask, seed) of every call."""

    def __init__(self, drift: float = 6.0):
        self.drift, self.calls = drift, []

    def __call__(self, color, mask, seed):
        self.calls.append((color.copy(), mask.copy(), seed))
        out = np.empty_like(color)
        fresh = np.array([40 + 50 * (seed % 4), 90, 200 - 30 * (seed % 4)], np.float32)
        for i in range(len(color)):
            base = color[i].astype(np.float32) + self.drift
            cont = out[i - 1].astype(np.float32) if i else np.broadcast_to(fresh, base.shape)
            out[i] = np.clip(np.where(mask[i][..., None], base, cont), 0, 255).astype(np.uint8)
        return out


def _moving_clip(T=97, H=16, W=24):
    """A render whose known part is a gradient that slides 1 px per frame; the right third is never known."""
    x = np.arange(W)[None, :] + 1.0 * np.arange(T)[:, None]
    color = np.repeat(np.repeat((60 + 40 * np.sin(x / 6.0))[:, None, :, None], H, 1), 3, 3).astype(np.uint8)
    mask = np.ones((T, H, W), bool)
    mask[:, :, 2 * W // 3:] = False
    color[~mask] = 0
    return color, mask


def _frame_change(video):
    return np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # [T-1]: change t-1 → t


def test_overlap_frames_are_given_as_known_with_the_earlier_output(tmp_path):
    color, mask = _moving_clip()
    double = ContinuingDouble()
    res = generate_windows(color, mask, double, WindowConfig(), tmp_path / "w", "k", seed=3, progress=False)
    plan = res.plan
    assert [c[2] for c in double.calls] == [3, 4, 5]  # window k: seed + k
    for k in (1, 2):
        c, m, _ = double.calls[k]
        w, prev = plan[k], plan[k - 1]
        earlier = res.files.frames(k - 1)[w.start - prev.start:]
        assert len(earlier) == w.known == 9
        render_known = mask[w.start:w.start + w.known]
        np.testing.assert_array_equal(c[:w.known][~render_known], earlier[~render_known])  # what window k made
        np.testing.assert_array_equal(c[:w.known][render_known], color[w.start:w.start + w.known][render_known])
        assert m[:w.known].all()
        np.testing.assert_array_equal(m[w.known:], mask[w.start + w.known:w.end])


def _seams_and_inside(plan, T):
    seams = sorted({t for w in plan[1:] for t in range(w.start, w.start + w.known + 1)})
    return seams, [t for t in range(1, T) if t not in seams]


def test_a_model_that_continues_its_condition_shows_no_seam(tmp_path):
    from ex4d.diffusion.windows import seam_changes

    color, mask = _moving_clip()
    res = generate_windows(color, mask, ContinuingDouble(drift=0), WindowConfig(), tmp_path / "w", "k",
                           progress=False)
    video = res.video()
    assert video.shape == color.shape and len(res.plan) == 3
    change = _frame_change(video)
    seams, inside = _seams_and_inside(res.plan, len(video))
    assert max(change[t - 1] for t in seams) <= max(change[t - 1] for t in inside) + 1e-6
    s = seam_changes(video, res.plan)
    assert s["seam_max"] == pytest.approx(max(change[t - 1] for t in seams), abs=1e-4)
    assert s["seam_max"] <= s["inside_max"] + 1e-6 and s["inside_mean"] > 0


def test_blending_spreads_what_the_model_changes_in_its_known_frames(tmp_path, monkeypatch):
    """A model that shifts what it is given as known by 6 levels: blended over the 9 shared frames the change
    is at most 6/8 per frame beyond the motion; without blending it is one jump at the window start."""
    color, mask = _moving_clip()
    res = generate_windows(color, mask, ContinuingDouble(drift=6), WindowConfig(), tmp_path / "w", "k",
                           progress=False)
    change = _frame_change(res.video())
    seams, inside = _seams_and_inside(res.plan, len(change) + 1)
    inside_max = max(change[t - 1] for t in inside)
    assert max(change[t - 1] for t in seams) <= inside_max + 6 / 8 + 1e-3
    blended = max(change[t - 1] for t in seams)
    import ex4d.diffusion.windows as windows

    monkeypatch.setattr(windows, "blend_overlap", lambda old, new: new)
    res = generate_windows(color, mask, ContinuingDouble(drift=6), WindowConfig(), tmp_path / "nb", "k",
                           progress=False)
    change = _frame_change(res.video())
    assert max(change[w.start - 1] for w in res.plan[1:]) >= blended + 1.0


def test_windows_without_known_overlap_would_show_a_seam(tmp_path):
    """Control: independent windows (nothing known from the earlier one) restart the generated content."""
    color, mask = _moving_clip(T=89)
    double = ContinuingDouble(drift=0)
    naive = np.concatenate([double(color[w.start:w.end], mask[w.start:w.end], k)[w.known:]
                            for k, w in enumerate(plan_windows(89))])
    ours = generate_windows(color, mask, ContinuingDouble(drift=0), WindowConfig(), tmp_path / "w", "k",
                            progress=False).video()
    assert _frame_change(naive)[40 + 9 - 1] > 3 * _frame_change(ours).max()


def test_resume_after_a_kill_mid_window_gives_the_same_video(tmp_path):
    color, mask = _moving_clip()
    full = generate_windows(color, mask, ContinuingDouble(), WindowConfig(), tmp_path / "a", "k",
                            progress=False).video()

    class Killed(ContinuingDouble):
        def __call__(self, c, m, seed):
            if len(self.calls) == 2:
                raise KeyboardInterrupt  # Ctrl-C in the middle of window 2
            return super().__call__(c, m, seed)

    with pytest.raises(KeyboardInterrupt):
        generate_windows(color, mask, Killed(), WindowConfig(), tmp_path / "b", "k", progress=False)
    assert sorted(p.name for p in (tmp_path / "b").glob("w*.npz")) == ["w00000.npz", "w00001.npz"]
    again = ContinuingDouble()
    resumed = generate_windows(color, mask, again, WindowConfig(), tmp_path / "b", "k", progress=False)
    assert [c[2] for c in again.calls] == [2]  # only the window in flight is generated again
    np.testing.assert_array_equal(resumed.video(), full)
    # another key (other inputs or settings) starts over
    again = ContinuingDouble()
    generate_windows(color, mask, again, WindowConfig(), tmp_path / "b", "other", progress=False)
    assert len(again.calls) == 3


# ---------------------------------------------------------------------------------------------- the real model

def test_the_model_receives_the_overlap_as_known(tmp_path, components, adapter, monkeypatch):
    """On the tensors Ex4dGenerator builds: window 2's condition video over its first 5 frames is window 1's
    output where the render was unknown (the render elsewhere), its mask there +1, and its I2V image that frame."""
    from ex4d.diffusion.pipeline import Ex4dGenerator

    from _ex4d_tiny import tiny_config

    gen = Ex4dGenerator(components, adapter, tiny_config())
    seen = []
    tokens, i2v = gen.camera_tokens, gen.i2v_condition
    monkeypatch.setattr(gen, "camera_tokens", lambda cond, m: (seen.append(("cond", cond, m)), tokens(cond, m))[1])
    monkeypatch.setattr(gen, "i2v_condition", lambda cond: (seen.append(("i2v", cond)), i2v(cond))[1])
    rng = np.random.default_rng(0)
    T, H, W = 13, 32, 48
    color = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    mask = np.zeros((T, H, W), bool)
    mask[:, :, :20] = True
    color[~mask] = 0

    def generate(c, m, seed):
        return gen.generate(c, m, gen.config.replace(seed=seed), progress=False)

    res = generate_windows(color, mask, generate, WindowConfig(window=9, overlap=5), tmp_path / "w", "k",
                           progress=False)
    assert [(w.start, w.end, w.known) for w in res.plan] == [(0, 9, 0), (4, 13, 5)]
    window1 = res.files.frames(0)
    conds = [s for s in seen if s[0] == "cond"]
    _, cond, mask_pm1 = conds[1]
    shared = np.where(mask[4:9, ..., None], color[4:9], window1[4:9])  # generated by window 1, else the render
    expected = (shared.astype(np.float32) / 255.0) * 2 - 1  # [5, H, W, 3]
    got = cond[0, :, :5].permute(1, 2, 3, 0).float().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert bool((mask_pm1[0, :, :5] == 1).all()) and bool((mask_pm1[0, :, 5:] == -1).any())
    i2v_cond = [s for s in seen if s[0] == "i2v"][1][1]
    np.testing.assert_allclose(i2v_cond[0, :, 0].permute(1, 2, 0).float().numpy(), expected[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------- through the CLI

def test_run_fill_ex4d_in_windows_resumes_after_a_kill_mid_window(tmp_path, wan_dirs, adapter, monkeypatch, capsys):
    """`ex4d run --fill ex4d` on 13 frames in windows of 9 sharing 5 (tiny random models): killed in window 2,
    the same command again generates only window 2 and writes the video an uninterrupted run writes."""
    from ex4d.cli import main
    from ex4d.diffusion.checkpoint import export_original_ckpt
    from ex4d.diffusion.pipeline import Ex4dGenerator
    from ex4d.io.chunks import concat_field

    export_original_ckpt(adapter, tmp_path / "ex4d.ckpt")
    args = ["run", "--example", "--num-frames", "13", "--example-size", "64", "--trajectory", "orbit", "--yaw", "30",
            "--fill", "ex4d", "--wan", str(wan_dirs[0]), "--adapter", str(tmp_path / "ex4d.ckpt"), "--steps", "1",
            "--window", "9", "--overlap", "5", "-q"]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0, capsys.readouterr().err
    real = Ex4dGenerator.generate
    calls = []

    def killed(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Ex4dGenerator, "generate", killed)
    assert main(args + ["--out", str(tmp_path / "resumed")]) == 130
    assert (tmp_path / "resumed" / ".ex4d" / "windows" / "w00000.npz").is_file()
    assert not (tmp_path / "resumed" / "output.mp4").exists()
    calls.clear()
    monkeypatch.setattr(Ex4dGenerator, "generate", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    assert main(args + ["--out", str(tmp_path / "resumed")]) == 0
    assert len(calls) == 1
    np.testing.assert_array_equal(concat_field(tmp_path / "resumed" / ".ex4d" / "fill", "output"),
                                  concat_field(tmp_path / "whole" / ".ex4d" / "fill", "output"))
    opts = __import__("json").loads((tmp_path / "whole" / "config.json").read_text())["run"]["fill_options"]
    assert opts["window"] == 9 and opts["overlap"] == 5


def test_generate_jobs_run_a_clip_longer_than_a_window(tmp_path):
    """`ex4d generate`'s job path (generate_in_windows) with a stand-in generator: 14 frames in windows of 9
    sharing 5; a clip that fits one window is one call as before; the work folder is gone at the end."""
    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.windowed import check_window_frames, generate_in_windows

    color, mask = _moving_clip(T=14)
    double = ContinuingDouble(drift=0)

    class Generator:  # TEST DOUBLE of Ex4dGenerator.generate
        def generate(self, c, m, config, progress=False):
            return double(c, m, config.seed)

    out = tmp_path / "gen" / "output.mp4"
    out.parent.mkdir()
    video, n = generate_in_windows(Generator(), color, mask, GenerateConfig(seed=7),
                                   WindowConfig(window=9, overlap=5, lift="none"), out, progress=False)
    assert n == 3 and video.shape == color.shape and [c[2] for c in double.calls] == [7, 8, 9]
    assert list(out.parent.iterdir()) == []  # the windows' work folder is removed
    double.calls.clear()
    video, n = generate_in_windows(Generator(), color[:9], mask[:9], GenerateConfig(), None, out, progress=False)
    assert n == 1 and len(double.calls) == 1 and video.shape[0] == 9
    video, n = generate_in_windows(Generator(), color, mask, GenerateConfig(frames="trim"), None, out,
                                   progress=False)
    assert n == 1 and video.shape[0] == 13
    check_window_frames(50, WindowConfig(), "exact")  # any count works
    with pytest.raises(Ex4dError):
        check_window_frames(0, WindowConfig(), "exact")


def test_window_flags_belong_to_their_fill(tmp_path, capsys):
    from ex4d.cli import main

    assert main(["run", "--example", "--num-frames", "5", "--example-size", "64", "--window", "9",
                 "--out", str(tmp_path / "a")]) == 2
    assert "--fill ex4d" in capsys.readouterr().err
    assert main(["run", "--example", "--num-frames", "5", "--example-size", "64", "--fill", "ex4d",
                 "--fill-window", "2", "--wan", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "--window" in capsys.readouterr().err
