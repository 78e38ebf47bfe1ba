"""LPIPS / FID / FVD from local weights: the released formats, rebuilt without torchvision (random weights)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ex4d.errors import Ex4dError  # noqa: E402
from ex4d.eval import features as F  # noqa: E402


def _alex_weights(folder, seed=0):
    """Random weights in the released layouts: torchvision's alexnet state dict and lpips's alex.pth."""
    g = torch.Generator().manual_seed(seed)
    layers = F._lpips_layers("alex")
    backbone = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in layers.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)    # torchvision files hold the classifier too
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(F.LPIPS_NETS["alex"][0])}
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    torch.save(lin, folder / "alex.pth")
    return folder / "alex.pth", folder / "alexnet-owt-7be5be79.pth"


def _frames(T=3, H=40, W=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def test_lpips_from_the_released_files(tmp_path):
    lin, backbone = _alex_weights(tmp_path)
    for model in (F.load_lpips(tmp_path), F.load_lpips(lin), F.load_lpips(lin, backbone)):
        assert model.net == "alex"
    model = F.load_lpips(tmp_path)
    a, b = _frames(seed=1), _frames(seed=2)
    mask = np.zeros(a.shape[:3], bool)
    mask[:, :, :24] = True
    same = F.lpips_frames(model, a, a, {"known": mask})
    assert np.allclose(same["all"], 0) and np.allclose(same["known"], 0)
    diff = F.lpips_frames(model, a, b, {"known": mask, "empty": np.zeros_like(mask)})
    assert all(x > 0 for x in diff["all"]) and len(diff["known"]) == 3
    assert np.isnan(diff["empty"]).all()


def test_lpips_full_module_state_dict(tmp_path):
    lin, backbone = _alex_weights(tmp_path)
    sd = torch.load(lin)
    # lpips.LPIPS().state_dict() names the backbone by slice: slice1 = features[0:2], slice2 = [2:5], …
    ends = F.LPIPS_NETS["alex"][1]
    for k, v in torch.load(backbone).items():
        if k.startswith("features."):
            idx = int(k.split(".")[1])
            s = next(i for i, e in enumerate(ends) if idx < e) + 1
            sd[f"net.slice{s}.{idx}.{k.split('.')[2]}"] = v
    one = tmp_path / "one"
    one.mkdir()
    torch.save(sd, one / "lpips_full.pth")
    a, b = _frames(seed=1), _frames(seed=2)
    assert F.lpips_frames(F.load_lpips(one / "lpips_full.pth"), a, b)["all"] == \
        pytest.approx(F.lpips_frames(F.load_lpips(tmp_path), a, b)["all"])


def test_lpips_errors_say_what_is_missing(tmp_path):
    lin, backbone = _alex_weights(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "alex.pth").write_bytes(lin.read_bytes())
    with pytest.raises(Ex4dError, match="alexnet-owt-7be5be79.pth"):
        F.load_lpips(alone / "alex.pth")
    with pytest.raises(Ex4dError, match="lin0..lin4"):
        F.load_lpips(backbone, backbone)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Ex4dError, match="not a readable weights file"):
        F.load_lpips(tmp_path / "junk.pth")
    with pytest.raises(Ex4dError, match="not found"):
        F.load_lpips(tmp_path / "missing.pth")


class _Inception(torch.nn.Module):
    """Stands in for the StyleGAN2-ADA TorchScript Inception: same call signature, tiny features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, 0].mean((1, 2))], 1) / 255.0


class _I3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2, 3, 4))
        return torch.stack([x.mean((1, 2, 3, 4)), x.std((1, 2, 3, 4)), motion], 1)


def test_fid_and_fvd_with_torchscript_detectors(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Inception()).save(str(tmp_path / "inception.pt"))
        torch.jit.script(_I3D()).save(str(tmp_path / "i3d.pt"))
    inc = F.load_detector(tmp_path / "inception.pt", "inception")
    i3d = F.load_detector(tmp_path / "i3d.pt", "i3d")
    a, b = _frames(T=20, seed=3), _frames(T=20, seed=4)
    b = (b * 0.5).astype(np.uint8)
    assert F.fid(inc, a, a) == pytest.approx(0.0, abs=1e-9)
    assert F.fid(inc, a, b) > 1e-3
    assert F.i3d_features(i3d, a).shape == (2, 3)          # clips 0–15 and 4–19
    assert F.fvd(i3d, a, a) == pytest.approx(0.0, abs=1e-9)
    assert F.fvd(i3d, a, b) > 1e-3
    with pytest.raises(Ex4dError, match="at least 20 frames"):
        F.fvd(i3d, a[:10], b[:10])


def test_detector_format_errors(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "pt_inception.pth")
    with pytest.raises(Ex4dError, match="not a TorchScript model.*torchvision"):
        F.load_detector(tmp_path / "pt_inception.pth", "inception")
    with pytest.raises(Ex4dError, match="i3d_torchscript.pt"):
        F.load_detector(tmp_path / "none.pt", "i3d")


def test_frechet_distance_of_known_gaussians():
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)²
    assert F.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(4.0 + 1.0)
    # diagonal covariances: sum over dimensions
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert F.frechet_distance(np.zeros(3), s1, np.ones(3), s2) == pytest.approx(3 + (1 + 0 + 4))
    feats = np.random.default_rng(0).standard_normal((50, 4))
    mu, sigma = F.feature_stats(feats)
    assert F.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_evaluate_video_with_lpips_weights(tmp_path):
    from ex4d.eval import EvalConfig, evaluate_video

    _alex_weights(tmp_path)
    ref = _frames(T=3, seed=5)
    pred = ref.copy()
    mask = np.zeros(ref.shape[:3], bool)
    mask[:, :, :24] = True
    pred[~mask] = 0
    rep = evaluate_video(pred, ref, mask, config=EvalConfig(lpips_weights=str(tmp_path)))
    assert rep["lpips_net"] == "alex" and "lpips" not in rep["skipped"]
    assert 0 <= rep["lpips"]["known"] < rep["lpips"]["generated"] and len(rep["per_frame"]["lpips_all"]) == 3
