"""The README's ```bash blocks run top to bottom, exactly as written, in a fresh copy of the repository.

What a new user types after cloning must work. The copy holds the repository's files (tracked and
untracked, not ignored) and, as ``.venv``, the environment running this test (``scripts/setup.sh``
made it; CI runs that script itself, through ``scripts/test.sh``). So the one thing changed in the
blocks is that calls of the setup scripts (``bash scripts/setup.sh …``, ``setup_app.sh``, ``test.sh``)
are taken as done. ``PATH`` does not hold the environment: plain ``ex4d`` works only after the README's
``source .venv/bin/activate``, as for a user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_SETUP = re.compile(r"bash scripts/(setup|setup_app|test)\.sh\b[^&|;\n]*")


def readme_bash_blocks(text: str) -> list[str]:
    """The bodies of the README's ```bash blocks, in order."""
    return [m.group(1) for m in _FENCE.finditer(text)]


def test_readme_blocks_are_found_and_sh_blocks_are_not():
    blocks = readme_bash_blocks("x\n```bash\necho a\n```\n```sh\necho b\n```\n```bash\necho c\n```\n")
    assert blocks == ["echo a\n", "echo c\n"]
    assert _SETUP.sub("true", "bash scripts/setup.sh --dev && ex4d x") == "true&& ex4d x"


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_readme_bash_blocks_run(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / "bin" / "ex4d").exists() or shutil.which("git") is None:
        pytest.skip(f"needs git and the ex4d command in the test's environment ({venv})")
    blocks = readme_bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "the README lost its runnable examples"
    repo = tmp_path / "ex4d"
    repo.mkdir()
    _copy_repo(repo)
    (repo / ".venv").symlink_to(venv, target_is_directory=True)
    script = "set -euo pipefail\n" + "\n".join(_SETUP.sub("true", b) for b in blocks)
    (tmp_path / "readme.sh").write_text(script)
    bindir = str(venv / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir)
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README block failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    for name in ("out/example/output.mp4", "out/recon/mask.mp4", "out/orbit/preview.mp4",
                 "out/orbit-again/config.json", "out/keyframes/color.mp4"):
        assert (repo / name).is_file(), f"the README's commands did not write {name}"
    # the keyframe example starts at the source camera: no warning about frame 0
    assert "frame 0" not in proc.stderr, proc.stderr
