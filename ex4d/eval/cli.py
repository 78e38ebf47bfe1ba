"""``ex4d eval`` and ``ex4d benchmark novel-view``: thin command lines over :mod:`ex4d.eval`.

The main CLI calls :func:`register` with its subparsers; each command's handler
is ``args.func`` and returns the exit status (user errors raise Ex4dError).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import check

__all__ = ["register", "run_eval_command", "run_novel_view_command"]


def register(subparsers) -> None:
    """Add ``eval`` and ``benchmark`` (with ``novel-view``) to the main CLI's ``subparsers``."""
    from .benchmark import BenchmarkConfig
    from .metrics import FLOW_METHODS

    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "eval", formatter_class=fmt, help="score an output video: PSNR/SSIM (whole, known, generated), temporal and "
                                          "geometric consistency, LPIPS/FID/FVD with local weights",
        description="Score an output video against a reference (e.g. the true novel view) and itself. Writes a JSON "
                    "report (atomic) and a PNG of per-frame curves, and prints a table.\n\n"
                    "  ex4d eval --pred out/output.mp4 --ref gt.mp4 --mask out/mask.mp4 --render out/color.mp4 "
                    "--out report.json\n\n"
                    "Regions: all pixels, known (mask 255) and generated (mask 0). Temporal consistency = warping "
                    "error between consecutive frames through optical flow, occluded pixels excluded (lower is "
                    "smoother; compare with the reference's own). Geometric consistency = agreement with the "
                    "DW-Mesh render where it is known. Learned metrics run only with local weights (nothing is "
                    "downloaded); without them they are skipped with a note.")
    p.add_argument("--pred", required=True, help="video to score (mp4/mov/… or a folder of images)")
    p.add_argument("--ref", help="reference video of the same size and length (e.g. ground truth)")
    p.add_argument("--mask", help="known-mask video or folder (255 = known, ex4d's mask.mp4): splits the scores "
                                  "into known and generated regions")
    p.add_argument("--render", help="the DW-Mesh render (ex4d's color.mp4), for geometric consistency (needs --mask)")
    p.add_argument("--out", required=True, help="report file (.json)")
    p.add_argument("--plot", help="PNG of the per-frame curves (default: beside --out, REPORT_frames.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--num-frames", type=int, help="compare only the first N frames of every input")
    p.add_argument("--flow", choices=FLOW_METHODS, default="dis", help="optical flow for the warping error (dis)")
    p.add_argument("--flow-from", choices=("pred", "ref"), default="pred",
                   help="estimate the flow on pred (default) or on ref, so that flicker cannot hide in the flow")
    g = p.add_argument_group("learned metrics (local weights only)")
    g.add_argument("--lpips-weights", metavar="PATH",
                   help="LPIPS: the lpips package's weights/v0.1/alex.pth or vgg.pth, or a folder holding it and the "
                        "torchvision backbone (alexnet-owt-7be5be79.pth / vgg16-397923af.pth)")
    g.add_argument("--lpips-backbone", metavar="PATH", help="LPIPS: torchvision backbone state dict, if not beside it")
    g.add_argument("--inception-weights", metavar="PATH",
                   help="FID: TorchScript Inception of StyleGAN2-ADA / clean-fid (inception-2015-12-05.pt)")
    g.add_argument("--i3d-weights", metavar="PATH", help="FVD: TorchScript I3D of StyleGAN-V (i3d_torchscript.pt)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=run_eval_command)

    d = BenchmarkConfig()
    b = subparsers.add_parser("benchmark", help="benchmarks with ground truth (novel-view)",
                              description="Benchmarks with ground truth. `ex4d benchmark novel-view --help`.")
    bsub = b.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    b.set_defaults(func=_no_benchmark)
    n = bsub.add_parser(
        "novel-view", formatter_class=fmt,
        help="mask precision/recall and fill quality against exact novel views of synthetic scenes",
        description="Re-shoot synthetic dynamic scenes with exact depth along camera paths sweeping each yaw range, "
                    "and compare with the exact novel views: leak (known pixels showing a wrong surface or one hidden "
                    "in the source) and recall of the known-mask, PSNR of the known region, and PSNR/SSIM of the "
                    "filled video; with exact, blurred and noisy depth; masking methods side by side (default: the "
                    "original's angle filter with per-vertex alpha against ours, grazing with per-face flags). "
                    "Writes report.json, report.md and PNG plots.\n\n"
                    "  ex4d benchmark novel-view --out bench_report/ --size 256 --frames 9")
    n.add_argument("--out", required=True, help="output folder (report.json, report.md, *.png)")
    n.add_argument("--size", type=int, default=d.size, help=f"frame side in pixels (default {d.size})")
    n.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip (default {d.frames})")
    n.add_argument("--ranges", nargs="+", default=list(d.ranges), metavar="LO-HI",
                   help="yaw ranges in degrees: LO-HI, N (= 0-N) or +-N (= -N-N; a value starting with '-' "
                        "reads as an option) (default: 0-30 0-60 0-90 +-90)")
    n.add_argument("--scenes", nargs="+", default=list(d.scenes), help="synthetic scenes: example, layout, "
                                                                      f"layout-N (default: {' '.join(d.scenes)})")
    n.add_argument("--filters", "--methods", dest="methods", nargs="+", default=list(d.methods), metavar="METHOD",
                   help="masking methods: original (angle filter, per-vertex alpha), ours (grazing, per-face), or "
                        "FILTER[:ALPHA] with FILTER grazing|angle|boundary, ALPHA face|vertex "
                        f"(default: {' '.join(d.methods)})")
    n.add_argument("--blur", nargs="*", type=float, default=list(d.blur), metavar="PX",
                   help=f"depth variants blurred by a Gaussian of PX pixels (default: {' '.join(map(str, d.blur))}; "
                        "none: --blur)")
    n.add_argument("--noise", nargs="*", type=float, default=list(d.noise), metavar="REL",
                   help=f"depth variants with multiplicative noise of relative std REL (default: "
                        f"{' '.join(map(str, d.noise))}; none: --noise)")
    n.add_argument("--fill", choices=("classical", "none"), default=d.fill,
                   help="fill to score against the truth (default: %(default)s)")
    n.add_argument("--fill-window", type=int, default=d.fill_window,
                   help="classical fill: farthest frame offset (default %(default)s)")
    n.add_argument("--pitch", type=float, default=d.pitch,
                   help="pitch at the widest yaw, degrees (default %(default)s)")
    n.add_argument("--seed", type=int, default=d.seed, help="depth noise seed (default %(default)s)")
    n.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    n.set_defaults(func=run_novel_view_command)


def _no_benchmark(args: argparse.Namespace) -> int:
    from ..errors import Ex4dError

    raise Ex4dError("name the benchmark to run: novel-view (see `ex4d benchmark novel-view --help`)")


def check_output_path(path: Path, flag: str, folder: bool = False) -> None:
    """Ex4dError unless ``path`` (a file, or a folder with ``folder``) can be written: checked before any work."""
    import os

    check(not path.exists() or (path.is_dir() if folder else not path.is_dir()),
          f"{flag} {path} exists and is {'not a folder' if folder else 'a folder'}")
    probe = path if folder else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    check(probe.is_dir(), f"{flag} {path}: {probe} is not a folder")
    check(os.access(probe, os.W_OK | os.X_OK), f"{flag} {path}: {probe} is not writable")


def run_eval_command(args: argparse.Namespace) -> int:
    """Handler of ``ex4d eval``: evaluate, write the JSON (+ PNG) atomically, print the table; returns 0."""
    from .evaluate import EvalConfig, evaluate_files
    from .report import MATPLOTLIB_HINT, format_eval_table, plot_eval_curves, write_json

    out = Path(args.out)
    check(out.suffix.lower() == ".json", f"--out {out} must end in .json")
    check(args.render is None or args.mask is not None, "--render needs --mask (the known region to compare in)")
    check_output_path(out, "--out")
    if args.plot and not args.no_plot:
        check(Path(args.plot).suffix.lower() == ".png", f"--plot {args.plot} must end in .png")
        check_output_path(Path(args.plot), "--plot")
    for flag in ("lpips_weights", "lpips_backbone", "inception_weights", "i3d_weights"):
        value = getattr(args, flag)
        check(value is None or Path(value).exists(), f"--{flag.replace('_', '-')} {value} does not exist")
    config = EvalConfig(flow=args.flow, flow_from=args.flow_from, lpips_weights=args.lpips_weights,
                        lpips_backbone=args.lpips_backbone, inception_weights=args.inception_weights,
                        i3d_weights=args.i3d_weights)
    report = evaluate_files(args.pred, args.ref, args.mask, args.render, config, args.num_frames)
    if not args.no_plot:
        plot = Path(args.plot) if args.plot else out.with_name(out.stem + "_frames.png")
        written = plot_eval_curves(report, plot)
        if written is not None:
            report["plot"] = str(written)
        else:
            report["plot_note"] = MATPLOTLIB_HINT
    write_json(out, report)
    if not args.quiet:
        print(format_eval_table(report))
        print(f"wrote {out}" + (f" and {report['plot']}" if "plot" in report else ""))
    return 0


def run_novel_view_command(args: argparse.Namespace) -> int:
    """Handler of ``ex4d benchmark novel-view``: run, write report.json/.md/PNGs, print the summary; returns 0."""
    from .benchmark import BenchmarkConfig, run_benchmark
    from .report import write_benchmark_report

    check_output_path(Path(args.out), "--out", folder=True)
    config = BenchmarkConfig(size=args.size, frames=args.frames, ranges=tuple(args.ranges), scenes=tuple(args.scenes),
                             methods=tuple(args.methods), blur=tuple(args.blur), noise=tuple(args.noise),
                             fill=args.fill, fill_window=args.fill_window, pitch=args.pitch, seed=args.seed)
    report = run_benchmark(config, progress=False, log=None if args.quiet else print)
    paths = write_benchmark_report(report, args.out)
    if not args.quiet:
        print(paths["md"].read_text())
    print(f"wrote {paths['json']}, {paths['md']}" + "".join(f", {p}" for p in paths["plots"]))
    return 0
