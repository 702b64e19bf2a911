"""Evaluate saved models: seqeval scores, paper-style tables, confusion matrices, predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from complex_ner.core.config import Params
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import best_model_dir, eval_dir, split_file
from complex_ner.domain.data import Sentence, read_conll, write_conll
from complex_ner.domain.metrics import (
    confusion_counts,
    entity_scores,
    paper_table,
    plot_confusion,
    write_report,
)
from complex_ner.domain.models.tagger import Tagger


def evaluate_f1(
    tagger: Tagger, sentences: Sequence[Sentence], entity_types: Sequence[str], batch_size: int
) -> dict[str, Any]:
    """Entity-level scores of ``tagger`` on labelled sentences (macro, micro and per type)."""
    pred = tagger.predict([s.tokens for s in sentences], batch_size=batch_size)
    gold = [list(s.tags or ()) for s in sentences]
    return entity_scores(gold, pred, entity_types)


def evaluate_model(params: Params, lang: str, arch: str) -> dict[str, Any]:
    """Score the saved ``lang``/``arch`` model on the validation split (and dev when present).

    Writes ``metrics.json``, ``metrics.md``, ``confusion.png`` and ``predictions.conll`` (the
    official format, keyed by sentence id) per split, and returns ``{split: scores}``.
    """
    folder = best_model_dir(params, lang, arch)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no trained model; run `complex-ner train --lang {lang} --arch {arch}`"
        )
    tagger = Tagger.load(folder, device=pick_device(params.train.device))
    out = eval_dir(params, lang, arch)
    results: dict[str, Any] = {}
    for split in ("val", "dev", "test"):
        path = split_file(params, lang, split)
        if not path.is_file():
            continue
        sents = read_conll(path, labeled=split != "test")
        pred = tagger.predict([s.tokens for s in sents], batch_size=params.evaluate.batch_size)
        write_conll(out / split / "predictions.conll", sents, pred)
        if any(s.tags is None for s in sents):
            continue  # unlabelled test data: predictions only
        gold = [list(s.tags or ()) for s in sents]
        types = params.data.entity_types
        scores = entity_scores(gold, pred, types)
        title = f"{lang} {arch} on {split} ({len(sents):,} sentences)"
        write_report(scores, out / split / "metrics.json", out / split / "metrics.md", title)
        plot_confusion(confusion_counts(gold, pred, types), out / split / "confusion.png", title)
        results[split] = scores
    return results


def write_tables(params: Params, languages: Sequence[str], archs: Sequence[str]) -> dict[str, Any]:
    """Paper-style tables (one column block per architecture) and the DVC metrics summary."""
    root = params.path(params.evaluate.report_dir)
    summary: dict[str, Any] = {}
    sections = []
    for lang in languages:
        per_arch: dict[str, Any] = {}
        for arch in archs:
            path = eval_dir(params, lang, arch) / "val" / "metrics.json"
            if path.is_file():
                per_arch[arch] = json.loads(path.read_text(encoding="utf-8"))
        if not per_arch:
            continue
        summary[lang] = {
            arch: {"macro_f1": s["macro"]["f1"], "micro_f1": s["micro"]["f1"]}
            for arch, s in per_arch.items()
        }
        table = paper_table(per_arch, params.data.entity_types)
        atomic_write_text(root / f"{lang}.md", f"# {lang}: validation split\n\n{table}")
        sections.append(f"## {lang}: validation split\n\n{table}")
    metrics = params.path(params.evaluate.metrics_file)
    atomic_write_text(metrics, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "results.md", "# Results\n\n" + "\n".join(sections))
    return summary
