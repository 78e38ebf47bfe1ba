"""Temporal consistency for per-frame depth: one scale and shift per frame, fitted jointly over the clip.

Per-frame estimators (Depth Anything V2) predict *affine-invariant
disparity*: each frame has its own unknown scale and shift, so a DW-Mesh
built from consecutive frames flickers. :func:`align_scale_shift` finds, for
every frame t, ``s_t > 0`` and ``b_t`` such that the aligned disparities
``s_t·d_t + b_t`` agree across the clip, all in the reference frame's scale.

Method (two linear stages, no iteration over the whole clip):

1. **Pairs.** The same subsampled pixel grid (``max_samples`` pixels) is
   compared between frame pairs (i, j) at temporal gaps 1, 2, 4, 8, …: every
   frame is linked to near frames (where pixels still correspond) and to far
   ones in a few hops (which stops drift). For each pair a robust relative
   map ``d_i ≈ α·d_j + β`` is fitted: the reduced-major-axis slope
   ``α = std(d_i)/std(d_j)`` on the inliers (a regression slope would be
   shrunk by noise, and the bias would pile up along chains), the worst
   ``trim`` fraction of pixels (moving objects, occlusions) dropped and the
   fit redone ``iters`` times.
2. **Global solve.** Consistency of the aligned frames means
   ``log s_j − log s_i = log α`` and ``b_j − b_i = s_i·β``; both are linear
   least-squares problems over all pairs with the reference frame fixed
   (``s = 1, b = 0``). Working in log-scale rules out the trivial all-zero
   solution that a joint fit of ``s·d + b`` would collapse to. Pairs that
   disagree strongly with the consensus (a cut, a failed fit) are dropped
   once and the system is solved again.

The content of nearby frames must overlap (true for video); depth that really
changes (an object approaching the camera) is partly absorbed by the fit, as
with any per-frame alignment.
"""

from __future__ import annotations

import numpy as np

from ..errors import check

__all__ = ["ALIGN_MODES", "pair_gaps", "sample_grid", "fit_pair", "align_samples", "align_scale_shift",
           "temporal_smooth", "smoothing_radius"]

ALIGN_MODES = ("affine", "scale", "none")
_RIDGE = 1e-9
_MIN_PIXELS = 8
_TRUNCATE = 3.0  # Gaussian kernel radius in sigmas (scipy's gaussian_filter1d truncate)


def pair_gaps(num_frames: int) -> list[int]:
    """Temporal gaps 1, 2, 4, … below ``num_frames`` whose frame pairs are compared."""
    gaps, g = [], 1
    while g < num_frames:
        gaps.append(g)
        g *= 2
    return gaps


def sample_grid(height: int, width: int, max_samples: int) -> np.ndarray:
    """[N] int64 flat indices of a regular pixel grid with N ≤ ``max_samples`` (all pixels if fewer)."""
    step = max(1, int(np.ceil(np.sqrt(height * width / max(1, max_samples)))))
    ys = np.arange(step // 2, height, step)
    xs = np.arange(step // 2, width, step)
    return (ys[:, None] * width + xs[None, :]).ravel().astype(np.int64)


def fit_pair(xi: np.ndarray, xj: np.ndarray, ok: np.ndarray | None = None, mode: str = "affine",
             trim: float = 0.2, iters: int = 3) -> tuple[float, float] | None:
    """(α, β) with ``xi ≈ α·xj + β`` (β = 0 in ``"scale"`` mode), robustly; ``None`` if undetermined.

    Args:
        xi, xj: [N] float64 values of the same pixels in two frames.
        ok: [N] bool, pixels that may be used (default: all finite).
        mode: ``"affine"``: reduced-major-axis fit (``α = std(xi)/std(xj)``,
            needs positive correlation); ``"scale"``: ``α = rms(xi)/rms(xj)``.
        trim, iters: each of ``iters`` refits keeps the (1 − ``trim``) pixels
            with the smallest residuals of the previous fit.
    """
    xi = np.asarray(xi, np.float64)
    xj = np.asarray(xj, np.float64)
    finite = np.isfinite(xi) & np.isfinite(xj)
    ok = finite if ok is None else (np.asarray(ok, bool) & finite)
    keep = ok
    alpha = beta = None
    for it in range(iters + 1):
        if int(keep.sum()) < _MIN_PIXELS:
            return None
        a, b = xi[keep], xj[keep]
        if mode == "scale":
            ra, rb = float(np.sqrt(np.mean(a * a))), float(np.sqrt(np.mean(b * b)))
            if ra <= 0 or rb <= 0:
                return None
            alpha, beta = ra / rb, 0.0
        else:
            sa, sb = float(a.std()), float(b.std())
            if sa <= 0 or sb <= 0 or float(np.mean((a - a.mean()) * (b - b.mean()))) <= 0:
                return None
            alpha = sa / sb
            beta = float(a.mean()) - alpha * float(b.mean())
        if it == iters or trim <= 0:
            break
        r = np.abs(xi - (alpha * xj + beta))
        keep = ok & (r <= np.quantile(r[ok], 1.0 - trim))
    return alpha, beta


def _solve_differences(T: int, edges: np.ndarray, values: np.ndarray, weights: np.ndarray,
                       reference: int) -> np.ndarray:
    """[T] x minimising Σ w·(x_j − x_i − v)² over ``edges`` [E, 2] (i, j), with ``x[reference] = 0``.

    Frames that no weighted edge reaches stay at 0 (a tiny ridge keeps the system regular). Sparse: each
    frame is linked to about 2·log2(T) others, so clips of any length solve in moments.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    E = len(edges)
    rows = np.repeat(np.arange(E), 2)
    cols = edges[:, ::-1].reshape(-1)  # (j, i) per edge
    A = sp.csr_matrix((np.tile([1.0, -1.0], E), (rows, cols)), shape=(E, T))
    N = (A.T @ sp.diags(weights) @ A + _RIDGE * sp.identity(T)).tocsr()
    rhs = A.T @ (weights * values)
    free = np.array([t for t in range(T) if t != reference], dtype=np.int64)
    x = np.zeros(T)
    if free.size:
        x[free] = spsolve(N[free][:, free].tocsc(), rhs[free])
    return x


def align_samples(samples: np.ndarray, ok: np.ndarray | None = None, mode: str = "affine", reference: int = 0,
                  trim: float = 0.2, iters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(scales [T], shifts [T]) float64 aligning per-frame samples [T, N] (the same N pixels in every frame).

    The fit of :func:`align_scale_shift` on values already sampled (``ok`` [T, N] bool: usable samples,
    default finite), so a clip too long to hold can be aligned as a whole from a few thousand pixels per frame.
    """
    samples = np.asarray(samples, np.float64)
    T = samples.shape[0]
    check(mode in ALIGN_MODES, f"align mode must be one of {ALIGN_MODES}, got {mode!r}")
    check(isinstance(reference, (int, np.integer)) and 0 <= reference < T,
          f"reference frame must be in [0, {T}), got {reference!r}")
    if mode == "none" or T == 1:
        return np.ones(T), np.zeros(T)
    ok = np.isfinite(samples) if ok is None else (np.asarray(ok, bool) & np.isfinite(samples))
    edges, log_alpha, beta = [], [], []
    for g in pair_gaps(T):
        for i in range(T - g):
            j = i + g
            fit = fit_pair(samples[i], samples[j], ok[i] & ok[j], mode, trim, iters)
            if fit is not None:
                edges.append((i, j))
                log_alpha.append(np.log(fit[0]))
                beta.append(fit[1])
    if not edges:
        return np.ones(T), np.zeros(T)
    edges = np.array(edges, dtype=np.int64)
    log_alpha, beta = np.array(log_alpha), np.array(beta)

    # aligned_i = aligned_j where d_i ≈ α·d_j + β  ⇔  log s_j − log s_i = log α  and  b_j − b_i = s_i·β.
    w = np.ones(len(edges))
    log_s = _solve_differences(T, edges, log_alpha, w, reference)
    r = np.abs(log_s[edges[:, 1]] - log_s[edges[:, 0]] - log_alpha)
    w = (r <= max(4 * 1.4826 * float(np.median(r)), 1e-3)).astype(np.float64)
    log_s = _solve_differences(T, edges, log_alpha, w, reference)
    s = np.exp(log_s)
    if mode == "affine":
        b = _solve_differences(T, edges, s[edges[:, 0]] * beta, w, reference)
    else:
        b = np.zeros(T)
    return s, b


def align_scale_shift(disparity: np.ndarray, mode: str = "affine", reference: int = 0, max_samples: int = 4096,
                      trim: float = 0.2, iters: int = 3, valid: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aligned [T, H, W] float32, scales [T] float64, shifts [T] float64), ``aligned_t = s_t·d_t + b_t``.

    Args:
        disparity: [T, H, W] per-frame disparity (or any inverse-depth-like
            values defined up to a per-frame scale and shift).
        mode: ``"affine"`` (scale and shift per frame), ``"scale"`` (scale
            only, b = 0; e.g. inverse metric depth) or ``"none"`` (identity).
        reference: frame kept as is (s = 1, b = 0); the others are mapped
            onto its scale.
        max_samples: pixels per frame used for the fit (a regular grid).
        trim: fraction of pixels dropped per frame pair in each refit.
        iters: robust refits per frame pair.
        valid: optional [T, H, W] bool, pixels allowed in the fit (default:
            the finite ones).

    See the module docstring for the method. Frames not linked to the
    reference by any usable pair keep ``s = 1, b = 0``.
    """
    d = np.asarray(disparity)
    check(d.ndim == 3 and min(d.shape) >= 1, f"disparity must be [T, H, W], got shape {d.shape}")
    check(mode in ALIGN_MODES, f"align mode must be one of {ALIGN_MODES}, got {mode!r}")
    T, H, W = d.shape
    check(isinstance(reference, (int, np.integer)) and 0 <= reference < T,
          f"reference frame must be in [0, {T}), got {reference!r}")
    check(0 <= trim < 1, f"trim must be in [0, 1), got {trim!r}")
    if mode == "none" or T == 1:
        return d.astype(np.float32, copy=True), np.ones(T), np.zeros(T)

    idx = sample_grid(H, W, max_samples)
    samples = d.reshape(T, -1)[:, idx].astype(np.float64)
    ok = np.isfinite(samples)
    if valid is not None:
        ok &= np.asarray(valid, bool).reshape(T, -1)[:, idx]
    s, b = align_samples(samples, ok, mode, reference, trim, iters)
    aligned = (d.astype(np.float64) * s[:, None, None] + b[:, None, None]).astype(np.float32)
    return aligned, s, b


def temporal_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """[T, H, W] float32 ``values`` filtered along time by a Gaussian of ``sigma`` frames (0 = unchanged).

    Reduces residual per-pixel flicker; moving edges get a trail of about
    ``sigma`` frames, so keep it small (≤ 1–2).
    """
    values = np.asarray(values, np.float32)
    check(sigma >= 0, f"temporal smoothing sigma must be >= 0 frames, got {sigma!r}")
    if sigma == 0 or values.shape[0] == 1:
        return values.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, float(sigma), axis=0, mode="nearest", truncate=_TRUNCATE).astype(np.float32)


def smoothing_radius(sigma: float) -> int:
    """Frames on each side that :func:`temporal_smooth` reads: a chunk smoothed with this much context is exact."""
    return int(_TRUNCATE * float(sigma) + 0.5) if sigma > 0 else 0
