"""4D assets: the lifted scene of a run as per-frame coloured meshes (glTF binary or a PLY sequence) with its cameras.

Each output frame, lifted into 3D (:mod:`ex4d.lift`), becomes one triangle mesh:
the frame's pixel grid (every s-th pixel, s = ceil(max(W, H) / ``max_size``))
at its completed depth, with the faces that :mod:`ex4d.dwmesh` flags as
occluded (across depth edges) left out, and any face whose corners' depths
differ by more than 25 %, so the mesh holds the surfaces the video shows and
nothing stretched between them. Vertex colours are the
output frame's pixels.

Coordinates
-----------
Both formats use glTF's frame, as Blender's and three.js's importers expect:
x right, y up, z towards the viewer of the source camera, in scene units
(metres when the depth is metric): ``(x, y, z)_asset = (x, −y, −z)`` of ex4d's
OpenCV world (the source camera: x right, y down, z forward).

GLB (:func:`write_glb`)
-----------------------
* One node per frame (``frame_00000`` …) with its own mesh: the pixel grid's
  valid faces differ from frame to frame, so morph targets (one shared index
  buffer) do not apply. An animation ``play`` shows node t alone from t/fps
  to (t+1)/fps by stepping its scale between 0 and 1 (``STEP`` sampler; the
  portable form of visibility: Blender's importer and three.js's
  ``AnimationMixer`` play it; the clip lasts T/fps). Without the animation,
  frame 0 shows.
* ``COLOR_0`` is linear RGBA (glTF's colour space for vertex colours: sRGB
  pixels are linearised), unsigned-short normalised; the material is unlit
  (``KHR_materials_unlit``, double sided) so the colours look as in the video.
* Cameras: ``output`` follows the output video's path (translation and
  rotation keyed per frame in ``play``, linear), ``source`` sits at the source
  camera. glTF cameras are centred pinholes: ``yfov`` comes from fy and the
  height; every frame's exact K and OpenCV w2c are in the camera node's
  ``extras`` (zoom paths change K per frame, which core glTF cannot animate).
* Size: about 0.5 MB per frame at the default ``max_size=128`` (20 B per
  vertex, 6 B per triangle); ``max_size=512`` is full resolution for 512² clips.

PLY sequence (:func:`write_ply_sequence`)
-----------------------------------------
A folder of binary PLYs ``00000.ply`` … (vertex colours sRGB uint8, the same
coordinates as the GLB; Blender's PLY importer defaults read them upright)
plus ``cameras.json`` (ex4d's camera file: OpenCV w2c of every frame, its K).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .cameras import invert_w2c
from .errors import check
from .lift import LiftConfig, LiftedFrame, lifted_mesh

__all__ = ["AssetMesh", "ASSET_FORMATS", "GLTF_FROM_OPENCV", "asset_stride", "frame_mesh", "write_glb",
           "write_ply_sequence"]

ASSET_FORMATS = ("glb", "ply")
#: ex4d's OpenCV world → glTF's y-up world (a 180° turn about x).
GLTF_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class AssetMesh:
    """One frame's mesh for export.

    ========  ================  ===========================================================
    field     shape, dtype      meaning
    ========  ================  ===========================================================
    vertices  [V, 3] float32    positions in the asset frame (glTF axes, scene units)
    colors    [V, 3] uint8      sRGB colour of each vertex (the output frame's pixel)
    faces     [F, 3] uint32     triangles (counter-clockwise seen from the camera), valid only
    ========  ================  ===========================================================
    """

    vertices: np.ndarray
    colors: np.ndarray
    faces: np.ndarray


def asset_stride(width: int, height: int, max_size: int) -> int:
    """Subsampling step s ≥ 1 so that the exported grid's longer side is at most ``max_size`` pixels."""
    check(isinstance(max_size, int) and max_size >= 2, f"--max-size must be an integer ≥ 2, got {max_size!r}")
    return max(1, math.ceil(max(width, height) / max_size))


def _subsample(frame: LiftedFrame, s: int) -> LiftedFrame:
    if s == 1:
        return frame
    K = np.array(frame.K, dtype=np.float64)
    K[:2] /= s  # grid pixel (i, j) is pixel (s·i, s·j): u_s = u / s, exactly for integer-centred pixels
    return LiftedFrame(rgb=np.ascontiguousarray(frame.rgb[::s, ::s]), depth=np.ascontiguousarray(frame.depth[::s, ::s]),
                       measured=frame.measured[::s, ::s], K=K, w2c=frame.w2c)


def frame_mesh(frame: LiftedFrame, max_size: int = 128, config: LiftConfig | None = None,
               max_depth_ratio: float = 1.25) -> AssetMesh:
    """The export mesh of one lifted frame: its valid grid faces, in the asset (glTF) world frame.

    Faces whose corners' depths differ by more than ``max_depth_ratio`` are left
    out too: between neighbouring pixels that is an edge, not a surface (the
    DW-Mesh filter's median prefilter passes a few such faces at objects' corners).
    """
    f = _subsample(frame, asset_stride(frame.width, frame.height, max_size))
    mesh = lifted_mesh(f, config=config)
    n_grid = f.height * f.width
    faces = mesh.faces[: mesh.num_grid_faces][~mesh.occluded[: mesh.num_grid_faces]]
    z = mesh.vertices[:, 2][faces]
    faces = faces[z.max(axis=1) <= max_depth_ratio * z.min(axis=1)]
    used = np.zeros(n_grid, bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    c2w = GLTF_FROM_OPENCV @ invert_w2c(frame.w2c)
    v = mesh.vertices[:n_grid][used].astype(np.float64)
    verts = (v @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32)
    # the asset frame flips two axes (a rotation), so the winding seen from the camera is kept; the DW-Mesh
    # winds its faces with the normals out of the enclosed volume, i.e. towards the camera: counter-clockwise
    return AssetMesh(vertices=verts, colors=f.rgb.reshape(-1, 3)[used], faces=remap[faces].astype(np.uint32))


def _srgb_to_linear(rgb8: np.ndarray) -> np.ndarray:
    x = rgb8.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of rotation matrix R [3, 3]."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_quat()


def _gltf_camera_node(w2c: np.ndarray) -> np.ndarray:
    """glTF node matrix [4, 4] (camera looks along its −z, y up) of an OpenCV camera w2c [4, 4] in ex4d's world."""
    return GLTF_FROM_OPENCV @ invert_w2c(w2c) @ GLTF_FROM_OPENCV


def write_glb(path: str | os.PathLike, frames: Sequence[LiftedFrame], fps: float, max_size: int = 128,
              config: LiftConfig | None = None, source_K: np.ndarray | None = None, progress: bool = True) -> Path:
    """Write the lifted frames as one GLB (module docstring), atomically; returns the path."""
    import pygltflib as g

    from .io.atomic import atomic_path

    path = Path(path)
    check(len(frames) > 0, "no lifted frames to export")
    check(path.suffix.lower() == ".glb", f"--out {path} must end in .glb for --format glb")
    check(math.isfinite(fps) and fps > 0, f"fps must be > 0, got {fps}")
    blob = bytearray()
    views: list = []
    accessors: list = []

    def add(data: np.ndarray, comp: int, kind: str, target: int | None = None, normalized: bool = False,
            minmax: bool = False) -> int:
        while len(blob) % 4:
            blob.append(0)
        raw = np.ascontiguousarray(data).tobytes()
        views.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(raw), target=target))
        blob.extend(raw)
        count = int(data.shape[0])
        acc = g.Accessor(bufferView=len(views) - 1, componentType=comp, count=count, type=kind, normalized=normalized)
        if minmax:
            flat = data.reshape(count, -1)
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    meshes, nodes = [], []
    T = len(frames)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="export: glb", unit="frame", leave=False)
    for t, fr in enumerate(frames):
        m = frame_mesh(fr, max_size, config)
        attrs = g.Attributes(POSITION=add(m.vertices, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True))
        rgba = np.concatenate([_srgb_to_linear(m.colors), np.ones((len(m.colors), 1))], 1)
        attrs.COLOR_0 = add(np.round(rgba * 65535).astype(np.uint16), g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER,
                            normalized=True)
        small = m.vertices.shape[0] <= 65535
        idx = add(m.faces.astype(np.uint16 if small else np.uint32).ravel(),
                  g.UNSIGNED_SHORT if small else g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
        meshes.append(g.Mesh(name=f"frame_{t:05d}", primitives=[g.Primitive(attributes=attrs, indices=idx, material=0)]))
        nodes.append(g.Node(name=f"frame_{t:05d}", mesh=t, scale=[1.0, 1.0, 1.0] if t == 0 else [0.0, 0.0, 0.0]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    H, W = frames[0].height, frames[0].width
    K0 = frames[0].K
    cameras = [g.Camera(name="output", type="perspective",
                        perspective=g.Perspective(yfov=float(2 * math.atan(H / 2 / K0[1, 1])), aspectRatio=W / H,
                                                  znear=float(0.01 * min(float(f.depth.min()) for f in frames))))]
    w2c = np.stack([f.w2c for f in frames])
    mats = np.stack([_gltf_camera_node(m) for m in w2c])
    cam_node = g.Node(name="output", camera=0, translation=mats[0, :3, 3].tolist(),
                      rotation=_quat_xyzw(mats[0, :3, :3]).tolist(),
                      extras={"convention": "opencv_w2c in ex4d's world; asset = diag(1,-1,-1) of it",
                              "width": W, "height": H, "fps": float(fps),
                              "K": [f.K.tolist() for f in frames], "w2c": w2c.tolist()})
    nodes.append(cam_node)
    if source_K is not None:
        sK = np.asarray(source_K, dtype=np.float64)
        cameras.append(g.Camera(name="source", type="perspective",
                                perspective=g.Perspective(yfov=float(2 * math.atan(H / 2 / sK[1, 1])),
                                                          aspectRatio=W / H, znear=cameras[0].perspective.znear)))
        nodes.append(g.Node(name="source", camera=1, rotation=[1.0, 0.0, 0.0, 0.0],  # the OpenCV→glTF turn
                            extras={"K": sK.tolist()}))
    root = g.Node(name="ex4d_scene", children=list(range(len(nodes))))
    nodes.append(root)

    # keys at t/fps for every frame and one more at T/fps, so the last frame shows for a whole frame too
    times = add((np.arange(T + 1) / float(fps)).astype(np.float32), g.FLOAT, g.SCALAR, minmax=True)
    samplers, channels = [], []
    for t in range(T):
        keys = np.zeros((T + 1, 3), np.float32)
        keys[t] = 1.0
        if t == T - 1:
            keys[T] = 1.0
        samplers.append(g.AnimationSampler(input=times, output=add(keys, g.FLOAT, g.VEC3), interpolation="STEP"))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=t, path="scale")))
    cam = T  # the output camera's node index
    quats = np.stack([_quat_xyzw(m[:3, :3]) for m in mats])
    for i in range(1, T):  # neighbours in one hemisphere: linear interpolation takes the short way
        if np.dot(quats[i], quats[i - 1]) < 0:
            quats[i] = -quats[i]
    trans = np.concatenate([mats[:, :3, 3], mats[-1:, :3, 3]])
    quats = np.concatenate([quats, quats[-1:]])
    for data, target in ((trans.astype(np.float32), "translation"), (quats.astype(np.float32), "rotation")):
        samplers.append(g.AnimationSampler(input=times, output=add(data, g.FLOAT, g.VEC3 if target == "translation" else g.VEC4),
                                           interpolation="LINEAR"))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=cam, path=target)))

    gltf = g.GLTF2(
        asset=g.Asset(generator="ex4d", version="2.0"),
        scene=0, scenes=[g.Scene(name="ex4d", nodes=[len(nodes) - 1])], nodes=nodes, meshes=meshes,
        materials=[g.Material(name="vertex_colour_unlit", doubleSided=True,
                              pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorFactor=[1, 1, 1, 1],
                                                                          metallicFactor=0.0, roughnessFactor=1.0),
                              extensions={"KHR_materials_unlit": {}})],
        extensionsUsed=["KHR_materials_unlit"], cameras=cameras,
        animations=[g.Animation(name="play", samplers=samplers, channels=channels)],
        accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
        extras={"generator": "ex4d", "frames": T, "fps": float(fps), "coordinates": "glTF: x right, y up, z towards "
                "the source camera's viewer; = diag(1,-1,-1) of ex4d's OpenCV world"})
    gltf.set_binary_blob(bytes(blob))
    with atomic_path(path) as tmp:
        gltf.save_binary(str(tmp))
    return path


def write_ply_sequence(folder: str | os.PathLike, frames: Sequence[LiftedFrame], fps: float, max_size: int = 128,
                       config: LiftConfig | None = None, progress: bool = True) -> Path:
    """Write ``folder/00000.ply`` … (one mesh per frame) and ``folder/cameras.json``; every file atomic."""
    import trimesh

    from .io.atomic import atomic_path
    from .io.camera_files import write_cameras_json

    folder = Path(folder)
    check(len(frames) > 0, "no lifted frames to export")
    check(not folder.exists() or folder.is_dir(), f"--out {folder} exists and is not a folder (--format ply writes a folder)")
    folder.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(frames), desc="export: ply", unit="frame", leave=False)
    for t, fr in enumerate(frames):
        m = frame_mesh(fr, max_size, config)
        tm = trimesh.Trimesh(vertices=m.vertices, faces=m.faces, vertex_colors=m.colors, process=False)
        with atomic_path(folder / f"{t:05d}.ply") as tmp:
            tm.export(tmp, file_type="ply")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for stale in folder.glob("*.ply"):  # a longer sequence written here before
        if stale.stem.isdigit() and int(stale.stem) >= len(frames):
            stale.unlink()
    H, W = frames[0].height, frames[0].width
    write_cameras_json(folder / "cameras.json", np.stack([f.w2c for f in frames]), np.stack([f.K for f in frames]),
                       W, H, fps)
    meta = {"frames": len(frames), "fps": float(fps), "max_size": max_size,
            "coordinates": "glTF axes: (x, -y, -z) of ex4d's OpenCV world; cameras.json is in ex4d's OpenCV world"}
    from .io.atomic import atomic_write_text

    atomic_write_text(folder / "scene.json", json.dumps(meta, indent=2) + "\n")
    return folder
