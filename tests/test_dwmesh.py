import numpy as np
import pytest
import trimesh

from ex4d_testutil import box_on_plane
from ex4d.cameras import default_intrinsics
from ex4d.dwmesh import FILTERS, MeshConfig, build_dwmesh, export_ply, mesh_depth_and_occlusion
from ex4d.errors import Ex4dError


@pytest.mark.parametrize("shape", [(5, 7), (24, 32), (33, 17)])
def test_mesh_is_closed_and_counts(shape):
    H, W = shape
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 3, (H, W))
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    K = default_intrinsics(W, H)
    with_cover = build_dwmesh(rgb, depth, K, config=MeshConfig(sharpen="none"))
    n_occ = int(with_cover.occluded[: with_cover.num_grid_faces].sum())
    assert with_cover.num_cover == n_occ  # each occluded grid face has a cover face
    assert with_cover.vertices.shape == (H * W + 2 * (H + W) + 5 + 3 * n_occ, 3)
    mesh = with_cover.without_cover()
    assert mesh.vertices.shape == (H * W + 2 * (H + W) + 5, 3)
    assert mesh.faces.dtype == np.int32 and mesh.occluded.shape == (mesh.faces.shape[0],)
    assert np.array_equal(mesh.faces, build_dwmesh(rgb, depth, K, config=MeshConfig(sharpen="none", cover="off")).faces)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.is_volume
    assert tm.volume > 0
    # every edge shared by exactly two faces
    edges = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)
    # one vertex per pixel, at its own depth; walls and cap are occluded
    np.testing.assert_allclose(mesh.vertices[: H * W, 2], depth.ravel(), rtol=1e-6)
    assert mesh.occluded[mesh.num_grid_faces:].all()
    # by default the vertices sit at the denoised / sharpened depth the flags were decided on
    default = build_dwmesh(rgb, depth, K)
    md, occ = mesh_depth_and_occlusion(depth, K, MeshConfig(), rgb)
    np.testing.assert_allclose(default.vertices[: H * W, 2], md.ravel(), rtol=1e-6)
    assert np.array_equal(default.occluded[: default.num_grid_faces], occ)


@pytest.mark.parametrize("filt", FILTERS)
def test_filters_flag_discontinuities_only(filt):
    rgb, depth = box_on_plane(64, 80)
    H, W = depth.shape
    mesh = build_dwmesh(rgb, depth, default_intrinsics(W, H), config=MeshConfig(filter=filt))
    occ = mesh.occluded[: mesh.num_grid_faces].reshape(2, H - 1, W - 1).any(axis=0)
    jump = np.zeros((H - 1, W - 1), bool)  # quads whose corners have different depths
    q = np.stack([depth[:-1, :-1], depth[1:, :-1], depth[:-1, 1:], depth[1:, 1:]])
    jump = q.max(0) != q.min(0)
    assert occ[jump].mean() > 0.9, "faces across the box edge must be occluded"
    if filt == "grazing":  # its 3×3 median pre-filter rounds the box's corners by a pixel
        from scipy.ndimage import binary_dilation
        jump = binary_dilation(jump, np.ones((3, 3), bool))
    assert not occ[~jump].any(), "flat faces must stay valid"


def test_grazing_filter_catches_blurred_edges_that_angle_misses():
    from scipy.ndimage import gaussian_filter

    rgb, depth = box_on_plane(96, 128, fg=2.0, bg=6.0)
    H, W = depth.shape
    K = default_intrinsics(W, H)
    soft = gaussian_filter(depth, 3.0)
    ramp = (np.abs(soft - depth) > 0.02 * depth)[:-1, :-1]  # pixels whose depth the blur changed noticeably
    flags = {}
    for filt in ("angle", "grazing"):
        m = build_dwmesh(rgb, soft, K, config=MeshConfig(filter=filt))
        flags[filt] = m.occluded[: m.num_grid_faces].reshape(2, H - 1, W - 1).any(axis=0)
    assert flags["grazing"][ramp].mean() > flags["angle"][ramp].mean() + 0.2


def test_grazing_prefilter_ignores_depth_noise_but_keeps_edges():
    """Pixel noise of depth estimates must not read as edges (without the median most faces get flagged)."""
    rgb, depth = box_on_plane(128, 160, fg=2.0, bg=5.0)
    H, W = depth.shape
    K = default_intrinsics(W * 4, H * 4)  # a long focal: small pixel footprint, steep noise slopes
    K[0, 2], K[1, 2] = W / 2, H / 2
    noisy = depth * (1 + 0.005 * np.random.default_rng(0).standard_normal(depth.shape))
    flat = np.ones((H - 1, W - 1), bool)
    flat[H // 4 - 3 : 3 * H // 4 + 3, W // 4 - 3 : W // 2 + 3] = False
    flat[H // 4 + 3 : 3 * H // 4 - 3, W // 4 + 3 : W // 2 - 3] = True
    share = {}
    for pre in (0, 3):
        m = build_dwmesh(rgb, noisy, K, config=MeshConfig(filter="grazing", prefilter=pre))
        occ = m.occluded[: m.num_grid_faces].reshape(2, H - 1, W - 1).any(axis=0)
        share[pre] = occ[flat].mean()
        edge = occ[H // 4 + 2 : 3 * H // 4 - 2, W // 4 - 1]  # quads spanning the box's left edge
        assert edge.mean() > 0.9, "the box's left edge stays occluded"
    assert share[3] < 0.05 < share[0], share


def test_vertex_alpha_mode_zeroes_vertices_of_occluded_faces():
    rgb, depth = box_on_plane()
    H, W = depth.shape
    m = build_dwmesh(rgb, depth, default_intrinsics(W, H), config=MeshConfig(filter="angle", alpha_mode="vertex"))
    assert m.vertex_alpha is not None
    bad = np.unique(m.faces[m.occluded])
    assert np.all(m.vertex_alpha[bad] == 0) and np.all(m.colors[bad] == 0)
    good = np.setdiff1d(np.arange(m.vertices.shape[0]), bad)
    assert np.all(m.vertex_alpha[good] == 1)


def test_bad_inputs():
    rgb, depth = box_on_plane()
    H, W = depth.shape
    K = default_intrinsics(W, H)
    for bad in (np.where(depth > 4, np.nan, depth), -depth, np.zeros_like(depth)):
        with pytest.raises(Ex4dError, match="finite and > 0"):
            build_dwmesh(rgb, bad, K)
    with pytest.raises(Ex4dError, match="rgb"):
        build_dwmesh(rgb[:-1], depth, K)
    with pytest.raises(Ex4dError, match="far"):
        build_dwmesh(rgb, depth, K, far=1.0)
    with pytest.raises(Ex4dError, match="filter"):
        MeshConfig(filter="nope")


def test_export_ply(tmp_path):
    rgb, depth = box_on_plane(8, 10)
    m = build_dwmesh(rgb, depth, default_intrinsics(10, 8))
    assert m.num_cover > 0
    export_ply(m, tmp_path / "m.ply")  # the closed mesh, without its cover faces
    tm = trimesh.load(tmp_path / "m.ply", process=False)
    assert tm.vertices.shape[0] == m.vertices.shape[0] - 3 * m.num_cover and tm.is_watertight
    np.testing.assert_array_equal(tm.visual.vertex_colors[:80, :3].reshape(8, 10, 3), rgb)


@pytest.mark.parametrize("shape", [(3, 3), (5, 7), (64, 80)])
def test_median3_equals_scipy(shape):
    from scipy.ndimage import median_filter

    from ex4d.dwmesh import median3

    a = np.random.default_rng(1).integers(0, 5, shape).astype(np.float64)  # many ties
    np.testing.assert_array_equal(median3(a), median_filter(a, 3, mode="nearest"))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (3, 5, 7), (2, 64, 80)])
def test_torch_median3_equals_scipy(shape):
    """The torch selection network (GPU recon) equals scipy's 3×3 median on every image of a batch."""
    import torch
    from scipy.ndimage import median_filter

    from ex4d.render.torch_mesh import median3_torch

    a = np.random.default_rng(2).integers(0, 5, shape).astype(np.float64)  # many ties
    a[0, 0, 0] = np.inf  # the far plane stands for missing depth
    got = median3_torch(torch.from_numpy(a)).numpy()
    np.testing.assert_array_equal(got, np.stack([median_filter(x, 3, mode="nearest") for x in a]))


def test_mesh_arrays_are_c_contiguous():
    """Renderers take the arrays as they are: a non-C-ordered array would be copied on every render."""
    rgb, depth = box_on_plane(8, 10)
    m = build_dwmesh(rgb, depth, default_intrinsics(10, 8))
    for name in ("vertices", "faces", "colors", "occluded"):
        assert getattr(m, name).flags["C_CONTIGUOUS"], name


def test_cli_mesh_flags_reach_the_config():
    from ex4d.cli import _run_config, build_parser

    args = build_parser().parse_args(["recon", "--example", "--out", "x", "--filter", "step", "--sharpen", "none",
                                      "--soft", "off", "--step-min-angle", "50", "--cover", "off"])
    mesh = _run_config(args, with_fill=False).recon.mesh
    assert (mesh.filter, mesh.sharpen, mesh.soft_mode, mesh.step_min_deg) == ("step", "none", "off", 50.0)
    assert mesh.cover == "off" and not mesh.use_cover
    args = build_parser().parse_args(["recon", "--example", "--out", "x", "--filter", "angle"])
    mesh = _run_config(args, with_fill=False).recon.mesh
    assert mesh.filter == "angle" and mesh.sharpen_mode == "none"   # the original's rule stays as it was
    assert not mesh.use_cover                                       # … and its geometry too
    args = build_parser().parse_args(["recon", "--example", "--out", "x", "--filter", "angle", "--cover", "on"])
    assert _run_config(args, with_fill=False).recon.mesh.use_cover


def test_cover_faces_sit_at_the_nearest_corner_and_hide_the_unsampled_wedge():
    """A near square seen head-on over a far wall: each occluded face's cover corners lie on their own pixel
    rays at the face's smallest depth; from the side, a ray that passes in front of the slanted step faces,
    through the wedge between the square's last pixel and the wall's first, is unknown with covers (the
    square may reach into that wedge) and shows the wall without them."""
    from ex4d.render import render_mesh

    H = W = 48
    depth = np.full((H, W), 3.0)
    depth[16:32, 16:32] = 2.0
    rgb = np.full((H, W, 3), 200, np.uint8)
    K = default_intrinsics(W, H)
    m = build_dwmesh(rgb, depth, K)
    occ = np.nonzero(m.occluded[: m.num_grid_faces])[0]
    assert m.num_cover == occ.size > 0
    cover = m.vertices[-3 * m.num_cover:].reshape(-1, 3, 3).astype(np.float64)
    corners = m.faces[occ]
    zmin = depth.reshape(-1)[corners].min(axis=1)
    np.testing.assert_allclose(cover[..., 2], np.repeat(zmin[:, None], 3, 1), rtol=1e-6)
    u, v = corners % W, corners // W  # still on each corner's pixel ray
    np.testing.assert_allclose(cover[..., 0] / cover[..., 2], (u - K[0, 2]) / K[0, 0], atol=1e-6)
    np.testing.assert_allclose(cover[..., 1] / cover[..., 2], (v - K[1, 2]) / K[1, 1], atol=1e-6)
    assert m.occluded[-m.num_cover:].all() and not m.colors[-3 * m.num_cover:].any()
    off = build_dwmesh(rgb, depth, K, config=MeshConfig(cover="off"))
    from ex4d.eval.benchmark import range_cameras

    for yaw in (-40.0, 20.0):
        w2c = range_cameras(yaw, yaw, 1, 2.2, 0.0)[0][0]
        on_r, off_r = render_mesh(m, K, w2c, backend="numba"), render_mesh(off, K, w2c, backend="numba")
        assert (on_r.mask <= off_r.mask).all()  # covers only ever hide
        hidden = off_r.mask & ~on_r.mask
        assert hidden.sum() > 5
        # and what they hide is wall seen past the square's edge, never the square itself
        src_z = off.vertices[off.faces[off_r.face_id[hidden]], 2]
        np.testing.assert_allclose(src_z, 3.0, rtol=1e-6)
    # the GPU-path twin renders the same pixels
    torch = pytest.importorskip("torch")
    from ex4d.render.torch_mesh import build_dwmesh_torch, render_torch

    tm = build_dwmesh_torch(torch.from_numpy(rgb[None]), torch.from_numpy(depth[None]), K, m.far, MeshConfig())
    color, mask, _, _ = render_torch(tm, K[None], w2c[None], H, W)
    assert np.array_equal(mask[0].numpy(), on_r.mask)


def test_with_cover_adds_the_covers_of_the_final_flags():
    """``with_cover`` (for meshes whose flags change after building, as the stereo eye's) gives the covers that
    ``build_dwmesh`` builds itself, for exactly the occluded grid faces the mesh has then."""
    import dataclasses

    from ex4d.dwmesh import with_cover

    rgb, depth = box_on_plane(32, 40)
    K = default_intrinsics(40, 32)
    built = build_dwmesh(rgb, depth, K)
    plain = build_dwmesh(rgb, depth, K, config=MeshConfig(cover="off"))
    added = with_cover(plain)
    assert added.num_cover == built.num_cover > 0
    assert np.array_equal(added.faces, built.faces) and np.array_equal(added.occluded, built.occluded)
    np.testing.assert_allclose(added.vertices, built.vertices, rtol=1e-6, atol=1e-6)
    with pytest.raises(Ex4dError, match="already"):
        with_cover(built)
    fewer = plain.occluded.copy()
    fewer[: plain.num_grid_faces] = False  # every grid face valid: no covers
    assert with_cover(dataclasses.replace(plain, occluded=fewer)).num_cover == 0
