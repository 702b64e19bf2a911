"""Typed, frozen view of ``params.yaml``: read once, validated here, passed everywhere.

Every section maps to one dataclass; unknown keys and wrong types fail with the dotted field name,
so a typo in ``params.yaml`` never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

#: Overrides ``data.source_dir`` without editing params.yaml (CI, other checkouts).
SOURCE_ENV = "COMPLEX_NER_DATA_SOURCE"


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the field."""


@dataclass(frozen=True)
class DataConfig:
    """Where MultiCoNER comes from and which languages and entity types are used."""

    source_dir: str = "../shared/data/multiconer"
    languages: tuple[str, ...] = ("es", "zh")
    raw_dir: str = "data/raw"
    entity_types: tuple[str, ...] = ("PER", "LOC", "GRP", "CORP", "PROD", "CW")

    @property
    def tags(self) -> tuple[str, ...]:
        """The BIO tag set, ``O`` first (13 tags for MultiCoNER)."""
        return ("O",) + tuple(f"{p}-{t}" for t in self.entity_types for p in ("B", "I"))

    def validate(self) -> None:
        if not self.languages:
            raise ConfigError("data.languages: at least one language is required")
        if len(set(self.languages)) != len(self.languages):
            raise ConfigError(f"data.languages: duplicates in {list(self.languages)}")
        for lang in self.languages:
            if not lang.isalpha():
                raise ConfigError(f"data.languages: {lang!r} is not a language code")
        if not self.entity_types:
            raise ConfigError("data.entity_types: at least one entity type is required")
        for t in self.entity_types:
            if not t or "-" in t or t == "O" or any(c.isspace() for c in t):
                raise ConfigError(f"data.entity_types: {t!r} is not a valid entity type")
        if len(set(self.entity_types)) != len(self.entity_types):
            raise ConfigError(f"data.entity_types: duplicates in {list(self.entity_types)}")


@dataclass(frozen=True)
class SplitConfig:
    """Seeded hold-out of train used for model selection when no dev file exists."""

    val_fraction: float = 0.1
    seed: int = 13
    processed_dir: str = "data/processed"

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"split.val_fraction: must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class ValidateConfig:
    """Bounds and outputs of the Great Expectations gate."""

    min_sentence_length: int = 1
    max_sentence_length: int = 200
    report_dir: str = "reports/validation"
    max_examples: int = 5

    def validate(self) -> None:
        if self.min_sentence_length < 1:
            raise ConfigError("validate.min_sentence_length: must be >= 1")
        if self.max_sentence_length < self.min_sentence_length:
            raise ConfigError(
                "validate.max_sentence_length: must be >= validate.min_sentence_length"
            )
        if self.max_examples < 1:
            raise ConfigError("validate.max_examples: must be >= 1")


@dataclass(frozen=True)
class StatsConfig:
    """Where the data statistics go."""

    report_dir: str = "reports"


ARCHITECTURES = ("bert_crf", "bert_bilstm_crf", "bert_linear")


@dataclass(frozen=True)
class EncoderConfig:
    """The offline default encoder that ``complex-ner encoder provision`` materialises."""

    output_dir: str = "models/encoders/multilingual-e5-small"


@dataclass(frozen=True)
class ModelConfig:
    """Encoder plus head. ``encoder`` is a hub name or a local folder (relative to the project)."""

    encoder: str = "models/encoders/multilingual-e5-small"
    arch: str = "bert_crf"
    dropout: float = 0.2
    lstm_hidden: int = 256
    fc_hidden: int = 512
    max_length: int = 128
    stride: int = 32
    label_piece: str = "first"
    label_piece_zh: str = "last"
    join: str = "space"

    def piece_for(self, lang: str) -> str:
        """Which piece of a word carries its label for this language."""
        return self.label_piece_zh if lang == "zh" else self.label_piece

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"model.arch: {self.arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        for name in ("label_piece", "label_piece_zh"):
            if getattr(self, name) not in ("first", "last"):
                raise ConfigError(f"model.{name}: expected 'first' or 'last'")
        if self.join not in ("space", "natural"):
            raise ConfigError("model.join: expected 'space' or 'natural'")
        if self.max_length < 8:
            raise ConfigError("model.max_length: must be >= 8")
        if not 0 <= self.stride < self.max_length // 2:
            raise ConfigError("model.stride: must be in [0, max_length / 2)")
        if self.lstm_hidden < 1 or self.fc_hidden < 1:
            raise ConfigError("model.lstm_hidden and model.fc_hidden must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation; the paper: Adam, cyclic LR between 1e-6 and 1e-4, about 10 epochs."""

    languages: tuple[str, ...] = ("es", "zh")
    archs: tuple[str, ...] = ("bert_crf",)
    epochs: int = 2
    batch_size: int = 16
    lr_encoder: float = 1e-4
    lr_min: float = 1e-6
    lr_head: float = 5e-3
    schedule: str = "cyclic"
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    patience: int = 3
    seed: int = 13
    max_train_sentences: int = 0
    max_val_sentences: int = 0
    freeze_embeddings: bool = True
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    keep_checkpoint: bool = False
    output_dir: str = "models/trained"

    def validate(self) -> None:
        for a in self.archs:
            if a not in ARCHITECTURES:
                raise ConfigError(f"train.archs: {a!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be >= 1")
        if not 0 < self.lr_min <= self.lr_encoder:
            raise ConfigError("train.lr_min: must be > 0 and <= train.lr_encoder")
        if self.lr_head <= 0:
            raise ConfigError("train.lr_head: must be > 0")
        if self.schedule not in ("cyclic", "linear", "constant"):
            raise ConfigError("train.schedule: expected 'cyclic', 'linear' or 'constant'")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("train.warmup_fraction: must be in [0, 1)")
        if self.patience < 1:
            raise ConfigError("train.patience: must be >= 1")
        if self.max_train_sentences < 0 or self.max_val_sentences < 0:
            raise ConfigError("train.max_*_sentences: must be >= 0 (0 means all)")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError("train.device: expected auto, cpu, cuda or cuda:N")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError("train.precision: expected auto, fp32, bf16 or fp16")


@dataclass(frozen=True)
class PretrainConfig:
    """Whole-word-masking continued pre-training of the encoder (``complex-ner pretrain``).

    When ``enabled``, training uses ``<output_dir>/<lang>`` instead of ``model.encoder`` for the
    languages listed here.
    """

    enabled: bool = False
    languages: tuple[str, ...] = ("es", "zh")
    extra_text_files: tuple[str, ...] = ()
    mask_fraction: float = 0.15
    epochs: int = 1
    batch_size: int = 16
    lr: float = 5e-5
    max_sentences: int = 0
    max_length: int = 128
    seed: int = 13
    freeze_embeddings: bool = True
    output_dir: str = "models/encoders/wwm"

    def validate(self) -> None:
        if len(set(self.languages)) != len(self.languages):
            raise ConfigError(f"pretrain.languages: duplicates in {list(self.languages)}")
        for lang in self.languages:
            if not lang.isalpha():
                raise ConfigError(f"pretrain.languages: {lang!r} is not a language code")
        for i, name in enumerate(self.extra_text_files):
            if not name.strip():
                raise ConfigError(f"pretrain.extra_text_files[{i}]: empty path")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ConfigError(
                f"pretrain.mask_fraction: must be in (0, 1), got {self.mask_fraction}"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("pretrain.epochs and pretrain.batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError("pretrain.lr: must be > 0")
        if self.max_sentences < 0:
            raise ConfigError("pretrain.max_sentences: must be >= 0 (0 means all)")
        if self.max_length < 8:
            raise ConfigError("pretrain.max_length: must be >= 8")
        if not self.output_dir.strip():
            raise ConfigError("pretrain.output_dir: empty path")


@dataclass(frozen=True)
class EvaluateConfig:
    """Where evaluation reports go."""

    report_dir: str = "reports/eval"
    metrics_file: str = "reports/metrics.json"
    batch_size: int = 64


@dataclass(frozen=True)
class RegisterConfig:
    """Where the registry outcome is recorded."""

    output: str = "reports/registry.json"


@dataclass(frozen=True)
class Params:
    """All of ``params.yaml``. Paths in it are relative to ``root`` (the project folder)."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    root: Path = field(default=Path("."), compare=False)

    def path(self, relative: str | Path) -> Path:
        """Resolve a params path against the project root."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def source_dir(self) -> Path:
        """The MultiCoNER source folder, ``$COMPLEX_NER_DATA_SOURCE`` taking precedence."""
        env = os.environ.get(SOURCE_ENV)
        return Path(env) if env else self.path(self.data.source_dir)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    raise ConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init and f.name != "root"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check) and not isinstance(obj, Params):
        check()
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value in YAML syntax) into a key path and a value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    return parts, yaml.safe_load(value)


def load_params(path: str | Path = "params.yaml", overrides: typing.Sequence[str] = ()) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` are ``section.key=value`` strings.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown field or an invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {p} is not a section")
        node[parts[-1]] = value
    try:
        params = _build(Params, raw, path.name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(params, root=path.resolve().parent)
