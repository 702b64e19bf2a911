"""What a pipeline run is told to do: named configurations, overrides written into params.yaml
the way the stages read them back, and the stages a target needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from complex_ner.adapters import dvc
from complex_ner.app import pipeline
from complex_ner.core.config import ConfigError, load_params, parse_override


@pytest.mark.parametrize(
    "value",
    [10, 1.0e-7, 0.25, True, "a folder/with spaces", ["bert_crf", "bert_linear"], [], None],
)
def test_override_text_reads_back_as_the_value(value: object) -> None:
    assert parse_override(pipeline.override_text("train.x", value)) == (["train", "x"], value)


def test_every_named_configuration_applies_to_params(root: Path) -> None:
    configs = sorted((root / "configs" / "experiments").glob("*.yaml"))
    assert configs
    for config in configs:
        overrides = pipeline.config_overrides(config)
        assert overrides, config
        load_params(root / "params.yaml", overrides)  # raises on an unknown or invalid field


def test_the_paper_budget_keeps_no_per_language_epochs_budget_or_average(
    root: Path, tmp_path: Path
) -> None:
    # params.yaml's CPU budget caps every run's minutes (Chinese with its own entry); the paper's
    # configuration must train every language 10 epochs, whichever way the stages read params.
    config = root / "configs" / "experiments" / "paper.yaml"
    overrides = pipeline.config_overrides(config)
    params_file = tmp_path / "params.yaml"
    shutil.copy(root / "params.yaml", params_file)
    dvc.set_params(params_file, [parse_override(t) for t in overrides])
    for params in (load_params(root / "params.yaml", overrides), load_params(params_file)):
        for lang in params.data.languages:
            train = params.for_language(lang).train
            # paper.yaml's average also wins over params.yaml's per-language choices.
            assert (lang, train.epochs, train.time_budget_minutes, train.average) == (
                lang,
                10,
                0.0,
                "swa",
            )
    default = load_params(root / "params.yaml")
    assert any(default.for_language(lang).train.time_budget_minutes for lang in ("es", "zh"))


def test_a_configuration_names_its_bad_key(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: 'epochs': expected a dotted key"):
        pipeline.config_overrides(config)
    config.write_text("train.epochs: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train\.epochs.*from override 'train\.epochs=-1'"):
        pipeline.plan(root / "params.yaml", config=config)


def test_a_plain_run_is_no_experiment(root: Path) -> None:
    plan = pipeline.plan(root / "params.yaml")
    assert plan.experiment is None and plan.overrides == () and plan.root == root


def test_params_written_as_the_stages_read_them(root: Path, tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    shutil.copy(root / "params.yaml", params_file)
    overrides = [
        "train.archs=[bert_crf, bert_linear]",
        "train.lr_head=1.0e-7",
        "train.epochs=3",
        "model.encoder=/somewhere/an encoder",
    ]
    expected = load_params(params_file, overrides)
    comments = [line for line in params_file.read_text().splitlines() if "#" in line]
    dvc.set_params(params_file, [parse_override(t) for t in overrides])
    assert load_params(params_file) == expected
    assert expected.for_language("zh").train.epochs == 3  # for every language, as load_params
    text = params_file.read_text(encoding="utf-8")
    assert "archs: [bert_crf, bert_linear]" in text
    kept = [line for line in text.splitlines() if "#" in line]
    assert len(kept) == len(comments)


def _stage(name: str, *upstream: str) -> dvc.Stage:
    return dvc.Stage(name, f"run {name}", upstream)


def test_a_target_brings_its_upstream_stages() -> None:
    stages = [
        _stage("ingest"),
        _stage("split", "ingest"),
        _stage("stats", "ingest"),
        _stage("provision"),
        _stage("pretrain@es", "split", "provision"),
        _stage("pretrain@zh", "split", "provision"),
        _stage("train@es-bert_crf", "split", "pretrain@es", "pretrain@zh"),
    ]
    assert [s.name for s in pipeline.select(stages, ["pretrain"])] == [
        "ingest",
        "split",
        "provision",
        "pretrain@es",
        "pretrain@zh",
    ]
    assert pipeline.select(stages, []) == stages
    with pytest.raises(ValueError, match="'evaluate': no such stage"):
        pipeline.select(stages, ["evaluate"])


def test_long_stages_get_longer_time_limits() -> None:
    assert pipeline.stage_timeout("train@es-bert_crf") > pipeline.stage_timeout("ingest")
    assert pipeline.stage_timeout("pretrain@zh") == pipeline.stage_timeout("train@zh-bert_crf")
