import numpy as np
import pytest

from ex4d.cameras import (check_intrinsics, check_w2c, default_intrinsics, fov_from_intrinsics, intrinsics_from_fov,
                          invert_w2c, look_at_w2c, opencv_to_opengl_w2c, opengl_to_opencv_w2c, project_points,
                          scale_intrinsics, unproject_depth)
from ex4d.errors import Ex4dError


def test_default_intrinsics_match_original_at_512_and_keep_fov():
    K = default_intrinsics(512, 512)
    assert K[0, 0] == 500 and K[1, 1] == 500 and K[0, 2] == 256 and K[1, 2] == 256
    assert fov_from_intrinsics(default_intrinsics(1024, 576), 1024, 576) == pytest.approx(
        fov_from_intrinsics(K, 512, 512))
    assert fov_from_intrinsics(intrinsics_from_fov(640, 480, 70.0), 640, 480) == pytest.approx(70.0)


def test_unproject_project_round_trip():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 20, (30, 40))
    K = default_intrinsics(40, 30)
    pts = unproject_depth(depth, K)
    w2c = look_at_w2c([0.3, -0.2, 0.1], [0, 0, 5])
    c2w = invert_w2c(w2c)
    world = pts @ c2w[:3, :3].T + c2w[:3, 3]  # points expressed in a camera-independent frame
    uv, z = project_points(world, K, w2c)
    uv0, z0 = project_points(pts, K)
    v, u = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(uv0[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv0[..., 1], v, atol=1e-9)
    np.testing.assert_allclose(z0, depth)
    assert np.all(np.isfinite(uv)) and np.all(z > 0)


def test_opengl_conversion_round_trip_and_look_at_axes():
    w2c = look_at_w2c([1.0, -0.5, 0.2], [0, 0, 3])
    np.testing.assert_allclose(opengl_to_opencv_w2c(opencv_to_opengl_w2c(w2c)), w2c)
    R = w2c[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    # the target is straight ahead
    uv, z = project_points(np.array([0, 0, 3.0]), default_intrinsics(64, 64), w2c)
    np.testing.assert_allclose(uv, [32, 32], atol=1e-9)
    np.testing.assert_allclose(invert_w2c(w2c) @ w2c, np.eye(4), atol=1e-12)


def test_scale_intrinsics_keeps_pixel_centres():
    K = default_intrinsics(100, 50)
    K2 = scale_intrinsics(K, 2.0, 2.0)
    # a point projecting to pixel centre (10, 20) lands on (20.5, 40.5) after 2× upsampling
    X = np.array([(10 - K[0, 2]) / K[0, 0], (20 - K[1, 2]) / K[1, 1], 1.0])
    uv, _ = project_points(X, K2)
    np.testing.assert_allclose(uv, [20.5, 40.5])


@pytest.mark.parametrize("bad", [np.eye(2), np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1.0]]), np.full((3, 3), np.nan)])
def test_check_intrinsics_errors(bad):
    with pytest.raises(Ex4dError):
        check_intrinsics(bad)


def test_check_w2c_errors():
    with pytest.raises(Ex4dError, match="orthonormal"):
        check_w2c(np.diag([2.0, 1, 1, 1]))
    with pytest.raises(Ex4dError, match="shape"):
        check_w2c(np.zeros((3, 3)))
    assert check_w2c(np.eye(4)).shape == (1, 4, 4)
