"""A site folder holding only what ``pip install 'ex4d[EXTRAS]'`` would install, linked from this environment.

Python's import time depends on what else is installed: transformers, for one, imports scikit-learn (and with it
SciPy's statistics) when it finds it, and several packages scan every installed distribution's metadata at
import. A machine image with hundreds of packages (a lent GPU host) therefore pays seconds more per command
than a user's fresh virtual environment. This builds that fresh environment's view from the packages already
installed here, without downloading anything: the dependency closure of ex4d's requirements (markers
evaluated for this interpreter), each distribution's top-level files and its ``.dist-info`` symlinked into one
folder. Run Python with ``-S`` (no site-packages) and ``PYTHONPATH=FOLDER[:the repository]`` to use it.

    python bench/clean_env.py /tmp/clean-site            # prints the folder and what it linked
    PYTHONPATH=/tmp/clean-site:$PWD python -S -m ex4d generate ...

``bench_time_to_video.py --clean-env`` does this for every section it runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import sys
from pathlib import Path

try:  # Python ≥ 3.11
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXTRAS = ("diffusion",)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: tuple[str, ...] = DEFAULT_EXTRAS, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """ex4d's requirement strings: the base dependencies and those of ``extras``."""
    if tomllib is None:  # pragma: no cover
        raise SystemExit("clean_env needs Python >= 3.11 (tomllib)")
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def closure(requirements: list[str]) -> tuple[dict[str, md.Distribution], list[str]]:
    """The installed distributions the requirements pull in, recursively ({canonical name: dist}, missing names).

    A requirement's marker is evaluated for this interpreter; a distribution's own requirements that sit
    behind ``extra == "x"`` markers count only when something asked for ``dist[x]``.
    """
    from packaging.requirements import Requirement

    found: dict[str, md.Distribution] = {}
    done: set[tuple[str, str]] = set()  # (distribution, extra) pairs whose requirements were queued
    missing: set[str] = set()
    todo = [r for r in map(Requirement, requirements) if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name not in found:
            try:
                found[name] = md.distribution(req.name)
            except md.PackageNotFoundError:
                missing.add(req.name)
                continue
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for r in found[name].requires or []:
                sub = Requirement(r)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    if extra and sub.marker is None:
                        continue  # unconditional ones were queued with extra ""
                    todo.append(sub)
    return found, sorted(missing)


def top_level_entries(dist: md.Distribution) -> set[Path]:
    """Absolute paths of the files and folders a distribution puts at the top of its site folder."""
    site = Path(dist.locate_file(""))
    out: set[Path] = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        out.add(site / parts[0])
    info = getattr(dist, "_path", None)  # the .dist-info folder itself (metadata lookups need it)
    if info is not None:
        out.add(Path(info))
    return out


def build(folder: str | os.PathLike, extras: tuple[str, ...] = DEFAULT_EXTRAS) -> dict:
    """Fill ``folder`` with symlinks to the dependency closure of ex4d[extras]; returns what was linked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dists, missing = closure(project_requirements(extras))
    dists.pop("ex4d", None)  # the repository itself goes on PYTHONPATH
    linked = 0
    for dist in dists.values():
        for src in top_level_entries(dist):
            if not src.exists():
                continue
            dst = folder / src.name
            if dst.is_symlink() or dst.exists():
                continue
            dst.symlink_to(src)
            linked += 1
    all_dists = {_canonical(d.metadata["Name"] or "") for d in md.distributions()}
    return {"folder": str(folder), "distributions": sorted(dists), "links": linked, "missing": missing,
            "installed_here": len(all_dists), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="where the links go (created)")
    p.add_argument("--extras", default=",".join(DEFAULT_EXTRAS), help="ex4d extras to include (%(default)s)")
    args = p.parse_args(argv)
    info = build(args.folder, tuple(e for e in args.extras.split(",") if e))
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
