"""``ex4d stereo`` and ``ex4d export``: a finished run's lifted scene as a stereo video or as 4D assets.

Also the stereo flags of ``ex4d run`` (:func:`add_stereo_args`, :func:`stereo_options`). A thin layer over
:mod:`ex4d.run_scene`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "add_stereo_args", "stereo_options"]

S = argparse.SUPPRESS


def _distance(text: str) -> float:
    """A distance in scene units; ``inf`` allowed (for --convergence)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_stereo_args(g, run: bool) -> None:
    """The stereo flags: layout (``--stereo`` for run, ``--layout`` for stereo), --ipd, --convergence, --half."""
    from .io.stereo_video import LAYOUTS

    layouts = "sbs: left | right, full width per eye (2W×H); ou: left over right (W×2H); anaglyph: red/cyan"
    if run:
        g.add_argument("--stereo", choices=LAYOUTS, default=S, help=f"also write stereo.mp4: {layouts}")
    else:
        g.add_argument("--layout", choices=LAYOUTS, default="sbs", help=f"{layouts} (default sbs)")
    g.add_argument("--ipd", type=_distance, default=S,
                   help="distance between the eyes in scene units (metres when the depth is metric, e.g. 0.063); "
                        "default: 1/30 of the nearest depth (2nd percentile), the stereographers' 1/30 rule")
    g.add_argument("--convergence", type=_distance, default=S,
                   help="zero-parallax z-depth in scene units (on the screen; nearer pops out); realised by "
                        "shifting the right eye's sensor by fx·ipd/convergence px; inf = parallel eyes; "
                        "default: the nearest depth, so the scene sits behind the screen")
    g.add_argument("--half" if not run else "--stereo-half", dest="half", action="store_true", default=S,
                   help="squeeze each eye to half width (sbs) or half height (ou): frame-compatible 3D for TVs")


def stereo_options(args: argparse.Namespace, layout: str | None, base: dict) -> tuple[str | None, dict]:
    """(layout, stereo_options) of ``ex4d run`` from its flags over ``base`` (a --config's values)."""
    a = vars(args)
    opts = dict(base or {})
    if "stereo" in a:
        layout = a["stereo"]
    for k in ("ipd", "convergence", "half"):
        if k in a:
            opts[k] = a[k]
    return layout, opts


def register(subparsers) -> None:
    """Add the ``stereo`` and ``export`` commands to ex4d's sub-command parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "stereo", formatter_class=fmt, help="a finished run as a stereo 3D video (sbs / ou with st3d, anaglyph)",
        description="Write a stereo video of a finished `ex4d run`: the left eye is its output.mp4, the right eye is "
                    "rendered from the output lifted into 3D, so only the thin band between the eyes is new; that is "
                    "filled with the run's backend (or --fill). sbs and ou files carry the Spherical Video V2 st3d "
                    "box that players read; name the file …_LR.mp4 / …_TB.mp4 for players that go by the name.",
        epilog="examples:\n"
               "  ex4d stereo out/ --layout sbs --out out/stereo_LR.mp4\n"
               "  ex4d stereo out/ --layout ou --ipd 0.063 --convergence 2.5 --out out/stereo_TB.mp4\n"
               "  ex4d stereo out/ --layout anaglyph --out out/anaglyph.mp4")
    p.add_argument("run", help="the --out folder of a finished `ex4d run` (with output.mp4)")
    p.add_argument("--out", default=None, help="the stereo .mp4 (default RUN/stereo.mp4); a .json record is written beside")
    add_stereo_args(p, run=False)
    p.add_argument("--fill", choices=["classical", "ex4d"], default=None,
                   help="fill of the right eye's new pixels (default: the run's fill, with its options)")
    p.add_argument("--wan", default=None, help="ex4d fill: Wan2.1-I2V-14B-480P folder (default: the run's)")
    p.add_argument("--adapter", default=None, help="ex4d fill: the EX-4D adapter (default: the run's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_stereo)

    p = subparsers.add_parser(
        "export", formatter_class=fmt, help="a finished run's lifted 4D scene as assets (glTF binary or PLY sequence)",
        description="Export the lifted scene of a finished `ex4d run`: one coloured mesh per output frame (its "
                    "valid DW-Mesh faces, the generated content included), with the cameras. glb: one node per frame "
                    "whose visibility an animation steps through, glTF cameras; ply: a folder 00000.ply … plus "
                    "cameras.json. Coordinates: glTF's (y up), in scene units.",
        epilog="examples:\n"
               "  ex4d export out/ --format glb --out out/scene.glb\n"
               "  ex4d export out/ --format ply --out out/scene_ply/ --max-size 256")
    p.add_argument("run", help="the --out folder of a finished `ex4d run` (with output.mp4)")
    p.add_argument("--format", choices=["glb", "ply"], default=None,
                   help="glb (one file) or ply (a folder); default: glb for an --out ending in .glb, else ply")
    p.add_argument("--out", required=True, help="the .glb file, or the folder for the PLY sequence")
    p.add_argument("--max-size", type=int, default=128,
                   help="longer side of each frame's mesh grid in vertices (every s-th pixel; default 128, "
                        "≈0.5 MB per frame in a GLB; the frame size for full resolution)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_export)


def _cmd_stereo(args) -> int:
    from .io.outdir import run_folder_lock

    with run_folder_lock(args.run, "RUN"):  # writes caches into the run: no `ex4d run` or stereo there meanwhile
        return _stereo(args)  # a --fill ex4d right eye frees the model it loaded (stereo.fill_right_eye)


def _stereo(args) -> int:
    from .run_scene import read_run, run_stereo, stereo_config_from

    views = read_run(args.run)
    a = vars(args)
    sconf, half = stereo_config_from({k: a[k] for k in ("ipd", "convergence", "half") if k in a})
    fill_options = None
    if args.fill is not None or args.wan or args.adapter:
        fill = args.fill or views.config.fill
        fill_options = dict(views.config.fill_options) if fill == views.config.fill else {}
        for k in ("wan", "adapter"):
            if a.get(k):
                fill_options[k] = str(Path(a[k]).resolve())
    rec = run_stereo(views, args.layout, sconf, half, dest=args.out, fill=args.fill, fill_options=fill_options,
                     progress=not args.quiet)
    conv = rec["convergence"]
    print(f"wrote {Path(args.out) if args.out else views.out / 'stereo.mp4'} ({rec['layout']}"
          f"{', half' if rec['half'] else ''}; ipd {rec['ipd']:.4g}, convergence "
          f"{'inf' if conv is None else f'{conv:.4g}'} scene units; right eye: {100 * rec['right_known_fraction']:.1f}% "
          f"seen by the left eye, {100 * rec['right_borrowed_fraction']:.1f}% from its neighbours, "
          f"{100 * rec['right_filled_fraction']:.1f}% filled)")
    return 0


def _cmd_export(args) -> int:
    from .io.outdir import run_folder_lock
    from .run_scene import read_run, run_export

    with run_folder_lock(args.run, "RUN", shared=True):  # reads the run: not while an `ex4d run` rewrites it
        views = read_run(args.run)
        path = run_export(views, args.format, args.out, args.max_size, progress=not args.quiet)
    T = views.mask.shape[0]
    print(f"wrote {path} ({T} frames, {args.format or ('glb' if path.suffix == '.glb' else 'ply')})")
    return 0
