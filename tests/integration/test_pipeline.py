"""The whole Prefect pipeline on a small real slice with a tiny model, in temporary homes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from complex_ner.domain.data import format_conll, read_conll
from complex_ner.domain.encoders import minilm_dir, tiny_random_bert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_project(tmp: Path, multiconer_dir: Path, n: int = 160) -> Path:
    for lang in ("es", "zh"):
        sents = read_conll(multiconer_dir / lang / "train.conll")[:n]
        (tmp / "src" / lang).mkdir(parents=True)
        (tmp / "src" / lang / "train.conll").write_text(format_conll(sents), encoding="utf-8")
    tiny = tiny_random_bert(minilm_dir(), tmp / "tiny-bert", hidden=64, layers=2, heads=4)
    params = tmp / "params.yaml"
    params.write_text(
        f"""
data: {{source_dir: src}}
split: {{val_fraction: 0.25}}
encoder: {{output_dir: tiny-bert}}
model: {{encoder: {tiny}, max_length: 64, stride: 16, dropout: 0.1}}
train: {{epochs: 4, batch_size: 16, lr_encoder: 2.0e-3, lr_min: 1.0e-4, lr_head: 1.0e-2,
        schedule: constant, freeze_embeddings: false, threads: 1}}
""",
        encoding="utf-8",
    )
    return params


def test_pipeline_logs_registers_and_guards_the_champion(
    tmp_path: Path, multiconer_dir: Path, prefect_home: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from flows.pipeline import pipeline

    from complex_ner.adapters.tracking import setup
    from complex_ner.core.config import load_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_project(tmp_path, multiconer_dir)
    first = pipeline(str(params))

    p = load_params(params)
    assert Path(tmp_path / "mlruns" / "mlflow.db").is_file()
    setup(p)
    client = mlflow.MlflowClient()
    runs = {r["lang"]: r for r in first["runs"]}
    assert set(runs) == {"es", "zh"}
    for lang, r in runs.items():
        run = client.get_run(r["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == first["parent_run_id"]
        assert run.data.tags["lang"] == lang and run.data.tags["arch"] == "bert_crf"
        assert run.data.params["train.epochs"] == "4"
        history = client.get_metric_history(r["run_id"], "val_macro_f1")
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert "val_f1_PER" in run.data.metrics and "lr" in run.data.metrics
        arts = {a.path for a in client.list_artifacts(r["run_id"], "evaluation/val")}
        assert {"evaluation/val/metrics.json", "evaluation/val/confusion.png"} <= arts
        assert {a.path for a in client.list_artifacts(r["run_id"], "training")} >= {
            "training/history.json",
            "training/training_curves.png",
        }
        mv = client.get_model_version_by_alias(f"complex-ner-{lang}", "champion")
        assert str(mv.version) == "1" and mv.tags["encoder"] == str(p.model.encoder)
        assert "val_macro_f1" in mv.tags and "data_version" in mv.tags
    assert (tmp_path / "reports/eval/results.md").is_file()
    summary = json.loads((tmp_path / "reports/metrics.json").read_text("utf-8"))
    assert set(summary) == {"es", "zh"}

    # The champion loads by alias in this process and tags raw text.
    model = mlflow.pyfunc.load_model("models:/complex-ner-es@champion")
    out = model.predict({"text": "la casa blanca está en washington ."})
    assert list(out.columns) == ["entities"] and len(out) == 1

    # A worse model (one epoch, a head that barely learns) must not take the alias.
    second = pipeline(
        str(params),
        [
            "train.epochs=1",
            "train.lr_head=1.0e-7",
            "train.lr_encoder=1.0e-7",
            "train.lr_min=1.0e-8",
        ],
    )
    for reg in second["registrations"]:
        first_f1 = next(r for r in first["registrations"] if r["lang"] == reg["lang"])
        assert reg["val_macro_f1"] <= first_f1["val_macro_f1"]
        assert reg["version"] == "2" and reg["alias"] == "challenger"
        champion = client.get_model_version_by_alias(f"complex-ner-{reg['lang']}", "champion")
        assert str(champion.version) == "1"
    # The mlflow-free registry lookup of `complex-ner predict` finds what mlflow finds.
    from complex_ner.adapters.tracking import _tagger_path, local_registry_folder

    for uri in ("models:/complex-ner-es@champion", "models:/complex-ner-zh@challenger",
                "models:/complex-ner-es/2"):  # fmt: skip
        by_mlflow = _tagger_path(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)))
        assert by_mlflow is not None
        assert local_registry_folder(uri, tmp_path) == by_mlflow
    assert local_registry_folder("models:/complex-ner-es@nobody", tmp_path) is None
    assert local_registry_folder("models:/complex-ner-es/99", tmp_path) is None
    assert local_registry_folder("runs:/abc/model", tmp_path) is None

    # The same model registered again ties the champion: a tie does not take the alias.
    from complex_ner.adapters.tracking import register_best

    tie = register_best(p, "es", [runs["es"]["run_id"]])
    assert tie.alias == "challenger" and tie.champion_f1 == tie.val_macro_f1
