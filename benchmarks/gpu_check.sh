#!/usr/bin/env bash
# GPU check of cabench's speed paths, in under 6 minutes; every result goes under $OUT.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        (from anywhere; PYTHON=... picks the interpreter)
#
# Stages, each its own process under its own time limit (one that fails or overruns does not stop the others):
#   bench          cabench bench --device cuda --amp bf16 --channels-last (7 rows, latency b1/b32, train b64/b256)
#   pipeline       JPEG input pipeline: per-worker img/s (cabench vs torchvision reference preset) + nvjpeg GPU decode
#   epoch          paper-recipe epoch slice on synthetic ImageNet-shaped data; ratio to timm's own training step
#   bench-compile  the bench with torch.compile (baseline and CA, training batch 256)
# Needs torch + torchvision (+ CUDA); timm, fvcore, pycocotools, scipy, sklearn are optional.
# Set GPU_CHECK_DEVICE=cpu and GPU_CHECK_QUICK=1 for a small CPU run (what the test suite does).
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
QUICK=()
[ -n "${GPU_CHECK_QUICK:-}" ] && QUICK=(--quick)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import timm; print('timm', timm.__version__)" 2>/dev/null || echo "timm: not importable"
  df -h /dev/shm 2>/dev/null | tail -1
  nproc
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# DataLoader workers pass batches through /dev/shm: use them only where it is large enough.
shm_kb=$(df -k /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')
export GPU_CHECK_WORKERS=0
[ "${shm_kb:-0}" -ge 4000000 ] && export GPU_CHECK_WORKERS=6

status=0
run_stage() {
  local stage=$1 limit=$2
  echo "== $stage (limit ${limit}s) $(date -u +%T)"
  timeout -k 10 "$limit" "$PY" benchmarks/gpu_check.py "$stage" --out "$OUT" --device "$DEVICE" "${QUICK[@]}" \
    > "$OUT/$stage.log" 2>&1
  local rc=$?
  cat "$OUT/$stage.log"
  echo "== $stage exit $rc"
  [ $rc -ne 0 ] && status=1
}
run_stage bench 90
run_stage pipeline 60
run_stage epoch 80
run_stage bench-compile 110
echo "results: $OUT/*.json, logs: $OUT/*.log"
exit $status
