"""Compact 4D scene export for the browser: per-frame depth, occlusion flags and colour, meshed on the GPU.

The viewer (``web/src/scene.js``) draws one static grid of ``w·h`` vertices
(one per pixel) and, per frame, swaps three textures: the vertex shader lifts
each vertex to its z-depth along ((u−cx)/fx, (v−cy)/fy, 1), the fragment
shader colours it from the frame and marks the faces that
:func:`ex4d.dwmesh.mesh_depth_and_occlusion` flags (the same criterion as the run) as
unknown. So the browser shows exactly the DW-Meshes the pipeline rendered,
without shipping a mesh per frame.

File layout (the whole file is stored gzip-compressed, ``scene.bin.gz``)
-----------------------------------------------------------------------
===========  ===========================================================================
bytes        content
===========  ===========================================================================
8            magic ``b"EX4DSCN1"``
4            header length n, uint32 little-endian
n            header, UTF-8 JSON (below)
...          blobs, at the offsets the header gives (relative to the end of the header)
===========  ===========================================================================

Header: ``{"version": 1, "num_frames": T, "width": w, "height": h, "fps",
"K": 3×3 (pixels of the w×h grid), "source_size": [W, H], "source_K": 3×3,
"stride": s, "depth_min", "depth_max", "pivot_depth", "mesh": MeshConfig,
"stereo": {"ipd", "convergence", "near"} (ex4d.stereo's defaults for this depth),
"frames": [{"depth": [off, len], "occ": [off, len], "color": [off, len]}]}``, and, for a moving
source camera only, ``"w2c_src": [T × 4×4]`` (OpenCV world-to-camera, world = source frame 0): the
viewer places frame t's mesh in the world with its inverse, so the scene stays put while the
source path is drawn.

Per frame: ``depth`` uint16 [h, w] little-endian, q = round(65535 ·
log(d / depth_min) / log(depth_max / depth_min)) (relative error ≤ 1e-4 for a
depth range of 1000×); ``occ`` uint8 [h−1, w−1], bit 0 = the quad's
upper-left face (c, a, b) is occluded, bit 1 = its lower-right face (c, b, d)
(quad (i, j) has a=(i, j), b=(i, j+1), c=(i+1, j), d=(i+1, j+1)); ``color``
a JPEG (quality 92, 4:4:4) of the [h, w] RGB frame.

The export grid takes every s-th pixel (s = ceil(max(W, H) / max_size)), so
grid pixel (i, j) is source pixel (s·i, s·j) and K scales by 1/s exactly.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..dwmesh import MeshConfig, mesh_depth_and_occlusion
from ..errors import Ex4dError, check

__all__ = ["MAGIC", "SceneData", "encode_scene", "decode_scene", "write_scene", "read_scene", "export_stride",
           "run_inputs", "export_run_scene"]

MAGIC = b"EX4DSCN1"
_JPEG_QUALITY = 92


@dataclass(frozen=True)
class SceneData:
    """A decoded scene export (what the browser sees).

    ===========  ===================  ==============================================
    field        shape, dtype         meaning
    ===========  ===================  ==============================================
    header       dict                 the JSON header (module docstring)
    depth        [T, h, w] float32    z-depth after quantisation (scene units)
    occluded     [T, 2, h−1, w−1] b   per-face flags, face 0 upper-left, 1 lower-right
    colors       [T, h, w, 3] uint8   RGB after JPEG
    ===========  ===================  ==============================================
    """

    header: dict
    depth: np.ndarray
    occluded: np.ndarray
    colors: np.ndarray


def export_stride(width: int, height: int, max_size: int) -> int:
    """Subsampling step s ≥ 1 so that the export grid's longer side is at most ``max_size`` pixels."""
    check(isinstance(max_size, int) and max_size >= 8, f"max_size must be an integer ≥ 8, got {max_size!r}")
    return max(1, math.ceil(max(width, height) / max_size))


def _quantize_depth(depth: np.ndarray, dmin: float, dmax: float) -> np.ndarray:
    span = math.log(dmax / dmin) if dmax > dmin else 1.0
    q = np.round(np.log(depth.astype(np.float64) / dmin) / span * 65535.0)
    return np.clip(q, 0, 65535).astype("<u2")


def _dequantize_depth(q: np.ndarray, dmin: float, dmax: float) -> np.ndarray:
    span = math.log(dmax / dmin) if dmax > dmin else 1.0
    return (dmin * np.exp(q.astype(np.float64) / 65535.0 * span)).astype(np.float32)


def _jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # full-resolution chroma: small frames stay sharp
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise Ex4dError("could not encode a frame as JPEG")
    return buf.tobytes()


def _unjpeg(data: bytes) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


def encode_scene(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, fps: float, mesh: MeshConfig | None = None,
                 max_size: int = 512, pivot_depth: float | None = None, w2c_src: np.ndarray | None = None) -> bytes:
    """The uncompressed export (bytes) of a clip.

    Args:
        frames: [T, H, W, 3] uint8 RGB.
        depth: [T, H, W] float z-depth > 0 (scene units).
        K: [3, 3] intrinsics of the H×W frames (pixels, integer pixel centres).
        fps: frame rate.
        mesh: occlusion criterion (the run's MeshConfig; default ours).
        max_size: longer side of the export grid at most this (every s-th pixel is kept).
        pivot_depth: orbit pivot the viewer starts with (default: median of frame 0's centre).
        w2c_src: [T, 4, 4] source camera poses (world = frame 0) of a moving source; None or all
            identity: a tripod (no field in the header, as before).
    """
    from ..trajectory import pivot_depth_from_depth

    mesh = mesh or MeshConfig()
    frames = np.asarray(frames)
    depth = np.asarray(depth, dtype=np.float32)
    check(frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8,
          f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    check(depth.shape == frames.shape[:3], f"depth must be [T, H, W] = {list(frames.shape[:3])}, got {list(depth.shape)}")
    check(bool(np.all(np.isfinite(depth))) and float(depth.min()) > 0, "depth must be finite and > 0 to export a scene")
    T, H, W = depth.shape
    s = export_stride(W, H, max_size)
    d = depth[:, ::s, ::s]
    c = frames[:, ::s, ::s]
    h, w = d.shape[1:]
    check(h >= 2 and w >= 2, f"the export grid {w}×{h} is too small; raise max_size")
    Ks = np.array(K, dtype=np.float64)
    Ks[:2] /= s  # grid pixel (i, j) is source pixel (s·i, s·j): u_s = u / s exactly
    # the depth and flags the run's meshes use (denoised and sharpened as the MeshConfig says)
    prepared = [mesh_depth_and_occlusion(d[t], Ks, mesh, c[t]) for t in range(T)]
    d = np.stack([p[0] for p in prepared]).astype(np.float32)
    dmin, dmax = float(d.min()), float(d.max())
    pivot = float(pivot_depth) if pivot_depth is not None else pivot_depth_from_depth(depth[0])

    blobs: list[bytes] = []
    index = []
    offset = 0

    def add(b: bytes) -> list[int]:
        nonlocal offset
        blobs.append(b)
        span = [offset, len(b)]
        offset += len(b)
        return span

    for t in range(T):
        occ = prepared[t][1].reshape(2, h - 1, w - 1)
        bits = (occ[0].astype(np.uint8) | (occ[1].astype(np.uint8) << 1))
        index.append({"depth": add(_quantize_depth(d[t], dmin, dmax).tobytes()),
                      "occ": add(np.ascontiguousarray(bits).tobytes()),
                      "color": add(_jpeg(c[t]))})
    from ..stereo import stereo_geometry

    geo = stereo_geometry(d)  # the viewer's stereo mode starts from ex4d's default eye geometry
    header = {"version": 1, "num_frames": T, "width": int(w), "height": int(h), "fps": float(fps),
              "K": Ks.tolist(), "source_size": [int(W), int(H)], "source_K": np.asarray(K, dtype=float).tolist(),
              "stride": int(s), "depth_min": dmin, "depth_max": dmax, "pivot_depth": pivot,
              "mesh": asdict(mesh), "stereo": {"ipd": geo.ipd, "convergence": geo.convergence, "near": geo.near},
              "frames": index}
    if w2c_src is not None and not np.allclose(w2c_src, np.eye(4), atol=1e-9):
        w2c_src = np.asarray(w2c_src, dtype=np.float64)
        check(w2c_src.shape == (T, 4, 4), f"w2c_src must be [T, 4, 4] with T={T}, got {list(w2c_src.shape)}")
        header["w2c_src"] = w2c_src.tolist()
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(blobs)


def decode_scene(data: bytes) -> SceneData:
    """Decode :func:`encode_scene`'s bytes (gzip-compressed or not) into arrays, as the viewer does."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    check(data[:8] == MAGIC, "not an ex4d scene export (bad magic)")
    (n,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + n])
    body = memoryview(data)[12 + n:]
    w, h = header["width"], header["height"]
    depth, occ, colors = [], [], []
    for fr in header["frames"]:
        o, ln = fr["depth"]
        q = np.frombuffer(body[o:o + ln], dtype="<u2").reshape(h, w)
        depth.append(_dequantize_depth(q, header["depth_min"], header["depth_max"]))
        o, ln = fr["occ"]
        bits = np.frombuffer(body[o:o + ln], dtype=np.uint8).reshape(h - 1, w - 1)
        occ.append(np.stack([(bits & 1) > 0, (bits & 2) > 0]))
        o, ln = fr["color"]
        colors.append(_unjpeg(bytes(body[o:o + ln])))
    return SceneData(header=header, depth=np.stack(depth), occluded=np.stack(occ), colors=np.stack(colors))


def write_scene(path: str | os.PathLike, data: bytes) -> Path:
    """Write an export gzip-compressed (level 6) and atomically; returns the path."""
    from ..io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".gz") as tmp:
        with gzip.open(tmp, "wb", compresslevel=6) as f:
            f.write(data)
    return path


def read_scene(path: str | os.PathLike) -> SceneData:
    """:func:`decode_scene` of a file written by :func:`write_scene`."""
    return decode_scene(Path(path).read_bytes())


# ---------------------------------------------------------------------------------------------- runs

def run_inputs(out: str | os.PathLike):
    """(frames [T,H,W,3] uint8, depth [T,H,W] float32, K [3,3], fps, RunConfig) of a finished run folder.

    Frames are read again from the run's input (config.json records it); depth
    comes from the depth cache ``OUT/.ex4d/depth/`` (depth files and models) or, for the
    bundled example, is regenerated exactly.
    """
    from ..pipeline import STATE_DIR, read_run_record

    out = Path(out)
    cfg_path = out / "config.json"
    record, config = read_run_record(out)
    check(record.get("intrinsics") is not None,
          f"{cfg_path}: no 3×3 'intrinsics'; re-run the job with this version of ex4d")
    K = np.asarray(record["intrinsics"], dtype=np.float64)
    from ..io.chunks import concat_field

    cache = out / STATE_DIR / "depth"
    if config.example:
        from ..example import make_example

        scene = make_example(config.num_frames or 49, config.example_size, config.example_size)
        frames, fps = scene.frames, scene.fps
        depth = concat_field(cache, "depth") if (cache / "meta.json").is_file() and (config.depth or config.depth_model) \
            else scene.depth
    else:
        from ..io.video import read_video

        check(bool(config.video) and Path(config.video).exists(),
              f"the run's input video {config.video} is gone; the viewer needs it for the colours")
        fr = read_video(config.video, num_frames=config.num_frames, start=config.start, stride=config.stride,
                        max_res=config.max_res, allow_short=config.allow_short)
        frames, fps = fr.frames, fr.fps / config.stride
        check((cache / "meta.json").is_file(), f"{cache} is missing; re-run `ex4d run` into {out} (it caches the depth there)")
        depth = concat_field(cache, "depth")
    check(depth.shape == frames.shape[:3],
          f"the cached depth {list(depth.shape)} does not match the frames {list(frames.shape[:3])}; re-run the job")
    return frames, depth, K, float(record.get("fps", fps)), config


def export_run_scene(out: str | os.PathLike, max_size: int = 512, cache: bool = True) -> Path:
    """``OUT/.ex4d/view/scene-<max_size>.bin.gz`` for a finished run (made once, reused while config.json is older)."""
    from ..pipeline import STATE_DIR

    out = Path(out)
    path = out / STATE_DIR / "view" / f"scene-{int(max_size)}.bin.gz"
    cfg = out / "config.json"
    if cache and path.is_file() and cfg.is_file() and path.stat().st_mtime >= cfg.stat().st_mtime:
        return path
    frames, depth, K, fps, config = run_inputs(out)
    pivot = None
    from ..io.json_input import read_json

    try:
        params = read_json(cfg, "run record").get("trajectory", {}).get("params", {})
        pivot = params.get("pivot_depth") or params.get("radius")
        pivot = float(pivot) if isinstance(pivot, (int, float)) and not isinstance(pivot, bool) and pivot > 0 else None
    except (Ex4dError, AttributeError):
        pivot = None
    w2c_src = None
    if (out / "source_cameras.json").is_file():
        from ..io.camera_files import read_cameras_json

        w2c_src = read_cameras_json(out / "source_cameras.json").w2c
    data = encode_scene(frames, depth, K, fps, config.recon.mesh, max_size=max_size, pivot_depth=pivot,
                        w2c_src=w2c_src)
    return write_scene(path, data)
