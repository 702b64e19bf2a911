"""The application layer end to end on a tiny project: train and log, evaluate and log,
register with the champion/challenger rule, resolve the champion, pretrain and log.

Real MLflow (a SQLite store in a temporary folder), tiny random BERTs, synthetic sentences.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from complex_ner.adapters import tracking
from complex_ner.app import serve, stages
from complex_ner.core.config import Params, load_params
from complex_ner.core.paths import (
    CHALLENGER,
    CHAMPION,
    RUN_FILE,
    best_model_dir,
    champion_uri,
    eval_dir,
    run_dir,
)
from complex_ner.domain.data import Sentence, write_conll
from tests.integration.reliability import toy_project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _project(tmp_path: Path, encoder: Path, train: list[Sentence], **sections: dict) -> Params:
    return load_params(toy_project(tmp_path, encoder, train, **sections))


@pytest.fixture
def project(
    tmp_path: Path,
    tiny_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
    monkeypatch: pytest.MonkeyPatch,
) -> Params:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    return _project(tmp_path, tiny_bert_dir, toy_corpus(24))


def test_train_evaluate_register_and_resolve_the_champion(
    project: Params, toy_corpus: Callable[[int], list[Sentence]]
) -> None:
    import mlflow

    lines: list[str] = []
    trained = stages.train(project, "es", "bert_crf", log=lines.append)

    # The run folder names its MLflow run; the run has one metric point per epoch.
    recorded = json.loads((run_dir(project, "es", "bert_crf") / RUN_FILE).read_text())
    assert recorded["run_id"] == trained.run_id
    client = mlflow.MlflowClient()
    history = client.get_metric_history(trained.run_id, "val_macro_f1")
    assert [m.step for m in history] == [1, 2]
    run = client.get_run(trained.run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["lang"] == "es" and run.data.tags["arch"] == "bert_crf"
    assert any("epoch 2/2" in line for line in lines), lines

    scores = stages.evaluate(project, "es", "bert_crf")
    assert set(scores) == {"val", "heldout"}
    run = client.get_run(trained.run_id)
    metrics = run.data.metrics
    assert metrics["eval_val_macro_f1"] == pytest.approx(scores["val"]["macro"]["f1"])
    assert metrics["eval_heldout_macro_f1"] == pytest.approx(scores["heldout"]["macro"]["f1"])
    # Slice macro-F1s of the reported split, under valid MLflow names ("21+" -> "21plus").
    slices = scores["heldout"]["slices"]
    assert metrics["eval_heldout_slice_sentence_type_statement_macro_f1"] == pytest.approx(
        slices["sentence_type"]["statement"]["macro_f1"]
    )
    assert "eval_heldout_slice_sentence_length_21plus_macro_f1" in metrics
    assert not any(k.startswith("eval_val_slice") for k in metrics)
    heldout_dir = eval_dir(project, "es", "bert_crf") / "heldout"
    assert (heldout_dir / "slices.md").is_file() and (heldout_dir / "metrics.md").is_file()

    first = stages.register(project, ["es"])["es"]
    assert first["alias"] == CHAMPION and first["champion_f1"] is None
    assert first["heldout_macro_f1"] == pytest.approx(scores["heldout"]["macro"]["f1"])
    # The same run again: equal, not better, so it may not take the champion alias.
    second = stages.register(project, ["es"])["es"]
    assert second["alias"] == CHALLENGER
    assert second["champion_f1"] == pytest.approx(first["heldout_macro_f1"])
    outcome = json.loads(project.path(project.register.output).read_text())
    assert outcome["es"]["version"] == second["version"]

    # The champion alias resolves to the model this run trained.
    rows = [list(s.tokens) for s in toy_corpus(24)]
    champion = serve.load_model(champion_uri("es"), project)
    local = serve.load_model(str(best_model_dir(project, "es", "bert_crf")), project)
    assert serve.predict(champion, rows) == serve.predict(local, rows)
    with pytest.raises(LookupError, match="no-such"):
        serve.load_model("models:/complex-ner-es@no-such", project)


def test_champion_is_rescored_when_the_heldout_data_changed(
    project: Params, toy_corpus: Callable[[int], list[Sentence]]
) -> None:
    stages.train(project, "es", "bert_crf", log=None)
    stages.evaluate(project, "es", "bert_crf")
    first = stages.register(project, ["es"])["es"]
    # New heldout sentences the champion never saw: its stored score no longer applies.
    harder = [
        Sentence(id=f"h{i}", tokens=("vive", "en", "lima"), tags=("O", "O", "B-PER"))
        for i in range(4)
    ]
    write_conll(project.path("data/processed/es/heldout.conll"), harder)
    stages.evaluate(project, "es", "bert_crf")
    again = stages.register(project, ["es"])["es"]
    assert again["champion_f1"] == pytest.approx(again["heldout_macro_f1"])
    assert again["champion_f1"] != pytest.approx(first["heldout_macro_f1"])
    assert again["alias"] == CHALLENGER


def test_pretrain_is_tracked_under_the_parent_run(
    tmp_path: Path,
    tiny_e5_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = _project(
        tmp_path,
        tiny_e5_bert_dir,
        toy_corpus(12),
        pretrain={"enabled": True, "languages": ["es"], "batch_size": 4, "lr": 1e-3},
    )
    with tracking.pipeline_run(params) as parent:
        out = stages.pretrain(params, "es", log=None)
    assert out["status"] == "pretrained" and out["sentences"] == 12
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'pretrain'")
    assert run.info.run_name == "pretrain-es"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["pretrain.batch_size"] == "4"
    assert run.data.metrics["corpus_sentences"] == 12
    curve = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in curve] == list(range(1, out["steps"] + 1))
    summary = json.loads((Path(out["output_dir"]) / "pretrain.json").read_text())
    assert summary["mlflow_run_id"] == run.info.run_id


def test_pretrain_disabled_writes_only_the_marker(project: Params) -> None:
    out = stages.pretrain(project, "es", log=None)
    assert out["status"] == "skipped"
    assert [p.name for p in Path(out["output_dir"]).iterdir()] == ["SKIPPED"]
