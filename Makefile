# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export OPTUNA_DISABLE_TELEMETRY := 1
# PostgreSQL for the `postgres` tests (started by `make services`; they skip when it is down)
export MINIMA_HUNT_TEST_PG ?= postgresql+psycopg2://minima:minima@127.0.0.1:55432

.PHONY: install run test lint typecheck pytest slow bench gpu gpu-safran services browser clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: install
	$(BIN)/study hunt pipelines/quickstart.yaml --out runs/quickstart

lint: install
	$(BIN)/ruff check study tests
	$(BIN)/ruff format --check study tests

typecheck: install
	$(BIN)/mypy study

pytest: install
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

slow: install browser
	$(BIN)/python -m pytest -q -m slow

# Debian's chromium for the real-browser test of the MLflow link (tests/tracking); idempotent.
browser:
	command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }

bench: install
	$(BIN)/study bench trainer

# Every GPU check in one script, on a lent CUDA machine's own python3 (no venv there: see the script).
gpu:
	bash infra/gpu/checks.sh

# Safran-Yehudai-Shamir (2021) for k = n = 6..100 on one CUDA device, no Ray/MLflow/Optuna and no install
# (the lent GPU machine): ~8 minutes, then `study sweep $(GPU_OUT)` and `study report $(GPU_OUT)` here.
GPU_OUT ?= runs/safran_2021_gpu
GPU_RUNS ?= 40:500,70:200,100
GPU_SECONDS ?= 480
gpu-safran:
	PYTHONPATH=. $(PY) -m study.cli gpu-sweep pipelines/safran_2021.yaml --k 6:100 --runs $(GPU_RUNS) \
	  --seconds $(GPU_SECONDS) --device cuda --out $(GPU_OUT)

# PostgreSQL on 127.0.0.1:55432 (installed with apt-get if missing), role minima/minima,
# databases optuna_test and mlflow_test. Idempotent; stop with `infra/postgres/start-local.sh stop`.
services:
	bash infra/postgres/start-local.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
