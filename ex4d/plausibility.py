"""Plausibility checks of a run's inputs and results: what is legal but probably wrong.

Hard contradictions (a depth of another aspect ratio, a rotation that is a
reflection) are :class:`~ex4d.errors.Ex4dError`\\ s where the data is read.
What is left here is judged against the scene:

* :func:`check_depth_values` — depth that no scene has: everything in front
  of the renderer's near plane (e.g. 1e-30 everywhere), an absurd dynamic
  range, a scale that jumps between frames (per-frame normalised depth);
* :func:`check_camera_file` — a camera file whose cameras look away from the
  scene. When the same matrices read in the *other* axis convention (OpenCV ↔
  OpenGL) do see it, the file's convention label contradicts its content and
  it is refused; otherwise it is a warning;
* :func:`check_path_start` — a path whose frame 0 is not the source camera;
* :func:`check_known_fraction` — a run that ends with ~0 % known novel-view pixels.

Warnings go through :func:`ex4d.errors.warn` (the CLI prints them on stderr,
the pipeline records them in config.json).
"""

from __future__ import annotations

import numpy as np

from .cameras import OPENGL_FLIP, unproject_depth
from .errors import Ex4dError, warn

__all__ = ["check_depth_values", "scene_points", "view_fraction", "check_camera_file", "check_path_start",
           "check_known_fraction", "MAX_DYNAMIC_RANGE", "MIN_KNOWN"]

#: Largest plausible ratio between the far (99.9th percentile) and near (0.1th) depth of one frame.
#: DepthCrafter's mapping gives at most 10000/2.56 ≈ 3900; metric estimators of real scenes far less.
MAX_DYNAMIC_RANGE = 1e5
#: Below this share of known novel-view pixels a run is reported as seeing (almost) nothing.
MIN_KNOWN = 0.01


def check_depth_values(depth: np.ndarray, near: float, source: str = "depth") -> list[str]:
    """Warn about depth [T, H, W] (z-depth > 0, finite; any array-like read per frame) that no real scene gives;
    returns the messages."""
    T = len(depth)
    stats = np.empty((T, 3))
    for t in range(T):  # a frame at a time: ``depth`` may be a long clip's cache read per frame
        flat = np.asarray(depth[t], dtype=np.float64).reshape(-1)
        stats[t] = np.percentile(flat[::max(1, flat.shape[0] // 20000)], [0.1, 50, 99.9])
    lo, med, hi = stats.T
    msgs = []
    if np.all(hi <= near):
        msgs.append(f"{source}: every depth value lies in front of the renderer's near plane ({near:g} scene "
                    f"units; depth up to {hi.max():.3g}): nothing can be rendered. Check the file's units and "
                    "--depth-kind, or scale it with --depth-scale")
    elif np.median(med) < 10 * near:
        msgs.append(f"{source}: the scene lies very close to the camera (median depth {np.median(med):.3g} "
                    f"scene units, the near plane is at {near:g}): much of it will be clipped. Check the units "
                    "and --depth-kind, or scale it with --depth-scale")
    ratio = hi / np.maximum(lo, np.finfo(np.float64).tiny)
    worst = int(np.argmax(ratio))
    if ratio[worst] > MAX_DYNAMIC_RANGE:
        msgs.append(f"{source}: frame {worst} spans depths {lo[worst]:.3g} … {hi[worst]:.3g} (a ratio of "
                    f"{ratio[worst]:.3g}), more than any real scene; is it disparity (--depth-kind disparity) or "
                    "in other units?")
    if T > 1:
        jumps = np.abs(np.diff(np.log(np.maximum(med, np.finfo(np.float64).tiny))))
        t = int(np.argmax(jumps))
        if jumps[t] > np.log(3.0):
            msgs.append(f"{source}: the scene's median depth jumps from {med[t]:.3g} (frame {t}) to "
                        f"{med[t + 1]:.3g} (frame {t + 1}); per-frame normalised depth? A clip's depth needs one "
                        "scale for all frames (e.g. --depth-model, which aligns frames)")
    for m in msgs:
        warn(m)
    return msgs


def scene_points(depth0: np.ndarray, K0: np.ndarray, samples: int = 48) -> np.ndarray:
    """World points [N, 3] of frame 0's surface (world = source camera), on a ``samples``² grid of pixels."""
    H, W = depth0.shape
    v = np.linspace(0, H - 1, min(samples, H)).round().astype(int)
    u = np.linspace(0, W - 1, min(samples, W)).round().astype(int)
    pts = unproject_depth(depth0, K0)[np.ix_(v, u)]
    return pts.reshape(-1, 3)


def view_fraction(points: np.ndarray, w2c: np.ndarray, K: np.ndarray, width: int, height: int,
                  near: float) -> np.ndarray:
    """Share [T] of ``points`` [N, 3] that each camera (w2c [T,4,4] OpenCV, K [T,3,3]) has in front and in frame."""
    cam = np.einsum("tij,nj->tni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (K[:, None, 0, 0] * cam[..., 0] + K[:, None, 0, 1] * cam[..., 1]) / z + K[:, None, 0, 2]
        v = K[:, None, 1, 1] * cam[..., 1] / z + K[:, None, 1, 2]
    inside = (z > near) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    return inside.mean(axis=1)


def check_camera_file(w2c: np.ndarray, K: np.ndarray, width: int, height: int, depth0: np.ndarray,
                      K0: np.ndarray, near: float, source: str, convention: str = "opencv_w2c") -> np.ndarray:
    """Per-frame share [T] of frame 0's scene that the file's cameras see; refuse a contradicted convention label.

    Args:
        w2c: [T, 4, 4] the file's cameras, already in OpenCV axes as its label says.
        K: [T, 3, 3] their intrinsics at ``width``×``height``.
        depth0, K0: frame 0's z-depth [H, W] and the source intrinsics.
        convention: the label the file carries (for the message).
    """
    pts = scene_points(depth0, K0)
    seen = view_fraction(pts, w2c, K, width, height, near)
    if seen.mean() >= 0.05:
        return seen
    flipped = view_fraction(pts, OPENGL_FLIP @ w2c, K, width, height, near)
    other = "opengl_w2c" if convention == "opencv_w2c" else "opencv_w2c"
    if flipped.mean() >= 0.5:
        raise Ex4dError(f"{source}: its cameras look away from the scene ({100 * seen.mean():.0f}% of frame 0's "
                        f"points in view), but read in the other axis convention they see {100 * flipped.mean():.0f}%: "
                        f"the file says {convention!r} while its matrices are {other!r}. Fix the file's convention "
                        "(cameras.json: \"convention\"; the original's .npz is always OpenGL-style)")
    warn(f"{source}: its cameras see almost none of the scene ({100 * seen.mean():.1f}% of frame 0's points in "
         "view, on average): check that they are world-to-camera matrices with world = the source camera")
    return seen


def check_path_start(w2c0: np.ndarray, K_out0: np.ndarray, K0: np.ndarray, name: str) -> bool:
    """Warn (and return False) when a path's frame 0 is not the source camera: it then shows holes from the start."""
    if np.allclose(w2c0, np.eye(4), atol=1e-6) and np.allclose(K_out0, K0, rtol=0, atol=0.5):
        return True
    what = "camera" if not np.allclose(w2c0, np.eye(4), atol=1e-6) else "intrinsics"
    warn(f"trajectory {name!r}: frame 0's {what} is not the source view's, so frame 0 is rendered (with holes) "
         "instead of being the input frame; start the path at the source view (e.g. a first keyframe with yaw 0, "
         "pitch 0)")
    return False


def check_known_fraction(mask: np.ndarray, novel: list[int]) -> float:
    """Share of known pixels over the ``novel`` frames of ``mask`` [T, H, W] bool; warns when it is ~0."""
    known = float(mask[novel].mean()) if len(novel) else 1.0
    empty = int(sum(not mask[t].any() for t in novel)) if known < MIN_KNOWN else 0
    return report_known_fraction(known, empty, len(novel))


def report_known_fraction(known: float, empty: int, novel: int) -> float:
    """``known`` (the share of known novel-view pixels, measured while rendering); warns when it is ~0.

    ``empty``: novel frames with no known pixel, of ``novel`` novel frames.
    """
    if known < MIN_KNOWN:
        warn(f"only {100 * known:.2f}% of the novel-view pixels are known ({empty} of {novel} novel frames "
             "show nothing of the scene): the cameras see (almost) none of it. Check the depth's units and kind, "
             "the camera path or file (its convention), and --pivot-depth / --radius")
    return known
