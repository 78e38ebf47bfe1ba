"""Source camera poses from depth-lifted tracks: PnP/RANSAC against keyframes, then bundle adjustment.

1. **Initialisation (PnP).** Frame 0 is the world (``w2c = I``). Every track is
   lifted to a world point from its first observation with a usable depth
   (its keyframe): ``X = c2w[a] · z·K⁻¹(u, v, 1)``. Each later frame's pose is
   found by ``cv2.solvePnPRansac`` from the lifted points it sees (EPnP inside
   RANSAC, then Levenberg–Marquardt on the inliers); moving objects, failed
   tracks and wrong depth samples are RANSAC outliers. A frame with too few
   inliers (a textureless stretch) is marked ``interpolated`` and gets its
   pose from its neighbours at the end.
2. **Bundle adjustment** with ``scipy.optimize.least_squares`` (trust-region
   reflective, analytic sparse Jacobian, LSMR steps,
   Cauchy loss). Unknowns: the poses of frames 1…T−1 (rotation vector,
   translation), one world point per track, optionally one depth scale and
   one disparity shift per frame (relative depth models drift in both; frame
   0 keeps 1 and 0) and the focal length (self-calibration; square pixels,
   principal point fixed). Residuals, each divided by its noise level:
   reprojection (pixels) of every observation and log-depth (the depth map's
   value at the track, aligned by its frame's scale and shift, versus the
   point's z in that camera) wherever the depth is usable, plus a weak prior
   pulling each shift to 0 (a frame whose tracks span little depth cannot tell
   a shift from a scale: it keeps the scale). The depth terms fix
   the scale and keep points put where the camera only rotates (no parallax).
   After each round, tracks whose median reprojection error exceeds
   ``outlier_px`` (moving objects) are dropped and the solve is repeated.
3. **Focal length.** Self-calibration starts from :func:`search_focal` (a
   grid and golden-section search of the PnP fit over the field of view). Its
   uncertainty comes from the Gauss–Newton covariance ``σ²·(JᵀJ)⁻¹`` at the
   solution, scaled by √(observations per track) since one track's errors are
   correlated; it is a lower bound (a tracking bias shared by all tracks is not
   in it). A focal length whose relative standard deviation exceeds
   ``focal_max_rel_std`` (no parallax, no rotation) is not trusted.

All poses are OpenCV world-to-camera ``w2c`` [T, 4, 4], world = source frame 0,
in the depth's units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import check
from .tracks import Tracks

__all__ = ["SolverConfig", "SolverResult", "solve_poses", "interpolate_poses", "rotation_angle_deg"]


@dataclass(frozen=True)
class SolverConfig:
    """Options of the pose solver (saved in config.json with the poses options)."""

    pnp_px: float = 2.0             #: RANSAC inlier threshold (pixels)
    min_inliers: int = 15           #: fewer PnP inliers: the frame's pose is interpolated
    sigma_px: float = 1.0           #: reprojection noise (pixels)
    sigma_depth: float = 0.05       #: depth noise (relative, i.e. in log-depth)
    depth_scales: bool = True       #: one free depth scale per frame (relative depth drifts in scale)
    depth_shifts: bool = False      #: ... and one disparity shift per frame (affine-invariant depth drifts in both)
    shift_prior: float = 0.1        #: prior σ of a shift, in units of the tracks' median disparity
    #: first a pass with the soft-L1 loss: Cauchy's gives up on rows beyond its scale, so a frame whose whole
    #: depth is off (a relative depth model's drift) would keep its scale; soft-L1 never drops a row
    align_pass: bool = False
    align_nfev: int = 30            #: trust-region iterations of that pass (at most)
    robust: float = 1.0             #: Cauchy loss scale in units of the noise levels
    outlier_px: float = 1.0         #: tracks whose median reprojection error exceeds max(this, 3 robust σ) are dropped
    rounds: int = 2                 #: bundle adjustment rounds (each drops outliers)
    refit_fraction: float = 0.02    #: another round only if more than this fraction of observations was dropped
    max_nfev: int = 10              #: trust-region iterations per round (at most)
    max_tracks: int = 1200          #: tracks in the bundle adjustment (the longest)
    min_track_length: int = 3       #: shorter tracks are not used
    focal_max_rel_std: float = 0.01  #: a focal estimate less certain than this (relative std) is not used
    focal_range: tuple = (0.25, 4.0)  #: the focal is kept within this factor of its initial value

    def __post_init__(self):
        check(self.pnp_px > 0 and self.sigma_px > 0 and self.sigma_depth > 0, "pose solver noise levels must be > 0")
        check(self.min_inliers >= 6, f"min_inliers must be ≥ 6, got {self.min_inliers}")
        check(self.rounds >= 1 and self.max_nfev >= 1 and self.align_nfev >= 1,
              "rounds, max_nfev and align_nfev must be ≥ 1")
        check(self.min_track_length >= 2, f"min_track_length must be ≥ 2, got {self.min_track_length}")
        check(self.shift_prior > 0, f"shift_prior must be > 0, got {self.shift_prior}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SolverResult:
    """What the solver found.

    ===============  ===============  =====================================================
    field            shape, dtype     meaning
    ===============  ===============  =====================================================
    w2c              [T, 4, 4] f64    OpenCV world-to-camera, world = frame 0
    focal            float            focal length (pixels; the input's if not estimated)
    focal_std        float            its standard deviation (pixels; NaN if not estimated)
    depth_scale      [T] f64          per-frame factor: depth[t]·scale[t] is consistent with the poses ...
    depth_shift      [T] f64          ... with this disparity shift: 1/d → 1/(d·scale) + shift (0: none)
    status           [T] str          "reference", "ok" or "interpolated"
    pnp_inliers      [T] int          RANSAC inliers of the initial PnP (frame 0: its tracks)
    ba_inliers       [T] int          observations kept by the bundle adjustment
    reproj_px        [T] f64          median reprojection error of the kept observations (pixels)
    depth_err        [T] f64          median |log-depth residual| of the kept observations
    num_tracks       int              tracks in the bundle adjustment after outlier removal
    points           [M, 3] f64       their world points
    point_tracks     [M] int          their track ids
    ===============  ===============  =====================================================
    """

    w2c: np.ndarray
    focal: float
    focal_std: float
    depth_scale: np.ndarray
    status: np.ndarray
    pnp_inliers: np.ndarray
    ba_inliers: np.ndarray
    reproj_px: np.ndarray
    depth_err: np.ndarray
    num_tracks: int
    points: np.ndarray
    point_tracks: np.ndarray
    depth_shift: np.ndarray | None = None

    def __post_init__(self):
        if self.depth_shift is None:
            object.__setattr__(self, "depth_shift", np.zeros(len(self.w2c)))


# ---------------------------------------------------------------------------------------------- geometry

def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices from rotation vectors [..., 3] (Rodrigues, vectorised)."""
    th = np.linalg.norm(rv, axis=-1, keepdims=True)
    small = th < 1e-12
    k = rv / np.where(small, 1.0, th)
    c, s = np.cos(th)[..., None], np.sin(th)[..., None]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    z = np.zeros_like(kx)
    Kx = np.stack([np.stack([z, -kz, ky], -1), np.stack([kz, z, -kx], -1), np.stack([-ky, kx, z], -1)], -2)
    I = np.broadcast_to(np.eye(3), Kx.shape)
    R = I + s * Kx + (1 - c) * (Kx @ Kx)
    return np.where(small[..., None], I + np.stack([np.stack([z, -rv[..., 2], rv[..., 1]], -1),
                                                    np.stack([rv[..., 2], z, -rv[..., 0]], -1),
                                                    np.stack([-rv[..., 1], rv[..., 0], z], -1)], -2), R)


def _matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees of rotation matrices [..., 3, 3]."""
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def interpolate_poses(w2c: np.ndarray, known: np.ndarray) -> np.ndarray:
    """w2c [T, 4, 4] with the frames where ``known`` [T] bool is False interpolated from the known ones.

    Rotations by spherical interpolation, camera centres linearly, between the nearest known frames;
    before the first and after the last known frame the pose is held. Frame 0 must be known.
    """
    from scipy.spatial.transform import Rotation, Slerp

    from ..cameras import invert_w2c

    w2c = np.array(w2c, dtype=np.float64)
    idx = np.flatnonzero(known)
    if idx.size == len(w2c) or idx.size == 0:
        return w2c
    c2w = invert_w2c(w2c[idx])
    t_all = np.arange(len(w2c))
    tq = np.clip(t_all, idx[0], idx[-1])
    if idx.size == 1:
        rots = Rotation.from_matrix(np.broadcast_to(c2w[0, :3, :3], (len(w2c), 3, 3)))
        centres = np.broadcast_to(c2w[0, :3, 3], (len(w2c), 3))
    else:
        rots = Slerp(idx, Rotation.from_matrix(c2w[:, :3, :3]))(tq)
        centres = np.stack([np.interp(tq, idx, c2w[:, i, 3]) for i in range(3)], 1)
    out = np.zeros_like(w2c)
    R = rots.as_matrix().transpose(0, 2, 1)
    out[:, :3, :3] = R
    out[:, :3, 3] = -np.einsum("tij,tj->ti", R, centres)
    out[:, 3, 3] = 1
    out[known] = w2c[known]
    return out


def _K(f: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------- init

def _pnp_init(tracks: Tracks, K: np.ndarray, config: SolverConfig):
    """(w2c [T,4,4], ok [T] bool, inliers [T] int) by chained PnP/RANSAC on depth-lifted keyframe points."""
    import cv2

    from ..cameras import invert_w2c

    T = tracks.num_frames
    n = tracks.num_tracks
    w2c = np.broadcast_to(np.eye(4), (T, 4, 4)).copy()
    ok = np.zeros(T, bool)
    ok[0] = True
    inliers = np.zeros(T, np.int64)
    X = np.full((n, 3), np.nan)            # world point of each track, once lifted
    starts = np.searchsorted(tracks.frame, np.arange(T + 1))
    Kinv = np.linalg.inv(K)

    def lift(t):
        sl = slice(starts[t], starts[t + 1])
        tr, uv, d = tracks.track[sl], tracks.uv[sl], tracks.depth[sl]
        new = np.isnan(X[tr, 0]) & np.isfinite(d)
        if new.any():
            rays = np.c_[uv[new], np.ones(int(new.sum()))] @ Kinv.T
            Xc = rays * d[new, None]
            c2w = invert_w2c(w2c[t])
            X[tr[new]] = Xc @ c2w[:3, :3].T + c2w[:3, 3]

    inliers[0] = starts[1] - starts[0]
    lift(0)
    rvec, tvec = np.zeros((3, 1)), np.zeros((3, 1))
    for t in range(1, T):
        sl = slice(starts[t], starts[t + 1])
        tr, uv = tracks.track[sl], tracks.uv[sl]
        has = np.isfinite(X[tr, 0])
        if int(has.sum()) >= config.min_inliers:
            obj = np.ascontiguousarray(X[tr[has]])
            img = np.ascontiguousarray(uv[has])
            found, rv, tv, inl = cv2.solvePnPRansac(obj, img, K, None, rvec.copy(), tvec.copy(),
                                                    useExtrinsicGuess=True, iterationsCount=200,
                                                    reprojectionError=config.pnp_px, confidence=0.999,
                                                    flags=cv2.SOLVEPNP_ITERATIVE)
            if found and inl is not None and len(inl) >= config.min_inliers:
                inl = inl.ravel()
                rv, tv = cv2.solvePnPRefineLM(obj[inl], img[inl], K, None, rv, tv)
                rvec, tvec = rv, tv
                w2c[t, :3, :3] = cv2.Rodrigues(rv)[0]
                w2c[t, :3, 3] = tv.ravel()
                ok[t] = True
                inliers[t] = len(inl)
        if not ok[t]:
            w2c[t] = w2c[t - 1]  # held for now; interpolated once the later frames are known
        lift(t)
    return w2c, ok, inliers, X


def focal_pairs(tracks: Tracks, gaps=(8, 16), max_pairs: int = 8) -> list[tuple[int, int]]:
    """Frame pairs (a, a + gap) for :func:`_pnp_score`: keyframes a, at most ``max_pairs``, spread over the clip."""
    T = tracks.num_frames
    pairs = [(int(a), int(a + g)) for a in tracks.keyframes for g in gaps if a + g < T]
    if not pairs and T > 1:
        pairs = [(0, T - 1)]
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in np.round(np.linspace(0, len(pairs) - 1, max_pairs)).astype(int)]
    return pairs


def _pnp_score(tracks: Tracks, K: np.ndarray, config: SolverConfig, pairs) -> float:
    """Median reprojection error (pixels) of two-frame PnP fits: tracks lifted with the depth of frame a and K,
    posed in frame b by RANSAC PnP, over the frame ``pairs`` (a, b). A wrong focal bends the lifted points,
    which no rigid motion explains (no chain of poses to absorb it)."""
    import cv2

    T = tracks.num_frames
    starts = np.searchsorted(tracks.frame, np.arange(T + 1))
    Kinv = np.linalg.inv(K)
    errs = []
    for a, b in pairs:
        sa = slice(starts[a], starts[a + 1])
        ta, ua, da = tracks.track[sa], tracks.uv[sa], tracks.depth[sa]
        okd = np.isfinite(da)
        if True:
            sb = slice(starts[b], starts[b + 1])
            common, ia, ib = np.intersect1d(ta[okd], tracks.track[sb], return_indices=True)
            if len(common) < config.min_inliers:
                continue
            X = (np.c_[ua[okd][ia], np.ones(len(ia))] @ Kinv.T) * da[okd][ia, None]
            uvb = np.ascontiguousarray(tracks.uv[sb][ib])
            found, rv, tv, inl = cv2.solvePnPRansac(np.ascontiguousarray(X), uvb, K, None, iterationsCount=60,
                                                    reprojectionError=4 * config.pnp_px, confidence=0.99,
                                                    flags=cv2.SOLVEPNP_EPNP)
            if not found or inl is None or len(inl) < config.min_inliers:
                continue
            inl = inl.ravel()
            rv, tv = cv2.solvePnPRefineLM(X[inl], uvb[inl], K, None, rv, tv)
            proj, _ = cv2.projectPoints(X, rv, tv, K, None)
            e = np.linalg.norm(proj.reshape(-1, 2) - uvb, axis=1)
            errs.append(float(np.median(e)))
    return float(np.median(errs)) if errs else float("inf")


def search_focal(tracks: Tracks, K: np.ndarray, config: SolverConfig | None = None,
                 fov_range: tuple = (25.0, 110.0), grid: int = 16, iters: int = 7) -> float:
    """Focal length (pixels) that best explains the depth-lifted tracks: a grid, then a golden-section search.

    The score of a focal is the median reprojection error of two-frame PnP fits of the tracks lifted
    with the depth and that focal (:func:`_pnp_score`): a wrong focal bends the lifted geometry, which no
    rigid motion explains. The score is not unimodal far from its minimum, so ``grid`` fields of view (evenly spaced
    in log f over ``fov_range``, degrees across the longer side) are scored first and the best bracket
    is refined with ``iters`` golden-section steps. It is the start value of the bundle adjustment's
    self-calibration, whose cost converges slowly from a focal far off.
    """
    config = config or SolverConfig()
    K = np.asarray(K, dtype=np.float64)
    half = max(K[0, 2], K[1, 2])
    lo = np.log(half / np.tan(np.radians(fov_range[1]) / 2))
    hi = np.log(half / np.tan(np.radians(fov_range[0]) / 2))

    pairs = focal_pairs(tracks)

    def score(lf):
        Kf = K.copy()
        Kf[0, 0] = Kf[1, 1] = np.exp(lf)
        return _pnp_score(tracks, Kf, config, pairs)

    xs = np.linspace(lo, hi, grid)
    ys = np.array([score(x) for x in xs])
    i = int(np.argmin(ys))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = score(c), score(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = score(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = score(d)
    best = min((ys[i], xs[i]), (fc, c), (fd, d))
    return float(np.exp(best[1]))


# ---------------------------------------------------------------------------------------------- BA

class _Problem:
    """The bundle adjustment's unknowns, residuals and analytic sparse Jacobian.

    Each track is a point on the ray of its *anchor* observation (its first one with a usable depth):
    ``X = c2w[a] · e^ζ · ((u_a − cx)/f, (v_a − cy)/f, 1)``, one unknown ζ (log-depth) per track, so a
    change of focal moves the points with it (well conditioned self-calibration). Rows: reprojection u, v
    of every non-anchor observation, then log-depth of every observation with a usable depth.
    """

    def __init__(self, obs_track, obs_frame, uv, depth, anchor_frame, anchor_uv, free_frames, T, use_scales,
                 use_focal, cx, cy, config, use_shifts=False):
        self.ot, self.of, self.uv, self.config = obs_track, obs_frame, uv, config
        self.T, self.cx, self.cy = T, cx, cy
        self.af, self.auv = anchor_frame, anchor_uv
        self.free = np.asarray(free_frames, dtype=np.int64)
        self.pose_slot = np.full(T, -1)
        self.pose_slot[self.free] = np.arange(len(self.free))
        self.scale_frames = self.free if use_scales else np.zeros(0, np.int64)
        self.scale_slot = np.full(T, -1)
        self.scale_slot[self.scale_frames] = np.arange(len(self.scale_frames))
        self.shift_frames = self.free if use_shifts else np.zeros(0, np.int64)
        self.shift_slot = np.full(T, -1)
        self.shift_slot[self.shift_frames] = np.arange(len(self.shift_frames))
        self.use_focal = use_focal
        self.n_pose = 6 * len(self.free)
        self.n_scale = len(self.scale_frames)
        self.n_shift = len(self.shift_frames)
        self.n_points = len(anchor_frame)
        self.o_scale = self.n_pose
        self.o_shift = self.o_scale + self.n_scale
        self.o_focal = self.o_shift + self.n_shift
        self.o_points = self.o_focal + int(use_focal)
        self.n = self.o_points + self.n_points
        has_d = np.isfinite(depth)
        self.logd = np.log(np.where(has_d, depth, 1.0))
        self.r_rows = np.flatnonzero(obs_frame != anchor_frame[obs_track])   # reprojection rows
        self.d_rows = np.flatnonzero(has_d)                                   # depth rows
        # the shift prior's σ (disparity units): a fraction of the tracks' median disparity
        q = np.exp(-self.logd[self.d_rows])
        self.sigma_shift = config.shift_prior * (float(np.median(q)) if q.size else 1.0)

    def pack(self, w2c, log_scale, log_f, log_depth, shift=None):
        x = np.zeros(self.n)
        if len(self.free):
            x[:self.n_pose] = np.c_[_matrix_to_rotvec(w2c[self.free, :3, :3]), w2c[self.free, :3, 3]].ravel()
        x[self.o_scale:self.o_shift] = log_scale[self.scale_frames]
        if shift is not None:
            x[self.o_shift:self.o_focal] = shift[self.shift_frames]
        if self.use_focal:
            x[self.o_focal] = log_f
        x[self.o_points:] = log_depth
        return x

    def unpack(self, x, w2c_fixed, log_scale_fixed, log_f_fixed, shift_fixed=None):
        """(w2c, log_scale, log_f, ζ, rotation vectors, shift) of ``x``; frames not solved keep the fixed values."""
        w2c = w2c_fixed.copy()
        rv = np.zeros((self.T, 3))
        if len(self.free):
            p = x[:self.n_pose].reshape(-1, 6)
            w2c[self.free, :3, :3] = _rotvec_to_matrix(p[:, :3])
            w2c[self.free, :3, 3] = p[:, 3:]
            rv[self.free] = p[:, :3]
        log_scale = log_scale_fixed.copy()
        log_scale[self.scale_frames] = x[self.o_scale:self.o_shift]
        shift = np.zeros(self.T) if shift_fixed is None else shift_fixed.copy()
        shift[self.shift_frames] = x[self.o_shift:self.o_focal]
        log_f = x[self.o_focal] if self.use_focal else log_f_fixed
        return w2c, log_scale, log_f, x[self.o_points:], rv, shift

    def world_points(self, w2c, log_f, zeta):
        """(X_world [M, 3], camera point at the anchor ρ [M, 3]) of every track."""
        f = np.exp(log_f)
        rho = np.c_[(self.auv[:, 0] - self.cx) / f, (self.auv[:, 1] - self.cy) / f, np.ones(self.n_points)]
        rho *= np.exp(zeta)[:, None]
        Ra = w2c[self.af, :3, :3]
        X = np.einsum("nji,nj->ni", Ra, rho - w2c[self.af, :3, 3])   # R_aᵀ (ρ − t_a)
        return X, rho

    def _camera(self, x, args):
        w2c, log_scale, log_f, zeta, rv, shift = self.unpack(x, *args)
        X, rho = self.world_points(w2c, log_f, zeta)
        Xw = X[self.ot]
        Xc = np.einsum("nij,nj->ni", w2c[self.of, :3, :3], Xw) + w2c[self.of, :3, 3]
        return w2c, log_scale, log_f, zeta, rv, X, rho, Xw, Xc, shift

    def aligned_disparity(self, log_scale, shift):
        """(u, floored) over the depth rows: the observed disparity aligned, ``max(q·e^(−s) + b, q·e^(−s)/2)``."""
        d = self.d_rows
        base = np.exp(np.clip(-self.logd[d] - log_scale[self.of[d]], -80.0, 80.0))  # trial steps can be wild
        u = base + shift[self.of[d]]
        floored = u < 0.5 * base
        return np.where(floored, 0.5 * base, u), floored, base

    def residuals(self, x, *args):
        w2c, log_scale, log_f, zeta, rv, X, rho, Xw, Xc, shift = self._camera(x, args)
        z = np.maximum(Xc[:, 2], 1e-6)
        f = np.exp(log_f)
        r = self.r_rows
        ru = (f * Xc[r, 0] / z[r] + self.cx - self.uv[r, 0]) / self.config.sigma_px
        rv_ = (f * Xc[r, 1] / z[r] + self.cy - self.uv[r, 1]) / self.config.sigma_px
        d = self.d_rows
        if self.n_shift:  # the aligned depth is 1 / max(1/(d·scale) + shift, 1/(2·d·scale))
            u, _, _ = self.aligned_disparity(log_scale, shift)
            rd = (np.log(z[d]) + np.log(u)) / self.config.sigma_depth
        else:
            rd = (np.log(z[d]) - self.logd[d] - log_scale[self.of[d]]) / self.config.sigma_depth
        rb = shift[self.shift_frames] / self.sigma_shift
        return np.concatenate([ru, rv_, rd, rb])

    def jacobian(self, x, *args):
        """Sparse Jacobian of :meth:`residuals` (analytic)."""
        from scipy.sparse import csr_matrix

        w2c, log_scale, log_f, zeta, rv, X, rho, Xw, Xc, shift = self._camera(x, args)
        f = np.exp(log_f)
        N = len(self.ot)
        z = np.maximum(Xc[:, 2], 1e-6)
        iz = 1.0 / z
        sp, sd = self.config.sigma_px, self.config.sigma_depth
        Jr = _right_jacobian(rv)
        Rt = w2c[self.of, :3, :3]                  # [N, 3, 3] camera of the observation
        Ra = w2c[self.af[self.ot], :3, :3]         # [N, 3, 3] camera of the anchor
        rho_n = rho[self.ot]
        # Xc = R_t R_aᵀ (ρ − t_a) + t_t.  For a row gradient g (dr/dXc) and a = R_tᵀ g, b = R_a a:
        #   d/dω_t = −(a × X)ᵀ J_r(ω_t)     d/dt_t = g
        #   d/dω_a = (a × X)ᵀ J_r(ω_a)      d/dt_a = −b
        #   d/dζ = b·ρ                      d/dlog f = b·(−ρx, −ρy, 0)
        pose_t = self.pose_slot[self.of]
        pose_a = self.pose_slot[self.af[self.ot]]
        cols_r, rows_r, vals_r = [], [], []

        def add(rows, cols, vals):
            rows_r.append(rows); cols_r.append(cols); vals_r.append(vals)

        def block(rows, idx, g):
            a = np.einsum("nji,nj->ni", Rt[idx], g)
            b = np.einsum("nij,nj->ni", Ra[idx], a)
            axX = np.cross(a, Xw[idx])
            pt, pa = pose_t[idx], pose_a[idx]
            mt, ma = pt >= 0, pa >= 0
            gwt = -np.einsum("ni,nij->nj", axX, Jr[self.of[idx]])
            gwa = np.einsum("ni,nij->nj", axX, Jr[self.af[self.ot[idx]]])
            for k in range(3):
                add(rows[mt], 6 * pt[mt] + k, gwt[mt, k])
                add(rows[mt], 6 * pt[mt] + 3 + k, g[mt, k])
                add(rows[ma], 6 * pa[ma] + k, gwa[ma, k])
                add(rows[ma], 6 * pa[ma] + 3 + k, -b[ma, k])
            add(rows, self.o_points + self.ot[idx], np.einsum("ni,ni->n", b, rho_n[idx]))
            if self.use_focal:
                add(rows, np.full(len(idx), self.o_focal), -(b[:, 0] * rho_n[idx, 0] + b[:, 1] * rho_n[idx, 1]))

        r = self.r_rows
        nr = len(r)
        zero = np.zeros(nr)
        gu = np.stack([f * iz[r], zero, -f * Xc[r, 0] * iz[r] ** 2], 1) / sp
        gv = np.stack([zero, f * iz[r], -f * Xc[r, 1] * iz[r] ** 2], 1) / sp
        block(np.arange(nr), r, gu)
        block(nr + np.arange(nr), r, gv)
        if self.use_focal:  # the direct f in u = f·x/z + cx
            add(np.arange(nr), np.full(nr, self.o_focal), f * Xc[r, 0] * iz[r] / sp)
            add(nr + np.arange(nr), np.full(nr, self.o_focal), f * Xc[r, 1] * iz[r] / sp)
        d = self.d_rows
        rows_d = 2 * nr + np.arange(len(d))
        gz = np.zeros((len(d), 3))
        gz[:, 2] = iz[d] / sd
        block(rows_d, d, gz)
        sc = self.scale_slot[self.of[d]]
        m = sc >= 0
        if self.n_shift:
            u, floored, base = self.aligned_disparity(log_scale, shift)
            d_scale = np.where(floored, -1.0, -base / u) / sd        # d log(u) / d log-scale
            add(rows_d[m], self.o_scale + sc[m], d_scale[m])
            bs = self.shift_slot[self.of[d]]
            m = (bs >= 0) & ~floored
            add(rows_d[m], self.o_shift + bs[m], 1.0 / (u[m] * sd))   # d log(u) / d shift
        else:
            add(rows_d[m], self.o_scale + sc[m], np.full(int(m.sum()), -1.0 / sd))
        rows_b = 2 * nr + len(d) + np.arange(self.n_shift)
        add(rows_b, self.o_shift + np.arange(self.n_shift), np.full(self.n_shift, 1.0 / self.sigma_shift))
        rr, cc, vv = np.concatenate(rows_r), np.concatenate(cols_r), np.concatenate(vals_r)
        return csr_matrix((vv, (rr, cc)), shape=(2 * nr + len(d) + self.n_shift, self.n))


def _skew(a: np.ndarray) -> np.ndarray:
    """[..., 3, 3] cross-product matrices [a]× of vectors [..., 3]."""
    z = np.zeros(a.shape[:-1])
    return np.stack([np.stack([z, -a[..., 2], a[..., 1]], -1), np.stack([a[..., 2], z, -a[..., 0]], -1),
                     np.stack([-a[..., 1], a[..., 0], z], -1)], -2)


def _right_jacobian(rv: np.ndarray) -> np.ndarray:
    """[..., 3, 3] right Jacobian of SO(3) at rotation vectors [..., 3]: I − (1−cos θ)/θ² [ω]× + (θ−sin θ)/θ³ [ω]×²."""
    th = np.linalg.norm(rv, axis=-1)[..., None, None]
    W = _skew(rv)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    a = np.where(small, 0.5, (1 - np.cos(ths)) / ths**2)
    b = np.where(small, 1.0 / 6.0, (ths - np.sin(ths)) / ths**3)
    return np.eye(3) - a * W + b * (W @ W)


def _reproj_errors(P: np.ndarray, w2c: np.ndarray, K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """[N] pixel distance between uv [N, 2] and world points P [N, 3] seen by cameras w2c [N, 4, 4] (NaN: none)."""
    Xc = np.einsum("nij,nj->ni", w2c[:, :3, :3], P) + w2c[:, :3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(Xc[:, 2] > 1e-9, Xc[:, 2], np.nan)
        uvp = Xc[:, :2] / z[:, None] * np.diag(K)[:2] + K[:2, 2]
    return np.linalg.norm(uvp - uv, axis=1)


def _track_medians(track: np.ndarray, err: np.ndarray, n: int) -> np.ndarray:
    """[n] median of ``err`` per track id (inf for tracks with no finite value)."""
    med = np.full(n, np.inf)
    e = np.where(np.isfinite(err), err, np.inf)
    order = np.lexsort((e, track))
    b = np.searchsorted(track[order], np.arange(n + 1))
    cnt = b[1:] - b[:-1]
    has = cnt > 0
    mid = b[:-1] + (cnt - 1) // 2
    med[has] = e[order][mid[has]]
    return med


def _outlier_threshold(err: np.ndarray, config: SolverConfig) -> float:
    """Reprojection error (pixels) beyond which a track is an outlier: max(outlier_px, 3 robust σ)."""
    e = err[np.isfinite(err)]
    if e.size == 0:
        return config.outlier_px
    return float(max(config.outlier_px, 3.0 * 1.4826 * np.median(e)))


def _select_tracks(tracks: Tracks, config: SolverConfig):
    """Track ids used by the bundle adjustment: ≥ min_track_length observations, the longest first."""
    counts = np.bincount(tracks.track, minlength=tracks.num_tracks)
    ids = np.flatnonzero(counts >= config.min_track_length)
    if len(ids) > config.max_tracks:
        ids = ids[np.argsort(-counts[ids], kind="stable")[:config.max_tracks]]
    return np.sort(ids)


def _focal_std(problem: _Problem, res) -> float:
    """Standard deviation of log f from σ²·(JᵀJ)⁻¹ at the solution (NaN if singular)."""
    from scipy.sparse import csr_matrix, identity
    from scipy.sparse.linalg import spsolve

    J = csr_matrix(res.jac)
    m, n = J.shape
    sigma2 = 2.0 * float(res.cost) / max(1, m - n)
    JtJ = (J.T @ J).tocsc() + 1e-12 * identity(n, format="csc")
    e = np.zeros(n)
    e[problem.o_focal] = 1.0
    with np.errstate(all="ignore"):
        try:
            x = spsolve(JtJ, e)
        except Exception:  # noqa: BLE001 - a singular system means no information
            return float("nan")
    v = float(x[problem.o_focal]) * sigma2
    return float(np.sqrt(v)) if np.isfinite(v) and v >= 0 else float("nan")


def solve_poses(tracks: Tracks, K: np.ndarray, estimate_focal: bool = False,
                config: SolverConfig | None = None) -> SolverResult:
    """Poses (and optionally the focal length) of the camera that filmed ``tracks``; see the module docstring.

    Args:
        tracks: observations with depth samples (:func:`ex4d.poses.tracks.track_points`).
        K: [3, 3] intrinsics; its principal point is kept, its focal is the start value when estimated.
        estimate_focal: self-calibrate the focal length (fx = fy) in the bundle adjustment.
    """
    from scipy.optimize import least_squares

    from ..cameras import invert_w2c

    config = config or SolverConfig()
    T = tracks.num_frames
    K = np.asarray(K, dtype=np.float64)
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if estimate_focal:
        K = K.copy()
        K[0, 0] = K[1, 1] = search_focal(tracks, K, config)
    f0 = float(K[0, 0])
    w2c, pnp_ok, pnp_inl, _ = _pnp_init(tracks, K, config)
    w2c = interpolate_poses(w2c, pnp_ok)

    ids = _select_tracks(tracks, config)
    keep = np.isin(tracks.track, ids)
    sub = tracks.subset(keep)
    remap = np.full(max(tracks.num_tracks, 1), -1)
    remap[ids] = np.arange(len(ids))
    ot = remap[sub.track]
    of = sub.frame.astype(np.int64)

    # anchors: each track's first observation with a usable depth; tracks without one are not used
    has_d = np.isfinite(sub.depth)
    first = np.flatnonzero(has_d)
    first = first[np.unique(ot[first], return_index=True)[1]]
    anchor = np.full(len(ids), -1)
    anchor[ot[first]] = first
    live = anchor >= 0
    anchor_frame = np.where(live, of[np.maximum(anchor, 0)], 0)
    anchor_uv = sub.uv[np.maximum(anchor, 0)]
    zeta = np.log(np.where(live, sub.depth[np.maximum(anchor, 0)], 1.0))

    log_scale = np.zeros(T)
    shift = np.zeros(T)
    log_f = np.log(f0)
    lo, hi = np.log(f0 * config.focal_range[0]), np.log(f0 * config.focal_range[1])

    def make_problem(obs_ok, free):
        sel = np.flatnonzero(obs_ok)
        return sel, _Problem(ot[sel], of[sel], sub.uv[sel], sub.depth[sel], anchor_frame, anchor_uv, free, T,
                             config.depth_scales, estimate_focal, cx, cy, config,
                             use_shifts=config.depth_shifts and config.depth_scales)

    def obs_errors(problem, sel, w2c, log_f, zeta):
        X, _ = problem.world_points(w2c, log_f, zeta)
        err = np.full(len(ot), np.nan)
        err[sel] = _reproj_errors(X[ot[sel]], w2c[of[sel]], _K(float(np.exp(log_f)), cx, cy), sub.uv[sel])
        return err

    # tracks that disagree with the initial poses (moving objects, slipping tracks) are dropped before the BA
    obs_ok = live[ot]
    sel, problem = make_problem(obs_ok, np.zeros(0, np.int64))
    err = obs_errors(problem, sel, w2c, log_f, zeta)
    bad = _track_medians(ot[sel], err[sel], len(ids)) > _outlier_threshold(err[sel], config)
    obs_ok &= ~bad[ot]
    focal_std = float("nan")
    problem = None
    losses = (["soft_l1"] if config.align_pass and config.depth_scales else []) + ["cauchy"] * config.rounds
    for loss in losses:
        per_frame = np.bincount(of[obs_ok], minlength=T)
        free = np.array([t for t in range(1, T) if per_frame[t] >= config.min_inliers], dtype=np.int64)
        if not obs_ok.any():
            break
        sel, problem = make_problem(obs_ok, free)
        x0 = problem.pack(w2c, log_scale, log_f, zeta, shift)
        lb = np.full(problem.n, -np.inf)
        ub = np.full(problem.n, np.inf)
        if estimate_focal:
            lb[problem.o_focal], ub[problem.o_focal] = lo, hi
            x0[problem.o_focal] = np.clip(x0[problem.o_focal], lo + 1e-9, hi - 1e-9)
        args = (w2c, log_scale, log_f, shift)
        res = least_squares(problem.residuals, x0, jac=problem.jacobian, bounds=(lb, ub),
                            method="trf", tr_solver="lsmr", loss=loss, f_scale=config.robust,
                            x_scale="jac", max_nfev=config.max_nfev if loss == "cauchy" else config.align_nfev, args=args,
                            tr_options={"atol": 1e-10, "btol": 1e-10})
        w2c, log_scale, log_f, zeta, _, shift = problem.unpack(res.x, *args)
        if loss != "cauchy":
            continue  # the alignment pass: the robust rounds follow (they judge outliers and the focal)
        if estimate_focal:
            # errors along one track are correlated (the same tracking bias every frame): count tracks, not
            # observations, as independent samples
            n_obs = max(1, int(obs_ok.sum()))
            n_tr = max(1, len(np.unique(ot[obs_ok])))
            focal_std = _focal_std(problem, res) * float(np.exp(log_f)) * float(np.sqrt(n_obs / n_tr))
        # outliers: tracks whose median reprojection error is large (moving objects), and single bad rows
        err = obs_errors(problem, sel, w2c, log_f, zeta)
        e = err[sel]
        thr = _outlier_threshold(e, config)
        med = _track_medians(ot[sel], e, len(ids))
        bad_obs = (med[ot[sel]] > thr) | (e > 2 * thr)
        # a track whose anchor is dropped cannot stay
        before = int(obs_ok.sum())
        obs_ok[sel[bad_obs]] = False
        obs_ok &= obs_ok[np.maximum(anchor, 0)][ot] & live[ot]
        if before - int(obs_ok.sum()) <= config.refit_fraction * before:
            break  # (almost) nothing dropped: another round would find the same solution

    points = problem.world_points(w2c, log_f, zeta)[0] if problem is not None else np.zeros((len(ids), 3))
    # report on the final inliers
    reproj = np.full(T, np.nan)
    depth_err = np.full(T, np.nan)
    ba_inl = np.zeros(T, np.int64)
    kept_tracks = np.unique(ot[obs_ok]) if obs_ok.any() else np.zeros(0, np.int64)
    if problem is not None and obs_ok.any():
        Kf = _K(float(np.exp(log_f)), cx, cy)
        sel = np.flatnonzero(obs_ok)
        P = points[ot[sel]]
        Xc = np.einsum("nij,nj->ni", w2c[of[sel], :3, :3], P) + w2c[of[sel], :3, 3]
        z = np.maximum(Xc[:, 2], 1e-9)
        uvp = Xc[:, :2] / z[:, None] * Kf[0, 0] + [cx, cy]
        err = np.linalg.norm(uvp - sub.uv[sel], axis=1)
        dep = np.where(np.isfinite(sub.depth[sel]), sub.depth[sel], np.nan)
        if shift.any():
            base = 1.0 / (dep * np.exp(log_scale[of[sel]]))
            derr = np.abs(np.log(z) + np.log(np.maximum(base + shift[of[sel]], 0.5 * base)))
        else:
            derr = np.abs(np.log(z) - np.log(dep) - log_scale[of[sel]])
        not_anchor = of[sel] != anchor_frame[ot[sel]]  # anchors reproject exactly by construction
        for t in range(T):
            m = of[sel] == t
            ba_inl[t] = int(m.sum())
            if (m & not_anchor).any():
                reproj[t] = float(np.median(err[m & not_anchor]))
                dm = derr[m][np.isfinite(derr[m])]
                depth_err[t] = float(np.median(dm)) if dm.size else np.nan
    solved = np.zeros(T, bool)
    solved[0] = True
    if problem is not None:
        solved[problem.free] = True
    w2c = interpolate_poses(w2c, solved)
    if config.depth_scales:
        log_scale = np.interp(np.arange(T), np.flatnonzero(solved), log_scale[solved])
        shift = np.interp(np.arange(T), np.flatnonzero(solved), shift[solved])
    status = np.where(solved, "ok", "interpolated").astype(object)
    status[0] = "reference"
    return SolverResult(w2c=w2c, focal=float(np.exp(log_f)), focal_std=focal_std if estimate_focal else float("nan"),
                        depth_scale=np.exp(log_scale), depth_shift=shift, status=status.astype(str),
                        pnp_inliers=pnp_inl,
                        ba_inliers=ba_inl, reproj_px=reproj, depth_err=depth_err, num_tracks=int(len(kept_tracks)),
                        points=points[kept_tracks], point_tracks=ids[kept_tracks])
