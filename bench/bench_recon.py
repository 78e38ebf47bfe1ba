"""Recon benchmark: DW-Mesh build + render, ms/frame per kernel, on the example scene.

    python bench/bench_recon.py [--frames 49] [--size 512] [--trajectory ex4d-90] [--torch-cpu-frames 3]
                                [--filters grazing step step+nocover] [--variants exact fatten2+blur2.5+noise1] [--json out.json]

For every (mesh filter, depth variant) it prints one row per kernel (numba; torch on CPU, the reference; torch on
CUDA when present) and the clip API (all frames in one call, on the GPU without host round trips), with the
ratio against the torch-CPU reference and against the first filter (the baseline: ``grazing``, the previous
default) on the same kernel and depth, measured in the same run. The step filter's pre-pass (denoising and the
snap sharpening) runs only where the depth is noisy or soft, so time it on an estimated-like variant too
(:mod:`ex4d.eval.degrade` names). The first call of each kernel (JIT compile, CUDA warm-up) is excluded and
reported separately. The machine is shared: run it when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _time_kernel(frames, depth, K, w2c, backend, n, config, device=None, far=None):
    from ex4d.dwmesh import build_dwmesh
    from ex4d.render import render_mesh

    t_mesh = t_render = 0.0
    known = []
    ids = []
    for t in range(n):
        t0 = time.perf_counter()
        mesh = build_dwmesh(frames[t], depth[t], K, far=far, config=config)
        t1 = time.perf_counter()
        r = render_mesh(mesh, K, w2c[t], backend=backend, device=device)
        if device is not None and str(device).startswith("cuda"):
            import torch
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        t_mesh += t1 - t0
        t_render += t2 - t1
        known.append(r.mask.mean())
        ids.append(r.face_id)
    return 1000 * t_mesh / n, 1000 * t_render / n, float(np.mean(known)), ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--trajectory", default="ex4d-90")
    ap.add_argument("--torch-cpu-frames", type=int, default=3, help="frames for the slow CPU reference")
    ap.add_argument("--filters", nargs="+", default=["grazing", "step"],
                    help="mesh filters to time, each FILTER or FILTER+nocover (its cover faces off); the first is "
                         "the baseline of the 'vs baseline' column")
    ap.add_argument("--variants", nargs="+", default=["exact", "fatten2+blur2.5+noise1"],
                    help="depth variants (ex4d.eval.degrade names) of the example's exact depth")
    ap.add_argument("--json", help="write the results here (default: $OUT/bench_recon.json when OUT is set)")
    ap.add_argument("--profile", action="store_true",
                    help="CUDA: time the clip at several frame batch sizes and print the top kernels of one clip")
    args = ap.parse_args()

    import torch

    from ex4d.dwmesh import MeshConfig, default_far
    from ex4d.eval.degrade import degrade, variant_name
    from ex4d.example import make_example
    from ex4d.recon import ReconConfig, render_novel_views
    from ex4d.trajectory import make_trajectory

    scene = make_example(args.frames, args.size, args.size)
    traj = make_trajectory(args.trajectory, args.frames, scene.K, args.size, args.size, depth0=scene.depth[0])
    w2c = traj.w2c.copy()
    w2c[0] = traj.w2c[min(1, args.frames - 1)]  # time a real novel view on every frame
    cuda = torch.cuda.is_available()
    rows = []
    same = True
    labels = None
    if any(variant_name(v) != "exact" for v in args.variants):
        from ex4d.eval.scenes import get_scene, render_source  # the example's object ids (fatten / shrink need them)

        _, _, labels = render_source(get_scene("example"), args.frames, scene.K, args.size, args.size, labels=True)
    for vname in [variant_name(v) for v in args.variants]:
        depth = scene.depth if vname == "exact" else degrade(scene.depth, vname, labels, seed=0)
        far = default_far(depth)
        for filt in args.filters:
            fname, _, extra = filt.partition("+")
            cfg = MeshConfig(filter=fname, cover="off" if extra == "nocover" else "auto")

            def run(name, backend, n, device=None):
                t0 = time.perf_counter()
                _time_kernel(scene.frames, depth, scene.K, w2c, backend, 1, cfg, device, far)  # warm-up / compile
                warm = time.perf_counter() - t0
                ms_mesh, ms_render, known, ids = _time_kernel(scene.frames, depth, scene.K, w2c, backend, n, cfg,
                                                              device, far)
                rows.append({"filter": filt, "depth": vname, "kernel": name, "frames": n, "mesh_ms": ms_mesh,
                             "render_ms": ms_render, "total_ms": ms_mesh + ms_render,
                             "clip_s_49": 49 * (ms_mesh + ms_render) / 1000, "first_call_s": warm, "known": known})
                return ids

            ref_ids = run("torch-cpu (reference)", "torch", args.torch_cpu_frames, "cpu")
            nb_ids = run("numba", "numba", args.frames)
            same = same and all(np.array_equal(a, b) for a, b in zip(ref_ids, nb_ids))
            if cuda:
                cu_ids = run("torch-cuda", "torch", args.frames, "cuda")
                same = same and all(np.array_equal(a, b) for a, b in zip(nb_ids, cu_ids))
            clip = {}
            for backend, name, dev in [("numba", "numba", None)] + ([("torch", "torch-cuda", "cuda")] if cuda else []):
                rc = ReconConfig(mesh=cfg, backend=backend)
                t0 = time.perf_counter()  # the first call also pays one-time allocations (GPU memory, pinned buffers)
                render_novel_views(scene.frames, depth, scene.K, w2c, traj.K, rc, progress=False, device=dev)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = render_novel_views(scene.frames, depth, scene.K, w2c, traj.K, rc, progress=False, device=dev)
                clip[name] = (time.perf_counter() - t0, res)
                rows.append({"filter": filt, "depth": vname, "kernel": f"{name} clip API", "frames": args.frames,
                             "mesh_ms": 1000 * res.timings["mesh_s"] / args.frames,
                             "render_ms": 1000 * res.timings["render_s"] / args.frames,
                             "total_ms": 1000 * clip[name][0] / args.frames,
                             "clip_s_49": 49 * clip[name][0] / args.frames,
                             "first_call_s": first, "known": float(res.mask.mean())})
            if "torch-cuda" in clip:
                a, b = clip["numba"][1], clip["torch-cuda"][1]
                same = same and np.array_equal(a.mask, b.mask) and np.array_equal(a.color, b.color)
            if args.profile and cuda:
                from ex4d.recon import _render_torch

                rc = ReconConfig(mesh=cfg, backend="torch")
                for batch in (4, 8, 16, 25, 49):
                    _render_torch(scene.frames, depth, scene.K, w2c, traj.K, far, rc, False, "cuda", batch=batch)
                    t0 = time.perf_counter()
                    _render_torch(scene.frames, depth, scene.K, w2c, traj.K, far, rc, False, "cuda", batch=batch)
                    print(f"{filt} {vname} torch-cuda clip, frame batch {batch:2d}: {time.perf_counter() - t0:.3f} s",
                          flush=True)
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    _render_torch(scene.frames, depth, scene.K, w2c, traj.K, far, rc, False, "cuda")
                    torch.cuda.synchronize()
                ev = prof.key_averages()
                print(ev.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
                launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                "cudaLaunchKernelExC"))
                syncs = sum(e.count for e in ev if "Synchronize" in e.key or e.key == "cudaMemcpyAsync")
                print(f"kernel launches {launches}, synchronizing calls {syncs}")
    ref = {(r["filter"], r["depth"]): r["total_ms"] for r in rows if r["kernel"].startswith("torch-cpu")}
    base = {(r["depth"], r["kernel"]): r["total_ms"] for r in rows if r["filter"] == args.filters[0]}
    print(f"recon benchmark: {args.frames} frames {args.size}×{args.size}, trajectory {args.trajectory}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; baseline filter {args.filters[0]}")
    print(f"{'filter':8s} {'depth':24s} {'kernel':22s} {'mesh ms/f':>10s} {'render ms/f':>12s} {'total ms/f':>11s} "
          f"{'49-frame s':>11s} {'vs reference':>13s} {'vs baseline':>12s} {'first s':>8s}")
    for r in rows:
        b = base.get((r["depth"], r["kernel"]))
        print(f"{r['filter']:8s} {r['depth']:24s} {r['kernel']:22s} {r['mesh_ms']:10.1f} {r['render_ms']:12.1f} "
              f"{r['total_ms']:11.1f} {r['clip_s_49']:11.2f} {ref[r['filter'], r['depth']] / r['total_ms']:12.1f}× "
              f"{r['total_ms'] / b:11.2f}× {r['first_call_s']:8.1f}")
    print(f"face ids (per-frame rows) and masks/colours (clip rows) identical across kernels: {same}")
    path = args.json or (os.path.join(os.environ["OUT"], "bench_recon.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump({"rows": rows, "identical": same, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
