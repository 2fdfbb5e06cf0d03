#!/usr/bin/env bash
# Every GPU check as one short script (about 8 minutes at most) for a lent CUDA machine's own python3:
# it has torch, numpy, scipy, pandas, pyyaml, numba (numba-cuda) and pytest but no Ray, MLflow or
# Optuna, and nothing can be installed, so only the parts of `study` that need torch are imported
# (test modules that need a hunt skip with their reason; the hunt's Ray path with resources.device:
# cuda is covered by the CPU-side tests). Run from the repository root: `make gpu` or
# `bash infra/gpu/checks.sh`. In order: the device; one tiny numba-cuda kernel (is NVVM/NVRTC
# found?); every `gpu`-marked test; `study bench trainer` at k = 8, 13, 20; `study bench gpu-grid`
# at 1000 runs per cell; the Safran 2021 sweep for as long as its budget allows.
# `bash infra/gpu/checks.sh --list-tests` prints the test modules it runs (tests/infra checks them).
set -uo pipefail
cd "$(dirname "$0")/../.."

# every test module with a gpu-marked test (pytest then selects those tests with -m gpu)
gpu_test_modules() {
  grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort
}
if [ "${1:-}" = "--list-tests" ]; then
  gpu_test_modules
  exit 0
fi

PY=${PY:-python3}
export PYTHONPATH=$PWD RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
status=0
step() { echo; echo "== $* ($(date -u +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || status=1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  || status=1

step "numba-cuda: one tiny kernel"
timeout 45 $PY infra/gpu/numba_cuda_probe.py || status=1

# the engines the trainer knows: the CUDA kernel's where this checkout has it, and the batched torch loop
ENGINES=$($PY -c "from study.training.protocol import ENGINES; print(','.join(e for e in ('cuda', 'torch') if e in ENGINES))")
echo "engines: $ENGINES"

step "pytest -m gpu (every gpu-marked test)"
# shellcheck disable=SC2046
timeout 120 $PY -m pytest -q -rs -m gpu $(gpu_test_modules) -p no:cacheprovider -o addopts="" || status=1

step "study bench trainer --device cuda (replica-steps per second and the anchor ratio)"
timeout 90 $PY -m study.cli bench trainer --device cuda --k 8,13,20 --runs 1000 --anchor-runs 8 --blocks 1 \
  --engines "$ENGINES" || status=1

step "study bench gpu-grid --runs 1000 (45 cells trained and certified on the GPU)"
timeout 120 $PY -m study.cli bench gpu-grid --runs 1000 --device cuda --engines auto || status=1

step "study gpu-sweep pipelines/safran_2021.yaml (k = 6..100 as far as 60 s allow)"
OUT=$(mktemp -d)
timeout 120 $PY -m study.cli gpu-sweep pipelines/safran_2021.yaml --k 6:100 --runs 40:500,70:200,100 \
  --seconds 60 --device cuda --out "$OUT" || status=1
echo "sweep written to $OUT (read with: study sweep $OUT)"
exit $status
