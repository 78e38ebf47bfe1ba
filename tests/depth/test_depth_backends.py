"""Depth backends on tiny random models saved in the real folder layouts (no downloads)."""

import argparse
import json
import os

import numpy as np
import pytest

from ex4d.depth import DEPTH_MODELS, DepthResult, depth_params, estimate_depth, load_depth_model
from ex4d.errors import Ex4dError

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Stable Video Diffusion img2vid-xt's scheduler_config.json (values as released).
SVD_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": False, "set_alpha_to_one": False,
    "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None, "use_karras_sigmas": True,
}


def build_tiny_depthcrafter(root):
    """DIR/unet (DepthCrafter UNet) + DIR/svd/{vae (fp16 variant only), image_encoder, scheduler, feature_extractor}."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 32), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
        layers_per_block=1, cross_attention_dim=16, num_attention_heads=(2, 2), num_frames=4,
    ).save_pretrained(root / "unet")
    # DepthCrafter's released config names its own subclass; diffusers' class must still load it.
    cfg_path = root / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = "DiffusersUNetSpatioTemporalConditionModelDepthCrafter"
    cfg_path.write_text(json.dumps(cfg))
    AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                 latent_channels=4, layers_per_block=1).save_pretrained(root / "svd" / "vae",
                                                                                        variant="fp16")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, projection_dim=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=32, patch_size=16)).save_pretrained(root / "svd" / "image_encoder")
    (root / "svd" / "scheduler").mkdir(parents=True)
    (root / "svd" / "scheduler" / "scheduler_config.json").write_text(json.dumps(SVD_SCHEDULER))
    (root / "svd" / "feature_extractor").mkdir(parents=True)
    (root / "svd" / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return root


def build_tiny_depth_anything(root, metric=False):
    """A transformers Depth Anything checkpoint folder (config, weights, DPT image processor)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=28,
                            patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
                                 fusion_hidden_size=8, head_hidden_size=8, patch_size=14,
                                 depth_estimation_type="metric" if metric else "relative", max_depth=20)
    DepthAnythingForDepthEstimation(config).save_pretrained(root)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                      do_pad=False, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def weights(tiny_depth_weights):
    return tiny_depth_weights  # built once per session (conftest.py)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:44]
    base = np.stack([xx * 5, yy * 8, (xx + yy) * 3], axis=-1)
    return np.stack([np.clip(base + t * 3 + rng.integers(0, 20, base.shape), 0, 255) for t in range(6)]).astype(np.uint8)


def _check_result(res, frames):
    assert isinstance(res, DepthResult)
    assert res.depth.shape == frames.shape[:3] and res.depth.dtype == np.float32
    assert np.isfinite(res.depth).all() and (res.depth > 0).all()
    assert res.K is None
    assert json.loads(json.dumps(res.params)) == res.params


# --------------------------------------------------------------------------- DepthCrafter


def test_depthcrafter_windows_shapes_and_params(weights, frames):
    # 6 frames, window 4, overlap 2: two windows stitched in latent space
    res = estimate_depth(frames, "depthcrafter", weights["depthcrafter"], device="cpu", progress=False,
                         window_size=4, overlap=2, num_inference_steps=2, max_res=16)
    _check_result(res, frames)
    p = res.params
    assert p["model"] == "depthcrafter" and p["dtype"] == "float32"
    assert p["weights"].endswith("unet") and p["svd_weights"].endswith("svd") and len(p["weights_id"]) == 16
    assert p["options"]["window_size"] == 4 and p["options"]["guidance_scale"] == 1.0
    # the cache key can be known without loading the model
    assert depth_params("depthcrafter", weights["depthcrafter"], device="cpu", window_size=4, overlap=2,
                        num_inference_steps=2, max_res=16) == p
    other = depth_params("depthcrafter", weights["depthcrafter"], device="cpu", window_size=5, overlap=2)
    assert other["options"] != p["options"]
    # normalised disparity ≤ 1: nothing nearer than the original's 10000 / 3900 (upsampling may not reach it)
    assert 10000 / 3900 * (1 - 1e-5) <= res.depth.min() < 2 * 10000 / 3900


def test_depthcrafter_is_deterministic_and_guidance_runs(weights, frames):
    from ex4d.depth.depthcrafter import DepthCrafter, DepthCrafterOptions

    model = DepthCrafter.load(weights["depthcrafter"], device="cpu")
    assert model.size_multiple == 4  # tiny VAE (×2) and UNet (×2); the real ones give 64
    o = DepthCrafterOptions(num_inference_steps=1, max_res=16, guidance_scale=1.0)
    a = model.disparity(frames[:3], o, progress=False)
    b = model.disparity(frames[:3], o, progress=False)
    assert a.shape == (3, 12, 16) and a.min() == 0 and a.max() == 1   # 44x30 → 16x12 (multiples of 4)
    np.testing.assert_array_equal(a, b)
    g = model.disparity(frames[:3], DepthCrafterOptions(num_inference_steps=1, max_res=16, guidance_scale=2.0),
                        progress=False)
    assert g.shape == a.shape and not np.allclose(g, a)


def test_per_frame_conditioning_matches_diffusers_when_frames_share_an_embedding(weights):
    from diffusers import UNetSpatioTemporalConditionModel

    from ex4d.depth.depthcrafter import per_frame_conditioning

    unet = UNetSpatioTemporalConditionModel.from_pretrained(str(weights["depthcrafter"] / "unet")).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 4, 4)
    ids = torch.tensor([[7.0, 127.0, 0.02]])
    e = torch.randn(1, 1, 16)
    with torch.no_grad():
        plain = unet(x, 10.0, encoder_hidden_states=e, added_time_ids=ids).sample
        with per_frame_conditioning(unet, e.repeat(3, 1, 1)):
            same = unet(x, 10.0, encoder_hidden_states=torch.zeros_like(e), added_time_ids=ids).sample
        with per_frame_conditioning(unet, torch.randn(3, 1, 16)):
            other = unet(x, 10.0, encoder_hidden_states=e, added_time_ids=ids).sample
        after = unet(x, 10.0, encoder_hidden_states=e, added_time_ids=ids).sample  # hooks removed
    torch.testing.assert_close(same, plain)
    assert not torch.allclose(other, plain)
    torch.testing.assert_close(after, plain)


def test_depthcrafter_accepts_the_download_as_dir_with_separate_svd(weights, frames):
    res = estimate_depth(frames[:2], "depthcrafter", weights["depthcrafter"] / "unet", device="cpu", progress=False,
                         svd_weights=weights["depthcrafter"] / "svd", num_inference_steps=1, max_res=16)
    _check_result(res, frames[:2])


# --------------------------------------------------------------------------- Depth Anything V2


def test_depth_anything_relative(weights, frames):
    res = estimate_depth(frames, "depth-anything-v2", weights["relative"], device="cpu", progress=False,
                         batch_size=4, smooth=1.0)
    _check_result(res, frames)
    assert res.params["metric"] is False and res.params["options"]["smooth"] == 1.0
    assert depth_params("depth-anything-v2", weights["relative"], device="cpu", batch_size=4, smooth=1.0) == res.params
    assert depth_params("depth-anything-v2", weights["metric"], device="cpu")["metric"] is True
    assert 10000 / 3900 * (1 - 1e-5) <= res.depth.min() < 2 * 10000 / 3900   # disparity normalised by its maximum


def test_depth_anything_metric_stays_metric_in_frame_0(weights, frames):
    from ex4d.depth.depth_anything import DepthAnythingV2

    model = DepthAnythingV2.load(weights["metric"], device="cpu")
    assert model.metric
    res = model.estimate(frames, progress=False, input_size=42)
    _check_result(res, frames)
    assert res.params["metric"] is True and res.params["options"]["input_size"] == 42
    raw = model.predict(frames[:1], progress=False)
    assert raw.shape[0] == 1 and 0 < raw.min() and raw.max() < 20    # sigmoid · max_depth
    res0 = model.estimate(frames[:1], progress=False)
    assert np.median(res0.depth) == pytest.approx(float(np.median(raw)), rel=0.1)


# --------------------------------------------------------------------------- errors


def test_unknown_model_and_video_depth_anything():
    f = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(Ex4dError, match="unknown depth model"):
        estimate_depth(f, "midas", "/nowhere")
    with pytest.raises(Ex4dError, match="--depth out.npz") as e:
        estimate_depth(f, "video-depth-anything", "/nowhere")
    assert "depth-anything-v2" in str(e.value)
    assert set(DEPTH_MODELS) == {"depthcrafter", "depth-anything-v2", "video-depth-anything"}


def test_unknown_option_is_named(weights, frames):
    with pytest.raises(Ex4dError, match="num_steps"):
        estimate_depth(frames, "depthcrafter", weights["depthcrafter"], num_steps=3)
    with pytest.raises(Ex4dError, match="svd_weights"):
        load_depth_model("depth-anything-v2", weights["relative"], svd_weights="/x")


def test_missing_weights_name_the_layout_and_source(tmp_path, weights):
    f = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(Ex4dError, match="huggingface.co/tencent/DepthCrafter"):
        estimate_depth(f, "depthcrafter", tmp_path / "missing")
    (tmp_path / "dc" / "unet").mkdir(parents=True)
    (tmp_path / "dc" / "unet" / "config.json").write_text("{}")
    with pytest.raises(Ex4dError, match=r"missing weights in .*unet"):
        estimate_depth(f, "depthcrafter", tmp_path / "dc")
    (tmp_path / "dc" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 2048)
    with pytest.raises(Ex4dError, match="stable-video-diffusion-img2vid-xt"):
        estimate_depth(f, "depthcrafter", tmp_path / "dc")
    (tmp_path / "dc" / "svd" / "vae").mkdir(parents=True)
    with pytest.raises(Ex4dError, match=r"missing .*vae.*config.json"):
        estimate_depth(f, "depthcrafter", tmp_path / "dc")
    with pytest.raises(Ex4dError, match="Depth-Anything-V2-Small-hf"):
        estimate_depth(f, "depth-anything-v2", tmp_path / "missing")


def test_depth_anything_folder_problems(tmp_path, weights):
    f = np.zeros((2, 8, 8, 3), np.uint8)
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "depth_anything_v2_vits.pth").write_bytes(b"0")
    with pytest.raises(Ex4dError, match="original checkpoints"):
        estimate_depth(f, "depth-anything-v2", tmp_path / "orig")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        (partial / name).write_bytes((weights["relative"] / name).read_bytes())
    with pytest.raises(Ex4dError, match="preprocessor_config.json"):
        estimate_depth(f, "depth-anything-v2", partial)
    (partial / "preprocessor_config.json").write_text("{}")
    (partial / "config.json").write_text(json.dumps({"model_type": "dpt"}))
    with pytest.raises(Ex4dError, match="not Depth Anything"):
        estimate_depth(f, "depth-anything-v2", partial)
    lfs = tmp_path / "lfs"
    lfs.mkdir()
    (lfs / "config.json").write_text(json.dumps({"model_type": "depth_anything"}))
    (lfs / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(Ex4dError, match="Git LFS pointer"):
        estimate_depth(f, "depth-anything-v2", lfs)


def test_bad_frames_and_device(weights):
    with pytest.raises(Ex4dError, match="uint8"):
        estimate_depth(np.zeros((2, 8, 8, 3), np.float32), "depth-anything-v2", weights["relative"])
    with pytest.raises(Ex4dError, match=r"\[T, H, W, 3\]"):
        estimate_depth(np.zeros((8, 8, 3), np.uint8), "depth-anything-v2", weights["relative"])
    if not torch.cuda.is_available():
        with pytest.raises(Ex4dError, match="no CUDA GPU"):
            estimate_depth(np.zeros((2, 8, 8, 3), np.uint8), "depth-anything-v2", weights["relative"], device="cuda")


# --------------------------------------------------------------------------- CLI


def _parser():
    from ex4d.depth.cli import register

    parser = argparse.ArgumentParser(prog="ex4d")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_a_loadable_npz(tmp_path, weights, frames, capsys):
    from ex4d.io.depth import default_depth_kind, load_depth
    from ex4d.io.video import write_video

    video = tmp_path / "in.mp4"
    write_video(video, frames, fps=12)
    out = tmp_path / "out" / "depth.npz"
    args = _parser().parse_args(["depth", str(video), "--depth-model", "depth-anything-v2", "--depth-weights",
                                 str(weights["relative"]), "--out", str(out), "--num-frames", "0", "--stride", "2",
                                 "--device", "cpu", "--quiet", "--depth-align", "affine"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert default_depth_kind(out) == "depth"
    depth = load_depth(out)
    assert depth.shape == (3, 32, 48) and (depth > 0).all()   # read_video: sides rounded to multiples of 16
    with np.load(out) as data:
        np.testing.assert_array_equal(data["indices"], [0, 2, 4])
        params = json.loads(str(data["params"]))
    assert params["model"] == "depth-anything-v2" and params["options"]["align"] == "affine"
    assert not [p for p in out.parent.iterdir() if p.name != "depth.npz"]   # atomic: no temporary left


def test_cli_rejects_flags_of_another_model(tmp_path, weights):
    parser = _parser()
    args = parser.parse_args(["depth", "in.mp4", "--depth-model", "depth-anything-v2", "--depth-weights",
                              str(weights["relative"]), "--out", str(tmp_path / "d.npz"), "--depth-steps", "3"])
    with pytest.raises(Ex4dError, match="--depth-steps applies to --depth-model depthcrafter"):
        args.func(args)
    args = parser.parse_args(["depth", "in.mp4", "--depth-model", "depthcrafter", "--out", str(tmp_path / "d.npz")])
    with pytest.raises(Ex4dError, match="needs --depth-weights"):
        args.func(args)
    args = parser.parse_args(["depth", "in.mp4", "--depth-weights", "x", "--out", str(tmp_path / "d.png")])
    with pytest.raises(Ex4dError, match=r"\.npz"):
        args.func(args)


@pytest.mark.parametrize("model, dtype", [("depthcrafter", "float16"), ("depth-anything-v2", "bfloat16")])
def test_half_precision_paths(weights, frames, model, dtype):
    """The GPU dtypes (fp16 with the VAE upcast for encoding, bf16) run end to end (here on CPU)."""
    folder = weights["depthcrafter"] if model == "depthcrafter" else weights["relative"]
    opts = dict(num_inference_steps=1, max_res=16) if model == "depthcrafter" else {}
    res = estimate_depth(frames[:2], model, folder, device="cpu", progress=False, dtype=dtype, **opts)
    _check_result(res, frames[:2])
    assert res.params["dtype"] == dtype


def test_run_with_a_depth_model_caches_its_depth(weights, tmp_path, capsys):
    """`ex4d run --depth-model`: depth estimated once, reused when only the camera path changes."""
    from ex4d.cli import main

    assert main(["example", "--out", str(tmp_path / "ex"), "--num-frames", "5", "--size", "64"]) == 0
    base = ["recon", str(tmp_path / "ex" / "input.mp4"), "--num-frames", "5", "--depth-model", "depth-anything-v2",
            "--depth-weights", str(weights["relative"]), "-q", "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert (tmp_path / "o" / ".ex4d" / "depth" / "meta.json").exists()
    capsys.readouterr()
    assert main(base + ["--trajectory", "ex4d-30", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "reused depth" in out and "render" not in out.split("reused")[1]
