"""Render a DW-Mesh from a new camera: colour, known-mask and depth.

Two kernels with one contract (they agree on every pixel, see the tests):
``numba`` (CPU default) and ``torch`` (reference, and the GPU path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cameras import check_intrinsics
from ..dwmesh import DWMesh
from ..errors import check

__all__ = ["Render", "render_mesh", "BACKENDS", "default_backend", "ALPHA_THRESHOLD"]

BACKENDS = ("numba", "torch")
#: The original thresholds interpolated 8-bit alpha at > 125 (alpha_mode="vertex").
ALPHA_THRESHOLD = 125.0 / 255.0


@dataclass(frozen=True)
class Render:
    """One rendered view.

    =========  ================  ==================================================
    field      shape, dtype      meaning
    =========  ================  ==================================================
    color      [H, W, 3] float32  RGB in [0, 1]; 0 where ``mask`` is False
    mask       [H, W] bool        True = known (nearest surface is a valid face)
    depth      [H, W] float32     z-depth of the nearest surface, inf where none
    face_id    [H, W] int32       nearest face, −1 where none
    =========  ================  ==================================================
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    face_id: np.ndarray


def default_backend() -> str:
    """``torch`` when a CUDA GPU is available, else ``numba``."""
    try:
        import torch

        if torch.cuda.is_available():
            return "torch"
    except ImportError:  # pragma: no cover
        pass
    return "numba"


def _transform(xp, verts, w2c):
    """Camera-space vertices [V, 3] float64 = R·X + t, with elementwise operations in a fixed order.

    Written out (no BLAS matmul, whose FMA use varies) so that this torch path
    and :func:`~ex4d.render.numba_raster.transform_numba` give bit-identical
    vertices, and so the two rasterizers agree exactly.
    """
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    rows = [((x * w2c[i, 0] + y * w2c[i, 1]) + z * w2c[i, 2]) + w2c[i, 3] for i in range(3)]
    return xp.stack(rows, 1)


def render_mesh(mesh: DWMesh, K: np.ndarray, w2c: np.ndarray, height: int | None = None, width: int | None = None,
                backend: str | None = None, near: float = 1e-3, device=None) -> Render:
    """Render ``mesh`` (in world = source-camera coordinates) with camera (K [3,3], w2c [4,4] OpenCV).

    ``height``/``width`` default to the mesh's frame size. ``backend`` is
    ``numba`` or ``torch`` (default: :func:`default_backend`); ``device`` is
    the torch device for the torch backend (default: CUDA if available).
    """
    backend = backend or default_backend()
    check(backend in BACKENDS, f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    K = check_intrinsics(K)
    w2c = np.asarray(w2c, dtype=np.float64)
    check(w2c.shape == (4, 4), f"w2c must be [4, 4], got {w2c.shape}")
    H = int(height or mesh.height)
    W = int(width or mesh.width)
    if backend == "numba":
        from .numba_raster import rasterize_numba, transform_numba

        verts = transform_numba(mesh.vertices, np.ascontiguousarray(w2c))
        face_id, inv_depth, bary = rasterize_numba(verts, mesh.faces, K, H, W, near)
    else:
        import torch

        from .torch_raster import rasterize_torch

        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        v = torch.from_numpy(mesh.vertices).to(dev, torch.float64)
        verts = _transform(torch, v, torch.from_numpy(w2c).to(dev))
        fid, inv_depth, bary = rasterize_torch(verts, torch.tensor(mesh.faces, device=dev), torch.from_numpy(K).to(dev),
                                               H, W, near)
        face_id, inv_depth, bary = fid.cpu().numpy(), inv_depth.cpu().numpy(), bary.cpu().numpy()
    with np.errstate(divide="ignore"):
        depth = np.where(face_id >= 0, 1.0 / inv_depth, np.inf).astype(np.float32)
    from .numba_raster import shade_numba

    alpha = mesh.vertex_alpha if mesh.vertex_alpha is not None else np.zeros(0, np.float32)
    color, mask = shade_numba(face_id, bary, mesh.faces, mesh.colors, mesh.occluded, alpha,
                              np.float32(ALPHA_THRESHOLD))
    return Render(color=color, mask=mask, depth=depth, face_id=face_id)
