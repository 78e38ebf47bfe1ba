"""Simulated masks: (condition, mask, target) training triples from a monocular clip with depth.

EX-4D trains on monocular videos, so the "novel view" a model learns to
complete must be simulated. The paper calls this its simulated masking
strategy and gives no details; this module is our design.

Rendering masks (the round trip)
--------------------------------
For frame t with z-depth D_t and a sampled novel camera w2c_t (world = the
source camera):

1. build the DW-Mesh of (frame_t, D_t) and render it at w2c_t: colour, known
   mask and depth of the novel view, exactly as ``ex4d recon`` does at
   inference (same mesh filter, same rasterizer);
2. build a DW-Mesh from that novel render (its colour and depth, in the novel
   camera's frame); faces touching a pixel that was unknown in the novel view
   are flagged occluded, so nothing unknown can come back as known;
3. render this second mesh at the source camera (``w2c = c2w_t``) and keep
   the pixels that come back known *and* show the same surface as the source
   (back-rendered depth within ``depth_tolerance`` of D_t; this catches a
   surface seen in the novel view that lies behind the source pixel).

A source pixel survives exactly when its surface is visible from the novel
camera (in frame, unoccluded, not at a grazing angle), so the mask has the
shapes and the boundary behaviour of a real novel-view render: disocclusion
bands beside depth edges, the side of the frame that leaves the view,
stretched "rubber" faces removed by the same filter. Condition = source ×
mask, target = source: a pair with exact ground truth.

Tracking masks (temporal consistency)
-------------------------------------
* ``path``: one smooth camera path per clip (an eased orbit from the source
  view to a sampled pose, like ``--trajectory orbit`` at inference), with the
  round trip done per frame. The holes grow smoothly with the camera and
  follow the scene's geometry frame by frame.
* ``flow``: one fixed novel camera (the sampled pose); the round trip is
  done on an anchor frame only and the mask is carried to every other frame
  along OpenCV Farnebäck optical flow (no weights), so the holes stick to
  the moving content, as they do when a fixed novel camera films a dynamic
  scene. When the source camera moves (source poses given), the fixed
  camera is fixed in the *world* and every frame gets its own round trip
  with it (relative to that frame's source camera), as a world-locked shot.
* ``mixed`` (default): per clip, ``path`` with probability
  ``path_probability``, else ``flow``.

Sampled cameras (``sample_camera``): an orbit around the subject (pivot =
median depth of frame 0's centre) with yaw magnitude uniform in
``yaw_range`` (up to 90°, either side), pitch uniform in ±``pitch_max``, and,
with probability ``dolly_probability``, a dolly uniform in ±``dolly_max``;
with probability ``swing_probability`` the path swings there and back
(``swing``) instead. Frame 0 of a path is the source view, so its mask is full,
as at inference. Masks with less than ``min_unknown`` or more than
``max_unknown`` of the pixels unknown are re-sampled (``tries`` times).

The random per-frame erosion the original applies (kernel 2–8 px) is done
when the data is loaded (``ex4d.train.dataset``), not here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..cameras import check_intrinsics, invert_w2c
from ..dwmesh import DWMesh, MeshConfig, build_dwmesh, default_far
from ..errors import check
from ..recon import check_frames_depth
from ..render import render_mesh
from ..trajectory import make_trajectory

__all__ = [
    "MaskConfig",
    "CameraSample",
    "SimulatedMasks",
    "TRACKING_MODES",
    "sample_camera",
    "camera_path",
    "round_trip",
    "render_masks",
    "propagate_masks",
    "simulate_masks",
    "apply_mask",
    "mask_preview",
]

TRACKING_MODES = ("path", "flow", "mixed")


@dataclass(frozen=True)
class MaskConfig:
    """How simulated masks are made (saved in every sample's meta.json).

    =====================  ============  =========================================================
    field                  default       meaning
    =====================  ============  =========================================================
    ``tracking``           "mixed"       path | flow | mixed (see the module docstring)
    ``path_probability``   0.7           mixed: share of clips done with per-frame round trips
    ``yaw_range``          (10, 90)      |yaw| of the sampled camera, degrees (either side)
    ``pitch_max``          30            pitch uniform in ±pitch_max, degrees
    ``dolly_probability``  0.3           share of cameras that also dolly
    ``dolly_max``          0.3           dolly uniform in ±dolly_max (fraction of the pivot distance)
    ``swing_probability``  0.2           share of paths that swing there and back (path mode)
    ``ease``               "smoothstep"  progress easing of the path
    ``depth_tolerance``    0.03          relative depth difference still "the same surface"
    ``min_unknown``        0.02          re-sample cameras whose masks hide less than this share
    ``max_unknown``        0.85          ... or more than this share of the pixels
    ``tries``              4             camera samples tried before taking the last one
    ``first_frame_full``   True          frame 0 fully known (the source view, as at inference)
    ``mesh``               MeshConfig()  DW-Mesh filter of both meshes of the round trip
    ``backend``            None          rasterizer: numba | torch (None: torch on CUDA, else numba)
    =====================  ============  =========================================================
    """

    tracking: str = "mixed"
    path_probability: float = 0.7
    yaw_range: tuple[float, float] = (10.0, 90.0)
    pitch_max: float = 30.0
    dolly_probability: float = 0.3
    dolly_max: float = 0.3
    swing_probability: float = 0.2
    ease: str = "smoothstep"
    depth_tolerance: float = 0.03
    min_unknown: float = 0.02
    max_unknown: float = 0.85
    tries: int = 4
    first_frame_full: bool = True
    mesh: MeshConfig = field(default_factory=MeshConfig)
    backend: str | None = None

    def __post_init__(self):
        check(self.tracking in TRACKING_MODES, f"tracking must be one of {TRACKING_MODES}, got {self.tracking!r}")
        lo, hi = (float(v) for v in self.yaw_range)
        object.__setattr__(self, "yaw_range", (lo, hi))
        check(0 <= lo <= hi <= 90, f"yaw_range must satisfy 0 <= lo <= hi <= 90 degrees, got {self.yaw_range}")
        check(0 <= self.pitch_max <= 90, f"pitch_max must be in [0, 90] degrees, got {self.pitch_max}")
        check(0 <= self.dolly_max < 1, f"dolly_max must be in [0, 1), got {self.dolly_max}")
        for name in ("path_probability", "dolly_probability", "swing_probability", "min_unknown", "max_unknown"):
            v = getattr(self, name)
            check(0 <= v <= 1, f"{name} must be in [0, 1], got {v}")
        check(self.min_unknown <= self.max_unknown,
              f"min_unknown ({self.min_unknown}) must not exceed max_unknown ({self.max_unknown})")
        check(self.depth_tolerance > 0, f"depth_tolerance must be > 0, got {self.depth_tolerance}")
        check(int(self.tries) >= 1, f"tries must be >= 1, got {self.tries}")
        if isinstance(self.mesh, dict):
            object.__setattr__(self, "mesh", MeshConfig(**self.mesh))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["yaw_range"] = list(self.yaw_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MaskConfig":
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        check(not unknown, f"unknown MaskConfig keys {unknown}; known: {sorted(names)}")
        if "yaw_range" in d:
            d["yaw_range"] = tuple(d["yaw_range"])
        if "mesh" in d and isinstance(d["mesh"], dict):
            d["mesh"] = MeshConfig(**d["mesh"])
        return cls(**d)


@dataclass(frozen=True)
class CameraSample:
    """One sampled novel camera (degrees; dolly as a fraction of the pivot distance)."""

    tracking: str  #: path | flow
    motion: str    #: orbit | swing
    yaw: float
    pitch: float
    dolly: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimulatedMasks:
    """Masks of one clip.

    =========  ==================  ===============================================
    field      shape, dtype        meaning
    =========  ==================  ===============================================
    mask       [T, H, W] bool      True = known (survives the round trip)
    w2c        [T, 4, 4] float64   the novel camera of each frame (OpenCV, world = source)
    camera     CameraSample        what was sampled
    tries      int                 camera samples drawn
    =========  ==================  ===============================================
    """

    mask: np.ndarray
    w2c: np.ndarray
    camera: CameraSample
    tries: int

    @property
    def unknown_fraction(self) -> float:
        return float(1.0 - self.mask.mean())


# --------------------------------------------------------------------------- cameras


def sample_camera(rng: np.random.Generator, config: MaskConfig = MaskConfig()) -> CameraSample:
    """A random :class:`CameraSample` drawn from ``rng`` as ``config`` says (pure given the generator state)."""
    if config.tracking == "mixed":
        tracking = "path" if rng.random() < config.path_probability else "flow"
    else:
        tracking = config.tracking
    lo, hi = config.yaw_range
    yaw = float(rng.uniform(lo, hi)) * (1.0 if rng.random() < 0.5 else -1.0)
    pitch = float(rng.uniform(-config.pitch_max, config.pitch_max))
    dolly = float(rng.uniform(-config.dolly_max, config.dolly_max)) if rng.random() < config.dolly_probability else 0.0
    motion = "swing" if tracking == "path" and rng.random() < config.swing_probability else "orbit"
    return CameraSample(tracking=tracking, motion=motion, yaw=yaw, pitch=pitch, dolly=dolly)


def camera_path(sample: CameraSample, num_frames: int, K: np.ndarray, depth0: np.ndarray,
                ease: str = "smoothstep") -> np.ndarray:
    """Novel cameras w2c [T, 4, 4] float64 (OpenCV) for ``sample``.

    ``path``: an eased orbit (or swing) from the source view (frame 0 = identity)
    to the sampled pose; ``flow``: the sampled pose on every frame. ``depth0``
    [H, W] z-depth of frame 0 sets the pivot (median depth of its centre).
    """
    H, W = depth0.shape
    end = dict(yaw=sample.yaw, pitch=sample.pitch, dolly=sample.dolly)
    if sample.tracking == "flow":
        traj = make_trajectory("orbit", 2, K, W, H, depth0=depth0, ease="linear", **end)
        return np.repeat(np.asarray(traj.w2c[-1:]), num_frames, axis=0)
    if sample.motion == "swing":
        # swing's yaw is the amplitude (both ways); pitch and dolly ride along as in orbit
        traj = make_trajectory("swing", num_frames, K, W, H, depth0=depth0, ease=ease, **end)
    else:
        traj = make_trajectory("orbit", num_frames, K, W, H, depth0=depth0, ease=ease, **end)
    return np.array(traj.w2c)


# --------------------------------------------------------------------------- the round trip


def _flag_unknown(mesh: DWMesh, unknown: np.ndarray) -> DWMesh:
    """``mesh`` with every grid face that touches an ``unknown`` [H, W] pixel flagged occluded."""
    n_grid = mesh.height * mesh.width
    bad_vertex = np.zeros(mesh.vertices.shape[0], dtype=bool)
    bad_vertex[:n_grid] = unknown.reshape(-1)
    touches = bad_vertex[mesh.faces].any(axis=1)
    return dataclasses.replace(mesh, occluded=mesh.occluded | touches)


def round_trip(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray, far: float | None = None,
               config: MaskConfig = MaskConfig(), device=None) -> tuple[np.ndarray, np.ndarray]:
    """(mask [H, W] bool, novel_mask [H, W] bool): source pixels surviving source → novel → source, and the novel view's.

    Args:
        rgb: [H, W, 3] uint8 source frame.
        depth: [H, W] float z-depth of the source frame (> 0).
        K: [3, 3] intrinsics of source and novel view.
        w2c: [4, 4] OpenCV world-to-camera of the novel view (world = source camera).
        far: depth of the source DW-Mesh's border and cap (default from ``depth``; pass one per clip).
    """
    K = check_intrinsics(K)
    H, W = depth.shape
    if np.allclose(w2c, np.eye(4), atol=1e-9):
        return np.ones((H, W), bool), np.ones((H, W), bool)
    far = default_far(depth, config.mesh.far_scale) if far is None else far
    mesh = build_dwmesh(rgb, depth, K, far=far, config=config.mesh)
    novel = render_mesh(mesh, K, w2c, H, W, backend=config.backend, device=device)
    # Back mesh from the novel render: depth of whatever the novel camera sees (scene, rubber faces, border walls);
    # pixels that see nothing at all (camera outside the closed mesh) get the far depth. All of these but the
    # known pixels are flagged, so only surfaces truly seen from the novel view can come back.
    d_novel = np.where(np.isfinite(novel.depth), novel.depth, far).astype(np.float64)
    d_novel = np.maximum(d_novel, 1e-3 * far)
    color_novel = np.clip(novel.color * 255.0 + 0.5, 0, 255).astype(np.uint8)
    back_mesh = build_dwmesh(color_novel, d_novel, K, far=2.0 * float(d_novel.max()), config=config.mesh)
    back_mesh = _flag_unknown(back_mesh, ~novel.mask)
    back = render_mesh(back_mesh, K, invert_w2c(w2c), H, W, backend=config.backend, device=device)
    same_surface = np.abs(back.depth - depth) <= config.depth_tolerance * depth
    return back.mask & same_surface, novel.mask


def render_masks(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, w2c: np.ndarray,
                 config: MaskConfig = MaskConfig(), frames_to_do=None, device=None) -> np.ndarray:
    """Round-trip masks [T, H, W] bool of every frame t with its camera ``w2c[t]`` ([T, 4, 4]).

    ``frames_to_do``: indices to compute (others stay True); default all.
    """
    check_frames_depth(frames, depth)
    T, H, W = depth.shape
    check(w2c.shape == (T, 4, 4), f"w2c must be [T, 4, 4] with T={T}, got {w2c.shape}")
    far = default_far(depth, config.mesh.far_scale)
    masks = np.ones((T, H, W), dtype=bool)
    for t in (range(T) if frames_to_do is None else frames_to_do):
        masks[t] = round_trip(frames[t], depth[t], K, w2c[t], far, config, device)[0]
    return masks


# --------------------------------------------------------------------------- optical-flow tracking


def _flow(src_gray: np.ndarray, dst_gray: np.ndarray) -> np.ndarray:
    """Farnebäck flow [H, W, 2] float32 from ``src_gray`` to ``dst_gray`` ([H, W] uint8): src(x) ≈ dst(x + flow)."""
    import cv2

    return cv2.calcOpticalFlowFarneback(src_gray, dst_gray, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def propagate_masks(frames: np.ndarray, anchor_mask: np.ndarray, anchor: int = 0) -> np.ndarray:
    """Masks [T, H, W] bool: ``anchor_mask`` [H, W] at frame ``anchor`` carried to every frame along optical flow.

    Frame t's mask is frame t∓1's, sampled where the flow from t to t∓1 points
    (bilinear, then > 0.5); content that enters the frame counts as known.
    """
    import cv2

    T, H, W = frames.shape[:3]
    check(anchor_mask.shape == (H, W), f"anchor_mask must be [H, W] = [{H}, {W}], got {anchor_mask.shape}")
    check(0 <= anchor < T, f"anchor must be a frame index in [0, {T}), got {anchor}")
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    out = np.empty((T, H, W), dtype=bool)
    out[anchor] = anchor_mask
    for direction in (1, -1):
        t = anchor + direction
        while 0 <= t < T:
            prev = t - direction
            flow = _flow(gray[t], gray[prev])
            warped = cv2.remap(out[prev].astype(np.float32), gx + flow[..., 0], gy + flow[..., 1],
                               interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
            out[t] = warped > 0.5
            t += direction
    return out


# --------------------------------------------------------------------------- one clip


def _masks_for(sample: CameraSample, frames, depth, K, config: MaskConfig, device,
               w2c_src=None) -> tuple[np.ndarray, np.ndarray]:
    T = frames.shape[0]
    w2c = camera_path(sample, T, K, depth[0], config.ease)
    if sample.tracking == "flow" and w2c_src is not None:
        # a moving source: the fixed novel camera is fixed in the world (as --path-frame world at inference);
        # relative to each source frame it moves, so every frame gets its own round trip
        from ..cameras import relative_to_source

        w2c = relative_to_source(w2c, w2c_src, "world")
        mask = render_masks(frames, depth, K, w2c, config, device=device)
    elif sample.tracking == "flow":
        anchor = 0
        far = default_far(depth, config.mesh.far_scale)
        first = round_trip(frames[anchor], depth[anchor], K, w2c[anchor], far, config, device)[0]
        mask = propagate_masks(frames, first, anchor)
    else:
        mask = render_masks(frames, depth, K, w2c, config, device=device)
    if config.first_frame_full:
        mask[0] = True
    return mask, w2c


def simulate_masks(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, config: MaskConfig = MaskConfig(),
                   seed: int = 0, device=None, w2c_src: np.ndarray | None = None) -> SimulatedMasks:
    """:class:`SimulatedMasks` of a clip: sample a camera, round-trip every frame (or track), re-sample if degenerate.

    Args:
        frames: [T, H, W, 3] uint8 RGB.
        depth: [T, H, W] float32 z-depth (> 0, scene units).
        K: [3, 3] intrinsics in pixels.
        config: see :class:`MaskConfig`.
        seed: all randomness comes from ``np.random.default_rng(seed)``.
        w2c_src: [T, 4, 4] source camera poses (world = frame 0) of a moving source, or None (a tripod).
            With them a ``flow`` sample's fixed novel camera is fixed in the world, and the returned
            ``w2c`` are relative to each source frame (what is rendered); ``path`` samples are relative
            to the source either way (EX-4D's semantics).
    """
    check_frames_depth(frames, depth)
    K = check_intrinsics(K)
    rng = np.random.default_rng(seed)
    best = None
    for i in range(int(config.tries)):
        sample = sample_camera(rng, config)
        mask, w2c = _masks_for(sample, frames, depth, K, config, device, w2c_src)
        result = SimulatedMasks(mask=mask, w2c=w2c, camera=sample, tries=i + 1)
        unknown = result.unknown_fraction
        if config.min_unknown <= unknown <= config.max_unknown:
            return result
        target = 0.5 * (config.min_unknown + config.max_unknown)
        if best is None or abs(unknown - target) < abs(best.unknown_fraction - target):
            best = result
    return dataclasses.replace(best, tries=int(config.tries))


def apply_mask(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Condition frames [T, H, W, 3] uint8: ``frames`` with the unknown pixels (``mask`` False) set to 0."""
    check(frames.shape[:3] == mask.shape, f"mask {mask.shape} does not match frames {frames.shape[:3]}")
    return np.where(mask[..., None], frames, np.uint8(0)).astype(np.uint8)


def mask_preview(frames: np.ndarray, mask: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
    """Side-by-side video [T, H, 3W, 3] uint8: source | mask (white = known) | condition."""
    if condition is None:
        condition = apply_mask(frames, mask)
    m = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=-1)
    return np.concatenate([frames, m, condition], axis=2)
