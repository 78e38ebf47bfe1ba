"""Loading for generation: the Wan DiT streamed from its files straight onto its device, block by block,
with the LoRAs merged and fp8 applied on the way, while the encoders load in parallel.

What :func:`load_models` does, and why (``ex4d generate`` goes through it; :func:`~ex4d.diffusion.loading.load_wan`
stays the CPU loader for training and the Python API):

1. Checks every file, the adapter and each ``--lora`` against the model's config *before* reading weights
   (the DiT is built on PyTorch's meta device from its config.json: no memory, no time).
2. DiT thread: the weights of each block are read by :class:`~ex4d.diffusion.streaming.TensorStreamer`
   (parallel ``pread`` into page-locked buffers, copied to the GPU), then on the GPU: the EX-4D LoRA and
   every extra LoRA are merged (float32 sum, one rounding), the linear layers are quantized for
   ``--fp8-matmul`` or stored in fp8 for ``low``, and the block either stays (resident) or is copied to
   page-locked host memory (streamed in ``balanced``/``low``). The next block is read meanwhile. No
   host copy of the DiT exists in ``full`` mode, and the bf16 DiT never exists with ``--fp8-matmul``
   (peak: the fp8 DiT + two bf16 blocks).
3. Encoder thread, at the same time: VAE and CLIP (transformers/diffusers loaders, straight to their
   device), and the UMT5 text encoder only if a prompt of the run is not in the prompt cache
   (:mod:`~ex4d.diffusion.prompt_cache`); otherwise it is loaded when a new prompt first needs it.
4. With ``overlap=True`` the caller gets the encoders as soon as they are ready and the DiT as a future,
   so the prompt / image / camera encodings run while the DiT is still being read.

``timings`` (seconds, bytes) of every phase are returned for the JSON written next to each video.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import Ex4dError, check
from ._deps import require
from .checkpoint import AdapterSpec, AdapterWeights, load_adapter
from .config import GenerateConfig
from .extra_lora import LoraDeltas, LoraFile, adapter_deltas, check_deltas_fit, merge_deltas, read_lora
from .loading import (DIFFUSERS_LAYOUT, ORIGINAL_VAE_FILE, WanComponents, _check_cpu, _check_shards, _load_original_vae,
                      _need, _need_weights, _weight_files, detect_layout, original_transformer_config, resolve_device,
                      torch_dtype)
from .memory import memory_plan, resident_block_count, streamed_block_indices
from .prompt_cache import PromptStore, prompt_store_for
from .streaming import PinnedArena, TensorStreamer, index_files

__all__ = ["DitSource", "dit_source", "meta_transformer", "load_dit", "LoadedModels", "load_models",
           "keep_fp32_names", "ModelFiles", "check_model_files"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the DiT's files


@dataclass
class DitSource:
    """Where a Wan DiT's weights are: its diffusers ``config``, and model parameter name → file tensor entry."""

    folder: Path
    layout: str
    config: dict
    entries: dict  # model parameter name → streaming.TensorEntry

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())


def dit_source(wan: str | os.PathLike) -> DitSource:
    """The :class:`DitSource` of a Wan folder (diffusers or original layout), from the file headers only."""
    wan = Path(wan)
    layout = detect_layout(wan)
    if layout == "diffusers":
        folder = wan / "transformer"
        files = _need_weights(folder, "diffusion_pytorch_model", "transformer (DiT)")
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise Ex4dError(f"{folder / 'config.json'} is not readable JSON ({e})") from None
        check(isinstance(config, dict), f"{folder / 'config.json'} must hold a JSON object")
        return DitSource(folder, layout, config, index_files(files))
    files = _weight_files(wan, "diffusion_pytorch_model")
    check(files, f"missing {wan}/diffusion_pytorch_model*.safetensors; expected {DIFFUSERS_LAYOUT}")
    _check_shards(wan, wan / "diffusion_pytorch_model.safetensors.index.json", files)
    index = index_files(files)
    index = {k.removeprefix("model.diffusion_model."): v for k, v in index.items()}
    check("patch_embedding.weight" in index and "head.head.weight" in index,
          f"{wan}: the safetensors files do not hold an original-format Wan DiT (no patch_embedding.weight)")
    config = original_transformer_config({k: e.shape for k, e in index.items()}, wan / "config.json")
    from .extra_lora import original_to_diffusers_names

    renamed = original_to_diffusers_names(list(index))
    return DitSource(wan, layout, config, {renamed[k]: e for k, e in index.items() if k in renamed})


def meta_transformer(config: dict) -> nn.Module:
    """A ``WanTransformer3DModel`` of ``config`` whose parameters are on the meta device (buffers real)."""
    diffusers = require("diffusers")
    from accelerate import init_empty_weights

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with init_empty_weights(include_buffers=False):
            model = diffusers.WanTransformer3DModel.from_config(cfg)
    except (TypeError, ValueError) as e:
        raise Ex4dError(f"the DiT config does not describe a WanTransformer3DModel ({e})") from None
    return model.eval().requires_grad_(False)


def keep_fp32_names(model: nn.Module) -> Callable[[str], bool]:
    """Predicate: does diffusers keep parameter ``name`` in float32 (``_keep_in_fp32_modules``, as from_pretrained)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    return lambda name: bool(keep & set(name.split(".")))


# --------------------------------------------------------------------------- the DiT, block by block


def _to_host(block: nn.Module, arena: PinnedArena) -> None:
    """Every parameter and buffer of ``block`` copied into the (page-locked) ``arena``."""
    for mod in block.modules():
        for key, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[key] = nn.Parameter(arena.copy(p.data), requires_grad=False)
        for key, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[key] = arena.copy(b)


def _compact(block: nn.Module) -> None:
    """Give views into a group's read buffer their own storage once most of that buffer is garbage (after fp8)."""
    for mod in block.modules():
        for key, p in list(mod._parameters.items()):
            if p is not None and p.untyped_storage().nbytes() > 2 * p.nbytes:
                mod._parameters[key] = nn.Parameter(p.data.clone(), requires_grad=False)


def _block_bytes(block: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in block.parameters())


def _fp8_layers(model: nn.Module, fp8: str | None) -> dict[str, nn.Module]:
    """Block linear layers that ``fp8`` changes (name → layer): Fp8Linear candidates, or layers stored in fp8."""
    if fp8 is None:
        return {}
    from .fp8 import SKIP_PATTERNS, _fits
    from .memory import _fp8_skip_patterns

    out = {}
    skip = _fp8_skip_patterns(model) if fp8 == "storage" else SKIP_PATTERNS
    for i, block in enumerate(model.blocks):
        for name, m in block.named_modules():
            full = f"blocks.{i}.{name}"
            if fp8 == "matmul" and type(m) is nn.Linear and _fits(m) and not any(re.search(p, name) for p in skip):
                out[full] = m
            elif fp8 == "storage" and isinstance(m, nn.Linear) and not any(re.search(p, full) for p in skip):
                out[full] = m
    return out


def _swap_fp8_linears(model: nn.Module, layers: dict[str, nn.Module], dtype: torch.dtype) -> None:
    """Replace ``layers`` by meta :class:`~ex4d.diffusion.fp8.Fp8Linear` twins (built here, in the calling thread)."""
    from .fp8 import Fp8Linear

    for name, lin in layers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child,
                Fp8Linear(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta", dtype=dtype))


@torch.no_grad()
def load_dit(source: DitSource, model: nn.Module, device: torch.device, dtype: torch.dtype,
             deltas: LoraDeltas | None = None, fp8: str | None = None,
             place: Callable[[int], int | None] | None = None, arena: PinnedArena | None = None,
             threads: int = 4, timings: dict | None = None, stop: threading.Event | None = None,
             start: Callable[[Callable[[], int]], Future] | None = None) -> int | Future:
    """Fill the meta ``model`` from ``source`` on ``device``, merging ``deltas`` and applying ``fp8``; see the module.

    ``fp8``: None, ``"matmul"`` (:class:`~ex4d.diffusion.fp8.Fp8Linear`) or ``"storage"`` (fp8 weights for
    diffusers' layerwise casting, as memory ``low``). ``place(block_bytes)`` is called once block 0 is
    ready and returns how many blocks stay resident (None = all); the others are copied to ``arena``
    (indices from :func:`~ex4d.diffusion.memory.streamed_block_indices`). Returns the resident count.

    ``start``: run the reading and filling through ``start(fn)`` (e.g. in a thread) and return its
    future. Everything that builds modules happens before, in the calling thread: other threads'
    loaders (diffusers, transformers) patch ``nn.Module`` parameter registration while they build
    models, so a module made meanwhile elsewhere could land on the meta device. The filling only
    assigns tensors.
    """
    from .fp8 import fp8_rows

    timings = {} if timings is None else timings
    deltas = deltas or LoraDeltas()
    names = [n for n, _ in model.named_parameters()]  # as in the files (before any Fp8Linear swap)
    missing = [n for n in names if n not in source.entries]
    check(not missing, f"{source.folder}: the DiT files lack {len(missing)} weights of this model, e.g. {missing[:5]}; "
                       f"the files are incomplete or belong to another model")
    n_blocks = len(model.blocks)
    groups = [[n for n in names if not n.startswith("blocks.")]]
    groups += [[n for n in names if n.startswith(f"blocks.{i}.")] for i in range(n_blocks)]
    keep32 = keep_fp32_names(model)
    by_file = {source.entries[n].name: n for n in names}
    index = {source.entries[n].name: source.entries[n] for n in names}
    fp8_layers = _fp8_layers(model, fp8)
    if fp8 == "matmul":
        _swap_fp8_linears(model, fp8_layers, dtype)
    modules = dict(model.named_modules())

    def dtype_for(file_name: str) -> torch.dtype:
        return torch.float32 if keep32(by_file[file_name]) else dtype

    def assign(name: str, tensor: torch.Tensor) -> None:
        module_name, _, leaf = name.rpartition(".")
        module = modules[module_name] if module_name else model
        old = module._parameters[leaf]
        check(tuple(old.shape) == tuple(tensor.shape), f"DiT weight {name} has shape {tuple(tensor.shape)} in the "
                                                       f"files, the model config gives {tuple(old.shape)}")
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)

    def fill_block(i: int, tensors: dict[str, torch.Tensor]) -> None:
        merge_deltas(tensors, deltas.under(f"blocks.{i}."))
        for layer in [n for n in fp8_layers if n.startswith(f"blocks.{i}.")]:
            w, b = tensors.pop(layer + ".weight"), tensors.pop(layer + ".bias", None)
            if fp8 == "matmul":
                q, scale = fp8_rows(w)
                assign(layer + ".weight", q)
                assign(layer + ".weight_scale", scale.T.contiguous())
            else:
                assign(layer + ".weight", w.to(torch.float8_e4m3fn))
                b = b.to(torch.float8_e4m3fn) if b is not None else None
            if b is not None:
                assign(layer + ".bias", b)
        for name, t in tensors.items():
            assign(name, t)

    def run() -> int:
        resident, streamed = n_blocks, set()
        t_wait = t_work = 0.0
        t0 = time.perf_counter()
        with TensorStreamer(index, device, threads=threads) as streamer:
            it = streamer.groups([[source.entries[n].name for n in g] for g in groups], dtype_for)
            for gi in range(len(groups)):
                if stop is not None and stop.is_set():
                    raise Ex4dError("loading was stopped")
                t1 = time.perf_counter()
                tensors = {by_file[k]: v for k, v in next(it).items()}
                t2 = time.perf_counter()
                if gi == 0:
                    merge_deltas(tensors, deltas.outside("blocks."))
                    for name, t in tensors.items():
                        assign(name, t)
                else:
                    i = gi - 1
                    fill_block(i, tensors)
                    block = model.blocks[i]
                    if fp8:
                        _compact(block)
                    if i == 0 and place is not None:
                        r = place(_block_bytes(block))
                        resident = n_blocks if r is None else max(0, min(n_blocks, int(r)))
                        streamed = set(streamed_block_indices(n_blocks, resident))
                    if i in streamed and device.type != "cpu":
                        _to_host(block, arena or PinnedArena(pin=False))
                del tensors
                t_work += time.perf_counter() - t2
                t_wait += t2 - t1
            bytes_read = streamer.bytes_read
        for mod in modules.values():  # RoPE tables: built by __init__ on the CPU, not in the files
            for key, buf in list(mod._buffers.items()):
                if buf is not None and buf.device != device:
                    mod._buffers[key] = buf.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        left = [n for n, p in model.named_parameters() if p.is_meta]
        check(not left, f"internal: DiT weights left unloaded: {left[:5]}")
        total = time.perf_counter() - t0
        timings.update(dit_s=round(total, 3), dit_read_wait_s=round(t_wait, 3), dit_process_s=round(t_work, 3),
                       dit_bytes=int(bytes_read), dit_gb=round(bytes_read / 1e9, 3),
                       dit_gb_per_s=round(bytes_read / 1e9 / max(total, 1e-9), 2), dit_resident_blocks=resident)
        return resident

    def guarded() -> int:
        try:
            with torch.no_grad():
                return run()
        except torch.cuda.OutOfMemoryError:
            free = torch.cuda.mem_get_info(device)[0] / 1024**3 if device.type == "cuda" else 0.0
            raise Ex4dError(f"out of GPU memory while loading the DiT ({free:.1f} GiB free now); use --memory "
                            f"balanced or low (they stream the blocks that do not fit), --fp8-matmul (half the "
                            f"weight memory), or a smaller --gpu-budget") from None

    if start is None:
        return guarded()
    return start(guarded)


# --------------------------------------------------------------------------- everything


@dataclass
class LoadedModels:
    """What :func:`load_models` gives an :class:`~ex4d.diffusion.pipeline.Ex4dGenerator` (``prepared=``).

    ``components.transformer`` exists at once (config, meta or loaded weights); ``dit_ready`` is a
    future that completes when its weights are in place (None: already). ``components.text_encoder``
    is None until ``load_text_encoder()`` is called (when a prompt misses the ``prompt_store``).
    """

    components: WanComponents
    adapter: AdapterWeights | None
    resident_blocks: int | None
    dit_ready: Future | None = None
    load_text_encoder: Callable[[], Any] | None = None
    prompt_store: PromptStore | None = None
    timings: dict = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    fp8: str | None = None
    loras: list[str] = field(default_factory=list)

    def wait(self) -> None:
        """Block until the DiT is loaded (re-raising its loading error)."""
        if self.dit_ready is not None:
            t = time.perf_counter()
            self.dit_ready.result()
            self.dit_ready = None
            self.timings["dit_wait_s"] = round(time.perf_counter() - t, 3)


def _thread(fn: Callable[[], Any], name: str) -> Future:
    """Run ``fn`` in a daemon thread (Ctrl-C does not wait for it); its result or error in the future."""
    fut: Future = Future()
    n_threads = torch.get_num_threads()  # OpenMP's thread count is per thread: keep the caller's (same numbers)

    def run() -> None:
        torch.set_num_threads(n_threads)
        try:
            fut.set_result(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            fut.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


def _vae_config(wan: Path, layout: str, override: dict | None) -> dict:
    if layout == "diffusers":
        _need_weights(wan / "vae", "diffusion_pytorch_model", "VAE")
        try:
            return json.loads((wan / "vae" / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise Ex4dError(f"{wan / 'vae' / 'config.json'} is not readable JSON ({e})") from None
    _need(wan / ORIGINAL_VAE_FILE, "the Wan2.1 VAE")
    return dict(override or {})


def _check_encoders(enc: Path) -> None:
    _need_weights(enc / "text_encoder", "model", "UMT5 text encoder")
    tok = _need(enc / "tokenizer", "UMT5 tokenizer")
    check((tok / "tokenizer.json").is_file() or (tok / "spiece.model").is_file(),
          f"missing tokenizer files in {tok}: expected tokenizer.json or spiece.model")
    _need_weights(enc / "image_encoder", "model", "CLIP image encoder")


@dataclass
class ModelFiles:
    """What :func:`check_model_files` found: the layout, the encoders' folder, the DiT (meta) and the adapter dims."""

    layout: str
    encoders: Path
    source: DitSource
    transformer: nn.Module
    vae_config: dict
    spec: AdapterSpec


def check_model_files(wan: str | os.PathLike, adapter: str | os.PathLike | None = None,
                      encoders: str | os.PathLike | None = None, vae_config: dict | None = None,
                      mark: Callable[[str], None] | None = None) -> ModelFiles:
    """Every check of a Wan folder (and an adapter) that reads no weight: seconds, before anything heavy.

    The layout and each component's files, the DiT's config and file headers (every weight the model needs,
    and only those shapes), an I2V model, the VAE config; ``adapter``: its metadata, keys, shapes and dtypes
    against this model (values are checked when it is loaded). :func:`load_models` starts with it;
    ``ex4d run --fill ex4d`` calls it before the recon. Ex4dError naming the file and what to do otherwise.
    """
    mark = mark or (lambda key: None)
    wan = Path(wan)
    check(wan.is_dir(), f"--wan {wan} is not a folder; give the local Wan2.1-I2V-14B-480P folder ({DIFFUSERS_LAYOUT})")
    layout = detect_layout(wan)
    if layout == "original":
        check(encoders is not None,
              f"{wan} is an original-layout Wan folder (DiT + VAE only); the UMT5 text encoder, tokenizer and CLIP "
              f"image encoder must come from a diffusers-layout folder: pass it as encoders= (--wan-encoders DIR)")
    enc = Path(encoders) if encoders is not None else wan
    check(enc.is_dir(), f"encoders folder {enc} does not exist; expected {DIFFUSERS_LAYOUT}")
    _check_encoders(enc)
    source = dit_source(wan)
    mark("check_files_s")
    transformer = meta_transformer(source.config)
    mark("check_meta_dit_s")
    check(transformer.config.image_dim is not None,
          f"{wan}: this Wan DiT has no image conditioning (image_dim is None): it is a text-to-video model; "
          f"EX-4D needs Wan2.1-I2V-14B-480P")
    vae_cfg = _vae_config(wan, layout, vae_config)
    from .adapter import transformer_dims

    dims = transformer_dims(transformer)
    spec = AdapterSpec(num_layers=dims["num_layers"], dim=dims["dim"], ffn_dim=dims["ffn_dim"],
                       z_dim=int(vae_cfg.get("z_dim", 16)),
                       patch_size=tuple(int(p) for p in transformer.config.patch_size))
    if adapter is not None:
        from .checkpoint import inspect_adapter

        inspect_adapter(adapter, expected=spec)
    return ModelFiles(layout, enc, source, transformer, vae_cfg, spec)


class _Marks:
    """``mark(key)`` stores the seconds since the previous mark (the first: since ``t0``) in ``timings[key]``."""

    def __init__(self, timings: dict, t0: float):
        self.timings, self.last = timings, t0

    def __call__(self, key: str) -> None:
        now = time.perf_counter()
        self.timings[key] = round(now - self.last, 3)
        self.last = now


def load_models(wan: str | os.PathLike, adapter: str | os.PathLike | None, config: GenerateConfig,
                encoders: str | os.PathLike | None = None, loras: list[LoraFile] | tuple = (),
                overlap: bool = False, prompts: list[tuple[str, str | None]] | None = None,
                vae_config: dict | None = None, threads: int | None = None) -> LoadedModels:
    """Load everything ``ex4d generate`` needs for ``config`` (module docstring), checked before any weight is read.

    Args:
        wan, encoders, adapter: as :meth:`~ex4d.diffusion.pipeline.Ex4dGenerator.load`.
        loras: extra LoRAs, merged into the DiT with the adapter's.
        overlap: return once the encoders are loaded, the DiT still loading (``LoadedModels.dit_ready``).
        prompts: (prompt, negative or None) pairs the run will encode; when all are in the prompt cache,
            the text encoder is not loaded.
        vae_config: AutoencoderKLWan overrides for an original-layout VAE (tests).
        threads: DiT reader threads (default ``EX4D_LOAD_THREADS``, else half the CPU cores, 2 to 8).
    """
    t_start = time.perf_counter()
    transformers = require("transformers")
    diffusers = require("diffusers")
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars per component: ours is the summary
    diffusers.utils.logging.disable_progress_bar()
    timings: dict = {}
    mark = _Marks(timings, t_start)
    mark("check_imports_s")
    wan = Path(wan)
    dtype = torch_dtype(config.dtype)
    vae_dtype = dtype if config.vae_dtype is None else torch_dtype(config.vae_dtype)
    device = resolve_device(config.device)
    _check_cpu(wan, device, config.force_cpu)
    files = check_model_files(wan, None, encoders, vae_config, mark)
    layout, enc, source, transformer, vae_cfg, spec = (files.layout, files.encoders, files.source, files.transformer,
                                                       files.vae_config, files.spec)
    weights = load_adapter(adapter, expected=spec) if adapter is not None else None
    mark("check_adapter_s")
    deltas = adapter_deltas(weights) if weights is not None else LoraDeltas()
    for lf in loras:
        deltas.extend(read_lora(lf))
    mark("check_loras_s")
    check_deltas_fit(deltas, {k: tuple(p.shape) for k, p in transformer.named_parameters()})
    timings["check_s"] = round(time.perf_counter() - t_start, 3)

    plan = memory_plan(config.memory, device, config.vae_tiling, config.gpu_budget_gib, fp8_matmul=config.fp8_matmul)
    if config.fp8_matmul:
        from .fp8 import check_fp8_device

        check_fp8_device(device)
    fp8 = "matmul" if config.fp8_matmul else ("storage" if plan.transformer.fp8 else None)
    streaming = plan.transformer.how == "block"
    budget = plan.budget_gib

    def place(block_bytes: int) -> int | None:
        if not streaming:
            return None
        if plan.transformer.resident_blocks is not None:
            return plan.transformer.resident_blocks
        n = len(transformer.blocks)
        return int(min(n, max(0, (budget - plan.reserve_gib) * 1024**3 // max(1, block_bytes))))

    arena = PinnedArena(pin=device.type == "cuda") if streaming else None
    n_threads = threads or int(os.environ.get("EX4D_LOAD_THREADS", "0")) or min(8, max(2, (os.cpu_count() or 4) // 2))
    stop = threading.Event()


    store = prompt_store_for(enc, dtype, device)

    def on(placement) -> str | None:
        return str(device) if placement.how == "resident" and device.type == "cuda" else None

    def load_te():
        t = time.perf_counter()
        te = transformers.UMT5EncoderModel.from_pretrained(enc / "text_encoder", dtype=dtype, local_files_only=True,
                                                           device_map=on(plan.text_encoder)).eval()
        timings["text_encoder_s"] = round(time.perf_counter() - t, 3)
        return te

    need_te = store is None or prompts is None or not all(
        store.has([p] if n is None else [p, n]) for p, n in prompts)

    def load_encoders():
        t = time.perf_counter()
        if layout == "diffusers":
            vae = diffusers.AutoencoderKLWan.from_pretrained(wan / "vae", torch_dtype=vae_dtype, local_files_only=True,
                                                             device_map=on(plan.vae)).eval()
        else:
            vae = _load_original_vae(wan / ORIGINAL_VAE_FILE, vae_dtype, vae_config)
        timings["vae_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        image_encoder = transformers.CLIPVisionModel.from_pretrained(enc / "image_encoder", dtype=dtype,
                                                                     local_files_only=True,
                                                                     device_map=on(plan.image_encoder)).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(enc / "tokenizer", local_files_only=True)
        timings["image_encoder_s"] = round(time.perf_counter() - t, 3)
        te = load_te() if need_te else None
        return vae, image_encoder, tokenizer, te

    dit_future = load_dit(source, transformer, device, dtype, deltas, fp8, place, arena, n_threads, timings, stop,
                          start=lambda fn: _thread(fn, "ex4d-load-dit"))
    try:
        vae, image_encoder, tokenizer, text_encoder = load_encoders()
    except BaseException:
        stop.set()
        raise
    timings["encoders_wall_s"] = round(time.perf_counter() - t_start, 3)
    source_text = str(wan) if enc == wan else f"{wan} + encoders {enc}"
    components = WanComponents(transformer, vae, text_encoder, tokenizer, image_encoder, source=source_text)
    loaded = LoadedModels(components, weights, None, dit_future, load_te, store, timings, stop, fp8,
                          list(deltas.sources))
    if not overlap:
        loaded.resident_blocks = dit_future.result()
        loaded.dit_ready = None
    else:
        dit_future.add_done_callback(lambda f: setattr(loaded, "resident_blocks", f.result())
                                     if f.exception() is None else None)
    timings["load_s"] = round(time.perf_counter() - t_start, 3)
    return loaded
