"""The trim stage and the rule that picks the encoder pretraining and training start from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from complex_ner.app import stages
from complex_ner.cli import app
from complex_ner.core.config import Params, load_params
from complex_ner.core.paths import SKIP_MARKER
from complex_ner.domain.data import Sentence, write_conll
from complex_ner.domain.vocab import TRIM_FILE, corpus_texts
from complex_ner.engines.pretrain import base_encoder, encoder_label, start_encoder

Sample = Callable[[str, int], tuple[list[list[str]], list[list[str]]]]  # conftest.conll_sample
HELDOUT_WORD = "heldoutonlyword"  # in no train or val sentence


def _with(params: Params, section: str, **changes: Any) -> Params:
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


@pytest.fixture
def project(conll_sample: Sample, tmp_path: Path, tiny_e5_bert_dir: Path) -> Path:
    """A project folder: processed es and zh splits (train 12, val 4, heldout 2 sentences) and
    a params.yaml with trim enabled over the tiny e5 BERT, named relative to the project."""
    for lang in ("es", "zh"):
        words, tags = conll_sample(lang, 16)
        rows = [
            Sentence(id=f"s{i}", tokens=tuple(w), tags=tuple(t))
            for i, (w, t) in enumerate(zip(words, tags, strict=True))
        ]
        folder = tmp_path / "data" / "processed" / lang
        write_conll(folder / "train.conll", rows[:12])
        write_conll(folder / "val.conll", rows[12:])
        heldout = Sentence(id="h", tokens=(HELDOUT_WORD, "."), tags=("O", "O"))
        write_conll(folder / "heldout.conll", [heldout, *rows[:1]])
    (tmp_path / "models" / "encoders").mkdir(parents=True)
    (tmp_path / "models" / "encoders" / "full").symlink_to(tiny_e5_bert_dir)
    config = {
        "data": {"languages": ["es", "zh"]},
        "model": {"encoder": "models/encoders/full"},
        "trim": {"enabled": True},
        "train": {"device": "cpu"},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_corpus_is_the_training_text_only(project: Path) -> None:
    params = load_params(project)
    texts = corpus_texts(params, ["es", "zh"])
    assert len(texts) == 2 * 16
    assert not any(HELDOUT_WORD in text for text in texts)
    assert len(corpus_texts(params, ["es"], ("train",))) == 12


def test_disabled_stage_writes_a_marker_and_enabled_training_names_the_command(
    project: Path,
) -> None:
    params = load_params(project, ["trim.enabled=false"])
    out = stages.trim(params)
    folder = project.parent / "models" / "encoders" / "trimmed"
    assert out == {"status": "skipped", "output_dir": str(folder)}
    assert [p.name for p in folder.iterdir()] == [SKIP_MARKER]
    assert Path(start_encoder(params, "es")) == (project.parent / "models/encoders/full").resolve()
    enabled = _with(params, "trim", enabled=True)
    with pytest.raises(FileNotFoundError, match=r"SKIPPED.*complex-ner encoder trim"):
        start_encoder(enabled, "es")


def test_cli_trims_the_training_text_and_training_starts_from_it(
    project: Path, tiny_e5_bert_dir: Path
) -> None:
    result = CliRunner().invoke(app, ["encoder", "trim", "-p", str(project)])
    assert result.exit_code == 0, result.output
    assert "trimmed 250,002 ->" in result.output and "es, zh scripts" in result.output
    folder = project.parent / "models" / "encoders" / "trimmed"
    recorded = json.loads((folder / TRIM_FILE).read_text(encoding="utf-8"))
    assert recorded["corpus_texts"] == 2 * 16  # heldout left out
    assert recorded["char_languages"] == ["es", "zh"] and recorded["script_pieces"] > 0
    # Nothing in the folder says where the project lives: its bytes (and DVC hash) do not either.
    assert recorded["source"] == "models/encoders/full"
    assert str(project.parent) not in (folder / TRIM_FILE).read_text(encoding="utf-8")

    params = load_params(project)
    assert base_encoder(params, "zh") == start_encoder(params, "zh") == str(folder.resolve())
    assert encoder_label(params, "es") == "models/encoders/trimmed (trimmed models/encoders/full)"
    with pytest.raises(ValueError, match=r"trim\.languages: 'zh' is not among \['es'\]"):
        start_encoder(_with(params, "trim", languages=("es",)), "zh")
    other = _with(params, "model", encoder=str(tiny_e5_bert_dir))
    with pytest.raises(ValueError, match=r"model\.encoder: .* was trimmed from 'models/enc"):
        start_encoder(other, "es")
    full = _with(params, "trim", enabled=False)
    assert Path(start_encoder(full, "es")) == tiny_e5_bert_dir.resolve()
    assert encoder_label(full, "es") == "models/encoders/full"

    # WWM pretraining starts from the trimmed encoder; training from the adapted one.
    adapted = project.parent / "models" / "encoders" / "wwm" / "es"
    adapted.mkdir(parents=True)
    (adapted / "config.json").write_text("{}", encoding="utf-8")
    wwm = _with(params, "pretrain", enabled=True, languages=("es",))
    assert base_encoder(wwm, "es") == str(folder.resolve())
    assert start_encoder(wwm, "es") == str(adapted.resolve())
    assert start_encoder(wwm, "zh") == str(folder.resolve())
    trimmed = "models/encoders/trimmed (trimmed models/encoders/full)"
    assert encoder_label(wwm, "es") == f"models/encoders/wwm/es (WWM-adapted {trimmed})"


def test_cli_trim_disabled_and_a_one_off_copy(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["encoder", "trim", "-p", str(project), "-S", "trim.enabled=false"])
    assert result.exit_code == 0, result.output
    assert "trim.enabled is false; marker in" in result.output
    result = runner.invoke(app, ["encoder", "trim", "-p", str(project), "--lang", "fr"])
    assert result.exit_code == 2 and "data.languages" in result.output
    # --out: a copy elsewhere, trimmed whatever trim.enabled says, over the --lang text only.
    copy = tmp_path / "copy"
    args = ["encoder", "trim", "-p", str(project), "-S", "trim.enabled=false", "-o", str(copy)]
    result = runner.invoke(app, [*args, "--lang", "es"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((copy / TRIM_FILE).read_text(encoding="utf-8"))
    assert recorded["corpus_texts"] == 16 and recorded["char_languages"] == ["es"]
