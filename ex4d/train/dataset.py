"""Training data: prepared (target, condition, mask) clips → tensors, with the original's random mask erosion.

:class:`TripleDataset` reads the layout of :mod:`ex4d.train.layout` (also a
folder of clip folders holding ``gt.mp4``, ``render_180.mp4``,
``mask_180.mp4``, as the original loader read). Each item is the clip's first
``num_frames`` frames at the stored size, the mask eroded per frame by a k×k
square with k uniform in ``erosion`` (the original: 2–8 px, ``cv2.erode``),
and the condition re-masked with the eroded mask (as the original's
``cond * mask``).

Randomness is explicit, so a resumed run sees exactly the same data:
:class:`ResumableSampler` yields ``(index, draw_seed)`` pairs whose order and
seeds depend only on (seed, epoch, rank), and it can start at any position.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import check
from . import layout

__all__ = ["TripleDataset", "ResumableSampler", "collate_triples", "split_clips", "draw_seed"]


def draw_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from ``seed`` and integers ``parts`` (stable across runs and machines)."""
    text = ":".join(str(int(p)) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def split_clips(clips: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    """(train, held out): ``holdout`` clips chosen by a hash of their names (stable as the dataset grows)."""
    check(holdout >= 0, f"holdout must be >= 0, got {holdout}")
    if holdout == 0:
        return list(clips), []
    check(holdout < len(clips), f"cannot hold out {holdout} of {len(clips)} clips for validation; "
                                f"lower --val-clips or give --val-data")
    ranked = sorted(clips, key=lambda p: hashlib.sha1(p.name.encode()).hexdigest())
    held = set(ranked[:holdout])
    return [c for c in clips if c not in held], [c for c in clips if c in held]


@dataclass(frozen=True)
class _Item:
    target: np.ndarray     # [T, H, W, 3] uint8
    condition: np.ndarray  # [T, H, W, 3] uint8, 0 where unknown
    mask: np.ndarray       # [T, H, W] bool, True = known


class TripleDataset:
    """Map-style dataset of prepared clips; ``ds[(index, draw_seed)]`` (or ``ds[index]``) → dict.

    Args:
        clips: clip folders (e.g. ``layout.list_clips(root)``).
        num_frames: frames to use (4k+1; default all of the first clip's, checked per item).
        erosion: (lo, hi) kernel sizes in px of the per-frame erosion; (0, 0) disables.

    Items: ``{"target": [T, H, W, 3] uint8, "condition": [T, H, W, 3] uint8 (target × eroded mask),
    "mask": [T, H, W] bool (eroded, True = known), "clip": str, "prompt": ""}``.
    """

    def __init__(self, clips: list[Path], num_frames: int | None = None, erosion: tuple[int, int] = (2, 8)) -> None:
        check(len(clips) > 0, "no prepared clips found; run `ex4d prepare` first (clips/<id>/gt.mp4, "
                              "render_180.mp4, mask_180.mp4)")
        self.clips = [Path(c) for c in clips]
        self.num_frames = num_frames
        self.erosion = (int(erosion[0]), int(erosion[1]))
        check(0 <= self.erosion[0] <= self.erosion[1], f"erosion must be 0 <= lo <= hi, got {erosion}")
        check(num_frames is None or (num_frames - 1) % 4 == 0, f"num_frames must be 4k+1, got {num_frames}")

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, index: int) -> _Item:
        """The stored clip ``index`` without erosion."""
        from ..io.video import read_mask_video, read_video

        clip = self.clips[index]
        n = self.num_frames
        target = read_video(clip / layout.TARGET, num_frames=n, max_res=1 << 16, multiple=1).frames
        cond = read_video(clip / layout.CONDITION, num_frames=n, max_res=1 << 16, multiple=1).frames
        mask = read_mask_video(clip / layout.MASK, num_frames=n)
        T, H, W = target.shape[:3]
        check(cond.shape == target.shape and mask.shape[0] == T,
              f"{clip}: the condition {cond.shape}, mask {mask.shape} and target {target.shape} videos disagree")
        mask = np.ascontiguousarray(mask[:, :H, :W])
        check((T - 1) % 4 == 0, f"{clip}: {T} frames; training needs 4k+1 (re-prepare with --num-frames 49)")
        return _Item(target, cond, mask)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, draw_seed(0, key))
        item = self.read(int(index))
        mask = erode(item.mask, self.erosion, seed)
        cond = np.where(mask[..., None], item.condition, np.uint8(0))
        return {"target": item.target, "condition": cond, "mask": mask, "clip": self.clips[int(index)].name,
                "prompt": ""}


def erode(mask: np.ndarray, kernels: tuple[int, int], seed: int) -> np.ndarray:
    """``mask`` [T, H, W] bool eroded per frame (k×k, k uniform in ``kernels``), seeded (see ex4d.diffusion)."""
    from ..diffusion.conditioning import erode_masks

    return erode_masks(mask, kernels, seed)


def collate_triples(items: list[dict]):
    """Batch dict: ``target``/``condition`` [B, T, H, W, 3] uint8, ``mask`` [B, T, H, W] bool (torch), ``clip`` list."""
    import torch

    return {"target": torch.from_numpy(np.stack([i["target"] for i in items])),
            "condition": torch.from_numpy(np.stack([i["condition"] for i in items])),
            "mask": torch.from_numpy(np.stack([i["mask"] for i in items])),
            "clip": [i["clip"] for i in items], "prompt": [i["prompt"] for i in items]}


class ResumableSampler:
    """Infinite ``(index, draw_seed)`` stream for one rank, resumable at any position.

    Epoch e visits a permutation of ``range(n)`` drawn from (seed, e); rank r of
    ``world`` takes positions r, r+world, … of it (the last partial round is
    dropped so every rank takes the same number of steps). ``start`` is the
    number of items this rank has already consumed.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        check(n >= world, f"{n} training clips cannot feed {world} processes; prepare more clips")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    @property
    def per_epoch(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        while True:
            epoch, k = divmod(pos, self.per_epoch)
            order = np.random.default_rng(draw_seed(self.seed, epoch)).permutation(self.n)
            index = int(order[k * self.world + self.rank])
            yield index, draw_seed(self.seed, epoch, index, 1)
            pos += 1
