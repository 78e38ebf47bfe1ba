"""Learned metrics from local weights only: LPIPS, FID and FVD (torch, imported lazily; no torchvision, no downloads).

Supported weight formats
------------------------
* **LPIPS** (Zhang et al. 2018, v0.1): the linear layers of the ``lpips``
  package (``lpips/weights/v0.1/alex.pth`` or ``vgg.pth``: keys
  ``lin{0..4}.model.1.weight``) plus the ImageNet backbone they were trained on,
  as torchvision's state dict (``alexnet-owt-7be5be79.pth`` /
  ``vgg16-397923af.pth``: keys ``features.{i}.weight``). Give a folder that
  holds both files, or the linear file with the backbone beside it or passed
  separately; a full ``lpips.LPIPS`` state dict (``net.slice{k}.{i}.*`` +
  ``lin{k}.*``) in one file works too. The backbone (AlexNet or VGG-16, told
  apart by the linear layers' channel counts) is rebuilt here in plain torch.
* **FID**: the TorchScript Inception-v3 of StyleGAN2-ADA / clean-fid
  (``inception-2015-12-05.pt``), called as ``model(x, return_features=True)``
  with x [N, 3, 299, 299] float in 0–255 → [N, 2048] pool features.
* **FVD**: the TorchScript I3D of StyleGAN-V (``i3d_torchscript.pt``), called as
  ``model(x, rescale=False, resize=False, return_features=True)`` with x
  [N, 3, 16, 224, 224] float in [−1, 1] → [N, 400] logits.

pytorch-fid's ``pt_inception-*.pth`` and other plain state dicts are not
supported for FID/FVD (their networks need torchvision); the error says so.
FID here compares the sets of *frames* of two videos and FVD the sets of
16-frame clips (stride :data:`FVD_STRIDE`); both are biased for so few samples
and meant for comparing methods on the same clips, not against published numbers.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .metrics import to_float

__all__ = ["LPIPS_NETS", "FVD_CLIP", "FVD_STRIDE", "load_lpips", "lpips_frames", "load_detector",
           "inception_features", "i3d_features", "feature_stats", "frechet_distance", "fid", "fvd"]

#: net → (channels of the five compared layers, torchvision ``features`` slices ending after each ReLU).
LPIPS_NETS = {
    "alex": ((64, 192, 384, 256, 256), (2, 5, 8, 10, 12)),
    "vgg": ((64, 128, 256, 512, 512), (4, 9, 16, 23, 30)),
}
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
FVD_CLIP = 16
FVD_STRIDE = 4
_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a core dependency
        raise Ex4dError("LPIPS/FID/FVD need PyTorch (pip install torch)") from e
    return torch


def _load_state(path: Path) -> dict:
    """A flat tensor state dict from a .safetensors / torch file (nested 'state_dict' unwrapped)."""
    torch = _torch()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise Ex4dError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    check(isinstance(sd, dict), f"{path}: expected a state dict of tensors, got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items() if hasattr(v, "shape")}


def _weight_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        check(bool(files), f"LPIPS weights folder {path} holds no {'/'.join(_WEIGHT_SUFFIXES)} file")
        return files
    check(path.is_file(), f"LPIPS weights {path} not found")
    return [path]


def _lpips_layers(net: str):
    """torch.nn.Sequential of the torchvision ``features`` of AlexNet / VGG-16 (the layers LPIPS uses)."""
    nn = _torch().nn
    if net == "alex":
        layers = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2),
                  nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]
    else:
        layers, c = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
    return nn.Sequential(*layers)


class _LPIPS:
    """LPIPS v0.1 with a rebuilt backbone; call with two [N, 3, H, W] tensors in [−1, 1] → [N, 1, H, W] map."""

    def __init__(self, net: str, features_sd: dict, lin: list):
        torch = _torch()
        self.net = net
        self.features = _lpips_layers(net)
        self.features.load_state_dict(features_sd, strict=True)
        self.features.eval()
        self.lin = [w.float() for w in lin]
        self.ends = LPIPS_NETS[net][1]
        self.shift = torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1)
        self.scale = torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1)

    def _feats(self, x):
        x = (x - self.shift) / self.scale
        out, start = [], 0
        for end in self.ends:
            for i in range(start, end):
                x = self.features[i](x)
            out.append(x)
            start = end
        return out

    def __call__(self, x0, x1):
        torch = _torch()
        F = torch.nn.functional
        H, W = x0.shape[-2:]
        with torch.no_grad():
            total = 0
            for f0, f1, w in zip(self._feats(x0), self._feats(x1), self.lin):
                n0 = f0 / (torch.sqrt((f0 * f0).sum(1, keepdim=True)) + 1e-10)
                n1 = f1 / (torch.sqrt((f1 * f1).sum(1, keepdim=True)) + 1e-10)
                d = F.conv2d((n0 - n1) ** 2, w)
                total = total + F.interpolate(d, size=(H, W), mode="bilinear", align_corners=False)
        return total


def load_lpips(weights: str | os.PathLike, backbone: str | os.PathLike | None = None) -> _LPIPS:
    """An LPIPS model from local files (see the module docstring); Ex4dError naming what is missing."""
    weights = Path(weights)
    files = _weight_files(weights)
    if backbone is not None:
        files += _weight_files(Path(backbone))
    elif weights.is_file():
        files += [p for p in sorted(weights.parent.iterdir())
                  if p.suffix in _WEIGHT_SUFFIXES and p != weights and ("alex" in p.name or "vgg" in p.name)]
    lin, feats = {}, {}
    for f in files:
        for k, v in _load_state(f).items():
            m = re.fullmatch(r"lin(\d)\.(?:model\.1\.)?weight", k)
            if m:
                lin[int(m.group(1))] = v
            elif k.startswith("features.") and k.count(".") == 2:
                feats[k] = v
            elif k.startswith("net.slice") and k.count(".") == 3:
                _, _, idx, name = k.split(".")
                feats[f"features.{idx}.{name}"] = v
    check(sorted(lin) == [0, 1, 2, 3, 4],
          f"LPIPS: no linear layers lin0..lin4 (keys 'lin{{k}}.model.1.weight') in {', '.join(map(str, files))}; "
          "pass the lpips package's weights/v0.1/alex.pth or vgg.pth")
    chans = tuple(int(lin[k].shape[1]) for k in range(5))
    net = next((n for n, (c, _) in LPIPS_NETS.items() if c == chans), None)
    check(net is not None, f"LPIPS linear layers have channels {chans}; expected AlexNet {LPIPS_NETS['alex'][0]} "
                           f"or VGG-16 {LPIPS_NETS['vgg'][0]}")
    layers = _lpips_layers(net)
    needed = {f"features.{k}" for k in layers.state_dict()}
    have = {f"features.{k}" for k in layers.state_dict()} & set(feats)
    tv = "alexnet-owt-7be5be79.pth" if net == "alex" else "vgg16-397923af.pth"
    check(have == needed, f"LPIPS ({net}): the backbone weights are missing (need torchvision's {tv}, keys "
                          f"'features.N.weight'); put it beside the linear weights or pass --lpips-backbone")
    sd = {k.removeprefix("features."): feats[k].float() for k in needed}
    for k in needed:
        expect = layers.state_dict()[k.removeprefix("features.")].shape
        check(tuple(feats[k].shape) == tuple(expect),
              f"LPIPS ({net}): backbone weight {k} has shape {tuple(feats[k].shape)}, expected {tuple(expect)}")
    return _LPIPS(net, sd, [lin[k] for k in range(5)])


def lpips_frames(model: _LPIPS, pred: np.ndarray, ref: np.ndarray, masks: dict | None = None) -> dict:
    """Per-frame LPIPS of videos [T, H, W, 3] (uint8 / float [0, 1]): {"all": [T], region: [T] …}.

    ``masks`` maps region names to [T, H, W] bool; a region's value is the mean of the
    spatial LPIPS map over its pixels (NaN when empty). Lower is better; 0 for identical frames.
    """
    torch = _torch()
    out = {"all": []}
    for name in masks or {}:
        out[name] = []
    for t in range(len(pred)):
        a = torch.from_numpy(to_float(pred[t]).astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1
        b = torch.from_numpy(to_float(ref[t]).astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1
        m = model(a, b)[0, 0].numpy()
        out["all"].append(float(m.mean()))
        for name, mk in (masks or {}).items():
            out[name].append(float(m[mk[t]].mean()) if mk[t].any() else float("nan"))
    return out


def load_detector(path: str | os.PathLike, what: str):
    """A TorchScript feature network (``what`` = "inception" or "i3d"), eval mode on the CPU."""
    torch = _torch()
    path = Path(path)
    fmt = {"inception": "the TorchScript Inception of StyleGAN2-ADA / clean-fid (inception-2015-12-05.pt)",
           "i3d": "the TorchScript I3D of StyleGAN-V (i3d_torchscript.pt)"}[what]
    check(path.is_file(), f"{what} weights {path} not found; expected {fmt}")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch ≥ 2.10, but it is the released format
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise Ex4dError(f"{path} is not a TorchScript model ({type(e).__name__}); {what} features need {fmt}. "
                        "Plain state dicts (e.g. pytorch-fid's pt_inception-*.pth) are not supported because "
                        "their network definitions need torchvision") from e
    return model.eval()


def _resize(x, size):
    return _torch().nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def inception_features(model, frames: np.ndarray, batch: int = 8) -> np.ndarray:
    """Pool features [T, D] float64 of frames [T, H, W, 3] (uint8 / float [0, 1]) through the Inception model."""
    torch = _torch()
    feats = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.stack([to_float(f) for f in frames[i:i + batch]]).astype(np.float32))
            x = _resize(x.permute(0, 3, 1, 2) * 255.0, (299, 299))
            feats.append(model(x, return_features=True).double().numpy())
    return np.concatenate(feats).reshape(len(frames), -1)


def _clips(frames: np.ndarray, length: int, stride: int) -> list[slice]:
    check(len(frames) >= length, f"FVD needs at least {length} frames per video, got {len(frames)}")
    return [slice(s, s + length) for s in range(0, len(frames) - length + 1, stride)]


def i3d_features(model, frames: np.ndarray, length: int = FVD_CLIP, stride: int = FVD_STRIDE) -> np.ndarray:
    """I3D features [N, D] float64 of the clips frames[s:s+length] (s = 0, stride, …) of a video [T, H, W, 3].

    Each clip's frames are scaled (shorter side 224, bilinear), centre-cropped to 224×224 and mapped to [−1, 1].
    """
    torch = _torch()
    x = torch.from_numpy(to_float(frames).astype(np.float32)).permute(0, 3, 1, 2)
    H, W = x.shape[-2:]
    s = 224 / min(H, W)
    x = _resize(x, (max(224, round(H * s)), max(224, round(W * s))))
    h0, w0 = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., h0:h0 + 224, w0:w0 + 224] * 2 - 1
    feats = []
    with torch.no_grad():
        for sl in _clips(frames, length, stride):
            clip = x[sl].permute(1, 0, 2, 3)[None]  # [1, 3, L, 224, 224]
            feats.append(model(clip, rescale=False, resize=False, return_features=True).double().numpy())
    return np.concatenate(feats).reshape(len(feats), -1)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D] (N ≥ 2; sample covariance)."""
    feats = np.asarray(feats, dtype=np.float64)
    check(feats.ndim == 2 and feats.shape[0] >= 2, f"need at least 2 feature vectors, got shape {feats.shape}")
    return feats.mean(0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) (≥ 0).

    tr((Σ1 Σ2)^½) is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    Σ1^½ Σ2 Σ1^½ (similar to Σ1 Σ2), which stays real and stable for the singular covariances of few samples.
    """
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    w, V = np.linalg.eigh(sigma1)
    root1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    A = root1 @ sigma2 @ root1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((A + A.T) / 2), 0, None)).sum())
    diff = np.atleast_1d(mu1 - mu2)
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean))


def fid(model, pred: np.ndarray, ref: np.ndarray) -> float:
    """FID between the frames of two videos [T, H, W, 3] (T ≥ 2 each)."""
    return frechet_distance(*feature_stats(inception_features(model, pred)),
                            *feature_stats(inception_features(model, ref)))


def fvd(model, pred: np.ndarray, ref: np.ndarray, length: int = FVD_CLIP, stride: int = FVD_STRIDE) -> float:
    """FVD between the 16-frame clips of two videos [T, H, W, 3] (T ≥ length + stride, so ≥ 2 clips each)."""
    check(len(pred) >= length + stride and len(ref) >= length + stride,
          f"FVD needs at least {length + stride} frames per video (two {length}-frame clips), "
          f"got {len(pred)} and {len(ref)}")
    return frechet_distance(*feature_stats(i3d_features(model, pred, length, stride)),
                            *feature_stats(i3d_features(model, ref, length, stride)))
