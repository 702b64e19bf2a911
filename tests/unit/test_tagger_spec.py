"""TaggerSpec: built from the model config, and tagger.json files of earlier releases still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from complex_ner.core.config import ConfigError, HeadConfig, ModelConfig, WindowConfig
from complex_ner.core.paths import TAGGER_FILE
from complex_ner.domain.encoders import minilm_dir, tiny_random_bert
from complex_ner.domain.models.tagger import FORMAT_VERSION, Tagger, TaggerSpec, build_model

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")

#: The ``spec`` written by the dataclass TaggerSpec (format_version 1): flat keys in this order.
LEGACY_SPEC = {
    "tags": list(TAGS),
    "arch": "bert_bilstm_crf",
    "dropout": 0.2,
    "lstm_hidden": 8,
    "fc_hidden": 16,
    "max_length": 64,
    "stride": 16,
    "label_piece": "last",
    "join": "natural",
    "lang": "zh",
    "encoder_name": "/some/encoder",
}


def test_a_legacy_spec_round_trips_unchanged() -> None:
    spec = TaggerSpec.from_json(json.loads(json.dumps(LEGACY_SPEC)))
    assert spec.tags == TAGS
    assert spec.lstm_hidden == 8 and spec.label_piece == "last" and spec.lang == "zh"
    assert spec.to_json() == LEGACY_SPEC
    assert TaggerSpec.from_json(spec.to_json()) == spec


def test_from_config_takes_every_setting_from_the_model_config() -> None:
    model = ModelConfig(
        arch="bert_linear",
        dropout=0.3,
        lstm_hidden=7,
        fc_hidden=9,
        max_length=40,
        stride=4,
        label_piece="first",
        label_piece_zh="last",
        join="natural",
    )
    for lang in ("es", "zh"):
        spec = TaggerSpec.from_config(model, TAGS, lang, "enc")
        assert spec.label_piece == model.piece_for(lang)
        assert (spec.tags, spec.lang, spec.encoder_name, spec.arch) == (
            TAGS,
            lang,
            "enc",
            "bert_linear",
        )
        shared = set(HeadConfig.model_fields) | set(WindowConfig.model_fields)
        assert spec.model_dump(include=shared) == model.model_dump(include=shared)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dropuot": 0.1}, "dropuot: unknown field"),
        ({"arch": "bert_gru"}, "arch: expected 'bert_crf'"),
        ({"lstm_hidden": "8"}, "lstm_hidden: expected an integer"),
    ],
)
def test_a_bad_spec_names_the_file_and_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^model/tagger.json: {field}"):
        TaggerSpec.from_json({**LEGACY_SPEC, **change}, "model/tagger.json")
    missing = {k: v for k, v in LEGACY_SPEC.items() if k != "lang"}
    with pytest.raises(ConfigError, match="lang: Field required"):
        TaggerSpec.from_json(missing)


@pytest.mark.usefixtures("one_thread")
def test_a_folder_saved_with_the_legacy_spec_loads_and_predicts_the_same(tmp_path: Path) -> None:
    tiny = tiny_random_bert(minilm_dir(), tmp_path / "bert", hidden=32)
    model = ModelConfig(arch="bert_bilstm_crf", lstm_hidden=8, max_length=64, stride=16)
    torch.manual_seed(0)
    folder = build_model(str(tiny), TAGS, model, "es").save(tmp_path / "model")
    meta = json.loads((folder / TAGGER_FILE).read_text(encoding="utf-8"))
    assert meta["format_version"] == FORMAT_VERSION
    assert list(meta["spec"]) and set(meta["spec"]) == set(LEGACY_SPEC)
    words = [["ana", "vive", "en", "lima"], ["x"] * 90]
    expected = Tagger.load(folder).predict(words)

    legacy = {k: meta["spec"][k] for k in LEGACY_SPEC}  # the old writer's key order
    meta["spec"] = legacy
    (folder / TAGGER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    loaded = Tagger.load(folder)
    assert loaded.spec == TaggerSpec.from_json(legacy)
    assert loaded.predict(words) == expected
