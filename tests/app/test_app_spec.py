"""The browser's run request → RunConfig: whitelists, limits, no server paths from the browser."""

from __future__ import annotations

import pytest

from ex4d.app.spec import ServerModels, build_run_config
from ex4d.app.uploads import AppLimits, sniff_depth, sniff_video
from ex4d.errors import Ex4dError

LIMITS = AppLimits(max_frames=25, max_res=256)
UPLOADED = {"video": "/jobs/abc/input/video.mp4", "video_info": {}, "depth": "/jobs/abc/input/depth.npz"}


def test_example_request():
    c = build_run_config({"input": "example", "num_frames": 9, "example_size": 64, "trajectory": "swing",
                          "trajectory_options": {"yaw": 20, "ease": "linear"}, "filter": "angle", "fill": "none"},
                         {}, LIMITS)
    assert c.example and c.example_size == 64 and c.num_frames == 9 and c.video is None
    assert c.trajectory == "swing" and c.trajectory_options == {"yaw": 20, "ease": "linear"}
    assert c.recon.mesh.filter == "angle" and c.fill == "none"


def test_upload_request_uses_server_paths():
    c = build_run_config({"input": "upload", "depth_kind": "depth", "depth": "file", "trajectory": "keyframes",
                          "trajectory_options": {"keyframes": [{"t": 0, "yaw": 0}, {"frame": 8, "yaw": 30}]}},
                         UPLOADED, LIMITS)
    assert c.video == UPLOADED["video"] and c.depth == UPLOADED["depth"] and c.depth_kind == "depth"
    assert c.max_res == 256 and c.allow_short and c.num_frames == 25


def test_depth_auto_and_models():
    c = build_run_config({"input": "upload"}, UPLOADED, LIMITS)
    assert c.depth == UPLOADED["depth"]
    no_depth = {**UPLOADED, "depth": None}
    with pytest.raises(Ex4dError, match="needs depth"):
        build_run_config({"input": "upload"}, no_depth, LIMITS)
    models = ServerModels(depth_weights={"depth-anything-v2": "/models/dav2"})
    c = build_run_config({"input": "upload"}, no_depth, LIMITS, models)
    assert c.depth_model == "depth-anything-v2" and c.depth_weights == "/models/dav2"
    with pytest.raises(Ex4dError, match="depth must be one of"):
        build_run_config({"input": "upload", "depth": "depthcrafter"}, UPLOADED, LIMITS, models)


@pytest.mark.parametrize("req, msg", [
    ({"input": "file:///etc/passwd"}, "input must be one of"),
    ({"input": "example", "trajectory": "cams.json"}, "must be a preset"),
    ({"input": "example", "trajectory": "static", "trajectory_options": {"yaw": 3}}, "does not take option"),
    ({"input": "example", "trajectory": "ex4d-90", "trajectory_options": {"yaw": 3}}, "does not take option"),
    ({"input": "example", "example_size": 1024}, "example_size must be in [64, 256]"),
    ({"input": "example", "example_size": 100}, "multiple of 16"),
    ({"input": "example", "num_frames": True}, "must be an integer"),
    ({"input": "example", "trajectory_options": {"yaw": float("nan")}}, "must be finite"),
    ({"input": "example", "trajectory": "keyframes", "trajectory_options": {"keyframes": [[[[[1]]]]]}},
     "nested too deeply"),
    ({"input": "example", "depth": "file"}, "depth must be one of"),
    ({"input": "example", "filter": "none"}, "filter must be one of"),
    ({"input": "example", "fill": "ex4d"}, "fill must be one of"),
])
def test_bad_requests(req, msg):
    with pytest.raises(Ex4dError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        build_run_config(req, UPLOADED, LIMITS)


def test_ex4d_fill_only_when_offered():
    models = ServerModels(wan="/models/wan", adapter="/models/ex4d.ckpt")
    c = build_run_config({"input": "example", "fill": "ex4d"}, {}, LIMITS, models)
    assert c.fill_options == {"wan": "/models/wan", "adapter": "/models/ex4d.ckpt"}


def test_sniffing():
    assert sniff_video(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20) == "mp4"
    assert sniff_video(b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 20) == "mov"
    assert sniff_video(b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm") == "webm"
    assert sniff_video(b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska") == "mkv"
    assert sniff_video(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_video(b"GIF89a\x01\x00") == "gif"
    for fake in (b"<html>", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b""):
        assert sniff_video(fake) is None
    assert sniff_depth(b"PK\x03\x04....") == "npz" and sniff_depth(b"\x93NUMPY\x01\x00") == "npy"
    assert sniff_depth(b"\x00\x00\x00\x20ftypisom") is None


def test_limits_are_checked():
    with pytest.raises(Ex4dError, match="multiple of 16"):
        AppLimits(max_res=100)
    with pytest.raises(Ex4dError, match="max_upload_mb"):
        AppLimits(max_upload_mb=0)
    for field, value in (("max_upload_mb", float("inf")), ("max_depth_mb", float("nan")), ("max_jobs", 0),
                         ("max_disk_gb", -1.0), ("max_concurrent_uploads", 1.5), ("keep_hours", float("inf")),
                         ("max_sessions", True), ("min_free_gb", float("nan"))):
        with pytest.raises(Ex4dError, match=field):
            AppLimits(**{field: value})
