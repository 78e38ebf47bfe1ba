"""Exact depth made like a monocular estimate: soft edges, foreground fattening or shrinking, noise.

A depth *variant* is named by its steps joined with ``+``, applied left to right (:func:`parse_variant`):

=============  ==========================================================================================
step           what it does to each frame's z-depth [H, W]
=============  ==========================================================================================
``exact``      nothing (alone)
``blurPX``     Gaussian blur of σ = PX pixels: estimators' soft edges (depth ramps across steps)
``fattenPX``   the nearer side of every depth step grows PX pixels over the farther side: each pass, a
               pixel takes the smallest depth among its 3×3 neighbours that lie on another object *and*
               nearer by more than ``STEP_RATIO`` (3 %); PX passes. Needs the objects' label map.
``shrinkPX``   the farther side grows over the nearer one (the same with "farther"), as estimators that
               erode thin foreground
``noisePCT``   multiplicative white noise of relative standard deviation PCT % (seeded per frame)
=============  ==========================================================================================

Example: ``fatten2+blur2.5+noise1`` (the benchmark's "estimated-like" mix).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import Ex4dError, check

__all__ = ["STEP_RATIO", "parse_variant", "variant_name", "degrade", "degrade_depth", "grow_across_steps"]

#: Depth ratio above which neighbours on different objects count as a depth step (fatten / shrink).
STEP_RATIO = 0.03

_STEP = re.compile(r"^(blur|fatten|shrink|noise)(\d+(?:\.\d+)?)$")


def parse_variant(text: str) -> list[tuple[str, float]]:
    """[(kind, amount)] of a variant name ("exact" → []); see the module docstring."""
    text = str(text).strip()
    if text == "exact":
        return []
    steps = []
    for part in text.split("+"):
        m = _STEP.match(part.strip())
        if m is None:
            raise Ex4dError(f"depth variant {text!r}: {part!r} is not blurPX, fattenPX, shrinkPX or noisePCT "
                            "(e.g. exact, blur3, fatten2+blur2.5+noise1)")
        kind, amount = m.group(1), float(m.group(2))
        check(amount > 0, f"depth variant {text!r}: {part!r} needs an amount > 0")
        check(kind not in ("fatten", "shrink") or amount == int(amount),
              f"depth variant {text!r}: {kind} takes whole pixels, got {amount:g}")
        check(kind != "noise" or amount < 50, f"depth variant {text!r}: noise must be < 50 %, got {amount:g}")
        steps.append((kind, amount))
    return steps


def variant_name(text: str) -> str:
    """Canonical name of a variant (amounts written with %g)."""
    steps = parse_variant(text)
    return "+".join(f"{k}{a:g}" for k, a in steps) if steps else "exact"


def grow_across_steps(depth: np.ndarray, labels: np.ndarray, px: int, nearer: bool = True,
                      ratio: float = STEP_RATIO) -> np.ndarray:
    """Depth [H, W] float32 after the nearer (``nearer``) or farther side of every depth step grew ``px``
    pixels (Chebyshev distance) over the other side; ``labels`` [H, W] int are the objects' ids."""
    d = np.asarray(depth, dtype=np.float32).copy()
    lab = np.asarray(labels).copy()
    for _ in range(int(px)):
        best = d.copy()
        best_lab = lab.copy()
        found = np.zeros(d.shape, bool)
        pd = np.pad(d, 1, mode="edge")
        pl = np.pad(lab, 1, mode="edge")
        H, W = d.shape
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if di == 0 and dj == 0:
                    continue
                qd = pd[1 + di: 1 + di + H, 1 + dj: 1 + dj + W]
                ql = pl[1 + di: 1 + di + H, 1 + dj: 1 + dj + W]
                if nearer:
                    ok = (ql != lab) & (qd * (1 + ratio) < d) & (qd < best)
                else:
                    ok = (ql != lab) & (qd > d * (1 + ratio)) & (qd > best)
                best = np.where(ok, qd, best)
                best_lab = np.where(ok, ql, best_lab)
                found |= ok
        d, lab = np.where(found, best, d), np.where(found, best_lab, lab)
    return d


def degrade(depth: np.ndarray, variant: str, labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Depth [T, H, W] float32 of ``variant`` (see the module docstring) from exact depth [T, H, W];
    ``labels`` [T, H, W] (object ids) are needed by fatten / shrink. Kept > 0."""
    from scipy.ndimage import gaussian_filter

    steps = parse_variant(variant)
    out = np.asarray(depth, dtype=np.float32).copy()
    if any(k in ("fatten", "shrink") for k, _ in steps):
        check(labels is not None and np.shape(labels) == out.shape,
              f"depth variant {variant!r} needs the objects' label map [T, H, W]")
    for t in range(out.shape[0]):
        for kind, amount in steps:
            if kind == "blur":
                out[t] = gaussian_filter(out[t], amount)
            elif kind in ("fatten", "shrink"):
                out[t] = grow_across_steps(out[t], labels[t], int(amount), nearer=kind == "fatten")
            else:
                rng = np.random.default_rng([seed, t])
                out[t] *= (1.0 + amount / 100.0 * rng.standard_normal(out[t].shape)).astype(np.float32)
    return np.maximum(out, 1e-3 * float(np.min(depth)))


def degrade_depth(depth: np.ndarray, blur_px: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Depth [T, H, W] float32 made like an estimate: Gaussian blur of ``blur_px`` px (soft edges), then
    multiplicative white noise of relative std ``noise`` (seeded per frame); kept > 0."""
    check(blur_px >= 0 and noise >= 0, f"blur and noise must be ≥ 0, got {blur_px}, {noise}")
    parts = ([f"blur{blur_px:g}"] if blur_px > 0 else []) + ([f"noise{100 * noise:g}"] if noise > 0 else [])
    return degrade(depth, "+".join(parts) or "exact", seed=seed)
