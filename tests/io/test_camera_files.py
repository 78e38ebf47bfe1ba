"""Tests for ex4d.io.camera_files: cameras.json and the original EX-4D npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ex4d.cameras import intrinsics_from_focal, look_at_w2c, opencv_to_opengl_w2c
from ex4d.errors import Ex4dError
from ex4d.io.camera_files import (
    CameraFile,
    load_camera_file,
    read_cameras_json,
    read_ex4d_npz,
    write_cameras_json,
    write_ex4d_npz,
)

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "ex4d-flower"
K0 = intrinsics_from_focal(80, 60, 71.3)


def _w2c(T: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    eyes = rng.normal(scale=0.7, size=(T, 3))
    eyes[0] = 0.0
    return np.stack([look_at_w2c(e, (0.1, -0.2, 3.0)) for e in eyes])


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _valid_obj() -> dict:
    return {"convention": "opencv_w2c", "width": 80, "height": 60, "fps": 24, "K": K0.tolist(),
            "w2c": _w2c(3).tolist()}


def test_cameras_json_round_trip_is_exact(tmp_path):
    w2c = _w2c()
    write_cameras_json(tmp_path / "cameras.json", w2c, K0, 80, 60, 29.97)
    cams = read_cameras_json(tmp_path / "cameras.json")
    assert isinstance(cams, CameraFile)
    np.testing.assert_array_equal(cams.w2c, w2c)
    np.testing.assert_array_equal(cams.K, np.broadcast_to(K0, (7, 3, 3)))
    assert (cams.width, cams.height, cams.fps, cams.num_frames) == (80, 60, 29.97, 7)
    obj = json.loads((tmp_path / "cameras.json").read_text())
    assert obj["convention"] == "opencv_w2c" and np.asarray(obj["K"]).shape == (3, 3)  # constant K written once


def test_cameras_json_per_frame_K(tmp_path):
    Ks = np.stack([K0 * [[s, s, 1], [1, s, 1], [1, 1, 1]] for s in np.linspace(1, 2, 7)])
    write_cameras_json(tmp_path / "c.json", _w2c(), Ks, 80, 60, 30)
    assert np.asarray(json.loads((tmp_path / "c.json").read_text())["K"]).shape == (7, 3, 3)
    np.testing.assert_array_equal(read_cameras_json(tmp_path / "c.json").K, Ks)


def test_cameras_json_opengl_convention_is_converted(tmp_path):
    obj = _valid_obj()
    w2c = np.asarray(obj["w2c"])
    obj.update(convention="opengl_w2c", w2c=opencv_to_opengl_w2c(w2c).tolist())
    np.testing.assert_allclose(read_cameras_json(_write_json(tmp_path / "gl.json", obj)).w2c, w2c, atol=1e-15)


def test_ex4d_npz_round_trip(tmp_path):
    w2c = _w2c()
    write_ex4d_npz(tmp_path / "camera.npz", w2c, K0)
    with np.load(tmp_path / "camera.npz") as raw:
        assert raw["extrinsics"].dtype == np.float32 and raw["extrinsics"].shape == (7, 4, 4)
        assert raw["intrinsics"].dtype == np.float32 and raw["intrinsics"].shape == (3, 3)
        np.testing.assert_allclose(raw["extrinsics"], opencv_to_opengl_w2c(w2c), atol=1e-6)
    cams = read_ex4d_npz(tmp_path / "camera.npz")
    np.testing.assert_allclose(cams.w2c, w2c, atol=1e-6)
    np.testing.assert_allclose(cams.K[3], K0, rtol=1e-6)
    assert (cams.width, cams.height, cams.fps) == (80, 60, None)
    zoom = np.stack([K0, K0 * [[2, 2, 1], [1, 2, 1], [1, 1, 1]]] + [K0] * 5)
    with pytest.raises(Ex4dError, match="cameras.json"):
        write_ex4d_npz(tmp_path / "z.npz", w2c, zoom)
    write_ex4d_npz(tmp_path / "same.npz", w2c, np.stack([K0] * 7))  # constant per-frame K is fine


@pytest.mark.skipif(not (REFERENCE / "camera_180.npz").is_file(), reason="shared reference data not present")
def test_reference_npz_reads_and_converts():
    cams = load_camera_file(REFERENCE / "camera_180.npz")
    assert cams.num_frames == 49 and (cams.width, cams.height) == (512, 512)
    np.testing.assert_allclose(cams.w2c[0], np.eye(4), atol=1e-6)  # OpenGL flip undone: frame 0 is the source
    np.testing.assert_allclose(cams.K[0], [[500, 0, 256], [0, 500, 256], [0, 0, 1]])
    # every camera looks roughly forward (+z in OpenCV) at the target in front of the source
    assert np.all(cams.w2c[:, 2, 2] > 0.7)


def test_load_camera_file_dispatch(tmp_path):
    write_cameras_json(tmp_path / "a.json", _w2c(), K0, 80, 60, 30)
    write_ex4d_npz(tmp_path / "b.npz", _w2c(), K0)
    assert load_camera_file(tmp_path / "a.json").fps == 30
    assert load_camera_file(tmp_path / "b.npz").fps is None
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(Ex4dError, match=r"\.txt"):
        load_camera_file(tmp_path / "c.txt")
    with pytest.raises(Ex4dError, match="not found"):
        load_camera_file(tmp_path / "missing.json")


@pytest.mark.parametrize("mutate, match", [
    (lambda o: o.pop("w2c"), "'w2c'"),
    (lambda o: o.pop("K"), "'K'"),
    (lambda o: o.pop("width"), "'width'"),
    (lambda o: o.pop("fps"), "'fps'"),
    (lambda o: o.pop("convention"), "'convention'"),
    (lambda o: o.update(convention="colmap"), "opencv_w2c"),
    (lambda o: o.update(width=0), "width"),
    (lambda o: o.update(height="60"), "height"),
    (lambda o: o.update(fps=-1), "fps"),
    (lambda o: o.update(w2c=[[1, 0], [0, 1]]), "'w2c'"),
    (lambda o: o.update(w2c=[[["a"] * 4] * 4]), "'w2c'"),
    (lambda o: o.update(w2c=(np.asarray(o["w2c"]) * np.c_[[2, 2, 2, 1]]).tolist()), "orthonormal"),
    (lambda o: o.update(K=[[1, 0], [0, 1]]), "'K'"),
    (lambda o: o.update(K=[K0.tolist()] * 2), "'K'"),  # 2 matrices for 3 cameras
    (lambda o: o.update(K=[[-5, 0, 1], [0, 5, 1], [0, 0, 1]]), "focal"),
])
def test_malformed_cameras_json_raises(tmp_path, mutate, match):
    obj = _valid_obj()
    mutate(obj)
    with pytest.raises(Ex4dError, match=match):
        read_cameras_json(_write_json(tmp_path / "bad.json", obj))


def test_malformed_files_raise(tmp_path):
    (tmp_path / "trunc.json").write_text('{"convention": "opencv_w2c", ')
    with pytest.raises(Ex4dError, match="not valid JSON"):
        read_cameras_json(tmp_path / "trunc.json")
    with pytest.raises(Ex4dError, match="object"):
        read_cameras_json(_write_json(tmp_path / "list.json", [1, 2]))
    with pytest.raises(Ex4dError, match="keyframe"):
        read_cameras_json(_write_json(tmp_path / "kf.json", {"keyframes": [{"t": 0}]}))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(Ex4dError, match="npz"):
        read_ex4d_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "nokey.npz", extrinsics=np.eye(4)[None])
    with pytest.raises(Ex4dError, match="'intrinsics'"):
        read_ex4d_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "shape.npz", extrinsics=np.eye(4), intrinsics=K0)
    with pytest.raises(Ex4dError, match="'extrinsics'"):
        read_ex4d_npz(tmp_path / "shape.npz")


def test_writers_validate(tmp_path):
    with pytest.raises(Ex4dError, match="w2c"):
        write_cameras_json(tmp_path / "x.json", np.ones((3, 4, 4)), K0, 80, 60, 30)
    with pytest.raises(Ex4dError, match="K"):
        write_cameras_json(tmp_path / "x.json", _w2c(), np.stack([K0] * 2), 80, 60, 30)
    with pytest.raises(Ex4dError, match="fps"):
        write_cameras_json(tmp_path / "x.json", _w2c(), K0, 80, 60, 0)
    assert not (tmp_path / "x.json").exists()
