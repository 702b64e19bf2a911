"""Raw text in, entities out: MultiCoNER-style tokenization and entity extraction.

Kept free of torch, transformers, Prefect, Great Expectations, DVC and MLflow imports: this is
the prediction path (the ONNX export through :class:`~complex_ner.engines.onnx_tagger.OnnxTagger`),
and its cold start is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from complex_ner.core.bio import entity_spans
from complex_ner.core.io import atomic_path, atomic_write_text
from complex_ner.core.lang import token_spans
from complex_ner.core.paths import BEST_DIR, ENSEMBLE_FILE, TAGGER_FILE
from complex_ner.domain.data import (
    ConllSpan,
    DataFormatError,
    Sentence,
    conll_spans,
    format_conll,
    iter_conll_span,
)
from complex_ner.engines.onnx_ensemble import OnnxEnsemble
from complex_ner.engines.onnx_tagger import OnnxTagger, export_key


@dataclass(frozen=True)
class Token:
    """A token and its character span in the original text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Entity:
    """One predicted entity; ``end`` and ``token_end`` are exclusive."""

    text: str
    type: str
    start: int
    end: int
    token_start: int
    token_end: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenize(text: str, lang: str) -> list[Token]:
    """Split raw text the way MultiCoNER's data is split, keeping character offsets.

    The rule per language is :func:`complex_ner.core.lang.token_spans`. Offsets index the
    original string, so ``text[t.start:t.end]`` is the token before lowercasing (see
    :func:`model_words`).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return [Token(text[start:end], start, end) for start, end in token_spans(text, lang)]


def model_words(tokens: Sequence[Token], lang: str) -> list[str]:
    """The words the model sees: lowercased (MultiCoNER is all lowercase) and NFC-normalised."""
    return [unicodedata.normalize("NFC", t.text).lower() for t in tokens]


def entities_from_tags(
    tags: Sequence[str],
    tokens: Sequence[Token] | None = None,
    text: str | None = None,
    marginals: Sequence[Sequence[float]] | None = None,
    tag_index: dict[str, int] | None = None,
    words: Sequence[str] | None = None,
) -> list[Entity]:
    """Strict IOB2 entities (:func:`complex_ner.core.bio.entity_spans`) with offsets and confidence.

    Confidence is the mean, over the entity's tokens, of the marginal probability of the
    predicted tag (CRF forward-backward or softmax); 1.0 when no marginals are given.
    Character offsets refer to ``text`` when ``tokens`` carry spans into it; for pre-tokenized
    input they refer to the words joined by single spaces.
    """
    if tokens is None:
        if words is None:
            raise ValueError("give tokens or words")
        pos, built = 0, []
        for w in words:
            built.append(Token(w, pos, pos + len(w)))
            pos += len(w) + 1
        tokens = built
        text = " ".join(words)
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(tokens)} tokens")
    out: list[Entity] = []
    for kind, i, j in entity_spans(tags):
        conf = 1.0
        if marginals is not None and tag_index is not None:
            probs = [marginals[k][tag_index[tags[k]]] for k in range(i, j)]
            conf = float(sum(probs) / len(probs))
        start, end = tokens[i].start, tokens[j - 1].end
        span = text[start:end] if text is not None else " ".join(t.text for t in tokens[i:j])
        out.append(Entity(span, kind, start, end, i, j, round(conf, 6)))
    return out


class InputError(ValueError):
    """A request the model cannot read; the message names the row and the field."""


@dataclass(frozen=True)
class RequestLimits:
    """The most one call may ask for: rows, characters per row (a ``tokens`` row counts its
    words joined by single spaces) and characters in all (what the time of a call grows with).
    The served model's values are :data:`complex_ner.adapters.serving.LIMITS`."""

    max_rows: int
    max_chars: int
    max_total_chars: int


def _row_length(text: str | None, tokens: list[str] | None) -> int:
    if tokens is not None:
        return sum(len(t) for t in tokens) + max(0, len(tokens) - 1)
    return len(text or "")


def _check_unicode(i: int, field: str, value: str) -> None:
    """JSON and argv can carry lone surrogates, which no tokenizer (or UTF-8 output) takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"row {i}: {field!r} is not valid Unicode (a lone surrogate "
            f"U+{ord(value[exc.start]):04X} at character {exc.start})"
        ) from None


def _as_tokens(i: int, tokens: Any) -> list[str]:
    """A row's ``tokens`` as a list of words (a list, tuple or 1-d array of strings)."""
    if isinstance(tokens, str | bytes | dict) or not hasattr(tokens, "__iter__"):
        raise InputError(
            f"row {i}: 'tokens' must be a list of strings, got {type(tokens).__name__}"
        )
    seq = list(tokens)
    if not all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in seq):
        raise InputError(
            f"row {i}: 'tokens' must be a list of non-empty strings without whitespace"
        )
    _check_unicode(i, "tokens", " ".join(seq))
    return seq


def _rows(
    model_input: Any, limits: RequestLimits | None = None
) -> list[tuple[str | None, list[str] | None]]:
    """Normalise the accepted input shapes into ``(text, tokens)`` per row."""
    if type(model_input).__module__.startswith("pandas"):  # no pandas import on the CLI path
        import pandas as pd

        if not isinstance(model_input, pd.DataFrame):
            raise InputError(f"unsupported input type {type(model_input).__name__}")
        cols = [c for c in ("text", "tokens") if c in model_input.columns]
        if not cols:
            raise InputError(
                f"expected a 'text' or 'tokens' column, got {list(model_input.columns)[:10]}"
            )
        records = model_input[cols].to_dict("records")
    elif isinstance(model_input, str):
        records = [{"text": model_input}]
    elif isinstance(model_input, dict):
        records = [model_input]
    elif isinstance(model_input, Sequence) and not isinstance(model_input, bytes | bytearray):
        records = [
            {"tokens": x} if isinstance(x, list | tuple) else {"text": x} for x in model_input
        ]
    else:
        raise InputError(f"unsupported input type {type(model_input).__name__}")
    if limits is not None and len(records) > limits.max_rows:
        raise InputError(
            f"{len(records):,} rows in one request; at most {limits.max_rows:,} are accepted"
        )
    out: list[tuple[str | None, list[str] | None]] = []
    total = 0
    for i, rec in enumerate(records):
        text, tokens = rec.get("text"), rec.get("tokens")
        if tokens is not None and not _is_missing(tokens):
            out.append((None, _as_tokens(i, tokens)))
            field = "tokens"
        elif text is not None and not _is_missing(text):
            if not isinstance(text, str):
                raise InputError(f"row {i}: 'text' must be a string, got {type(text).__name__}")
            _check_unicode(i, "text", text)
            out.append((text, None))
            field = "text"
        else:
            raise InputError(f"row {i}: give 'text' (a string) or 'tokens' (a list of strings)")
        size = _row_length(*out[-1])
        total += size
        if limits is not None and size > limits.max_chars:
            raise InputError(
                f"row {i}: {field!r} has {size:,} characters; "
                f"at most {limits.max_chars:,} per row are accepted"
            )
        if limits is not None and total > limits.max_total_chars:
            raise InputError(
                f"rows 0-{i} hold {total:,} characters; "
                f"at most {limits.max_total_chars:,} per request are accepted"
            )
    return out


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and value != value  # NaN from a half-filled DataFrame


def predict_entities(
    tagger: Any, model_input: Any, batch_size: int = 64, limits: RequestLimits | None = None
) -> list[list[dict[str, Any]]]:
    """Entities for every input row (a DataFrame with a ``text`` or ``tokens`` column, a string,
    a dict, or a list of strings / token lists).

    Raises:
        InputError: an input shape, a row or a value it cannot read, or one over ``limits``;
            the message names the row and the field.
    """
    lang = tagger.spec.lang
    rows = _rows(model_input, limits)
    prepared = []
    for text, tokens in rows:
        if tokens is not None:
            prepared.append((None, None, list(tokens)))
        else:
            assert text is not None
            toks = tokenize(text, lang)
            prepared.append((text, toks, model_words(toks, lang)))
    words = [w for _, _, w in prepared]
    nonempty = [i for i, w in enumerate(words) if w]
    ids, marg = tagger.predict_ids([words[i] for i in nonempty], batch_size, with_marginals=True)
    out: list[list[dict[str, Any]]] = [[] for _ in rows]
    for k, i in enumerate(nonempty):
        text, toks, w = prepared[i]
        tags = [tagger.tags[t] for t in ids[k]]
        ents = entities_from_tags(
            tags,
            tokens=toks,
            text=text,
            marginals=marg[k] if marg is not None else None,
            tag_index=tagger.tag_to_id,
            words=w,
        )
        out[i] = [e.to_dict() for e in ents]
    return out


# --------------------------------------------------------------------------- models and files


#: What :func:`load_tagger` gives: one tagger's export, or an ensemble folder's members.
Predictor = OnnxTagger | OnnxEnsemble


def load_tagger(folder: str | Path, *, int8: bool = False, threads: int = 0) -> Predictor:
    """The ONNX tagger of a saved tagger folder, of a training run's folder holding ``model/``,
    or of an ensemble folder (:func:`~complex_ner.engines.onnx_ensemble.save_ensemble`).

    Registry URIs (``models:/name@alias``) are resolved to a folder by the application layer.

    Args:
        folder: The tagger folder (or the run folder above it, or an ensemble folder).
        int8: Run the dynamically quantized export (of every member).
        threads: onnxruntime's intra-op threads (per member); 0 lets onnxruntime choose.

    Raises:
        FileNotFoundError: the folder does not exist, holds no tagger or no export.
        ValueError: an ensemble folder's ``ensemble.json`` is malformed (naming the field).
    """
    if (Path(folder) / ENSEMBLE_FILE).is_file():
        return OnnxEnsemble.load(folder, int8=int8, threads=threads)
    return OnnxTagger.load(tagger_folder(folder), int8=int8, threads=threads)


def tagger_folder(folder: str | Path) -> Path:
    """The tagger folder itself, or the ``model/`` folder of a training run's folder.

    Raises:
        FileNotFoundError: neither holds a tagger.
    """
    path = Path(folder)
    if (path / BEST_DIR / TAGGER_FILE).is_file():  # a training run's folder
        path = path / BEST_DIR
    if not (path / TAGGER_FILE).is_file():
        raise FileNotFoundError(
            f"{folder}: no such model folder (no {TAGGER_FILE} and no {ENSEMBLE_FILE})"
        )
    return path


def batch_model_key(folder: str | Path, int8: bool = False) -> str:
    """The ``model_key`` of the model :func:`load_tagger` would load, without loading it.

    Raises:
        FileNotFoundError: no tagger folder or no such export.
    """
    if (Path(folder) / ENSEMBLE_FILE).is_file():
        return OnnxEnsemble.key_of(folder, int8)
    path = OnnxTagger.export_path(tagger_folder(folder), int8)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such export; run `complex-ner export --model {folder}`"
        )
    return export_key(path)


#: The plan of a chunked prediction, in its parts folder: which input, model and chunks.
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class BatchJob:
    """A large file cut into chunks, each predicted into its own part file, joined in order.

    Attributes:
        input_path: The CoNLL file to tag.
        output_path: The submission file (written once, atomically, when every part is done).
        parts: ``<output>.parts/``: the plan and one file per finished chunk.
        spans: The chunks, in input order.
    """

    input_path: Path
    output_path: Path
    parts: Path
    spans: tuple[ConllSpan, ...]

    def part(self, index: int) -> Path:
        """Chunk ``index``'s part file (present only when the chunk is finished)."""
        return self.parts / f"chunk-{index:06d}.conll"

    def done(self, index: int) -> bool:
        return self.part(index).is_file()

    @property
    def sentences(self) -> int:
        return sum(s.sentences for s in self.spans)


def plan_batch(input_path: Path, output_path: Path, chunk_size: int, model: str) -> BatchJob:
    """The chunks of ``input_path``; the plan of an interrupted run when it is the same job.

    The same job: the same input file (path, size, modification time), chunk size and model
    (``model``: :attr:`OnnxTagger.model_key`); then its finished parts are kept. Otherwise the parts
    folder starts over. Planning reads the whole input once, so malformed input fails here,
    before any chunk is predicted.

    Raises:
        DataFormatError: the input is missing or malformed (file and line named).
        ValueError: ``chunk_size`` below 1.
    """
    parts = output_path.with_name(output_path.name + ".parts")
    if not input_path.is_file():
        raise DataFormatError(input_path, None, "file not found")
    stat = input_path.stat()
    fingerprint = {
        "input": str(input_path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "chunk_size": chunk_size,
        "model": model,
    }
    plan_file = parts / PLAN_FILE
    if plan_file.is_file():
        saved = json.loads(plan_file.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == fingerprint:
            spans = tuple(ConllSpan(**s) for s in saved["spans"])
            return BatchJob(input_path, output_path, parts, spans)
    spans = tuple(conll_spans(input_path, chunk_size, labeled=False))
    shutil.rmtree(parts, ignore_errors=True)  # parts of another input, chunking or model
    parts.mkdir(parents=True)
    plan = {"fingerprint": fingerprint, "spans": [asdict(s) for s in spans]}
    atomic_write_text(plan_file, json.dumps(plan, indent=1) + "\n")
    return BatchJob(input_path, output_path, parts, spans)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB; NaN where ``/proc`` is missing).

    The kernel's high-water mark of this address space (``VmHWM``), not ``getrusage``: a
    process started by fork + exec (a spawned pool worker) inherits its parent's
    ``ru_maxrss`` at the fork, so that would report the parent's peak.
    """
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def predict_chunk(tagger: Any, job: BatchJob, index: int, batch_size: int = 64) -> dict[str, Any]:
    """Tag chunk ``index`` of ``job`` into its part file (atomically); a finished one is kept.

    Returns:
        ``index``, ``sentences``, ``reused`` (the part was there), ``seconds``, and the
        process's ``pid``, ``peak_rss_mb`` and ``cpu_seconds`` so far (which worker did it,
        its memory and its CPU time: on a shared machine sentences per CPU second measure the
        work where wall time measures the load).
    """
    span = job.spans[index]
    started = time.perf_counter()
    reused = job.done(index)
    if not reused:
        chunk = list(iter_conll_span(job.input_path, span, labeled=False))
        tags = tagger.predict([s.tokens for s in chunk], batch_size=batch_size)
        atomic_write_text(job.part(index), format_conll(chunk, tags))
    return {
        "index": index,
        "sentences": span.sentences,
        "reused": reused,
        "seconds": time.perf_counter() - started,
        "pid": os.getpid(),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": time.process_time(),
    }


def join_batch(job: BatchJob) -> None:
    """Concatenate the parts in input order into the output (one atomic rename), then remove
    the parts folder.

    Raises:
        FileNotFoundError: a chunk is not finished (nothing is written).
    """
    missing = [i for i in range(len(job.spans)) if not job.done(i)]
    if missing:
        raise FileNotFoundError(
            f"{job.parts}: {len(missing)} of {len(job.spans)} chunks not predicted yet "
            f"(first: {missing[0]}); run the prediction again to finish them"
        )
    with atomic_path(job.output_path) as tmp, open(tmp, "wb") as out:
        for i in range(len(job.spans)):
            with open(job.part(i), "rb") as part:
                shutil.copyfileobj(part, out)
    shutil.rmtree(job.parts)


def predict_conll_batched(
    tagger: Any,
    input_path: Path,
    output_path: Path,
    chunk_size: int = 2000,
    batch_size: int = 64,
    progress: Any = None,
) -> dict[str, int]:
    """Tag a (large) MultiCoNER file chunk by chunk in this process and write the submission
    file atomically (:func:`plan_batch`, :func:`predict_chunk`, :func:`join_batch`).

    Each finished chunk is written to ``<output>.parts/`` first; a rerun after an interruption
    skips the chunks already there. Input and output are streamed: memory holds one chunk.

    Returns:
        ``{"sentences": n, "chunks": k, "reused_chunks": r}``.
    """
    job = plan_batch(input_path, output_path, chunk_size, getattr(tagger, "model_key", "unknown"))
    n, reused = 0, 0
    for index in range(len(job.spans)):
        done = predict_chunk(tagger, job, index, batch_size)
        n += done["sentences"]
        reused += done["reused"]
        if progress is not None:
            progress(n)
    join_batch(job)
    return {"sentences": n, "chunks": len(job.spans), "reused_chunks": reused}


def as_sentences(rows: Sequence[str | Sequence[str]], lang: str) -> list[Sentence]:
    """Unlabelled sentences from raw lines (tokenized as MultiCoNER does, lowercased like the
    training data) or from token lists; rows without a word are dropped.

    Raises:
        InputError: a row that is not valid Unicode or not a list of words, naming it.
    """
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            _check_unicode(i, "text", row)
            words = model_words(tokenize(row, lang), lang)
        else:
            words = _as_tokens(i, row)
        if words:
            out.append(Sentence(id=f"line-{i + 1}", tokens=tuple(words), tags=None))
    return out
