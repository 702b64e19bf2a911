"""Corpus statistics: sentences, tokens and entities per type, per language and split.

Every split of :func:`complex_ner.domain.data.load_splits` is counted: train, val, heldout and
the official test when present. ``in_train`` counts a split's sentences whose exact text also
occurs in train: 0 for the seeded hold-outs (duplicates are grouped), the overlap an official
dev file has with train otherwise.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from complex_ner.core.bio import entity_spans
from complex_ner.core.config import Params
from complex_ner.core.io import atomic_write_text, pyplot, save_png
from complex_ner.core.paths import TRAIN_SPLIT
from complex_ner.domain.data import Sentence, load_splits


def split_stats(sentences: Sequence[Sentence], entity_types: Sequence[str]) -> dict[str, Any]:
    """Counts for one split; entity counts only for labelled data."""
    lengths = [len(s.tokens) for s in sentences]
    out: dict[str, Any] = {
        "sentences": len(sentences),
        "tokens": sum(lengths),
        "max_length": max(lengths, default=0),
        "mean_length": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
    }
    if sentences and all(s.tags is not None for s in sentences):
        counts: Counter[str] = Counter()
        for s in sentences:
            counts.update(kind for kind, _, _ in entity_spans(s.tags or ()))
        out["entities"] = {t: counts.get(t, 0) for t in entity_types}
        out["entities_total"] = sum(counts.values())
    return out


def compute_stats(params: Params) -> tuple[dict[str, Any], dict[str, dict[str, list[int]]]]:
    """Statistics for every language and split, plus the sentence lengths for the histogram."""
    stats: dict[str, Any] = {}
    lengths: dict[str, dict[str, list[int]]] = {}
    for lang in params.data.languages:
        splits = load_splits(params, lang)
        train_texts = {s.tokens for s in splits[TRAIN_SPLIT]}
        for name, sents in splits.items():
            row = split_stats(sents, params.data.entity_types)
            if name != TRAIN_SPLIT:
                row["in_train"] = sum(s.tokens in train_texts for s in sents)
            stats.setdefault(lang, {})[name] = row
            lengths.setdefault(lang, {})[name] = [len(s.tokens) for s in sents]
    return stats, lengths


def stats_markdown(stats: dict[str, Any], entity_types: Sequence[str]) -> str:
    """One markdown table: a row per language and split."""
    head = ["lang", "split", "sentences", "tokens", *entity_types, "entities", "in train"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lang, splits in stats.items():
        for name, s in splits.items():
            ents = s.get("entities", {})
            cells = [lang, name, f"{s['sentences']:,}", f"{s['tokens']:,}"]
            cells += [f"{ents[t]:,}" if t in ents else "-" for t in entity_types]
            cells.append(f"{s['entities_total']:,}" if "entities_total" in s else "-")
            cells.append(f"{s['in_train']:,}" if "in_train" in s else "-")
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_lengths(lengths: dict[str, dict[str, list[int]]], path: Path) -> None:
    """Sentence-length histogram, one panel per language."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(lengths), figsize=(5 * len(lengths), 3.5), squeeze=False)
    for ax, (lang, splits) in zip(axes[0], lengths.items(), strict=True):
        for name, values in splits.items():
            ax.hist(values, bins=40, alpha=0.6, label=f"{name} ({len(values):,})")
        ax.set_title(f"{lang}: sentence length (tokens)")
        ax.set_xlabel("tokens")
        ax.set_ylabel("sentences")
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def write_stats(params: Params) -> dict[str, Any]:
    """Write ``data_stats.json``, ``data_stats.md`` and ``sentence_lengths.png``."""
    stats, lengths = compute_stats(params)
    out = params.path(params.stats.report_dir)
    atomic_write_text(
        out / "data_stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n"
    )
    atomic_write_text(out / "data_stats.md", stats_markdown(stats, params.data.entity_types))
    plot_lengths(lengths, out / "sentence_lengths.png")
    return stats
