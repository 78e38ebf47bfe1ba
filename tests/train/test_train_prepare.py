"""``ex4d prepare``: layout, bad inputs, resume after kill -9 of the driver, a killed Ray worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _ex4d_train_helpers import CLIP_H, CLIP_T, CLIP_W, write_example_videos
from ex4d.errors import Ex4dError
from ex4d.train import layout
from ex4d.train.dataset import ResumableSampler, TripleDataset, split_clips
from ex4d.train.prepare import PrepareConfig, prepare_dataset, read_manifest

REPO = Path(__file__).resolve().parents[2]


def test_layout_skips_and_rerun(prepared, example_videos):
    clips = layout.list_clips(prepared)
    assert len(clips) == 3
    for clip in clips:
        assert {p.name for p in clip.iterdir()} == {*layout.CLIP_FILES, layout.DEPTH}
        meta = json.loads((clip / "meta.json").read_text())
        assert meta["size"] == [CLIP_W, CLIP_H] and len(meta["frame_indices"]) == CLIP_T
        assert meta["unknown_per_frame"][0] == 0.0  # frame 0 is the source view
    skipped = {Path(r["video"]).name: r["reason"] for r in read_manifest(prepared)
               if r["type"] == "video" and r["status"] == "skipped"}
    assert "too short: 3 frames" in skipped["short.mp4"] and "cannot read" in skipped["broken.mp4"]
    # the triple reads back as the original loader's layout: target, masked render, mask
    item = TripleDataset(clips, erosion=(0, 0))[0]
    assert item["target"].shape == (CLIP_T, CLIP_H, CLIP_W, 3) and item["mask"].shape == (CLIP_T, CLIP_H, CLIP_W)
    assert item["mask"][0].all() and 0.02 < 1 - item["mask"].mean() < 0.9
    assert np.abs(item["condition"][~item["mask"]].astype(int)).mean() < 8  # black where unknown (H.264 noise)
    # re-running the same command does nothing; other settings are refused
    videos, depth = example_videos
    config = PrepareConfig(num_frames=CLIP_T, width=CLIP_W, height=CLIP_H, depth_dir=str(depth), depth_kind="depth")
    again = prepare_dataset([videos], prepared, config, executor="local", progress=False)
    assert again.new_clips == 0 and again.reused_clips == 3
    with pytest.raises(Ex4dError, match="other settings"):
        prepare_dataset([videos], prepared, config.__class__(**{**config.__dict__, "stride": 2}), executor="local",
                        progress=False)


def test_sampler_and_split_are_deterministic(prepared):
    clips = layout.list_clips(prepared)
    train, val = split_clips(clips, 1)
    assert len(train) == 2 and len(val) == 1 and split_clips(clips, 1) == (train, val)
    full = [x for _, x in zip(range(10), ResumableSampler(5, seed=1))]
    resumed = [x for _, x in zip(range(6), ResumableSampler(5, seed=1, start=4))]
    assert resumed == full[4:]
    ranks = [[i for (i, _), _ in zip(ResumableSampler(4, seed=1, rank=r, world=2), range(2))] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == [0, 1, 2, 3]


def test_resumes_after_kill_9_without_redoing_finished_clips(tmp_path):
    videos, depth = write_example_videos(tmp_path, 5, frames=9, width=96, height=64)
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "ex4d.train", "prepare", str(videos), "--out", str(out), "--depth-dir", str(depth),
           "--depth-kind", "depth", "--num-frames", "9", "--size", "96", "64", "--executor", "local", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not layout.list_clips(out):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = layout.list_clips(out)
    assert done, "no clip finished before the kill"
    stamps = {c.name: (c / "meta.json").stat().st_mtime_ns for c in done}
    config = PrepareConfig(num_frames=9, width=96, height=64, depth_dir=str(depth), depth_kind="depth")
    summary = prepare_dataset([videos], out, config, executor="local", progress=False)
    assert summary.new_clips + summary.reused_clips == 5 and summary.new_clips == 5 - len(done)
    assert {c.name: (c / "meta.json").stat().st_mtime_ns for c in done} == stamps  # finished clips untouched
    assert len(layout.list_clips(out)) == 5 and not (out / ".tmp").exists() or not any((out / ".tmp").iterdir())


def _kill_once_depth(frames):
    """A tilted plane as depth, after SIGKILLing this worker process on the first call of the test."""
    marker = Path(os.environ["EX4D_TEST_MARKER"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    h, w = frames.shape[1:3]
    yy = np.linspace(2.0, 4.0, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.repeat(yy[None], len(frames), 0)


def test_ray_worker_killed_mid_clip_is_restarted(tmp_path, example_videos, monkeypatch):
    ray = pytest.importorskip("ray")
    import ray.cloudpickle as cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    monkeypatch.setenv("EX4D_TEST_MARKER", str(marker))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"EX4D_TEST_MARKER": str(marker), "OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": str(REPO)}})
    try:
        videos, _ = example_videos
        config = PrepareConfig(num_frames=CLIP_T, width=CLIP_W, height=CLIP_H)
        summary = prepare_dataset([videos / "clip0.mp4", videos / "clip1.mp4"], tmp_path / "data", config,
                                  executor="ray", num_workers=1, retries=2, progress=False,
                                  depth_fn=_kill_once_depth)
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists(), "the worker was never killed"
    assert summary.failed == [] and summary.new_clips == 2
    assert len(layout.list_clips(tmp_path / "data")) == 2
