"""Vocabulary trimming: keep only the word pieces a corpus uses.

The default encoder (multilingual-e5-small) carries XLM-R's 250,002-piece vocabulary: 96M of its
118M parameters are word embeddings, most of them for languages this project never sees. Trimming
keeps the pieces the corpus tokenizes into (plus the special tokens and the single-character
pieces of every character seen), renumbers them in their original order and slices every
vocabulary-sized weight matrix to match.

Open-domain text: with ``char_languages`` the trimmed vocabulary also keeps every single-character
piece (bare, word-initial, continuation) of the scripts those languages are written in (Latin
with its accents, digits, punctuation, Greek, Cyrillic and common symbols for all; CJK
ideographs, CJK punctuation, kana and full-width forms for the ideographic ones), so a word the
corpus never had splits into smaller known pieces instead of becoming the unknown token.

Why the corpus tokenizes exactly as before: a Unigram tokenizer picks the best-scoring
segmentation; removing pieces that no best segmentation used cannot create a better one, so the
same segmentation still wins. WordPiece's greedy longest-match behaves the same way. The trimmed
folder is checked against the original on every text before it is published; text outside the
corpus may segment into shorter pieces, and characters outside the kept scripts become the
unknown token.

In the pipeline (the ``trim`` stage, ``trim.enabled``) the corpus is the training text of
``trim.languages`` (train and val splits, never the held-out or test text) and pretraining and
training start from the trimmed folder (``engines.pretrain.start_encoder``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from complex_ner.core.config import Params
from complex_ner.core.io import replace_dir, staging_dir, write_json
from complex_ner.core.lang import CJK_IDEOGRAPH_REGEX, IDEOGRAPHIC_LANGUAGES
from complex_ner.core.paths import SKIP_MARKER, TRAIN_SPLIT, VAL_SPLIT, split_file
from complex_ner.domain.alignment import join_words
from complex_ner.domain.data import read_conll

TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
TRIM_FILE = "trim.json"
_METASPACE = "\u2581"

# Characters kept for every language: ASCII letters, digits and punctuation, Latin-1 and Latin
# Extended letters (accents), Latin Extended Additional (Vietnamese), general punctuation,
# currency signs; Greek, Cyrillic and the symbol blocks (letterlike to dingbats), which names
# and titles in Wikipedia-style text quote (~1k pieces in e5: 1.5 MB).
_COMMON_CHARS = (
    "\u0021-\u007e\u00a1-\u024f\u0370-\u03ff\u0400-\u04ff\u1e00-\u1eff"
    "\u2010-\u205e\u20a0-\u20bf\u2100-\u27bf"
)
# Written with ideographs besides: CJK punctuation, kana (Japanese names in Chinese text) and
# full-width forms (the ideographs themselves come from core.lang).
_IDEOGRAPHIC_EXTRA = "\u3000-\u30ff\uff00-\uffef"


@dataclass(frozen=True)
class TrimReport:
    """What a trim kept and how it was checked."""

    source: str
    output: str
    vocab_before: int
    vocab_after: int
    corpus_texts: int
    corpus_pieces: int
    trimmed_tensors: tuple[str, ...]
    params_before: int
    params_after: int
    char_languages: tuple[str, ...] = ()
    script_pieces: int = 0  # kept only for char_languages' scripts (not used by the corpus)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (an encoder folder needs it)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None


def _vocab_pieces(spec: dict[str, Any], path: Path) -> list[str]:
    """Pieces in id order for Unigram and WordPiece models."""
    model = spec.get("model", {})
    kind = model.get("type")
    if kind == "Unigram":
        return [entry[0] for entry in model["vocab"]]
    if kind == "WordPiece":
        pieces = [""] * len(model["vocab"])
        for piece, index in model["vocab"].items():
            pieces[index] = piece
        return pieces
    raise ValueError(
        f"{path}: model.type {kind!r}: vocabulary trimming supports Unigram and WordPiece "
        "tokenizers (BPE merges would have to be rewritten)"
    )


def _encode(tokenizer: Any, texts: Sequence[str], batch: int = 2048) -> list[Any]:
    """``tokenizers`` encodings (with special tokens) of every text, in order."""
    out: list[Any] = []
    for start in range(0, len(texts), batch):
        out += tokenizer.encode_batch(list(texts[start : start + batch]), add_special_tokens=True)
    return out


def _used_ids(encodings: Sequence[Any]) -> set[int]:
    """Ids of the corpus pieces, special tokens left out."""
    return {
        i
        for enc in encodings
        for i, special in zip(enc.ids, enc.special_tokens_mask, strict=True)
        if not special
    }


def _char_piece_ids(pieces: Sequence[str], texts: Sequence[str]) -> set[int]:
    """Single-character pieces (bare and word-initial) of every character in ``texts``.

    Kept so that unseen words made of seen characters still tokenize without ``<unk>``.
    """
    index = {piece: i for i, piece in enumerate(pieces)}
    chars = set().union(*(set(text) for text in texts)) if texts else set()
    keep: set[int] = set()
    for char in chars:
        for piece in (char, _METASPACE + char, "##" + char):
            if piece in index:
                keep.add(index[piece])
    return keep


def script_chars(languages: Sequence[str]) -> re.Pattern[str]:
    """One character of a script ``languages`` are written in (see the module docstring)."""
    ideographic = any(lang in IDEOGRAPHIC_LANGUAGES for lang in languages)
    extra = f"|{CJK_IDEOGRAPH_REGEX}|[{_IDEOGRAPHIC_EXTRA}]" if ideographic else ""
    return re.compile(f"[{_COMMON_CHARS}]{extra}")


def piece_prefix(spec: dict[str, Any]) -> str:
    """The marker a tokenizer model puts on pieces: Unigram's word start, WordPiece's
    continuation (``##``)."""
    model = spec.get("model", {})
    if model.get("type") == "WordPiece":
        return model.get("continuing_subword_prefix") or "##"
    return _METASPACE


def script_piece_ids(
    pieces: Sequence[str], languages: Sequence[str], prefix: str = _METASPACE
) -> set[int]:
    """Ids of the single-character pieces, bare or with ``prefix``, of the scripts of
    ``languages``."""
    if not languages:
        return set()
    chars = script_chars(languages)
    keep: set[int] = set()
    for i, piece in enumerate(pieces):
        body = piece.removeprefix(prefix) if len(piece) > 1 else piece
        if len(body) == 1 and chars.fullmatch(body):
            keep.add(i)
    return keep


def _remap_tokenizer(
    spec: dict[str, Any], kept: Sequence[int], new_id: dict[int, int], path: Path
) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))  # deep copy
    model = spec["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:  # WordPiece
        by_id = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = {by_id[old]: new for new, old in enumerate(kept)}
    for token in spec.get("added_tokens") or []:
        token["id"] = new_id[token["id"]]
    post = spec.get("post_processor")
    _remap_post_processor(post, new_id, path)
    return spec


def _remap_post_processor(post: dict[str, Any] | None, new_id: dict[int, int], path: Path) -> None:
    if post is None:
        return
    kind = post.get("type")
    if kind == "Sequence":
        for inner in post.get("processors", []):
            _remap_post_processor(inner, new_id, path)
    elif kind == "TemplateProcessing":
        for special in post.get("special_tokens", {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            post[key] = [post[key][0], new_id[post[key][1]]]
    elif kind != "ByteLevel":
        raise ValueError(f"{path}: post_processor type {kind!r} is not supported for trimming")


def _remap_config(config: dict[str, Any], new_id: dict[int, int]) -> dict[str, Any]:
    config = dict(config)
    config["vocab_size"] = len(new_id)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "mask_token_id"):
        if isinstance(config.get(key), int):
            config[key] = new_id[config[key]]
    return config


def _remap_tokenizer_config(config: dict[str, Any], new_id: dict[int, int]) -> dict[str, Any]:
    config = dict(config)
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        config["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in decoder.items()}
    return config


def _check_same_tokens(
    reference: Sequence[Any], trimmed: Any, texts: Sequence[str], batch: int = 2048
) -> None:
    """Raise unless ``trimmed`` gives the pieces and offsets of ``reference`` for every text."""
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        after = trimmed.encode_batch(chunk, add_special_tokens=True)
        for offset, (a, b) in enumerate(zip(reference[start : start + batch], after, strict=True)):
            if a.tokens != b.tokens or a.offsets != b.offsets:
                raise ValueError(
                    f"trimmed tokenizer differs on corpus text {start + offset}: "
                    f"{a.tokens[:12]} vs {b.tokens[:12]}"
                )


def trim_encoder(
    source: str | Path,
    texts: Sequence[str],
    output: str | Path,
    extra_pieces: Iterable[str] = (),
    *,
    char_languages: Sequence[str] = (),
    source_label: str | None = None,
) -> TrimReport:
    """Write a copy of the HuggingFace encoder folder ``source`` with a trimmed vocabulary.

    Args:
        source: Folder with ``tokenizer.json``, ``config.json`` and ``model.safetensors``.
        texts: The corpus, as the product tokenizes it (words joined by the alignment's rule).
        output: Folder to write; replaced atomically.
        extra_pieces: Pieces to keep even when the corpus does not use them.
        char_languages: Keep every single-character piece of these languages' scripts (for
            text outside the corpus); empty: only those of the corpus's characters.
        source_label: How ``trim.json`` names the source (default: the path); the stage gives
            the params value, so the folder's bytes do not depend on where the project lives.

    Returns:
        A :class:`TrimReport`; it is also written to ``output/trim.json`` (without ``output``).

    Raises:
        FileNotFoundError: A file of the source folder is missing.
        ValueError: Empty corpus, unsupported tokenizer model, or a trimmed tokenizer that does
            not reproduce the original pieces on the corpus.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    source, output = Path(source), Path(output)
    if not texts:
        raise ValueError("trim_encoder: the corpus is empty")
    tok_path = source / TOKENIZER_FILE
    spec = _load_json(tok_path)
    pieces = _vocab_pieces(spec, tok_path)
    tokenizer = Tokenizer.from_file(str(tok_path))

    encodings = _encode(tokenizer, texts)
    corpus_ids = _used_ids(encodings)
    keep = set(corpus_ids) | _char_piece_ids(pieces, texts)
    keep.update(token["id"] for token in spec.get("added_tokens") or [])
    scripts = script_piece_ids(pieces, char_languages, piece_prefix(spec)) - keep
    keep |= scripts
    index = {piece: i for i, piece in enumerate(pieces)}
    for piece in extra_pieces:
        if piece not in index:
            raise ValueError(f"extra piece {piece!r} is not in {tok_path}")
        keep.add(index[piece])
    unk = spec["model"].get("unk_id")
    if isinstance(unk, int):
        keep.add(unk)
    kept = sorted(keep)

    config = _load_json(source / "config.json")
    weights_path = source / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing (trimming needs safetensors weights)")
    state = load_file(str(weights_path))
    # The embedding matrix may have spare rows past the tokenizer's last id (e5: 250,037 rows
    # for 250,002 pieces); those are never looked up and go too.
    vocab_size = int(config.get("vocab_size", len(pieces)))
    rows = torch.tensor(kept, dtype=torch.long)
    trimmed_names = tuple(name for name, t in state.items() if t.dim() and t.shape[0] == vocab_size)
    if not trimmed_names:
        raise ValueError(f"{weights_path}: no tensor has {vocab_size} rows (the vocabulary size)")
    params_before = sum(t.numel() for t in state.values())
    for name in trimmed_names:
        # shape: (vocab_after, ...) from (vocab_before, ...)
        state[name] = state[name].index_select(0, rows).contiguous()
    params_after = sum(t.numel() for t in state.values())

    new_id = {old: new for new, old in enumerate(kept)}
    with staging_dir(output) as tmp:
        for extra in source.iterdir():
            if extra.is_file() and extra.name not in {
                TOKENIZER_FILE,
                WEIGHTS_FILE,
                "config.json",
                "tokenizer_config.json",
                "provenance.json",
                TRIM_FILE,
            }:
                shutil.copy2(extra, tmp / extra.name)
        new_spec = _remap_tokenizer(spec, kept, new_id, tok_path)
        (tmp / TOKENIZER_FILE).write_text(json.dumps(new_spec, ensure_ascii=False), "utf-8")
        write_json(tmp / "config.json", _remap_config(config, new_id))
        tok_config = source / "tokenizer_config.json"
        if tok_config.is_file():
            write_json(
                tmp / "tokenizer_config.json",
                _remap_tokenizer_config(_load_json(tok_config), new_id),
            )
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _check_same_tokens(encodings, Tokenizer.from_file(str(tmp / TOKENIZER_FILE)), texts)
        report = TrimReport(
            source=source_label or str(source),
            output=str(output),
            vocab_before=vocab_size,
            vocab_after=len(kept),
            corpus_texts=len(texts),
            corpus_pieces=len(corpus_ids),
            trimmed_tensors=trimmed_names,
            params_before=params_before,
            params_after=params_after,
            char_languages=tuple(char_languages),
            script_pieces=len(scripts),
        )
        recorded = {k: v for k, v in report.as_dict().items() if k != "output"}
        write_json(tmp / TRIM_FILE, {**recorded, "kept_ids": kept})
        replace_dir(tmp, output)
    return report


def corpus_texts(
    params: Params, languages: Sequence[str], splits: Sequence[str] = (TRAIN_SPLIT, VAL_SPLIT)
) -> list[str]:
    """The training text (train and val splits) of ``languages``, joined as the model joins it.

    The held-out and test splits are left out: the vocabulary must not be chosen on the text
    the reported scores are measured on. ``splits`` narrows it (a measurement that holds val out).
    """
    texts: list[str] = []
    for lang in languages:
        for split in splits:
            path = split_file(params, lang, split)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; run `complex-ner split` first")
            for sentence in read_conll(path):
                texts.append(join_words(sentence.tokens, params.model.join)[0])
    return texts


# --------------------------------------------------------------------------- the trim stage


def trim_languages(params: Params) -> tuple[str, ...]:
    """``trim.languages``, or ``data.languages`` when it is empty."""
    return params.trim.languages or params.data.languages


def trimmed_encoder(params: Params, lang: str) -> str:
    """The trimmed encoder folder (``trim.output_dir``) for text of ``lang``, resolved.

    Raises:
        ValueError: ``lang`` is not a trim language (its text would be mostly unknown pieces),
            or the folder was trimmed from another encoder than ``model.encoder`` (an override
            of ``model.encoder`` alone must not train the old trimmed encoder silently).
        FileNotFoundError: The folder holds no encoder; the message names the command to run.
    """
    languages = trim_languages(params)
    if lang not in languages:
        raise ValueError(
            f"trim.languages: {lang!r} is not among {list(languages)}, so the trimmed encoder "
            f"lacks its pieces; add it (or leave trim.languages empty) or set trim.enabled false"
        )
    folder = params.path(params.trim.output_dir)
    if (folder / "config.json").is_file():
        record = folder / TRIM_FILE
        source = _load_json(record).get("source") if record.is_file() else None
        if source is not None and source != params.model.encoder:
            raise ValueError(
                f"model.encoder: {params.model.encoder!r}, but {folder} was trimmed from "
                f"{source!r}; run `complex-ner encoder trim` again, or set trim.enabled false "
                "to train from model.encoder as it is"
            )
        return str(folder.resolve())
    why = (
        f"only a {SKIP_MARKER} marker from a run with trim.enabled false"
        if (folder / SKIP_MARKER).is_file()
        else "it does not exist or holds no config.json"
    )
    raise FileNotFoundError(
        f"trim.enabled is true but {folder} holds no trimmed encoder ({why}); "
        "run `complex-ner encoder trim` (or `dvc repro trim`) first"
    )


def write_trim_skip_marker(params: Params) -> Path:
    """With trimming disabled: write ``<trim.output_dir>/SKIPPED`` (DVC's stage output).

    A folder that already holds a trimmed encoder is left as it is (DVC removes a stage's
    outputs before running it, so this only protects hand-made runs).
    """
    folder = params.path(params.trim.output_dir)
    if (folder / "config.json").is_file():
        return folder
    with staging_dir(folder) as staging:
        (staging / SKIP_MARKER).write_text(
            "trim.enabled is false in params.yaml, so no encoder was trimmed here and "
            "pretraining and training start from model.encoder.\nSet trim.enabled: true and "
            "run `complex-ner encoder trim` (or `dvc repro trim`) to build one.\n",
            encoding="utf-8",
        )
        replace_dir(staging, folder)
    return folder
