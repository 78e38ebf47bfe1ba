import numpy as np
import pytest
import torch

from ex4d_testutil import box_on_plane
from ex4d.cameras import default_intrinsics, invert_w2c, look_at_w2c, project_points
from ex4d.dwmesh import MeshConfig, build_dwmesh
from ex4d.render import render_mesh
from ex4d.render.numba_raster import rasterize_numba
from ex4d.render.torch_raster import rasterize_torch


def _orbit(yaw_deg, pitch_deg=0.0, pivot=3.0):
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    eye = np.array([pivot * np.sin(a) * np.cos(b), -pivot * np.sin(b), pivot - pivot * np.cos(a) * np.cos(b)])
    return look_at_w2c(eye, [0, 0, pivot])


def test_identity_view_reproduces_the_frame():
    H, W = 40, 56
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.stack([u * 4, v * 5, (u + v) * 2], -1).astype(np.uint8)
    depth = 2.0 + 0.01 * u  # a slanted plane
    K = default_intrinsics(W, H)
    r = render_mesh(build_dwmesh(rgb, depth, K), K, np.eye(4), backend="numba")
    assert r.mask[1:-1, 1:-1].all()
    np.testing.assert_allclose(r.color[r.mask] * 255, rgb[r.mask], atol=0.51)
    np.testing.assert_allclose(r.depth[r.mask], depth[r.mask], rtol=1e-5)


def test_plane_seen_from_a_new_pose_matches_the_analytic_image():
    """A fronto-parallel plane with a linear colour ramp: barycentric interpolation is exact there."""
    H, W, d = 48, 64, 4.0
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.stack([u / (W - 1), v / (H - 1), np.full(u.shape, 0.5)], -1).astype(np.float32)
    K = default_intrinsics(W, H)
    w2c = look_at_w2c([0.4, -0.2, 0.3], [0.0, 0.0, d])
    r = render_mesh(build_dwmesh(rgb, np.full((H, W), d), K), K, w2c, backend="numba")
    # analytic: cast each pixel's ray to the plane z = d, project into the source view
    c2w = invert_w2c(w2c)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1) @ c2w[:3, :3].T
    o = c2w[:3, 3]
    t = (d - o[2]) / rays[..., 2]
    X = o + rays * t[..., None]
    uv, _ = project_points(X, K)
    inside = (uv[..., 0] > 0.5) & (uv[..., 0] < W - 1.5) & (uv[..., 1] > 0.5) & (uv[..., 1] < H - 1.5)
    assert r.mask[inside].all()
    assert not r.mask[(uv[..., 0] < -1) | (uv[..., 0] > W) | (uv[..., 1] < -1) | (uv[..., 1] > H)].any()
    np.testing.assert_allclose(r.color[inside][:, 0], (uv[inside][:, 0] / (W - 1)), atol=2e-4)
    np.testing.assert_allclose(r.color[inside][:, 1], (uv[inside][:, 1] / (H - 1)), atol=2e-4)
    np.testing.assert_allclose(r.depth[inside], ((X - o) @ w2c[2, :3])[inside], rtol=1e-5)


@pytest.mark.parametrize("yaw", [15, 40, -60])
def test_occluded_faces_hide_what_they_should(yaw):
    """Box in front of a plane: every known pixel shows the true surface; the disocclusion is unknown."""
    rgb, depth = box_on_plane(96, 128, fg=2.0, bg=5.0)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    w2c = _orbit(yaw, 5.0, pivot=3.0)
    r = render_mesh(build_dwmesh(rgb, depth, K, config=MeshConfig(filter="angle")), K, w2c, backend="numba")
    # ray-cast the analytic scene (box front rectangle at z=fg, plane at z=bg) seen by the new camera
    c2w = invert_w2c(w2c)
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1) @ c2w[:3, :3].T
    o = c2w[:3, 3]

    def hit(z):
        t = (z - o[2]) / rays[..., 2]
        X = o + rays * t[..., None]
        uv, _ = project_points(X, K)
        return X, uv

    Xf, uvf = hit(2.0)
    on_box = (uvf[..., 0] >= W // 4) & (uvf[..., 0] <= W // 2 - 1) & (uvf[..., 1] >= H // 4) & (uvf[..., 1] <= 3 * H // 4 - 1)
    Xb, uvb = hit(5.0)
    z_true = np.where(on_box, (Xf - o) @ w2c[2, :3], (Xb - o) @ w2c[2, :3])
    wrong = r.mask & (np.abs(r.depth - z_true) > 1e-3 * z_true)
    assert wrong.sum() <= 0.002 * r.mask.sum(), f"{wrong.sum()} known pixels show the wrong surface"
    # the plane behind the box (hidden in the source) must never be known
    behind = ~on_box & (uvb[..., 0] >= W // 4 + 1) & (uvb[..., 0] <= W // 2 - 2) & (uvb[..., 1] >= H // 4 + 1) \
        & (uvb[..., 1] <= 3 * H // 4 - 2)
    assert behind.any() and not r.mask[behind].any()


@pytest.mark.parametrize("view", ["identity", "yaw30", "yaw90", "inside"])
def test_numba_and_torch_kernels_agree_pixel_for_pixel(view):
    rgb, depth = box_on_plane(48, 64, fg=2.0, bg=5.0)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    mesh = build_dwmesh(rgb, depth, K)
    w2c = {"identity": np.eye(4), "yaw30": _orbit(30, 10), "yaw90": _orbit(90, 11, pivot=2.15),
           "inside": look_at_w2c([0.2, 0.1, 3.0], [0.5, 0.0, 6.0])}[view]
    a = render_mesh(mesh, K, w2c, backend="numba")
    b = render_mesh(mesh, K, w2c, backend="torch", device="cpu")
    np.testing.assert_array_equal(a.face_id, b.face_id)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.color, b.color)


def test_triangles_crossing_the_near_plane_are_clipped_exactly():
    """A floor quad reaching behind the camera: every pixel below the horizon sees it at the right depth."""
    H, W = 32, 48
    K = default_intrinsics(W, H)
    verts = np.array([[-50, 1.0, -5], [50, 1.0, -5], [50, 1.0, 40], [-50, 1.0, 40]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)
    fid, inv_depth, _ = rasterize_numba(verts, faces, K, H, W, near=0.01)
    v = np.arange(H)
    below = v > K[1, 2] + 1  # rows well below the horizon, whose floor hit is in front of the camera
    z_true = K[1, 1] * 1.0 / (v[below] - K[1, 2])
    assert (fid[below] >= 0).all() and (fid[v < K[1, 2]] == -1).all()
    np.testing.assert_allclose(1.0 / inv_depth[below], np.repeat(z_true[:, None], W, 1), rtol=1e-5)
    fid_t, inv_t, _ = rasterize_torch(torch.from_numpy(verts), torch.from_numpy(faces), torch.from_numpy(K), H, W, 0.01)
    np.testing.assert_array_equal(fid, fid_t.numpy())


def test_vertex_alpha_mode_masks_like_the_original():
    rgb, depth = box_on_plane(48, 64)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    w2c = _orbit(20, 5)
    face = render_mesh(build_dwmesh(rgb, depth, K, config=MeshConfig(filter="angle")), K, w2c, backend="numba")
    vert = render_mesh(build_dwmesh(rgb, depth, K, config=MeshConfig(filter="angle", alpha_mode="vertex")), K, w2c,
                       backend="numba")
    # per-vertex alpha erodes the known region around every occluded face
    assert vert.mask.sum() < face.mask.sum()
    assert (vert.mask & ~face.mask).sum() == 0


@pytest.mark.parametrize("filt, alpha, soft", [("step", "face", False), ("step", "face", True), ("step", "vertex", True),
                                               ("grazing", "face", False), ("angle", "face", False),
                                               ("boundary", "face", False), ("angle", "vertex", False)])
def test_torch_recon_path_matches_numba(filt, alpha, soft):
    """The GPU path (mesh built, rendered and shaded in torch) gives the numba path's outputs exactly, on exact
    depth and (``soft``) on blurred, noisy depth that the step filter's pre-pass denoises and snaps."""
    from scipy.ndimage import gaussian_filter

    from ex4d.example import make_example
    from ex4d.recon import ReconConfig, render_novel_views
    from ex4d.trajectory import make_trajectory

    scene = make_example(4, 64, 80)
    depth = scene.depth
    if soft:
        rng = np.random.default_rng(0)
        depth = np.stack([gaussian_filter(d, 2.5) for d in depth]) * (1 + 0.005 * rng.standard_normal(depth.shape))
        depth = depth.astype(np.float32)
    traj = make_trajectory("orbit", 4, scene.K, 64, 80, depth0=scene.depth[0], yaw=50, pitch=10)
    mesh = MeshConfig(filter=filt, alpha_mode=alpha)
    a = render_novel_views(scene.frames, depth, scene.K, traj.w2c, traj.K,
                           ReconConfig(mesh=mesh, backend="numba"), progress=False)
    b = render_novel_views(scene.frames, depth, scene.K, traj.w2c, traj.K,
                           ReconConfig(mesh=mesh, backend="torch"), progress=False, device="cpu")
    assert (0.1 if soft else 0.2) < a.mask[1:].mean() < 1.0
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.color, b.color)
    np.testing.assert_array_equal(a.depth, b.depth)


def test_torch_path_in_batches_matches_numba():
    from ex4d.dwmesh import default_far
    from ex4d.example import make_example
    from ex4d.recon import ReconConfig, _render_torch, render_novel_views
    from ex4d.trajectory import make_trajectory

    scene = make_example(5, 48, 64)
    traj = make_trajectory("swing", 5, scene.K, 48, 64, depth0=scene.depth[0], yaw=40)
    a = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, ReconConfig(backend="numba"),
                           progress=False)
    b = _render_torch(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, default_far(scene.depth), ReconConfig(),
                      progress=False, device="cpu", batch=3)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.color, b.color)


def test_parallel_binning_equals_serial_lists():
    from ex4d.render.numba_raster import BAND, _bin

    rng = np.random.default_rng(0)
    F, H = 5000, 100
    y0 = rng.integers(0, H, F)
    box = np.stack([np.zeros(F), rng.integers(-1, 2, F), y0, np.minimum(H - 1, y0 + rng.integers(0, 30, F))], 1)
    box = box.astype(np.int32)
    start, ids = _bin(box, H)
    nb = (H + BAND - 1) // BAND
    lists = [[f for f in range(F) if box[f, 1] >= box[f, 0] and box[f, 2] // BAND <= b <= box[f, 3] // BAND]
             for b in range(nb)]
    assert start.tolist() == np.cumsum([0] + [len(x) for x in lists]).tolist()
    assert ids.tolist() == [f for x in lists for f in x]


def test_quantize_rgb_equals_numpy_rounding():
    from ex4d.render.numba_raster import quantize_rgb

    c = np.random.default_rng(1).random((16, 20, 3), dtype=np.float32) * 1.2 - 0.1
    c[0, :, 0] = (np.arange(20, dtype=np.float32) + 0.5) / 255  # exact halves
    out = np.empty(c.shape, np.uint8)
    quantize_rgb(c, out)
    np.testing.assert_array_equal(out, np.clip(c * 255.0 + 0.5, 0, 255).astype(np.uint8))
