"""`ex4d app` / `ex4d view` on the command line: registration, errors, and a real `ex4d view` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from ex4d.cli import build_parser, main


def test_commands_are_registered(capsys):
    parser = build_parser()
    args = parser.parse_args(["app", "--port", "0", "--no-browser", "--max-frames", "9"])
    assert args.host == "127.0.0.1" and args.port == 0 and args.max_frames == 9
    args = parser.parse_args(["view", "out/", "--max-size", "128"])
    assert args.out == "out/" and args.host == "127.0.0.1" and args.max_size == 128


def test_view_errors(tmp_path, capsys):
    pytest.importorskip("starlette")
    from ex4d.app.server import static_dir

    if not (static_dir() / "view.js").is_file():
        pytest.skip("the front-end is not built: bash scripts/setup_app.sh")
    assert main(["view", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["view", str(tmp_path), "--no-browser"]) == 2
    assert "holds no ex4d run" in capsys.readouterr().err
    assert main(["app", "--depth-weights", "nonsense", "--no-browser"]) == 2
    assert "MODEL=DIR" in capsys.readouterr().err


def test_ex4d_view_process(run_out):
    """`ex4d view OUT --port 0` serves the scene and the run's cameras, and stops on SIGINT."""
    pytest.importorskip("uvicorn")
    from ex4d.app.server import static_dir

    if not (static_dir() / "view.js").is_file():
        pytest.skip("the front-end is not built: bash scripts/setup_app.sh")
    proc = subprocess.Popen([sys.executable, "-m", "ex4d", "view", str(run_out), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        t0 = time.monotonic()
        while url is None and time.monotonic() - t0 < 120:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)/", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        with urllib.request.urlopen(url + "/") as r:  # redirected to the viewer page
            assert r.status == 200 and b"ex4d view" in r.read()
        with urllib.request.urlopen(url + "/api/run/scene") as r:
            assert r.headers["Content-Encoding"] == "gzip" and len(r.read()) > 1000
        with urllib.request.urlopen(url + "/api/run/cameras.json") as r:
            assert b"opencv_w2c" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.returncode


def test_ex4d_view_answers_409_while_the_run_is_being_rewritten(run_out):
    """The viewer reads the run under its shared lock: while a command writes the folder it answers 409, then 200."""
    import json
    import urllib.error

    pytest.importorskip("uvicorn")
    from ex4d.app.server import create_view_app, start_server
    from ex4d.io.outdir import run_folder_lock

    with start_server(create_view_app(run_out)) as server:
        with run_folder_lock(run_out, "--out"):   # as an `ex4d run` into the folder holds it
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(server.url + "/api/run/scene")
            assert e.value.code == 409 and "busy" in json.loads(e.value.read())["error"]
        with urllib.request.urlopen(server.url + "/api/run/scene") as r:
            assert r.status == 200 and len(r.read()) > 1000
