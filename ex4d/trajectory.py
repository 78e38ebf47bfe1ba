"""Camera trajectories: where the novel-view camera is at every frame.

A :class:`Trajectory` holds per-frame OpenCV world-to-camera matrices and
intrinsics, with the world frame = the source camera (``w2c = I`` is the
input view). Build one with :func:`make_trajectory` from a *spec*:

* a preset name (see :data:`PRESETS`; ``--help`` prints them),
* a ``.json`` keyframe file (schema below) or a ``cameras.json`` written by
  ex4d (:mod:`ex4d.io.camera_files`),
* a ``.npz`` camera file of the original EX-4D (``camera_180.npz``).

Parametric camera motion (``orbit``, ``swing``, ``dolly``, ``zoom``, ``dolly-zoom``, keyframes)
----------------------------------------------------------------------------------------------
The camera moves on a sphere around a **pivot** on the source optical axis,
P = (0, 0, pivot_depth), always looking at it, so the pivot stays at the
principal point and the horizon stays level (no roll):

* ``yaw`` (degrees, [−90, 90]): orbit about the vertical axis through P;
  positive moves the camera to its right (+x), as the original presets do.
* ``pitch`` (degrees, [−90, 90]): orbit over the top; positive moves the
  camera up (−y in OpenCV axes), looking down on the subject.
* ``dolly`` (fraction of the pivot distance, < 1): moves the camera along
  its viewing axis; positive pushes in (distance to P becomes
  pivot_depth·(1 − dolly)), negative pulls out.
* ``zoom`` (focal multiplier, > 0): fx, fy (and skew) scale, principal
  point fixed. Interpolated geometrically (zoom**s) so zoom speed looks even.

Camera centre C = P − pivot_depth·(1 − dolly)·d, d = (−sin yaw·cos pitch,
sin pitch, cos yaw·cos pitch); camera-to-world rotation R_y(−yaw)·R_x(−pitch).

``pivot_depth`` defaults to the median depth of the central third (in each
dimension) of frame 0's depth map: a robust "subject distance" that ignores
the borders and isolated outliers. ``ease`` shapes the progress
s ∈ [0, 1] over the clip: ``smoothstep`` (default: 3s²−2s³, starts and stops at
rest, so frame 1 stays close to the source view), ``smootherstep``
(6s⁵−15s⁴+10s³, also zero acceleration at the ends) or ``linear`` (as the
original presets).

Keyframe JSON schema
--------------------
::

    {
      "keyframes": [                      # ≥ 1, strictly increasing in time
        {"t": 0.0, "yaw": 0, "pitch": 0, "dolly": 0, "zoom": 1},
        {"t": 0.5, "yaw": 45, "pitch": 10},
        {"frame": 48, "yaw": 0, "zoom": 1.3}
      ],
      "interpolation": "cubic",           # optional: "cubic" (default) | "linear"
      "pivot_depth": 2.0,                 # optional; the pivot_depth option overrides it
      "description": "free text"          # optional, ignored
    }

Each keyframe has exactly one time: ``t`` (normalised, 0 = first frame,
1 = last frame) or ``frame`` (integer index). The channels ``yaw``, ``pitch``,
``dolly``, ``zoom`` are each optional; every channel is interpolated over the
keyframes that set it (as in animation software), holds its first/last keyed
value before/after them, and is 0 (``zoom``: 1) if never set. One keyframe
gives a static camera. ``cubic`` is a C1 monotone cubic (PCHIP slopes, zero
slope at a channel's first and last key): it never overshoots a keyed value
(so angles stay within the keyed range) and the camera starts and stops at
rest. ``linear`` is piecewise linear. Zoom is interpolated in log space.

Note that EX-4D's pipeline shows the *input* frame as frame 0; a path whose
frame 0 is not the source view (see :attr:`Trajectory.starts_at_source`)
makes sense only for pipelines that render every frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cameras import check_intrinsics, check_w2c, look_at_w2c
from .errors import Ex4dError, check

__all__ = [
    "Trajectory",
    "PRESETS",
    "PRESET_ALIASES",
    "EASINGS",
    "ORIGINAL_NUM_FRAMES",
    "make_trajectory",
    "relative_angles",
    "orbit_w2c",
    "zoom_intrinsics",
    "pivot_depth_from_depth",
    "original_radius",
    "original_rounds",
    "interpolate_keyframes",
]

#: The original's trajectories are defined for 49 frames (``fixed_frame`` in recon.py).
ORIGINAL_NUM_FRAMES = 49
#: The original sets the outermost pixel ring of the depth to this before taking min(depth).
_ORIGINAL_BORDER_DEPTH = 100.0
_ORIGINAL_RADIUS_OFFSET = 0.15
_MAX_ANGLE = 90.0

_ORIGINAL_HELP = ("θ = linspace(0, {a}°·rounds); eye = (r·sinθ, 0.2·r·(|cosθ|−1), r−r·|cosθ|) looking at (0, 0, r), "
                  "r = min depth of frame 0 + 0.15: orbits {a}° to the right rising slightly (ends at yaw {a}°, "
                  "pitch ≈{p:.0f}°, with 49 frames). rounds = T/49 (49/T below 49 frames), as the original. "
                  "Options: radius, rounds")

#: Preset name → one-line description (the CLI's --help). Options are keyword arguments of make_trajectory.
PRESETS: dict[str, str] = {
    "ex4d-180": ("The original EX-4D default (its '--cam 180'), reproduced exactly: θ = linspace(0, 2π·rounds); "
                 "eye = (r·sinθ, 0.2·r·(cosθ−1), 0) looking at (0, 0, r), r = min depth of frame 0 + 0.15. Despite "
                 "the name the view only swings about ±45° of yaw (right, back, left, back) and dips to ≈22° "
                 "pitch mid-clip (49 frames; rounds = T/49, 49/T below 49 frames). Options: radius, rounds"),
    **{f"ex4d-{a}": f"The original's '--cam {a}', exactly: " + _ORIGINAL_HELP.format(
        a=a, p=math.degrees(math.atan(0.2 * (1.0 - math.cos(math.radians(a)))))) for a in (30, 60, 90)},
    "static": "The source camera on every frame (no motion). No options",
    "orbit": ("Orbit around the pivot from the source view to (yaw, pitch), with optional dolly and zoom, eased. "
              "Options: yaw=45 pitch=0 (degrees, each in [−90, 90]; +yaw moves right, +pitch moves up), "
              "dolly=0 (fraction of the pivot distance, + pushes in, < 1), zoom=1 (focal multiplier), "
              "pivot_depth=median of frame 0's central third, ease=smoothstep|smootherstep|linear"),
    "swing": ("Swing 0 → +a → −a → 0 (a = yaw, pitch), stopping at each extreme (frames ¼ and ¾ of the clip); "
              "dolly/zoom peak at both extremes. Options as orbit, default yaw=30"),
    "dolly": "Push in along the view axis. Options as orbit, default dolly=0.3 (30% of the pivot distance), yaw=0",
    "zoom": "Zoom the lens, camera fixed. Options as orbit, default zoom=1.5, yaw=0",
    "dolly-zoom": ("'Vertigo' shot: dolly while zooming to keep the pivot plane the same size (zoom = 1 − dolly); "
                   "the background appears to grow (pull out) or shrink (push in). Options as orbit without zoom, default dolly=−0.5 (pull out), yaw=0"),
}
#: The original's ``--cam`` values, accepted as aliases.
PRESET_ALIASES = {"180": "ex4d-180", "30": "ex4d-30", "60": "ex4d-60", "90": "ex4d-90"}

#: Easing functions s ∈ [0, 1] → [0, 1] with f(0) = 0, f(1) = 1.
EASINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda s: s,
    "smoothstep": lambda s: s * s * (3.0 - 2.0 * s),
    "smootherstep": lambda s: s * s * s * (s * (6.0 * s - 15.0) + 10.0),
}
_DEFAULT_EASE = "smoothstep"

_MOTION_DEFAULTS = {
    "orbit": {"yaw": 45.0, "pitch": 0.0, "dolly": 0.0, "zoom": 1.0},
    "swing": {"yaw": 30.0, "pitch": 0.0, "dolly": 0.0, "zoom": 1.0},
    "dolly": {"yaw": 0.0, "pitch": 0.0, "dolly": 0.3, "zoom": 1.0},
    "zoom": {"yaw": 0.0, "pitch": 0.0, "dolly": 0.0, "zoom": 1.5},
    "dolly-zoom": {"yaw": 0.0, "pitch": 0.0, "dolly": -0.5},
}
_CHANNEL_REST = {"yaw": 0.0, "pitch": 0.0, "dolly": 0.0, "zoom": 1.0}


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Per-frame cameras of a novel-view path (arrays are read-only).

    ========== ============== ======================================================
    field      shape / type   meaning
    ========== ============== ======================================================
    ``w2c``    [T, 4, 4] f64  OpenCV world-to-camera; world = source camera
    ``K``      [T, 3, 3] f64  intrinsics in pixels at the render size (zoom varies them)
    ``name``   str            preset name, ``"keyframes"`` or ``"file"``
    ``params`` dict           JSON-able; ``make_trajectory(**params, num_frames=T, K=K0,
                              width=W, height=H)`` rebuilds it without depth
    ``frame``  str            what the w2c are relative to: "source" (each frame's source
                              camera; presets, keyframes, files without the field) or
                              "world" (a camera file that says so); the run's
                              ``--path-frame`` decides for presets and keyframes
    ========== ============== ======================================================
    """

    w2c: np.ndarray
    K: np.ndarray
    name: str
    params: dict = field(default_factory=dict)
    frame: str = "source"

    def __post_init__(self):
        w2c = check_w2c(self.w2c, f"trajectory {self.name!r} w2c")
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (w2c.shape[0], 3, 3):
            raise ValueError(f"trajectory K must be [{w2c.shape[0]}, 3, 3], got {K.shape}")
        for a, attr in ((w2c.copy(), "w2c"), (K.copy(), "K")):
            a.setflags(write=False)
            object.__setattr__(self, attr, a)

    @property
    def num_frames(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def starts_at_source(self) -> bool:
        """True if frame 0 is the source view (identity w2c; K equal to the source K is the caller's check)."""
        return bool(np.allclose(self.w2c[0], np.eye(4), atol=1e-6))


# ----------------------------------------------------------------------------- geometry

def orbit_w2c(yaw_deg, pitch_deg, dolly, pivot_depth: float) -> np.ndarray:
    """OpenCV w2c [T, 4, 4] of cameras orbiting the pivot (0, 0, pivot_depth) and looking at it.

    Args:
        yaw_deg, pitch_deg: [T] degrees (see the module docstring for signs).
        dolly: [T] fraction of ``pivot_depth``; the distance to the pivot is
            pivot_depth·(1 − dolly).
        pivot_depth: scene units along the source optical axis, > 0.

    R_c2w = R_y(−yaw)·R_x(−pitch) = [[cψ, sψ·sφ, −sψ·cφ], [0, cφ, sφ], [sψ, −cψ·sφ, cψ·cφ]];
    camera centre C = P − dist·R_c2w[:, 2]. Zero angles and dolly give the identity.
    """
    psi = np.radians(np.asarray(yaw_deg, dtype=np.float64))
    phi = np.radians(np.asarray(pitch_deg, dtype=np.float64))
    dolly = np.asarray(dolly, dtype=np.float64)
    psi, phi, dolly = np.broadcast_arrays(np.atleast_1d(psi), phi, dolly)
    cy, sy, cp, sp = np.cos(psi), np.sin(psi), np.cos(phi), np.sin(phi)
    R_c2w = np.empty(psi.shape + (3, 3))
    R_c2w[..., 0, :] = np.stack([cy, sy * sp, -sy * cp], -1)
    R_c2w[..., 1, :] = np.stack([np.zeros_like(cy), cp, sp], -1)
    R_c2w[..., 2, :] = np.stack([sy, -cy * sp, cy * cp], -1)
    dist = pivot_depth * (1.0 - dolly)
    C = np.array([0.0, 0.0, pivot_depth]) - dist[..., None] * R_c2w[..., :, 2]
    w2c = np.zeros(psi.shape + (4, 4))
    R_w2c = np.swapaxes(R_c2w, -1, -2)
    w2c[..., :3, :3] = R_w2c
    w2c[..., :3, 3] = -(R_w2c @ C[..., None])[..., 0]
    w2c[..., 3, 3] = 1.0
    return w2c


def zoom_intrinsics(K: np.ndarray, zoom) -> np.ndarray:
    """Per-frame K [T, 3, 3]: ``K`` [3, 3] with fx, fy and skew multiplied by ``zoom`` [T]; principal point kept."""
    zoom = np.atleast_1d(np.asarray(zoom, dtype=np.float64))
    Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), zoom.shape + (3, 3)).copy()
    Ks[..., 0, 0] *= zoom
    Ks[..., 0, 1] *= zoom
    Ks[..., 1, 1] *= zoom
    return Ks


def relative_angles(w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw_deg [T], pitch_deg [T]) of each camera's viewing direction relative to the source camera.

    With d = the camera's optical axis in world (= source camera) coordinates,
    yaw = atan2(−d_x, d_z) and pitch = atan2(d_y, hypot(d_x, d_z)): the same
    signs as the orbit options (a camera orbiting right looks left, so +yaw;
    one above looks down, so +pitch). For cameras that look at the pivot these
    are exactly the orbit angles.
    """
    d = check_w2c(w2c)[:, 2, :3]  # rows of R_w2c: the third is the optical axis in world coordinates
    yaw = np.degrees(np.arctan2(-d[:, 0], d[:, 2]))
    pitch = np.degrees(np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2])))
    return yaw, pitch


def pivot_depth_from_depth(depth0: np.ndarray) -> float:
    """Robust subject distance: median of the finite, positive z-depths in the central third of ``depth0`` [H, W]."""
    depth0 = np.asarray(depth0, dtype=np.float64)
    H, W = depth0.shape
    centre = depth0[H // 3: H - H // 3, W // 3: W - W // 3]
    valid = centre[np.isfinite(centre) & (centre > 0)]
    check(valid.size > 0, "cannot choose a pivot: frame 0's depth has no finite positive values in its centre; "
                          "pass pivot_depth explicitly")
    return float(np.median(valid))


def original_radius(depth0: np.ndarray) -> float:
    """r of the original presets: min(depth0 with its outermost pixel ring set to 100) + 0.15.

    The original takes the minimum after overwriting the border ring with its
    back-plane depth 100, so the border pixels never count (and r ≤ 100.15).
    """
    d = np.array(depth0, dtype=np.float64)
    d[0, :] = d[-1, :] = d[:, 0] = d[:, -1] = _ORIGINAL_BORDER_DEPTH
    r = float(np.nanmin(d)) + _ORIGINAL_RADIUS_OFFSET
    check(math.isfinite(r) and r > 0, f"frame 0's depth gives a non-positive orbit radius {r}; is it depth, not disparity?")
    return r


def original_rounds(num_frames: int) -> float:
    """The original's ``rounds``: T/49 for T ≥ 49, else 49/T (so *fewer* frames also sweep *further*)."""
    n0 = ORIGINAL_NUM_FRAMES
    return n0 / num_frames if n0 > num_frames else num_frames / n0


def _original_w2c(kind: str, num_frames: int, radius: float, rounds: float) -> np.ndarray:
    """w2c [T, 4, 4] of the original preset ``kind`` ("180", "30", "60", "90")."""
    r = radius
    if kind == "180":
        theta = np.linspace(0.0, 2.0 * rounds * np.pi, num_frames)
        eyes = np.stack([np.sin(theta) * r, (np.cos(theta) - 1.0) * r * 0.2, np.zeros_like(theta)], -1)
    else:
        theta = np.linspace(0.0, math.radians(int(kind)) * rounds, num_frames)
        c = np.abs(np.cos(theta))
        eyes = np.stack([np.sin(theta) * r, (c - 1.0) * r * 0.2, r - r * c], -1)
    target = np.array([0.0, 0.0, r])
    return np.stack([look_at_w2c(e, target, down=(0.0, 1.0, 0.0)) for e in eyes])


# ----------------------------------------------------------------------------- options

def _number(name: str, value, lo: float | None = None, hi: float | None = None, *, lo_open=False,
            hi_open=False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    check(ok and math.isfinite(float(value)), f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if lo is not None:
        check(v > lo if lo_open else v >= lo, f"{name} must be {'>' if lo_open else '≥'} {lo:g}, got {v:g}")
    if hi is not None:
        check(v < hi if hi_open else v <= hi, f"{name} must be {'<' if hi_open else '≤'} {hi:g}, got {v:g}")
    return v


def _channel_value(name: str, value, where: str = "") -> float:
    label = f"{where}{name}"
    if name in ("yaw", "pitch"):
        v = _number(label, value)
        check(-_MAX_ANGLE <= v <= _MAX_ANGLE, f"{label} must be in [−90, 90] degrees, got {v:g}")
        return v
    if name == "dolly":
        return _number(label + " (fraction of the pivot distance; 1 would reach the pivot)", value, hi=1.0,
                       hi_open=True)
    return _number(label + " (focal multiplier)", value, lo=0.0, lo_open=True)


def _check_options(spec: str, options: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(options) - set(allowed))
    check(not extra, f"trajectory {spec!r} does not take option(s) {', '.join(extra)}; "
                     f"it accepts: {', '.join(allowed) if allowed else 'none'}")


def _resolve_pivot(pivot_depth, depth0) -> float:
    if pivot_depth is not None:
        return _number("pivot_depth", pivot_depth, lo=0.0, lo_open=True)
    check(depth0 is not None, "pivot_depth is needed: pass depth0 (frame 0's depth) or pivot_depth")
    return pivot_depth_from_depth(depth0)


def _ease(name) -> Callable[[np.ndarray], np.ndarray]:
    check(name in EASINGS, f"ease must be one of {', '.join(EASINGS)}, got {name!r}")
    return EASINGS[name]


# ----------------------------------------------------------------------------- motions

def _progress(num_frames: int) -> np.ndarray:
    """s [T] = linspace(0, 1, T) (a single frame sits at s = 0)."""
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def _swing_profile(s: np.ndarray, ease) -> np.ndarray:
    """p [T] in [−1, 1]: 0 → +1 (s = ¼) → −1 (s = ¾) → 0, each leg eased (so the swing stops at both extremes)."""
    legs = [(0.0, 0.25, 0.0, 1.0), (0.25, 0.75, 1.0, -1.0), (0.75, 1.0, -1.0, 0.0)]
    p = np.zeros_like(s)
    for s0, s1, p0, p1 in legs:
        m = (s >= s0) & (s <= s1)
        p[m] = p0 + (p1 - p0) * ease((s[m] - s0) / (s1 - s0))
    return p


def _motion_channels(preset: str, num_frames: int, values: dict, ease) -> dict[str, np.ndarray]:
    """Per-frame yaw, pitch, dolly, zoom [T] of a parametric preset."""
    s = _progress(num_frames)
    if preset == "swing":
        p = _swing_profile(s, ease)
        ch = {"yaw": values["yaw"] * p, "pitch": values["pitch"] * p, "dolly": values["dolly"] * p * p,
              "zoom": values.get("zoom", 1.0) ** (p * p)}
    else:
        e = ease(s)
        ch = {"yaw": values["yaw"] * e, "pitch": values["pitch"] * e, "dolly": values["dolly"] * e,
              "zoom": values.get("zoom", 1.0) ** e}
    if preset == "dolly-zoom":
        ch["zoom"] = 1.0 - ch["dolly"]  # image size of the pivot plane ∝ f / distance stays constant
    return ch


def _trajectory_from_channels(ch: dict, pivot: float, K: np.ndarray, name: str, params: dict) -> Trajectory:
    return Trajectory(w2c=orbit_w2c(ch["yaw"], ch["pitch"], ch["dolly"], pivot), K=zoom_intrinsics(K, ch["zoom"]),
                      name=name, params=params)


# ----------------------------------------------------------------------------- keyframes

def _parse_keyframes(keyframes, num_frames: int, where: str) -> list[tuple[float, dict]]:
    """[(u in [0, 1], {channel: value})] sorted, validated."""
    check(isinstance(keyframes, list) and len(keyframes) >= 1,
          f"{where}: 'keyframes' must be a non-empty list of objects like "
          '{"t": 0.5, "yaw": 30}')
    out, prev = [], None
    for i, kf in enumerate(keyframes):
        w = f"{where}: keyframes[{i}]"
        check(isinstance(kf, dict), f"{w} must be an object, got {type(kf).__name__}")
        extra = sorted(set(kf) - {"t", "frame", *_CHANNEL_REST})
        check(not extra, f"{w} has unknown key(s) {', '.join(extra)}; allowed: t or frame, yaw, pitch, dolly, zoom")
        check(("t" in kf) != ("frame" in kf), f"{w} needs exactly one of 't' (0..1) or 'frame' (index)")
        if "t" in kf:
            u = _number(f"{w}.t", kf["t"], 0.0, 1.0)
            time_label = f"t={u:g}"
        else:
            f = kf["frame"]
            check(isinstance(f, (int, np.integer)) and not isinstance(f, bool) and 0 <= f < num_frames,
                  f"{w}.frame must be an integer frame index in [0, {num_frames - 1}] (num_frames={num_frames}), "
                  f"got {f!r}")
            u = f / (num_frames - 1) if num_frames > 1 else 0.0
            time_label = f"frame={f}"
        if prev is not None:
            check(u > prev[0], f"{w} ({time_label}) is not after the previous keyframe ({prev[1]}); "
                               "keyframes must be in strictly increasing time")
        prev = (u, time_label)
        out.append((u, {c: _channel_value(c, kf[c], f"{w}.") for c in _CHANNEL_REST if c in kf}))
    return out


def _hermite_monotone(x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """C1 monotone cubic through (x, y) with zero end slopes, held constant outside [x0, xn]."""
    from scipy.interpolate import CubicHermiteSpline, PchipInterpolator

    slopes = PchipInterpolator(x, y).derivative()(x) if len(x) > 2 else np.zeros_like(y)
    slopes[0] = slopes[-1] = 0.0
    return CubicHermiteSpline(x, y, slopes)(np.clip(xq, x[0], x[-1]))


def interpolate_keyframes(keyframes: list, num_frames: int, interpolation: str = "cubic",
                          where: str = "keyframes") -> dict[str, np.ndarray]:
    """Per-frame channels {"yaw", "pitch", "dolly", "zoom": [T] float64} from keyframes (schema: module docstring).

    Raises Ex4dError for unsorted times, unknown keys, non-numeric or out-of-range values.
    """
    check(interpolation in ("cubic", "linear"), f"{where}: interpolation must be 'cubic' or 'linear', "
                                                f"got {interpolation!r}")
    keys = _parse_keyframes(keyframes, num_frames, where)
    u = _progress(num_frames)
    out = {}
    for c, rest in _CHANNEL_REST.items():
        pts = [(t, vals[c]) for t, vals in keys if c in vals]
        if not pts:
            out[c] = np.full(num_frames, rest)
            continue
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        if c == "zoom":
            y = np.log(y)
        if len(x) == 1:
            v = np.full(num_frames, y[0])
        elif interpolation == "linear":
            v = np.interp(u, x, y)
        else:
            v = _hermite_monotone(x, y, u)
        out[c] = np.exp(v) if c == "zoom" else v
    return out


def _keyframe_trajectory(obj, num_frames, K, depth0, pivot_depth, where: str) -> Trajectory:
    check(isinstance(obj, dict), f"{where}: expected a JSON object with a 'keyframes' list")
    extra = sorted(set(obj) - {"keyframes", "interpolation", "pivot_depth", "description"})
    check(not extra, f"{where}: unknown key(s) {', '.join(extra)}; allowed: keyframes, interpolation, pivot_depth, "
                     "description")
    interpolation = obj.get("interpolation", "cubic")
    if pivot_depth is None:
        pivot_depth = obj.get("pivot_depth")
    ch = interpolate_keyframes(obj.get("keyframes"), num_frames, interpolation, where)
    pivot = _resolve_pivot(pivot_depth, depth0)
    params = {"spec": "keyframes", "keyframes": obj["keyframes"], "interpolation": interpolation,
              "pivot_depth": pivot}
    return _trajectory_from_channels(ch, pivot, K, "keyframes", params)


# ----------------------------------------------------------------------------- files

def _camera_file_trajectory(path: Path, num_frames: int, width: int, height: int) -> Trajectory:
    from .io.camera_files import load_camera_file

    cams = load_camera_file(path)
    check(cams.num_frames == num_frames,
          f"{path} has {cams.num_frames} cameras but the clip has num_frames={num_frames}; "
          "make them equal (e.g. --num-frames)")
    from .errors import warn
    from .io.camera_files import fit_camera_size

    K, note = fit_camera_size(cams.K, cams.width, cams.height, width, height, str(path))
    if note:
        warn(note)
    return Trajectory(w2c=cams.w2c, K=K, name="file", params={"spec": str(path.resolve())}, frame=cams.frame)


def _load_json(path: Path):
    from .io.json_input import read_json

    return read_json(path, f"trajectory file {path}")


# ----------------------------------------------------------------------------- entry

def _unknown_spec(spec) -> Ex4dError:
    return Ex4dError(f"unknown trajectory {spec!r}: give a preset ({', '.join(PRESETS)}; `ex4d run --help` "
                     "describes them), or a .json (keyframes or cameras.json) / .npz (original EX-4D cameras) file")


def make_trajectory(spec: str | os.PathLike, num_frames: int, K: np.ndarray, width: int, height: int,
                    depth0: np.ndarray | None = None, **options: Any) -> Trajectory:
    """Trajectory of ``num_frames`` cameras from a preset name or a camera/keyframe file.

    Args:
        spec: a name in :data:`PRESETS` (or an alias in :data:`PRESET_ALIASES`),
            ``"keyframes"`` (with the ``keyframes=[...]`` option), or a path to a
            ``.json`` / ``.npz`` file.
        num_frames: T ≥ 1.
        K: [3, 3] source intrinsics in pixels at ``width``×``height``.
        width, height: render size in pixels.
        depth0: [H, W] z-depth of frame 0 (scene units); needed unless the
            spec is a camera file or ``radius`` / ``pivot_depth`` is given.
        **options: preset options (see :data:`PRESETS`); ``None`` values count as not given.

    Returns:
        :class:`Trajectory` with ``w2c`` [T, 4, 4] and ``K`` [T, 3, 3] float64.
    """
    check(isinstance(num_frames, (int, np.integer)) and num_frames >= 1,
          f"num_frames must be a positive integer, got {num_frames!r}")
    num_frames = int(num_frames)
    K = check_intrinsics(K, "K")
    check(int(width) > 0 and int(height) > 0, f"render size must be positive, got {width}×{height}")
    if depth0 is not None:
        depth0 = np.asarray(depth0)
        check(depth0.shape == (height, width), f"depth0 must be [H, W] = [{height}, {width}], got {depth0.shape}")
    options = {k: v for k, v in options.items() if v is not None}
    spec_str = os.fspath(spec)
    name = PRESET_ALIASES.get(spec_str, spec_str)

    if name.startswith("ex4d-") and name in PRESETS:
        _check_options(name, options, ("radius", "rounds"))
        radius = (_number("radius", options["radius"], lo=0.0, lo_open=True) if "radius" in options
                  else original_radius(_require_depth(depth0, name)))
        rounds = _number("rounds", options.get("rounds", original_rounds(num_frames)), lo=0.0, lo_open=True)
        w2c = _original_w2c(name[len("ex4d-"):], num_frames, radius, rounds)
        return Trajectory(w2c=w2c, K=np.broadcast_to(K, (num_frames, 3, 3)), name=name,
                          params={"spec": name, "radius": radius, "rounds": rounds})
    if name == "static":
        _check_options(name, options, ())
        return Trajectory(w2c=np.broadcast_to(np.eye(4), (num_frames, 4, 4)),
                          K=np.broadcast_to(K, (num_frames, 3, 3)), name=name, params={"spec": name})
    if name in _MOTION_DEFAULTS:
        defaults = _MOTION_DEFAULTS[name]
        _check_options(name, options, (*defaults, "pivot_depth", "ease"))
        values = {c: _channel_value(c, options.get(c, d)) for c, d in defaults.items()}
        ease_name = options.get("ease", _DEFAULT_EASE)
        ch = _motion_channels(name, num_frames, values, _ease(ease_name))
        pivot = _resolve_pivot(options.get("pivot_depth"), depth0)
        return _trajectory_from_channels(ch, pivot, K, name,
                                         {"spec": name, **values, "pivot_depth": pivot, "ease": ease_name})
    if name == "keyframes":
        _check_options(name, options, ("keyframes", "interpolation", "pivot_depth"))
        check("keyframes" in options, "trajectory 'keyframes' needs the keyframes=[...] option")
        obj = {k: options[k] for k in ("keyframes", "interpolation") if k in options}
        return _keyframe_trajectory(obj, num_frames, K, depth0, options.get("pivot_depth"), "keyframes")

    path = Path(spec_str)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npz"):
        raise _unknown_spec(spec_str)
    check(path.is_file(), f"trajectory file not found: {path}")
    if suffix == ".json":
        obj = _load_json(path)
        if isinstance(obj, dict) and "keyframes" in obj:
            _check_options(str(path), options, ("pivot_depth",))
            return _keyframe_trajectory(obj, num_frames, K, depth0, options.get("pivot_depth"), str(path))
        check(isinstance(obj, dict) and "w2c" in obj,
              f"{path}: neither a keyframe file (key 'keyframes') nor a cameras.json (key 'w2c')")
    _check_options(str(path), options, ())
    return _camera_file_trajectory(path, num_frames, int(width), int(height))


def _require_depth(depth0, name: str) -> np.ndarray:
    check(depth0 is not None, f"trajectory {name!r} needs frame 0's depth (depth0) or the radius option")
    return depth0


_K_CHECK = np.array([[62.5, 0.0, 32.0], [0.0, 62.5, 32.0], [0.0, 0.0, 1.0]])


def _frame_keyed(keyframes) -> bool:
    return isinstance(keyframes, list) and any(isinstance(k, dict) and "frame" in k for k in keyframes)


def check_trajectory_spec(spec: str | os.PathLike, num_frames: int | None = None, **options: Any) -> None:
    """Raise :class:`Ex4dError` for a spec (preset and options, keyframe file, camera file) that
    :func:`make_trajectory` would refuse, without frames or depth: a cheap check before any heavy work.

    ``num_frames`` is the clip's length when already known (camera files must have as many cameras,
    keyframe frame indices must lie in it); ``None`` leaves those two checks to :func:`make_trajectory`.
    """
    options = {k: v for k, v in options.items() if v is not None}
    spec_str = os.fspath(spec)
    path = Path(spec_str)
    depth0 = np.ones((64, 64))
    if PRESET_ALIASES.get(spec_str, spec_str) in (*PRESETS, "keyframes") or path.suffix.lower() not in (".json", ".npz"):
        if not (num_frames is None and _frame_keyed(options.get("keyframes"))):
            make_trajectory(spec_str, num_frames or 2, _K_CHECK, 64, 64, depth0, **options)
        return
    check(path.is_file(), f"trajectory file not found: {path}")
    if path.suffix.lower() == ".json":
        obj = _load_json(path)
        if isinstance(obj, dict) and "keyframes" in obj:
            _check_options(str(path), options, ("pivot_depth",))
            if not (num_frames is None and _frame_keyed(obj["keyframes"])):
                _keyframe_trajectory(obj, num_frames or 2, _K_CHECK, depth0, options.get("pivot_depth"), str(path))
            return
        check(isinstance(obj, dict) and "w2c" in obj,
              f"{path}: neither a keyframe file (key 'keyframes') nor a cameras.json (key 'w2c')")
    _check_options(str(path), options, ())
    from .io.camera_files import load_camera_file

    cams = load_camera_file(path)
    check(num_frames is None or cams.num_frames == num_frames,
          f"{path} has {cams.num_frames} cameras but the clip has num_frames={num_frames}; "
          "make them equal (e.g. --num-frames)")
