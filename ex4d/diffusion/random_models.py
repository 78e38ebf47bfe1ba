"""Random-weight Wan2.1-I2V components, tiny (CPU tests) or full size (GPU benchmarks), and writers for both layouts.

Nothing here touches the network: the tokenizer is built from a word list
with the ``tokenizers`` library. Full-size models are constructed directly
on the target device in the target dtype (``torch.device`` context +
default dtype), so a 14B DiT appears on a GPU in seconds without a CPU
initialisation pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import torch

from ._deps import require
from .adapter import ORIGINAL_TO_DIFFUSERS
from .checkpoint import AdapterSpec, AdapterWeights, canonical_lora_shapes, encoder_shapes
from .loading import WanComponents, _keep_fp32

__all__ = [
    "TRANSFORMER_14B_I2V",
    "wan_configs",
    "tiny_tokenizer",
    "build_components",
    "random_adapter",
    "save_diffusers_layout",
    "save_original_layout",
    "transformer_keys_to_original",
]

# diffusers config of Wan2.1-I2V-14B-480P's DiT (as in Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/transformer)
TRANSFORMER_14B_I2V = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
                           out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                           cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                           added_kv_proj_dim=5120, rope_max_seq_len=1024)
_TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36,
                         out_channels=16, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                         qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=24, added_kv_proj_dim=16,
                         rope_max_seq_len=64)
_WORDS = ("4k ultra hd surround motion realistic tone panoramic shot wide angle view cinematic quality bright tones "
          "overexposed static blurred details subtitles style works paintings images overall gray worst low jpeg "
          "compression residue ugly incomplete extra fingers poorly drawn hands faces deformed disfigured misshapen "
          "limbs fused still picture messy background three legs many people in the walking backwards a cat").split()


def wan_configs(size: str = "tiny") -> dict[str, dict]:
    """Constructor kwargs of the four models: ``{"transformer", "vae", "text_encoder", "image_encoder"}``."""
    if size == "full":
        return {
            "transformer": dict(TRANSFORMER_14B_I2V),
            "vae": {},  # AutoencoderKLWan defaults = the Wan2.1 VAE
            "text_encoder": dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, tie_word_embeddings=False),
            "image_encoder": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                  num_attention_heads=16, image_size=224, patch_size=14, hidden_act="gelu",
                                  layer_norm_eps=1e-5, projection_dim=1024),
        }
    if size == "tiny":
        return {
            "transformer": dict(_TINY_TRANSFORMER),
            "vae": dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                        temperal_downsample=[False, True, True]),
            "text_encoder": dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                 feed_forward_proj="gated-gelu", tie_word_embeddings=False),
            "image_encoder": dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=32, patch_size=8, projection_dim=24),
        }
    raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")


def tiny_tokenizer():
    """A word-level UMT5 stand-in tokenizer (``</s>`` appended, ``<pad>`` = 0), built offline."""
    tokenizers = require("tokenizers")
    transformers = require("transformers")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")


@contextlib.contextmanager
def _construct_on(device: torch.device, dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_components(size: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     seed: int = 0, vae_dtype: torch.dtype | None = None) -> WanComponents:
    """Random-weight :class:`WanComponents` (``size`` tiny or full), built directly on ``device`` in ``dtype``."""
    diffusers = require("diffusers")
    transformers = require("transformers")
    cfg = wan_configs(size)
    device = torch.device(device)
    torch.manual_seed(seed)
    with _construct_on(device, dtype):
        transformer = diffusers.WanTransformer3DModel(**cfg["transformer"])
        text_encoder = transformers.UMT5EncoderModel(transformers.UMT5Config(**cfg["text_encoder"]))
        image_encoder = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**cfg["image_encoder"]))
    with _construct_on(device, vae_dtype or dtype):
        vae = diffusers.AutoencoderKLWan(**cfg["vae"])
    if dtype != torch.float32:
        _keep_fp32(transformer)
    for m in (transformer, text_encoder, image_encoder, vae):
        m.eval()
    return WanComponents(transformer, vae, text_encoder, tiny_tokenizer(), image_encoder, source=f"random-{size}")


def random_adapter(spec: AdapterSpec, seed: int = 0, scale: float = 0.02, zero_output: bool = False) -> AdapterWeights:
    """Random :class:`AdapterWeights` for ``spec`` (normal(0, scale)); ``zero_output`` zeroes the patch conv and LoRA B."""
    gen = torch.Generator("cpu").manual_seed(seed)
    encoder = {k: torch.randn(s, generator=gen) * scale for k, s in encoder_shapes(spec).items()}
    lora = {k: torch.randn(s, generator=gen) * scale for k, s in canonical_lora_shapes(spec).items()}
    if zero_output:
        for k in encoder:
            if k.startswith("latent_patch_embedding"):
                encoder[k].zero_()
        for k in lora:
            if k.endswith("lora_B"):
                lora[k].zero_()
    return AdapterWeights(spec=spec, encoder=encoder, lora=lora, source=f"random-seed{seed}")


def save_diffusers_layout(components: WanComponents, folder: str | os.PathLike, threads: int = 4) -> Path:
    """Write ``components`` in Wan-AI's ``-Diffusers`` folder layout; returns the folder.

    Complete as Wan-AI's repository is: ``model_index.json`` naming every component, ``scheduler/``
    (UniPC, flow prediction, shift 3, as Wan-AI ship it) and ``image_processor/``, so diffusers'
    ``WanImageToVideoPipeline.from_pretrained(folder)`` loads it too. Components are written in
    ``threads`` parallel threads (the 14B model is ~45 GB); each file is flushed to disk.
    """
    from concurrent.futures import ThreadPoolExecutor

    diffusers = require("diffusers")
    transformers = require("transformers")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"transformer": components.transformer, "vae": components.vae, "text_encoder": components.text_encoder,
             "tokenizer": components.tokenizer, "image_encoder": components.image_encoder}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for f in [pool.submit(m.save_pretrained, folder / name) for name, m in parts.items()]:
            f.result()
    size = int(components.image_encoder.config.image_size)
    transformers.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        folder / "image_processor")
    diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                      num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    index = {"_class_name": "WanImageToVideoPipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "image_processor": ["transformers", "CLIPImageProcessor"]}
    for name, m in parts.items():
        lib = "diffusers" if type(m).__module__.startswith("diffusers") else "transformers"
        index[name] = [lib, type(m).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    for f in folder.rglob("*.safetensors"):
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    return folder


# diffusers name fragment → original Wan name fragment (inverse of diffusers' Wan conversion)
_TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".norm2.", ".norm3."),  # diffusers' norm2 is the (affine) cross-attention norm = original norm3
    ("proj_out", "head.head"),
]


def transformer_keys_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``WanTransformer3DModel`` state dict renamed to the original Wan release's key names."""
    layer_map = {f".{d}.": f".{o}." for o, d in ORIGINAL_TO_DIFFUSERS.items()}
    out = {}
    for key, value in sd.items():
        k = key
        for a, b in _TO_ORIGINAL:
            k = k.replace(a, b)
        for a, b in layer_map.items():
            k = k.replace(a, b)
        k = k.replace(".attn1.", ".self_attn.").replace(".attn2.", ".cross_attn.")
        k = re.sub(r"^scale_shift_table$", "head.modulation", k)
        k = re.sub(r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation", k)
        # attention q/k/v/o inside self/cross attention (all four targets are in ORIGINAL_TO_DIFFUSERS)
        out[k] = value
    return out


def save_original_layout(components: WanComponents, folder: str | os.PathLike, shards: int = 2) -> Path:
    """Write the DiT as original-format ``diffusion_pytorch_model-0000k-of-0000N.safetensors`` + ``config.json``
    and the VAE as ``Wan2.1_VAE.pth`` (in diffusers key names: the single-file loader accepts both)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = transformer_keys_to_original({k: v.contiguous() for k, v in components.transformer.state_dict().items()})
    keys = sorted(sd)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg = components.transformer.config
    (folder / "config.json").write_text(json.dumps({"model_type": "i2v", "num_heads": cfg.num_attention_heads,
                                                    "num_layers": cfg.num_layers, "ffn_dim": cfg.ffn_dim}))
    torch.save(components.vae.state_dict(), folder / "Wan2.1_VAE.pth")
    return folder
