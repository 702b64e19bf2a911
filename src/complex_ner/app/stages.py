"""The application layer: every pipeline step, composed once.

"Train and log to MLflow", "evaluate and log", "register" and the rest are written here and
nowhere else. The CLI calls these functions; the DVC stages run the CLI; the Prefect tasks run
the DVC stages (``app/pipeline.py``). Engines get MLflow only as callbacks built here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from complex_ner.adapters import registry, tracking
from complex_ner.core.config import Params, parse_run
from complex_ner.core.distributed import World
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import (
    BUDGET_PLAN_FILE,
    CURVES_FILE,
    ENSEMBLE,
    EXPORT_FILE,
    HISTORY_FILE,
    PRETRAIN_RESULT_FILE,
    REGISTERED_ARCH,
    REPORTED_SPLIT,
    RUN_FILE,
    VAL_SPLIT,
    best_model_dir,
    eval_dir,
    pretrained_encoder_dir,
    registered_name,
    run_dir,
    split_file,
)
from complex_ner.domain import data, validation, vocab
from complex_ner.domain import stats as corpus_stats
from complex_ner.domain.encoders import provision_default_encoder, resolve_encoder
from complex_ner.domain.models.spec import read_tagger_json
from complex_ner.engines import evaluate as evaluation
from complex_ner.engines import export as exporting
from complex_ner.engines import predict as prediction
from complex_ner.engines import pretrain as pretraining
from complex_ner.engines import train as training
from complex_ner.engines.trainer import default_callbacks

Log = Callable[[str], None]

# --------------------------------------------------------------------------- data


def ingest(params: Params) -> dict[str, dict[str, str]]:
    """Copy the MultiCoNER source files into ``data.raw_dir``; sha256 per file."""
    return data.ingest(params)


def validate(params: Params) -> dict[str, Any]:
    """Run the Great Expectations gate; raises ``ValidationFailed`` with a readable summary."""
    return validation.validate_data(params)


def split(params: Params) -> dict[str, dict[str, int]]:
    """Refuse data the gate did not pass, then write the disjoint train/val/heldout(/test)
    splits."""
    validation.require_validated(params)
    return data.write_splits(params)


def stats(params: Params) -> dict[str, Any]:
    """Sentences, tokens and entities per type, per language and split (JSON, table, plot)."""
    return corpus_stats.write_stats(params)


# --------------------------------------------------------------------------- encoders


def provision(params: Params, force: bool = False) -> Path:
    """Materialise the offline default encoder (multilingual-e5-small) as a HuggingFace folder."""
    return provision_default_encoder(params.path(params.encoder.output_dir), force=force)


def trim(
    params: Params, out: Path | None = None, languages: Sequence[str] | None = None
) -> dict[str, Any]:
    """The trim stage: a copy of ``model.encoder`` keeping only the pieces of the training text
    (train + val) of ``trim.languages``, and with ``trim.keep_char_pieces`` every
    single-character piece of their scripts, written to ``trim.output_dir``.

    With ``trim.enabled`` false only the ``SKIPPED`` marker is written (DVC needs the stage's
    output either way). ``out`` (a one-off copy elsewhere, trimmed whatever ``trim.enabled``
    says) and ``languages`` override the params.
    """
    if out is None and not params.trim.enabled:
        folder = vocab.write_trim_skip_marker(params)
        return {"status": "skipped", "output_dir": str(folder)}
    langs = tuple(languages or vocab.trim_languages(params))
    source = Path(resolve_encoder(params.model.encoder, params.root))
    if not source.is_dir():
        raise FileNotFoundError(
            f"model.encoder: {source} is not a local folder (provision or download it)"
        )
    report = vocab.trim_encoder(
        source,
        vocab.corpus_texts(params, langs),
        params.path(out if out is not None else params.trim.output_dir),
        char_languages=langs if params.trim.keep_char_pieces else (),
        source_label=params.model.encoder,
    )
    return {"status": "trimmed", "output_dir": report.output, **report.as_dict()}


def pretrain(params: Params, lang: str, log: Log | None = print) -> dict[str, Any]:
    """Whole-word-masking pre-training of one language's encoder, tracked in MLflow.

    With ``pretrain.enabled`` false only the ``SKIPPED`` marker is written (DVC needs the
    stage's output either way).
    """
    if not params.pretrain.enabled:
        folder = pretraining.write_skip_marker(params, lang)
        return {"lang": lang, "status": "skipped", "output_dir": str(folder)}
    tags = tracking.lineage_tags(
        params, "pretrain", lang=lang, encoder=pretraining.base_encoder_label(params)
    )
    logged = {f"pretrain.{k}": v for k, v in params.pretrain.model_dump().items()}
    logged.update({"model.encoder": params.model.encoder, "model.join": params.model.join})
    logged = {
        k: json.dumps(v) if isinstance(v, list | tuple) else str(v) for k, v in logged.items()
    }
    with tracking.start_run(params, f"pretrain-{lang}", tags, log_params=logged) as run:
        callbacks = default_callbacks(f"{lang} pretrain", log, on_steps=run.log_steps)

        def log_head_steps(rows: list[tuple[int, dict[str, float]]]) -> None:
            # The warm-up's steps count from 1 too: its curves are head_loss and head_lr.
            run.log_steps([(step, {f"head_{k}": v for k, v in m.items()}) for step, m in rows])

        head_callbacks = default_callbacks(
            f"{lang} pretrain head warm-up", log, on_steps=log_head_steps
        )
        result = pretraining.pretrain_encoder(
            params,
            lang,
            callbacks=callbacks,
            head_callbacks=head_callbacks,
            extra={"mlflow_run_id": run.run_id},
        )
        run.log_metrics(result.metrics())
        run.log_artifact(result.output_dir / PRETRAIN_RESULT_FILE, "pretrain")
    return {
        "lang": lang,
        "status": "pretrained",
        "output_dir": str(pretrained_encoder_dir(params, lang)),
        "steps": result.steps,
        "head_warmup_steps": result.head_warmup_steps,
        "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss,
        "sentences": result.corpus.sentences,
        "masked_word_share": result.masking.summary()["masked_word_share"],
        **{f"eval_{point}_accuracy": score.accuracy for point, score in result.scores.items()},
    }


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainedRun:
    """What a tracked training produced (also written to the run folder's ``RUN_FILE``)."""

    lang: str
    arch: str
    run_id: str
    best_f1: float
    best_epoch: int
    model_dir: str


def needs_torchrun(params: Params) -> bool:
    """Whether ``train.devices`` asks for more processes than this one (not yet under torchrun)."""
    return params.train.devices > 1 and not World.from_env().distributed


def torchrun_command(devices: int, cli_args: Sequence[str]) -> list[str]:
    """``torchrun`` (``python -m torch.distributed.run``) with ``devices`` processes on this
    machine, each running ``complex-ner <cli_args>``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "-m",
        "complex_ner.cli",
        *cli_args,
    ]


def train_distributed(params: Params, cli_args: Sequence[str]) -> int:
    """Run ``complex-ner <cli_args>`` under torchrun with ``train.devices`` processes; torchrun's
    exit status (it stops every process when one fails).

    Each process finds itself in torchrun's environment and runs :func:`train` as its rank.
    """
    command = torchrun_command(params.train.devices, cli_args)
    return subprocess.run(command, cwd=params.root, env=dict(os.environ), check=False).returncode


def train(
    params: Params, lang: str, arch: str, *, resume: bool = False, log: Log | None = print
) -> TrainedRun | None:
    """Train one language x ``train.archs`` entry (an architecture, or ``<arch>-s<seed>``)
    inside an MLflow run; per-epoch metrics, curves.

    Under torchrun, rank 0 does all of this; the other ranks only train alongside it (no MLflow
    run, no files) and get None.
    """
    world = World.from_env()
    if not world.main:
        training.train_model(params, lang, arch, resume=resume, world=world)
        return None
    # What trains this run: train.by_language, its architecture and seed applied, so MLflow
    # shows the values used.
    used = params.for_run(lang, arch)
    tags = tracking.lineage_tags(
        params,
        "train",
        lang=lang,
        arch=used.model.arch,
        run=arch,
        encoder=pretraining.encoder_label(params, lang),
        val_data_hash=tracking.eval_data_hash(params, lang),
        world_size=str(world.size),
    )
    logged = tracking.flat_params(used)
    out = run_dir(params, lang, arch)
    with (
        _run_file_set_aside(out, best_model_dir(params, lang, arch)),
        tracking.start_run(params, f"{lang}-{arch}", tags, log_params=logged) as run,
    ):
        callbacks = default_callbacks(f"{lang} {arch}", log, on_epoch_end=run.epoch_logger())
        result = training.train_model(
            params, lang, arch, resume=resume, callbacks=callbacks, world=world
        )
        run.log_metrics(
            {"best_val_macro_f1": result.best_f1, "best_epoch": float(result.best_epoch)}
        )
        if result.model_dir is not None:
            # The ONNX export's check against the torch model (engines/export.py).
            check = json.loads((result.model_dir / EXPORT_FILE).read_text(encoding="utf-8"))
            run.log_metrics(
                {
                    f"onnx_{key}": float(check["check"][key])
                    for key in ("max_abs_emission_diff", "word_tag_agreement")
                }
            )
        if result.history:
            tracking.plot_history(result.history, out / CURVES_FILE)
            run.log_artifact(out / CURVES_FILE, "training")
            run.log_artifact(out / HISTORY_FILE, "training")
        trained = TrainedRun(lang, arch, run.run_id, result.best_f1, result.best_epoch, str(out))
        atomic_write_text(out / RUN_FILE, json.dumps(asdict(trained), indent=2) + "\n")
    return trained


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@contextmanager
def _run_file_set_aside(out: Path, model: Path) -> Iterator[None]:
    """The run file names the run behind the model folder: set aside while a training runs, so
    a killed run never leaves it naming another run's model. A training that fails before
    publishing its model (a full disk) puts it back by a rename, which needs no room: the old
    model keeps its run and can still be evaluated and registered."""
    record, aside = out / RUN_FILE, out / f".{RUN_FILE}.aside"
    if record.is_file():
        os.replace(record, aside)
    else:
        aside.unlink(missing_ok=True)  # a killed run's: its model may have been replaced since
    published = _folder_identity(model)
    try:
        yield
    except BaseException:
        if aside.is_file() and _folder_identity(model) == published:
            with suppress(OSError):  # then it stays absent, as after a kill
                os.replace(aside, record)
        raise
    finally:
        with suppress(OSError):
            aside.unlink(missing_ok=True)


def _run_file(params: Params, lang: str, arch: str, name: str) -> Any:
    """The JSON record ``name`` in the ``lang``/``arch`` run folder, or None when it is absent."""
    path = run_dir(params, lang, arch) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _trained_run(params: Params, lang: str, arch: str) -> dict[str, Any] | None:
    """The run folder's ``RUN_FILE`` record (a :class:`TrainedRun`), if it was trained."""
    return _run_file(params, lang, arch, RUN_FILE)


def recorded_run_id(params: Params, lang: str, arch: str) -> str | None:
    """The MLflow run that trained the saved ``lang``/``arch`` model, if any."""
    run = _trained_run(params, lang, arch)
    return None if run is None else run.get("run_id")


def registry_candidate(params: Params, lang: str) -> str | None:
    """The MLflow run of ``lang``'s BERT+CRF entry of ``train.archs`` with the best validation
    macro-F1 (the first on ties), if any was trained. With several seeds of BERT+CRF the choice
    is made on ``val``, like every model choice; the registry then decides on heldout."""
    best: dict[str, Any] | None = None
    for name in params.train.archs:
        run = _trained_run(params, lang, name) if parse_run(name)[0] == REGISTERED_ARCH else None
        if run is not None and (best is None or run["best_f1"] > best["best_f1"]):
            best = run
    return None if best is None else best.get("run_id")


def budget_plan(params: Params, lang: str, arch: str) -> dict[str, Any] | None:
    """What ``train.planned_minutes`` let the last ``lang``/``arch`` run train on, if it was set."""
    return _run_file(params, lang, arch, BUDGET_PLAN_FILE)


def time_budget_cut(params: Params, lang: str, arch: str) -> dict[str, Any] | None:
    """The last epoch's record of the last ``lang``/``arch`` run when ``train.time_budget_minutes``
    ended it before its last epoch, else None."""
    history = _run_file(params, lang, arch, HISTORY_FILE)
    last = history[-1] if history else {}
    return last if last.get("stopped_by") == training.TIME_BUDGET_STOP else None


# --------------------------------------------------------------------------- evaluation


#: The registry decides on the reported split: never on ``val``, which chose the epoch.
HELDOUT_METRIC = f"eval_{REPORTED_SPLIT}_macro_f1"
HELDOUT_F1_TAG = f"{REPORTED_SPLIT}_macro_f1"
#: On a registered version and on an evaluated run: which heldout sentences the score is on.
HELDOUT_HASH_TAG = f"{REPORTED_SPLIT}_data_hash"


def evaluate(params: Params, lang: str, arch: str) -> dict[str, Any]:
    """Score the saved model on every labelled split, write the reports, and attach scores,
    reports and the pyfunc model to the run that trained it."""
    scores = evaluation.evaluate_model(params, lang, arch)
    run_id = recorded_run_id(params, lang, arch)
    if run_id is None:
        return scores
    with tracking.start_run(params, f"{lang}-{arch}", {}, run_id=run_id) as run:
        # Which heldout sentences the logged score is on: the registry re-scores otherwise.
        run.set_tags({HELDOUT_HASH_TAG: tracking.eval_data_hash(params, lang, REPORTED_SPLIT)})
        for name, s in scores.items():
            run.log_metrics(
                {
                    f"eval_{name}_macro_f1": s["macro"]["f1"],
                    f"eval_{name}_micro_f1": s["micro"]["f1"],
                    **{f"eval_{name}_f1_{t}": v["f1"] for t, v in s["per_type"].items()},
                    # e.g. eval_heldout_slice_sentence_type_question_macro_f1
                    **{
                        tracking.metric_key("eval", name, "slice", kind, group, "macro_f1"): row[
                            "macro_f1"
                        ]
                        for kind, groups in s.get("slices", {}).items()
                        for group, row in groups.items()
                    },
                }
            )
        run.log_artifact(eval_dir(params, lang, arch), "evaluation")
        run.log_pyfunc(best_model_dir(params, lang, arch))
    return scores


def ensembles_on(params: Params) -> bool:
    """Whether the evaluate stage also chooses and scores an ensemble of ``train.archs``."""
    return bool(params.evaluate.ensemble_rules) and len(params.train.archs) >= 2


def evaluate_arch_ensemble(params: Params, lang: str) -> dict[str, Any]:
    """The best ensemble of ``lang``'s trained architectures on val, scored on every split
    (``evaluate.ensemble_rules``); reported as the architecture ``ensemble``."""
    return evaluation.evaluate_arch_ensemble(
        params, lang, params.train.archs, params.evaluate.ensemble_rules
    )


def tables(
    params: Params, languages: Sequence[str] | None = None, archs: Sequence[str] | None = None
) -> dict[str, Any]:
    """Paper-style tables and the DVC metrics summary over what has been evaluated (with the
    stage's ensemble after the architectures when :func:`ensembles_on`)."""
    if archs is None:
        archs = [*params.train.archs, *([ENSEMBLE] if ensembles_on(params) else [])]
    return evaluation.write_tables(params, languages or params.train.languages, archs)


def evaluate_ensemble(
    params: Params, lang: str, models: Sequence[str], rule: str = "vote", name: str = "ensemble"
) -> dict[str, Any]:
    """Score saved models of ``lang`` together, each a folder or a registered model
    (``models:/name@alias``); the reports go to ``reports/ensembles/<lang>/<name>/``."""
    folders = [
        Path(m) if Path(m).is_dir() else registry.resolve_tagger_dir(m, params) for m in models
    ]
    return evaluation.evaluate_ensemble(params, lang, folders, rule, name)


def export(params: Params, folder: Path, int8: bool = False) -> dict[str, Any]:
    """Export a saved tagger folder to ONNX (training does this for every model it saves),
    checked on the validation split of the model's language."""
    spec, _ = read_tagger_json(folder)
    val = data.read_conll(split_file(params, spec.lang, VAL_SPLIT))
    return exporting.export_onnx(
        folder, [s.tokens for s in val], int8=int8, batch_size=params.evaluate.batch_size
    )


# --------------------------------------------------------------------------- registry


def heldout_f1(params: Params, lang: str, model: str) -> float:
    """Macro-F1 of a tagger folder, or a logged or registered model, on the current heldout
    data."""
    folder = Path(model) if Path(model).is_dir() else registry.resolve_tagger_dir(model, params)
    tagger = prediction.load_tagger(folder)  # what the registry serves: the ONNX export
    sentences = data.read_conll(split_file(params, lang, REPORTED_SPLIT))
    scores = evaluation.evaluate_f1(
        tagger, sentences, params.data.entity_types, params.evaluate.batch_size
    )
    return float(scores["macro"]["f1"])


def _champion_f1_on(params: Params, lang: str, version: str, tags: dict[str, str]) -> float:
    """The champion's macro-F1 on the current heldout data (re-scored if the data changed)."""
    current = tracking.eval_data_hash(params, lang, REPORTED_SPLIT)
    if tags.get(HELDOUT_HASH_TAG) == current and HELDOUT_F1_TAG in tags:
        return float(tags[HELDOUT_F1_TAG])
    return heldout_f1(params, lang, f"models:/{registered_name(lang)}/{version}")


def register_best(
    params: Params, lang: str, run_ids: Sequence[str] | None = None
) -> registry.Registration:
    """Register the best BERT+CRF run of ``lang``: ``champion`` only if it beats the current
    champion on the same heldout data, otherwise ``challenger``.

    Both sides are scored on the reported split (``heldout``), which neither training nor
    early stopping saw; the validation score chose the epoch and would flatter each run. A
    candidate evaluated on other heldout data than today's is re-scored, as the champion is.

    Under the registry lock: concurrent registrations decide one after the other. Should the
    registration fail half-way, the registered model is put back as it was.

    Raises:
        LookupError: no candidate run with a logged model and a heldout score.
    """
    with registry.lock(params):
        before = registry.snapshot(params, lang)
        try:
            return _register_best(params, lang, run_ids)
        except BaseException as exc:
            _restore([before], params, exc)
            raise


def _restore(befores: Sequence[registry.Snapshot], params: Params, exc: BaseException) -> None:
    """Undo a failed registration (the error that made it fail is what the caller raises)."""
    for before in befores:
        try:
            registry.restore(params, before)
        except Exception as undo:  # e.g. the same full disk: say so beside the first error
            exc.add_note(f"the registry of {before.name} could not be restored: {undo}")


def _register_best(
    params: Params, lang: str, run_ids: Sequence[str] | None
) -> registry.Registration:
    """:func:`register_best` inside the lock."""
    if run_ids is None:
        rid = registry_candidate(params, lang)
        run_ids = [rid] if rid else []
    current_hash = tracking.eval_data_hash(params, lang, REPORTED_SPLIT)
    candidates = []
    for rid in run_ids:
        run = registry.run_summary(params, rid)
        if run.tags.get("arch") != REGISTERED_ARCH or run.tags.get("lang") != lang:
            continue
        f1 = run.metrics.get(HELDOUT_METRIC)
        if f1 is not None and run.model_uri is not None:
            if run.tags.get(HELDOUT_HASH_TAG) != current_hash:
                f1 = heldout_f1(params, lang, run.model_uri)
            candidates.append((f1, run))
    if not candidates:
        raise LookupError(
            f"no {REGISTERED_ARCH} run for {lang!r} with a logged model and {HELDOUT_METRIC}; "
            "run train and evaluate first"
        )
    f1, best = max(candidates, key=lambda c: c[0])
    micro = best.metrics.get(f"eval_{REPORTED_SPLIT}_micro_f1", float("nan"))
    tags = {
        # Full precision: a rounded tag would make an equal model look better than the champion.
        HELDOUT_F1_TAG: repr(float(f1)),
        f"{REPORTED_SPLIT}_micro_f1": repr(float(micro)),
        HELDOUT_HASH_TAG: current_hash,
        "data_version": best.tags.get("data_version", "unknown"),
        "encoder": best.tags.get("encoder", "unknown"),
        "arch": REGISTERED_ARCH,
        "lang": lang,
        "git_commit": best.tags.get("git_commit", "unknown"),
    }
    val_f1 = best.metrics.get(f"eval_{VAL_SPLIT}_macro_f1")
    if val_f1 is not None:
        tags[f"{VAL_SPLIT}_macro_f1"] = repr(float(val_f1))  # for reference only
    assert best.model_uri is not None
    version = registry.register_version(params, lang, best.model_uri, tags)
    current = registry.version_by_alias(params, lang, registry.CHAMPION)
    champion_f1 = None
    if current is not None and current[0] != version:
        champion_f1 = _champion_f1_on(params, lang, *current)
    alias = registry.alias_for(float(f1), champion_f1)
    registry.set_alias(params, lang, alias, version)
    return registry.Registration(lang, version, alias, float(f1), champion_f1, best.run_id)


def register(params: Params, languages: Sequence[str] | None = None) -> dict[str, Any]:
    """Register every language's best BERT+CRF run; record the outcome in ``register.output``
    (the file exists after every registration: DVC tracks it)."""
    langs = languages or params.train.languages
    # All or nothing: should a language fail, or the record not be written (a full disk, a
    # read-only folder), every language's registered model is put back as it was.
    with registry.lock(params):
        befores = [registry.snapshot(params, lang) for lang in langs]
        try:
            out = {lang: asdict(_register_best(params, lang, None)) for lang in langs}
            text = json.dumps(out, indent=2) + "\n"
            atomic_write_text(params.path(params.register.output), text)
        except BaseException as exc:
            _restore(befores, params, exc)
            raise
    return out
