"""DepthCrafter (Hu et al. 2024): video depth from a video-diffusion UNet, the EX-4D original's depth model.

Components: DepthCrafter's UNet is diffusers' ``UNetSpatioTemporalConditionModel``
with DepthCrafter's weights; the VAE (``AutoencoderKLTemporalDecoder``), CLIP
image encoder and Euler scheduler come from Stable Video Diffusion img2vid(-xt).
See :mod:`ex4d.depth.weights` for the folder layout.

The one difference from diffusers' forward: SVD conditions every frame on the
CLIP embedding of the *first* image (``encoder_hidden_states`` [B, 1, C],
repeated over frames), DepthCrafter conditions frame f on the embedding of
frame f ([B, F, C] → [B·F, 1, C]). :func:`per_frame_conditioning` gives the
UNet's cross-attention blocks the per-frame embeddings through forward
pre-hooks, so diffusers' own forward runs unchanged.

Inference as DepthCrafter's pipeline does it (its defaults in EX-4D: 5 steps,
guidance 1.0, window 110, overlap 25):

1. frames → [-1, 1] at sides that are multiples of 64, longer side about ``max_res``
   at most (:func:`processing_size`);
2. per-frame CLIP image embeddings (frames resized to 224², CLIP-normalised);
3. VAE latents (distribution mode, *not* scaled) of the frames with
   ``noise_aug_strength``·N(0, 1) added;
4. added time ids ``(fps_id, motion_bucket_id, noise_aug_strength)`` = (7, 127, 0.02);
5. windows (:mod:`ex4d.depth.windows`): noise · ``init_noise_sigma`` for
   ``window`` frames, re-used across windows (the next window's noise is the
   last ``overlap`` frames' followed by the first ``stride`` frames'); each
   window after the first starts its overlap from the stitched latents plus
   noise at ``sigmas[0]``; Euler steps with the UNet on
   ``[noisy latents, frame latents]`` (8 channels); classifier-free guidance
   (zeroed latents and embeddings) only when ``guidance_scale > 1``; windows
   blended linearly over the overlap, in latent space;
6. decode ``latents / scaling_factor`` in chunks of 8 frames, map to [0, 1],
   average the 3 channels, min–max normalise over the whole clip: DepthCrafter's
   normalised disparity (1 = nearest), turned into depth by
   :func:`ex4d.io.depth.to_depth` with kind ``"depthcrafter"`` (the original
   EX-4D mapping).

Random numbers come from one ``torch.Generator`` seeded with ``seed`` on the
compute device, drawn in the same order as DepthCrafter (augmentation noise,
then latent noise) but chunk by chunk, so results are not bitwise identical
to the reference implementation's.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import Ex4dError, check
from .common import DepthResult, check_frames, place_module, require, resolve_device, resolve_dtype, values_to_depth
from .weights import resolve_depthcrafter_weights, weights_fingerprint, weights_variant
from .windows import run_windows, window_spans

__all__ = ["DepthCrafterOptions", "DepthCrafter", "processing_size", "per_frame_conditioning", "depthcrafter_source",
           "depthcrafter_params"]

_FEATURE = "the DepthCrafter depth backend"
#: OpenAI CLIP normalisation, used when the SVD folder has no feature_extractor/ config.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_VERSION = 1


@dataclass(frozen=True)
class DepthCrafterOptions:
    """DepthCrafter inference settings (defaults: the EX-4D original's)."""

    num_inference_steps: int = 5      #: Euler steps per window
    guidance_scale: float = 1.0       #: > 1 runs classifier-free guidance (2 UNet passes per step)
    window_size: int = 110            #: frames per window
    overlap: int = 25                 #: frames shared by consecutive windows
    max_res: int = 1024               #: longer side of the processing size (sides are multiples of 64)
    noise_aug_strength: float = 0.02  #: noise added to the frames before VAE encoding
    fps_id: int = 7                   #: SVD "fps" conditioning id
    motion_bucket_id: int = 127       #: SVD motion conditioning id
    seed: int = 42                    #: seed of the noise
    chunk_size: int = 8               #: frames per encoder / decoder call (the temporal decoder sees one chunk)

    def __post_init__(self):
        for f in ("num_inference_steps", "window_size", "max_res", "chunk_size"):
            v = getattr(self, f)
            check(isinstance(v, (int, np.integer)) and v >= 1, f"DepthCrafter option {f} must be an integer >= 1, got {v!r}")
        check(isinstance(self.overlap, (int, np.integer)) and 0 <= self.overlap < self.window_size,
              f"DepthCrafter overlap must be an integer in [0, window_size) = [0, {self.window_size}), got {self.overlap!r}")
        check(self.guidance_scale >= 1.0 and math.isfinite(self.guidance_scale),
              f"DepthCrafter guidance_scale must be >= 1, got {self.guidance_scale!r}")
        check(0 <= self.noise_aug_strength < 1, f"noise_aug_strength must be in [0, 1), got {self.noise_aug_strength!r}")
        check(isinstance(self.seed, (int, np.integer)), f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_kwargs(cls, **options) -> "DepthCrafterOptions":
        """Options from keyword arguments; Ex4dError naming unknown ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        check(not unknown, f"unknown DepthCrafter option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**options)


def depthcrafter_source(unet_dir: Path, svd_dir: Path) -> dict:
    """The weights part of :meth:`DepthCrafter.params`: resolved folders and a fingerprint of the files used."""
    used = [unet_dir, svd_dir / "vae", svd_dir / "image_encoder", svd_dir / "scheduler", svd_dir / "feature_extractor"]
    return {"weights": str(unet_dir.resolve()), "svd_weights": str(svd_dir.resolve()),
            "weights_id": weights_fingerprint(*[p for p in used if p.is_dir()])}


def depthcrafter_params(source: dict, dtype: str, options: DepthCrafterOptions) -> dict:
    """JSON-able dict of everything that determines a DepthCrafter result."""
    return {"model": DepthCrafter.name, **source, "dtype": dtype, "options": asdict(options), "version": _VERSION}


@contextlib.contextmanager
def per_frame_conditioning(unet, embeddings):
    """Within the block, ``unet``'s cross-attention blocks attend to ``embeddings`` [B·F, 1, C] (one per frame).

    Diffusers' ``UNetSpatioTemporalConditionModel.forward`` repeats one
    embedding per video over its frames; DepthCrafter needs frame f to see its
    own. Forward pre-hooks on the blocks that take ``encoder_hidden_states``
    replace that argument; they are removed on exit.
    """
    calls = []

    def hook(module, args, kwargs):
        if "encoder_hidden_states" not in kwargs:
            raise RuntimeError("diffusers' UNet no longer passes encoder_hidden_states by keyword; "
                               "ex4d's DepthCrafter conditioning needs updating")
        calls.append(module)
        return args, {**kwargs, "encoder_hidden_states": embeddings}

    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in blocks
               if getattr(b, "has_cross_attention", False)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
    if handles and not calls:
        raise RuntimeError("DepthCrafter per-frame conditioning hooks were never called")


def processing_size(width: int, height: int, max_res: int = 1024, multiple: int = 64) -> tuple[int, int]:
    """(W, H) DepthCrafter runs frames of size ``width``×``height`` at (its own rule).

    Each side rounded to the nearest multiple of ``multiple`` (Python's
    ``round``); if the longer one then exceeds ``max_res``, the frames are
    first scaled by ``max_res / max(width, height)`` and rounded again. Sides
    are at least ``multiple``. E.g. 1920×1080 → 1024×576, 500×300 → 512×320,
    512×512 → 512×512.
    """
    w, h = round(width / multiple) * multiple, round(height / multiple) * multiple
    if max(w, h) > max_res:
        scale = max_res / max(width, height)
        w, h = round(width * scale / multiple) * multiple, round(height * scale / multiple) * multiple
    return max(w, multiple), max(h, multiple)


def _resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """[T, height, width, 3] uint8 (area when shrinking, bilinear otherwise)."""
    if frames.shape[1:3] == (height, width):
        return frames
    import cv2

    interp = cv2.INTER_AREA if width <= frames.shape[2] and height <= frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def _clip_resize(x, size: int):
    """[N, 3, size, size] of ``x`` [N, 3, H, W] with antialiasing, as SVD prepares CLIP input."""
    torch = require("torch", _FEATURE)
    try:  # diffusers' own antialiased resize, the one DepthCrafter uses
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )
        return _resize_with_antialiasing(x, (size, size))
    except ImportError:  # pragma: no cover - older/newer diffusers layouts
        return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=True,
                                               antialias=True)


def _check_range(lo: float, hi: float) -> None:
    if not hi > lo:
        raise Ex4dError("DepthCrafter produced a constant disparity for the whole clip; the weights are "
                        "probably wrong or corrupt")


class DepthCrafter:
    """DepthCrafter's models on one device; :meth:`estimate` runs a clip.

    Build with :meth:`load` (weights folders) or directly from diffusers /
    transformers modules (benchmarks, tests).
    """

    name = "depthcrafter"

    def __init__(self, unet, vae, image_encoder, scheduler, device: str, dtype: str,
                 image_mean=_CLIP_MEAN, image_std=_CLIP_STD, source: dict | None = None):
        torch = require("torch", _FEATURE)
        self.torch_dtype = getattr(torch, dtype)
        self.device, self.dtype = device, dtype
        self.unet = place_module(unet, device, dtype)
        self.vae = place_module(vae, device, dtype)
        self.image_encoder = place_module(image_encoder, device, dtype)
        self.scheduler_config = dict(scheduler.config)
        self.scheduler_class = type(scheduler)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.source = dict(source or {})
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        #: processing sizes must be multiples of this: the VAE's factor times the UNet's downsampling
        self.size_multiple = self.vae_scale * 2 ** (len(self.unet.down_blocks) - 1)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, weights, svd_weights=None, device: str | None = None, dtype: str | None = None) -> "DepthCrafter":
        """Models from ``weights`` (and ``svd_weights``), layout in :mod:`ex4d.depth.weights`."""
        unet_dir, svd_dir = resolve_depthcrafter_weights(weights, svd_weights)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        torch = require("torch", _FEATURE)
        diffusers = require("diffusers", _FEATURE)
        transformers = require("transformers", _FEATURE)
        torch_dtype = getattr(torch, dtype)

        def load(what, fn, folder, library, **kw):
            try:
                return fn(str(folder), local_files_only=True, variant=weights_variant(folder, library), **kw)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise Ex4dError(f"cannot load the {what} from {folder}: {e}") from None

        unet = load("DepthCrafter UNet", diffusers.UNetSpatioTemporalConditionModel.from_pretrained, unet_dir,
                    "diffusers", torch_dtype=torch_dtype)
        vae = load("SVD VAE", diffusers.AutoencoderKLTemporalDecoder.from_pretrained, svd_dir / "vae", "diffusers",
                   torch_dtype=torch_dtype)
        encoder = load("SVD image encoder", transformers.CLIPVisionModelWithProjection.from_pretrained,
                       svd_dir / "image_encoder", "transformers", dtype=torch_dtype)
        try:
            scheduler = diffusers.EulerDiscreteScheduler.from_pretrained(str(svd_dir / "scheduler"), local_files_only=True)
        except (OSError, ValueError) as e:
            raise Ex4dError(f"cannot load the SVD scheduler from {svd_dir / 'scheduler'}: {e}") from None
        mean, std = _CLIP_MEAN, _CLIP_STD
        fe = svd_dir / "feature_extractor" / "preprocessor_config.json"
        if fe.is_file():
            from ..io.json_input import expect, float_array, read_json

            cfg = expect(read_json(fe, "SVD feature extractor config"), dict, str(fe))
            mean = float_array(cfg.get("image_mean", mean), f"{fe}: 'image_mean'", (3,)).tolist()
            std = float_array(cfg.get("image_std", std), f"{fe}: 'image_std'", (3,)).tolist()
        return cls(unet, vae, encoder, scheduler, device, dtype, mean, std, depthcrafter_source(unet_dir, svd_dir))

    def params(self, options: DepthCrafterOptions) -> dict:
        """JSON-able description of everything that determines the result (for caching)."""
        return depthcrafter_params(self.source, self.dtype, options)

    # ------------------------------------------------------------------ inference steps

    def _to_device(self, frames: np.ndarray):
        """[n, 3, H, W] ``self.dtype`` in [-1, 1] on the device from [n, H, W, 3] uint8."""
        torch = require("torch", _FEATURE)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        return (x.to(self.torch_dtype) / 127.5 - 1.0)

    def _embed(self, x):
        """[n, C] CLIP image embeddings of frames ``x`` [n, 3, H, W] in [-1, 1]."""
        torch = require("torch", _FEATURE)
        size = int(self.image_encoder.config.image_size)
        x = (_clip_resize(x.float(), size) + 1.0) / 2.0
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        return self.image_encoder(((x - mean) / std).to(self.torch_dtype)).image_embeds

    def _encode(self, x, generator, strength: float):
        """[n, 4, h, w] unscaled VAE latents (distribution mode) of ``x`` [n, 3, H, W] plus augmentation noise."""
        torch = require("torch", _FEATURE)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + strength * noise
        upcast = self.torch_dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False))
        if upcast:
            self.vae.to(torch.float32)
            x = x.float()
        try:
            return self.vae.encode(x).latent_dist.mode().to(self.torch_dtype)
        finally:
            if upcast:
                self.vae.to(self.torch_dtype)

    def _decode(self, latents, chunk: int):
        """[T, h, w] float32 CPU tensor in [0, 1]: decoded frames, 3 channels averaged."""
        torch = require("torch", _FEATURE)
        out = []
        for i in range(0, latents.shape[0], chunk):
            z = latents[i:i + chunk] / self.vae.config.scaling_factor
            img = self.vae.decode(z, num_frames=z.shape[0]).sample.float()
            out.append(((img / 2 + 0.5).clamp(0, 1)).mean(dim=1).cpu())
        return torch.cat(out)

    def disparity(self, frames: np.ndarray, options: DepthCrafterOptions | None = None,
                  progress: bool = True) -> np.ndarray:
        """DepthCrafter's normalised disparity [T, h, w] float32 in [0, 1] (1 = nearest) at the processing size.

        ``frames`` [T, H, W, 3] uint8 RGB; the processing size is
        :func:`processing_size` with multiples of :attr:`size_multiple` (64).
        """
        torch = require("torch", _FEATURE)
        o = options or DepthCrafterOptions()
        frames = check_frames(frames)
        latents = self._latents(frames, o, progress)
        with torch.inference_mode():
            values = self._decode(latents, o.chunk_size).double()
        lo, hi = float(values.min()), float(values.max())
        _check_range(lo, hi)
        return ((values - lo) / (hi - lo)).float().numpy()

    def _latents(self, frames, o: DepthCrafterOptions, progress: bool):
        """The denoised latents [T, 4, h, w] of ``frames`` ([T, H, W, 3] uint8 array-like, read a chunk at a time)."""
        torch = require("torch", _FEATURE)
        from tqdm.auto import tqdm

        T, H, W = len(frames), int(frames.shape[1]), int(frames.shape[2])
        check(o.max_res >= self.size_multiple, f"DepthCrafter max_res must be >= {self.size_multiple}, got {o.max_res}")
        mw, mh = processing_size(W, H, o.max_res, self.size_multiple)
        gen = torch.Generator(device=self.device).manual_seed(int(o.seed))

        with torch.inference_mode():
            embeds, cond = [], []
            for i in range(0, T, o.chunk_size):
                x = self._to_device(_resize_frames(check_frames(np.asarray(frames[i:i + o.chunk_size])), mw, mh))
                embeds.append(self._embed(x))
                cond.append(self._encode(x, gen, o.noise_aug_strength))
            embeds = torch.cat(embeds)                     # [T, C]
            cond = torch.cat(cond)                         # [T, 4, h, w]
            time_ids = torch.tensor([[o.fps_id, o.motion_bucket_id, o.noise_aug_strength]],
                                    device=self.device, dtype=self.torch_dtype)

            scheduler = self.scheduler_class.from_config(self.scheduler_config)
            scheduler.set_timesteps(o.num_inference_steps, device=self.device)
            window = min(o.window_size, T)
            multi = T > o.window_size
            overlap = o.overlap if multi else 0
            stride = window - overlap
            channels = self.unet.config.in_channels // 2
            noise = torch.randn((window, channels, mh // self.vae_scale, mw // self.vae_scale), generator=gen,
                                device=self.device, dtype=self.torch_dtype) * scheduler.init_noise_sigma
            state = {"noise": noise}
            steps = len(scheduler.timesteps)
            bar = tqdm(total=len(window_spans(T, o.window_size, o.overlap)) * steps, desc="DepthCrafter",
                       disable=not progress, leave=False)

            def denoise(start: int, end: int, tail):
                latents = state["noise"][:end - start].clone()
                if multi:  # the next window re-uses this window's noise, shifted (as DepthCrafter)
                    state["noise"] = torch.cat([state["noise"][-overlap:], state["noise"][:stride]])
                scheduler.set_timesteps(o.num_inference_steps, device=self.device)
                frame_cond = cond[start:end][None]                      # [1, n, 4, h, w]
                frame_embeds = embeds[start:end][:, None]               # [n, 1, C]
                for i, t in enumerate(scheduler.timesteps):
                    if tail is not None and i == 0:
                        latents[:overlap] = tail + latents[:overlap] / scheduler.init_noise_sigma * scheduler.sigmas[0]
                    x = scheduler.scale_model_input(latents[None], t)
                    pred = self._unet(torch.cat([x, frame_cond], dim=2), t, frame_embeds, time_ids)
                    if o.guidance_scale > 1:
                        uncond = self._unet(torch.cat([x, torch.zeros_like(x)], dim=2), t,
                                            torch.zeros_like(frame_embeds), time_ids)
                        pred = uncond + o.guidance_scale * (pred - uncond)
                    latents = scheduler.step(pred, t, latents[None]).prev_sample[0]
                    bar.update()
                return latents

            try:
                return run_windows(T, o.window_size, o.overlap, denoise)
            finally:
                bar.close()

    def estimate_chunks(self, frames, store, progress: bool = True, **options) -> dict:
        """Depth of ``frames`` ([T, H, W, 3] uint8 array-like) written into ``store`` (ChunkStore, field ``depth``).

        For clips of any length: the frames are encoded a chunk at a time and denoised in DepthCrafter's
        windows (only the latents, ~0.1 MB a frame, are held); the decoded disparity is cached beside
        ``store`` (``<name>-raw/``, removed at the end) with its range, then normalised over the whole clip and
        converted chunk by chunk. Same result as :meth:`estimate`. Returns the result's params.
        """
        torch = require("torch", _FEATURE)
        from ..io.chunks import ChunkStore

        o = DepthCrafterOptions.from_kwargs(**options)
        T, H, W = len(frames), int(frames.shape[1]), int(frames.shape[2])
        folder, spans = store.folder, store.spans
        raw_dir = folder.with_name(folder.name + "-raw")
        if not store.missing():
            return self.params(o)
        if not ChunkStore.exists(raw_dir, store.key):
            latents = self._latents(frames, o, progress)
            raw, buf, c = None, [], 0
            with torch.inference_mode():
                for i in range(0, T, o.chunk_size):
                    values = self._decode(latents[i:i + o.chunk_size], o.chunk_size).numpy()
                    if raw is None:
                        raw = ChunkStore.open(raw_dir, store.key, T, store.chunk,
                                              {"values": (values.shape[1:], np.float32)})
                    buf.extend(values)
                    while c < len(spans) and len(buf) >= spans[c][1] - spans[c][0]:
                        n = spans[c][1] - spans[c][0]
                        if not raw.has(c):
                            raw.write(c, values=np.stack(buf[:n]))
                        buf, c = buf[n:], c + 1
            del latents
        raw = ChunkStore.load(raw_dir, store.key)
        if "lo" not in raw.attrs:
            raw.set_attrs(lo=min(float(z["values"].min()) for _, _, z in raw.chunks()),
                          hi=max(float(z["values"].max()) for _, _, z in raw.chunks()))
        lo, hi = float(raw.attrs["lo"]), float(raw.attrs["hi"])
        _check_range(lo, hi)
        for c in store.missing():
            v = raw.read(c)["values"].astype(np.float64)
            store.write(c, depth=values_to_depth(((v - lo) / (hi - lo)).astype(np.float32), "depthcrafter", H, W))
        import shutil

        shutil.rmtree(raw_dir, ignore_errors=True)  # only needed to resume
        return self.params(o)

    def _unet(self, sample, t, frame_embeds, time_ids):
        """UNet noise prediction [1, n, 4, h, w] with per-frame CLIP conditioning ``frame_embeds`` [n, 1, C]."""
        torch = require("torch", _FEATURE)
        with per_frame_conditioning(self.unet, frame_embeds):
            dummy = torch.zeros((1, 1, frame_embeds.shape[-1]), device=sample.device, dtype=frame_embeds.dtype)
            return self.unet(sample, t, encoder_hidden_states=dummy, added_time_ids=time_ids, return_dict=False)[0]

    def estimate(self, frames: np.ndarray, progress: bool = True, **options) -> DepthResult:
        """:class:`DepthResult` with z-depth [T, H, W] at the frames' size (``options``: :class:`DepthCrafterOptions`)."""
        o = DepthCrafterOptions.from_kwargs(**options)
        frames = check_frames(frames)
        d = self.disparity(frames, o, progress)
        depth = values_to_depth(d, "depthcrafter", frames.shape[1], frames.shape[2])
        return DepthResult(depth=depth, K=None, params=self.params(o))

    def close(self) -> None:
        """Drop the models (and the GPU memory they hold)."""
        torch = require("torch", _FEATURE)
        self.unet = self.vae = self.image_encoder = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
