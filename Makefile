# layerprobe — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Keras engine's environment (trainer.engine=keras): TensorFlow 2.21 + Keras 3 + numpy 2 cannot
# share a venv with the Estimator's TensorFlow 2.15.
VENV_KERAS ?= .venv-keras
BIN_KERAS := $(VENV_KERAS)/bin
STAMP_KERAS := $(VENV_KERAS)/.installed
# tensorboard: TF 2.21 no longer brings it; tqdm: MLflow draws its artifact progress bar with it when asked
KERAS_STACK := "tensorflow-cpu==2.21.0" "keras==3.15.1" "tensorboard==2.21.*" tqdm
# The tiers that train run on pytest-xdist workers, one per core: a test file stays on one worker
# (its module-scoped runs are made once); the combination table keeps one model's cells together.
# One process: make test XDIST=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
XDIST ?= -n $(JOBS) --dist loadfile
XDIST_GROUPS ?= -n $(JOBS) --dist loadgroup

.DEFAULT_GOAL := help
.PHONY: help venv venv-keras run screenshots docs test test-unit test-keras test-all test-slow test-combinations test-combinations-keras lint format experiments experiments-keras ui bench lock lock-keras clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-24s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,sweeps,tfds,beam]"
	$(BIN)/python -m layerprobe.probe.fused.build
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the pinned dependencies (CPU TensorFlow)

# pyproject's markers give Python <= 3.11 the Estimator's stack, so here the Keras stack comes from its
# own pins and the package itself is installed without dependencies.
$(STAMP_KERAS): pyproject.toml constraints-keras.txt
	@test -x $(BIN_KERAS)/python || $(PYTHON) -m venv $(VENV_KERAS)
	$(BIN_KERAS)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN_KERAS)/python -m pip install --quiet -r constraints-keras.txt
	$(BIN_KERAS)/python -m pip install --quiet --no-deps -e .
	$(BIN_KERAS)/python -m layerprobe.probe.fused.build
	@touch $(STAMP_KERAS)

venv-keras: $(STAMP_KERAS) ## create .venv-keras: Keras 3 on TensorFlow 2.21, numpy 2 (trainer.engine=keras)

run: $(STAMP) ## train, evaluate and probe the default experiment; log to ./mlflow.db
	$(BIN)/layerprobe $(ARGS)

test: $(STAMP) ## lint, type-check, check the layering (import-linter) and run the unit + integration tests
	$(BIN)/ruff check layerprobe hydra_plugins tests benchmarks
	$(BIN)/mypy layerprobe benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

# pytest only, for the inner loop: tests/conftest.py leaves out the integration and slow tiers and, under
# --unit, fails a test that trains, opens an MLflow store or starts a process (so the tier cannot rot).
test-unit: $(STAMP) ## the unit tier only: no training, MLflow store or process (~2 min); no lint
	$(BIN)/python -m pytest -q --unit $(PYTEST_ARGS)

test-keras: $(STAMP_KERAS) ## on .venv-keras: the engine-independent tests and the Keras engine's
	$(BIN_KERAS)/python -m pytest -q $(XDIST) -m "not estimator and not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## every test, the slow tier too
	$(BIN)/python -m pytest -q $(XDIST) -m "" $(PYTEST_ARGS)

test-slow: $(STAMP) ## the slow tier but the combination table: real signals, servers, sweeps, fuzzing (.ci/run runs it)
	$(BIN)/python -m pytest -q $(XDIST) -m "slow and not combinations" $(PYTEST_ARGS)

test-combinations: $(STAMP) ## every shipped model through every command that takes a run (Estimator)
	$(BIN)/python -m pytest -q $(XDIST_GROUPS) -m combinations tests/test_combinations.py $(PYTEST_ARGS)

test-combinations-keras: $(STAMP_KERAS) ## the same on .venv-keras: trainer.engine=keras
	$(BIN_KERAS)/python -m pytest -q $(XDIST_GROUPS) -m combinations tests/test_combinations.py $(PYTEST_ARGS)

screenshots: $(STAMP) ## full-page PNGs (1400 px, headless Chromium) of the newest reports; PAGES=... for others
	$(BIN)/python -m layerprobe.analysis.browser $(PAGES)

# --strict: a broken link or anchor, a nav entry without its file or a page left out fails the build.
# docs/hooks.py writes reference.md (from layerprobe/schema.py) and benchmarks.md while it builds.
docs: $(STAMP) ## build the documentation site (MkDocs, docs/) into site/ with --strict; .ci/run runs it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check layerprobe hydra_plugins tests benchmarks
	$(BIN)/ruff format --check layerprobe hydra_plugins tests benchmarks

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format layerprobe hydra_plugins tests benchmarks
	$(BIN)/ruff check --fix layerprobe hydra_plugins tests benchmarks

experiments: $(STAMP) ## the CI gate: run experiments/ and compare with their baselines
	$(BIN)/layerprobe check

experiments-keras: $(STAMP_KERAS) ## the CI gate on the Keras engine (.venv-keras): check --engine keras
	$(BIN_KERAS)/layerprobe check --engine keras

ui: $(STAMP) ## open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: $(STAMP) ## run the benchmarks and write BENCHMARKS.md
	$(BIN)/python -m benchmarks $(ARGS)

lock: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf /tmp/layerprobe-lock && $(PYTHON) -m venv /tmp/layerprobe-lock
	/tmp/layerprobe-lock/bin/pip install --quiet -e ".[dev,sweeps,tfds,beam]"
	/tmp/layerprobe-lock/bin/pip freeze --exclude-editable | sed '1i # Pinned versions: regenerate with `make lock`.' > constraints.txt

lock-keras: ## re-pin constraints-keras.txt: the Keras stack and the project's other dependencies (sweeps too)
	rm -rf /tmp/layerprobe-lock-keras && $(PYTHON) -m venv /tmp/layerprobe-lock-keras
	$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] + p["optional-dependencies"]["tfds"] + p["optional-dependencies"]["sweeps"] + p["optional-dependencies"]["beam"] if "python_version" not in d))' > /tmp/layerprobe-lock-keras/requirements.txt
	/tmp/layerprobe-lock-keras/bin/pip install --quiet $(KERAS_STACK) -r /tmp/layerprobe-lock-keras/requirements.txt
	/tmp/layerprobe-lock-keras/bin/pip freeze --exclude-editable | sed '1i # Keras engine pins (.venv-keras): regenerate with `make lock-keras`.' > constraints-keras.txt

clean: ## remove outputs, models, the local MLflow store and the built docs site (not .venv)
	rm -rf outputs multirun models mlruns mlflow.db site
