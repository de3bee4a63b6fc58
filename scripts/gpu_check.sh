#!/usr/bin/env bash
# GPU check, at most 10 minutes on one GPU: `reidbench bench gpu` (evaluation and re-ranking at Market and
# MSMT17 sizes beside the CPU kernels, training images/s per paper model, loader images/s) and the CUDA tests.
# Run it from the repository root on a machine with CUDA:   bash scripts/gpu_check.sh [OUT_DIR]
# It writes OUT_DIR/bench_gpu.json, bench_gpu.txt and cuda_tests.txt (OUT_DIR: $OUT, else ./gpu-check).
set -uo pipefail
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout, not an installed copy
python - <<'PY' || { echo "gpu_check: no CUDA device here; nothing measured" >&2; exit 2; }
import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
sys.exit(0 if torch.cuda.is_available() else 1)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

status=0
# 1. the CUDA tests (device code against the CPU reference); about 1-2 minutes
timeout 180 python -m pytest -q -p no:cacheprovider -k "cuda or device" \
    tests/test_device_evaluation.py tests/test_evaluation_metrics.py tests/test_features_cli.py \
    2>&1 | tee "$out/cuda_tests.txt" || status=1

# 2. the benchmark, once as JSON (the figures) and rendered as tables from the same run; about 5-7 minutes
timeout 420 python -m reidbench bench gpu --json > "$out/bench_gpu.json" || status=1
python -c "import json, sys; from reidbench.cli.bench import print_gpu_figures; \
print_gpu_figures(json.load(open(sys.argv[1])))" "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt" || status=1
exit $status
