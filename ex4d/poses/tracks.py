"""Point tracks through a video: OpenCV corners followed by pyramidal Lucas–Kanade, lifted with the depth.

Corners (``cv2.goodFeaturesToTrack``) are detected at *keyframes* and followed
frame to frame with ``cv2.calcOpticalFlowPyrLK``; a step is kept only if the
backward flow returns within ``fb_max_px`` of where it started (a
forward–backward check, which drops points that slide along edges or get
occluded). Each step is then refined against the point's keyframe image
(Lucas–Kanade from the keyframe, started at the chained position), so the
small errors of consecutive steps do not add up to a drift. A frame where
almost every track fails (a blank, blurred or textureless frame) is skipped:
the next frame is tracked from the last good one, so short gaps are bridged
and the poses on both sides stay in one chain. A new keyframe is taken when the surviving tracks get few or the
last keyframe is ``keyframe_interval`` frames old; it tops the tracks up with
corners away from the existing ones, so textured parts of the view are always
covered and textureless stretches simply have fewer tracks.

Each observation samples the depth at its pixel; where the depth jumps within
±1 px (a depth edge: corners love them) the sample is marked unusable, since
it could belong to either side.

Frames and depth are read one index at a time (``frames[t]``, ``depth[t]``),
so memory stays bounded for long videos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import check

__all__ = ["TrackConfig", "Tracks", "track_points", "sample_depth"]


@dataclass(frozen=True)
class TrackConfig:
    """Options of the tracker (saved in config.json with the poses options)."""

    max_tracks: int = 500           #: corners alive at a time (at most)
    min_distance: float = 0.025     #: minimum corner spacing, fraction of the longer image side
    quality: float = 0.005          #: goodFeaturesToTrack quality level (relative to the best corner)
    keyframe_interval: int = 8      #: a new keyframe at least this often (frames)
    refill_below: float = 0.7       #: ... or when fewer than this fraction of max_tracks survive
    fb_max_px: float = 0.7          #: forward–backward consistency limit (pixels, at the tracking size)
    win: int = 15                   #: Lucas–Kanade window (pixels, at the tracking size)
    levels: int = 3                 #: pyramid levels
    track_size: int = 512           #: frames are tracked at this longer side at most (coordinates are rescaled)
    blur_px: float = 1.0            #: Gaussian blur (σ, pixels at the tracking size) before tracking
    lost_fraction: float = 0.2      #: a frame where fewer tracks survive is skipped (blank, blurred) ...
    max_gap: int = 12               #: ... up to this many frames in a row; then tracking starts afresh
    depth_edge: float = 0.05        #: a depth sample is unusable where its 3×3 neighbourhood varies more (relative)

    def __post_init__(self):
        check(self.max_tracks >= 16, f"max_tracks must be ≥ 16, got {self.max_tracks}")
        check(0 < self.min_distance < 0.5, f"min_distance must be in (0, 0.5), got {self.min_distance}")
        check(self.keyframe_interval >= 1, f"keyframe_interval must be ≥ 1, got {self.keyframe_interval}")
        check(0 < self.refill_below <= 1, f"refill_below must be in (0, 1], got {self.refill_below}")
        check(self.fb_max_px > 0, f"fb_max_px must be > 0, got {self.fb_max_px}")
        check(self.track_size >= 64, f"track_size must be ≥ 64, got {self.track_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tracks:
    """Observations of point tracks (one row per track and frame where it was seen).

    ===========  ===============  ======================================================
    field        shape, dtype     meaning
    ===========  ===============  ======================================================
    track        [N] int32        track id (0 … num_tracks − 1)
    frame        [N] int32        frame index; rows sorted by (frame, track)
    uv           [N, 2] float64   pixel position (integer-centred pixels, full resolution)
    depth        [N] float64      z-depth sampled there (NaN where unusable: a depth edge)
    keyframes    [K] int32        frames where corners were detected
    num_frames   int              T
    ===========  ===============  ======================================================
    """

    track: np.ndarray
    frame: np.ndarray
    uv: np.ndarray
    depth: np.ndarray
    keyframes: np.ndarray
    num_frames: int

    @property
    def num_tracks(self) -> int:
        return int(self.track.max()) + 1 if self.track.size else 0

    def per_frame_count(self) -> np.ndarray:
        """[T] int: tracks observed in each frame."""
        return np.bincount(self.frame, minlength=self.num_frames)

    def subset(self, keep: np.ndarray) -> "Tracks":
        """Tracks with only the rows where ``keep`` [N] bool is True (ids unchanged)."""
        return Tracks(self.track[keep], self.frame[keep], self.uv[keep], self.depth[keep], self.keyframes,
                      self.num_frames)


def sample_depth(depth: np.ndarray, uv: np.ndarray, edge: float) -> np.ndarray:
    """z-depth [N] float64 at pixels uv [N, 2] (bilinear), NaN outside the image or where it jumps.

    ``depth`` is [H, W]; a sample is NaN where the 3×3 pixels around it span more than ``edge``
    (relative): on a depth edge the corner may belong to either surface.
    """
    H, W = depth.shape
    u, v = uv[:, 0], uv[:, 1]
    inside = (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, W - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, H - 2)
    fu, fv = np.clip(u - u0, 0, 1), np.clip(v - v0, 0, 1)
    d = np.asarray(depth, dtype=np.float64)
    z = (d[v0, u0] * (1 - fu) * (1 - fv) + d[v0, u0 + 1] * fu * (1 - fv) + d[v0 + 1, u0] * (1 - fu) * fv
         + d[v0 + 1, u0 + 1] * fu * fv)
    lo = np.full(u.shape, np.inf)
    hi = np.zeros(u.shape)
    for dy in (-1, 0, 1, 2):
        for dx in (-1, 0, 1, 2):
            s = d[np.clip(v0 + dy, 0, H - 1), np.clip(u0 + dx, 0, W - 1)]
            lo, hi = np.minimum(lo, s), np.maximum(hi, s)
    ok = inside & np.isfinite(z) & (z > 0) & (hi <= lo * (1 + edge))
    return np.where(ok, z, np.nan)


def _gray(frame: np.ndarray, scale: float, blur: float) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        g = cv2.resize(g, (round(g.shape[1] * scale), round(g.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    if blur > 0:  # aliased (unfiltered) edges bias Lucas–Kanade by up to half a pixel; a slight blur removes that
        g = cv2.GaussianBlur(g, (0, 0), blur)
    return g


def track_points(frames, depth, config: TrackConfig | None = None, progress: bool = False) -> Tracks:
    """Point tracks over ``frames`` [T, H, W, 3] uint8 with ``depth`` [T, H, W] z-depth sampled at each.

    Both are indexed per frame only (``frames[t]``, ``depth[t]``): arrays, memory maps or lazy
    sequences of frames work alike. See the module docstring for the method.
    """
    import cv2

    config = config or TrackConfig()
    T = len(frames)
    check(T >= 1, "no frames to track")
    H, W = np.asarray(frames[0]).shape[:2]
    scale = min(1.0, config.track_size / max(H, W))
    min_dist = max(2.0, config.min_distance * max(H, W) * scale)
    lk = dict(winSize=(config.win, config.win), maxLevel=config.levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))

    def to_full(p):  # tracking-size coordinates → full-resolution integer-centred pixels
        return (p + 0.5) / scale - 0.5

    rows_t, rows_f, rows_uv, rows_d = [], [], [], []
    keyframes = []
    pts = np.zeros((0, 2), np.float32)      # current positions at the tracking size
    ids = np.zeros(0, np.int64)
    kf_of = np.zeros(0, np.int64)           # keyframe where each live track was detected
    kf_pts = np.zeros((0, 2), np.float32)   # its position there
    kf_gray: dict[int, np.ndarray] = {}     # grey images of keyframes that still have live tracks
    next_id = 0
    since_kf = 0
    lost = 0
    prev = None
    iterator = range(T)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="poses: track", unit="frame", leave=False)
    for t in iterator:
        gray = _gray(np.asarray(frames[t]), scale, config.blur_px)
        h, w = gray.shape
        if prev is not None and len(pts):
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, gray, pts.reshape(-1, 1, 2), None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev, nxt, None, **lk)
            nxt, back = nxt.reshape(-1, 2), back.reshape(-1, 2)
            fb = np.linalg.norm(back - pts, axis=1)
            ok = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < config.fb_max_px)
            # frame-to-frame steps drift (a random walk of ~0.1 px a step): re-anchor every point on its
            # keyframe's image, starting from the chained position; a point that does not agree is lost
            for k in np.unique(kf_of[ok]):
                m = np.flatnonzero(ok & (kf_of == k))
                ref, st3, _ = cv2.calcOpticalFlowPyrLK(kf_gray[k], gray, kf_pts[m].reshape(-1, 1, 2),
                                                       nxt[m].reshape(-1, 1, 2).copy(),
                                                       flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
                ref = ref.reshape(-1, 2)
                agree = (st3.ravel() == 1) & (np.linalg.norm(ref - nxt[m], axis=1) < 2.0)
                nxt[m[agree]] = ref[agree]
                ok[m[~agree]] = False
            ok &= (nxt[:, 0] >= 0) & (nxt[:, 0] <= w - 1) & (nxt[:, 1] >= 0) & (nxt[:, 1] <= h - 1)
            if int(ok.sum()) < config.lost_fraction * len(pts) and len(pts) >= 16 and lost < config.max_gap:
                # a blank or blurred frame: keep the last good frame as the reference and track from it again
                # on the next frame, so the tracks (and the chain of poses) bridge the gap
                lost += 1
                continue
            lost = 0
            pts, ids, kf_of, kf_pts = nxt[ok], ids[ok], kf_of[ok], kf_pts[ok]
        since_kf += 1
        if (t == 0 or since_kf >= config.keyframe_interval or len(pts) < config.refill_below * config.max_tracks):
            want = config.max_tracks - len(pts)
            if want > 0:
                mask = np.full(gray.shape, 255, np.uint8)
                for x, y in pts:
                    cv2.circle(mask, (int(round(x)), int(round(y))), int(min_dist), 0, -1)
                new = cv2.goodFeaturesToTrack(gray, maxCorners=want, qualityLevel=config.quality,
                                              minDistance=min_dist, mask=mask, blockSize=7)
                if new is not None and len(new):
                    new = new.reshape(-1, 2).astype(np.float32)
                    pts = np.concatenate([pts, new])
                    ids = np.concatenate([ids, np.arange(next_id, next_id + len(new))])
                    kf_of = np.concatenate([kf_of, np.full(len(new), t)])
                    kf_pts = np.concatenate([kf_pts, new])
                    kf_gray[t] = gray
                    next_id += len(new)
            keyframes.append(t)
            since_kf = 0
        for k in [k for k in kf_gray if not np.any(kf_of == k)]:
            del kf_gray[k]
        if len(pts):
            uv = to_full(pts.astype(np.float64))
            rows_t.append(ids.copy())
            rows_f.append(np.full(len(ids), t))
            rows_uv.append(uv)
            rows_d.append(sample_depth(np.asarray(depth[t]), uv, config.depth_edge))
        prev = gray
    if not rows_t:
        empty = np.zeros(0)
        return Tracks(empty.astype(np.int32), empty.astype(np.int32), np.zeros((0, 2)), empty,
                      np.array(keyframes, np.int32), T)
    track = np.concatenate(rows_t).astype(np.int32)
    frame = np.concatenate(rows_f).astype(np.int32)
    order = np.lexsort((track, frame))
    return Tracks(track[order], frame[order], np.concatenate(rows_uv)[order], np.concatenate(rows_d)[order],
                  np.array(keyframes, np.int32), T)
