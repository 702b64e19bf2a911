"""The evaluation engine: val and heldout scored, slices on heldout, test only predicted, and
the tables and the DVC metrics summary on the heldout split."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from complex_ner.core.config import Params
from complex_ner.core.paths import best_model_dir, eval_split_dir, split_file
from complex_ner.domain.data import Sentence, write_conll
from complex_ner.engines.evaluate import evaluate_ensemble, evaluate_model, write_tables


@pytest.fixture
def params(
    tmp_path: Path, trained_tagger_dir: Path, toy_corpus: Callable[[int], list[Sentence]]
) -> Params:
    p = Params.defaults(tmp_path)
    p = p.model_copy(update={"data": p.data.model_copy(update={"languages": ("es",)})})
    shutil.copytree(trained_tagger_dir, best_model_dir(p, "es", "bert_crf"))
    corpus = toy_corpus(20)
    write_conll(split_file(p, "es", "val"), corpus[:4])
    write_conll(split_file(p, "es", "heldout"), corpus[4:10])
    # The official test file: no tags.
    test = "".join(
        f"# id t{i}\tdomain=test\n" + "".join(f"{tok} _ _ _\n" for tok in s.tokens) + "\n"
        for i, s in enumerate(corpus[10:12])
    )
    split_file(p, "es", "test").write_text(test, encoding="utf-8")
    return p


def test_evaluate_scores_val_and_heldout_with_slices_on_heldout(params: Params) -> None:
    scores = evaluate_model(params, "es", "bert_crf")
    assert set(scores) == {"val", "heldout"}
    assert "slices" in scores["heldout"] and "slices" not in scores["val"]
    slices = scores["heldout"]["slices"]
    assert slices["sentence_length"]["6-10"]["sentences"] == 6
    assert slices["sentence_type"]["statement"]["macro_f1"] == pytest.approx(1.0)
    held = eval_split_dir(params, "es", "bert_crf", "heldout")
    saved = json.loads((held / "metrics.json").read_text(encoding="utf-8"))
    assert saved["slices"] == slices
    assert (held / "slices.md").read_text(encoding="utf-8").startswith("# es bert_crf on heldout")
    assert not (eval_split_dir(params, "es", "bert_crf", "val") / "slices.md").exists()
    test = eval_split_dir(params, "es", "bert_crf", "test")
    assert (test / "predictions.conll").is_file() and not (test / "metrics.json").exists()


def test_tables_and_summary_report_heldout_with_val_for_reference(params: Params) -> None:
    def scores(macro: float) -> dict:
        row = {"precision": macro, "recall": macro, "f1": macro, "support": 3}
        return {
            "per_type": {t: {**row, "f1": macro / 2} for t in params.data.entity_types},
            "micro": {**row, "f1": macro + 0.01},
            "macro": row,
        }

    for split, macro in (("val", 0.9), ("heldout", 0.6)):
        path = eval_split_dir(params, "es", "bert_crf", split) / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(scores(macro)), encoding="utf-8")
    summary = write_tables(params, ["es", "zh"], ["bert_crf", "bert_linear"])
    row = summary["es"]["bert_crf"]
    assert row["heldout_macro_f1"] == 0.6 and row["heldout_micro_f1"] == pytest.approx(0.61)
    assert row["heldout_f1_PER"] == 0.3 and row["val_macro_f1"] == 0.9
    assert set(summary) == {"es"}  # nothing evaluated for zh or bert_linear
    on_disk = json.loads(params.path(params.evaluate.metrics_file).read_text(encoding="utf-8"))
    assert on_disk == summary
    table = (params.path(params.evaluate.report_dir) / "es.md").read_text(encoding="utf-8")
    assert table.startswith("# es: heldout split")
    assert "| macro | 0.6000 | 0.6000 | 0.6000 |" in table
    assert "val macro-F1 (model choice, for reference): bert_crf 0.9000" in table


def test_an_ensemble_is_scored_and_reported_under_its_own_name(params: Params) -> None:
    folder = best_model_dir(params, "es", "bert_crf")
    scores = evaluate_ensemble(params, "es", [folder, folder, folder], "vote", "trio")
    alone = evaluate_model(params, "es", "bert_crf")
    # Three copies of one model vote for its own entities: the same scores as the model.
    assert {s: v["macro"] for s, v in scores.items()} == {s: v["macro"] for s, v in alone.items()}
    # Beside, not inside, the evaluate stage's DVC output.
    trio = params.root / "reports" / "ensembles" / "es" / "trio"
    assert (
        (trio / "heldout" / "slices.md")
        .read_text(encoding="utf-8")
        .startswith("# es trio on heldout")
    )
    assert (trio / "test" / "predictions.conll").is_file()
    assert not (params.path(params.evaluate.report_dir) / "es" / "trio").exists()
    with pytest.raises(FileNotFoundError, match="no tagger.json"):
        evaluate_ensemble(params, "es", [folder, folder.parent], "vote", "pair")


def test_the_cli_scores_an_ensemble_and_refuses_a_single_model(params: Params) -> None:
    from typer.testing import CliRunner

    from complex_ner.cli import app

    path = params.root / "params.yaml"
    path.write_text("data:\n  languages: [es]\n", encoding="utf-8")
    folder = str(best_model_dir(params, "es", "bert_crf"))
    runner = CliRunner()
    args = ["evaluate-ensemble", "-p", str(path), "--lang", "es", "-m", folder]
    result = runner.invoke(app, [*args, "-m", folder])
    assert result.exit_code == 0, result.output
    # Two copies of the toy model vote for its entities, which are the gold ones.
    assert "es ensemble (vote, 2 models) heldout: macro-F1 1.0000" in result.output
    assert (params.root / "reports/ensembles/es/ensemble/val/metrics.json").is_file()
    result = runner.invoke(app, [*args, "-m", folder, "--rule", "mean", "--name", "avg"])
    assert result.exit_code == 0, result.output
    assert "es avg (mean, 2 models) val: macro-F1 " in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "two or more models" in result.output
    result = runner.invoke(app, [*args, "-m", folder, "--rule", "max"])
    assert result.exit_code == 1 and "rule must be one of vote, mean" in result.output
