"""Long videos: peak memory and time of recon + classical fill on a long clip (CPU), and windowed generation (GPU).

    python bench/bench_long.py --sections recon                       # CPU: 2,000 frames at 512², peak RSS
    python bench/bench_long.py --sections generate --json $OUT/long.json   # GPU: 193 frames at 512², per memory mode
    python bench/bench_long.py --tiny                                  # CPU smoke run of both, tiny sizes

Sections:

``recon``
    A synthetic tripod clip (a textured back wall and a ball rolling in front of it, exact z-depth) is written
    as input.mp4 + depth.npy, both streamed, then ``ex4d run input.mp4 --depth depth.npy --num-frames 0
    --trajectory orbit --yaw 30`` (classical fill, default settings) runs in a fresh process that reports its
    peak RSS (``ru_maxrss``) and seconds per stage. The baseline is the same command on the clip's first 49
    frames, in the same run; the table gives the ratios (memory should stay flat, time grow with the length).
``generate``
    Full-size random weights (Wan2.1-I2V-14B DiT, UMT5-XXL, CLIP ViT-H/14, Wan VAE; bf16), a 193-frame 512²
    render of the example scene along an orbit (GPU recon), generated in windows of 49 frames sharing 9
    (5 windows) with lifting, for each memory mode in ``--modes``: seconds per window (generation and the
    rest: conditioning, lifting, saving), total, peak GPU memory. The baseline is one 49-frame video in the
    same mode (the first window's generation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

GIB = 1024**3


# --------------------------------------------------------------------------- recon: a long synthetic clip

def synthetic_frame(t: int, T: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of T: (RGB [S, S, 3] uint8, z-depth [S, S] float32) of a wall at z = 6 and a ball rolling across."""
    f = 500.0 * size / 512
    c = (size - 1) / 2
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    rx, ry = (u - c) / f, (v - c) / f  # ray directions (x, y, 1)
    depth = np.full((size, size), 6.0, np.float32)
    X, Y = rx * 6.0, ry * 6.0
    rgb = np.stack([0.55 + 0.35 * np.sin(3 * X) * np.cos(2 * Y), 0.45 + 0.3 * np.sin(5 * Y + X),
                    0.5 + 0.4 * np.cos(4 * X - 2 * Y)], -1)
    s = t / max(T - 1, 1)
    cx, cz, r = -1.2 + 2.4 * (0.5 - 0.5 * np.cos(2 * np.pi * s * max(1, T // 200))), 3.0, 0.6
    # ray-sphere: |z·(rx, ry, 1) − (cx, 0, cz)|² = r²
    a = rx * rx + ry * ry + 1
    b = -2 * (rx * cx + cz)
    disc = b * b - 4 * a * (cx * cx + cz * cz - r * r)
    hit = disc > 0
    z = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf).astype(np.float32)
    ball = hit & (z < depth)
    depth[ball] = z[ball]
    shade = np.clip(0.4 + 0.6 * (cz - z[ball]) / r, 0.2, 1.0)
    stripes = (np.floor((rx[ball] * z[ball] - cx) * 6 + 8 * s) % 2)[:, None]
    rgb[ball] = np.where(stripes > 0, [0.9, 0.2, 0.2], [0.95, 0.95, 0.9]) * shade[:, None]
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), depth


def write_synthetic(folder: Path, T: int, size: int) -> tuple[Path, Path]:
    """input.mp4 and depth.npy of the synthetic clip, written a frame at a time (bounded memory)."""
    from ex4d.io.video import VideoWriter

    folder.mkdir(parents=True, exist_ok=True)
    video, depth_path = folder / "input.mp4", folder / "depth.npy"
    with VideoWriter(video, 24.0, crf=12) as w, open(depth_path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (T, size, size)})
        for t in range(T):
            rgb, depth = synthetic_frame(t, T, size)
            w.write(rgb[None])
            f.write(depth.astype("<f4").tobytes())
    return video, depth_path


_RUN = """
import json, resource, sys, time
from ex4d.pipeline import RunConfig, run_pipeline
from ex4d.recon import ReconConfig
video, depth, n, out, window, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
t0 = time.perf_counter()
s = run_pipeline(RunConfig(video=video, depth=depth, depth_kind="depth", num_frames=n or None, trajectory="orbit",
                           trajectory_options={"yaw": 30}, max_res=4096, fill_options={"window": window},
                           recon=ReconConfig(backend=None if backend == "auto" else backend)), out, progress=False)
print(json.dumps({"wall_s": time.perf_counter() - t0, "timings": s.timings, "frames": s.num_frames,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_recon(video: Path, depth: Path, n: int, out: Path, fill_window: int = 4, backend: str = "auto") -> dict:
    res = subprocess.run([sys.executable, "-c", _RUN, str(video), str(depth), str(n), str(out), str(fill_window),
                          backend], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_recon(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ex4d-bench-long-", dir=args.tmp))
    import shutil

    try:
        t0 = time.perf_counter()
        video, depth = write_synthetic(tmp / "input", args.frames, args.size)
        made = time.perf_counter() - t0
        print(f"synthetic clip: {args.frames} frames {args.size}² written in {made:.0f} s", flush=True)
        long = run_recon(video, depth, 0, tmp / "long", args.fill_window, args.backend)
        base = run_recon(video, depth, 49, tmp / "short", args.fill_window, args.backend) if args.frames > 49 else long
        print(f"  baseline ({base['frames']} frames): {base['wall_s']:.1f} s, peak RSS {base['peak_rss_mib']:.0f} MiB",
              flush=True)
        print(f"  long ({long['frames']} frames): {long['wall_s']:.1f} s, peak RSS {long['peak_rss_mib']:.0f} MiB",
              flush=True)
        disk = sum(p.stat().st_size for p in (tmp / "long").rglob("*") if p.is_file()) / GIB
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"frames": args.frames, "size": args.size, "fill_window": args.fill_window, "backend": args.backend,
            "baseline": base, "long": long, "run_folder_gib": disk}


# --------------------------------------------------------------------------- generate: windows on the GPU

def bench_generate(args) -> dict:
    import torch

    from ex4d.diffusion.config import GenerateConfig
    from ex4d.diffusion.pipeline import Ex4dGenerator, model_spec
    from ex4d.diffusion.random_models import build_components, random_adapter
    from ex4d.diffusion.windowed import lift_backend
    from ex4d.diffusion.windows import WindowConfig, generate_windows, seam_changes
    from ex4d.example import make_example
    from ex4d.recon import render_novel_views
    from ex4d.trajectory import make_trajectory

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    T, S = args.gen_frames, args.gen_size
    t0 = time.perf_counter()
    scene = make_example(T, S, S)
    traj = make_trajectory("orbit", T, scene.K, S, S, depth0=scene.depth[0], yaw=40)
    render = render_novel_views(scene.frames, scene.depth, scene.K, traj.w2c, traj.K, progress=False)
    print(f"render of {T} frames {S}² in {time.perf_counter() - t0:.1f} s", flush=True)
    wcfg = WindowConfig(window=args.window, overlap=args.overlap, lift="none" if args.no_lift else "background")
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        gen = comps = None
        try:
            t0 = time.perf_counter()
            comps = build_components("tiny" if args.tiny else "full", device=device, dtype=dtype)
            if mode != "full" and device.type == "cuda":
                for m in (comps.transformer, comps.text_encoder, comps.image_encoder, comps.vae):
                    m.to("cpu")
                torch.cuda.empty_cache()
            spec = model_spec(comps)
            if args.tiny:
                import dataclasses

                spec = dataclasses.replace(spec, hidden=16, rank=4, alpha=4.0)
            cfg = GenerateConfig(dtype="bfloat16" if dtype == torch.bfloat16 else "float32", device=str(device),
                                 memory=mode, steps=args.steps)
            gen = Ex4dGenerator(comps, random_adapter(spec, seed=0, scale=0.01), cfg)
            print(f"built + placed memory {mode} in {time.perf_counter() - t0:.1f} s", flush=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            marks: list[dict] = []

            def generate(c, m, seed):
                t = time.perf_counter()
                out = gen.generate(c, m, gen.config.replace(seed=seed), progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks[-1]["generate_s"] = time.perf_counter() - t
                marks[-1]["frames"] = len(c)
                return out

            def on_window(k, w):
                marks.append({"window": k, "start": w.start, "end": w.end, "t0": time.perf_counter()})

            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=args.tmp) as work:
                res = generate_windows(render.color, render.mask, generate, wcfg, work, mode, seed=0,
                                       view_depth=render.depth, w2c=traj.w2c, K=traj.K, progress=False,
                                       on_window=on_window, backend=lift_backend(mode))
                total = time.perf_counter() - t0
                seams = seam_changes(res.video(), res.plan)  # random weights: says little about a trained model
            ends = [m["t0"] for m in marks[1:]] + [t0 + total]
            for m, end in zip(marks, ends):
                m["window_s"] = end - m.pop("t0")
                m["other_s"] = m["window_s"] - m["generate_s"]
            peak = torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None
            row = {"memory": mode, "frames": T, "size": S, "windows": len(res.plan), "steps": args.steps,
                   "total_s": total, "per_window": marks, "peak_gib": peak, "seams": seams,
                   "baseline_49_s": marks[0]["generate_s"],
                   "s_per_output_frame": total / T, "baseline_s_per_frame": marks[0]["generate_s"] / marks[0]["frames"]}
            rows.append(row)
            print(f"  memory {mode}: {len(res.plan)} windows, {total:.1f} s total, "
                  f"peak {peak if peak is None else round(peak, 1)} GiB", flush=True)
        except Exception as e:  # keep the other modes' numbers
            if args.tiny:
                raise
            import traceback

            traceback.print_exc()
            rows.append({"memory": mode, "error": f"{type(e).__name__}: {e}"})
        del gen, comps
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "modes": rows,
            "window": wcfg.to_dict()}


# --------------------------------------------------------------------------- tables

def print_tables(result: dict) -> None:
    if "recon" in result:
        r = result["recon"]
        b, lg = r["baseline"], r["long"]
        print(f"\nrecon + classical fill (--fill-window {r['fill_window']}, rasterizer {r['backend']}), "
              f"{r['size']}² ({result['machine']}, {result['cpus']} CPUs):")
        print(f"{'clip':28s} {'frames':>6s} {'wall s':>8s} {'s/frame':>8s} {'peak RSS MiB':>13s}")
        for name, x in (("baseline (first 49 frames)", b), ("long", lg)):
            print(f"{name:28s} {x['frames']:6d} {x['wall_s']:8.1f} {x['wall_s'] / x['frames']:8.3f} "
                  f"{x['peak_rss_mib']:13.0f}")
        print(f"{'ratio long / baseline':28s} {lg['frames'] / b['frames']:6.1f} {lg['wall_s'] / b['wall_s']:8.1f} "
              f"{(lg['wall_s'] / lg['frames']) / (b['wall_s'] / b['frames']):8.2f} "
              f"{lg['peak_rss_mib'] / b['peak_rss_mib']:13.2f}")
        print(f"run folder of the long clip: {r['run_folder_gib']:.1f} GiB on disk")
    if "generate" in result:
        g = result["generate"]
        print(f"\nwindowed generation on {g['device']}: window {g['window']['window']}, overlap "
              f"{g['window']['overlap']}, lift {g['window']['lift']}")
        print(f"{'memory':9s} {'frames':>6s} {'windows':>7s} {'total s':>8s} {'s/window':>9s} {'gen s/win':>9s} "
              f"{'other s/win':>11s} {'peak GiB':>8s} {'s/frame':>8s} {'49-frame video s':>16s} {'ratio':>6s} "
              f"{'seam/inside max':>15s}")
        for row in g["modes"]:
            if "error" in row:
                print(f"{row['memory']:9s} error: {row['error']}")
                continue
            w = row["per_window"]
            peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
            print(f"{row['memory']:9s} {row['frames']:6d} {row['windows']:7d} {row['total_s']:8.1f} "
                  f"{np.mean([x['window_s'] for x in w]):9.1f} {np.mean([x['generate_s'] for x in w]):9.1f} "
                  f"{np.mean([x['other_s'] for x in w]):11.2f} {peak:>8s} {row['s_per_output_frame']:8.2f} "
                  f"{row['baseline_49_s']:16.1f} {row['s_per_output_frame'] / row['baseline_s_per_frame']:6.2f} "
                  f"{row['seams']['seam_max']:7.1f}/{row['seams']['inside_max']:<7.1f}")
        print("(ratio: seconds per output frame against one window's generation; s/window: the whole window, "
              "other: conditioning, lifting and saving; seam/inside: largest frame-to-frame change, 8-bit levels, "
              "across window seams / inside windows: with random weights it says little)")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=None, help="recon, generate (default: recon without a GPU, both with one)")
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run of both sections at tiny sizes")
    p.add_argument("--frames", type=int, default=None, help="recon: frames of the synthetic clip (2000)")
    p.add_argument("--size", type=int, default=None, help="recon: frame size (512)")
    p.add_argument("--fill-window", type=int, default=4, help="recon: the classical fill's --fill-window (%(default)s)")
    p.add_argument("--backend", default="auto", choices=["auto", "numba", "torch"],
                   help="recon: rasterizer (auto: torch on a CUDA GPU, else numba)")
    p.add_argument("--gen-frames", type=int, default=None, help="generate: frames (193)")
    p.add_argument("--gen-size", type=int, default=None, help="generate: frame size (512)")
    p.add_argument("--modes", default=None, help="generate: memory modes (full,balanced,low)")
    p.add_argument("--steps", type=int, default=None, help="generate: denoising steps per window (25)")
    p.add_argument("--window", type=int, default=None, help="generate: window (49)")
    p.add_argument("--overlap", type=int, default=None, help="generate: overlap (9)")
    p.add_argument("--no-lift", action="store_true", help="generate: without lifting")
    p.add_argument("--tmp", default=None, help="folder for the temporary run folders (default: the system's)")
    p.add_argument("--json", help="write the results here (default: $OUT/bench_long.json when $OUT is set)")
    args = p.parse_args(argv)
    import torch

    defaults = dict(frames=2000, size=512, gen_frames=193, gen_size=512, modes="full,balanced,low", steps=25,
                    window=49, overlap=9)
    if args.tiny:  # CPU smoke sizes
        defaults.update(frames=60, size=64, gen_frames=17, gen_size=64, modes="full,low", steps=2, window=9,
                        overlap=5)
        args.sections = args.sections or "recon,generate"
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    sections = set((args.sections or ("recon,generate" if torch.cuda.is_available() else "recon")).split(","))
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "torch": torch.__version__}
    out = args.json or (str(Path(os.environ["OUT"]) / "bench_long.json") if os.environ.get("OUT") else None)

    def save():
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(result, indent=2))

    if "recon" in sections:
        result["recon"] = bench_recon(args)
        save()
    if "generate" in sections:
        result["generate"] = bench_generate(args)
        save()
    print_tables(result)
    return result


if __name__ == "__main__":
    main()
