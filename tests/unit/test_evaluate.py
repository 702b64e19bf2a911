"""The evaluation engine: val and heldout scored, slices on heldout, test only predicted, and
the tables and the DVC metrics summary on the heldout split."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from complex_ner.core.config import Params
from complex_ner.core.paths import best_model_dir, eval_split_dir, split_file
from complex_ner.domain.data import Sentence, write_conll
from complex_ner.engines.evaluate import (
    evaluate_arch_ensemble,
    evaluate_ensemble,
    evaluate_model,
    write_tables,
)


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


@pytest.fixture
def three_archs(params: Params, tiny_bert_dir: Path) -> Params:
    """``params`` with every architecture saved: two copies of the toy tagger (bert_crf,
    bert_bilstm_crf) and an untrained tiny linear tagger that tags noise."""
    from complex_ner.core.config import DataConfig, ModelConfig
    from complex_ner.domain.models.tagger import build_model

    shutil.copytree(
        best_model_dir(params, "es", "bert_crf"), best_model_dir(params, "es", "bert_bilstm_crf")
    )
    torch.manual_seed(0)
    noise = build_model(
        str(tiny_bert_dir), DataConfig().tags, ModelConfig(arch="bert_linear"), lang="es"
    )
    noise.save(best_model_dir(params, "es", "bert_linear"))
    archs = ("bert_crf", "bert_bilstm_crf", "bert_linear")
    return params.model_copy(
        update={
            "train": params.train.model_copy(update={"archs": archs}),
            "evaluate": params.evaluate.model_copy(update={"ensemble_rules": ("vote", "mean")}),
        }
    )


def test_the_stage_ensemble_is_chosen_on_val_among_every_combination(three_archs: Params) -> None:
    p = three_archs
    scores = evaluate_arch_ensemble(p, "es", p.train.archs, p.evaluate.ensemble_rules)
    folder = p.path(p.evaluate.report_dir) / "es" / "ensemble"
    record = json.loads((folder / "choice.json").read_text(encoding="utf-8"))
    candidates = record["candidates"]
    # 3 pairs and the trio, each by both rules.
    assert len(candidates) == 8
    assert {(tuple(c["members"]), c["rule"]) for c in candidates} >= {
        (("bert_crf", "bert_linear"), "vote"),
        (("bert_crf", "bert_bilstm_crf", "bert_linear"), "mean"),
    }
    best = max(c["val_macro_f1"] for c in candidates)
    assert record["chosen"]["val_macro_f1"] == best == scores["val"]["macro"]["f1"]
    # The two toy taggers agree with each other and with gold; a pair with the noisy tagger
    # votes only for what both predicted, so it scores lower.
    assert record["chosen"]["members"] == ["bert_crf", "bert_bilstm_crf"]
    noisy_pair = next(
        c for c in candidates if c["members"] == ["bert_crf", "bert_linear"] and c["rule"] == "vote"
    )
    assert noisy_pair["val_macro_f1"] < best
    assert scores["choice"] == record["chosen"]
    assert "slices" in scores["heldout"] and (folder / "test" / "predictions.conll").is_file()
    with pytest.raises(ValueError, match="two or more archs"):
        evaluate_arch_ensemble(p, "es", ["bert_crf"], ["vote"])


def test_the_evaluate_command_reports_the_ensemble_beside_the_archs(three_archs: Params) -> None:
    from typer.testing import CliRunner

    from complex_ner.cli import app

    path = three_archs.root / "params.yaml"
    path.write_text(
        "data:\n  languages: [es]\ntrain:\n  languages: [es]\n"
        "  archs: [bert_crf, bert_bilstm_crf, bert_linear]\n"
        "evaluate:\n  ensemble_rules: [vote]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["evaluate", "-p", str(path)])
    assert result.exit_code == 0, result.output
    assert "es ensemble (vote: bert_crf + bert_bilstm_crf) heldout: macro-F1 1.0000" in (
        result.output
    )
    summary = json.loads(three_archs.path(three_archs.evaluate.metrics_file).read_text("utf-8"))
    assert list(summary["es"]) == ["bert_crf", "bert_bilstm_crf", "bert_linear", "ensemble"]
    assert summary["es"]["ensemble"]["heldout_macro_f1"] == pytest.approx(1.0)
    table = (three_archs.path(three_archs.evaluate.report_dir) / "es.md").read_text("utf-8")
    assert "ensemble F1" in table


def test_seeds_of_one_head_are_evaluated_and_ensembled_under_their_run_names(
    params: Params,
) -> None:
    from typer.testing import CliRunner

    from complex_ner.cli import app

    # A second BERT+CRF run (a copy of the toy tagger stands in for its own seed).
    shutil.copytree(
        best_model_dir(params, "es", "bert_crf"), best_model_dir(params, "es", "bert_crf-s29")
    )
    path = params.root / "params.yaml"
    path.write_text(
        "data:\n  languages: [es]\ntrain:\n  languages: [es]\n  archs: [bert_crf, bert_crf-s29]\n"
        "evaluate:\n  ensemble_rules: [vote]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["evaluate", "-p", str(path)])
    assert result.exit_code == 0, result.output
    assert "es bert_crf-s29 heldout: macro-F1 1.0000" in result.output
    assert "es ensemble (vote: bert_crf + bert_crf-s29) heldout: macro-F1 1.0000" in result.output
    summary = json.loads(params.path(params.evaluate.metrics_file).read_text("utf-8"))
    assert list(summary["es"]) == ["bert_crf", "bert_crf-s29", "ensemble"]
    held = eval_split_dir(params, "es", "bert_crf-s29", "heldout")
    assert (held / "metrics.json").is_file() and (held / "slices.md").is_file()
