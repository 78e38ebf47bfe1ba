"""Videos of any length: generation in overlapping windows that continue each other, resumable per window.

EX-4D's adapter was trained on 49-frame clips; a longer clip is generated as a
chain of windows (:func:`plan_windows`) of at most ``window`` frames (4k+1, as
Wan needs), consecutive windows sharing at least ``overlap`` frames:

* **Continuation.** In window k+1 the shared frames are given to the model as
  *known* (mask 255): their condition colours are the stitched output so far
  where the render did not know them (what window k generated), and the
  render's own colours where it did; the I2V first frame is that frame where
  window k+1 starts. So the model continues what it made instead of inventing
  it again. (Feeding back window k's output also on the render's known pixels
  would add its small colour error to window k+1's at every window, and the
  conditions would jump back to the render's colours right after the shared
  frames: a seam inside window k+1 and a drift that grows along the clip.)
* **Blending.** Over the shared frames the output is blended linearly from the
  earlier window's frames to the new window's (weights ``linspace(0, 1, n)``
  of the new one), so the small change the model makes to its known frames
  never shows as a jump.
* **Lifting** (``lift="background"``, :mod:`ex4d.fill.lifted`): some finished
  output frames of each window are lifted to 3D, and their meshes fill the
  unknown pixels of later windows' conditions where nothing nearer is known,
  so generated content that the camera sees again stays the same.
* **Any length, no padding.** The first window is the longest 4k+1 ≤ the
  clip; each next one starts ``overlap`` frames before the end of the last and
  is ``window`` frames long, except the last, which is the shortest 4k+1
  window reaching the clip's end with at least ``overlap`` known frames (so up
  to 3 more known frames than ``overlap``, never a padded frame). Clips of 2–4
  frames (no 4k+1 window fits twice) are the one case generated padded (the
  last frame repeated to 5, the padding cut).

The default overlap, 9 frames, is latent-aligned: Wan's VAE packs frame 0
alone into latent 0 and then 4 frames per latent, so 9 = 1 + 2·4 known frames
fill latent 0 (the I2V frame) and two whole latents, and the new frames start
on a latent boundary. Two latents (a third of a second at 24 fps) give the
model the motion to continue; each 49-frame window adds 40 new frames, so a
long clip costs 49/40 = 1.23× the frames of one pass (overlap 17 would cost
1.53×, overlap 5 gives one latent of motion only).

Resuming: each finished window is saved as ``FOLDER/w00003.npz`` (its stitched
frames) with the frames it lifted (``lifted-00003.npz``), atomically; a re-run
with the same key loads the finished windows and continues with the next one,
and gives the same video as an uninterrupted run (each window's noise seed is
``seed + k``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import check
from ..io.atomic import atomic_save_npz, atomic_write_json

__all__ = ["WindowConfig", "Window", "plan_windows", "window_condition", "blend_overlap", "generate_windows",
           "WindowResult", "seam_changes", "LIFT_MODES"]

LIFT_MODES = ("background", "none")
_TEMPORAL = 4


@dataclass(frozen=True)
class WindowConfig:
    """How a clip is cut into generation windows and what carries over between them (saved in config.json)."""

    window: int = 49            #: frames per window (4k+1; the adapter's training length)
    overlap: int = 9            #: frames each window shares with the previous one, given as known (≥ 1)
    lift: str = "background"    #: lift finished frames into later conditions: background (weight-free depth) | none
    lift_keep: int = 8          #: lifted frames kept (the most recent)
    lift_every: int = 8         #: lift every n-th new frame of a window (counting back from its last)

    def __post_init__(self):
        check(isinstance(self.window, int) and self.window >= 5 and self.window % _TEMPORAL == 1,
              f"--window must be a frame count 4k+1 >= 5 (e.g. 49, 81), got {self.window!r}")
        check(isinstance(self.overlap, int) and 1 <= self.overlap <= self.window - _TEMPORAL,
              f"--overlap must be in [1, window - 4] = [1, {self.window - _TEMPORAL}] frames, got {self.overlap!r}")
        check(self.lift in LIFT_MODES, f"--lift must be one of {', '.join(LIFT_MODES)}, got {self.lift!r}")
        check(isinstance(self.lift_keep, int) and self.lift_keep >= 1, f"lift_keep must be >= 1, got {self.lift_keep!r}")
        check(isinstance(self.lift_every, int) and self.lift_every >= 1,
              f"lift_every must be >= 1, got {self.lift_every!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """Frames ``[start, end)`` of the clip generated together; the first ``known`` are given from earlier windows.

    ``pad`` > 0 only for clips of 2–4 frames: the last frame is repeated ``pad``
    times to make 5 and the padding is cut from the output.
    """

    start: int
    end: int
    known: int = 0
    pad: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start


def _floor_4k1(n: int) -> int:
    return (n - 1) // _TEMPORAL * _TEMPORAL + 1


def _ceil_4k1(n: int) -> int:
    return -(-(n - 1) // _TEMPORAL) * _TEMPORAL + 1


def plan_windows(num_frames: int, window: int = 49, overlap: int = 9) -> list[Window]:
    """The windows covering ``num_frames`` frames (see the module docstring): every length 4k+1 ≤ ``window``."""
    WindowConfig(window=window, overlap=overlap)  # validates
    check(isinstance(num_frames, (int, np.integer)) and num_frames >= 1, f"need at least one frame, got {num_frames!r}")
    T = int(num_frames)
    if T % _TEMPORAL == 1 and T <= window:
        return [Window(0, T)]
    if T < 1 + _TEMPORAL:
        return [Window(0, T, pad=1 + _TEMPORAL - T)]
    first = min(window, _floor_4k1(T))
    plan = [Window(0, first)]
    end = first
    while end < T:
        remaining = T - end
        if remaining >= window - overlap:
            start, length = end - overlap, window
        else:
            length = min(_ceil_4k1(overlap + remaining), _floor_4k1(T))
            start = T - length
        plan.append(Window(start, start + length, known=end - start))
        end = start + length
    return plan


def window_condition(color: np.ndarray, mask: np.ndarray, known_frames: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(color, mask) of a window: the render's, with its first ``len(known_frames)`` frames made fully known.

    color [L, H, W, 3] uint8 and mask [L, H, W] bool (True = known) of the
    render; known_frames [n, H, W, 3] uint8, the stitched output of the first n
    frames. Those frames take the output's colours where the render did not
    know them and keep the render's where it did; their mask becomes all True.
    """
    color, mask = color.copy(), mask.copy()
    if known_frames is not None and len(known_frames):
        n = len(known_frames)
        unknown = ~mask[:n]
        color[:n][unknown] = known_frames[unknown]
        mask[:n] = True
    return color, mask


def blend_overlap(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """[n, ...] uint8 linear blend over shared frames: the first is ``old``'s, the last ``new``'s."""
    n = len(new)
    if n == 0:
        return new
    w = np.linspace(0.0, 1.0, n).reshape((n,) + (1,) * (new.ndim - 1))
    return np.clip(w * new.astype(np.float32) + (1 - w) * old.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def seam_changes(video, plan: list[Window]) -> dict:
    """Frame-to-frame change of a stitched video across window seams and inside windows.

    ``video``: [T, H, W, 3] uint8 (array-like, read a frame at a time). The change into frame t is the mean
    absolute difference to frame t−1 in 8-bit levels; it counts as a *seam* change when t lies in the
    shared frames of a later window (``start … start + known``), else as *inside*. Returns
    ``{"seam_max", "seam_mean", "inside_max", "inside_mean"}`` (a seamless video has ``seam_max`` no larger
    than ``inside_max``).
    """
    seams = {t for w in plan[1:] for t in range(w.start, w.start + w.known + 1)}
    out = {"seam": [], "inside": []}
    prev = None
    for t in range(len(video)):
        cur = np.asarray(video[t], np.float32)
        if prev is not None:
            out["seam" if t in seams else "inside"].append(float(np.abs(cur - prev).mean()))
        prev = cur
    res = {}
    for k, v in out.items():
        res[f"{k}_max"] = max(v) if v else 0.0
        res[f"{k}_mean"] = float(np.mean(v)) if v else 0.0
    return res


# ---------------------------------------------------------------------------------------------- windows on disk

class _WindowFiles:
    """FOLDER/meta.json (key, plan) + one stitched-frames file and one lifted-frames file per finished window."""

    def __init__(self, folder: Path, key: str, plan: list[Window]):
        self.folder = Path(folder)
        meta = {"key": key, "plan": [asdict(w) for w in plan]}
        try:
            old = json.loads((self.folder / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != meta:
            if self.folder.is_dir():
                for p in self.folder.iterdir():
                    if p.is_file() and p.suffix in (".npz", ".json"):
                        p.unlink()
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / "meta.json", meta)

    def path(self, k: int) -> Path:
        return self.folder / f"w{k:05d}.npz"

    def lifted_path(self, k: int) -> Path:
        return self.folder / f"lifted-{k:05d}.npz"

    def done(self, k: int) -> bool:
        return self.path(k).is_file()

    def save(self, k: int, frames: np.ndarray, lifted: list, lifted_ids: list, kept: list) -> None:
        """Window ``k``: its stitched frames, the frames it lifted (output indices ``lifted_ids``) and the lifted
        memory after it (``kept``: (output index, window that lifted it) in the memory's order)."""
        from ..lift import save_lifted

        if lifted:
            save_lifted(self.lifted_path(k), lifted)
        else:
            self.lifted_path(k).unlink(missing_ok=True)
        # last: its presence marks the window done
        atomic_save_npz(self.path(k), compress=False, frames=frames, lifted_ids=np.asarray(lifted_ids, np.int64),
                        kept=np.asarray(kept, np.int64).reshape(-1, 2))

    def kept(self, k: int) -> list[tuple[int, int]]:
        """(output index, window) of the lifted frames kept after window ``k``."""
        with np.load(self.path(k)) as z:
            return [(int(t), int(w)) for t, w in z["kept"]]

    def frames(self, k: int) -> np.ndarray:
        with np.load(self.path(k)) as z:
            return z["frames"]

    def lifted(self, k: int) -> list[tuple[int, object]]:
        """(output frame index, LiftedFrame) of the frames window ``k`` lifted."""
        from ..lift import load_lifted

        with np.load(self.path(k)) as z:
            ids = [int(i) for i in z["lifted_ids"]]
        return list(zip(ids, load_lifted(self.lifted_path(k)))) if ids else []


@dataclass(frozen=True)
class WindowResult:
    """The finished windows of a clip; :meth:`chunks` streams the stitched output."""

    plan: list
    files: _WindowFiles
    num_frames: int

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(start, final frames [n, H, W, 3] uint8) in order: each window's frames up to where the next begins."""
        for k, w in enumerate(self.plan):
            frames = self.files.frames(k)
            stop = self.plan[k + 1].start if k + 1 < len(self.plan) else w.end
            yield w.start, frames[:stop - w.start]

    def video(self) -> np.ndarray:
        """The whole output [T, H, W, 3] uint8 (short clips only)."""
        return np.concatenate([f for _, f in self.chunks()])


def generate_windows(color, mask, generate: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                     config: WindowConfig, folder: str | os.PathLike, key: str, seed: int = 0,
                     view_depth=None, w2c: np.ndarray | None = None, K: np.ndarray | None = None,
                     lift_config=None, backend: str | None = None, progress: bool = True,
                     on_window: Callable[[int, Window], None] | None = None) -> WindowResult:
    """Generate a clip window by window into ``folder`` (resuming finished windows of the same ``key``).

    Args:
        color: [T, H, W, 3] uint8 render (array-like, sliced per window); mask: [T, H, W] bool, True = known.
        generate: ``generate(color [L,H,W,3] uint8, mask [L,H,W] bool, seed) -> [L,H,W,3] uint8``, one window
            (L = 4k+1); e.g. :meth:`Ex4dGenerator.generate`.
        config: window, overlap, lifting.
        seed: window k is generated with ``seed + k``.
        view_depth, w2c, K: the render's depth [T,H,W] (inf = no surface), the output cameras [T,4,4]
            (OpenCV w2c, world frame) and intrinsics [T,3,3]; needed for lifting (else it is off).
        lift_config: :class:`~ex4d.lift.LiftConfig`; backend: the rasterizer for the lifted meshes.
        on_window: called with (k, window) before each window is generated (e.g. to report progress).
    """
    T = len(color)
    plan = plan_windows(T, config.window, config.overlap)
    files = _WindowFiles(Path(folder), key, plan)
    lifting = config.lift != "none" and view_depth is not None and w2c is not None and K is not None
    memory = None
    if lifting:
        from ..fill.lifted import LiftedMemory

        memory = LiftedMemory(config.lift_keep, lift_config, backend)
    todo = [k for k in range(len(plan)) if not files.done(k)]
    first = todo[0] if todo else len(plan)
    origin: dict[int, int] = {}  # output frame index → the window that lifted it
    if todo and memory is not None and first > 0:
        origin = _restore_memory(memory, files, first - 1)
    from ..streaming import progress_bar

    with progress_bar(len(plan), "generate", progress, unit="window") as bar:
        bar.update(first)
        prev = files.frames(first - 1) if 0 < first < len(plan) else None
        for k in range(first, len(plan)):
            w = plan[k]
            if on_window is not None:
                on_window(k, w)
            c, m = np.asarray(color[w.start:w.end]), np.asarray(mask[w.start:w.end]).astype(bool)
            known = prev[w.start - plan[k - 1].start:] if k > 0 else None
            c, m = window_condition(c, m, known)
            d = None
            if memory is not None:
                d = np.asarray(view_depth[w.start:w.end], np.float32).copy()
                for i in range(w.known, w.length):
                    t = w.start + i
                    lf = memory.fill(c[i], m[i], d[i], K[t], w2c[t])
                    c[i], m[i], d[i] = lf.color, lf.mask, lf.depth
            if w.pad:
                out = generate(np.concatenate([c, np.repeat(c[-1:], w.pad, 0)]),
                               np.concatenate([m, np.repeat(m[-1:], w.pad, 0)]), seed + k)[:w.length]
            else:
                out = generate(c, m, seed + k)
            check(out.shape == c.shape and out.dtype == np.uint8,
                  f"window {k} generated {out.shape} {out.dtype}, expected {c.shape} uint8")
            out = np.array(out)
            if known is not None:
                out[:w.known] = blend_overlap(known, out[:w.known])
            lifted, ids = [], []
            if memory is not None:
                for i in sorted(range(w.length - 1, w.known - 1, -config.lift_every)):
                    t = w.start + i
                    memory.lift(t, out[i], d[i], m[i], K[t], w2c[t])
                    lifted.append(memory.frames[-1])
                    ids.append(t)
                    origin[t] = k
            files.save(k, out, lifted, ids, [(t, origin[t]) for t in (memory.ids if memory is not None else [])])
            prev = out
            bar.update(1)
    return WindowResult(plan=plan, files=files, num_frames=T)


def _restore_memory(memory, files: _WindowFiles, last: int) -> dict[int, int]:
    """Refill ``memory`` with exactly the lifted frames it held after window ``last`` (a resumed run), in order."""
    kept = files.kept(last)
    loaded: dict[int, dict] = {}
    for t, k in kept:
        if k not in loaded:
            loaded[k] = dict(files.lifted(k))
        memory.add(t, loaded[k][t])
    return {t: k for t, k in kept}
