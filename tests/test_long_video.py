"""Long videos: chunked caches, streamed video and depth files, chunked recon and fill, resuming, lifted content,
and memory that does not grow with the clip's length."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.io.chunks import ChunkStore, concat_field


# ---------------------------------------------------------------------------------------------- chunked caches

def test_chunk_store_resumes_its_key_and_starts_over_for_another(tmp_path):
    fields = {"x": ((2, 3), np.float32), "m": ((2, 3), bool)}
    s = ChunkStore.open(tmp_path / "c", "k1", 10, 4, fields)
    assert s.spans == [(0, 4), (4, 8), (8, 10)] and s.missing() == [0, 1, 2]
    data = np.arange(60, dtype=np.float32).reshape(10, 2, 3)
    s.write(0, x=data[:4], m=data[:4] > 5)
    s.write(2, x=data[8:], m=data[8:] > 5)
    assert ChunkStore.open(tmp_path / "c", "k1", 10, 4, fields).missing() == [1]  # same key: kept
    with pytest.raises(Ex4dError, match="incomplete"):
        ChunkStore.load(tmp_path / "c")
    s.write(1, x=data[4:8], m=data[4:8] > 5)
    a = ChunkStore.load(tmp_path / "c", "k1").field("x", cache_chunks=1)
    assert a.shape == (10, 2, 3) and len(a) == 10
    np.testing.assert_array_equal(a[5], data[5])
    np.testing.assert_array_equal(a[3:9], data[3:9])
    np.testing.assert_array_equal(a[[9, 0, 4]], data[[9, 0, 4]])
    np.testing.assert_array_equal(concat_field(tmp_path / "c", "m"), data > 5)
    with pytest.raises(Ex4dError, match="shape"):
        s.write(1, x=data[:3], m=data[:3] > 5)
    assert ChunkStore.open(tmp_path / "c", "k2", 10, 4, fields).missing() == [0, 1, 2]  # another key: emptied


def test_a_stream_store_of_unknown_length(tmp_path):
    s = ChunkStore.open(tmp_path / "c", "k", None, 4, {"x": ((1,), np.int64)})
    s.write(0, x=np.arange(4)[:, None])
    s.write(1, x=np.arange(4, 6)[:, None])
    assert not s.complete
    s.finish(6)
    np.testing.assert_array_equal(concat_field(tmp_path / "c", "x")[:, 0], np.arange(6))
    assert ChunkStore.exists(tmp_path / "c", "k")


def test_video_writer_streams_what_write_video_writes_and_aborts_cleanly(tmp_path):
    from ex4d.io.video import VideoReader, VideoWriter, read_video, write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 16, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "whole.mp4", frames, 24)
    with VideoWriter(tmp_path / "parts.mp4", 24) as w:
        for a in range(0, 7, 3):
            w.write(frames[a:a + 3])
    np.testing.assert_array_equal(read_video(tmp_path / "parts.mp4", num_frames=None).frames,
                                  read_video(tmp_path / "whole.mp4", num_frames=None).frames)
    streamed = [f for _, f in VideoReader(tmp_path / "parts.mp4", num_frames=None)]
    np.testing.assert_array_equal(np.stack(streamed), read_video(tmp_path / "parts.mp4", num_frames=None).frames)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "parts.mp4", 24) as w:
            w.write(frames[:2])
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.mp4", "whole.mp4"]  # old file kept, no temp


def test_depth_files_are_read_a_frame_at_a_time(tmp_path):
    from ex4d.io.depth import to_depth
    from ex4d.io.depth_stream import open_depth_values

    rng = np.random.default_rng(1)
    disp = rng.random((6, 8, 10)).astype(np.float16)
    np.savez_compressed(tmp_path / "dc.npz", depth=disp)        # DepthCrafter's layout, compressed
    np.savez(tmp_path / "vda.npz", depths=disp[:, None])         # [T, 1, H, W], stored
    np.save(tmp_path / "d.npy", disp[..., None])                 # [T, H, W, 1]
    for name in ("dc.npz", "vda.npz", "d.npy"):
        v = open_depth_values(tmp_path / name)
        assert v.shape == (6, 8, 10)
        np.testing.assert_array_equal(v[[4, 1]], disp[[4, 1]].astype(np.float32))
        np.testing.assert_array_equal(np.asarray(v), disp.astype(np.float32))
    # chunk-wise conversion with the clip's peak gives the whole-clip conversion
    whole = to_depth(disp.astype(np.float32), "disparity")
    peak = float(disp.max())
    parts = np.concatenate([to_depth(disp[a:a + 4].astype(np.float32), "disparity", peak=peak) for a in (0, 4)])
    np.testing.assert_array_equal(parts, whole)


# ---------------------------------------------------------------------------------------------- chunked stages

def test_chunked_classical_fill_gives_the_whole_clip_fill(tmp_path):
    from ex4d.example import make_example
    from ex4d.fill import ClassicalFillConfig, classical_fill
    from ex4d.recon import ReconConfig, render_novel_views
    from ex4d.streaming import Clip, classical_fill_chunks, render_store
    from ex4d.trajectory import make_trajectory

    T, S = 24, 48  # two chunks
    scene = make_example(T, S, S)
    traj = make_trajectory("orbit", T, scene.K, S, S, depth0=scene.depth[0], yaw=35)
    res = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, progress=False)
    cfg = ClassicalFillConfig(window=2, smooth=0.3)
    whole = classical_fill(res.color, res.mask, res.depth, scene.frames, scene.depth, scene.K, traj.w2c, traj.K,
                           ReconConfig(), cfg, progress=False)
    render = render_store(tmp_path / "render", "k", T, S, S)
    frames = ChunkStore.open(tmp_path / "frames", "k", T, 16, {"rgb": ((S, S, 3), np.uint8),
                                                               "depth": ((S, S), np.float32)})
    for c, (a, b) in enumerate(render.spans):
        render.write(c, color=res.color[a:b], mask=res.mask[a:b], depth=res.depth[a:b])
        frames.write(c, rgb=scene.frames[a:b], depth=scene.depth[a:b])
    clip = Clip(frames.field("rgb"), 24.0, np.arange(T), T)
    far = float(2.0 * scene.depth.max())
    out = classical_fill_chunks(render, clip, frames.field("depth"), scene.K, traj.w2c, traj.K, ReconConfig(),
                                cfg, far, tmp_path, "k", progress=False)
    got = np.asarray(out.field("output"))
    differ = np.abs(got.astype(int) - whole.astype(int))
    assert differ.max() <= 1 and (differ > 0).mean() < 1e-4  # the smoothing's cut-off is below 1e-4 levels


def _run(out, *extra):
    from ex4d.cli import main

    return main(["run", "--example", "--num-frames", "20", "--example-size", "64", "--trajectory", "orbit",
                 "--yaw", "30", "--fill-window", "1", "-q", "--out", str(out), *extra])


def test_a_run_killed_mid_render_resumes_at_the_chunk_it_was_in(tmp_path, monkeypatch):
    import ex4d.recon

    assert _run(tmp_path / "whole") == 0
    calls = {"n": 0}
    real = ex4d.recon.render_novel_views

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C while rendering the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(ex4d.recon, "render_novel_views", killed)
    assert _run(tmp_path / "resumed") == 130
    render = tmp_path / "resumed" / ".ex4d" / "render"
    assert sorted(p.name for p in render.glob("*.npz")) == ["00000.npz"]
    assert not (tmp_path / "resumed" / "color.mp4").exists()
    assert not [p for p in (tmp_path / "resumed").rglob("*") if ".tmp-" in p.name]
    stamp = (render / "00000.npz").stat().st_mtime_ns
    monkeypatch.undo()
    calls["n"] = 0
    monkeypatch.setattr(ex4d.recon, "render_novel_views", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1),
                                                                           real(*a, **k))[1])
    assert _run(tmp_path / "resumed") == 0
    assert calls["n"] == 1 and (render / "00000.npz").stat().st_mtime_ns == stamp  # chunk 0 was kept
    for name in ("render", "fill"):
        field = "color" if name == "render" else "output"
        np.testing.assert_array_equal(concat_field(tmp_path / "resumed" / ".ex4d" / name, field),
                                      concat_field(tmp_path / "whole" / ".ex4d" / name, field))
    assert (tmp_path / "resumed" / "output.mp4").read_bytes() == (tmp_path / "whole" / "output.mp4").read_bytes()


def test_a_long_depth_file_input_streams_through_the_run(tmp_path):
    from ex4d.cli import main
    from ex4d.io.video import read_video

    assert main(["example", "--out", str(tmp_path / "ex"), "--num-frames", "20", "--size", "64"]) == 0
    depth = np.load(tmp_path / "ex" / "depth.npz")["depth"]
    np.savez_compressed(tmp_path / "disp.npz", depths=(1.0 / depth).astype(np.float16))  # relative disparity
    rc = main(["run", str(tmp_path / "ex" / "input.mp4"), "--depth", str(tmp_path / "disp.npz"), "--num-frames", "0",
               "--fill-window", "1", "-q", "--out", str(tmp_path / "o")])
    assert rc == 0
    from ex4d.io.depth import to_depth

    expected = to_depth((1.0 / depth).astype(np.float16).astype(np.float32), "disparity")
    np.testing.assert_allclose(concat_field(tmp_path / "o" / ".ex4d" / "depth", "depth"), expected, rtol=1e-6)
    assert read_video(tmp_path / "o" / "output.mp4", num_frames=None).frames.shape == (20, 64, 64, 3)
    assert json.loads((tmp_path / "o" / "config.json").read_text())["summary"]["num_frames"] == 20


_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from ex4d.pipeline import RunConfig, run_pipeline
    T, S = int(sys.argv[1]), int(sys.argv[2])
    run_pipeline(RunConfig(example=True, example_size=S, num_frames=T, trajectory="orbit",
                           trajectory_options={"yaw": 30}, fill_options={"window": 1}), sys.argv[3], progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def test_peak_memory_of_recon_and_fill_does_not_grow_with_the_length(tmp_path):
    """ru_maxrss of recon + classical fill at 64²: 32 and 128 frames. Held in memory, the 96 more frames
    would take ≈ 96 × 64² × 50 B ≈ 20 MB (frames, depth, render colour/mask/depth, fill output and its
    float32 smoothing, preview)."""
    peaks = {}
    for T in (32, 128):
        res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(T), "64", str(tmp_path / f"o{T}")],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        peaks[T] = int(res.stdout.split()[-1])  # KiB
    grown_mb = (peaks[128] - peaks[32]) / 1024
    assert grown_mb < 6, f"peak RSS grew by {grown_mb:.1f} MB from 32 to 128 frames ({peaks})"


# ---------------------------------------------------------------------------------------------- lifted content

def test_lifted_memory_fills_only_behind_the_occluder_and_stays_bounded():
    from ex4d.cameras import default_intrinsics
    from ex4d.fill.lifted import LiftedMemory
    from ex4d.lift import LiftedFrame

    H = W = 24
    K = default_intrinsics(W, H)
    plane = LiftedFrame(rgb=np.full((H, W, 3), 200, np.uint8), depth=np.full((H, W), 5.0, np.float32),
                        measured=np.ones((H, W), bool), K=K, w2c=np.eye(4))
    mem = LiftedMemory(keep=2)
    for t in range(4):
        mem.add(t, plane)
    assert mem.ids == [2, 3]
    # a camera path that swings out and back: the viewpoint it had at the start stays among the older ones
    from dataclasses import replace

    from ex4d.cameras import look_at_w2c

    swing = LiftedMemory(keep=4)
    for t, x in enumerate([0.0, 0.1, 0.2, 1.5, 1.6, 1.7, 0.15]):
        swing.add(t, replace(plane, w2c=look_at_w2c(np.array([x, 0, 0]), np.array([x, 0, 5.0]))))
    assert len(swing) == 4 and swing.ids[-2:] == [5, 6]  # the newest half by recency
    assert any(t in swing.ids for t in (0, 1, 2)) and any(t in swing.ids for t in (3, 4))  # both viewpoints
    color, mask = np.zeros((H, W, 3), np.uint8), np.zeros((H, W), bool)
    mask[:, :8] = True
    view_depth = np.full((H, W), np.inf, np.float32)
    view_depth[:, 8:16] = 3.0   # an occluding face in front of the plane: the plane lies behind it
    view_depth[:, 16:] = 8.0    # a surface behind the plane's position: the plane would be in front
    f = mem.fill(color, mask, view_depth, K, np.eye(4))
    assert not f.filled[:, :8].any()                             # known pixels never change
    assert f.filled[2:-2, 9:15].all() and not f.filled[:, 17:].any()
    assert (f.color[f.filled] == 200).all() and np.allclose(f.depth[f.filled], 5.0, rtol=1e-3)


def test_content_generated_in_one_window_is_known_where_a_later_window_sees_it(tmp_path):
    """The example along the original's 90° path, windows of 9 sharing 5: pixels that window 1 generated are
    known in window 2's condition where window 2's render does not know them, with window 1's colour."""
    from ex4d.diffusion.windows import WindowConfig, generate_windows
    from ex4d.example import make_example
    from ex4d.recon import render_novel_views
    from ex4d.trajectory import make_trajectory

    T, S = 17, 64
    scene = make_example(T, S, S)
    traj = make_trajectory("ex4d-90", T, scene.K, S, S, depth0=scene.depth[0])
    r = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, progress=False)
    generated = np.array([40, 90, 200], np.uint8)

    for lift in ("background", "none"):
        calls = []

        def double(c, m, seed):  # TEST DOUBLE: keeps what it is given, paints what is unknown one colour
            calls.append((c.copy(), m.copy()))
            out = c.copy()
            out[~m] = generated if seed == 0 else (200, 60, 40)
            return out

        res = generate_windows(r.color, r.mask, double, WindowConfig(window=9, overlap=5, lift=lift),
                               tmp_path / lift, "k", view_depth=r.depth, w2c=traj.w2c, K=traj.K, progress=False)
        w = res.plan[1]
        c, m = calls[1]
        new = slice(w.known, w.length)
        lifted = m[new] & ~r.mask[w.start + w.known:w.end]
        if lift == "none":
            assert not lifted.any()
            continue
        unknown = int((~r.mask[w.start + w.known:w.end]).sum())
        # window 1's generated colour (the rest: source content that earlier output frames knew)
        reused = np.abs(c[new][lifted].astype(int) - generated).max(axis=1) <= 12
        assert reused.sum() > 0.2 * unknown, (reused.sum(), lifted.sum(), unknown)


def test_a_resumed_run_lifts_into_its_windows_what_an_uninterrupted_run_does(tmp_path):
    from ex4d.diffusion.windows import WindowConfig, generate_windows
    from ex4d.example import make_example
    from ex4d.recon import render_novel_views
    from ex4d.trajectory import make_trajectory

    T, S = 25, 64
    scene = make_example(T, S, S)
    traj = make_trajectory("swing", T, scene.K, S, S, depth0=scene.depth[0], yaw=30)
    r = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, progress=False)
    cfg = WindowConfig(window=9, overlap=5, lift_keep=4, lift_every=2)  # 5 windows; the memory drops frames
    calls = []

    def double(c, m, seed):  # TEST DOUBLE: keeps what it is given, paints what is unknown a colour per window
        calls.append(seed)
        if seed == 3 and killed["on"]:
            raise KeyboardInterrupt
        out = c.copy()
        out[~m] = (30 * seed, 200 - 30 * seed, 90)
        return out

    def run(folder):
        return generate_windows(r.color, r.mask, double, cfg, folder, "k", view_depth=r.depth, w2c=traj.w2c,
                                K=traj.K, progress=False).video()

    killed = {"on": False}
    whole = run(tmp_path / "a")
    killed["on"] = True
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    killed["on"] = False
    calls.clear()
    np.testing.assert_array_equal(run(tmp_path / "b"), whole)
    assert calls == [3, 4]
