"""The web app's run request (JSON from the browser) → a checked :class:`~ex4d.pipeline.RunConfig`.

The browser never names a path: the input video and depth file are the ones
uploaded to the job, the trajectory is a preset or keyframes (never a camera
file on the server), and every number is range-checked against the server's
:class:`~ex4d.app.uploads.AppLimits`. Anything else is refused with an
:class:`~ex4d.errors.Ex4dError` that the UI shows.

Request fields (all optional but ``input``)::

    {"input": "example" | "upload",
     "num_frames": 49, "max_res": 512, "example_size": 256,
     "depth": "auto" | "file" | "example" | "<depth model>", "depth_kind": null | "depth" | "disparity" | "depthcrafter",
     "trajectory": "<preset>" | "keyframes",
     "trajectory_options": {"yaw": 30, "pitch": 0, "dolly": 0, "zoom": 1, "ease": "smoothstep"}
                           | {"keyframes": [{"t": 0, "yaw": 0}, ...], "interpolation": "cubic"},
     "filter": "grazing" | "angle" | "boundary",
     "fill": "classical" | "none" | "ex4d",
     "stereo": null | "sbs" | "ou" | "anaglyph"}        (also write stereo.mp4, ex4d's default eye geometry)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Ex4dError, check
from .uploads import AppLimits

__all__ = ["ServerModels", "build_run_config", "TRAJECTORY_OPTION_KEYS", "DEPTH_KINDS"]

DEPTH_KINDS = ("depth", "disparity", "depthcrafter")
FILTERS = ("grazing", "angle", "boundary")
#: Options the browser may set per trajectory kind (values are checked by make_trajectory).
TRAJECTORY_OPTION_KEYS = {
    "motion": ("yaw", "pitch", "dolly", "zoom", "ease", "pivot_depth"),
    "original": ("radius", "rounds"),
    "keyframes": ("keyframes", "interpolation", "pivot_depth"),
}
_REQUEST_KEYS = {"input", "num_frames", "max_res", "example_size", "depth", "depth_kind", "trajectory",
                 "trajectory_options", "filter", "fill", "stereo"}


@dataclass(frozen=True)
class ServerModels:
    """Model weights the server's operator made available (``ex4d app --depth-weights / --wan / --adapter``)."""

    depth_weights: dict = field(default_factory=dict)  #: depth model name → local weights folder
    wan: str | None = None
    adapter: str | None = None

    def fills(self) -> list[str]:
        return ["classical", "none"] + (["ex4d"] if self.wan else [])


def _show(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (values come from the browser: any size)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(keys, limit: int = 5) -> str:
    keys = [_show(str(k), 24).strip("'") for k in sorted(map(str, keys))]
    return ", ".join(keys[:limit]) + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _int(req: dict, key: str, default: int, lo: int, hi: int, multiple: int = 1) -> int:
    v = req.get(key, default)
    check(isinstance(v, int) and not isinstance(v, bool), f"{key} must be an integer, got {_show(v)}")
    check(lo <= v <= hi, f"{key} must be in [{lo}, {hi}] on this server, got {v}")
    check(v % multiple == 0, f"{key} must be a multiple of {multiple}, got {v}")
    return v


def _choice(req: dict, key: str, default, allowed) -> str:
    v = req.get(key, default)
    check(isinstance(v, (str, type(None))) and v in allowed,
          f"{key} must be one of {', '.join(map(str, allowed))}, got {_show(v)}")
    return v


def _plain(value, where: str, depth: int = 0):
    """JSON value made of numbers, short strings, lists and dicts only (no paths can hide in a number)."""
    check(depth < 4, f"{where} is nested too deeply")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        check(math.isfinite(value), f"{where} must be finite, got {_show(value)}")
        check(abs(value) <= 1e12, f"{where} must be a number of sensible size (|x| ≤ 1e12), got {_show(value)}")
        return value
    if isinstance(value, str):
        check(len(value) <= 32 and "/" not in value and "\\" not in value and value.isprintable(),
              f"{where}: unexpected text {_show(value)}")
        return value
    if isinstance(value, list):
        check(len(value) <= 64, f"{where}: at most 64 entries, got {len(value)}")
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        check(len(value) <= 16, f"{where}: at most 16 fields, got {len(value)}")
        for k in value:
            check(len(k) <= 32 and k.isprintable(), f"{where}: unexpected field name {_show(k)}")
        return {str(k): _plain(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise Ex4dError(f"{where}: unexpected value {_show(value)}")


def _trajectory(req: dict) -> tuple[str, dict]:
    from ..trajectory import PRESETS

    name = req.get("trajectory", "orbit")
    check(isinstance(name, str) and (name in PRESETS or name == "keyframes"),
          f"trajectory must be a preset ({', '.join(PRESETS)}) or 'keyframes', got {_show(name)}")
    opts = req.get("trajectory_options") or {}
    check(isinstance(opts, dict), "trajectory_options must be an object")
    kind = "keyframes" if name == "keyframes" else "original" if name.startswith("ex4d-") else "motion"
    allowed = () if name == "static" else TRAJECTORY_OPTION_KEYS[kind]
    extra = sorted(set(opts) - set(allowed))
    check(not extra, f"trajectory {name!r} does not take option(s) {_names(extra)}; "
                     f"it accepts: {', '.join(allowed) or 'none'}")
    opts = _plain({k: v for k, v in opts.items() if v is not None}, "trajectory_options")
    _try_trajectory(name, opts)
    return name, opts


def _try_trajectory(name: str, opts: dict) -> None:
    """Build the path once on a stand-in scene (64×64, depth 1), so bad option values are refused now, not in the job."""
    import numpy as np

    from ..cameras import default_intrinsics
    from ..trajectory import make_trajectory

    size = 64
    make_trajectory(name, 9, default_intrinsics(size, size), size, size, np.ones((size, size), np.float32), **opts)


def build_run_config(req: dict, job_input: dict, limits: AppLimits, models: ServerModels | None = None):
    """RunConfig for a job from the browser's request.

    Args:
        req: the request (module docstring).
        job_input: what the job holds: ``{"video": path | None, "video_info": {...}, "depth": path | None}``
            (paths chosen by the server).
        limits: the server's limits.
        models: weights the server offers.
    """
    from ..dwmesh import MeshConfig
    from ..pipeline import RunConfig
    from ..recon import ReconConfig

    models = models or ServerModels()
    check(isinstance(req, dict), "the run request must be a JSON object")
    extra = sorted(set(req) - _REQUEST_KEYS)
    check(not extra, f"unknown request field(s) {_names(extra)}; expected {', '.join(sorted(_REQUEST_KEYS))}")
    source = _choice(req, "input", None, ("example", "upload"))
    num_frames = _int(req, "num_frames", min(49, limits.max_frames), 1, limits.max_frames)
    # Every field given is checked, also those this input does not use (a wrong value is a wrong request).
    example_size = _int(req, "example_size", min(256, limits.max_res), 64, limits.max_res, 16)
    max_res = _int(req, "max_res", limits.max_res, 64, limits.max_res, 16)
    depth_kind = _choice(req, "depth_kind", None, (None, *DEPTH_KINDS))
    depth_models = sorted(models.depth_weights)
    kw: dict = {"num_frames": num_frames}
    if source == "example":
        kw.update(example=True, example_size=example_size)
        depth = _choice(req, "depth", "example", ("auto", "example", *depth_models))
    else:
        check(job_input.get("video") is not None, "upload a video first (or use the example)")
        kw.update(video=str(job_input["video"]), allow_short=True, max_res=max_res)
        depth = _choice(req, "depth", "auto", ("auto", "file", *depth_models))
        if depth == "auto":
            check(job_input.get("depth") is not None or depth_models,
                  "this video needs depth: upload a depth file (.npz/.npy), or start the app with a depth model "
                  "(ex4d app --depth-weights depth-anything-v2=DIR)")
            depth = "file" if job_input.get("depth") is not None else depth_models[0]
        if depth == "file":
            check(job_input.get("depth") is not None, "depth 'file' chosen but no depth file was uploaded")
            kw.update(depth=str(job_input["depth"]))
            if depth_kind is not None:
                kw["depth_kind"] = depth_kind
    if depth in depth_models:
        kw.update(depth_model=depth, depth_weights=str(Path(models.depth_weights[depth])))
    name, opts = _trajectory(req)
    fill = _choice(req, "fill", "classical", models.fills())
    fill_options = {"wan": models.wan, **({"adapter": models.adapter} if models.adapter else {})} if fill == "ex4d" \
        else {}
    mesh = MeshConfig(filter=_choice(req, "filter", "grazing", FILTERS))
    stereo = _choice(req, "stereo", None, (None, "sbs", "ou", "anaglyph"))
    return RunConfig(trajectory=name, trajectory_options=opts, recon=ReconConfig(mesh=mesh), fill=fill,
                     fill_options=fill_options, stereo=stereo, **kw)
