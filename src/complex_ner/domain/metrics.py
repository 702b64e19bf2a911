"""Entity-level evaluation: strict IOB2 scores, slice scores, confusion counts, plots, tables.

Scores follow seqeval 1.2.2 in ``mode="strict"`` with the IOB2 scheme, as the MultiCoNER
shared task did: an entity counts only when both its type and its exact span match, and a
stray ``I-X`` that does not continue a ``B-X``/``I-X`` starts no entity at all.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from complex_ner.core.bio import Span, entity_spans
from complex_ner.core.io import atomic_write_text, pyplot, save_png
from complex_ner.core.lang import is_question

NONE_ROW = "(none)"
BOUNDARY_COL = "boundary"
MISSED_COL = "missed"
_METRICS = ("precision", "recall", "f1")


def _check_lengths(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    """Raise ``ValueError`` if the corpora or any sentence pair differ in length."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences but pred has {len(pred)}")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: gold has {len(g)} tags but pred has {len(p)}")


def _row(precision: float, recall: float, f1: float, support: int) -> dict[str, Any]:
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": int(support),
    }


def entity_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    entity_types: Sequence[str],
) -> dict[str, Any]:
    """Strict entity-level precision, recall and F1 per type, micro and macro.

    Macro is the unweighted mean over those of ``entity_types`` that have gold support or at
    least one prediction, which is what seqeval's ``macro avg`` averages over (so the two agree
    whenever all tags use the given types). A type absent from both gold and predictions is
    reported with zeros but left out of the mean, since it says nothing about the model; with no
    such type at all the macro row is all zeros rather than seqeval's NaN.

    Args:
        gold: Gold IOB2 tags, one sequence per sentence.
        pred: Predicted IOB2 tags, aligned with ``gold``.
        entity_types: Entity types to report, e.g. ``["PER", "LOC", ...]``.

    Returns:
        ``{"per_type": {T: row}, "micro": row, "macro": row}`` where each row holds
        ``precision``, ``recall``, ``f1`` (floats) and ``support`` (gold entity count).

    Raises:
        ValueError: If the sentence counts or any sentence's lengths differ.
    """
    _check_lengths(gold, pred)
    # Imported here: seqeval pulls in scikit-learn, about a second at import time.
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold_l = [list(s) for s in gold]
    pred_l = [list(s) for s in pred]
    with warnings.catch_warnings():
        # seqeval averages an empty slice for its macro row when no entity exists anywhere;
        # that NaN is not used (macro is recomputed below), so its warning is noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(
            gold_l, pred_l, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
    # seqeval's report lacks prediction counts, which decide whether a type enters the macro.
    predicted = {t: 0 for t in entity_types}
    for sent in pred_l:
        for kind, _, _ in entity_spans(sent):
            if kind in predicted:
                predicted[kind] += 1

    per_type: dict[str, dict[str, Any]] = {}
    for t in entity_types:
        r = report.get(t)
        per_type[t] = (
            _row(r["precision"], r["recall"], r["f1-score"], r["support"])
            if r
            else _row(0, 0, 0, 0)
        )
    m = report["micro avg"]
    micro = _row(m["precision"], m["recall"], m["f1-score"], m["support"])

    active = [t for t in entity_types if per_type[t]["support"] > 0 or predicted[t] > 0]
    n = len(active)
    macro = _row(
        *(sum(per_type[t][k] for t in active) / n if n else 0.0 for k in _METRICS),
        sum(per_type[t]["support"] for t in active),
    )
    return {"per_type": per_type, "micro": micro, "macro": macro}


# --------------------------------------------------------------------------- slices

#: Inclusive upper edges of the sentence-length buckets, in tokens (MultiCoNER's words; one per
#: character in Chinese): 1-5 (search-style short queries), 6-10, 11-20, 21+.
SENTENCE_LENGTH_EDGES = (5, 10, 20)
#: Inclusive upper edges of the entity-length buckets, in tokens: 1, 2, 3, 4+.
ENTITY_LENGTH_EDGES = (1, 2, 3)

SLICE_DOMAIN = "domain"
SLICE_SENTENCE_LENGTH = "sentence_length"
SLICE_SENTENCE_TYPE = "sentence_type"
SLICE_ENTITY_LENGTH = "entity_length"
QUESTION, STATEMENT = "question", "statement"
NO_DOMAIN = "(none)"


def bucket_labels(edges: Sequence[int]) -> tuple[str, ...]:
    """Labels of the buckets that inclusive upper ``edges`` make: (5, 10) -> 1-5, 6-10, 11+."""
    labels, low = [], 1
    for high in edges:
        labels.append(str(high) if high == low else f"{low}-{high}")
        low = high + 1
    return (*labels, f"{low}+")


def bucket_of(length: int, edges: Sequence[int]) -> str:
    """The label of the bucket (see :func:`bucket_labels`) that ``length`` falls in."""
    labels = bucket_labels(edges)
    return next((labels[i] for i, high in enumerate(edges) if length <= high), labels[-1])


def _f1(tp: int, gold: int, pred: int) -> tuple[float, float, float]:
    precision = tp / pred if pred else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _span_scores(
    pairs: Sequence[tuple[Sequence[Span], Sequence[Span]]], entity_types: Sequence[str]
) -> dict[str, Any]:
    """Strict scores from gold and predicted spans, the way :func:`entity_scores` computes
    them: micro over every type, macro over those of ``entity_types`` with gold or predictions."""
    tp: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    pred: Counter[str] = Counter()
    for gold_spans, pred_spans in pairs:
        gold.update(kind for kind, _, _ in gold_spans)
        pred.update(kind for kind, _, _ in pred_spans)
        tp.update(kind for kind, _, _ in set(gold_spans) & set(pred_spans))
    active = [t for t in entity_types if gold[t] or pred[t]]
    macro = sum(_f1(tp[t], gold[t], pred[t])[2] for t in active) / len(active) if active else 0.0
    precision, recall, micro = _f1(sum(tp.values()), sum(gold.values()), sum(pred.values()))
    return {
        "entities": sum(gold.values()),
        "predicted": sum(pred.values()),
        "precision": precision,
        "recall": recall,
        "micro_f1": micro,
        "macro_f1": macro,
    }


def slice_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    tokens: Sequence[Sequence[str]],
    domains: Sequence[str | None],
    lang: str,
    entity_types: Sequence[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Strict entity scores on slices of the sentences and of the entities.

    Sentence slices: MultiCoNER ``domain``, sentence length (:data:`SENTENCE_LENGTH_EDGES`) and
    question or statement (:func:`complex_ner.core.lang.is_question`). Entity slice: gold and
    predicted entities by length in tokens (:data:`ENTITY_LENGTH_EDGES`); a prediction is right
    only with the exact span, so it always falls in its gold entity's bucket.

    Args:
        gold: Gold IOB2 tags, one sequence per sentence.
        pred: Predicted IOB2 tags, aligned with ``gold``.
        tokens: The sentences' tokens, aligned with ``gold``.
        domains: Each sentence's MultiCoNER domain (None: shown as ``"(none)"``).
        lang: The language, for the question rule.
        entity_types: The types the macro average is taken over.

    Returns:
        ``{slice: {group: row}}``; each row holds ``sentences`` (for an entity slice: the
        sentences with a gold entity in it), ``entities`` (gold), ``predicted``, micro
        ``precision`` and ``recall``, ``micro_f1`` and ``macro_f1``. Length and sentence-type
        groups are all present, empty ones with zeros; domains are sorted.

    Raises:
        ValueError: If the sentence counts or any sentence's lengths differ.
    """
    _check_lengths(gold, pred)
    if not len(tokens) == len(domains) == len(gold):
        raise ValueError(
            f"{len(gold)} tag sequences, {len(tokens)} token sequences and {len(domains)} domains"
        )
    pairs = [(entity_spans(g), entity_spans(p)) for g, p in zip(gold, pred, strict=True)]

    def by_sentence(key: Callable[[int], str], groups: Sequence[str]) -> dict[str, Any]:
        members: dict[str, list[int]] = {g: [] for g in groups}
        for i in range(len(pairs)):
            members.setdefault(key(i), []).append(i)
        return {
            g: {"sentences": len(ix), **_span_scores([pairs[i] for i in ix], entity_types)}
            for g, ix in members.items()
        }

    def by_entity_length(label: str) -> dict[str, Any]:
        def keep(spans: Sequence[Span]) -> list[Span]:
            return [s for s in spans if bucket_of(s[2] - s[1], ENTITY_LENGTH_EDGES) == label]

        kept = [(keep(g), keep(p)) for g, p in pairs]
        return {"sentences": sum(bool(g) for g, _ in kept), **_span_scores(kept, entity_types)}

    return {
        SLICE_DOMAIN: by_sentence(
            lambda i: domains[i] or NO_DOMAIN, sorted({d or NO_DOMAIN for d in domains})
        ),
        SLICE_SENTENCE_LENGTH: by_sentence(
            lambda i: bucket_of(len(tokens[i]), SENTENCE_LENGTH_EDGES),
            bucket_labels(SENTENCE_LENGTH_EDGES),
        ),
        SLICE_SENTENCE_TYPE: by_sentence(
            lambda i: QUESTION if is_question(tokens[i], lang) else STATEMENT,
            (QUESTION, STATEMENT),
        ),
        SLICE_ENTITY_LENGTH: {
            label: by_entity_length(label) for label in bucket_labels(ENTITY_LENGTH_EDGES)
        },
    }


def slices_markdown(slices: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str) -> str:
    """One markdown table of :func:`slice_scores` output: a row per slice and group."""
    lines = [
        f"# {title}",
        "",
        "Lengths in tokens (one per character in Chinese); sentence_length 1-5 are the short,",
        "search-style queries; an entity_length row counts the sentences with such a gold entity.",
        "",
        "| slice | group | sentences | entities | predicted | P | R | micro-F1 | macro-F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, groups in slices.items():
        for group, row in groups.items():
            cells = [name, group, f"{row['sentences']:,}", f"{row['entities']:,}"]
            cells += [f"{row['predicted']:,}"]
            cells += [_fmt(row, k) for k in ("precision", "recall", "micro_f1", "macro_f1")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- confusion


def confusion_counts(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    entity_types: Sequence[str],
) -> dict[str, dict[str, int]]:
    """Entity-level confusion counts over strict IOB2 spans.

    Each gold entity lands in exactly one cell of its type's row:

    * a predicted entity with the exact same span -> that prediction's type column (the
      diagonal when the types agree, a type confusion otherwise);
    * otherwise, any predicted entity overlapping it -> ``"boundary"`` (whatever its type:
      kept simple on purpose, a wrong span is the error that matters first);
    * otherwise -> ``"missed"``.

    Each predicted entity overlapping no gold entity counts once in row ``"(none)"`` under its
    type (spurious). So a type's row sums to its gold support, and the diagonal equals strict
    true positives. Types met in the data but not in ``entity_types`` are appended, sorted, so
    no entity is silently dropped.

    Args:
        gold: Gold IOB2 tags, one sequence per sentence.
        pred: Predicted IOB2 tags, aligned with ``gold``.
        entity_types: Types for the rows and columns, in display order.

    Returns:
        ``counts[row][column]``; rows are types then ``"(none)"``, columns are types then
        ``"boundary"`` and ``"missed"``. Every cell is present, zeros included.

    Raises:
        ValueError: If the sentence counts or any sentence's lengths differ.
    """
    _check_lengths(gold, pred)
    pairs = [(entity_spans(g), entity_spans(p)) for g, p in zip(gold, pred, strict=True)]
    seen = {k for gs, ps in pairs for k, _, _ in (*gs, *ps)}
    types = [*entity_types, *sorted(seen - set(entity_types))]
    counts = {
        row: {col: 0 for col in [*types, BOUNDARY_COL, MISSED_COL]} for row in [*types, NONE_ROW]
    }
    for gold_spans, pred_spans in pairs:
        exact = {(s, e): k for k, s, e in pred_spans}
        for kind, s, e in gold_spans:
            if (s, e) in exact:
                counts[kind][exact[(s, e)]] += 1
            elif any(ps < e and s < pe for _, ps, pe in pred_spans):
                counts[kind][BOUNDARY_COL] += 1
            else:
                counts[kind][MISSED_COL] += 1
        for kind, ps, pe in pred_spans:
            if not any(s < pe and ps < e for _, s, e in gold_spans):
                counts[NONE_ROW][kind] += 1
    return counts


def plot_confusion(counts: Mapping[str, Mapping[str, int]], path: Path, title: str) -> None:
    """Heatmap PNG of ``confusion_counts`` output with the count in every cell.

    Args:
        counts: ``counts[row][column]`` as returned by ``confusion_counts``.
        path: Output PNG path, written atomically.
        title: Figure title.
    """
    plt = pyplot()

    rows = list(counts)
    cols = list(next(iter(counts.values()), {}))
    grid = [[counts[r].get(c, 0) for c in cols] for r in rows]
    peak = max((v for line in grid for v in line), default=0)

    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols), 1.0 + 0.6 * len(rows)))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(peak, 1), aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            # White text on dark cells keeps the numbers readable.
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v > peak / 2 else "black",
            )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def _fmt(row: Mapping[str, Any] | None, key: str) -> str:
    return f"{row[key]:.4f}" if row and key in row else "-"


def paper_table(results: Mapping[str, Mapping[str, Any]], entity_types: Sequence[str]) -> str:
    """Markdown table laid out like the paper's Tables 3-6.

    Args:
        results: ``{arch: entity_scores(...)}``, e.g. keys ``bert_crf``, ``bert_bilstm_crf``,
            ``bert_linear``; blocks appear in mapping order.
        entity_types: Row order of the entity types.

    Returns:
        A table with a row per type then ``micro`` and ``macro``, and a P/R/F1 column block per
        architecture; missing values show as ``-``.
    """
    head = ["type"]
    for arch in results:
        head += [f"{arch} P", f"{arch} R", f"{arch} F1"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in [*entity_types, "micro", "macro"]:
        cells = [name]
        for scores in results.values():
            row = scores.get("per_type", {}).get(name) if name in entity_types else scores.get(name)
            cells += [_fmt(row, k) for k in _METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(scores: Mapping[str, Any], path_json: Path, path_md: Path, title: str) -> None:
    """Write one architecture's ``entity_scores`` as JSON and as a markdown table.

    Args:
        scores: Output of ``entity_scores``.
        path_json: JSON output (indent 2), written atomically.
        path_md: Markdown output, written atomically: a title then P/R/F1/support per type,
            micro and macro.
        title: Heading of the markdown file.
    """
    atomic_write_text(path_json, json.dumps(scores, indent=2) + "\n")
    lines = [f"# {title}", "", "| type | P | R | F1 | support |", "|---|---:|---:|---:|---:|"]
    rows = [*scores["per_type"].items(), ("micro", scores["micro"]), ("macro", scores["macro"])]
    for name, row in rows:
        cells = [name, *(_fmt(row, k) for k in _METRICS), str(row["support"])]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(path_md, "\n".join(lines) + "\n")
