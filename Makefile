# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export OPTUNA_DISABLE_TELEMETRY := 1

.PHONY: install run test lint typecheck pytest slow bench clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
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

slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/study bench trainer

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
