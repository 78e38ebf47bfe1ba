"""What a new user meets first: help texts, the summary line, the package metadata."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ex4d.cli import build_parser
from ex4d.pipeline import RunSummary

REPO = Path(__file__).resolve().parents[1]


def _help(*cmd) -> str:
    parser = build_parser()
    for action in parser._subparsers._group_actions:
        parser = action.choices[cmd[0]]
    return " ".join(parser.format_help().split())


@pytest.mark.parametrize("cmd", ["run", "recon"])
def test_help_states_formats_and_defaults(cmd):
    text = _help(cmd)
    assert "mp4/mov/webm/mkv/avi/gif" in text  # as the README lists them
    assert "default ex4d-90" in text
    assert "output/*.png" in text if cmd == "run" else True
    assert "--num-frames" in text and "default 49" in text


def test_summary_time_does_not_count_the_parts_of_recon_twice():
    s = RunSummary(out=Path("o"), num_frames=9, width=64, height=64, known_fraction=0.5, reused=[],
                   timings={"read_s": 1.0, "depth_s": 0.5, "mesh_s": 2.0, "raster_s": 3.0, "recon_s": 5.5,
                            "fill_s": 1.0, "stereo_s": 1.0})
    assert ", 9.0 s →" in s.line()


def test_license_is_an_spdx_string():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])


def test_setup_scripts_say_they_install_debian_packages():
    for script in ("scripts/setup_app.sh", "scripts/test.sh"):
        text = (REPO / script).read_text()
        assert "echo" in text and "apt-get" in text and "chromium" in text, script
