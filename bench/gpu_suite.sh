#!/usr/bin/env bash
# The GPU benchmark tables of the README in one go (one H100/H200, random full-size weights).
#   OUT=results/ bash bench/gpu_suite.sh [recon,generate,floor,attn,cache,modes,modes_fp8,train,depth,parallel]
# Each section runs under its own time limit (seconds, EX4D_BENCH_LIMITS="recon=120 generate=330 ...")
# and writes NAME.txt (the printed table) and NAME.json under $OUT, so a section that runs out of
# time or fails leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench_results}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # NVLink multicast off
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
sections="${1:-recon,generate,floor,attn,cache,modes,modes_fp8,train,depth,parallel}"
declare -A limit=([recon]=120 [generate]=480 [floor]=60 [attn]=200 [cache]=540 [modes]=540 [modes_fp8]=480 [train]=200
                  [depth]=240 [parallel]=600)
for kv in ${EX4D_BENCH_LIMITS:-}; do limit[${kv%%=*}]=${kv#*=}; done
run() {  # name, command...
  local name=$1; shift
  case ",$sections," in *",$name,"*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit[$name]} s): $*"
  timeout --signal=INT --kill-after=15 "${limit[$name]}" "$@" 2>&1 | tee "$out/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
run recon "$py" bench/bench_recon.py --torch-cpu-frames 1 --json "$out/recon.json"
run generate "$py" bench/bench_generate.py --sections dit,e2e --compile --fp8 --profile --iters 2 --json "$out/generate.json"
run floor "$py" bench/bench_generate.py --sections floor --json "$out/floor.json"
run attn "$py" bench/bench_generate.py --sections attn --json "$out/attn.json"
# --compile and --fp8-matmul, each with and without the step cache, against the eager bf16 video on the same seed
run cache "$py" bench/bench_generate.py --sections cache --compile --fp8 --step-cache 0.05,0.08 --json "$out/cache.json"
# balanced and low run under a cap on PyTorch's GPU memory: a 24 GB and a 12 GB card less the CUDA context
run modes "$py" bench/bench_generate.py --sections modes --modes full+compile,balanced+compile,low --e2e-steps 4 \
  --cap balanced=21.5,low=10.5 --json "$out/modes.json"
run modes_fp8 "$py" bench/bench_generate.py --sections modes --modes full+compile+fp8,balanced+compile+fp8,low+compile+fp8 --e2e-steps 4 \
  --cap balanced=21.5,low=10.5 --json "$out/modes_fp8.json"
run train "$py" bench/bench_train.py --skip-no-checkpointing --steps 2 --json "$out/train.json"
run depth "$py" bench/bench_depth.py --iters 1 --json "$out/depth.json"
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
# context-parallel DiT step on 2, 4, 8 GPUs (each torchrun run also times 1 GPU as its baseline)
if [ "$ngpu" -ge 2 ]; then
  run parallel bash -c 'for n in 2 4 8; do [ "$n" -le "$1" ] || break
    "$2" -m torch.distributed.run --standalone --nproc-per-node "$n" bench/bench_parallel.py --json "$3/parallel_$n.json"
  done' _ "$ngpu" "$py" "$out"
else
  echo "== parallel: skipped ($ngpu GPU)"
fi
exit 0
