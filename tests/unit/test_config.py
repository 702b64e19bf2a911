"""Behaviour of the params loader: types, unknown keys, ranges, overrides, named errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from complex_ner.core.config import (
    ARCHITECTURES,
    SOURCE_ENV,
    ConfigError,
    DataConfig,
    ModelConfig,
    Params,
    TrainConfig,
    load_params,
    parse_override,
    parse_run,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_params(path, overrides)
    return str(info.value)


def test_project_params_file_loads(root: Path) -> None:
    p = load_params(root / "params.yaml")
    assert p.root == root
    assert p.path("x/y") == root / "x" / "y"
    assert p.path("/abs") == Path("/abs")


def test_an_empty_file_and_empty_sections_give_the_defaults(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, "")) == Params()
    assert load_params(write(tmp_path, "train:\nmodel:\n")) == Params()


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert error_of(missing) == f"{missing}: params file not found"
    path = write(tmp_path, "data: [1, 2")
    assert error_of(path).startswith(f"{path}: not valid YAML")
    assert error_of(write(tmp_path, "- a\n- b\n")) == f"{path}: expected a mapping of sections"


def test_out_of_range_message_names_file_and_dotted_field(tmp_path: Path) -> None:
    path = write(tmp_path, "train: {epochs: 0}")
    assert error_of(path) == f"{path}: train.epochs: must be >= 1 (got 0)"


def test_unknown_keys_list_the_known_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "train: {epoch: 3}")
    known = ", ".join(sorted(TrainConfig.model_fields))
    assert error_of(path) == f"{path}: train.epoch: unknown field (known: {known})"
    sections = ", ".join(sorted(n for n in Params.model_fields if n != "root"))
    assert error_of(write(tmp_path, "nonsense: 1")) == (
        f"{path}: nonsense: unknown field (known: {sections})"
    )
    # root is where the file lives, not a setting.
    assert error_of(write(tmp_path, "root: /elsewhere")).startswith(f"{path}: root: unknown")


@pytest.mark.parametrize(
    ("text", "field", "what"),
    [
        ("train: {epochs: true}", "train.epochs", "expected an integer (got True)"),
        ("train: {epochs: 2.0}", "train.epochs", "expected an integer (got 2.0)"),
        ("split: {seed: abc}", "split.seed", "expected an integer (got 'abc')"),
        ("train: {lr_head: true}", "train.lr_head", "expected a number (got True)"),
        # YAML 1.1 reads 1e-3 (no dot) as a string: say so rather than guess.
        ("train: {lr_head: 1e-3}", "train.lr_head", "expected a number (got '1e-3')"),
        ("train: {keep_checkpoint: 1}", "train.keep_checkpoint", "expected true or false (got 1)"),
        ("pretrain: {enabled: maybe}", "pretrain.enabled", "expected true or false (got 'maybe')"),
        ("model: {encoder: 3}", "model.encoder", "expected a string (got 3)"),
        ("data: {languages: es}", "data.languages", "expected a list (got 'es')"),
        ("data: {languages: [es, 3]}", "data.languages[1]", "expected a string (got 3)"),
        ("train: 5", "train", "expected a mapping (got 5)"),
    ],
)
def test_wrong_types_are_rejected_not_coerced(
    tmp_path: Path, text: str, field: str, what: str
) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: {field}: {what}"


def test_a_whole_number_is_a_valid_float(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, "train: {lr_head: 1, clip_norm: 2}"))
    assert p.train.lr_head == 1.0 and isinstance(p.train.lr_head, float)


@pytest.mark.parametrize(
    ("text", "field", "what"),
    [
        ("split: {val_fraction: 1.5}", "split.val_fraction", "must be < 1.0"),
        ("split: {val_fraction: 0.0}", "split.val_fraction", "must be > 0.0"),
        ("validate: {min_sentence_length: 0}", "validate.min_sentence_length", "must be >= 1"),
        ("validate: {max_examples: 0}", "validate.max_examples", "must be >= 1"),
        (
            "validate: {min_sentence_length: 5, max_sentence_length: 2}",
            "validate.max_sentence_length",
            "must be >= validate.min_sentence_length",
        ),
        ("model: {arch: bert_gru}", "model.arch", "expected 'bert_crf'"),
        ("model: {dropout: 1.0}", "model.dropout", "must be < 1.0"),
        ("model: {dropout: -0.1}", "model.dropout", "must be >= 0.0"),
        ("model: {label_piece: middle}", "model.label_piece", "expected 'first' or 'last'"),
        ("model: {label_piece_zh: middle}", "model.label_piece_zh", "expected 'first' or 'last'"),
        ("model: {join: tab}", "model.join", "expected 'space', 'natural' or 'char'"),
        ("model: {max_length: 4}", "model.max_length", "must be >= 8"),
        ("model: {max_length: 16, stride: 8}", "model.stride", "must be < max_length / 2"),
        ("model: {stride: -1}", "model.stride", "must be >= 0"),
        ("model: {lstm_hidden: 0}", "model.lstm_hidden", "must be >= 1"),
        ("model: {fc_hidden: 0}", "model.fc_hidden", "must be >= 1"),
        ("train: {archs: [bert_crf, bert_gru]}", "train.archs[1]", "neither an architecture"),
        ("train: {archs: [bert_crf-29]}", "train.archs[0]", "<architecture>-s<seed>"),
        ("train: {archs: [bert_crf-s]}", "train.archs[0]", "<architecture>-s<seed>"),
        ("train: {archs: [bert_crf, bert_crf]}", "train.archs", "duplicates: bert_crf"),
        ("train: {batch_size: 0}", "train.batch_size", "must be >= 1"),
        ("train: {lr_min: 0.0}", "train.lr_min", "must be > 0.0"),
        ("train: {lr_encoder: 1.0e-5, lr_min: 1.0e-4}", "train.lr_min", "<= train.lr_encoder"),
        ("train: {lr_head: 0.0}", "train.lr_head", "must be > 0.0"),
        ("train: {schedule: step}", "train.schedule", "expected 'cyclic', 'linear' or"),
        ("train: {warmup_fraction: 1.0}", "train.warmup_fraction", "must be < 1.0"),
        ("train: {patience: 0}", "train.patience", "must be >= 1"),
        ("train: {max_train_sentences: -1}", "train.max_train_sentences", "must be >= 0"),
        ("train: {max_val_sentences: -1}", "train.max_val_sentences", "must be >= 0"),
        ("train: {device: tpu}", "train.device", "expected auto, cpu, cuda or cuda:N"),
        ("train: {device: 'cuda:x'}", "train.device", "expected auto, cpu, cuda or cuda:N"),
        ("train: {precision: fp8}", "train.precision", "expected 'auto', 'fp32'"),
        ("train: {languages: [es, es]}", "train.languages", "duplicates: es"),
        ("train: {by_language: {zh: {epochs: 0}}}", "train.by_language", "zh.epochs: must be >= 1"),
        ("train: {by_language: {zh: {foo: 1}}}", "train.by_language", "zh.foo: unknown field"),
        ("train: {by_language: {zh: {lr_min: 1.0}}}", "train.by_language", "<= train.lr_encoder"),
        ("train: {by_language: {es: {archs: [bert_crf]}}}", "train.by_language", "cannot differ"),
        ("train: {by_language: {z1: {epochs: 2}}}", "train.by_language", "'z1': not a language"),
        ("data: {languages: []}", "data.languages", "at least one"),
        ("data: {languages: [es, es]}", "data.languages", "duplicates: es"),
        ("data: {languages: [es, e1]}", "data.languages[1]", "not a language code"),
        ("data: {entity_types: []}", "data.entity_types", "at least one"),
        ("data: {entity_types: [PER, I-LOC]}", "data.entity_types[1]", "not a valid entity type"),
        ("data: {entity_types: [O]}", "data.entity_types[0]", "not a valid entity type"),
        ("data: {entity_types: ['A B']}", "data.entity_types[0]", "not a valid entity type"),
        ("data: {entity_types: [PER, PER]}", "data.entity_types", "duplicates: PER"),
        ("pretrain: {languages: [zh, zh]}", "pretrain.languages", "duplicates: zh"),
        ("pretrain: {languages: ['z h']}", "pretrain.languages[0]", "not a language code"),
        ("pretrain: {extra_text_files: [a.txt, ' ']}", "pretrain.extra_text_files[1]", "empty"),
        ("pretrain: {mask_fraction: 1.0}", "pretrain.mask_fraction", "must be < 1.0"),
        ("pretrain: {epochs: 0}", "pretrain.epochs", "must be >= 1"),
        ("pretrain: {batch_size: 0}", "pretrain.batch_size", "must be >= 1"),
        ("pretrain: {lr: 0.0}", "pretrain.lr", "must be > 0.0"),
        ("pretrain: {max_sentences: -1}", "pretrain.max_sentences", "must be >= 0"),
        ("pretrain: {max_length: 7}", "pretrain.max_length", "must be >= 8"),
        ("pretrain: {output_dir: ''}", "pretrain.output_dir", "empty path"),
    ],
)
def test_every_rule_names_its_field(tmp_path: Path, text: str, field: str, what: str) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}: {field}: "), message
    assert what in message
    assert re.search(r"\(got .*\)$", message), message


def test_cross_field_rules_hold_against_defaults(tmp_path: Path) -> None:
    # Only max_length is set: the default stride must still fit the smaller window.
    path = write(tmp_path, f"model: {{max_length: {2 * ModelConfig().stride}}}")
    assert error_of(path).startswith(f"{path}: model.stride: must be < max_length / 2")


def test_every_error_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "train: {epochs: 0, batch_size: 0}\nmodel: {arch: x}")
    lines = error_of(path).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "model.arch",
        "train.epochs",
        "train.batch_size",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_lists_become_tuples(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, "data: {languages: [zh], entity_types: [A, B]}"))
    assert p.data.languages == ("zh",)
    assert p.data.entity_types == ("A", "B")
    assert p.data.tags == ("O", "B-A", "I-A", "B-B", "I-B")
    assert TrainConfig(archs=list(ARCHITECTURES)).archs == ARCHITECTURES
    # and back to lists when written as JSON
    assert json.loads(json.dumps(p.data.model_dump(mode="json")))["languages"] == ["zh"]


def test_every_architecture_is_accepted(tmp_path: Path) -> None:
    for arch in ARCHITECTURES:
        assert load_params(write(tmp_path, f"model: {{arch: {arch}}}")).model.arch == arch
    assert load_params(write(tmp_path, "")).train.archs


def test_a_run_name_carries_its_architecture_and_its_own_seed(tmp_path: Path) -> None:
    assert parse_run("bert_bilstm_crf") == ("bert_bilstm_crf", None)
    assert parse_run("bert_crf-s29") == ("bert_crf", 29)
    p = load_params(write(tmp_path, "train: {archs: [bert_crf, bert_crf-s29], seed: 7}"))
    assert p.train.archs == ("bert_crf", "bert_crf-s29")
    plain, seeded = p.for_run("es", "bert_crf"), p.for_run("es", "bert_crf-s29")
    assert (plain.model.arch, plain.train.seed) == ("bert_crf", 7)
    assert (seeded.model.arch, seeded.train.seed) == ("bert_crf", 29)
    # Nothing else differs: the same run as train.seed 29 would be.
    assert seeded == p.model_copy(update={"train": p.train.model_copy(update={"seed": 29})})
    linear = p.for_run("es", "bert_linear-s3")
    assert (linear.model.arch, linear.train.seed) == ("bert_linear", 3)


def test_sections_are_frozen_and_hashable(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, ""))
    with pytest.raises(ValidationError, match="frozen"):
        p.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        p.train = TrainConfig()  # type: ignore[misc]
    assert len({p, load_params(write(tmp_path, ""))}) == 1


def test_root_is_not_a_setting(tmp_path: Path) -> None:
    here = load_params(write(tmp_path, ""))
    elsewhere = here.model_copy(update={"root": Path("/elsewhere")})
    assert here == elsewhere and hash(here) == hash(elsewhere)
    assert "root" not in here.model_dump()
    assert here != here.model_copy(update={"train": TrainConfig(epochs=here.train.epochs + 1)})


def test_model_copy_updates_one_field(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, ""))
    other = p.model_copy(update={"train": p.train.model_copy(update={"seed": p.train.seed + 1})})
    assert other.train.seed == p.train.seed + 1
    assert other.model == p.model and p.train.seed != other.train.seed


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValidationError):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError):
        DataConfig(languages=("es",), nope=1)  # type: ignore[call-arg]


def test_overrides_are_applied_in_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "split: {seed: 1}\ntrain:\n")
    p = load_params(
        path,
        [
            "split.seed=7",
            "data.languages=[es]",
            "train.freeze_embeddings=false",
            "train.lr_head=2.0e-3",
            "model.encoder=some/hub-name",
        ],
    )
    assert p.split.seed == 7
    assert p.data.languages == ("es",)
    assert p.train.freeze_embeddings is False
    assert p.train.lr_head == 2.0e-3
    assert p.model.encoder == "some/hub-name"
    assert load_params(path, ["split.seed=1", "split.seed=9"]).split.seed == 9  # last wins


def test_overrides_do_not_touch_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "split: {seed: 1}")
    load_params(path, ["split.seed=7"])
    assert path.read_text(encoding="utf-8") == "split: {seed: 1}"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=0", "train.epochs: must be >= 1 (got 0), from override 'train.epochs=0'"),
        ("train.epochs=abc", "train.epochs: expected an integer (got 'abc'), from override"),
        ("train.epoch=3", "train.epoch: unknown field (known: "),
        ("data.languages=[es, 1]", "data.languages[1]: expected a string (got 1), from override"),
        ("extra.key=1", "extra: unknown field (known: "),
        ("seed7", "override 'seed7': expected section.key=value"),
        ("train=3", "override 'train=3': expected section.key=value"),
        ("train..epochs=3", "override 'train..epochs=3': expected section.key=value"),
        ("train.epochs=[", "override 'train.epochs=[': train.epochs: not valid YAML"),
        ("train.epochs.deep=1", "override 'train.epochs.deep=1': train.epochs is not a section"),
    ],
)
def test_a_bad_override_names_the_key(tmp_path: Path, override: str, expected: str) -> None:
    path = write(tmp_path, "train: {epochs: 1}")
    message = error_of(path, (override,))
    assert message.startswith(f"{path}: {expected}"), message


def test_parse_override() -> None:
    assert parse_override("train.archs=[bert_crf, bert_linear]") == (
        ["train", "archs"],
        ["bert_crf", "bert_linear"],
    )
    assert parse_override("model.encoder=a=b") == (["model", "encoder"], "a=b")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("novalue")


def test_source_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    p = load_params(write(tmp_path, "data: {source_dir: somewhere}"))
    assert p.source_dir == tmp_path / "somewhere"
    monkeypatch.setenv(SOURCE_ENV, "/elsewhere")
    assert p.source_dir == Path("/elsewhere")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_by_language_changes_only_its_language(tmp_path: Path) -> None:
    path = write(tmp_path, "train: {epochs: 1, by_language: {zh: {epochs: 3, lr_head: 1.0e-3}}}")
    params = load_params(path)
    zh, es = params.for_language("zh").train, params.for_language("es").train
    assert (zh.epochs, zh.lr_head, zh.by_language) == (3, 1.0e-3, ())
    assert (es.epochs, es.lr_head) == (1, params.train.lr_head)
    assert zh.batch_size == es.batch_size == params.train.batch_size
    assert params.train.epochs == 1  # the shared section is unchanged
    assert params.train.model_dump()["by_language"] == {"zh": {"epochs": 3, "lr_head": 1.0e-3}}
    assert hash(params) == hash(load_params(path))
    # Applied to the section as it is now, not to a snapshot taken when the file was read.
    copied = params.train.model_copy(update={"batch_size": 4})
    assert (copied.for_language("zh").batch_size, copied.for_language("zh").epochs) == (4, 3)


def test_an_override_of_a_train_key_is_for_every_language(tmp_path: Path) -> None:
    text = "train: {epochs: 1, by_language: {zh: {epochs: 2, lr_head: 1.0e-3}, es: {epochs: 3}}}"
    path = write(tmp_path, text)
    params = load_params(path, ["train.epochs=4"])
    zh, es = params.for_language("zh").train, params.for_language("es").train
    assert (zh.epochs, zh.lr_head, es.epochs) == (4, 1.0e-3, 4)
    assert params.train.model_dump()["by_language"] == {"zh": {"lr_head": 1.0e-3}, "es": {}}
    # A per-language override still changes just that language.
    params = load_params(path, ["train.by_language.zh.epochs=5"])
    assert (params.for_language("zh").train.epochs, params.for_language("es").train.epochs) == (
        5,
        3,
    )
