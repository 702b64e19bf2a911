"""MultiCoNER and CoNLL files: read, write, ingest and split.

The official format opens each sentence with ``# id <uuid>\\tdomain=<d>``, then one
``token _ _ TAG`` line per token and a blank line after each sentence. Plain two-column CoNLL
(``token TAG``, ``-DOCSTART-`` skipped) is read too, so users can bring other corpora.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from complex_ner.core.config import Params
from complex_ner.core.io import (
    atomic_write_text,
    replace_dir,
    sha256_file,
    staging_dir,
)
from complex_ner.core.paths import (
    HELDOUT_SPLIT,
    TEST_SPLIT,
    TRAIN_SPLIT,
    VAL_SPLIT,
    raw_file,
    split_file,
)

SPLIT_NAMES = ("train", "dev", "test")
"""Official file names (``<lang>/<name>.conll``) picked up from the source folder."""


_COLUMNS = re.compile(r"[ \t]+")
# C0/C1 control characters other than the tab: NUL runs (a file cut short by a crash), form
# feeds, lone carriage returns (old Mac line endings). MultiCoNER holds none.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: Characters of a user's value quoted in an error message (a line can be megabytes long).
EXCERPT_CHARS = 60


def excerpt(value: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length named."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def _parse_header(line: str) -> tuple[str | None, str | None] | None:
    """``(id, domain)`` of a ``# id <id>\tdomain=<d>`` line, or None for a token line.

    ``#`` is also a token (``# _ _ O``), so a hash line is a header only when it says ``id`` or
    ``domain=``; a header that lacks the id yields ``(None, domain)`` and is reported.
    """
    if not line.startswith("#"):
        return None
    fields = _COLUMNS.split(line[1:].strip(" \t"))
    has_id = bool(fields) and fields[0] == "id"
    domains = [f.removeprefix("domain=") for f in fields if f.startswith("domain=")]
    if not has_id and not domains:
        return None
    sid = fields[1] if has_id and len(fields) > 1 and not fields[1].startswith("domain=") else None
    return sid, (domains[0] if domains else None)


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class Sentence:
    """One sentence; ``tags`` is None for unlabelled (test) data.

    ``source`` and ``line`` (1-based line of the first token; token ``i`` sits on ``line + i``)
    point back into the file it was read from, so later checks can name file and line.
    """

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None
    domain: str | None = None
    source: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- reading


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            path, line, f"bytes that are not UTF-8 ({data[exc.start : exc.start + 4]!r})"
        ) from None
    return text.removeprefix("\ufeff")


def decode_lines(data: bytes, path: str | Path = "<stdin>") -> list[str]:
    """UTF-8 ``data`` (a leading BOM dropped) as lines without their ``\n`` or ``\r\n``.

    Raises:
        DataFormatError: bytes that are not UTF-8, naming the line.
    """
    lines = _decode(Path(path), data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def parse_conll(
    text: str,
    path: str | Path = "<string>",
    tagset: Iterable[str] | None = None,
    labeled: bool = True,
) -> list[Sentence]:
    """Parse MultiCoNER or two-column CoNLL text.

    Args:
        text: file contents (CRLF, trailing spaces and a leading BOM are tolerated).
        path: name used in error messages.
        tagset: when given, a tag outside it is an error.
        labeled: when False, token lines may carry no tag (unlabelled test files).

    Raises:
        DataFormatError: naming the file and line of the first problem.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return list(iter_sentences(lines, path, tagset=tagset, labeled=labeled))


def iter_sentences(
    lines: Iterable[str],
    path: str | Path = "<string>",
    tagset: Iterable[str] | None = None,
    labeled: bool = True,
    *,
    first_line: int = 1,
    first_index: int = 0,
) -> Iterator[Sentence]:
    """Yield sentences from lines (without their newlines) as soon as each one ends.

    See :func:`parse_conll`; this is its streaming form, for files too large to hold.
    ``first_line`` and ``first_index`` say where ``lines`` start in the file (for error
    messages and for the ``conll-<n>`` ids of sentences without a header) when they are a
    part of it (:func:`iter_conll_span`).
    """
    allowed = set(tagset) if tagset is not None else None
    done: list[Sentence] = []
    count = first_index
    ids: set[str] = set()
    cur_id: str | None = None
    cur_domain: str | None = None
    cur_line: int | None = None
    tokens: list[str] = []
    tags: list[str | None] = []

    def flush(end_line: int) -> None:
        nonlocal cur_id, cur_domain, cur_line, count
        header_line = cur_line - 1 if cur_id is not None and cur_line is not None else cur_line
        if cur_id is not None and not tokens:
            raise DataFormatError(path, header_line, f"sentence {excerpt(cur_id)} has no tokens")
        if tokens:
            sid = cur_id if cur_id is not None else f"conll-{count + 1}"
            if sid in ids:
                raise DataFormatError(path, header_line, f"duplicate sentence id {excerpt(sid)}")
            ids.add(sid)
            has_tags = all(t is not None for t in tags)
            if any(t is not None for t in tags) and not has_tags:
                raise DataFormatError(path, cur_line, "some tokens have tags and others not")
            count += 1
            done.append(
                Sentence(
                    id=sid,
                    tokens=tuple(tokens),
                    tags=tuple(tags) if has_tags else None,  # type: ignore[arg-type]
                    domain=cur_domain,
                    source=str(path),
                    line=cur_line,
                )
            )
        cur_id = cur_domain = cur_line = None
        tokens.clear()
        tags.clear()

    lineno = first_line - 1
    for lineno, raw in enumerate(lines, start=first_line):
        line = raw.rstrip("\n").rstrip("\r").rstrip(" \t")
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if not line:
            flush(lineno)
            yield from done
            done.clear()
            continue
        control = _CONTROL.search(line)
        if control is not None:
            char = control.group()
            raise DataFormatError(
                path,
                lineno,
                f"control character {char!r} (U+{ord(char):04X}) at column {control.start() + 1}",
            )
        header = _parse_header(line)
        if header is not None:
            if tokens or cur_id is not None:
                flush(lineno)
                yield from done
                done.clear()
            if header[0] is None:
                raise DataFormatError(path, lineno, "sentence header without an id")
            cur_id, cur_domain, cur_line = header[0], header[1], lineno + 1
            continue
        # Columns are separated by spaces or tabs only: other Unicode whitespace inside a token
        # is kept, for the validation gate to report.
        parts = _COLUMNS.split(line.strip(" \t"))
        if parts[0] == "-DOCSTART-":  # a document boundary ends the sentence before it
            flush(lineno)
            yield from done
            done.clear()
            continue
        if len(parts) == 1:
            if labeled:
                raise DataFormatError(path, lineno, f"token line without a tag: {excerpt(line)}")
            tag = None
        elif len(parts) in (2, 4):
            tag = parts[-1]
            if not labeled and tag == "_":
                tag = None
        else:
            raise DataFormatError(
                path, lineno, f"expected 'token _ _ TAG' or 'token TAG', got {len(parts)} fields"
            )
        if tag is not None and allowed is not None and tag not in allowed:
            raise DataFormatError(path, lineno, f"unknown tag {excerpt(tag)}")
        if cur_line is None:
            cur_line = lineno
        tokens.append(parts[0])
        tags.append(tag)
    flush(lineno + 1)
    yield from done


def read_conll(
    path: str | Path, tagset: Iterable[str] | None = None, labeled: bool = True
) -> list[Sentence]:
    """Read a MultiCoNER or CoNLL file; see :func:`parse_conll`.

    Raises:
        DataFormatError: a missing file, non-UTF-8 bytes or a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    return parse_conll(_decode(path, path.read_bytes()), path, tagset=tagset, labeled=labeled)


def iter_conll(
    path: str | Path, tagset: Iterable[str] | None = None, labeled: bool = True
) -> Iterator[Sentence]:
    """Stream a MultiCoNER or CoNLL file sentence by sentence (see :func:`parse_conll`).

    Raises:
        DataFormatError: a missing file, non-UTF-8 bytes or a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")

    def lines() -> Iterator[str]:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                yield _utf8(raw, path, lineno)

    yield from iter_sentences(lines(), path, tagset=tagset, labeled=labeled)


def _utf8(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 4]
        raise DataFormatError(path, lineno, f"bytes that are not UTF-8 ({bad!r})") from None


@dataclass(frozen=True)
class ConllSpan:
    """A byte range of a CoNLL file holding whole sentences: one chunk of a large file.

    Attributes:
        start: Offset of its first byte.
        end: Offset after its last byte.
        first_line: The file's line number at ``start``.
        first_index: Sentences in the file before it.
        sentences: Sentences in it.
    """

    start: int
    end: int
    first_line: int
    first_index: int
    sentences: int


def conll_spans(
    path: str | Path, sentences_per_span: int, labeled: bool = True
) -> Iterator[ConllSpan]:
    """Cut a CoNLL file into spans of ``sentences_per_span`` sentences (the last: the rest).

    One streaming pass that parses (and so checks) the whole file; memory holds one sentence
    and the ids seen so far (duplicates are an error across the whole file).

    Raises:
        ValueError: ``sentences_per_span`` below 1.
        DataFormatError: a missing file, non-UTF-8 bytes or a malformed line.
    """
    if sentences_per_span < 1:
        raise ValueError(f"sentences per chunk must be at least 1, got {sentences_per_span}")
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    size = path.stat().st_size
    # Where the line the parser is reading lies; a sentence is yielded while the parser reads
    # the line that ends it: a blank line (which then closes the span) or the next header
    # (which opens the next span), or the end of the file.
    at = {"start": 0, "end": 0, "line": 0, "blank": False, "eof": False}

    def lines() -> Iterator[str]:
        offset = 0
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = _utf8(raw, path, lineno)
                blank = not line.rstrip("\n").rstrip("\r").rstrip(" \t").removeprefix("\ufeff")
                at.update(start=offset, end=offset + len(raw), line=lineno, blank=blank)
                offset += len(raw)
                yield line
        at["eof"] = True

    start, first_line, first_index, count = 0, 1, 0, 0
    for _ in iter_sentences(lines(), path, labeled=labeled):
        count += 1
        if count < sentences_per_span:
            continue
        if at["eof"]:
            end, next_line = size, int(at["line"]) + 1
        elif at["blank"]:
            end, next_line = int(at["end"]), int(at["line"]) + 1
        else:
            end, next_line = int(at["start"]), int(at["line"])
        yield ConllSpan(start, end, first_line, first_index, count)
        start, first_line, first_index, count = end, next_line, first_index + count, 0
    if count:
        yield ConllSpan(start, size, first_line, first_index, count)


def iter_conll_span(path: str | Path, span: ConllSpan, labeled: bool = True) -> Iterator[Sentence]:
    """Stream the sentences of one span of a CoNLL file (:func:`conll_spans`).

    Raises:
        DataFormatError: a malformed line (named by its line in the whole file), or a span
            that no longer holds the sentences it was planned with (the file changed).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")

    def lines() -> Iterator[str]:
        with open(path, "rb") as fh:
            fh.seek(span.start)
            left, lineno = span.end - span.start, span.first_line
            while left > 0:
                raw = fh.readline(left)
                if not raw:
                    break
                left -= len(raw)
                yield _utf8(raw, path, lineno)
                lineno += 1

    count = 0
    for sentence in iter_sentences(
        lines(),
        path,
        labeled=labeled,
        first_line=span.first_line,
        first_index=span.first_index,
    ):
        count += 1
        yield sentence
    if count != span.sentences:
        raise DataFormatError(
            path,
            span.first_line,
            f"expected {span.sentences} sentences from here, found {count}: "
            "the file changed since it was split into chunks",
        )


def format_conll(sentences: Iterable[Sentence], tags: Sequence[Sequence[str]] | None = None) -> str:
    """Render sentences in the official MultiCoNER format (predictions via ``tags``)."""
    out: list[str] = []
    for i, s in enumerate(sentences):
        row_tags = tags[i] if tags is not None else s.tags
        if row_tags is None:
            raise ValueError(f"sentence {s.id!r} has no tags to write")
        if len(row_tags) != len(s.tokens):
            raise ValueError(f"sentence {s.id!r}: {len(row_tags)} tags for {len(s.tokens)} tokens")
        header = f"# id {s.id}"
        if s.domain is not None:
            header += f"\tdomain={s.domain}"
        out.append(header + "\n")
        out.extend(f"{tok} _ _ {tag}\n" for tok, tag in zip(s.tokens, row_tags, strict=True))
        out.append("\n")
    return "".join(out)


def write_conll(
    path: str | Path, sentences: Sequence[Sentence], tags: Sequence[Sequence[str]] | None = None
) -> None:
    """Write sentences (or predicted ``tags`` for them) atomically in MultiCoNER format."""
    atomic_write_text(path, format_conll(sentences, tags))


# --------------------------------------------------------------------------- ingest and split


def source_files(params: Params) -> dict[str, dict[str, Path]]:
    """The official files present in the source folder, per language and split.

    Raises:
        DataFormatError: the folder or a language's train file is missing.
    """
    src = params.source_dir
    if not src.is_dir():
        raise DataFormatError(src, None, "MultiCoNER source folder not found (data.source_dir)")
    found: dict[str, dict[str, Path]] = {}
    for lang in params.data.languages:
        files = {n: src / lang / f"{n}.conll" for n in SPLIT_NAMES}
        if not files["train"].is_file():
            raise DataFormatError(files["train"], None, "file not found")
        found[lang] = {n: p for n, p in files.items() if p.is_file()}
    return found


def ingest(params: Params) -> dict[str, dict[str, str]]:
    """Copy the source files into ``data.raw_dir`` after checking that they parse.

    The whole raw folder is built beside its destination and swapped in at the end, so a bad
    file leaves the previous ``data/raw`` untouched.

    Returns:
        ``{lang: {split: sha256}}`` of what was copied.
    """
    found = source_files(params)
    for files in found.values():
        for name, path in files.items():
            read_conll(path, labeled=name != "test")  # fail before anything is written
    raw = params.path(params.data.raw_dir)
    digests: dict[str, dict[str, str]] = {}
    with staging_dir(raw) as tmp:
        for lang, files in found.items():
            (tmp / lang).mkdir()
            for name, path in files.items():
                shutil.copyfile(path, tmp / lang / path.name)
                digests.setdefault(lang, {})[name] = sha256_file(tmp / lang / path.name)
        replace_dir(tmp, raw)
    return digests


def raw_files(params: Params, lang: str) -> dict[str, Path]:
    """Ingested files of one language (``train`` always, ``dev``/``test`` when present)."""
    train = raw_file(params, lang, "train")
    if not train.is_file():
        raise DataFormatError(train, None, "file not found; run `complex-ner ingest` first")
    files = {n: raw_file(params, lang, n) for n in SPLIT_NAMES}
    return {n: path for n, path in files.items() if path.is_file()}


def _group_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def hold_out(
    sentences: Sequence[Sentence], fractions: Mapping[str, float], seed: int
) -> dict[str, list[Sentence]]:
    """Seeded, disjoint hold-outs of ``sentences``; what none of them takes is ``train``.

    Why by text and not by id: the files repeat template sentences under different ids (45
    copies of one Spanish sentence, Chinese ones up to 5 times), so an id-based draw puts
    copies of a sentence on both sides of a split and scores the model on sentences it was
    trained on. Sentences with the same text (tokens joined by a space; tokens hold no spaces)
    form one group; each group goes whole to one split, in the order of a seeded hash of its
    text, so the result depends neither on file order nor on ids.

    Sizes: each hold-out gets ``max(1, round(n * fraction))`` sentences (none when there are
    too few distinct texts to leave ``train`` one). Groups are taken in hash order, each into
    the first hold-out (in ``fractions`` order) it fits into whole, otherwise into ``train``, so
    the counts are exact whenever single sentences are left to fill them (always, on
    MultiCoNER). A hold-out that no group fits (only tiny or repetitive inputs) takes the
    smallest group, if ``train`` keeps one. Each split keeps the input order.

    Args:
        sentences: The sentences to divide.
        fractions: Hold-out name -> share of ``sentences``, e.g. ``{"val": 0.1}``.
        seed: The seed of the hash.

    Returns:
        ``{"train": ..., **{name: ...}}``.

    Raises:
        ValueError: a fraction outside (0, 1), or fractions that sum to 1 or more.
    """
    for name, fraction in fractions.items():
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{name}_fraction must be in (0, 1), got {fraction}")
    if sum(fractions.values()) >= 1.0:
        names = " + ".join(f"{name}_fraction" for name in fractions)
        raise ValueError(f"{names} must be < 1, got {sum(fractions.values())}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        groups.setdefault(" ".join(s.tokens), []).append(i)
    order = sorted(groups, key=lambda text: _group_key(seed, text))
    n = len(sentences)
    enough = len(groups) > len(fractions)
    target = {name: max(1, round(n * f)) if enough else 0 for name, f in fractions.items()}
    taken: dict[str, list[str]] = {name: [] for name in fractions}
    size = dict.fromkeys(fractions, 0)
    rest: list[str] = []
    for text in order:
        k = len(groups[text])
        into = next((h for h in fractions if size[h] + k <= target[h]), None)
        if into is None:
            rest.append(text)
        else:
            taken[into].append(text)
            size[into] += k
    for name in fractions:
        if target[name] and not taken[name] and len(rest) > 1:
            smallest = min(rest, key=lambda text: (len(groups[text]), _group_key(seed, text)))
            rest.remove(smallest)
            taken[name].append(smallest)
    where = {i: name for name, texts in taken.items() for t in texts for i in groups[t]}
    out: dict[str, list[Sentence]] = {TRAIN_SPLIT: [], **{name: [] for name in fractions}}
    for i, s in enumerate(sentences):
        out[where.get(i, TRAIN_SPLIT)].append(s)
    return out


def load_splits(params: Params, lang: str) -> dict[str, list[Sentence]]:
    """Read one language's ingested files and return its splits, disjoint.

    ``train``, ``val`` and ``heldout`` always, ``test`` (unlabelled) when the source has one.
    ``val`` (early stopping, model choice) is a seeded hold-out of the train file. ``heldout``
    (the reported scores and the champion decision) is the official dev file when there is one,
    kept as published so scores compare with the shared task's; otherwise a second seeded
    hold-out of the train file (see :func:`hold_out`). Official dev and test never enter
    ``train``.
    """
    files = raw_files(params, lang)
    cfg = params.split
    source = read_conll(files["train"])
    if "dev" in files:
        splits = hold_out(source, {VAL_SPLIT: cfg.val_fraction}, cfg.seed)
        splits[HELDOUT_SPLIT] = read_conll(files["dev"])
    else:
        fractions = {VAL_SPLIT: cfg.val_fraction, HELDOUT_SPLIT: cfg.heldout_fraction}
        splits = hold_out(source, fractions, cfg.seed)
    if "test" in files:
        splits[TEST_SPLIT] = read_conll(files["test"], labeled=False)
    return splits


def write_splits(params: Params) -> dict[str, dict[str, int]]:
    """Write every language's splits to ``split.processed_dir/<lang>/<split>.conll``.

    Returns:
        ``{lang: {split: sentences}}``.
    """
    counts: dict[str, dict[str, int]] = {}
    for lang in params.data.languages:
        folder = split_file(params, lang, TRAIN_SPLIT).parent
        # One language's splits are swapped in together: a kill never mixes the train file of
        # one split with the heldout file of another (which could share sentences).
        with staging_dir(folder) as staging:
            for name, sents in load_splits(params, lang).items():
                target = staging / split_file(params, lang, name).name
                if name == TEST_SPLIT and any(s.tags is None for s in sents):
                    # Unlabelled test data is copied as it is: the writer needs tags.
                    target.write_bytes(raw_files(params, lang)["test"].read_bytes())
                else:
                    target.write_text(format_conll(sents), encoding="utf-8", newline="\n")
                counts.setdefault(lang, {})[name] = len(sents)
            replace_dir(staging, folder)
    return counts
