"""Windowed inference over long videos: which frames each window covers and how windows are blended.

DepthCrafter's scheme (its defaults: window 110, overlap 25):

* Clips of at most ``window`` frames are one window with no overlap.
* Longer clips are cut into windows ``[start, start + window)`` with
  ``start = 0, stride, 2·stride, …`` (``stride = window - overlap``) while
  ``start < T - overlap``; the last window is clipped to the clip's end and is
  always longer than ``overlap`` frames.
* Each window after the first starts from the stitched result so far: its
  first ``overlap`` frames are initialised from the last ``overlap`` frames of
  that result (the model adds its noise on top).
* The finished window is blended into the result over the overlap with the
  weights ``w_k = k / (overlap - 1)``, k = 0 … overlap-1 (``linspace(0, 1)``):
  ``out = w·new + (1 - w)·old``, so the first overlapping frame is the old
  value and the last one is the new value; frames after the overlap are the
  new window's.

Everything here is pure: :func:`run_windows` takes the per-window model call
as a function, so the stitching is tested without a model. It works on numpy
arrays and torch tensors alike (frames on axis 0).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import check

__all__ = ["window_spans", "blend_weights", "blend_append", "run_windows"]


def window_spans(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[(start, end), …] frame ranges (end exclusive) of the windows covering ``num_frames`` frames.

    ``num_frames <= window`` gives one window ``(0, num_frames)``. Otherwise
    needs ``0 <= overlap < window``; consecutive windows share ``overlap``
    frames and the last one ends at ``num_frames``.
    """
    check(isinstance(num_frames, (int, np.integer)) and num_frames >= 1, f"num_frames must be >= 1, got {num_frames!r}")
    check(isinstance(window, (int, np.integer)) and window >= 1, f"window must be an integer >= 1, got {window!r}")
    check(isinstance(overlap, (int, np.integer)) and 0 <= overlap < window,
          f"overlap must be an integer in [0, window) = [0, {window}), got {overlap!r}")
    if num_frames <= window:
        return [(0, int(num_frames))]
    stride = window - overlap
    spans = []
    start = 0
    while start < num_frames - overlap:
        spans.append((start, min(start + window, num_frames)))
        start += stride
    return spans


def blend_weights(overlap: int) -> np.ndarray:
    """[overlap] float64 weights of the *new* window over an overlap: ``linspace(0, 1, overlap)``."""
    return np.linspace(0.0, 1.0, int(overlap))


def _weights_like(weights: np.ndarray, like: Any) -> Any:
    """``weights`` [n] shaped [n, 1, …, 1] to broadcast against ``like`` [n, ...], same array type/dtype/device."""
    shape = (len(weights),) + (1,) * (like.ndim - 1)
    if isinstance(like, np.ndarray):
        return weights.reshape(shape).astype(like.dtype if like.dtype.kind == "f" else np.float64)
    import torch

    return torch.as_tensor(weights, dtype=like.dtype, device=like.device).reshape(shape)


def _concat(parts: list) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=0)
    import torch

    return torch.cat(parts, dim=0)


def blend_append(acc: Any, piece: Any, overlap: int) -> Any:
    """``acc`` [n, ...] extended by ``piece`` [m, ...] (m > overlap) whose first ``overlap`` frames overlap ``acc``'s last.

    Returns [n + m - overlap, ...]: ``acc`` up to the overlap, the linear blend
    (:func:`blend_weights`) over it, then the rest of ``piece``.
    """
    check(piece.shape[1:] == acc.shape[1:], f"window shapes differ: {tuple(acc.shape)} vs {tuple(piece.shape)}")
    check(0 <= overlap <= min(acc.shape[0], piece.shape[0]),
          f"overlap {overlap} longer than the windows ({acc.shape[0]}, {piece.shape[0]})")
    if overlap == 0:
        return _concat([acc, piece])
    w = _weights_like(blend_weights(overlap), piece)
    mixed = piece[:overlap] * w + acc[-overlap:] * (1 - w)
    return _concat([acc[:-overlap], mixed, piece[overlap:]])


def run_windows(num_frames: int, window: int, overlap: int,
                process: Callable[[int, int, Any], Any]) -> Any:
    """The stitched result [num_frames, ...] of ``process`` run window by window (see the module docstring).

    Args:
        num_frames, window, overlap: as in :func:`window_spans`; a clip that
            fits in one window is processed with no overlap.
        process: ``process(start, end, tail) -> [end - start, ...]``, the
            model on frames ``start … end-1``. ``tail`` is the stitched
            result's last ``overlap`` frames (to initialise the overlapping
            frames from); ``None`` for the first window and when there is no
            overlap.
    """
    spans = window_spans(num_frames, window, overlap)
    overlap = overlap if len(spans) > 1 else 0
    acc = None
    for start, end in spans:
        piece = process(start, end, None if acc is None or overlap == 0 else acc[acc.shape[0] - overlap:])
        check(piece.shape[0] == end - start,
              f"window [{start}, {end}) returned {piece.shape[0]} frames, expected {end - start}")
        acc = piece if acc is None else blend_append(acc, piece, overlap)
    return acc
