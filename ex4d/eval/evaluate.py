"""Evaluate an output video: fidelity to a reference, temporal and geometric consistency, learned metrics.

:func:`evaluate_video` works on arrays; :func:`evaluate_files` reads the videos
(``ex4d eval``) and checks that they match. The result is a JSON-able dict
(layout in :func:`evaluate_video`); :mod:`ex4d.eval.report` prints and plots it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from . import metrics as M
from .report import json_safe

__all__ = ["EvalConfig", "evaluate_video", "evaluate_files", "read_eval_video", "read_eval_mask", "REGIONS"]

#: Region names: every pixel, the known pixels (mask True), the generated ones (mask False).
REGIONS = ("all", "known", "generated")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``ex4d eval`` (saved in the report)."""

    flow: str = "dis"                      #: optical flow for the warping error: dis | farneback
    flow_from: str = "pred"                #: estimate the flow on pred or on ref (then flicker cannot hide in it)
    lpips_weights: str | None = None       #: LPIPS linear layers (+ backbone), see ex4d.eval.features
    lpips_backbone: str | None = None      #: torchvision backbone state dict, if not beside lpips_weights
    inception_weights: str | None = None   #: TorchScript Inception (FID)
    i3d_weights: str | None = None         #: TorchScript I3D (FVD)

    def __post_init__(self):
        check(self.flow in M.FLOW_METHODS, f"unknown flow method {self.flow!r}; choose one of "
                                           f"{', '.join(M.FLOW_METHODS)}")
        check(self.flow_from in ("pred", "ref"), f"flow_from must be pred or ref, got {self.flow_from!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _pooled(sums: list[tuple[float, int]]) -> float:
    n = sum(k for _, k in sums)
    return sum(s for s, _ in sums) / n if n else float("nan")


def evaluate_video(pred: np.ndarray, ref: np.ndarray | None = None, mask: np.ndarray | None = None,
                   render: np.ndarray | None = None, config: EvalConfig | None = None) -> dict:
    """Metrics of an output video, as a JSON-able dict.

    Args:
        pred: [T, H, W, 3] uint8 (or float [0, 1]) output video.
        ref: [T, H, W, 3] reference (e.g. the true novel view); None = no-reference metrics only.
        mask: [T, H, W] bool, True = known (ex4d's mask.mp4); splits the scores into known / generated.
        render: [T, H, W, 3] the DW-Mesh render (color.mp4), for geometric consistency (needs ``mask``).
        config: flow and learned-metric options.

    Returns (values NaN → None, inf → "inf"):
        ``{"frames", "height", "width", "regions": {region: share of pixels},
        "psnr"/"ssim"/"lpips": {region: pooled value}, "temporal": {"warp_error": {region: MSE},
        "warp_error_ref", "frame_diff": {region: MSE}}, "geometric": {"psnr", "mae", "changed"},
        "fid", "fvd", "skipped": {metric: why}, "per_frame": {curve name: [T] or [T−1]},
        "config", "seconds"}``; keys whose inputs were not given are left out.
    """
    t0 = time.perf_counter()
    config = config or EvalConfig()
    pred = np.asarray(pred)
    check(pred.ndim == 4 and pred.shape[-1] == 3, f"pred must be a video [T, H, W, 3], got shape {list(pred.shape)}")
    if ref is not None:
        M.check_same_shape(pred, ref, "pred", "ref")
    if render is not None:
        M.check_same_shape(pred, render, "pred", "render")
        check(mask is not None, "geometric consistency (render given) needs the known mask too")
    mask = M.check_mask(mask, pred.shape, "mask")
    T, H, W = pred.shape[:3]
    regions = {"all": None}
    if mask is not None:
        regions.update(known=mask, generated=~mask)
    out: dict = {"frames": T, "height": H, "width": W,
                 "regions": {k: 1.0 if m is None else float(m.mean()) for k, m in regions.items()}}
    curves: dict[str, list] = {}
    skipped: dict[str, str] = {}

    if ref is not None:
        out["psnr"], out["ssim"] = {}, {}
        for name, m in regions.items():
            out["psnr"][name] = M.psnr(pred, ref, m)
            out["ssim"][name] = M.ssim(pred, ref, m)
            curves[f"psnr_{name}"] = M.psnr_frames(pred, ref, m).tolist()
            curves[f"ssim_{name}"] = M.ssim_frames(pred, ref, m).tolist()
    else:
        skipped["psnr/ssim/lpips/fid/fvd"] = "no reference video (--ref)"

    if T >= 2:
        flow_video = ref if (config.flow_from == "ref" and ref is not None) else None
        temporal = {"warp_error": {}, "frame_diff": {}}
        for name, m in regions.items():
            if name == "known":
                continue
            sums = M.warping_error_sums(pred, m, True, flow_video, config.flow)
            temporal["warp_error"][name] = _pooled(sums)
            curves[f"warp_error_{name}"] = [s / n if n else float("nan") for s, n in sums]
            temporal["frame_diff"][name] = _pooled(M.warping_error_sums(pred, m, use_flow=False))
        if ref is not None:
            sums = M.warping_error_sums(ref, None, True, None, config.flow)
            temporal["warp_error_ref"] = {"all": _pooled(sums)}
            curves["warp_error_ref"] = [s / n if n else float("nan") for s, n in sums]
        temporal["flow"] = config.flow
        temporal["flow_from"] = "ref" if flow_video is not None else "pred"
        out["temporal"] = temporal
    else:
        skipped["temporal"] = "needs at least 2 frames"

    if render is not None:
        g = M.geometric_consistency(pred, render, mask)
        curves["geometric_psnr"] = g.pop("psnr_frames")
        out["geometric"] = g
    else:
        skipped["geometric"] = "no DW-Mesh render (--render) and mask"

    if ref is not None:
        _learned(pred, ref, regions, config, out, curves, skipped)
    out["skipped"] = skipped
    out["per_frame"] = curves
    out["config"] = config.to_dict()
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return json_safe(out)


def _learned(pred, ref, regions, config: EvalConfig, out: dict, curves: dict, skipped: dict) -> None:
    """LPIPS / FID / FVD into ``out`` when their weights are given, else a note in ``skipped``."""
    from . import features as F

    if config.lpips_weights:
        model = F.load_lpips(config.lpips_weights, config.lpips_backbone)
        masks = {k: m for k, m in regions.items() if m is not None}
        per = F.lpips_frames(model, pred, ref, masks)
        # mean over the frames where the region is not empty
        out["lpips"] = {k: float(np.mean([x for x in v if not np.isnan(x)])) if not np.isnan(v).all()
                        else float("nan") for k, v in per.items()}
        out["lpips_net"] = model.net
        for k, v in per.items():
            curves[f"lpips_{k}"] = v
    else:
        skipped["lpips"] = "no --lpips-weights given"
    if config.inception_weights:
        if len(pred) < 2:
            skipped["fid"] = "needs at least 2 frames"
        else:
            out["fid"] = F.fid(F.load_detector(config.inception_weights, "inception"), pred, ref)
    else:
        skipped["fid"] = "no --inception-weights given"
    if config.i3d_weights:
        if len(pred) < F.FVD_CLIP + F.FVD_STRIDE:
            skipped["fvd"] = f"needs at least {F.FVD_CLIP + F.FVD_STRIDE} frames"
        else:
            out["fvd"] = F.fvd(F.load_detector(config.i3d_weights, "i3d"), pred, ref)
    else:
        skipped["fvd"] = "no --i3d-weights given"


# ----------------------------------------------------------------------------------------------- files

def read_eval_video(path: str | os.PathLike, num_frames: int | None = None, what: str = "video") -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of a video file or image folder at their stored size (no resizing)."""
    from ..io.video import read_video

    path = Path(path)
    check(path.exists(), f"{what} {path} not found")
    big = 1 << 20
    return read_video(path, num_frames=num_frames, max_res=big, multiple=1, allow_short=True).frames


def read_eval_mask(path: str | os.PathLike, size: tuple[int, int], num_frames: int | None = None) -> np.ndarray:
    """Known-mask [T, H, W] bool (luma > 127) of a mask video or image folder, cropped to ``size`` (W, H)."""
    from ..io.video import read_mask_frames, read_mask_video

    path = Path(path)
    check(path.exists(), f"mask {path} not found")
    if path.is_dir():
        masks = read_mask_frames(path)
        masks = masks[:num_frames] if num_frames else masks
    else:
        masks = read_mask_video(path, num_frames=num_frames, allow_short=True)
    W, H = size
    # write_video pads odd sizes by one row/column; anything else is a real mismatch
    if masks.shape[1] in (H, H + H % 2) and masks.shape[2] in (W, W + W % 2):
        masks = masks[:, :H, :W]
    return masks


def _describe(name: str, path, arr: np.ndarray) -> str:
    return f"{name} {path} ({arr.shape[0]} frames of {arr.shape[2]}×{arr.shape[1]}, shape {list(arr.shape)})"


def evaluate_files(pred: str | os.PathLike, ref: str | os.PathLike | None = None,
                   mask: str | os.PathLike | None = None, render: str | os.PathLike | None = None,
                   config: EvalConfig | None = None, num_frames: int | None = None) -> dict:
    """:func:`evaluate_video` on files (videos or image folders); Ex4dError naming both shapes on a mismatch.

    ``num_frames`` compares only the first N frames of every input (default: all; the counts must match).
    """
    check(num_frames is None or num_frames >= 1, f"num_frames must be ≥ 1, got {num_frames}")
    p = read_eval_video(pred, num_frames, "pred")
    arrays = {"pred": (pred, p)}
    r = g = m = None
    if ref is not None:
        r = read_eval_video(ref, num_frames, "ref")
        arrays["ref"] = (ref, r)
    if render is not None:
        g = read_eval_video(render, num_frames, "render")
        arrays["render"] = (render, g)
    for name, (path, arr) in arrays.items():
        if name != "pred" and arr.shape != p.shape:
            hint = " (pass --num-frames N to compare the first N frames)" if arr.shape[1:] == p.shape[1:] else ""
            raise Ex4dError(f"{_describe('pred', pred, p)} and {_describe(name, path, arr)} differ; "
                            f"they must have the same frame count and size{hint}")
    if mask is not None:
        m = read_eval_mask(mask, (p.shape[2], p.shape[1]), num_frames)
        if m.shape != p.shape[:3]:
            raise Ex4dError(f"{_describe('pred', pred, p)} and mask {mask} ({m.shape[0]} frames of "
                            f"{m.shape[2]}×{m.shape[1]}, shape {list(m.shape)}) differ; they must match")
    report = evaluate_video(p, r, m, g, config)
    report["inputs"] = {k: (str(Path(v).resolve()) if v is not None else None)
                        for k, v in (("pred", pred), ("ref", ref), ("mask", mask), ("render", render))}
    return report
