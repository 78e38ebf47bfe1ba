"""Time to video: from the command to the finished file, with weights on local disk, cold and warm.

Writes full-size random weights once in Wan-AI's diffusers layout (Wan2.1-I2V-14B-480P: DiT, UMT5-XXL, CLIP
ViT-H, VAE; plus a random EX-4D adapter and a rank-64 distillation-LoRA stand-in in ComfyUI layout), then runs
the CLI as subprocesses, each a fresh process, and reads every stage's time from the JSON the CLI writes
beside its output (load, encode, denoise, decode, write, wall since the process started). The baseline,
in the same run and from the same folder: diffusers' ``WanImageToVideoPipeline.from_pretrained`` + one video.

    python bench/bench_time_to_video.py                          # GPU: every section within --budget-s
    python bench/bench_time_to_video.py --sections fp8,diffusers  # some sections (weights are reused)
    python bench/bench_time_to_video.py --tiny                   # CPU smoke run with tiny models (~2 min)

Sections (in this order by default; each skipped when the time left in ``--budget-s`` is below its estimate):

* ``warmup-fp8`` — ``ex4d warmup --compile --fp8-matmul`` with empty compile and prompt caches, the weight files
  evicted from the page cache first: the first run on a new machine, read from disk (``warmup-bf16`` keeps
  the caches: it only lacks its own graph);
* ``fp8`` — ``ex4d generate --compile --fp8-matmul`` (compile and prompt caches warm): one video from the command;
* ``diffusers`` — the baseline pipeline, eager bf16, its own loading;
* ``serve-fp8`` — ``ex4d serve --compile --fp8-matmul``, then two jobs over HTTP: the warm worker's next video;
* ``warmup-bf16``, ``bf16`` — the same for ``--compile`` in bf16;
* ``low-fp8`` (PyTorch capped at 10.5 GiB, a 12 GB card), ``balanced`` (capped at 21.5 GiB, a 24 GB card):
  ``--mode-steps`` steps run, the 25-step wall extrapolated from the measured step time (marked *);
* ``distill`` — ``--lora <rank-64 stand-in> --preset lightx2v-4step --fp8-matmul`` (4 steps, no CFG, eager);
* ``fp8-cpu-loader`` — ``fp8`` through the loader this replaces (``EX4D_FASTLOAD=0``: everything loaded on
  the CPU by ``from_pretrained``, then merged and moved): the loading baseline in the same run;
* ``run-example`` — ``ex4d run --example --fill ex4d --compile --fp8-matmul`` (recon + fill);
* ``jobs-fp8`` — ``ex4d generate --jobs`` with two jobs;
* ``serve-fp8-cache``, ``serve-distill`` — the warm worker with fewer DiT evaluations: ``--step-cache first-block
  --step-cache-threshold 0.08`` (changes results), or the distillation-LoRA stand-in with ``--preset lightx2v-4step``;
* ``fp8-clean``, ``bf16-clean`` — ``fp8`` and ``bf16`` with only ``ex4d[diffusion]``'s dependency closure importable
  (``python -S``, :mod:`clean_env`): a user's fresh virtual environment instead of this machine's image, whose
  other packages (scikit-learn, for one, which transformers imports when present) cost import time.

Results go to ``$OUT/time_to_video.json`` (or ``--out``) after every section, so a timeout leaves what was
measured; the table is printed after each section and at the end (also ``time_to_video.txt``). The weights
(~45 GB) go to ``--weights`` (default /tmp/ex4d_ttv_weights), not to ``$OUT``, and are kept for the next call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

GIB = 1024**3
ORDER = ["warmup-fp8", "fp8", "diffusers", "serve-fp8", "warmup-bf16", "bf16", "low-fp8", "balanced", "distill",
         "fp8-cpu-loader", "run-example", "jobs-fp8", "serve-fp8-cache", "serve-distill", "fp8-clean", "bf16-clean"]
TINY_ORDER = ["fp8", "diffusers", "serve-fp8", "low-fp8", "distill", "jobs-fp8"]  # every kind but warmup/run: CPU time
EST_S = {"fp8-cpu-loader": 110, "weights": 120, "warmup-fp8": 75, "fp8": 65, "diffusers": 95, "serve-fp8": 95, "warmup-bf16": 40,
         "bf16": 70, "low-fp8": 45, "balanced": 50, "distill": 35, "run-example": 65, "jobs-fp8": 95,
         "serve-fp8-cache": 70, "serve-distill": 60, "fp8-clean": 60, "bf16-clean": 65}
FP8 = ["--compile", "--fp8-matmul"]
SECTIONS = {  # name: (kind, flags, GPU cap GiB, steps key)
    "warmup-fp8": ("warmup", FP8, None, "steps"),
    "fp8": ("generate", FP8, None, "steps"),
    "diffusers": ("diffusers", [], None, "steps"),
    "serve-fp8": ("serve", FP8, None, "steps"),
    "warmup-bf16": ("warmup", ["--compile"], None, "steps"),
    "bf16": ("generate", ["--compile"], None, "steps"),
    "low-fp8": ("generate", ["--memory", "low"] + FP8, 10.5, "mode_steps"),
    "balanced": ("generate", ["--memory", "balanced", "--compile"], 21.5, "mode_steps"),
    "distill": ("generate", ["--fp8-matmul", "--lora", "{distill}", "--preset", "lightx2v-4step"], None, None),
    "run-example": ("run", FP8, None, "steps"),
    "jobs-fp8": ("jobs", FP8, None, "steps"),
    "fp8-cpu-loader": ("generate", FP8, None, "steps"),
    # the warm worker with fewer DiT evaluations: the step cache (changes results), a 4-step distillation LoRA
    "serve-fp8-cache": ("serve", FP8 + ["--step-cache", "first-block", "--step-cache-threshold", "0.08"], None, "steps"),
    "serve-distill": ("serve", FP8 + ["--lora", "{distill}", "--preset", "lightx2v-4step"], None, None),
    # the same commands in a fresh virtual environment's view: only ex4d[diffusion]'s dependency closure on
    # sys.path (bench/clean_env.py), as a user who installed ex4d on its own has it
    "fp8-clean": ("generate", FP8, None, "steps"),
    "bf16-clean": ("generate", ["--compile"], None, "steps"),
}
CLEAN_SECTIONS = {"fp8-clean", "bf16-clean"}
SECTION_ENV = {"fp8-cpu-loader": {"EX4D_FASTLOAD": "0"}}  # the loader before this work: all on the CPU, then moved


# --------------------------------------------------------------------------- weights (a subprocess of its own)


def write_weights(folder: Path, tiny: bool) -> dict:
    """Random Wan2.1-I2V (diffusers layout), an EX-4D adapter and a distill-LoRA stand-in under ``folder``."""
    import dataclasses

    import torch
    from safetensors.torch import save_file

    from ex4d.diffusion.checkpoint import export_original_ckpt
    from ex4d.diffusion.pipeline import model_spec
    from ex4d.diffusion.random_models import build_components, random_adapter, save_diffusers_layout

    t0 = time.perf_counter()
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if tiny else torch.bfloat16
    comps = build_components("tiny" if tiny else "full", device=device, dtype=dtype)
    t_build = time.perf_counter() - t0
    save_diffusers_layout(comps, folder / "wan")
    spec = model_spec(comps)
    if tiny:
        spec = dataclasses.replace(spec, hidden=16, rank=4, alpha=4.0)
    export_original_ckpt(random_adapter(spec, seed=1, scale=0.02), folder / "ex4d.ckpt")
    g = torch.Generator().manual_seed(2)
    rank = 4 if tiny else 64
    lora = {}
    for name, p in comps.transformer.named_parameters():  # every block linear the lightx2v LoRA touches
        if name.startswith("blocks.") and name.endswith(".weight") and p.ndim == 2:
            from ex4d.diffusion.random_models import transformer_keys_to_original

            orig = next(iter(transformer_keys_to_original({name: p})))[: -len(".weight")]
            out_f, in_f = p.shape
            lora[f"diffusion_model.{orig}.lora_down.weight"] = (torch.randn(rank, in_f, generator=g) * 0.01).to(dtype)
            lora[f"diffusion_model.{orig}.lora_up.weight"] = (torch.randn(out_f, rank, generator=g) * 0.01).to(dtype)
            lora[f"diffusion_model.{orig}.alpha"] = torch.tensor(float(rank))
    save_file(lora, str(folder / "distill_lora.safetensors"))
    del comps
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    info = {"write_s": round(time.perf_counter() - t0, 1), "build_s": round(t_build, 1), "bytes": size,
            "tiny": tiny, "device": device}
    (folder / "complete.json").write_text(json.dumps(info))
    return info


def evict_page_cache(folder: Path) -> int:
    """Drop ``folder``'s files from the page cache (fsync + POSIX_FADV_DONTNEED; no root needed); bytes evicted."""
    n = 0
    for f in folder.rglob("*"):
        if f.is_file() and hasattr(os, "posix_fadvise"):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += f.stat().st_size
            finally:
                os.close(fd)
    return n


# --------------------------------------------------------------------------- the baseline (a subprocess)


def diffusers_baseline(wan: Path, inputs: Path, steps: int, record: Path, tiny: bool) -> None:
    """diffusers' WanImageToVideoPipeline from ``wan``: load, one video from the first frame; timings to ``record``."""
    import torch
    from PIL import Image

    import diffusers

    t0 = time.perf_counter()
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if tiny else torch.bfloat16
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(wan, torch_dtype=dtype, local_files_only=True)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    with np.load(inputs) as z:
        color = z["color"]
    t, h, w = color.shape[:3]
    out = pipe(image=Image.fromarray(color[0]), prompt="4K ultra HD, surround motion", negative_prompt="static",
               height=h, width=w, num_frames=t, num_inference_steps=steps, guidance_scale=5.0, output_type="np",
               generator=torch.Generator("cpu").manual_seed(0))
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    from ex4d.diffusion.cli_args import process_age_s

    peak = round(torch.cuda.max_memory_allocated() / GIB, 2) if device == "cuda" else None
    record.write_text(json.dumps({"timings_s": {"load": round(t1 - t0, 3), "generate": round(t2 - t1, 3),
                                                "wall": round(process_age_s() or (t2 - t0), 3)},
                                  "frames": int(np.asarray(out.frames).shape[1]), "gpu_peak_gib": peak}))


# --------------------------------------------------------------------------- the orchestrator


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tiny = args.tiny
        self.out = Path(args.out or os.environ.get("OUT") or "bench_ttv").resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.weights = Path(args.weights).resolve()
        self.work = self.out / "work" if self.tiny else Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.t_start = time.monotonic()
        self.budget = args.budget_s
        self.result = {"machine": machine(), "settings": vars(args), "rows": [], "skipped": []}
        self.env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                        EX4D_CACHE_DIR=str(self.work / "cache"), EX4D_COMPILE_CACHE=str(self.work / "compile"),
                        TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # ours decides where compiled kernels go
            self.env.pop(key, None)
        self.common = ["--wan", str(self.weights / "wan"), "--adapter", str(self.weights / "ex4d.ckpt")]
        if self.tiny:
            self.common += ["--device", "cpu", "--dtype", "float32"]

    # ------------------------------------------------------------------ bookkeeping

    def left(self) -> float:
        return float("inf") if not self.budget else self.budget - (time.monotonic() - self.t_start)

    def save(self) -> None:
        tmp = self.out / ".time_to_video.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        tmp.replace(self.out / "time_to_video.json")
        (self.out / "time_to_video.txt").write_text(table(self.result))

    def add(self, row: dict) -> None:
        self.result["rows"].append(row)
        self.save()
        print(table({"rows": [row], "baseline": self.result.get("baseline"), "settings": self.result["settings"]},
                    header=False), flush=True)

    def flags(self, flags: list[str]) -> list[str]:
        flags = [f.replace("{distill}", str(self.weights / "distill_lora.safetensors")) for f in flags]
        if self.tiny:  # no CUDA: torch.compile refuses; fp8 matmuls run on the CPU
            flags = [f for f in flags if f != "--compile"]
        return flags

    def steps(self, key: str | None) -> list[str]:
        if key is None:
            return []
        return ["--steps", str(getattr(self.args, key))]

    def clean_site(self) -> Path:
        """The clean environment's site folder (bench/clean_env.py), built once per run."""
        folder = self.work / "clean-site"
        if not (folder / ".built").is_file():
            import clean_env

            shutil.rmtree(folder, ignore_errors=True)
            info = clean_env.build(folder)
            (folder / ".built").write_text(json.dumps(info))
            self.result["clean_env"] = {k: v for k, v in info.items() if k != "folder"}
        return folder

    def call(self, argv: list[str], name: str, cap: float | None = None, timeout: float | None = None) -> dict:
        env = dict(self.env, **SECTION_ENV.get(name, {}))
        if name in CLEAN_SECTIONS and argv and argv[0] == sys.executable:
            argv = [argv[0], "-S", *argv[1:]]  # no site-packages: only the clean folder and the repository
            env["PYTHONPATH"] = f"{self.clean_site()}{os.pathsep}{ROOT}"
        if cap is not None and not self.tiny:
            env["EX4D_GPU_MEMORY_CAP_GIB"] = str(cap)
        limit = max(10.0, min(timeout or 600.0, self.left()))
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(argv, env=env, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=limit, text=True)
            code, text = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as e:
            code, text = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (
                e.stdout or "")
        log.write_text(text)
        return {"exit": code, "process_s": round(time.monotonic() - t0, 2), "log_tail": text[-1500:] if code else ""}

    # ------------------------------------------------------------------ steps

    def prepare(self) -> None:
        marker = self.weights / "complete.json"
        if marker.is_file() and json.loads(marker.read_text()).get("tiny") == self.tiny:
            info = json.loads(marker.read_text())
            info["reused"] = True
        else:
            shutil.rmtree(self.weights, ignore_errors=True)
            self.weights.mkdir(parents=True)
            need = 1 if self.tiny else 50
            free = shutil.disk_usage(self.weights).free / 1e9
            if free < need:
                raise SystemExit(f"{self.weights}: {free:.0f} GB free, the random weights need ~{need} GB; "
                                 f"pass --weights on a larger disk")
            res = self.call([sys.executable, __file__, "--write-weights", str(self.weights)] +
                            (["--tiny"] if self.tiny else []), "weights", timeout=1200)
            if res["exit"] != 0:
                raise SystemExit(f"writing the weights failed:\n{res['log_tail']}")
            info = json.loads(marker.read_text())
            info["reused"] = False
        self.result["weights"] = info
        t, h, w = (5, 32, 48) if self.tiny else (self.args.frames, self.args.size, self.args.size)
        rng = np.random.default_rng(0)
        color = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        mask = np.zeros((t, h, w), bool)
        mask[:, :, : w * 5 // 8] = True
        mask[0] = True
        color[~mask] = 0
        from ex4d.io.video import write_video

        write_video(self.work / "color.mp4", color, 16.0, crf=12)
        write_video(self.work / "mask.mp4", mask, 16.0)
        np.savez(self.work / "inputs.npz", color=color, mask=mask)
        self.shape = (t, h, w)
        self.save()

    def run_section(self, name: str) -> None:
        kind, flags, cap, steps_key = SECTIONS[name]
        flags = self.flags(flags)
        row = {"section": name, "kind": kind, "flags": flags, "cap_gib": cap if not self.tiny else None,
               "steps": getattr(self.args, steps_key) if steps_key else 4}
        if name == "warmup-fp8":  # the first run on a new machine
            if self.args.cold_disk and not self.tiny:
                row["evicted_bytes"] = evict_page_cache(self.weights)
                row["page_cache"] = "cold"
            for cache in (self.env["EX4D_COMPILE_CACHE"], self.env["EX4D_CACHE_DIR"]):
                shutil.rmtree(cache, ignore_errors=True)
            row["compile_cache"] = "empty"
        elif name.startswith("warmup"):
            row["compile_cache"] = "without this graph"
        getattr(self, f"_{kind}")(name, row, flags, cap, steps_key)
        self.add(row)

    def _generate(self, name, row, flags, cap, steps_key) -> None:
        out = self.work / f"{name}.mp4"
        res = self.call([sys.executable, "-m", "ex4d", "generate", "--color", "color.mp4", "--mask", "mask.mp4",
                         "--out", str(out), "--overwrite", "-q", *self.common, *self.steps(steps_key), *flags], name,
                        cap=cap)
        row.update(res)
        rec = out.with_name(out.stem + ".generate.json")
        if res["exit"] == 0 and rec.is_file():
            data = json.loads(rec.read_text())
            row["timings_s"], row["gpu_peak_gib"] = data["timings_s"], data.get("gpu_peak_gib")
            row["steps"] = data["config"]["steps"]

    def _warmup(self, name, row, flags, cap, steps_key) -> None:
        t, h, w = self.shape
        record = self.work / f"{name}.json"
        res = self.call([sys.executable, "-m", "ex4d", "warmup", "--size", f"{w}x{h}", "--num-frames", str(t),
                         "--warmup-steps", "2", "--record", str(record), "-q", *self.common, *flags], name)
        row.update(res)
        if res["exit"] == 0 and record.is_file():
            data = json.loads(record.read_text())
            row["timings_s"] = {"load": data["load_s"], "warmup_run": data["run_s"], "load_detail": data["load_detail"],
                                "stages": data["stages"]}
            row["gpu_peak_gib"], row["steps"] = data.get("gpu_peak_gib"), data["steps"]

    def _diffusers(self, name, row, flags, cap, steps_key) -> None:
        record = self.work / "diffusers.json"
        res = self.call([sys.executable, __file__, "--diffusers-baseline", str(self.weights / "wan"), "--inputs",
                         str(self.work / "inputs.npz"), "--record", str(record), "--steps",
                         str(getattr(self.args, steps_key))] + (["--tiny"] if self.tiny else []), name)
        row.update(res)
        if res["exit"] == 0 and record.is_file():
            data = json.loads(record.read_text())
            row["timings_s"], row["gpu_peak_gib"] = data["timings_s"], data.get("gpu_peak_gib")
            self.result["baseline"] = {"wall": data["timings_s"]["wall"], "load": data["timings_s"]["load"]}

    def _jobs(self, name, row, flags, cap, steps_key) -> None:
        jobs = [{"color": "color.mp4", "mask": "mask.mp4", "out": f"{name}-{i}.mp4", "options": {"seed": i}}
                for i in range(2)]
        (self.work / f"{name}.json").write_text(json.dumps(jobs))
        res = self.call([sys.executable, "-m", "ex4d", "generate", "--jobs", f"{name}.json", "--overwrite", "-q",
                         *self.common, *self.steps(steps_key), *flags], name)
        row.update(res)
        if res["exit"] == 0:
            recs = [json.loads((self.work / f"{name}-{i}.generate.json").read_text()) for i in range(2)]
            row["jobs"] = [r["timings_s"] for r in recs]
            row["timings_s"] = recs[0]["timings_s"]
            row["gpu_peak_gib"] = recs[-1].get("gpu_peak_gib")

    def _serve(self, name, row, flags, cap, steps_key) -> None:
        from ex4d.diffusion.serve import ServeClient

        ready = self.work / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        t0 = time.monotonic()
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "ex4d", "serve", "--port", "0", "--ready-file", str(ready),
                                     "-q", *self.common, *self.steps(steps_key), *flags], env=self.env, cwd=self.work,
                                    stdout=fh, stderr=subprocess.STDOUT)
        try:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() - t0 > max(10.0, self.left()):
                    row.update(exit=proc.poll() if proc.poll() is not None else "timeout",
                               log_tail=log.read_text()[-1500:])
                    return
                time.sleep(0.2)
            row["ready_s"] = round(time.monotonic() - t0, 2)
            client = ServeClient(json.loads(ready.read_text())["url"], timeout=60)
            row["load_timings_s"] = client.health().get("load_timings_s")
            jobs = []
            for i in range(2):
                t1 = time.monotonic()
                rec = client.generate(self.work / "color.mp4", self.work / "mask.mp4", self.work / f"{name}-{i}.mp4",
                                      overwrite=True, timeout=max(10.0, self.left()), seed=i)
                jobs.append({"client_s": round(time.monotonic() - t1, 2), **rec["result"]["timings_s"]})
            row["jobs"], row["timings_s"], row["exit"] = jobs, jobs[0], 0
            client.shutdown()
            proc.wait(timeout=60)
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            row.update(exit="error", log_tail=f"{type(e).__name__}: {e}\n" + log.read_text()[-1500:])
        finally:
            if proc.poll() is None:
                proc.kill()
            row["process_s"] = round(time.monotonic() - t0, 2)

    def _run(self, name, row, flags, cap, steps_key) -> None:
        t, h, w = self.shape
        out = self.work / name
        res = self.call([sys.executable, "-m", "ex4d", "run", "--example", "--example-size", str(max(64, w)), "--num-frames",
                         str(t), "--fill", "ex4d", "--overwrite", "-q", "--out", str(out),
                         *[a for a in self.common if a not in ("--device", "cpu", "--dtype", "float32")],
                         *self.steps(steps_key), *flags], name)
        row.update(res)
        if res["exit"] == 0 and (out / "config.json").is_file():
            tm = json.loads((out / "config.json").read_text())["timings"]
            stages = tm.get("fill_stages") or {}  # recorded when the run's fill reports its stages
            row["timings_s"] = {"recon": round(tm.get("recon_s", 0.0), 3), "fill": round(tm.get("fill_s", 0.0), 3),
                                "load": stages.get("load_s"), "denoise": stages.get("denoise_s"),
                                "decode": stages.get("decode_s"), "wall": res["process_s"], "stages": stages}

    def main(self) -> dict:
        default = TINY_ORDER if self.tiny else ORDER
        sections = [s for s in (self.args.sections.split(",") if self.args.sections else default) if s]
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise SystemExit(f"unknown sections {unknown}; known: {', '.join(ORDER)}")
        self.prepare()
        for name in sections:
            need = EST_S[name] * (0.05 if self.tiny else 1.0)
            if self.left() < need:
                self.result["skipped"].append({"section": name, "why": f"budget: {self.left():.0f} s left, needs ~{need:.0f}"})
                self.save()
                print(f"-- {name}: skipped ({self.result['skipped'][-1]['why']})", flush=True)
                continue
            print(f"-- {name} ({self.left():.0f} s of budget left)", flush=True)
            self.run_section(name)
        self.result["total_s"] = round(time.monotonic() - self.t_start, 1)
        self.save()
        print("\n" + table(self.result), flush=True)
        return self.result


def machine() -> dict:
    """Versions and the GPU, without creating a CUDA context in this (parent) process."""
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for pkg in ("torch", "diffusers", "transformers"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        if out:
            info["gpu"] = out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)
        info["disk_free_gib"] = round(shutil.disk_usage("/tmp").free / GIB, 1)
    except (OSError, ValueError):
        pass
    return info


def _f(v, fmt="{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def table(result: dict, header: bool = True) -> str:
    """The printed table: one line per measured video (and per job of serve / jobs)."""
    base = (result.get("baseline") or {}).get("wall")
    lines = []
    if header:
        m = result.get("machine", {})
        w = result.get("weights", {})
        lines.append(f"time to video — {m.get('gpu', 'CPU')} ({m.get('torch', '?')}, diffusers {m.get('diffusers', '?')}); "
                     f"weights {w.get('bytes', 0) / 1e9:.1f} GB"
                     + (f", written in {w.get('write_s')} s" if w and not w.get("reused") else ", reused"))
        lines.append("| section | what | steps | load s | encode s | denoise s | decode s | write s | wall s | "
                     "peak GiB | vs diffusers |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in result.get("rows", []):
        t = row.get("timings_s") or {}
        if row.get("exit") not in (0, None) and not t:
            lines.append(f"| {row['section']} | FAILED ({row.get('exit')}) | | | | | | | | | |")
            continue
        subs = [(row["section"], t)]
        if row.get("jobs"):
            subs = [(f"{row['section']} job {i + 1}" + (" (warm)" if i else ""), j) for i, j in enumerate(row["jobs"])]
        for k, (label, tt) in enumerate(subs):
            wall = tt.get("wall")
            if row["kind"] == "serve":  # the server was up: a job's wall is submit → done
                wall = tt.get("client_s")
                if k == 0:
                    label += f" (server ready {row.get('ready_s')} s)"
            elif row["kind"] == "jobs" and k > 0:
                wall = tt.get("job")
            elif row["kind"] == "run":
                label += f" (recon {_f(tt.get('recon'))} s, fill {_f(tt.get('fill'))} s)"
            what = " ".join(Path(f).name if "/" in f else f for f in row.get("flags", [])) or row["kind"]
            if row.get("cap_gib"):
                what += f", capped {row['cap_gib']} GiB"
            if row["section"] in SECTION_ENV:
                what += ", " + " ".join(f"{k}={v}" for k, v in SECTION_ENV[row["section"]].items())
            if row.get("page_cache") == "cold":
                what += ", disk cold"
            if row.get("compile_cache") == "empty":
                what += ", compile + prompt caches empty"
            elif row.get("compile_cache"):
                what += f", compile cache {row['compile_cache']}"
            if row["kind"] == "warmup":
                wall = tt.get("load", 0) + tt.get("warmup_run", 0)
            extra = ""
            denoise = tt.get("denoise")
            full = (result.get("settings") or {}).get("steps", 25)
            if row.get("kind") == "generate" and row.get("steps") and row["steps"] < full and denoise and \
                    row["section"] != "distill" and wall is not None:
                extra = f" ({full} steps*: {wall - denoise + denoise * full / row['steps']:.1f})"
            peak = row.get("gpu_peak_gib")
            peak = peak.get("allocated") if isinstance(peak, dict) else peak
            if row["kind"] == "diffusers":
                ratio = "1.00x" if base else "—"
            else:
                ratio = f"{base / wall:.2f}x" if base and wall else "—"
            lines.append(f"| {label} | {what} | {row.get('steps', '—')} | {_f(tt.get('load'))} | {_f(tt.get('encode'))} | "
                         f"{_f(denoise)} | {_f(tt.get('decode'))} | {_f(tt.get('write'))} | {_f(wall)}{extra} | "
                         f"{_f(peak)} | {ratio} |")
    for s in result.get("skipped", []) if header else []:
        lines.append(f"| {s['section']} | skipped: {s['why']} | | | | | | | | | |")
    if header:
        lines += load_table(result)
    return "\n".join(lines)


LOAD_COLUMNS = [  # (header, where in timings_s): where a command's first seconds go
    ("startup", ("startup",)), ("interp+torch", ("startup_detail", "cli_s")), ("inputs", ("startup_detail", "inputs_s")),
    ("imports", ("startup_detail", "imports_s")), ("check", ("load_detail", "check_s")),
    ("of it: imports", ("load_detail", "check_imports_s")), ("meta DiT", ("load_detail", "check_meta_dit_s")),
    ("adapter", ("load_detail", "check_adapter_s")), ("encoders", ("load_detail", "encoders_wall_s")),
    ("DiT", ("load_detail", "dit_s")), ("DiT GB/s", ("load_detail", "dit_gb_per_s")),
    ("DiT read wait", ("load_detail", "dit_read_wait_s")), ("DiT GPU work", ("load_detail", "dit_process_s")),
    ("DiT wait", ("dit_wait",)), ("load", ("load",)),
    ("1st step", ("stages", "first_step_s")), ("other steps", ("stages", "rest_steps_s")),
]


def load_table(result: dict) -> list[str]:
    """Where each fresh ``generate`` spent its seconds before the first step (empty when none recorded them)."""
    rows = [r for r in result.get("rows", []) if r.get("kind") == "generate" and (r.get("timings_s") or {}).get("load_detail")]
    if not rows:
        return []

    def get(t: dict, path: tuple) -> str:
        for k in path:
            t = t.get(k) if isinstance(t, dict) else None
        return _f(t) if isinstance(t, (int, float)) else "—"

    out = ["", "load breakdown, seconds (check = every file, config and adapter checked before a weight is read; "
               "the DiT is read while the encoders load)",
           "| section | " + " | ".join(h for h, _ in LOAD_COLUMNS) + " |", "|---" * (len(LOAD_COLUMNS) + 1) + "|"]
    for r in rows:
        out.append(f"| {r['section']} | " + " | ".join(get(r["timings_s"], p) for _, p in LOAD_COLUMNS) + " |")
    return out


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (a smoke test, ~2 min)")
    p.add_argument("--sections", default="", help=f"comma-separated, in this order by default: {','.join(ORDER)}")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="stop starting sections past this many seconds, weights included (0 = no limit; %(default)s)")
    p.add_argument("--weights", default="/tmp/ex4d_ttv_weights", help="where the random weights go (kept; %(default)s)")
    p.add_argument("--work", default="/tmp/ex4d_ttv_work", help="inputs, outputs and caches of the runs (%(default)s)")
    p.add_argument("--out", default=None, help="results folder (default $OUT, else ./bench_ttv)")
    p.add_argument("--steps", type=int, default=25, help="steps of a video (%(default)s)")
    p.add_argument("--mode-steps", type=int, default=4, help="steps run in low / balanced (%(default)s)")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-cold-disk", dest="cold_disk", action="store_false",
                   help="do not evict the weight files from the page cache before the warmup sections")
    p.add_argument("--write-weights", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--diffusers-baseline", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--record", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write_weights:
        write_weights(Path(args.write_weights), args.tiny)
        return None
    if args.diffusers_baseline:
        diffusers_baseline(Path(args.diffusers_baseline), Path(args.inputs), args.steps, Path(args.record), args.tiny)
        return None
    if args.tiny:
        args.steps, args.mode_steps = 2, 1
        if args.weights == p.get_default("weights"):
            args.weights = "/tmp/ex4d_ttv_weights_tiny"
    return Bench(args).main()


if __name__ == "__main__":
    main()
