"""Image and video metrics on arrays (numpy + OpenCV, no torch): PSNR, SSIM, warping error, geometric consistency.

Conventions
-----------
* Images are ``[H, W, C]`` (or ``[H, W]``), videos ``[T, H, W, C]``; uint8
  (0–255) or float in [0, 1]. Everything is computed in float64 on [0, 1]
  (``data_range`` = 1), whatever the input dtype.
* Masks are bool ``[H, W]`` (``[T, H, W]`` for videos), True = the pixel
  counts. In ex4d's mask videos True = *known* (rendered from the source); the
  *generated* region is ``~mask``.
* Region scores over several frames are **pooled**: PSNR is computed from the
  mean squared error over every counted pixel of every frame, SSIM is the mean
  of the SSIM map over every counted pixel of every frame. Per-frame values
  (the curves) come from the ``*_frames`` functions. An empty region gives NaN;
  identical inputs give PSNR = inf.

SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) uses the standard Gaussian window
(11×11, σ = 1.5, K1 = 0.01, K2 = 0.03), population (biased) statistics, per
channel then averaged over channels, and "valid" filtering: the map covers the
pixels whose whole window lies inside the image ([H−10, W−10]), which is what
the reference MATLAB code and scikit-image's ``structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``
average over. A mask selects map pixels by their window centre.

Warping error (Lai et al. 2018, "Learning blind video temporal consistency"):
frame t+1 is warped back onto frame t through the optical flow t → t+1 and the
mean squared difference is taken over the pixels that are not occluded
(forward–backward flow check of Sundaram et al. 2010: |w_f + w_b(x + w_f)|² <
0.01·(|w_f|² + |w_b(x + w_f)|²) + 0.5) and whose target lies inside the frame.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import Ex4dError, check

__all__ = [
    "SSIM_WINDOW", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2", "FLOW_METHODS", "CHANGED_THRESHOLD",
    "to_float", "check_same_shape", "check_mask", "squared_error", "psnr_from_mse", "psnr", "psnr_frames",
    "gaussian_window", "ssim_map", "ssim", "ssim_frames", "ssim_sum",
    "optical_flow", "warp", "flow_consistency", "warping_error_sums", "warping_error",
    "geometric_consistency",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
FLOW_METHODS = ("dis", "farneback")
#: A known pixel counts as "changed" by the fill when a channel differs from the render by more than this
#: (≈26/255: above the H.264 noise of two separately encoded mp4s at crf 18 with 4:2:0 chroma, which reaches
#: 0.05 on ~10% of the pixels of fine textures; compare lossless frames (--png) to see smaller changes).
CHANGED_THRESHOLD = 0.1


# ----------------------------------------------------------------------------------------------- inputs

def to_float(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 in [0, 1]: uint8 is divided by 255, floats are taken as already in [0, 1]."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    check(np.issubdtype(x.dtype, np.floating), f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str = "pred", name_b: str = "ref") -> None:
    """Raise Ex4dError naming both shapes unless ``a`` and ``b`` have the same shape."""
    if np.shape(a) != np.shape(b):
        raise Ex4dError(f"{name_a} has shape {list(np.shape(a))} but {name_b} has shape {list(np.shape(b))}; "
                        "they must match (same frame count, size and channels)")


def check_mask(mask: np.ndarray | None, image_shape: tuple, name: str = "mask") -> np.ndarray | None:
    """``mask`` as bool of the images' pixel shape (``image_shape`` [H, W] or minus its channel axis), or None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    lead = tuple(image_shape) if len(image_shape) == 2 else tuple(image_shape[:-1])
    if mask.shape != lead:
        raise Ex4dError(f"{name} has shape {list(mask.shape)} but the images need {list(lead)}")
    return mask.astype(bool, copy=False)


# ----------------------------------------------------------------------------------------------- PSNR

def squared_error(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """(sum of squared differences, number of values) over the masked pixels (all channels), in [0, 1] units.

    Args:
        pred, ref: [..., H, W, C] or [H, W] images/videos (uint8 or float [0, 1]), same shape.
        mask: [..., H, W] bool, True = counted; None = every pixel.
    """
    check_same_shape(pred, ref)
    mask = check_mask(mask, np.shape(pred))
    d = to_float(pred) - to_float(ref)
    d2 = d * d
    if mask is None:
        return float(d2.sum()), int(d2.size)
    channels = d2.shape[-1] if d2.ndim == mask.ndim + 1 else 1
    return float(d2[mask].sum()), int(mask.sum()) * channels


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB of a mean squared error: 10·log10(range² / mse); inf for 0, NaN for NaN."""
    if not math.isfinite(mse):
        return float("nan")
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB, data range 1) of ``pred`` against ``ref`` pooled over all masked pixels; NaN if the mask is empty.

    Args:
        pred, ref: [T, H, W, C], [H, W, C] or [H, W]; uint8 or float in [0, 1].
        mask: bool over the leading axes ([T, H, W] / [H, W]); True = counted.
    """
    sse, n = squared_error(pred, ref, mask)
    return psnr_from_mse(sse / n if n else float("nan"))


def psnr_frames(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame PSNR [T] float64 (dB) of videos [T, H, W, C] over the masked pixels [T, H, W] of each frame."""
    check_same_shape(pred, ref)
    mask = check_mask(mask, np.shape(pred))
    return np.array([psnr(pred[t], ref[t], None if mask is None else mask[t]) for t in range(len(pred))])


# ----------------------------------------------------------------------------------------------- SSIM

@lru_cache(maxsize=4)
def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """1-D Gaussian weights [size] float64 summing to 1 (the separable SSIM window)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(x * x) / (2.0 * sigma * sigma))
    w /= w.sum()
    w.setflags(write=False)
    return w


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable correlation of [H, W] float64 ``x`` with ``w``, keeping only the fully covered ("valid") part."""
    import cv2

    r = (w.size - 1) // 2
    out = cv2.sepFilter2D(x, cv2.CV_64F, w, w, borderType=cv2.BORDER_REFLECT)
    return out[r: x.shape[0] - r, r: x.shape[1] - r]


def ssim_map(pred: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """SSIM map [H−10, W−10] float64 of two images [H, W, C] or [H, W] (mean over channels).

    Pixel (i, j) of the map is the SSIM of the 11×11 windows centred on image pixel (i + 5, j + 5).
    """
    check_same_shape(pred, ref)
    a, b = to_float(pred), to_float(ref)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    check(a.ndim == 3, f"ssim_map needs [H, W] or [H, W, C] images, got shape {list(np.shape(pred))}")
    check(min(a.shape[:2]) >= SSIM_WINDOW,
          f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got {a.shape[1]}×{a.shape[0]}")
    w = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    total = None
    for c in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c])
        mx, my = _filter_valid(x, w), _filter_valid(y, w)
        sxx = _filter_valid(x * x, w) - mx * mx
        syy = _filter_valid(y * y, w) - my * my
        sxy = _filter_valid(x * y, w) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        total = s if total is None else total + s
    return total / a.shape[2]


def ssim_sum(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """(sum of the SSIM map, number of map pixels) over the window centres where ``mask`` [H, W] is True."""
    m = ssim_map(pred, ref)
    if mask is None:
        return float(m.sum()), int(m.size)
    r = (SSIM_WINDOW - 1) // 2
    mask = check_mask(mask, np.shape(pred))[r: mask.shape[0] - r, r: mask.shape[1] - r]
    return float(m[mask].sum()), int(mask.sum())


def ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of images [H, W, C] / [H, W] or videos [T, H, W, C], pooled over the masked window centres.

    1 for identical inputs; NaN when the mask keeps no window centre (it ignores a 5-px border).
    """
    check_same_shape(pred, ref)
    mask = check_mask(mask, np.shape(pred))
    if np.ndim(pred) == 4:
        sums = [ssim_sum(pred[t], ref[t], None if mask is None else mask[t]) for t in range(len(pred))]
        s, n = sum(x for x, _ in sums), sum(k for _, k in sums)
    else:
        s, n = ssim_sum(pred, ref, mask)
    return s / n if n else float("nan")


def ssim_frames(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame SSIM [T] float64 of videos [T, H, W, C] over the masked window centres of each frame."""
    check_same_shape(pred, ref)
    mask = check_mask(mask, np.shape(pred))
    return np.array([ssim(pred[t], ref[t], None if mask is None else mask[t]) for t in range(len(pred))])


# ----------------------------------------------------------------------------------------------- flow

def _gray8(image: np.ndarray) -> np.ndarray:
    import cv2

    x = np.asarray(image)
    if x.dtype != np.uint8:
        x = np.clip(to_float(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if x.ndim == 3 else x


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Flow [H, W, 2] float32 (dx, dy in pixels) from image ``a`` to ``b``: a(x) ≈ b(x + flow(x)).

    Args:
        a, b: [H, W, 3] RGB or [H, W] gray, uint8 or float in [0, 1].
        method: ``dis`` (OpenCV DIS, medium preset) or ``farneback`` (OpenCV Farnebäck).
    """
    import cv2

    check(method in FLOW_METHODS, f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    check_same_shape(a, b, "first frame", "second frame")
    ga, gb = _gray8(a), _gray8(b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(ga, gb, None)
    return cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 4, 15, 3, 5, 1.2, 0)


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image sampled at x + flow(x) [H, W, C] float64, valid [H, W] bool: the sample lies inside the image).

    Bilinear backward warp: with ``flow`` from a to b, ``warp(b, flow)`` ≈ a.
    """
    import cv2

    x = to_float(image)
    H, W = x.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(x, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2 and x.ndim == 3:
        out = out[..., None]
    valid = (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)
    return out, valid


def flow_consistency(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Non-occluded pixels [H, W] bool: the backward flow at x + w_f(x) undoes the forward flow w_f(x).

    |w_f + w_b(x + w_f)|² < alpha·(|w_f|² + |w_b(x + w_f)|²) + beta (Sundaram et al. 2010); flows [H, W, 2].
    """
    bw, valid = warp(flow_bw.astype(np.float64), flow_fw)
    s = flow_fw + bw
    lhs = (s * s).sum(-1)
    rhs = alpha * ((flow_fw * flow_fw).sum(-1) + (bw * bw).sum(-1)) + beta
    return valid & (lhs < rhs)


def warping_error_sums(video: np.ndarray, mask: np.ndarray | None = None, use_flow: bool = True,
                       flow_video: np.ndarray | None = None, method: str = "dis") -> list[tuple[float, int]]:
    """Per consecutive pair t → t+1 (T−1 of them): (sum of squared differences, counted values).

    Args:
        video: [T, H, W, C] uint8 or float in [0, 1].
        mask: [T, H, W] bool region evaluated on frame t (None = everywhere).
        use_flow: warp frame t+1 onto t through the flow (False: plain frame difference, a baseline).
        flow_video: [T, H, W, C] video to estimate the flow on (default ``video`` itself), e.g. the
            ground truth, so that the flow cannot absorb flicker of the evaluated video.
        method: flow method, see :func:`optical_flow`.
    """
    video = np.asarray(video)
    check(video.ndim == 4, f"warping error needs a video [T, H, W, C], got shape {list(video.shape)}")
    mask = check_mask(mask, video.shape)
    src = video if flow_video is None else np.asarray(flow_video)
    if flow_video is not None:
        check_same_shape(video, src, "video", "flow video")
    out = []
    for t in range(video.shape[0] - 1):
        a = to_float(video[t])
        region = np.ones(a.shape[:2], bool) if mask is None else mask[t]
        if use_flow:
            fw = optical_flow(src[t], src[t + 1], method)
            bw = optical_flow(src[t + 1], src[t], method)
            b, _ = warp(video[t + 1], fw)
            region = region & flow_consistency(fw, bw)
        else:
            b = to_float(video[t + 1])
        d = (a - b)[region]
        out.append((float((d * d).sum()), int(d.size)))
    return out


def warping_error(video: np.ndarray, mask: np.ndarray | None = None, use_flow: bool = True,
                  flow_video: np.ndarray | None = None, method: str = "dis") -> np.ndarray:
    """Per-pair warping error [T−1] float64: mean squared difference ([0, 1]² units) of frame t and warped t+1.

    NaN for a pair with no counted pixel. See :func:`warping_error_sums` for the arguments.
    """
    sums = warping_error_sums(video, mask, use_flow, flow_video, method)
    return np.array([s / n if n else float("nan") for s, n in sums])


# ----------------------------------------------------------------------------------------------- geometry

def geometric_consistency(pred: np.ndarray, render: np.ndarray, mask: np.ndarray,
                          threshold: float = CHANGED_THRESHOLD) -> dict:
    """How well the output keeps the DW-Mesh render where it is known.

    Args:
        pred: [T, H, W, 3] output video (uint8 or float [0, 1]).
        render: [T, H, W, 3] the recon render (color.mp4).
        mask: [T, H, W] bool, True = known.
        threshold: a pixel is "changed" when a channel differs by more than this ([0, 1] units).

    Returns:
        ``{"psnr": dB over the known pixels, "mae": mean absolute difference [0, 1],
        "changed": share of known pixels changed, "psnr_frames": [T] list}`` (NaN where nothing is known).
    """
    check_same_shape(pred, render, "pred", "render")
    mask = check_mask(mask, np.shape(pred))
    check(mask is not None, "geometric consistency needs the known mask")
    n = int(mask.sum())
    if n == 0:
        nan = float("nan")
        return {"psnr": nan, "mae": nan, "changed": nan, "psnr_frames": [nan] * len(pred)}
    abs_sum = changed = 0.0
    for t in range(len(pred)):
        d = np.abs(to_float(pred[t]) - to_float(render[t]))[mask[t]]
        abs_sum += float(d.sum())
        changed += float((d.max(-1) > threshold).sum()) if d.size else 0.0
    return {"psnr": psnr(pred, render, mask), "mae": abs_sum / (n * np.shape(pred)[-1]), "changed": changed / n,
            "psnr_frames": psnr_frames(pred, render, mask).tolist()}
