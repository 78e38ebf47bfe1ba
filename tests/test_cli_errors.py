"""Every subcommand on a table of bad inputs: exit status 2, one ``error:`` line, never a traceback.

Rows call ``ex4d.cli.main`` in-process (fast); the few that need a real process (signals, locks) live in
tests/test_cli_robustness.py. A row whose fix belongs to another engineer's work and still tracebacks here
is ``xfail(strict=False)`` with the owner named, so the lead can flip it after merging.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from ex4d.cli import build_parser, main

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Paths of good and bad input files, by name (formatted into the rows' arguments)."""
    d = tmp_path_factory.mktemp("inputs")
    assert main(["example", "--out", str(d / "ex"), "--num-frames", "9", "--size", "64"]) == 0
    p = {"tmp": d, "video": d / "ex" / "input.mp4", "depth": d / "ex" / "depth.npz", "missing": d / "nope.mp4",
         "folder": d / "emptydir", "afile": d / "afile.txt"}
    p["folder"].mkdir()
    p["afile"].write_text("not a folder\n")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    (d / "text.npz").write_text("not an npz")
    (d / "text.npy").write_text("not an npy")
    (d / "text.safetensors").write_text("not safetensors")
    (d / "text.ckpt").write_text("not a checkpoint")
    depth = np.load(p["depth"])["depth"]
    np.save(d / "aspect.npy", np.ones((9, 64, 200), np.float32))
    np.save(d / "frames5.npy", depth[:5])
    np.save(d / "last.npy", depth.transpose(1, 2, 0))
    np.save(d / "rgb.npy", np.zeros((9, 64, 64, 3), np.uint8))
    np.save(d / "bool.npy", np.ones((9, 64, 64), bool))
    np.save(d / "strings.npy", np.array(["a", "b"]))
    np.save(d / "complex.npy", np.ones((9, 64, 64), np.complex64))
    np.save(d / "nan.npy", np.full((9, 64, 64), np.nan, np.float32))
    np.save(d / "zeros.npy", np.zeros((9, 64, 64), np.float32))
    pngs = d / "pngs"
    pngs.mkdir()
    import cv2

    for i in range(9):
        cv2.imwrite(str(pngs / f"{i:05d}.png"), np.full((64, 64 if i else 48), 1000, np.uint16))
    texts = {
        "bad.json": "{", "list.json": "[]", "nan.json": '{"x": NaN}', "deep.json": "[" * 5000 + "]" * 5000,
        "empty.json": "", "binary.json": "\udcff", "bigint.json": "[" + "9" * 5000 + "]",
        "config_norun.json": '{"runs": {}}', "config_list.json": '{"run": []}',
        "config_types.json": '{"run": {"num_frames": "nine", "example": true}}',
        "config_unknown.json": '{"run": {"example": true, "warp_speed": 9}}',
        "config_fill.json": '{"run": {"example": true, "fill_options": {"window": "x"}}}',
        "config_nested.json": '{"run": {"example": true, "recon": {"mesh": {"filter": 3}}}}',
        "keys_type.json": '{"keyframes": [{"t": "soon", "yaw": 10}]}',
        "keys_range.json": '{"keyframes": [{"t": 0, "yaw": 500}]}',
        "keys_order.json": '{"keyframes": [{"t": 1, "yaw": 0}, {"t": 0.5, "yaw": 10}]}',
        "keys_unknown.json": '{"keyframes": [{"t": 0, "roll": 10}]}',
        "keys_notlist.json": '{"keyframes": {"t": 0}}',
        "keys_interp.json": '{"keyframes": [{"t": 0}], "interpolation": ["cubic"]}',
        "keys_pivot.json": '{"keyframes": [{"t": 0}], "pivot_depth": "far"}',
        "jobs_bad.json": '[{"color": 1, "mask": "m.mp4", "out": "o.mp4"}]',
    }
    for name, text in texts.items():
        (d / name).write_text(text, encoding="utf-8", errors="surrogateescape")
    I4 = np.eye(4).tolist()
    cam = {"convention": "opencv_w2c", "width": 64, "height": 64, "fps": 30.0,
           "K": [[62.5, 0, 32], [0, 62.5, 32], [0, 0, 1]], "w2c": [I4] * 9}

    def cams(name, **change):
        (d / name).write_text(json.dumps({**cam, **change}))

    cams("cam_ok.json")
    cams("cam_count.json", w2c=[I4] * 4)
    cams("cam_aspect.json", width=128, height=64, K=[[62.5, 0, 64], [0, 62.5, 32], [0, 0, 1]])
    cams("cam_conv.json", convention="blender")
    cams("cam_types.json", width="64")
    cams("cam_w2c_str.json", w2c=[[["a"] * 4] * 4] * 9)
    cams("cam_ragged.json", w2c=[[[1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]] * 9)
    flip = np.diag([1.0, -1, -1, 1])
    cams("cam_gl_as_cv.json", w2c=[flip.tolist()] * 9)
    refl = np.diag([-1.0, 1, 1, 1])
    cams("cam_reflect.json", w2c=[refl.tolist()] * 9)
    scaled = np.eye(4)
    scaled[:3, :3] *= 2
    cams("cam_scaled.json", w2c=[scaled.tolist()] * 9)
    bottom = np.eye(4)
    bottom[3, 0] = 1
    cams("cam_bottom.json", w2c=[bottom.tolist()] * 9)
    cams("cam_focal.json", K=[[-62.5, 0, 32], [0, 62.5, 32], [0, 0, 1]])
    cams("cam_pp.json", K=[[62.5, 0, 300], [0, 62.5, 32], [0, 0, 1]])
    cams("cam_lower.json", K=[[62.5, 0, 32], [3, 62.5, 32], [0, 0, 1]])
    cams("cam_nan.json", fps=-1)
    cams("cam_frame.json", frame="moon")
    np.savez(d / "npz_str.npz", extrinsics=np.array(["x"] * 16).reshape(1, 4, 4), intrinsics=np.eye(3))
    np.savez(d / "npz_missing.npz", intrinsics=np.eye(3))
    np.savez(d / "npz_shape.npz", extrinsics=np.eye(3)[None], intrinsics=np.eye(3))
    # a recon folder: a run folder without output.mp4 (for stereo / export / view)
    assert main(["recon", str(p["video"]), "--depth", str(p["depth"]), "--depth-kind", "depth", "--num-frames", "9",
                 "-q", "--out", str(d / "recon")]) == 0
    p["recon"] = d / "recon"
    # run folders whose config.json is malformed (for stereo / export / view, which read it)
    for name, text in (("deeprun", "[" * 3000), ("typerun", '{"run": {"example": true, "num_frames": "x"}}'),
                       ("krun", '{"run": {"example": true}, "intrinsics": [[1, 2], [3]], "fps": 30}'),
                       ("fpsrun", '{"run": {"example": true}, "intrinsics": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], '
                                  '"fps": "fast"}')):
        (d / name).mkdir()
        (d / name / "config.json").write_text(text)
        (d / name / "output.mp4").write_bytes(b"")
        p[name] = d / name
    return p


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code if isinstance(e.code, int) else 2
    return rc, capsys.readouterr().err


def _fmt(args, f, out=None):
    names = {k: str(v) for k, v in f.items()}
    names["out"] = str(out if out is not None else f["tmp"] / "out")
    return [a.format(**names) for a in args]


# ------------------------------------------------------------------------------------------ the table

V = ["{video}", "--num-frames", "9", "-q"]
VD = [*V, "--depth", "{depth}", "--depth-kind", "depth"]
X = ["--example", "--example-size", "64", "--num-frames", "9", "-q"]
OUT = ["--out", "{out}"]


def xfail(owner: str, what: str, run: bool = True):
    """A row another engineer's branch fixes: xfail here, to be flipped by the lead after merging."""
    return pytest.mark.xfail(strict=False, run=run, reason=f"owned by {owner}: {what}")


ROWS = [
    # ---------------------------------------------------------------- recon / run: inputs
    ("recon", ["recon", "{missing}", *OUT], "does not exist"),
    ("recon", ["recon", "{tmp}/empty.mp4", "--depth", "{depth}", *OUT], ""),
    ("recon", ["recon", "{tmp}/text.mp4", "--depth", "{depth}", *OUT], ""),
    ("recon", ["recon", "{folder}", "--depth", "{depth}", *OUT], "no images"),
    ("recon", ["recon", *OUT], "no input"),
    ("run", ["run", "{video}", "--example", *OUT], "not both"),
    ("recon", ["recon", *V, *OUT], "no depth"),
    ("recon", ["recon", *V, "--depth", "{missing}", *OUT], "does not exist"),
    ("recon", ["recon", *V, "--depth", "{tmp}/text.npz", *OUT], "npz"),
    ("recon", ["recon", *V, "--depth", "{tmp}/text.npy", *OUT], "npy"),
    ("recon", ["recon", *V, "--depth", "{tmp}/afile.txt", *OUT], "unsupported"),
    ("recon", ["recon", *V, "--depth", "{tmp}/aspect.npy", *OUT], "aspect"),
    ("recon", ["recon", *V, "--depth", "{tmp}/frames5.npy", *OUT], "5 frames"),
    ("recon", ["recon", *V, "--depth", "{tmp}/last.npy", *OUT], "[H, W, T]"),
    ("recon", ["recon", *V, "--depth", "{tmp}/rgb.npy", *OUT], "colour video"),
    ("recon", ["recon", *V, "--depth", "{tmp}/bool.npy", *OUT], "mask"),
    ("recon", ["recon", *V, "--depth", "{tmp}/strings.npy", *OUT], "numeric"),
    ("recon", ["recon", *V, "--depth", "{tmp}/complex.npy", *OUT], "numeric"),
    ("recon", ["recon", *V, "--depth", "{tmp}/nan.npy", *OUT], "non-finite"),
    ("recon", ["recon", *V, "--depth", "{tmp}/zeros.npy", "--depth-kind", "depth", *OUT], "> 0"),
    ("recon", ["recon", *V, "--depth", "{tmp}/pngs", *OUT], "same size"),
    ("recon", ["recon", *V, "--depth", "{depth}", "--depth-key", "nope", *OUT], "no key"),
    ("recon", ["recon", *V, "--depth", "{depth}", "--depth-kind", "sideways", *OUT], "invalid choice"),
    ("recon", ["recon", *VD, "--depth-scale", "0", *OUT], "depth-scale"),
    ("recon", ["recon", *VD, "--depth-scale", "nan", *OUT], "depth-scale"),
    ("recon", ["recon", *VD, "--depth-model", "depth-anything-v2", *OUT], "not both"),
    # ---------------------------------------------------------------- recon / run: numbers
    ("recon", ["recon", *VD, "--num-frames", "abc", *OUT], "invalid int"),
    ("recon", ["recon", *VD, "--num-frames", "-3", *OUT], "num"),
    ("recon", ["recon", *VD, "--num-frames", "50", *OUT], "9 frames"),
    ("recon", ["recon", *VD, "--stride", "0", *OUT], "stride"),
    ("recon", ["recon", *VD, "--start", "-1", *OUT], "start"),
    ("recon", ["recon", *VD, "--max-res", "0", *OUT], "max"),
    ("recon", ["recon", *VD, "--max-res", "-5", *OUT], "max"),
    ("recon", ["recon", *VD, "--fov", "0", *OUT], "fov"),
    ("recon", ["recon", *VD, "--fov", "200", *OUT], "fov"),
    ("recon", ["recon", *VD, "--fov", "nan", *OUT], "fov"),
    ("recon", ["recon", *VD, "--focal", "-1", *OUT], "focal"),
    ("recon", ["recon", *VD, "--focal", "inf", *OUT], "focal"),
    ("recon", ["recon", *VD, "--fov", "50", "--focal", "40", *OUT], "at most one"),
    ("recon", ["recon", *VD, "--crf", "99", *OUT], "crf"),
    ("recon", ["recon", *VD, "--crf", "-1", *OUT], "crf"),
    ("run", ["run", *X, "--example-size", "30", *OUT], "example size"),
    ("run", ["run", *X, "--example-size", "100", *OUT], "example size"),
    ("run", ["run", *X, "--fill-window", "-1", *OUT], "window"),
    ("run", ["run", *X, "--fill", "ex4d", *OUT], "--wan"),
    ("run", ["run", *X, "--fill", "ex4d", "--wan", "{missing}", *OUT], "does not exist"),
    ("recon", ["recon", *X, "--min-angle", "100", *OUT], "min_angle"),
    ("recon", ["recon", *X, "--grazing", "95", *OUT], "grazing"),
    ("recon", ["recon", *X, "--backend", "opengl", *OUT], "invalid choice"),
    ("recon", ["recon", *X, "--filter", "magic", *OUT], "invalid choice"),
    # ---------------------------------------------------------------- recon / run: camera path
    ("recon", ["recon", *X, "--trajectory", "spiral", *OUT], "unknown trajectory"),
    ("recon", ["recon", *X, "--trajectory", "orbit", "--yaw", "1000", *OUT], "yaw"),
    ("recon", ["recon", *X, "--trajectory", "orbit", "--pitch", "nan", *OUT], "pitch"),
    ("recon", ["recon", *X, "--trajectory", "orbit", "--dolly", "1.5", *OUT], "dolly"),
    ("recon", ["recon", *X, "--trajectory", "zoom", "--zoom", "0", *OUT], "zoom"),
    ("recon", ["recon", *X, "--trajectory", "orbit", "--ease", "bouncy", *OUT], "ease"),
    ("recon", ["recon", *X, "--trajectory", "orbit", "--pivot-depth", "-1", *OUT], "pivot_depth"),
    ("recon", ["recon", *X, "--trajectory", "ex4d-90", "--radius", "-1", *OUT], "radius"),
    ("recon", ["recon", *X, "--trajectory", "ex4d-90", "--rounds", "0", *OUT], "rounds"),
    ("recon", ["recon", *X, "--trajectory", "ex4d-90", "--yaw", "10", *OUT], "does not take"),
    ("recon", ["recon", *X, "--trajectory", "{missing}.json", *OUT], "not found"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/bad.json", *OUT], "not valid JSON"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/empty.json", *OUT], "empty"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/list.json", *OUT], "neither"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/nan.json", *OUT], "NaN"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/deep.json", *OUT], "nested"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/binary.json", *OUT], "UTF-8"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/bigint.json", *OUT], "JSON"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_type.json", *OUT], "keyframes[0].t"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_range.json", *OUT], "yaw"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_order.json", *OUT], "increasing"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_unknown.json", *OUT], "roll"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_notlist.json", *OUT], "non-empty list"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_interp.json", *OUT], "interpolation"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/keys_pivot.json", *OUT], "pivot_depth"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_count.json", *OUT], "4 cameras"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_aspect.json", *OUT], "128×64"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_conv.json", *OUT], "blender"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_types.json", *OUT], "width"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_w2c_str.json", *OUT], "expected a number"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_ragged.json", *OUT], "array of 4"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_gl_as_cv.json", *OUT], "opengl_w2c"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_reflect.json", *OUT], "det(R)"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_scaled.json", *OUT], "orthonormal"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_bottom.json", *OUT], "last row"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_focal.json", *OUT], "focal"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_pp.json", *OUT], "principal point"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_lower.json", *OUT], "upper triangular"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_nan.json", *OUT], "fps"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/cam_frame.json", *OUT], "frame"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/npz_str.npz", *OUT], "numbers"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/npz_missing.npz", *OUT], "extrinsics"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/npz_shape.npz", *OUT], "shape"),
    ("recon", ["recon", *X, "--trajectory", "{tmp}/text.npz", *OUT], "npz"),
    ("recon", ["recon", *X, "--intrinsics", "{tmp}/bad.json", *OUT], "not valid JSON"),
    ("recon", ["recon", *X, "--intrinsics", "{tmp}/cam_aspect.json", *OUT], "128×64"),
    ("recon", ["recon", *X, "--intrinsics", "{tmp}/afile.txt", *OUT], "camera file"),
    # ---------------------------------------------------------------- recon / run: --config
    ("run", ["run", "--config", "{missing}", *OUT], "no such file"),
    ("run", ["run", "--config", "{tmp}/bad.json", *OUT], "not valid JSON"),
    ("run", ["run", "--config", "{tmp}/deep.json", *OUT], "nested"),
    ("run", ["run", "--config", "{tmp}/list.json", *OUT], "expected an object"),
    ("run", ["run", "--config", "{tmp}/config_norun.json", *OUT], "missing field 'run'"),
    ("run", ["run", "--config", "{tmp}/config_list.json", *OUT], "expected an object"),
    ("run", ["run", "--config", "{tmp}/config_types.json", *OUT], "num_frames"),
    ("run", ["run", "--config", "{tmp}/config_unknown.json", *OUT], "warp_speed"),
    ("run", ["run", "--config", "{tmp}/config_fill.json", *OUT], "window"),
    ("run", ["run", "--config", "{tmp}/config_nested.json", *OUT], "filter"),
    ("run", ["run", "--config", "{folder}", *OUT], "folder"),
    # ---------------------------------------------------------------- recon / run: output location
    ("run", ["run", *X, "--out", "{afile}"], "is a file"),
    ("run", ["run", *X, "--out", "{afile}/sub"], "is a file"),
    ("run", ["run", *X, "--out", "/proc/ex4d-test-out"], "--out"),
    ("run", ["run", *X, "--out", "{tmp}"], "not empty"),
    ("run", ["run", *X, "--out", "{recon}"], "other parameters"),
    # ---------------------------------------------------------------- example
    ("example", ["example", "--out", "{tmp}/ex2", "--num-frames", "0"], "num-frames"),
    ("example", ["example", "--out", "{tmp}/ex2", "--size", "30"], "size"),
    ("example", ["example", "--out", "{tmp}/ex2", "--size", "100"], "size"),
    ("example", ["example", "--out", "{afile}/sub"], "is a file"),
    ("example", ["example", "--out", "{tmp}/ex2", "--size", "big"], "invalid int"),
    # ---------------------------------------------------------------- generate
    ("generate", ["generate", "--color", "{missing}", "--mask", "{missing}", "--wan", "{folder}", "--no-adapter",
                  "--out", "{tmp}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{tmp}/text.mp4", "--mask", "{tmp}/text.mp4", "--wan", "{folder}",
                  "--no-adapter", "--out", "{tmp}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{missing}",
                  "--no-adapter", "--out", "{tmp}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--no-adapter", "--steps", "0", "--out", "{tmp}/g.mp4"], "steps"),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--no-adapter", "--cfg", "nan", "--out", "{tmp}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--adapter", "{tmp}/text.safetensors", "--out", "{tmp}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--no-adapter", "--out", "{tmp}/g.avi"], "mp4"),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--no-adapter", "--out", "{afile}/g.mp4"], ""),
    ("generate", ["generate", "--color", "{recon}/color.mp4", "--mask", "{recon}/mask.mp4", "--wan", "{folder}",
                  "--adapter", "{tmp}/text.ckpt", "--no-adapter", "--out", "{tmp}/g.mp4"], ""),
    # ---------------------------------------------------------------- convert-adapter
    ("convert-adapter", ["convert-adapter", "{missing}", "{tmp}/o.safetensors"], ""),
    ("convert-adapter", ["convert-adapter", "{tmp}/text.ckpt", "{tmp}/o.safetensors"], ""),
    ("convert-adapter", ["convert-adapter", "{tmp}/text.safetensors", "{tmp}/o.ckpt"], ""),
    ("convert-adapter", ["convert-adapter", "{tmp}/text.ckpt", "{tmp}/o.txt"], ""),
    ("convert-adapter", ["convert-adapter", "{folder}", "{tmp}/o.safetensors"], ""),
    # ---------------------------------------------------------------- depth
    ("depth", ["depth", "{missing}", "--out", "{tmp}/d.npz"], ""),
    ("depth", ["depth", "{video}", "--depth-model", "depthcrafter", "--out", "{tmp}/d.npz"], "weights"),
    ("depth", ["depth", "{video}", "--depth-model", "depth-anything-v2", "--depth-weights", "{missing}",
               "--out", "{tmp}/d.npz"], "does not exist"),
    ("depth", ["depth", "{video}", "--depth-model", "bogus", "--out", "{tmp}/d.npz"], "invalid choice"),
    ("depth", ["depth", "{video}", "--depth-model", "depth-anything-v2", "--depth-weights", "{folder}",
               "--out", "{tmp}/d.txt"], ""),
    ("depth", ["depth", "{video}", "--num-frames", "-2", "--depth-model", "depth-anything-v2", "--depth-weights",
               "{folder}", "--out", "{tmp}/d.npz"], ""),
    ("depth", ["depth", "{video}", "--depth-model", "video-depth-anything", "--out", "{tmp}/d.npz"], ""),
    # ---------------------------------------------------------------- eval
    ("eval", ["eval", "--pred", "{missing}", "--out", "{tmp}/r.json"], ""),
    ("eval", ["eval", "--pred", "{tmp}/text.mp4", "--out", "{tmp}/r.json"], ""),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--ref", "{tmp}/text.mp4", "--out", "{tmp}/r.json"], ""),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--render", "{recon}/color.mp4", "--out", "{tmp}/r.json"],
     "mask"),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--num-frames", "0", "--out", "{tmp}/r.json"], ""),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--out", "{afile}/r.json"], ""),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--lpips-weights", "{missing}", "--out", "{tmp}/r.json"], ""),
    ("eval", ["eval", "--pred", "{recon}/color.mp4", "--ref", "{recon}/color.mp4", "--inception-weights",
              "{tmp}/text.ckpt", "--out", "{tmp}/r.json"], ""),
    # ---------------------------------------------------------------- benchmark
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--size", "10"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--frames", "0"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--ranges", "sideways"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--filters", "magic"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--blur", "-1"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{afile}/b"], ""),
    ("benchmark", ["benchmark", "novel-view", "--out", "{tmp}/b", "--scenes", "nowhere"], ""),
    ("benchmark", ["benchmark"], ""),
    # ---------------------------------------------------------------- prepare / train / masks
    ("prepare", ["prepare", "{missing}", "--out", "{tmp}/ds", "--depth-dir", "{folder}"], ""),
    ("prepare", ["prepare", "{video}", "--out", "{tmp}/ds", "--depth-dir", "{missing}"], ""),
    ("prepare", ["prepare", "{video}", "--out", "{tmp}/ds", "--depth-dir", "{folder}", "--num-frames", "10"], ""),
    ("prepare", ["prepare", "{video}", "--out", "{tmp}/ds", "--depth-dir", "{folder}", "--size", "0", "0"], ""),
    ("prepare", ["prepare", "{video}", "--out", "{tmp}/ds", "--depth-dir", "{folder}", "--clips-per-video", "0"],
     ""),
    ("prepare", ["prepare", "{video}", "--out", "{afile}/ds", "--depth-dir", "{folder}"], ""),
    ("train", ["train", "--data", "{missing}", "--wan", "{missing}", "--out", "{tmp}/tr"], ""),
    ("train", ["train", "--data", "{folder}", "--wan", "{folder}", "--out", "{tmp}/tr", "--lr", "-1"], ""),
    ("train", ["train", "--data", "{folder}", "--wan", "{folder}", "--out", "{tmp}/tr", "--rank", "0"], ""),
    ("train", ["train", "--data", "{afile}", "--wan", "{folder}", "--out", "{tmp}/tr"], ""),
    ("masks", ["masks", "--out", "{tmp}/m.mp4"], ""),
    ("masks", ["masks", "{video}", "--depth", "{missing}", "--out", "{tmp}/m.mp4"], ""),
    ("masks", ["masks", "{video}", "--depth", "{tmp}/aspect.npy", "--depth-kind", "depth", "--num-frames", "9",
               "--out", "{tmp}/m.mp4"], "aspect"),
    ("masks", ["masks", "--example", "--size", "10", "10", "--out", "{tmp}/m.mp4"], ""),
    ("masks", ["masks", "--example", "--num-frames", "0", "--out", "{tmp}/m.mp4"], ""),
    ("masks", ["masks", "--example", "--camera", "1000", "0", "0", "--out", "{tmp}/m.mp4"], ""),
    ("masks", ["masks", "--example", "--out", "{tmp}/m.txt"], ""),
    # ---------------------------------------------------------------- app / view
    ("app", ["app", "--port", "-1", "--no-browser"], ""),
    ("app", ["app", "--port", "99999", "--no-browser"], ""),
    ("app", ["app", "--max-upload-mb", "-1", "--no-browser"], ""),
    ("app", ["app", "--workdir", "{afile}/w", "--no-browser"], ""),
    ("app", ["app", "--depth-weights", "bogus", "--no-browser"], ""),
    ("app", ["app", "--wan", "{missing}", "--no-browser"], ""),
    ("view", ["view", "{missing}", "--no-browser"], ""),
    ("view", ["view", "{folder}", "--no-browser"], ""),
    ("view", ["view", "{recon}", "--port", "-1", "--no-browser"], ""),
    ("view", ["view", "{recon}", "--max-size", "0", "--no-browser"], ""),
    ("view", ["view", "{typerun}", "--no-browser"], "num_frames"),
    ("view", ["view", "{deeprun}", "--no-browser"], "nested"),
    # ---------------------------------------------------------------- stereo / export
    ("stereo", ["stereo", "{missing}"], ""),
    ("stereo", ["stereo", "{recon}"], "output.mp4"),
    ("stereo", ["stereo", "{recon}", "--ipd", "-1"], ""),
    ("stereo", ["stereo", "{recon}", "--layout", "sideways"], "invalid choice"),
    ("export", ["export", "{missing}", "--out", "{tmp}/e.glb"], ""),
    ("export", ["export", "{recon}", "--out", "{tmp}/e.glb"], ""),
    ("export", ["export", "{recon}", "--format", "obj", "--out", "{tmp}/e.obj"], "invalid choice"),
    ("export", ["export", "{recon}", "--max-size", "0", "--out", "{tmp}/e.glb"], ""),
    ("stereo", ["stereo", "{deeprun}"], "nested"),
    ("stereo", ["stereo", "{typerun}"], "num_frames"),
    ("stereo", ["stereo", "{krun}"], "intrinsics"),
    ("export", ["export", "{fpsrun}", "--out", "{tmp}/e.glb"], "fps"),
    ("export", ["export", "{typerun}", "--out", "{tmp}/e.glb"], "num_frames"),
    # ---------------------------------------------------------------- poses / serve / warmup
    ("poses", ["poses", "{missing}", "--depth", "{depth}", "--out", "{out}"], "does not exist"),
    ("poses", ["poses", *V, "--depth", "{missing}", "--out", "{out}"], "does not exist"),
    ("poses", ["poses", *V, "--depth", "{tmp}/aspect.npy", "--out", "{out}"], "aspect"),
    ("poses", ["poses", *V, "--depth", "{tmp}/frames5.npy", "--out", "{out}"], "5 frames"),
    ("poses", ["poses", *V, "--depth", "{depth}", "--fov", "500", "--out", "{out}"], "fov"),
    ("poses", ["poses", *V, "--depth", "{depth}", "--intrinsics", "{tmp}/bad.json", "--out", "{out}"], "JSON"),
    ("poses", ["poses", *V, "--depth", "{depth}", "--out", "{afile}/sub"], ""),
    ("serve", ["serve"], "--wan"),
    ("serve", ["serve", "--wan", "{missing}", "--no-adapter"], "does not exist"),
    ("serve", ["serve", "--wan", "{folder}", "--no-adapter", "--port", "-1"], "port"),
    ("serve", ["serve", "--wan", "{folder}", "--no-adapter", "--steps", "0"], "steps"),
    ("serve", ["serve", "--wan", "{folder}", "--no-adapter", "--lora", "{missing}"], "not a file"),
    ("warmup", ["warmup", "--wan", "{missing}", "--no-adapter"], "does not exist"),
    ("warmup", ["warmup", "--wan", "{folder}", "--no-adapter", "--size", "10x10"], "multiples of 16"),
    ("warmup", ["warmup", "--wan", "{folder}", "--no-adapter", "--num-frames", "0"], "4k+1"),
    # ---------------------------------------------------------------- the top level
    ("ex4d", ["fly"], "invalid choice"),
    ("ex4d", ["run", "--no-such-flag", *OUT], "unrecognized"),
]

def _param(i, row):
    cmd, args, words, *marks = row
    return pytest.param(args, words, id=f"{cmd}-{i:03d}", marks=marks)


@pytest.mark.parametrize("args, words", [_param(i, r) for i, r in enumerate(ROWS)])
def test_bad_input_is_one_line_exit_2(args, words, f, capsys, tmp_path):
    rc, err = run_cli(_fmt(args, f, tmp_path / "out"), capsys)
    assert "Traceback" not in err, err
    assert rc == 2, f"exit {rc}: {err}"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err
    assert errors[0].startswith("ex4d"), err
    assert words.lower() in errors[0].lower(), err


def test_every_subcommand_has_rows():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    covered = {r[0] for r in ROWS}
    missing = sorted(set(sub.choices) - covered)
    assert not missing, f"subcommands without bad-input rows: {missing}"


def test_failed_runs_leave_no_folder(f, capsys):
    for args in (["recon", *V, "--depth", "{tmp}/aspect.npy", "--out", "{tmp}/never"],
                 ["run", *X, "--trajectory", "{tmp}/bad.json", "--out", "{tmp}/never/deeper"]):
        rc, err = run_cli(_fmt(args, f), capsys)
        assert rc == 2, err
        assert not (f["tmp"] / "never").exists(), "a failed run left the folder it created"


def test_internal_error_shows_traceback_and_asks_for_a_report(monkeypatch, capsys, tmp_path):
    import ex4d.pipeline

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ex4d.pipeline, "run_pipeline", boom)
    rc, err = run_cli(["run", *X, "--out", str(tmp_path / "o")], capsys)
    assert rc == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ex4d run: internal error") and "report" in last


def test_help_of_every_subcommand(capsys):
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        rc, _ = run_cli([name, "--help"], capsys)
        assert rc == 0, name


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    """One real process: what a user sees, including the interpreter's own exit path."""
    import sys

    proc = subprocess.run([sys.executable, "-m", "ex4d", "run", "--example", "--example-size", "64", "--num-frames",
                           "9", "--trajectory", "orbit", "--yaw", "1000", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ex4d run: error:")
