"""Flag flicker: how stable the DW-Mesh's per-face flags are from frame to frame on a still scene.

Each scene is shot still (every frame at time 0) and each depth variant is made per frame (so only the
estimator-like noise, seeded per frame, changes between frames). For consecutive frames t−1, t the flipped
faces are the grid faces whose occluded flag differs. Reported per (scene, depth, method):

* ``flicker`` = mean flipped faces / mean flagged faces (the share of the flagged faces that change per frame;
  0 = perfectly stable),
* ``flipped_share`` = mean flipped faces / grid faces, ``flagged_share`` = mean flagged faces / grid faces.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flag_flicker", "flicker_counts"]


def flicker_counts(flags: np.ndarray) -> dict:
    """{"flipped", "flagged", "faces"} mean counts per frame of bool flags [T, F] (T ≥ 2)."""
    flags = np.asarray(flags, bool)
    return {"flipped": float((flags[1:] != flags[:-1]).sum(1).mean()), "flagged": float(flags.sum(1).mean()),
            "faces": float(flags.shape[1])}


def _ratios(c: dict) -> dict:
    return {"flicker": c["flipped"] / c["flagged"] if c["flagged"] else float("nan"),
            "flipped_share": c["flipped"] / c["faces"], "flagged_share": c["flagged"] / c["faces"]}


def flag_flicker(scenes, variants, methods, num_frames: int, size: int, seed: int = 0) -> dict:
    """{"results": rows per (scene, depth, method), "summary": rows pooled over scenes} of the still-scene test.

    ``variants``: canonical variant names (:mod:`ex4d.eval.degrade`); ``methods``: [(name, MeshConfig)].
    """
    from ..cameras import default_intrinsics
    from ..dwmesh import build_dwmesh, default_far
    from .degrade import degrade
    from .scenes import get_scene, render_source

    K = default_intrinsics(size, size)
    rows = []
    for scene_name in scenes:
        frames, depth, labels = render_source(get_scene(scene_name), num_frames, K, size, size, labels=True,
                                              static=True)
        for vname in variants:
            dvar = depth if vname == "exact" else degrade(depth, vname, labels, seed)
            far = default_far(dvar)
            for mname, cfg in methods:
                flags = []
                for t in range(num_frames):
                    m = build_dwmesh(frames[t], dvar[t], K, far=far, config=cfg)
                    flags.append(m.occluded[: m.num_grid_faces])
                c = flicker_counts(np.stack(flags))
                rows.append({"scene": scene_name, "depth": vname, "method": mname, "counts": c, **_ratios(c)})
    groups: dict = {}
    for r in rows:
        key = (r["depth"], r["method"])
        g = groups.setdefault(key, {"flipped": 0.0, "flagged": 0.0, "faces": 0.0})
        for k in g:
            g[k] += r["counts"][k]
    summary = [{"depth": d, "method": m, "counts": c, **_ratios(c)} for (d, m), c in groups.items()]
    return {"frames": num_frames, "results": rows, "summary": summary}
