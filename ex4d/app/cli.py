"""``ex4d app`` and ``ex4d view``: argparse registration (wired into ``ex4d.cli`` by ``register``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import Ex4dError, check

__all__ = ["register", "default_workdir"]


def default_workdir() -> Path:
    """``$XDG_CACHE_HOME/ex4d/app`` (``~/.cache/ex4d/app``): where the app keeps its job folders."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ex4d" / "app"


def _add_server_flags(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the app has no login)")
    p.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 = any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")


def register(subparsers) -> None:
    """Add the ``app`` and ``view`` commands to ex4d's sub-command parser."""
    from .uploads import AppLimits

    p = subparsers.add_parser(
        "app", help="local web app: upload a video, design the camera path in 3D, run, watch, download",
        description="A local web app over ex4d: upload a video (and depth) or use the example, design the camera "
                    "path on the DW-Mesh in 3D, run the job with live progress, watch color/mask/output/preview "
                    "and download everything as a zip. Jobs of several users queue. Needs the app extra and the "
                    "built front-end: bash scripts/setup_app.sh")
    _add_server_flags(p, 7860)
    p.add_argument("--workdir", default=None, help=f"job folders (default {default_workdir()})")
    d = AppLimits()
    g = p.add_argument_group("limits (per job)")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                   help=f"largest upload per file (default {d.max_upload_mb:g}; larger: 413)")
    g.add_argument("--max-depth-mb", type=float, default=d.max_depth_mb,
                   help=f"largest uploaded depth array once unpacked, read from the .npz/.npy headers before "
                        f"anything is decompressed (default {d.max_depth_mb:g})")
    g.add_argument("--max-duration", type=float, default=d.max_duration_s,
                   help=f"longest uploaded video in seconds (default {d.max_duration_s:g})")
    g.add_argument("--max-frames", type=int, default=d.max_frames, help=f"most frames a job processes (default "
                                                                         f"{d.max_frames})")
    g.add_argument("--max-res", type=int, default=d.max_res, help=f"longest side of processed frames (default "
                                                                   f"{d.max_res})")
    g = p.add_argument_group("limits (the whole server)")
    g.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"most jobs waiting at once, all users (default {d.max_queue}; one more runs; beyond: 429)")
    g.add_argument("--max-jobs", type=int, default=d.max_jobs,
                   help=f"most job folders kept at once, all users (default {d.max_jobs}; beyond: 503)")
    g.add_argument("--max-jobs-per-session", type=int, default=d.max_jobs_per_session,
                   help=f"most jobs kept per browser session; its oldest finished ones make room "
                        f"(default {d.max_jobs_per_session})")
    g.add_argument("--max-disk-gb", type=float, default=d.max_disk_gb,
                   help=f"disk all job folders may use together (default {d.max_disk_gb:g}; beyond: 507)")
    g.add_argument("--min-free-gb", type=float, default=d.min_free_gb,
                   help=f"free space to leave on the work folder's disk (default {d.min_free_gb:g})")
    g.add_argument("--max-uploads", type=int, default=d.max_concurrent_uploads,
                   help=f"uploads received and checked at once, all users (default {d.max_concurrent_uploads}; "
                        f"beyond: 429)")
    g.add_argument("--max-sessions", type=int, default=d.max_sessions,
                   help=f"browser sessions remembered; the longest idle are forgotten first (default "
                        f"{d.max_sessions})")
    g.add_argument("--keep-hours", type=float, default=d.keep_hours,
                   help=f"delete finished jobs after this long (default {d.keep_hours:g})")
    g = p.add_argument_group("models (local weights the app may use; nothing is downloaded)")
    g.add_argument("--depth-weights", action="append", default=[], metavar="MODEL=DIR",
                   help="offer a depth model, e.g. depth-anything-v2=/models/Depth-Anything-V2-Small-hf "
                        "(repeatable)")
    g.add_argument("--wan", help="offer --fill ex4d with this Wan2.1-I2V-14B-480P folder (diffusers layout)")
    g.add_argument("--adapter", help="the EX-4D adapter for --wan")
    p.set_defaults(func=_cmd_app)

    p = subparsers.add_parser(
        "view", help="open a run's 4D scene in the browser; fly the camera and save the path as cameras.json",
        description="Serve the reconstructed 4D scene of an ex4d output folder: each frame's DW-Mesh plays over "
                    "time, you drag the camera freely (unknown regions in magenta), record the path you fly and "
                    "save it as a cameras.json that `ex4d run --trajectory` accepts.")
    p.add_argument("out", help="an ex4d output folder (from ex4d run / ex4d recon)")
    _add_server_flags(p, 7861)
    p.add_argument("--max-size", type=int, default=512,
                   help="longest side of the meshes sent to the browser (every n-th pixel; default 512)")
    p.set_defaults(func=_cmd_view)


def _depth_weights(items: list[str]) -> dict:
    try:
        from ..depth import DEPTH_MODELS
    except ImportError as e:  # pragma: no cover - an install without the depth backends
        raise Ex4dError(f"--depth-weights: depth models are not available in this install ({e})") from None
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        check(bool(sep) and name and folder, f"--depth-weights takes MODEL=DIR, got {item!r}")
        check(name in DEPTH_MODELS, f"--depth-weights: unknown depth model {name!r}; one of {', '.join(DEPTH_MODELS)}")
        check(Path(folder).is_dir(), f"--depth-weights: {folder} is not a folder")
        out[name] = str(Path(folder).resolve())
    return out


_LIMIT_FLAGS = {"max_duration_s": "--max-duration", "max_concurrent_uploads": "--max-uploads"}


def _limits(args):
    """The AppLimits of the flags; an error names the flag."""
    from .uploads import AppLimits

    try:
        return AppLimits(max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration,
                         max_frames=args.max_frames, max_res=args.max_res, max_queue=args.max_queue, keep_hours=args.keep_hours,
                         max_depth_mb=args.max_depth_mb, max_jobs=args.max_jobs,
                         max_jobs_per_session=args.max_jobs_per_session, max_disk_gb=args.max_disk_gb,
                         min_free_gb=args.min_free_gb, max_concurrent_uploads=args.max_uploads,
                         max_sessions=args.max_sessions)
    except Ex4dError as e:
        name = str(e).split(" ", 1)[0]
        raise Ex4dError(str(e).replace(name, _LIMIT_FLAGS.get(name, "--" + name.replace("_", "-")), 1)) from None


def _check_server_flags(args) -> None:
    check(0 <= args.port <= 65535, f"--port must be in 0..65535, got {args.port}")
    check(bool(args.host) and not any(c.isspace() for c in args.host), f"--host {args.host!r} is not an address")


def _cmd_app(args) -> int:
    from .jobs import JobStore
    from .server import check_frontend, create_app, serve
    from .spec import ServerModels

    check_frontend()
    check(args.adapter is None or args.wan is not None, "--adapter needs --wan")
    for flag in ("wan", "adapter"):
        v = getattr(args, flag)
        check(v is None or Path(v).exists(), f"--{flag} {v} does not exist")
    _check_server_flags(args)
    limits = _limits(args)
    if args.wan:
        from ..diffusion.loading import detect_layout

        detect_layout(args.wan)
    if args.adapter:
        from ..diffusion.checkpoint import inspect_adapter

        inspect_adapter(args.adapter)  # a bad adapter fails now, not in every job
    models = ServerModels(depth_weights=_depth_weights(args.depth_weights),
                          wan=str(Path(args.wan).resolve()) if args.wan else None,
                          adapter=str(Path(args.adapter).resolve()) if args.adapter else None)
    store = JobStore(Path(args.workdir) if args.workdir else default_workdir(), limits, models)
    store.start()
    try:
        serve(create_app(store, host=args.host), args.host, args.port, open_browser=not args.no_browser,
              label="ex4d app")
    finally:
        store.stop()
    return 0


def _cmd_view(args) -> int:
    from .export import export_run_scene
    from .server import check_frontend, create_view_app, serve

    check_frontend()
    _check_server_flags(args)
    out = Path(args.out)
    check(out.is_dir(), f"{out} is not a folder; give the --out folder of an ex4d run")
    check(16 <= args.max_size <= 8192, f"--max-size must be in 16..8192, got {args.max_size}")
    print(f"ex4d view: preparing the 4D scene of {out} …", flush=True)
    path = export_run_scene(out, max_size=args.max_size)
    print(f"ex4d view: {path.stat().st_size / 1e6:.1f} MB scene export", flush=True)
    serve(create_view_app(out, max_size=args.max_size, host=args.host), args.host, args.port,
          open_browser=not args.no_browser, path="/", label="ex4d view")
    return 0


if __name__ == "__main__":  # pragma: no cover - for trying it without the main CLI wiring
    import sys

    parser = argparse.ArgumentParser(prog="ex4d")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    a = parser.parse_args()
    try:
        sys.exit(a.func(a))
    except Ex4dError as e:
        print(f"ex4d {a.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
