"""The app under hostile or careless use: shadowing packages, invented sessions, capacity, bombs, paths, bodies.

Each class of problem is tried with several instances; the server must answer 4xx (never 5xx) with a short
message, and no message or served file may name a path on the server.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import subprocess
import sys
import threading
import time
import zipfile
from urllib.parse import urlparse

import numpy as np
import pytest

from conftest import Client, need_web_stack

T, SIZE = 9, 64
ABS_PATH = re.compile(r"(?<![\w.])/(?:tmp|root|home|usr|var|work|opt|private)/")


def wait_done(client, job_id, timeout=180.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status, st = client.get(f"/api/jobs/{job_id}")
        assert status == 200, st
        if st["state"] in ("done", "error", "cancelled"):
            return st
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {st}")


def example_request(**kw):
    return {"input": "example", "example_size": SIZE, "num_frames": T, "trajectory": "orbit",
            "trajectory_options": {"yaw": 20}, "fill": "classical", **kw}


@contextlib.contextmanager
def server(tmp_path, start=True, **limits):
    """(url, store) of a server with tiny limits; ``start=False``: queued jobs never run (cheap)."""
    need_web_stack()
    from ex4d.app.jobs import JobStore
    from ex4d.app.server import create_app, start_server
    from ex4d.app.uploads import AppLimits

    base = dict(max_frames=T, max_res=128, max_upload_mb=5, max_queue=3)
    store = JobStore(tmp_path / "jobs", AppLimits(**{**base, **limits}))
    if start:
        store.start()
    handle = start_server(create_app(store))
    try:
        yield handle.url, store
    finally:
        handle.stop()
        store.stop()


def new_job(c: Client) -> str:
    status, body = c.post("/api/jobs")
    assert status == 201, body
    return body["id"]


def no_paths(value, *roots):
    """Assert that no string in the JSON value names a server path."""
    text = json.dumps(value) if not isinstance(value, str) else value
    for r in roots:
        assert str(r) not in text, text
    assert not ABS_PATH.search(text), text


# --------------------------------------------------------------------------- the worker's import path


def shadowing_cwd(tmp_path, monkeypatch):
    """Work from a folder holding a broken ``ex4d/`` package (as a clone would), with PYTHONPATH naming it."""
    evil = tmp_path / "evil"
    for sub in ("ex4d", "ex4d/app"):
        (evil / sub).mkdir(parents=True)
        (evil / sub / "__init__.py").write_text("raise ImportError('the ex4d/ of the working directory was imported')\n")
    (evil / "ex4d" / "app" / "worker.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(evil)
    monkeypatch.setenv("PYTHONPATH", ".")


def test_worker_command_imports_the_servers_package(tmp_path):
    import ex4d
    from ex4d.app.jobs import worker_command

    (tmp_path / "ex4d").mkdir()
    (tmp_path / "ex4d" / "__init__.py").write_text("raise ImportError('shadowed')\n")
    cmd = worker_command(sys.executable, tmp_path / "nojob")
    probe = cmd[:2] + [cmd[2].replace("from ex4d.app.worker import main\nsys.exit(main([job]))\n",
                                      "import ex4d; print(ex4d.__file__)\n"), *cmd[3:]]
    for cwd in (tmp_path, tmp_path / "ex4d"):
        out = subprocess.run(probe, cwd=cwd, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ex4d.__file__


# --------------------------------------------------------------------------- sessions and capacity


def invented(url: str, token: str) -> Client:
    c = Client(url)
    c.request("GET", "/favicon.ico")  # no cookie yet
    import http.cookiejar

    c.jar.set_cookie(http.cookiejar.Cookie(0, "ex4d_session", token, None, False, urlparse(url).hostname, False,
                                           False, "/", True, False, None, False, None, None, {}))
    return c


def test_sessions_are_issued_only_by_the_server(tmp_path):
    from ex4d.app.jobs import new_token

    with server(tmp_path, start=False) as (url, store):
        for _ in range(30):
            c = invented(url, new_token())
            status, body = c.post("/api/jobs")
            assert status == 403 and "reload the page" in body["error"], body
        assert not list(store.root.iterdir())  # not one job folder
        for bad in ("x", "A" * 21, "../../etc/passwd", "é" * 22):
            c = invented(url, "A" * 22)
            c.jar.clear()
            status, body = c.request("POST", "/api/jobs", headers={"Cookie": f"ex4d_session={bad}"})
            assert status == 403, body
        c = invented(url, new_token())
        old = next(iter(c.jar)).value
        assert c.get("/")[0] == 200
        assert next(iter(c.jar)).value != old  # the page replaced the invented token with one of its own
        assert c.post("/api/jobs")[0] == 201


def test_global_job_cap_and_session_eviction(tmp_path):
    with server(tmp_path, start=False, max_jobs=3, max_jobs_per_session=2, max_sessions=3) as (url, store):
        a, b = Client(url).session(), Client(url).session()
        new_job(a), new_job(a)
        jb = new_job(b)
        status, body = b.post("/api/jobs")
        assert status == 503 and "the most it keeps" in body["error"], body
        # the per-session cap still makes room from the session's own oldest job
        ja = new_job(a)
        # a fourth session makes the server forget the longest idle one (and its jobs)
        c = Client(url).session()
        time.sleep(0.01)
        assert a.get(f"/api/jobs/{ja}")[0] == 200 and b.get(f"/api/jobs/{jb}")[0] == 200
        d = Client(url).session()
        assert c.post("/api/jobs")[0] == 403  # c was the idlest
        assert d.post("/api/jobs")[0] == 503 and a.get(f"/api/jobs/{ja}")[0] == 200  # known, but the server is full


def test_queue_cap_counts_every_session(tmp_path):
    with server(tmp_path, start=False, max_queue=2) as (url, store):
        codes = []
        for _ in range(4):
            c = Client(url).session()
            codes.append(c.post(f"/api/jobs/{new_job(c)}/run", example_request())[0])
        assert codes == [202, 202, 429, 429]


def test_disk_cap(tmp_path, example_files):
    with server(tmp_path, start=False, max_disk_gb=2e-4) as (url, store):  # ~210 KB
        c = Client(url).session()
        job = new_job(c)
        assert c.put(f"/api/jobs/{job}/upload/video", example_files["video"].read_bytes())[0] == 200
        (store.root / job / "filler").write_bytes(b"\0" * 250_000)
        store.disk.invalidate()
        status, body = c.put(f"/api/jobs/{job}/upload/depth", example_files["depth"].read_bytes())
        assert status == 507 and "storage is full" in body["error"], body
        assert c.post("/api/jobs")[0] == 507
        assert c.post(f"/api/jobs/{job}/run", example_request())[0] == 507
        no_paths(body, store.root)
    with server(tmp_path / "b", start=False, min_free_gb=1e5) as (url, store):  # the disk itself is "full"
        assert Client(url).session().post("/api/jobs")[0] == 507


def test_concurrent_uploads_are_bounded(tmp_path, example_files):
    with server(tmp_path, start=False, max_concurrent_uploads=1) as (url, store):
        a, b = Client(url).session(), Client(url).session()
        ja, jb = new_job(a), new_job(b)
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.putrequest("PUT", f"/api/jobs/{ja}/upload/video")
        conn.putheader("Cookie", "; ".join(f"{k.name}={k.value}" for k in a.jar))
        data = example_files["video"].read_bytes()
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        conn.send(data[:100])  # the upload stays open
        t0 = time.monotonic()
        while not store.uploads.active and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        status, body = b.put(f"/api/jobs/{jb}/upload/video", data)
        assert status == 429 and "uploads are in progress" in body["error"], body
        status, body = a.put(f"/api/jobs/{ja}/upload/video", data)
        assert status == 429, body
        conn.send(data[100:])
        assert conn.getresponse().status == 200
        conn.close()
        assert b.put(f"/api/jobs/{jb}/upload/video", data)[0] == 200


# --------------------------------------------------------------------------- depth archives


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def lying_npy(shape, dtype="<f4", data=b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def zip_of(members: dict, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def bomb(mb: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("depth.npy", "w", force_zip64=True) as f:
        f.write(lying_npy((mb, 256, 1024)))
        zero = bytes(1 << 20)
        for _ in range(mb):
            f.write(zero)
    return buf.getvalue()


def many_members() -> bytes:
    raw = bytearray(zip_of({"depth.npy": lying_npy((1, 2, 2), data=bytes(16))}))
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 8:at + 12] = (60000).to_bytes(2, "little") * 2  # the directory claims 60000 members
    return bytes(raw)


DEPTH_CASES = [
    ("bomb", bomb(24), "unpacks to 24 MB"),
    ("lying header in a zip", zip_of({"depth.npy": lying_npy((100000, 1000, 1000), data=bytes(64))}), "hold"),
    ("lying header, small", zip_of({"depth.npy": lying_npy((10, 100, 100), data=bytes(64))}), "truncated"),
    ("lying .npy", lying_npy((100000, 1000, 1000), data=bytes(64)), "holds"),
    ("truncated .npy", lying_npy((10, 100, 100), data=bytes(64)), "truncated"),
    ("17 members", zip_of({f"a{i}.npy": lying_npy((1,), data=bytes(4)) for i in range(17)}), "members"),
    ("directory of 60000", many_members(), "members"),
    ("object array", zip_of({"depth.npy": lying_npy((1,), dtype="|O", data=b"\x80\x04N.")}), "Python objects"),
    ("complex", zip_of({"depth.npy": lying_npy((1,), dtype="<c8", data=bytes(8))}), "dtype"),
    ("not npy inside", zip_of({"depth.npy": b"PK not an array"}), "not a valid .npy"),
    ("script member", zip_of({"run.py": b"print(1)"}), "non-array"),
    ("folder member", zip_of({"dir/": b""}), "non-array"),
    ("empty zip", zip_of({}), "empty"),
    ("npy header too long", b"\x93NUMPY\x01\x00" + (60000).to_bytes(2, "little") + b"{" * 100, "not a valid .npy"),
]


@pytest.mark.parametrize("name,data,words", DEPTH_CASES, ids=[c[0] for c in DEPTH_CASES])
def test_depth_files_are_checked_from_their_headers(tmp_path, monkeypatch, name, data, words):
    import ex4d.io.depth
    from ex4d.app.uploads import AppLimits, check_depth_file
    from ex4d.errors import Ex4dError

    def never(*a, **k):
        raise AssertionError("the array was read before its headers were checked")

    monkeypatch.setattr(ex4d.io.depth, "load_depth_file", never)
    monkeypatch.setattr(np, "load", never)
    path = tmp_path / ("depth.npy" if data.startswith(b"\x93NUMPY") else "depth.npz")
    path.write_bytes(data)
    with pytest.raises(Ex4dError) as e:
        check_depth_file(path, AppLimits(max_depth_mb=16))
    assert words in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_depth_bomb_upload_is_refused(tmp_path, example_files):
    with server(tmp_path, start=False, max_depth_mb=16) as (url, store):
        c = Client(url).session()
        job = new_job(c)
        status, body = c.put(f"/api/jobs/{job}/upload/depth", bomb(24))
        assert status in (400, 413) and "unpacks to" in body["error"], body
        assert not list((store.root / job / "input").iterdir())
        ok = npz_bytes(depth=np.ones((T, SIZE, SIZE), np.float16))
        assert c.put(f"/api/jobs/{job}/upload/depth", ok)[0] == 200


# --------------------------------------------------------------------------- no server paths


def test_jobs_run_from_a_folder_holding_ex4d_and_name_no_server_paths(tmp_path, example_files, monkeypatch):
    shadowing_cwd(tmp_path, monkeypatch)  # the job below must still run (the worker imports the server's ex4d)
    with server(tmp_path) as (url, store):
        c = Client(url).session()
        job = new_job(c)
        status, body = c.put(f"/api/jobs/{job}/upload/video", example_files["video"].read_bytes()[:300])
        assert status == 400
        no_paths(body, store.root, tmp_path)
        assert c.put(f"/api/jobs/{job}/upload/video", example_files["video"].read_bytes())[0] == 200
        assert c.put(f"/api/jobs/{job}/upload/depth", example_files["depth"].read_bytes())[0] == 200
        status, _ = c.post(f"/api/jobs/{job}/run", {"input": "upload", "num_frames": T, "depth": "file",
                                                    "depth_kind": "depth", "trajectory": "orbit"})
        assert status == 202
        st = wait_done(c, job)
        assert st["state"] == "done", (st, (store.root / job / "log.txt").read_text()[-2000:])
        no_paths(st, store.root, tmp_path)
        status, config = c.get(f"/api/jobs/{job}/files/config.json")
        assert status == 200
        no_paths(config, store.root, tmp_path)
        assert config["run"]["video"].startswith("input/video.") and config["run"]["depth"] == "input/depth.npz"
        status, data = c.get(f"/api/jobs/{job}/download")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            name = next(n for n in z.namelist() if n.endswith("/config.json"))
            zipped = json.loads(z.read(name))
        no_paths(zipped, store.root, tmp_path)
        assert zipped["run"]["video"] == config["run"]["video"]
        # whatever the worker says goes through the same filter
        store._jobs[job].error = f"cannot read {store.root / job / 'input' / 'video.mp4'}: broken (/models/w/x)"
        status, st = c.get(f"/api/jobs/{job}")
        assert "input/video.mp4" in st["error"], st
        no_paths(st, store.root, tmp_path)


def test_worker_errors_name_no_server_paths(tmp_path):
    from ex4d.app.jobs import worker_command
    from ex4d.app.worker import read_status
    from ex4d.pipeline import RunConfig

    job = tmp_path / "jobs" / ("J" * 22)
    (job / "input").mkdir(parents=True)
    video = job / "input" / "video.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 but not a video")
    config = RunConfig(video=str(video), depth=str(job / "input" / "depth.npz"), num_frames=T)
    (job / "run.json").write_text(json.dumps({"config": json.loads(json.dumps(config.to_dict(), default=str))}))
    out = subprocess.run(worker_command(sys.executable, job), cwd=job, capture_output=True, text=True, timeout=300)
    st = read_status(job)
    assert out.returncode == 2 and st["state"] == "error", (out.stdout, out.stderr, st)
    assert "video.mp4" in st["message"] or "depth.npz" in st["message"], st
    no_paths(st["message"], tmp_path)


# --------------------------------------------------------------------------- hostile JSON bodies


HOSTILE = [
    b"", b"not json", b"[1, 2]", b'"text"', b"null", b"1e400", b"[" * 100_000, b'{"a":' * 50_000,
    b'{"input": NaN}', b'{"input": Infinity}', b'{"input": "example", "num_frames": 1e400}',
    b'{"input": "example", "num_frames": ' + b"9" * 5000 + b"}", b'{"input": "example", "num_frames": -0}',
    b'{"input": "example", "num_frames": 9.0}', b'{"input": "example", "num_frames": true}',
    b'{"input": "example", "num_frames": null}', b'{"input": "example", "num_frames": [9]}',
    '{"input": "\u202eelpmaxe"}'.encode(), '{"input": "example", "trajectory": "orbit\u0000"}'.encode(),
    b'{"input": "\xff\xfe"}', b"\xef\xbb\xbf" + json.dumps(example_request(num_frames=0)).encode(),
    json.dumps({"input": "example", "x" * 100: 1}).encode(), json.dumps({"input": "example", "y": "z" * 30000}).encode(),
    b'{"input": "example", "pad": "' + b"a" * 200_000 + b'"}',
    json.dumps({f"k{i}": i for i in range(3000)}).encode(),
    json.dumps(example_request(trajectory="../../etc/passwd")).encode(),
    json.dumps(example_request(trajectory_options={"yaw": "30"})).encode(),
    json.dumps(example_request(trajectory_options={"yaw": 1e308})).encode(),
    json.dumps(example_request(trajectory_options={"yaw": -1e308, "pitch": 1e-320})).encode(),
    json.dumps(example_request(trajectory_options={"yaw": [1, 2]})).encode(),
    json.dumps(example_request(trajectory_options={"yaw": {"a": {"b": {"c": 1}}}})).encode(),
    json.dumps(example_request(trajectory_options={"ease": "x" * 40})).encode(),
    json.dumps(example_request(trajectory_options={"zoom": 0})).encode(),
    json.dumps(example_request(trajectory_options={"pivot_depth": -5})).encode(),
    json.dumps(example_request(trajectory_options=[1, 2])).encode(),
    json.dumps(example_request(trajectory="keyframes", trajectory_options={"keyframes": "none"})).encode(),
    json.dumps(example_request(trajectory="keyframes", trajectory_options={"keyframes": [1, 2]})).encode(),
    json.dumps(example_request(trajectory="keyframes", trajectory_options={"keyframes": [[0, 1]]})).encode(),
    json.dumps(example_request(trajectory="keyframes", trajectory_options={"keyframes": [{}]})).encode(),
    json.dumps(example_request(trajectory="keyframes",
                               trajectory_options={"keyframes": [{"t": i, "yaw": i} for i in range(10_000)]})).encode(),
    json.dumps(example_request(trajectory="keyframes",
                               trajectory_options={"keyframes": [{"t": 1e308, "yaw": 1}]})).encode(),
    json.dumps(example_request(trajectory="keyframes",
                               trajectory_options={"keyframes": [{"t": 0, "yaw": 1}, {"t": 0, "yaw": 2}]})).encode(),
    json.dumps(example_request(trajectory="keyframes",
                               trajectory_options={"keyframes": [{"t": 0, "bogus": 1}]})).encode(),
    json.dumps(example_request(trajectory="keyframes",
                               trajectory_options={"keyframes": [{"t": "0", "yaw": 1}]})).encode(),
    json.dumps(example_request(trajectory="keyframes", trajectory_options={
        "keyframes": [{"t": 0, "yaw": 0}], "interpolation": "quintic"})).encode(),
    json.dumps(example_request(filter={"a": [1]})).encode(), json.dumps(example_request(fill="ex4d")).encode(),
    json.dumps(example_request(depth="/etc/passwd")).encode(), json.dumps(example_request(depth_kind=5)).encode(),
    json.dumps(example_request(example_size=10**6)).encode(), json.dumps(example_request(example_size=-64)).encode(),
    json.dumps(example_request(max_res=63)).encode(), json.dumps(example_request(input="upload")).encode(),
    json.dumps(example_request(num_frames=10**18)).encode(),
]


def test_hostile_json_bodies_get_4xx(tmp_path):
    with server(tmp_path, start=False) as (url, store):
        c = Client(url).session()
        job = new_job(c)
        for i, body in enumerate(HOSTILE):
            for endpoint in ("preview", "path", "run"):
                status, answer = c.request("POST", f"/api/jobs/{job}/{endpoint}", body,
                                           headers={"Content-Type": "application/json"})
                assert 400 <= status < 500, (i, endpoint, body[:200], status, answer)
                assert isinstance(answer, dict) and "\n" not in answer["error"] and len(answer["error"]) < 1000, \
                    (i, answer)
                no_paths(answer, store.root)


def test_fuzzed_run_requests_never_give_5xx(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
        | st.text(max_size=40)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)
    fields = st.sampled_from(["input", "num_frames", "max_res", "example_size", "depth", "depth_kind", "trajectory",
                              "trajectory_options", "filter", "fill", "other"])
    known = {"input": st.sampled_from(["example", "upload"]), "trajectory": st.sampled_from(
        ["orbit", "keyframes", "static", "swing", "ex4d-90", "nope"]), "trajectory_options": st.dictionaries(
        st.sampled_from(["yaw", "pitch", "dolly", "zoom", "ease", "keyframes", "interpolation", "radius", "rounds",
                         "pivot_depth"]), values, max_size=4)}
    requests = st.dictionaries(fields, values, max_size=6).flatmap(
        lambda d: st.fixed_dictionaries({k: known.get(k, st.just(v)) for k, v in d.items()}))

    with server(tmp_path, start=False, max_queue=1000) as (url, store):
        c = Client(url).session()
        jobs = [new_job(c) for _ in range(20)]
        lock = threading.Lock()
        count = [0]

        @settings(max_examples=80, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(requests)
        def one(req):
            with lock:
                count[0] += 1
                job = jobs[count[0] % len(jobs)]
            status, answer = c.request("POST", f"/api/jobs/{job}/run", json.dumps(req).encode(),
                                       headers={"Content-Type": "application/json"})
            assert status < 500, (req, status, answer)
            if status == 202:  # accepted: take it back, so the job can be used again
                store.cancel(store._jobs[job])
        one()
        assert hypothesis is not None


# --------------------------------------------------------------------------- the app's own flags


def test_bad_app_and_view_flags(tmp_path, capsys, run_out):
    from ex4d.app.server import static_dir
    from ex4d.cli import main

    need_web_stack()
    if not (static_dir() / "view.js").is_file():
        pytest.skip("the front-end is not built: bash scripts/setup_app.sh")
    (tmp_path / "file").write_text("x")
    app = ["app", "--no-browser", "--workdir", str(tmp_path / "w")]
    cases = [(["--port", "70000"], "--port"), (["--port", "-1"], "--port"), (["--max-upload-mb", "inf"], "--max-upload-mb"),
             (["--max-upload-mb", "nan"], "--max-upload-mb"), (["--max-depth-mb", "0"], "--max-depth-mb"),
             (["--max-duration", "-1"], "--max-duration"), (["--max-res", "100"], "--max-res"),
             (["--max-jobs", "0"], "--max-jobs"), (["--max-disk-gb", "inf"], "--max-disk-gb"),
             (["--max-uploads", "0"], "--max-uploads"), (["--keep-hours", "nan"], "--keep-hours"),
             (["--max-sessions", "0"], "--max-sessions"), (["--workdir", str(tmp_path / "file")], "not a folder"),
             (["--workdir", str(tmp_path / "file" / "sub")], "cannot create"), (["--host", "no such host!"], "--host"),
             (["--wan", str(tmp_path / "none")], "does not exist"), (["--wan", str(tmp_path)], "neither Wan layout"),
             (["--depth-weights", "depth-anything-v2=" + str(tmp_path / "none")], "not a folder")]
    for flags, words in cases:
        assert main([*app, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (flags, err)
    for flags, words in ((["--port", "99999"], "--port"), (["--max-size", "0"], "--max-size"),
                         (["--max-size", "100000000"], "--max-size")):
        assert main(["view", str(run_out), "--no-browser", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
