"""4D assets: per-frame meshes of lifted frames as GLB (read back with trimesh and pygltflib) and PLY."""

import math

import numpy as np
import pytest

from ex4d.assets import GLTF_FROM_OPENCV, asset_stride, frame_mesh, write_glb, write_ply_sequence
from ex4d.cameras import default_intrinsics, invert_w2c, look_at_w2c
from ex4d.errors import Ex4dError
from ex4d.lift import LiftedFrame

H, W, T = 24, 32, 4


def _frames():
    """Lifted frames of a box in front of a wall, seen from a small orbit; colours encode the pixel."""
    K = default_intrinsics(W, H)
    v, u = np.mgrid[0:H, 0:W]
    out = []
    for t in range(T):
        depth = np.full((H, W), 5.0, np.float32)
        depth[6:18, 8 + t:16 + t] = 2.5  # the box moves
        rgb = np.stack([u * 7 % 256, v * 9 % 256, np.full_like(u, 40 * t)], -1).astype(np.uint8)
        a = math.radians(3.0 * t)
        w2c = look_at_w2c([3.0 * math.sin(a), 0.0, 3.0 - 3.0 * math.cos(a)], [0, 0, 3.0])
        out.append(LiftedFrame(rgb=rgb, depth=depth, measured=np.ones((H, W), bool), K=K, w2c=w2c))
    return out


def _linear(rgb8):
    x = rgb8 / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def test_frame_mesh_is_the_valid_surface_in_gltf_axes():
    fr = _frames()[1]
    m = frame_mesh(fr, max_size=64)
    assert m.faces.dtype == np.uint32 and m.faces.max() < len(m.vertices)
    # vertices are the lifted pixels: back in the frame's camera they project to their pixel at their depth
    X = np.c_[m.vertices, np.ones(len(m.vertices))] @ np.linalg.inv(GLTF_FROM_OPENCV).T @ fr.w2c.T
    u = fr.K[0, 0] * X[:, 0] / X[:, 2] + fr.K[0, 2]
    v = fr.K[1, 1] * X[:, 1] / X[:, 2] + fr.K[1, 2]
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    np.testing.assert_allclose(u, ui, atol=1e-3)
    np.testing.assert_allclose(X[:, 2], fr.depth[vi, ui], rtol=1e-5)
    np.testing.assert_array_equal(m.colors, fr.rgb[vi, ui])
    # no face spans the box's depth edge (those are flagged occluded and left out)
    z = X[:, 2][m.faces]
    assert (z.max(1) / z.min(1)).max() < 1.2
    # faces wind counter-clockwise seen from the camera (glTF front faces)
    cam = (GLTF_FROM_OPENCV @ invert_w2c(fr.w2c))[:3, 3]
    tri = m.vertices[m.faces].astype(np.float64)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.sum(n * (cam - tri.mean(1)), axis=1) > 0).all()
    # subsampling: every s-th pixel
    assert asset_stride(W, H, 16) == 2 and len(frame_mesh(fr, max_size=16).vertices) <= (H // 2) * (W // 2)
    with pytest.raises(Ex4dError, match="max-size"):
        asset_stride(W, H, 0)


def test_glb_loads_in_trimesh_with_every_frame_colours_and_cameras(tmp_path):
    import pygltflib
    import trimesh

    frames = _frames()
    K = default_intrinsics(W, H)
    path = write_glb(tmp_path / "scene.glb", frames, 12.0, max_size=64, source_K=K, progress=False)
    scene = trimesh.load(path)
    assert isinstance(scene, trimesh.Scene)
    names = sorted(scene.geometry)
    assert names == [f"frame_{t:05d}" for t in range(T)]
    for t, name in enumerate(names):
        mesh = scene.geometry[name]
        ref = frame_mesh(frames[t], max_size=64)
        np.testing.assert_allclose(mesh.vertices, ref.vertices, atol=1e-6)
        np.testing.assert_array_equal(mesh.faces, ref.faces)
        col = mesh.visual.vertex_attributes["color"]  # COLOR_0: linear RGBA, unsigned short normalised
        np.testing.assert_allclose(col[:, :3] / 65535.0, _linear(ref.colors), atol=1 / 65535)
        assert (col[:, 3] == 65535).all()
    g = pygltflib.GLTF2().load(str(path))
    assert [c.name for c in g.cameras] == ["output", "source"]
    assert g.cameras[0].perspective.yfov == pytest.approx(2 * math.atan(H / 2 / K[1, 1]))
    anim = g.animations[0]
    steps = [c for c in anim.channels if c.target.path == "scale"]
    assert len(steps) == T and all(anim.samplers[c.sampler].interpolation == "STEP" for c in steps)
    assert {c.target.path for c in anim.channels} == {"scale", "translation", "rotation"}
    cam = next(n for n in g.nodes if n.name == "output")
    np.testing.assert_allclose(np.array(cam.extras["w2c"]), np.stack([f.w2c for f in frames]))
    # the output camera node sits at the first frame's camera centre, in glTF axes
    np.testing.assert_allclose(cam.translation, (GLTF_FROM_OPENCV @ invert_w2c(frames[0].w2c))[:3, 3], atol=1e-9)
    assert "KHR_materials_unlit" in g.extensionsUsed


def test_ply_sequence_and_bad_outputs(tmp_path):
    import trimesh

    from ex4d.io.camera_files import read_cameras_json

    frames = _frames()
    folder = write_ply_sequence(tmp_path / "ply", frames, 12.0, max_size=64, progress=False)
    plys = sorted(folder.glob("*.ply"))
    assert [p.name for p in plys] == [f"{t:05d}.ply" for t in range(T)]
    m = trimesh.load(plys[2], process=False)
    ref = frame_mesh(frames[2], max_size=64)
    np.testing.assert_allclose(m.vertices, ref.vertices, atol=1e-6)
    np.testing.assert_array_equal(m.visual.vertex_colors[:, :3], ref.colors)
    cams = read_cameras_json(folder / "cameras.json")
    np.testing.assert_allclose(cams.w2c, np.stack([f.w2c for f in frames]))
    with pytest.raises(Ex4dError, match=".glb"):
        write_glb(tmp_path / "scene.gltf", frames, 12.0, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Ex4dError, match="not a folder"):
        write_ply_sequence(tmp_path / "file", frames, 12.0, progress=False)


def test_glb_passes_the_khronos_gltf_validator(tmp_path):
    """The reference validator of the glTF spec (npm gltf-validator, installed by scripts/setup_app.sh)."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    web = Path(__file__).resolve().parents[1] / "web"
    node = shutil.which("node")
    if node is None or not (web / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("node or web/node_modules/gltf-validator missing: bash scripts/setup_app.sh")
    frames = _frames()
    path = write_glb(tmp_path / "scene.glb", frames, 12.0, max_size=64, source_K=frames[0].K, progress=False)
    res = subprocess.run([node, str(web / "validate-gltf.mjs"), str(path)], capture_output=True, text=True)
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["issues"]["numErrors"] == 0, report["issues"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    assert report["info"]["animationCount"] == 1 and report["info"]["drawCallCount"] == T
