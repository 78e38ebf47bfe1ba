"""The recon stage on in-memory arrays: frames + depth + cameras → novel-view colour, known-mask and depth.

For each frame t, the DW-Mesh of (frames[t], depth[t]) is rendered with the
t-th camera of the trajectory. World coordinates are the source camera's (so
each frame's mesh lives in its own source camera frame, as in the original).
A frame whose camera equals the source camera is the source frame itself with
a full mask (the original does this for frame 0).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .cameras import check_intrinsics, check_w2c
from .dwmesh import DWMesh, MeshConfig, build_dwmesh, default_far
from .errors import Ex4dError, check
from .render import BACKENDS, default_backend, render_mesh
from .render.numba_raster import quantize_rgb

__all__ = ["ReconConfig", "ReconResult", "render_novel_views", "check_frames_depth"]


@dataclass(frozen=True)
class ReconConfig:
    """Options of the recon stage (saved in config.json)."""

    mesh: MeshConfig = field(default_factory=MeshConfig)
    backend: str | None = None      #: numba | torch; None = torch on a CUDA GPU, else numba
    near: float = 1e-3              #: near plane (scene units)
    copy_source_view: bool = True   #: frames whose camera is the source camera copy the input frame

    def __post_init__(self):
        check(self.backend is None or self.backend in BACKENDS,
              f"unknown render backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        check(self.near > 0, f"near must be > 0, got {self.near}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReconConfig":
        d = dict(d)
        d["mesh"] = MeshConfig(**d.get("mesh", {}))
        return cls(**d)


@dataclass(frozen=True)
class ReconResult:
    """The recon stage's output.

    =======  ===================  =====================================================
    field    shape, dtype         meaning
    =======  ===================  =====================================================
    color    [T, H, W, 3] uint8   novel-view RGB, 0 where unknown
    mask     [T, H, W] bool       True = known (rendered from a valid DW-Mesh face)
    depth    [T, H, W] float32    z-depth of the nearest scene surface in the new view
                                  (inf: none, or the DW-Meshes' border walls / back cap)
    w2c      [T, 4, 4] float64    OpenCV world-to-camera of each output frame
    K        [T, 3, 3] float64    intrinsics of each output frame
    far      float                depth of the DW-Meshes' border ring and back cap
    timings  dict                 seconds spent building meshes and rendering
    =======  ===================  =====================================================
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    w2c: np.ndarray
    K: np.ndarray
    far: float
    timings: dict


def check_frames_depth(frames: np.ndarray, depth: np.ndarray) -> None:
    """Raise Ex4dError unless frames [T,H,W,3] uint8 and depth [T,H,W] (finite, > 0) match."""
    check(isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3,
          f"frames must be [T, H, W, 3], got shape {getattr(frames, 'shape', None)}")
    check(frames.dtype == np.uint8, f"frames must be uint8, got {frames.dtype}")
    check(isinstance(depth, np.ndarray) and depth.shape == frames.shape[:3],
          f"depth must be [T, H, W] = {list(frames.shape[:3])} to match the frames, got {getattr(depth, 'shape', None)}")
    finite = np.isfinite(depth)
    if not finite.all():
        t = int(np.argwhere(~finite)[0, 0])
        raise Ex4dError(f"depth frame {t} has {int((~finite[t]).sum())} non-finite values; "
                        "fix the depth file (NaN/inf are not valid depths)")
    if depth.min() <= 0:
        t = int(np.argwhere(depth <= 0)[0, 0])
        raise Ex4dError(f"depth frame {t} has {int((depth[t] <= 0).sum())} values ≤ 0; depth must be > 0 "
                        "(is it disparity? then pass --depth-kind disparity)")


def _is_source_camera(w2c: np.ndarray, K_out: np.ndarray, K: np.ndarray) -> bool:
    return bool(np.allclose(w2c, np.eye(4), atol=1e-9) and np.allclose(K_out, K, atol=1e-9))


def render_novel_views(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray,
                       K_out: np.ndarray | None = None, config: ReconConfig | None = None,
                       progress: bool = True, on_mesh: Callable[[int, DWMesh], None] | None = None,
                       device=None, far: float | None = None) -> ReconResult:
    """Render every frame's DW-Mesh with its new camera.

    Args:
        frames: [T, H, W, 3] uint8 RGB input frames.
        depth: [T, H, W] float32 z-depth of each frame (> 0).
        K: [3, 3] source intrinsics (pixels).
        w2c: [T, 4, 4] OpenCV world-to-camera of the new views (world = source camera).
        K_out: [T, 3, 3] or [3, 3] intrinsics of the new views (default: K).
        config: mesh and renderer options.
        progress: show a progress bar.
        on_mesh: called with (t, mesh) after each frame's mesh is built (e.g. to save it).
        device: torch device for the torch backend.
        far: depth of the DW-Meshes' border ring and back cap; default
            ``default_far(depth)``. Give the whole clip's value when rendering
            a long clip chunk by chunk, so every chunk builds the same meshes.
    """
    config = config or ReconConfig()
    check_frames_depth(frames, depth)
    K = check_intrinsics(K)
    w2c = check_w2c(w2c, "trajectory")
    T, H, W = depth.shape
    check(w2c.shape[0] == T, f"the trajectory has {w2c.shape[0]} cameras but there are {T} frames")
    K_out = np.asarray(K if K_out is None else K_out, dtype=np.float64)
    if K_out.ndim == 2:
        K_out = np.broadcast_to(K_out, (T, 3, 3))
    check(K_out.shape == (T, 3, 3), f"output intrinsics must be [T, 3, 3] with T={T}, got {K_out.shape}")
    for t in range(T):
        check_intrinsics(K_out[t], f"output intrinsics of frame {t}")

    backend = config.backend or default_backend()
    far = default_far(depth, config.mesh.far_scale) if far is None else float(far)
    if backend == "torch" and on_mesh is None:
        return _render_torch(frames, depth, K, w2c, K_out, far, config, progress, device)
    color = np.zeros((T, H, W, 3), dtype=np.uint8)
    mask = np.zeros((T, H, W), dtype=bool)
    out_depth = np.full((T, H, W), np.inf, dtype=np.float32)
    t_mesh = t_render = 0.0
    iterator = range(T)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="render", unit="frame", leave=False)
    for t in iterator:
        if config.copy_source_view and _is_source_camera(w2c[t], K_out[t], K):
            color[t], mask[t], out_depth[t] = frames[t], True, depth[t]
            if on_mesh is None:
                continue
        t0 = time.perf_counter()
        mesh = build_dwmesh(frames[t], depth[t], K, far=far, config=config.mesh)
        t1 = time.perf_counter()
        t_mesh += t1 - t0
        if on_mesh is not None:
            on_mesh(t, mesh)
        if config.copy_source_view and _is_source_camera(w2c[t], K_out[t], K):
            continue
        r = render_mesh(mesh, K_out[t], w2c[t], H, W, backend=backend, near=config.near, device=device)
        t_render += time.perf_counter() - t1
        quantize_rgb(r.color, color[t])
        mask[t] = r.mask
        # Depth of scene surfaces only: the border walls and back cap are not part of the scene.
        out_depth[t] = np.where(r.face_id < mesh.num_grid_faces, r.depth, np.inf)
    return ReconResult(color=color, mask=mask, depth=out_depth, w2c=np.array(w2c), K=np.array(K_out), far=far,
                       timings={"mesh_s": t_mesh, "render_s": t_render, "backend": backend})


_FRAME_TEMP_BYTES = 0.6 * 1024**3  # GPU temporaries of one 512² frame (mesh + raster), roughly


def _frame_batch(dev, H: int, W: int) -> int:
    """Frames per GPU batch: up to 25 (more gains < 2 % on an H200), within half the free GPU memory.

    One at a time on a CPU (the numba backend is the fast CPU path).
    """
    import torch

    if dev.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(dev)
    per_frame = _FRAME_TEMP_BYTES * (H * W) / (512 * 512)
    return int(max(1, min(25, 0.5 * free // per_frame)))


def _to_host(t):
    """NumPy copy of a tensor; from a GPU through page-locked memory (pageable copies ran at ~1.3 GB/s)."""
    import torch

    if t.device.type != "cuda":
        return t.numpy()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t)
    return out.numpy()


def _render_torch(frames, depth, K, w2c, K_out, far, config: ReconConfig, progress: bool, device,
                  batch: int | None = None) -> ReconResult:
    """The torch path: meshes built, rendered and shaded on ``device`` in batches; one host copy at the end."""
    import torch

    from .render.torch_mesh import build_dwmesh_torch, render_torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    T, H, W = depth.shape
    if batch is None:
        batch = _frame_batch(dev, H, W)
    frames_t = torch.from_numpy(np.ascontiguousarray(frames)).to(dev)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth)).to(dev)
    color = torch.zeros((T, H, W, 3), dtype=torch.uint8, device=dev)
    mask = torch.zeros((T, H, W), dtype=torch.bool, device=dev)
    out_depth = torch.full((T, H, W), float("inf"), dtype=torch.float32, device=dev)
    todo = []
    for t in range(T):
        if config.copy_source_view and _is_source_camera(w2c[t], K_out[t], K):
            color[t], mask[t], out_depth[t] = frames_t[t], True, depth_t[t]
        else:
            todo.append(t)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="render", unit="frame", leave=False)
    t_mesh = t_render = 0.0
    for i in range(0, len(todo), batch):
        idx = todo[i : i + batch]
        sel = torch.tensor(idx, device=dev)
        t0 = time.perf_counter()
        mesh = build_dwmesh_torch(frames_t[sel], depth_t[sel], K, far, config.mesh)
        sync()
        t1 = time.perf_counter()
        c, m, d, _ = render_torch(mesh, K_out[idx], w2c[idx], H, W, config.near)
        color[sel] = (c * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
        mask[sel] = m
        out_depth[sel] = d
        sync()
        t_mesh += t1 - t0
        t_render += time.perf_counter() - t1
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return ReconResult(color=_to_host(color), mask=_to_host(mask), depth=_to_host(out_depth),
                       w2c=np.array(w2c), K=np.array(K_out), far=far,
                       timings={"mesh_s": t_mesh, "render_s": t_render, "backend": f"torch:{dev.type}"})
