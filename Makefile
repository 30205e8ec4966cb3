# layerprobe — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test test-all lint format experiments ui bench lock clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,sweeps]"
	$(BIN)/python -m layerprobe.probe.fused.build
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the pinned dependencies (CPU TensorFlow)

run: $(STAMP) ## train, evaluate and probe the default experiment; log to ./mlflow.db
	$(BIN)/layerprobe $(ARGS)

test: $(STAMP) ## lint, type-check, check the layering (import-linter) and run the unit + integration tests
	$(BIN)/ruff check layerprobe hydra_plugins tests benchmarks
	$(BIN)/mypy layerprobe
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP) ## every test, the slow tier too
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check layerprobe hydra_plugins tests benchmarks
	$(BIN)/ruff format --check layerprobe hydra_plugins tests benchmarks

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format layerprobe hydra_plugins tests benchmarks
	$(BIN)/ruff check --fix layerprobe hydra_plugins tests benchmarks

experiments: $(STAMP) ## the CI gate: run experiments/ and compare with their baselines
	$(BIN)/layerprobe check

ui: $(STAMP) ## open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: $(STAMP) ## run the benchmarks and write BENCHMARKS.md
	$(BIN)/python -m benchmarks $(ARGS)

lock: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf /tmp/layerprobe-lock && $(PYTHON) -m venv /tmp/layerprobe-lock
	/tmp/layerprobe-lock/bin/pip install --quiet -e ".[dev,sweeps]"
	/tmp/layerprobe-lock/bin/pip freeze --exclude-editable | sed '1i # Pinned versions: regenerate with `make lock`.' > constraints.txt

clean: ## remove outputs, models and the local MLflow store (not .venv)
	rm -rf outputs multirun models mlruns mlflow.db
