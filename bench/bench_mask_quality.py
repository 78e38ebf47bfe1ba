"""How right is the known-mask? Leak and recall of each occlusion filter on exact and on soft depth.

    python bench/bench_mask_quality.py [--frames 9] [--size 256] [--blur 0 3] [--yaw 30 60 90]

On the example scene (exact geometry known), for an orbit to each yaw: a pixel is *truly visible* when the
true surface seen there by the new camera was visible in the source view. Leak = share of pixels marked
known that show a wrong surface (or one hidden in the source); recall = share of truly visible pixels
marked known. Depth is the exact depth, or the exact depth blurred by a Gaussian of `--blur` px (as
monocular estimators soften edges).
"""

from __future__ import annotations

import argparse

import numpy as np


def true_view(t_norm, K, w2c, H, W):
    from ex4d.example import _scene
    from ex4d.render import _transform
    from ex4d.render.numba_raster import rasterize_numba

    v, f, _ = _scene(t_norm)
    vc = _transform(np, v.astype(np.float64), w2c)
    fid, inv, bary = rasterize_numba(vc, f, K, H, W, near=1e-3)
    with np.errstate(divide="ignore"):
        z = np.where(fid >= 0, 1.0 / inv, np.inf)
    # world points of the true surface
    X = np.einsum("hwk,hwkc->hwc", bary.astype(np.float64), v[f[np.maximum(fid, 0)]])
    return z, X


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--blur", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--yaw", type=float, nargs="+", default=[30.0, 60.0, 90.0])
    ap.add_argument("--filters", nargs="+", default=["angle", "boundary", "grazing"])
    args = ap.parse_args()

    from scipy.ndimage import gaussian_filter

    from ex4d.cameras import project_points
    from ex4d.dwmesh import MeshConfig, build_dwmesh, default_far
    from ex4d.example import make_example
    from ex4d.render import render_mesh
    from ex4d.trajectory import orbit_w2c

    S = args.size
    scene = make_example(args.frames, S, S)
    K = scene.K
    print(f"mask quality on the example ({args.frames} frames, {S}×{S}); leak = wrong-surface share of known "
          "pixels, recall = share of truly visible pixels kept")
    print(f"{'blur px':>7s} {'yaw':>5s} " + " ".join(f"{f + ' leak%':>14s} {f + ' recall%':>16s}" for f in args.filters))
    for blur in args.blur:
        depth = np.stack([gaussian_filter(d, blur) if blur > 0 else d for d in scene.depth]).astype(np.float32)
        far = default_far(depth)
        for yaw in args.yaw:
            w2c = orbit_w2c(np.array([yaw]), np.array([5.0]), np.array([0.0]), 3.0)[0]
            cells = []
            for filt in args.filters:
                leak_n = known_n = vis_n = kept_n = 0
                for t in range(args.frames):
                    tn = t / max(args.frames - 1, 1)
                    z_true, X = true_view(tn, K, w2c, S, S)
                    uv, zs = project_points(X, K)
                    # visible in the source: the point lies within the depth range of the 2×2 source pixels
                    # around its projection (on the sampled surface, not behind it)
                    uvc = np.nan_to_num(uv, nan=-10.0, posinf=-10.0, neginf=-10.0)
                    inside = (uvc[..., 0] >= 0) & (uvc[..., 0] <= S - 1) & (uvc[..., 1] >= 0) & (uvc[..., 1] <= S - 1)
                    u0 = np.clip(np.floor(uvc[..., 0]).astype(int), 0, S - 2)
                    v0 = np.clip(np.floor(uvc[..., 1]).astype(int), 0, S - 2)
                    d = scene.depth[t]
                    nb = np.stack([d[v0, u0], d[v0, u0 + 1], d[v0 + 1, u0], d[v0 + 1, u0 + 1]])
                    visible = inside & np.isfinite(z_true) & (zs <= nb.max(0) * 1.01) & (zs >= nb.min(0) * 0.99)
                    mesh = build_dwmesh(scene.frames[t], depth[t], K, far=far, config=MeshConfig(filter=filt))
                    r = render_mesh(mesh, K, w2c, backend="numba")
                    with np.errstate(invalid="ignore"):
                        right = np.abs(r.depth - z_true) < 0.02 * z_true
                    leak_n += int((r.mask & ~(right & visible)).sum())
                    known_n += int(r.mask.sum())
                    vis_n += int(visible.sum())
                    kept_n += int((r.mask & visible & right).sum())
                cells.append(f"{100 * leak_n / max(known_n, 1):14.2f} {100 * kept_n / max(vis_n, 1):16.1f}")
            print(f"{blur:7.1f} {yaw:5.0f} " + " ".join(cells))


if __name__ == "__main__":
    main()
