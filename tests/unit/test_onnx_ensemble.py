"""Ensemble folders: ONNX exports predicting as one model, as the scored torch ensemble does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from complex_ner.cli import app
from complex_ner.core.config import DataConfig, ModelConfig, Params
from complex_ner.core.paths import (
    CHOICE_JSON,
    ENSEMBLE,
    ENSEMBLE_FILE,
    EXPORT_FILE,
    ONNX_FILE,
    best_model_dir,
    eval_dir,
)
from complex_ner.domain.data import Sentence, format_conll, read_conll
from complex_ner.domain.models.ensemble import TaggerEnsemble
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines.export import export_onnx
from complex_ner.engines.onnx_ensemble import OnnxEnsemble, ensemble_members, save_ensemble
from complex_ner.engines.predict import batch_model_key, load_tagger, predict_entities

Corpus = Callable[[int], list[Sentence]]


@pytest.fixture(scope="module")
def random_tagger_dirs(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path, toy_corpus: Corpus
) -> list[Path]:
    """Two untrained Spanish taggers saved and exported (checked on the toy corpus, so their
    exports tag those sentences exactly as torch does)."""
    words = [list(s.tokens) for s in toy_corpus(20)]
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        tagger = build_model(str(tiny_bert_dir), DataConfig().tags, ModelConfig(), lang="es")
        folder = tagger.eval().save(tmp_path_factory.mktemp("random") / f"seed{seed}")
        export_onnx(folder, words)
        out.append(folder)
    return out


@pytest.mark.parametrize(
    ("rule", "members"),
    [("vote", (0, 1, 2)), ("mean", (0, 0, 1))],  # mean: two copies of the trained tagger
)
def test_the_folder_predicts_as_the_scored_torch_ensemble(
    rule: str,
    members: tuple[int, ...],
    trained_tagger_dir: Path,
    random_tagger_dirs: list[Path],
    toy_corpus: Corpus,
    tmp_path: Path,
    one_thread: None,
) -> None:
    pool = [trained_tagger_dir, *random_tagger_dirs]
    folders = [pool[i] for i in members]
    record = save_ensemble(tmp_path / "ens", folders, rule)
    assert record["rule"] == rule and record["lang"] == "es" and len(record["members"]) == 3
    words = [list(s.tokens) for s in toy_corpus(20)]
    ensemble = load_tagger(tmp_path / "ens")
    assert isinstance(ensemble, OnnxEnsemble)
    want = TaggerEnsemble.load(folders, rule=rule).predict(words, batch_size=5)
    assert ensemble.predict(words, batch_size=5) == want
    if rule == "vote":
        # The random members disagree with the trained one somewhere: not just its copy.
        alone = load_tagger(trained_tagger_dir).predict(words)
        assert any(load_tagger(f).predict(words) != alone for f in random_tagger_dirs)
    # The folder is self-contained: members are copies (links), not references.
    for member in ensemble_members(tmp_path / "ens")[1]:
        assert member.is_relative_to(tmp_path / "ens") and (member / ONNX_FILE).is_file()
        assert not (member / "encoder").exists()  # no torch weights


def test_entities_carry_the_members_mean_confidence(
    trained_tagger_dir: Path, random_tagger_dirs: list[Path], tmp_path: Path, one_thread: None
) -> None:
    save_ensemble(tmp_path / "ens", [trained_tagger_dir, trained_tagger_dir], "vote")
    ensemble, single = load_tagger(tmp_path / "ens"), load_tagger(trained_tagger_dir)
    text = "Luis vive en Quito y escucha Soda Stereo"
    got, want = predict_entities(ensemble, [text]), predict_entities(single, [text])
    assert got == want  # two copies of one tagger: its entities and its confidences
    assert [(e["text"], e["type"]) for e in got[0]] == [
        ("Luis", "PER"),
        ("Quito", "LOC"),
        ("Soda Stereo", "GRP"),
    ]
    assert batch_model_key(tmp_path / "ens") == ensemble.model_key
    assert ensemble.model_key != single.model_key


def test_cli_builds_the_folder_and_predicts_with_it(
    trained_tagger_dir: Path, random_tagger_dirs: list[Path], tmp_path: Path, toy_corpus: Corpus
) -> None:
    runner = CliRunner()
    out = tmp_path / "es-vote"
    args = ["ensemble", "-l", "es", "-m", str(trained_tagger_dir), "-m", str(trained_tagger_dir)]
    res = runner.invoke(app, [*args, "-m", str(random_tagger_dirs[0]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / ENSEMBLE_FILE).read_text(encoding="utf-8"))["sources"] == [
        str(trained_tagger_dir),
        str(trained_tagger_dir),
        str(random_tagger_dirs[0]),
    ]
    res = runner.invoke(app, ["predict", "--model", str(out), "Ana vive en Cusco"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(e["text"], e["type"]) for e in line["entities"]] == [("Ana", "PER"), ("Cusco", "LOC")]
    src, sub = tmp_path / "test.conll", tmp_path / "sub.conll"
    src.write_text(format_conll(toy_corpus(7)), encoding="utf-8")
    res = runner.invoke(
        app, ["predict-batch", "-i", str(src), "-o", str(sub), "-m", str(out), "--chunk-size", "3"]
    )
    assert res.exit_code == 0, res.output
    words = [list(s.tokens) for s in toy_corpus(7)]
    assert [list(s.tags or ()) for s in read_conll(sub)] == load_tagger(out).predict(words)
    res = runner.invoke(app, ["serve", "--model", str(out)])
    assert res.exit_code == 1 and "an ensemble folder; HTTP serving takes" in res.output
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "zh"), "-l", "zh"])
    assert res.exit_code == 1 and "trained on 'es', not 'zh'" in res.output
    assert not (tmp_path / "zh").exists()


def test_bad_members_are_refused_by_name_and_leave_the_old_folder(
    trained_tagger_dir: Path, random_tagger_dirs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "ens"
    save_ensemble(out, [trained_tagger_dir, random_tagger_dirs[0]], "vote")
    before = (out / ENSEMBLE_FILE).read_bytes()
    with pytest.raises(ValueError, match="two or more models, got 1"):
        save_ensemble(out, [trained_tagger_dir], "vote")
    with pytest.raises(ValueError, match="rule must be one of vote, mean, got 'max'"):
        save_ensemble(out, [trained_tagger_dir, trained_tagger_dir], "max")
    bare = Path(shutil.copytree(random_tagger_dirs[1], tmp_path / "bare"))
    (bare / EXPORT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"bare: no ONNX export.*complex-ner export"):
        save_ensemble(out, [trained_tagger_dir, bare], "mean")
    with pytest.raises(FileNotFoundError, match="not a complex-ner model folder"):
        save_ensemble(out, [trained_tagger_dir, tmp_path / "nothing"], "vote")
    assert (out / ENSEMBLE_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "ens"]  # no staging left


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"rule": "max"}, "field rule must be one of vote, mean, got 'max'"),
        ({"members": ["members/0"]}, "field members must list two or more"),
        ({"members": ["members/0", "../elsewhere"]}, r"field members\[1\] must be a folder inside"),
        ({"members": ["members/0", "/abs"]}, r"field members\[1\] must be a folder inside"),
        ({"format_version": 9}, "unsupported format_version 9"),
    ],
)
def test_a_malformed_ensemble_file_names_the_field(
    edit: dict[str, Any],
    message: str,
    trained_tagger_dir: Path,
    random_tagger_dirs: list[Path],
    tmp_path: Path,
) -> None:
    out = tmp_path / "ens"
    save_ensemble(out, [trained_tagger_dir, random_tagger_dirs[0]], "vote")
    path = out / ENSEMBLE_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_tagger(out)
    assert str(path) in str(info.value)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tagger(out)


def test_a_missing_member_folder_is_named(
    trained_tagger_dir: Path, random_tagger_dirs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "ens"
    save_ensemble(out, [trained_tagger_dir, random_tagger_dirs[0]], "mean")
    shutil.rmtree(out / "members" / "1")
    with pytest.raises(FileNotFoundError, match=r"members\[1\] .*members/1 does not exist"):
        load_tagger(out)


def test_cli_builds_the_evaluate_stages_choice(
    trained_tagger_dir: Path,
    random_tagger_dirs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = Params.defaults(tmp_path)  # no params.yaml in tmp_path: prediction's defaults
    for arch, source in (("bert_crf", trained_tagger_dir), ("bert_linear", random_tagger_dirs[0])):
        shutil.copytree(source, best_model_dir(params, "es", arch))
    runner, out = CliRunner(), tmp_path / "ens"
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["ensemble", "-l", "es", "--chosen", "-o", str(out)])
    assert res.exit_code == 1 and "no ensemble choice" in res.output
    choice = eval_dir(params, "es", ENSEMBLE) / CHOICE_JSON
    choice.parent.mkdir(parents=True)
    chosen = {"members": ["bert_crf", "bert_linear"], "rule": "mean", "val_macro_f1": 0.5}
    choice.write_text(json.dumps({"chosen": chosen, "candidates": [chosen]}), encoding="utf-8")
    res = runner.invoke(app, ["ensemble", "-l", "es", "--chosen", "-o", str(out)])
    assert res.exit_code == 0, res.output
    record = json.loads((out / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    assert record["rule"] == "mean"
    assert record["sources"] == [str(best_model_dir(params, "es", a)) for a in chosen["members"]]
    res = runner.invoke(app, ["ensemble", "-l", "es", "-o", str(out)])
    assert res.exit_code == 2 and "either --model two or more times or --chosen" in res.output
