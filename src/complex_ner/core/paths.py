"""Where every artifact lives: folder layout and file names, in one place.

Params give the roots (``split.processed_dir``, ``train.output_dir`` ...); this module turns them
into the per-language and per-architecture paths that the stages, engines, adapters, DVC
(``dvc.yaml`` spells the same layout) and tests all use.
"""

from __future__ import annotations

from pathlib import Path

from complex_ner.core.config import Params

# A trained run's folder: <train.output_dir>/<lang>/<run>/, the run a train.archs entry names
# (an architecture, or <arch>-s<seed>: core.config.parse_run)
BEST_DIR = "model"  # the best checkpoint on validation, a self-contained tagger folder
CHECKPOINT_DIR = "checkpoint"  # resumable state (weights, optimizer, history)
# The best model while the run goes on (hidden): it becomes BEST_DIR, with its ONNX export, only
# when the run ends, so a killed run never leaves a model folder half-made
PENDING_BEST_DIR = ".model.pending"
HISTORY_FILE = "history.json"  # one record per epoch
RUN_FILE = "mlflow_run.json"  # the MLflow run that trained the model
BUDGET_PLAN_FILE = "budget_plan.json"  # train.planned_minutes: epochs and sentences it chose
CURVES_FILE = "training_curves.png"

# A tagger folder (see domain.models.tagger)
TAGGER_FILE = "tagger.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"  # HuggingFace config + safetensors weights (the torch model)
TOKENIZER_DIR = "tokenizer"
# The ONNX export of encoder + emission head (engines/export.py), what prediction runs
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"  # opt-in dynamic int8 quantization of ONNX_FILE
EXPORT_FILE = "onnx.json"  # how it was exported and checked; the tokenizer ids it needs
#: What a served (MLflow pyfunc) model carries of a tagger folder: no torch encoder weights
SERVED_FILES = (TAGGER_FILE, HEAD_FILE, TOKENIZER_DIR, ONNX_FILE, ONNX_INT8_FILE, EXPORT_FILE)

# An ensemble folder (engines/onnx_ensemble.py): the rule and members/<i>/ (served files each)
ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_MEMBERS_DIR = "members"

# Inside a logged MLflow pyfunc model: the artifact key of the tagger folder
TAGGER_ARTIFACT = "tagger"

# Whole-word-masking pre-training: <pretrain.output_dir>/<lang>/
SKIP_MARKER = "SKIPPED"  # written when pretrain.enabled is false (DVC needs an output)
PRETRAIN_RESULT_FILE = "pretrain.json"

# Processed splits: <split.processed_dir>/<lang>/<split>.conll. Three disjoint labelled splits:
# train (fitting), val (early stopping and model choice), heldout (the reported scores and the
# champion decision; never read by training); test is the official unlabelled file (predictions).
TRAIN_SPLIT = "train"
VAL_SPLIT = "val"
HELDOUT_SPLIT = "heldout"
TEST_SPLIT = "test"
SPLITS = (TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT, TEST_SPLIT)
#: The split every reported table, DVC metric and registry decision is measured on.
REPORTED_SPLIT = HELDOUT_SPLIT

# One split's evaluation folder: <evaluate.report_dir>/<lang>/<arch>/<split>/
METRICS_JSON = "metrics.json"  # entity_scores (plus "slices" on the reported split)
METRICS_MD = "metrics.md"
SLICES_MD = "slices.md"  # slice scores of the reported split
CONFUSION_PNG = "confusion.png"
PREDICTIONS_FILE = "predictions.conll"
# Ensembles' reports (`complex-ner evaluate-ensemble`), the same files per split, kept out of
# the evaluate stage's DVC output: <ENSEMBLES_DIR>/<lang>/<name>/<split>/
ENSEMBLES_DIR = "reports/ensembles"
# The evaluate stage's own ensemble of train.archs (evaluate.ensemble_rules): reported like an
# architecture under this name, with the candidates it was chosen from in CHOICE_JSON.
ENSEMBLE = "ensemble"
CHOICE_JSON = "choice.json"

# The validation gate's verdict and its Great Expectations Data Docs, inside validate.report_dir
VALIDATION_RESULTS_FILE = "results.json"
DATA_DOCS_DIR = "data_docs"

# The registry: one registered model per language, BERT+CRF only (the paper's best head)
REGISTERED_ARCH = "bert_crf"
CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(lang: str) -> str:
    """The registry name of one language's model."""
    return f"complex-ner-{lang}"


def champion_uri(lang: str) -> str:
    """The registry URI of one language's champion."""
    return f"models:/{registered_name(lang)}@{CHAMPION}"


def raw_file(params: Params, lang: str, split: str) -> Path:
    """An ingested source file: ``<data.raw_dir>/<lang>/<split>.conll``."""
    return params.path(params.data.raw_dir) / lang / f"{split}.conll"


def split_file(params: Params, lang: str, split: str) -> Path:
    """A processed split: ``<split.processed_dir>/<lang>/<split>.conll``."""
    return params.path(params.split.processed_dir) / lang / f"{split}.conll"


def run_dir(params: Params, lang: str, arch: str) -> Path:
    """Where the training run for one language and ``train.archs`` entry lives."""
    return params.path(params.train.output_dir) / lang / arch


def best_model_dir(params: Params, lang: str, arch: str) -> Path:
    """The saved best tagger of one run."""
    return run_dir(params, lang, arch) / BEST_DIR


def eval_dir(params: Params, lang: str, arch: str) -> Path:
    """Evaluation reports of one language and architecture."""
    return params.path(params.evaluate.report_dir) / lang / arch


def eval_split_dir(params: Params, lang: str, arch: str, split: str) -> Path:
    """Evaluation reports of one split: ``<evaluate.report_dir>/<lang>/<arch>/<split>``."""
    return eval_dir(params, lang, arch) / split


def ensemble_report_dir(params: Params, lang: str, name: str) -> Path:
    """Reports of one ensemble: ``<project>/reports/ensembles/<lang>/<name>``."""
    return params.path(ENSEMBLES_DIR) / lang / name


def pretrained_encoder_dir(params: Params, lang: str) -> Path:
    """Where the WWM-adapted encoder of ``lang`` is written: ``<pretrain.output_dir>/<lang>``."""
    return params.path(params.pretrain.output_dir) / lang


def validation_results(params: Params) -> Path:
    """The gate's verdict file (a DVC metric and the split stage's dependency)."""
    return params.path(params.validate.report_dir) / VALIDATION_RESULTS_FILE


def data_docs_dir(params: Params) -> Path:
    """The gate's Data Docs site (``index.html`` inside)."""
    return params.path(params.validate.report_dir) / DATA_DOCS_DIR
