"""The second eye: a right eye rendered from the lifted left-eye output, so only the thin band between the eyes is new.

The left eye is the finished output video. Each output frame is lifted into
3D (:mod:`ex4d.lift`: completed depth + its DW-Mesh), and the right eye at
time t is that mesh seen from the right-eye camera of frame t. So wherever
both eyes see the same known surface they show the same colour, and the
right eye's unknown pixels are only what the baseline uncovers: the thin
disocclusions beside depth edges and a strip at the frame edge. Those are
filled from the lifted left eye's neighbours (frames t ± 1, ± 2, ± 4, whose
cameras moved along the path and may have seen them), then by the run's fill
backend (classical inpainting with temporal smoothing, or the EX-4D diffusion
model, whose output replaces only the unknown pixels).

Geometry (OpenCV axes; :func:`right_eye_cameras`)
--------------------------------------------------
* **Baseline**: the right eye sits ``ipd`` scene units along the left eye's
  +x axis, axes parallel: ``w2c_R = T(−ipd, 0, 0) · w2c_L``. No toe-in, so no
  vertical disparity and no keystone.
* **Convergence** (zero-parallax distance ``c``) by a *shifted sensor*
  (off-axis projection): the right eye's principal point moves right by
  ``fx · ipd / c`` pixels, ``cx_R = cx_L + fx·ipd/c``; the left eye stays
  exactly the output video. A point at z-depth z then has the horizontal
  disparity ``d = u_L − u_R = fx · ipd · (1/z − 1/c)`` px (:func:`disparity`):
  0 at z = c (on the screen), > 0 (crossed, in front of the screen) nearer,
  < 0 (behind the screen) farther, at most ``fx·ipd/c`` for the far distance.
  ``convergence=inf`` gives parallel cameras (everything in front of the screen).

Defaults (:func:`stereo_geometry`)
----------------------------------
``z_near`` is the 2nd percentile of the lifted (completed) depth over all
frames (a robust nearest distance).

* ``ipd = z_near / 30``: the stereographers' "1/30 rule" (interaxial = 1/30 of
  the distance to the nearest subject). With the default convergence it keeps
  every disparity within ``fx / 30`` px: 3.3 % of the width at ex4d's default
  54° field of view, under the ~6.5 cm a background may diverge by on screens up
  to ~2 m wide. In a metric scene at 1.9 m this is the human 6.3 cm; for a
  life-size (orthostereo) look in a metric scene pass ``--ipd 0.063``.
* ``convergence = z_near``: the nearest surface is on the screen and the rest
  behind it, so nothing pops out through the frame's edges (no window violations).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .cameras import check_intrinsics, check_w2c, invert_w2c
from .dwmesh import with_cover
from .errors import Ex4dError, check
from .lift import LiftConfig, LiftedFrame, lifted_mesh, render_lifted

__all__ = ["StereoConfig", "StereoGeometry", "RightEye", "STEREO_FILLS", "near_depth", "stereo_geometry",
           "right_eye_cameras", "disparity", "eye_mesh", "render_right_eye", "fill_right_eye", "make_right_eye"]

STEREO_FILLS = ("classical", "ex4d")


@dataclass(frozen=True)
class StereoConfig:
    """How the second eye is made (saved in config.json as ``stereo_options``)."""

    ipd: float | None = None          #: baseline in scene units (None: z_near / ipd_ratio)
    convergence: float | None = None  #: zero-parallax z-depth in scene units (None: z_near; inf: parallel)
    window: int = 4                   #: lifted left-eye neighbours t±1, ±2, ±4, … up to this fill disocclusions
    depth_tolerance: float = 0.02     #: a neighbour's surface may be this much (relative) in front of the occluder's far side
    near_percentile: float = 2.0      #: z_near = this percentile of the lifted depth
    ipd_ratio: float = 30.0           #: default ipd = z_near / ipd_ratio (the 1/30 rule)
    gap_px: float = 0.5               #: a face across a depth edge opens a gap in the right eye past this many px

    def __post_init__(self):
        check(self.ipd is None or (isinstance(self.ipd, (int, float)) and math.isfinite(self.ipd) and self.ipd > 0),
              f"--ipd must be a positive distance in scene units, got {self.ipd}")
        check(self.convergence is None or (isinstance(self.convergence, (int, float)) and self.convergence > 0
                                           and not math.isnan(self.convergence)),
              f"--convergence must be a positive z-depth in scene units (or inf for parallel eyes), "
              f"got {self.convergence}")
        check(isinstance(self.window, int) and self.window >= 0, f"stereo window must be ≥ 0 frames, got {self.window}")
        check(0 <= self.depth_tolerance < 1, f"depth tolerance must be in [0, 1), got {self.depth_tolerance}")
        check(0 <= self.near_percentile < 50, f"near percentile must be in [0, 50), got {self.near_percentile}")
        check(self.ipd_ratio > 0, f"ipd ratio must be > 0, got {self.ipd_ratio}")
        check(self.gap_px >= 0, f"gap_px must be ≥ 0, got {self.gap_px}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StereoGeometry:
    """The resolved eye geometry: baseline and zero-parallax distance in scene units, and how they were chosen."""

    ipd: float
    convergence: float
    near: float                  #: the robust nearest depth z_near the defaults come from
    ipd_default: bool
    convergence_default: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["convergence"] = None if math.isinf(self.convergence) else self.convergence  # JSON has no inf
        return d


@dataclass(frozen=True)
class RightEye:
    """The right eye seen through the lifted left eye, before its fill.

    ========  ===================  =========================================================
    field     shape, dtype         meaning
    ========  ===================  =========================================================
    color     [T, H, W, 3] uint8   RGB where ``known`` or ``borrowed``, 0 elsewhere
    known     [T, H, W] bool       a valid surface of frame t's lifted mesh is the nearest
    borrowed  [T, H, W] bool       not known, filled from a lifted neighbour frame
    depth     [T, H, W] float32    z-depth of the surface shown where known or borrowed;
                                   elsewhere of frame t's nearest lifted surface (a face
                                   across a depth edge), inf where none (outside the view)
    K         [T, 3, 3] float64    right-eye intrinsics (shifted principal point)
    w2c       [T, 4, 4] float64    right-eye OpenCV world-to-camera
    ========  ===================  =========================================================
    """

    color: np.ndarray
    known: np.ndarray
    borrowed: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    w2c: np.ndarray


# ---------------------------------------------------------------------------------------------- geometry

def near_depth(depth, percentile: float = 2.0) -> float:
    """z_near: the ``percentile``-th percentile of the finite, positive values of ``depth`` (any shape, or a list)."""
    if isinstance(depth, (list, tuple)):
        depth = np.concatenate([np.asarray(d, np.float32).ravel() for d in depth])
    d = np.asarray(depth, dtype=np.float32).ravel()
    d = d[np.isfinite(d) & (d > 0)]
    check(d.size > 0, "no finite, positive depth to take the stereo defaults from")
    # a subsample keeps this cheap for long clips (the percentile of 1M values is stable to < 0.1 %)
    if d.size > 1_000_000:
        d = d[:: d.size // 1_000_000]
    return float(np.percentile(d, percentile))


def stereo_geometry(depth, config: StereoConfig | None = None) -> StereoGeometry:
    """The eye geometry for lifted depth ``depth`` ([T, H, W] or a list of [H, W]): the config's values or the defaults."""
    config = config or StereoConfig()
    near = near_depth(depth, config.near_percentile)
    ipd = config.ipd if config.ipd is not None else near / config.ipd_ratio
    conv = config.convergence if config.convergence is not None else near
    return StereoGeometry(ipd=float(ipd), convergence=float(conv), near=near, ipd_default=config.ipd is None,
                          convergence_default=config.convergence is None)


def right_eye_cameras(K: np.ndarray, w2c: np.ndarray, ipd: float, convergence: float = math.inf):
    """(K_R, w2c_R) of the right eye for left-eye cameras K [T,3,3] or [3,3] and w2c [T,4,4] or [4,4].

    ``w2c_R = T(−ipd, 0, 0) @ w2c`` (the right eye ``ipd`` along the left
    eye's +x axis) and ``cx_R = cx + fx · ipd / convergence`` (shifted sensor;
    ``convergence = inf``: parallel cameras). Shapes follow the inputs.
    """
    check(isinstance(ipd, (int, float)) and math.isfinite(ipd) and ipd > 0,
          f"ipd must be a positive distance in scene units, got {ipd}")
    check(convergence > 0 and not math.isnan(convergence), f"convergence must be > 0 (or inf), got {convergence}")
    single = np.asarray(w2c).shape == (4, 4)
    w2c = check_w2c(w2c)
    K = np.asarray(K, dtype=np.float64)
    Ks = np.broadcast_to(K, (w2c.shape[0], 3, 3)) if K.shape == (3, 3) else K
    check(Ks.shape == (w2c.shape[0], 3, 3), f"K must be [3, 3] or [T, 3, 3] with T={w2c.shape[0]}, got {K.shape}")
    shift = np.eye(4)
    shift[0, 3] = -float(ipd)
    w2c_r = shift @ w2c
    K_r = np.array([check_intrinsics(k) for k in Ks])
    K_r[:, 0, 2] += K_r[:, 0, 0] * float(ipd) / float(convergence)
    return (K_r[0], w2c_r[0]) if single else (K_r, w2c_r)


def disparity(depth: np.ndarray, fx: float, ipd: float, convergence: float = math.inf) -> np.ndarray:
    """Horizontal disparity u_L − u_R in pixels of points at z-depth ``depth`` (any shape): fx·ipd·(1/z − 1/c)."""
    with np.errstate(divide="ignore"):
        return fx * ipd * (1.0 / np.asarray(depth, dtype=np.float64) - 1.0 / convergence)


# ---------------------------------------------------------------------------------------------- rendering

def eye_mesh(frame: LiftedFrame, ipd: float, lift_config: LiftConfig | None = None, gap_px: float = 0.5):
    """The DW-Mesh [in ``frame``'s camera] that the right eye sees of a lifted left-eye frame.

    Two changes to :func:`ex4d.lift.lifted_mesh`, both about what a horizontal
    baseline does to a depth map:

    * Faces flagged occluded (across a depth edge, or steep) open a gap in the
      right eye only as wide as the disparity drop across them, summed over a
      ramp of flagged quads along a row (:func:`_opening_runs`; a quad from pixel
      a to b widens by ``fx·ipd·(1/z_a − 1/z_b)`` px). Where that is at most
      ``gap_px`` there is no gap to show: the faces are valid and the right eye
      shows the edge as the left eye does. Wider ones are unknown: they are the
      band the baseline opens. An unflagged quad is judged alone the same way,
      which catches the faces at objects' corners that the DW-Mesh filter's
      median prefilter lets through (with the default IPD a real surface widens
      a quad that much only past ~86° of slant).
    * The pixel grid is extended by half a pixel on every side (the border
      pixels' colour and depth): the right eye's top and bottom rows (and the
      columns at zero parallax) fall exactly on the grid's outer edges, where the
      rasterizer's tie rule would give them to the occluded border walls.
    """
    from dataclasses import replace

    lift_config = lift_config or LiftConfig()
    H, W = frame.height, frame.width
    Kp = np.array(frame.K, dtype=np.float64)
    Kp[0, 2] += 1.0
    Kp[1, 2] += 1.0
    padded = LiftedFrame(rgb=np.pad(frame.rgb, ((1, 1), (1, 1), (0, 0)), mode="edge"),
                         depth=np.pad(frame.depth, 1, mode="edge"), measured=np.pad(frame.measured, 1),
                         K=Kp, w2c=frame.w2c)
    # covers are added once the eye's own flags are decided (below), for exactly those faces
    mesh = lifted_mesh(padded, config=replace(lift_config, mesh=replace(lift_config.mesh, cover="off")))
    Hp, Wp = H + 2, W + 2
    verts = mesh.vertices.copy()
    grid = verts[: Hp * Wp].reshape(Hp, Wp, 3)
    v, u = np.mgrid[0:Hp, 0:Wp].astype(np.float64)
    u = np.clip(u - 1.0, -0.5, W - 0.5)  # the padding ring moves half a pixel inwards
    v = np.clip(v - 1.0, -0.5, H - 0.5)
    ring = (u < 0) | (u > W - 1) | (v < 0) | (v > H - 1)
    z = padded.depth.astype(np.float64)
    K = frame.K
    grid[ring, 0] = ((u - K[0, 2]) / K[0, 0] * z)[ring]
    grid[ring, 1] = ((v - K[1, 2]) / K[1, 1] * z)[ring]
    n = mesh.num_grid_faces
    occluded = mesh.occluded.copy()
    disp = frame.K[0, 0] * ipd / z  # disparity of every grid vertex (the convergence shift is common to all)
    opened = _opening_runs(mesh.occluded[:n].reshape(2, Hp - 1, Wp - 1).any(axis=0), disp, gap_px)
    occluded[:n] = np.tile(opened.ravel(), 2)
    mesh = replace(mesh, vertices=verts, occluded=occluded)
    return with_cover(mesh) if lift_config.mesh.use_cover else mesh


def _opening_runs(flagged: np.ndarray, disp: np.ndarray, gap_px: float) -> np.ndarray:
    """Quads [h, w] bool that open a gap wider than ``gap_px`` in the right eye.

    The right eye moves a vertex of disparity d by −d, so quad (i, j) widens by
    its drop ``disp[·, j] − disp[·, j+1]`` (the larger of its two rows). A depth
    edge widens one quad by the whole drop; an estimated depth spreads it over
    the few quads of a ramp, so the drops of a run of consecutive flagged quads
    along a row are summed: the run's quads that widen (drop > gap_px / 10)
    open when the run's widening exceeds ``gap_px``. Flagged quads that do not
    widen (a steep floor beside the edge, a horizontal edge) stay valid. An
    unflagged quad opens when it alone widens by more than ``gap_px`` (the
    DW-Mesh filter's median prefilter passes faces at objects' corners).
    """
    h, w = flagged.shape
    drop = np.maximum(disp[:-1, :-1] - disp[:-1, 1:], disp[1:, :-1] - disp[1:, 1:])
    widen = np.maximum(drop, 0.0).ravel()
    flat = flagged.ravel()
    col = np.tile(np.arange(w), h)
    # runs: stretches of flagged quads within a row (an unflagged quad is a run of its own)
    start = ~flat | (col == 0) | ~np.r_[False, flat[:-1]]
    run = np.cumsum(start) - 1
    total = np.add.reduceat(widen, np.flatnonzero(start))[run]
    opened = np.where(flat, (total > gap_px) & (widen > 0.1 * gap_px), widen > gap_px)
    return opened.reshape(h, w)


def _offsets(window: int) -> list[int]:
    from .fill.classical import frame_offsets

    return frame_offsets(window)


def render_right_eye(frames: Sequence[LiftedFrame], geometry: StereoGeometry, config: StereoConfig | None = None,
                     lift_config: LiftConfig | None = None, backend: str | None = None,
                     progress: bool = True) -> RightEye:
    """The right eye of the lifted left-eye frames (one per output frame), before its fill.

    Frame t's own lifted mesh (:func:`eye_mesh`) gives the known pixels; its
    unknown ones take a lifted neighbour's valid surface where that lies behind
    the far corner of frame t's face there (the face across the depth edge: what
    the baseline uncovers is behind it; a foreground that moved into the gap is
    not), or anywhere when frame t shows no scene surface there (outside its view);
    the farthest candidate wins (disocclusions reveal background, which rarely moves).
    """
    from .render import render_mesh
    from .render.numba_raster import quantize_rgb

    config = config or StereoConfig()
    lift_config = lift_config or LiftConfig()
    check(len(frames) > 0, "no lifted frames to make a second eye from")
    H, W = frames[0].height, frames[0].width
    check(all(f.depth.shape == (H, W) for f in frames), "the lifted frames must all have one size")
    T = len(frames)
    K_r, w2c_r = right_eye_cameras(np.stack([f.K for f in frames]), np.stack([f.w2c for f in frames]),
                                   geometry.ipd, geometry.convergence)
    color = np.zeros((T, H, W, 3), np.uint8)
    known = np.zeros((T, H, W), bool)
    borrowed = np.zeros((T, H, W), bool)
    depth = np.full((T, H, W), np.inf, np.float32)
    meshes: dict[int, object] = {}

    def mesh(s: int):
        if s not in meshes:
            meshes[s] = lifted_mesh(frames[s], config=lift_config)
        return meshes[s]

    def own(t: int):
        return eye_mesh(frames[t], geometry.ipd, lift_config, config.gap_px)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="stereo: right eye", unit="frame", leave=False)
    for t in range(T):
        m = own(t)
        r = render_mesh(m, K_r[t], w2c_r[t] @ invert_w2c(frames[t].w2c), H, W, backend=backend)
        quantize_rgb(r.color, color[t])
        known[t] = r.mask
        # the border walls and back cap are not scene surfaces: outside the left eye's view
        grid = (r.face_id >= 0) & (r.face_id < m.num_grid_faces)
        depth[t] = np.where(grid, r.depth, np.inf)
        hole = ~known[t]
        # a disocclusion shows what lies behind the face across the depth edge: behind its far corner
        # (the right eye's z is the left eye's: the baseline is along x)
        behind = np.full((H, W), -np.inf, np.float32)
        behind[grid] = m.vertices[m.faces[r.face_id[grid]], 2].max(axis=-1) * (1 - config.depth_tolerance)
        best = np.full((H, W), -np.inf, np.float32)
        for off in _offsets(config.window):
            s = t + off
            if not (0 <= s < T) or not hole.any():
                continue
            c = render_lifted([frames[s]], K_r[t], w2c_r[t], H, W, lift_config, backend=backend, meshes=[mesh(s)])
            ok = hole & c.mask & (c.depth > best) & (c.depth >= behind)
            if ok.any():
                color[t][ok] = c.color[ok]
                best[ok] = c.depth[ok]
                borrowed[t] |= ok
        depth[t][borrowed[t]] = best[borrowed[t]]
        for s in [s for s in meshes if s < t + 1 - config.window]:  # bounded memory: later frames don't need them
            del meshes[s]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return RightEye(color=color, known=known, borrowed=borrowed, depth=depth, K=K_r, w2c=w2c_r)


# ---------------------------------------------------------------------------------------------- fill

def fill_right_eye(eye: RightEye, fill: str = "classical", fill_options: dict | None = None, seed: int = 0,
                   progress: bool = True, windows: tuple | None = None) -> np.ndarray:
    """The finished right eye [T, H, W, 3] uint8: ``eye.color`` where known or borrowed, ``fill``'s pixels elsewhere.

    ``classical``: depth-aware inpainting from the background side plus temporal
    smoothing (:func:`ex4d.fill.classical_fill`; the reprojection pass is the
    lifted-neighbour pass already done). ``ex4d``: the EX-4D diffusion model on
    the masked right eye (``fill_options``: ``wan``, ``adapter``, ``encoders``,
    ``window``, ``overlap`` and any :class:`~ex4d.diffusion.GenerateConfig`
    field), generated in the left eye's windows (any length) with the model the
    run's fill loaded (:func:`~ex4d.diffusion.windowed.shared_generator`; else it is loaded and freed here) and
    composited so that its output replaces only the unknown pixels. ``windows``:
    (folder, key) keeping the finished windows (a re-run resumes); None: a
    temporary folder.
    """
    check(fill in STEREO_FILLS, f"unknown fill {fill!r} for the second eye; choose one of {', '.join(STEREO_FILLS)}")
    opts = dict(fill_options or {})
    have = eye.known | eye.borrowed
    if fill == "classical":
        from .fill import ClassicalFillConfig, classical_fill

        cfg = ClassicalFillConfig(**{k: v for k, v in opts.items() if k in ClassicalFillConfig.__dataclass_fields__})
        return classical_fill(eye.color, have, view_depth=eye.depth, config=cfg, progress=progress)
    check(bool(opts.get("wan")), "the ex4d fill of the second eye needs the model weights: --wan DIR and --adapter FILE")
    try:
        from .diffusion import GenerateConfig
        from .diffusion.windowed import shared_generator, split_fill_options
        from .diffusion.windows import WindowConfig, generate_windows
    except ImportError as e:  # pragma: no cover - the diffusion extra is part of the test setup
        raise Ex4dError(f"--fill ex4d needs the diffusion extra: pip install 'ex4d[diffusion]' ({e})")
    weights, gen_opts, window_opts = split_fill_options(opts)
    gen = GenerateConfig(**{"seed": seed, **gen_opts})
    # the left eye's windows (any length), without lifting: what this eye keeps seeing is already in its
    # known and borrowed pixels, lifted from the whole left output
    wconf = WindowConfig(**{**{k: v for k, v in window_opts.items() if k in ("window", "overlap")}, "lift": "none"})
    generate = shared_generator(weights["wan"], weights.get("adapter"), gen, weights.get("encoders"))

    def run(folder, key) -> np.ndarray:
        result = generate_windows(eye.color, have, generate, wconf, folder, key, seed=gen.seed, progress=progress)
        return np.concatenate([np.asarray(frames) for _, frames in result.chunks()])

    borrowed = "g" in generate.holder  # loaded by the run's fill: it stays for the caller, who frees it
    try:
        if windows is None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="ex4d-right-eye-") as tmp:
                out = run(tmp, "right-eye")
        else:
            out = run(*windows)
    finally:
        if not borrowed:
            from .diffusion.windowed import release_shared_generator

            release_shared_generator()
    check(out.shape == eye.color.shape, f"internal: the generator returned {out.shape}, expected {eye.color.shape}")
    return np.where(have[..., None], eye.color, out)


def make_right_eye(frames: Sequence[LiftedFrame], config: StereoConfig | None = None,
                   lift_config: LiftConfig | None = None, fill: str = "classical", fill_options: dict | None = None,
                   seed: int = 0, backend: str | None = None, progress: bool = True):
    """(right eye [T, H, W, 3] uint8, :class:`RightEye` before the fill, :class:`StereoGeometry`) of lifted frames."""
    config = config or StereoConfig()
    geometry = stereo_geometry([f.depth for f in frames], config)
    eye = render_right_eye(frames, geometry, config, lift_config, backend=backend, progress=progress)
    return fill_right_eye(eye, fill, fill_options, seed, progress), eye, geometry
