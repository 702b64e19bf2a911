"""Typed, frozen view of ``params.yaml``: read once, validated here, passed everywhere.

Every section maps to one pydantic model. Types are strict (a bool is not an int, a string is
not a number), unknown keys are rejected, and every error names the params file and the dotted
field, so a typo in ``params.yaml`` never silently falls back to a default. The defaults below
are the one declaration of each setting; the model code takes its hyperparameters from here.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from complex_ner.core.bio import tag_set
from complex_ner.core.lang import CHAR_TOKENIZED_LANGUAGES

#: Overrides ``data.source_dir`` without editing params.yaml (CI, other checkouts).
SOURCE_ENV = "COMPLEX_NER_DATA_SOURCE"


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the file and field."""


# ---------------------------------------------------------------------------- field types


def _as_tuple(value: Any) -> Any:
    # YAML gives lists; tuples keep the frozen sections immutable and hashable.
    return tuple(value) if isinstance(value, list) else value


def _language_code(value: str) -> str:
    if not value.isalpha():
        raise ValueError("not a language code")
    return value


def _entity_type(value: str) -> str:
    # "-" would make "B-X" ambiguous and "O" is the outside tag.
    if not value or "-" in value or value == "O" or any(c.isspace() for c in value):
        raise ValueError("not a valid entity type (non-empty, not 'O', no '-' or spaces)")
    return value


def _non_empty_path(value: str) -> str:
    if not value.strip():
        raise ValueError("empty path")
    return value


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return value


def _unique(value: tuple[Any, ...]) -> tuple[Any, ...]:
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ValueError(f"duplicates: {', '.join(map(str, duplicates))}")
    return value


def _not_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise ValueError("at least one value is required")
    return value


Arch = Literal["bert_crf", "bert_bilstm_crf", "bert_linear"]
#: The head architectures, in the order of :data:`Arch`.
ARCHITECTURES: tuple[str, ...] = get_args(Arch)
# An entry of train.archs, a "run": an architecture, or "<arch>-s<seed>", another run of that
# architecture with its own seed (train.seed otherwise). The name is the run's folder and DVC
# stage (models/trained/es/bert_crf-s29, train@es-bert_crf-s29), so several seeds of one head can
# be trained and ensembled by the stage graph itself.
_RUN = re.compile(r"(?P<arch>[a-z_]+)(?:-s(?P<seed>[0-9]+))?")


def parse_run(name: str) -> tuple[str, int | None]:
    """The architecture of a ``train.archs`` entry and its own seed (None: ``train.seed``).

    Raises:
        ValueError: ``name`` is neither an architecture nor ``<architecture>-s<seed>``.
    """
    match = _RUN.fullmatch(name)
    if match is None or match["arch"] not in ARCHITECTURES:
        raise ValueError(
            f"{name!r} is neither an architecture ({', '.join(ARCHITECTURES)}) nor "
            "<architecture>-s<seed> (e.g. bert_crf-s29)"
        )
    return match["arch"], None if match["seed"] is None else int(match["seed"])


def _run_name(value: str) -> str:
    parse_run(value)
    return value


LabelPiece = Literal["first", "last"]
#: How words become pieces (``domain/alignment.py``); only text written without spaces differs.
JoinMode = Literal["space", "natural", "char"]
#: How an ensemble combines its members: ``vote`` on entities, or the ``mean`` of marginals.
EnsembleRule = Literal["vote", "mean"]
ENSEMBLE_RULES: tuple[str, ...] = get_args(EnsembleRule)

PositiveInt = Annotated[int, Field(ge=1)]
#: A cap where 0 means "no cap".
Cap = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
#: Strictly inside (0, 1).
OpenFraction = Annotated[float, Field(gt=0.0, lt=1.0)]
#: In [0, 1).
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
#: At least 8 pieces: [CLS], [SEP] and room for words.
WindowLength = Annotated[int, Field(ge=8)]
LanguageCode = Annotated[str, AfterValidator(_language_code)]
EntityType = Annotated[str, AfterValidator(_entity_type)]
NonEmptyPath = Annotated[str, AfterValidator(_non_empty_path)]
Device = Annotated[str, AfterValidator(_device)]

Languages = Annotated[tuple[LanguageCode, ...], BeforeValidator(_as_tuple), AfterValidator(_unique)]
RunName = Annotated[str, AfterValidator(_run_name)]
#: A list of strings, read into a tuple.
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]


class _Section(BaseModel):
    """Frozen, strict, closed: the shape every section shares."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True)


# ---------------------------------------------------------------------------- sections


class DataConfig(_Section):
    """Where MultiCoNER comes from and which languages and entity types are used."""

    source_dir: str = "../shared/data/multiconer"
    languages: Annotated[Languages, AfterValidator(_not_empty)] = ("es", "zh")
    raw_dir: str = "data/raw"
    entity_types: Annotated[
        tuple[EntityType, ...],
        BeforeValidator(_as_tuple),
        AfterValidator(_not_empty),
        AfterValidator(_unique),
    ] = ("PER", "LOC", "GRP", "CORP", "PROD", "CW")

    @property
    def tags(self) -> tuple[str, ...]:
        """The BIO tag set, ``O`` first (13 tags for MultiCoNER)."""
        return tag_set(self.entity_types)


class SplitConfig(_Section):
    """Seeded hold-outs of train: ``val`` (model selection) and ``heldout`` (reported scores;
    the official dev file takes its place when there is one)."""

    val_fraction: OpenFraction = 0.1
    heldout_fraction: OpenFraction = 0.1
    seed: int = 13
    processed_dir: str = "data/processed"

    @field_validator("heldout_fraction")
    @classmethod
    def _leaves_training_data(cls, value: float, info: ValidationInfo) -> float:
        val = info.data.get("val_fraction")
        if val is not None and val + value >= 1.0:
            raise ValueError(
                f"split.val_fraction + split.heldout_fraction must be < 1 "
                f"({val} + {value} leaves no training data)"
            )
        return value


class ValidateConfig(_Section):
    """Bounds and outputs of the Great Expectations gate."""

    min_sentence_length: PositiveInt = 1
    max_sentence_length: int = 200
    report_dir: str = "reports/validation"
    max_examples: PositiveInt = 5
    # The official Chinese split holds a few Latin-only titles and lists; a file in the wrong
    # language or script still fails.
    min_ideographic_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99

    @field_validator("max_sentence_length")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_sentence_length")
        if low is not None and value < low:
            raise ValueError(f"must be >= validate.min_sentence_length ({low})")
        return value


class StatsConfig(_Section):
    """Where the data statistics go."""

    report_dir: str = "reports"


class EncoderConfig(_Section):
    """The offline default encoder that ``complex-ner encoder provision`` materialises."""

    output_dir: str = "models/encoders/multilingual-e5-small"


class TrimConfig(_Section):
    """Vocabulary trimming of ``model.encoder`` (``complex-ner encoder trim``, the trim stage).

    When ``enabled``, pretraining and training start from ``output_dir`` instead of
    ``model.encoder``. Off by default here, so that a params file without a ``trim`` section
    trains from ``model.encoder`` as written; the project's params.yaml turns it on.
    """

    enabled: bool = False
    # Languages whose training text (train + val splits) chooses the pieces; empty: data.languages.
    languages: Languages = ()
    # Also keep every single-character piece of the scripts these languages are written in, so
    # words outside the corpus split into known pieces instead of the unknown token.
    keep_char_pieces: bool = True
    output_dir: NonEmptyPath = "models/encoders/trimmed"


class HeadConfig(_Section):
    """Hyperparameters of a tagging head (the head itself is chosen by ``arch``)."""

    dropout: Rate = 0.2
    lstm_hidden: PositiveInt = 256
    fc_hidden: PositiveInt = 512


class WindowConfig(_Section):
    """How sentences become encoder windows."""

    max_length: WindowLength = 128
    stride: Annotated[int, Field(ge=0)] = 32
    # One setting for all languages: the joins differ only on characters written without
    # spaces (CJK), so Spanish gets the same pieces under each; pretraining and vocabulary
    # trimming read this same key, so they always see the pieces fine-tuning sees.
    join: JoinMode = "space"

    @field_validator("stride")
    @classmethod
    def _stride_below_half_window(cls, value: int, info: ValidationInfo) -> int:
        # Consecutive windows must advance by more than the context they share.
        max_length = info.data.get("max_length")
        if max_length is not None and value >= max_length // 2:
            raise ValueError(f"must be < max_length / 2 ({max_length // 2})")
        return value


class ModelConfig(HeadConfig, WindowConfig):
    """Encoder plus head. ``encoder`` is a hub name or a local folder (relative to the project)."""

    encoder: str = "models/encoders/multilingual-e5-small"
    arch: Arch = "bert_crf"
    label_piece: LabelPiece = "first"
    label_piece_zh: LabelPiece = "last"

    def piece_for(self, lang: str) -> str:
        """Which piece of a word carries its label: per-character languages have their own
        setting (their first piece is often a bare word-start marker)."""
        return self.label_piece_zh if lang in CHAR_TOKENIZED_LANGUAGES else self.label_piece


class AugmentConfig(_Section):
    """Training-set augmentation (``domain/augment.py``); the copies never reach validation."""

    # Share of the training sentences with entities that get a copy per epoch whose mentions
    # are replaced by others of the same type; 0 turns it off.
    mention_replace: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Share of the training sentences with entities that get a copy per epoch cut down to one
    # of their entities with 0..crop_max_context words on each side (short-query inputs); 0 off.
    context_crop: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    crop_max_context: Annotated[int, Field(ge=0)] = 3


class TrainConfig(_Section):
    """Optimisation; the paper: Adam, cyclic LR between 1e-6 and 1e-4, about 10 epochs."""

    languages: Languages = ("es", "zh")
    # The runs to train per language (see parse_run): ["bert_crf", "bert_crf-s29"] trains
    # BERT+CRF with train.seed and again with seed 29.
    archs: Annotated[tuple[RunName, ...], BeforeValidator(_as_tuple), AfterValidator(_unique)] = (
        "bert_crf",
    )
    epochs: PositiveInt = 2
    batch_size: PositiveInt = 16
    lr_encoder: PositiveFloat = 1e-4
    lr_min: PositiveFloat = 1e-6
    lr_head: PositiveFloat = 5e-3
    schedule: Literal["cyclic", "linear", "constant"] = "cyclic"
    warmup_fraction: Rate = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    # torch's fused AdamW kernel (CPU and CUDA): the same update in one pass over the weights.
    fused_adamw: bool = True
    patience: PositiveInt = 3
    # Minutes of training (epochs plus their validation) a run may spend; 0: no limit. A run
    # ends like early stopping (best model saved) after the epoch past which one more epoch, at
    # the mean so far, would overrun: for lent machines and fixed budgets, not for lineage.
    time_budget_minutes: NonNegativeFloat = 0.0
    # Minutes of training steps (validation excluded) to plan the run for; 0: no plan. A few
    # timed steps first; when the epochs would take longer, fewer epochs, then (one epoch) fewer
    # sentences: a slower CPU trains on less instead of running past the budget.
    planned_minutes: NonNegativeFloat = 0.0
    seed: int = 13
    max_train_sentences: Cap = 0
    max_val_sentences: Cap = 0
    freeze_embeddings: bool = True
    # Lower transformer blocks (and the embeddings) kept fixed: no backward pass through them,
    # so a step costs less on a slow CPU; 0 trains them all.
    freeze_layers: Cap = 0
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = 0
    keep_checkpoint: bool = False
    # The saved model's ONNX export (what prediction runs) gets a dynamic int8 twin too.
    export_int8: bool = False
    output_dir: str = "models/trained"
    augment: AugmentConfig = AugmentConfig()
    # Weight averaging (SWA: equal weights, EMA: exponential) of the steps after average_start
    # of the run; the better of raw and averaged weights on validation is saved.
    average: Literal["none", "swa", "ema"] = "none"
    average_start: Rate = 0.5
    ema_decay: OpenFraction = 0.99
    # Data-parallel processes (DDP, one per device); 1 trains in this process. Under torchrun
    # the launcher's WORLD_SIZE decides instead (core/distributed.py).
    devices: PositiveInt = 1
    # Per-language changes of the keys above, e.g. {zh: {epochs: 2}}: one budget can give the
    # language that gains most from another pass the minutes (docs/results.md). Held as
    # (language, changes as canonical JSON) pairs so that params stay hashable, and applied to
    # the section as it is when asked (after overrides and copies), never to a stale snapshot.
    by_language: tuple[tuple[LanguageCode, str], ...] = ()

    @field_validator("lr_min")
    @classmethod
    def _min_not_above_peak(cls, value: float, info: ValidationInfo) -> float:
        peak = info.data.get("lr_encoder")
        if peak is not None and value > peak:
            raise ValueError(f"must be <= train.lr_encoder ({peak})")
        return value

    @field_validator("by_language", mode="before")
    @classmethod
    def _check_language_changes(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, Mapping):
            return value
        # by_language is the last field: info.data holds every other one, already validated.
        checked = []
        for lang, changes in value.items():
            if not isinstance(lang, str) or not lang.isalpha():
                raise ValueError(f"{lang!r}: not a language code")
            if not isinstance(changes, Mapping):
                raise ValueError(f"{lang}: expected a mapping of train keys")
            fixed = sorted(set(changes) & _NOT_PER_LANGUAGE)
            if fixed:
                raise ValueError(f"{lang}: {', '.join(fixed)} cannot differ per language")
            try:
                TrainConfig.model_validate(info.data | dict(changes))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{lang}.{_dotted(e['loc'])}: {_message(TrainConfig, e)}"
                    for e in exc.errors(include_url=False)
                )
                raise ValueError(problems) from None
            checked.append((lang, json.dumps(dict(changes), sort_keys=True)))
        return tuple(checked)

    @field_serializer("by_language")
    def _dump_changes(self, value: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        return {lang: json.loads(changes) for lang, changes in value}

    def for_language(self, lang: str) -> TrainConfig:
        """This section with ``by_language[lang]`` applied (itself when there is none)."""
        changes = dict(self.by_language).get(lang)
        if changes is None:
            return self
        merged = self.model_dump(exclude={"by_language"}) | json.loads(changes)
        return TrainConfig.model_validate(merged)


#: Keys that name what is trained or where it goes, so they are the same for every language.
_NOT_PER_LANGUAGE = frozenset({"languages", "archs", "output_dir", "by_language", "devices"})


class PretrainConfig(_Section):
    """Whole-word-masking continued pre-training of the encoder (``complex-ner pretrain``).

    When ``enabled``, training uses ``<output_dir>/<lang>`` instead of ``model.encoder`` for the
    languages listed here.
    """

    enabled: bool = False
    languages: Languages = ("es", "zh")
    extra_text_files: Annotated[tuple[NonEmptyPath, ...], BeforeValidator(_as_tuple)] = ()
    mask_fraction: OpenFraction = 0.15
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 5e-5
    # Steps that train only a fresh MLM head (encoder frozen) before the encoder adapts, at
    # head_lr: a random head's gradients would otherwise move the encoder first.
    head_warmup_steps: Cap = 200
    head_lr: PositiveFloat = 1e-3
    # Share of the corpus sentences held back to score masked-token accuracy (0: none).
    eval_fraction: Rate = 0.02
    max_sentences: Cap = 0
    max_length: WindowLength = 128
    seed: int = 13
    freeze_embeddings: bool = True
    output_dir: NonEmptyPath = "models/encoders/wwm"


class EvaluateConfig(_Section):
    """Where evaluation reports go."""

    report_dir: str = "reports/eval"
    metrics_file: str = "reports/metrics.json"
    batch_size: int = 64
    # Non-empty: with two or more train.archs, the evaluate stage also scores every ensemble of
    # two or more of them by each of these rules on val, and reports the best as "ensemble".
    ensemble_rules: Annotated[
        tuple[EnsembleRule, ...], BeforeValidator(_as_tuple), AfterValidator(_unique)
    ] = ()


class RegisterConfig(_Section):
    """Where the registry outcome is recorded."""

    output: str = "reports/registry.json"


# The "validate" and "register" sections shadow BaseModel.validate (a deprecated v1 classmethod)
# and ABCMeta.register, neither of which pydantic v2 calls on a model; on instances the fields win,
# so the warnings are noise here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r'Field name "(validate|register)"', UserWarning)

    class Params(_Section):
        """All of ``params.yaml``. Paths in it are relative to ``root`` (the project folder).

        ``root`` is where the file was read from, not a setting: it is not part of equality, the
        hash or :meth:`model_dump`, and a params file cannot set it.
        """

        data: DataConfig = DataConfig()
        split: SplitConfig = SplitConfig()
        validate: ValidateConfig = ValidateConfig()  # type: ignore[assignment]
        stats: StatsConfig = StatsConfig()
        encoder: EncoderConfig = EncoderConfig()
        trim: TrimConfig = TrimConfig()
        model: ModelConfig = ModelConfig()
        train: TrainConfig = TrainConfig()
        pretrain: PretrainConfig = PretrainConfig()
        evaluate: EvaluateConfig = EvaluateConfig()
        register: RegisterConfig = RegisterConfig()
        root: Path = Field(default=Path("."), exclude=True, strict=False)

        @model_validator(mode="before")
        @classmethod
        def _empty_sections(cls, data: Any) -> Any:
            # A section written as "train:" with nothing under it reads as None: use the defaults.
            if isinstance(data, dict):
                return {k: {} if v is None and k in _SECTIONS else v for k, v in data.items()}
            return data

        def _settings(self) -> tuple[BaseModel, ...]:
            return tuple(getattr(self, name) for name in _SECTIONS)

        def __eq__(self, other: object) -> bool:
            if not isinstance(other, Params):
                return NotImplemented
            return self._settings() == other._settings()

        def __hash__(self) -> int:
            return hash(self._settings())

        @classmethod
        def defaults(cls, root: Path) -> Params:
            """Every setting at its default, paths relative to ``root`` (no params file)."""
            return cls().model_copy(update={"root": root.resolve()})

        def for_language(self, lang: str) -> Params:
            """These params with ``train.by_language[lang]`` applied (what trains ``lang``)."""
            return self.model_copy(update={"train": self.train.for_language(lang)})

        def for_run(self, lang: str, name: str) -> Params:
            """What trains the run ``name`` (a ``train.archs`` entry) on ``lang``:
            :meth:`for_language`, with the run's architecture as ``model.arch`` and its own seed,
            if it names one, as ``train.seed``."""
            arch, seed = parse_run(name)
            p = self.for_language(lang)
            train = p.train if seed is None else p.train.model_copy(update={"seed": seed})
            return p.model_copy(
                update={"train": train, "model": p.model.model_copy(update={"arch": arch})}
            )

        def path(self, relative: str | Path) -> Path:
            """Resolve a params path against the project root."""
            p = Path(relative)
            return p if p.is_absolute() else self.root / p

        @property
        def source_dir(self) -> Path:
            """The MultiCoNER source folder, ``$COMPLEX_NER_DATA_SOURCE`` taking precedence."""
            env = os.environ.get(SOURCE_ENV)
            return Path(env) if env else self.path(self.data.source_dir)


_SECTIONS: tuple[str, ...] = tuple(name for name in Params.model_fields if name != "root")


# ---------------------------------------------------------------------------- errors


_TYPE_MESSAGES = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "tuple_type": "expected a list",
    "model_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "finite_number": "expected a finite number",
}

_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _dotted(loc: Sequence[str | int]) -> str:
    """``("pretrain", "extra_text_files", 0)`` -> ``pretrain.extra_text_files[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _known_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names of the section of ``model`` that ``loc`` (an unknown key) sits in."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(name for name in model.model_fields if name != "root")


def _message(model: type[BaseModel], error: Any) -> str:
    """One pydantic error in the words of a params file."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return f"unknown field (known: {', '.join(_known_fields(model, error['loc']))})"
    if kind in _TYPE_MESSAGES:
        text = _TYPE_MESSAGES[kind]
    elif kind in _BOUND_MESSAGES:
        key, op = _BOUND_MESSAGES[kind]
        text = f"must be {op} {ctx.get(key)}"
    elif kind == "literal_error":
        text = f"expected {ctx.get('expected')}"
    elif kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
    else:
        text = error["msg"]
    if isinstance(got, tuple):
        got = list(got)
    return f"{text} (got {got!r})"


def _overlaps(key: str, where: str) -> bool:
    """Whether an override of ``key`` set the field ``where`` or a section holding it."""
    return bool(re.match(rf"{re.escape(key)}\b", where) or re.match(rf"{re.escape(where)}\b", key))


def config_error(
    source: str | Path,
    model: type[BaseModel],
    exc: ValidationError,
    overrides: Mapping[str, str] | None = None,
) -> ConfigError:
    """Translate a validation error of ``model`` read from ``source`` into a :class:`ConfigError`.

    Args:
        source: The file the data came from; every line of the message starts with it.
        model: The model that was validated (to list the known fields of an unknown key).
        exc: The pydantic error.
        overrides: Dotted key -> override text, to say which override set a bad field.

    Returns:
        One line per error: ``<source>: <dotted.field[i]>: <what is wrong> (got <value>)``.
    """
    lines = []
    for error in exc.errors(include_url=False):
        where = _dotted(error["loc"])
        line = f"{source}: {where}: {_message(model, error)}"
        setting = next((t for k, t in (overrides or {}).items() if _overlaps(k, where)), None)
        if setting is not None:
            line += f", from override {setting!r}"
        lines.append(line)
    return ConfigError("\n".join(lines))


# ---------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value in YAML syntax) into a key path and a value.

    Raises:
        ConfigError: not ``section.key=value``, or a value that is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        return parts, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: {key.strip()}: not valid YAML: {exc}") from None


def _apply_override(raw: dict[str, Any], text: str) -> str:
    """Set one ``section.key=value`` in ``raw``; return the dotted key."""
    parts, value = parse_override(text)
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    drop_language_changes(raw, parts)
    return ".".join(parts)


def drop_language_changes(raw: MutableMapping[str, Any], keys: Sequence[str]) -> None:
    """After ``train.<key>`` was set in ``raw``, remove ``<key>`` from ``train.by_language``.

    A value given for a run (``-S train.epochs=4``, a named configuration) is meant for every
    language; a per-language entry of params.yaml would otherwise silently win over it.
    """
    if len(keys) != 2 or keys[0] != "train" or keys[1] == "by_language":
        return
    by_language = (raw.get("train") or {}).get("by_language")
    if not isinstance(by_language, MutableMapping):
        return
    for changes in by_language.values():
        # The language's entry stays (maybe empty): YAML round trips keep its comments.
        if isinstance(changes, MutableMapping) and keys[1] in changes:
            del changes[keys[1]]


def read_mapping(path: Path, what: str, expected: str) -> dict[str, Any]:
    """A YAML file holding one mapping (params, a named configuration).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping; the message names it.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected {expected}")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` are ``section.key=value`` strings.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown field, an invalid value or a bad
            override; the message names the file and the dotted field.
    """
    path = Path(path)
    raw = read_mapping(path, "params file", "a mapping of sections")
    applied: dict[str, str] = {}
    for text in overrides:
        try:
            applied[_apply_override(raw, text)] = text
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if "root" in raw:
        raise ConfigError(f"{path}: root: unknown field (known: {', '.join(sorted(_SECTIONS))})")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise config_error(path, Params, exc, applied) from None
    return params.model_copy(update={"root": path.resolve().parent})
