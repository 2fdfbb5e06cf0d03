#!/usr/bin/env bash
# Every GPU check as one short script (about 8 minutes at most) for a lent CUDA machine's own python3:
# it has torch, numpy, scipy, pandas, pyyaml, numba and pytest but no Ray, MLflow or Optuna, so only
# the parts of `study` that need torch are imported (the hunt's Ray path with resources.device: cuda is
# covered by the CPU-side tests). Run from the repository root: `make gpu` or `bash infra/gpu/checks.sh`.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
export PYTHONPATH=$PWD RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || status=1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || status=1
echo "== pytest -m gpu"
timeout 180 $PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider -o addopts="" || status=1
echo "== study bench trainer --device cuda"
timeout 120 $PY -m study.cli bench trainer --device cuda --k 8,13,20 --runs 1000 --anchor-runs 8 --blocks 1 \
  --engines torch || status=1
echo "== study bench gpu-grid (45 cells x 100 runs, trained and certified on the GPU)"
timeout 240 $PY -m study.cli bench gpu-grid --runs 100 --device cuda || status=1
exit $status
