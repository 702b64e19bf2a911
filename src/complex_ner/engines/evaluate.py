"""Evaluate saved models, alone or as an ensemble: seqeval scores, slices, paper-style tables,
confusion matrices, predictions."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from complex_ner.core.config import Params
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import (
    CHOICE_JSON,
    CONFUSION_PNG,
    ENSEMBLE,
    METRICS_JSON,
    METRICS_MD,
    PREDICTIONS_FILE,
    REPORTED_SPLIT,
    SLICES_MD,
    TEST_SPLIT,
    VAL_SPLIT,
    best_model_dir,
    ensemble_report_dir,
    eval_dir,
    eval_split_dir,
    split_file,
)
from complex_ner.domain.data import Sentence, read_conll, write_conll
from complex_ner.domain.metrics import (
    confusion_counts,
    entity_scores,
    paper_table,
    plot_confusion,
    slice_scores,
    slices_markdown,
    write_report,
)
from complex_ner.domain.models.ensemble import TaggerEnsemble, combine, tagger_marginals
from complex_ner.domain.models.tagger import Tagger


def evaluate_f1(
    tagger: Tagger, sentences: Sequence[Sentence], entity_types: Sequence[str], batch_size: int
) -> dict[str, Any]:
    """Entity-level scores of ``tagger`` on labelled sentences (macro, micro and per type)."""
    pred = tagger.predict([s.tokens for s in sentences], batch_size=batch_size)
    gold = [list(s.tags or ()) for s in sentences]
    return entity_scores(gold, pred, entity_types)


def evaluate_model(params: Params, lang: str, arch: str) -> dict[str, Any]:
    """Score the saved ``lang``/``arch`` model on ``val`` and ``heldout``; predict ``test``.

    Per split, under ``<evaluate.report_dir>/<lang>/<arch>/<split>/``: ``predictions.conll``
    (the official format, keyed by sentence id) and, for labelled splits, ``metrics.json``,
    ``metrics.md`` and ``confusion.png``. On the reported split (``heldout``) the scores also
    hold ``"slices"`` (see :func:`complex_ner.domain.metrics.slice_scores`), shown in
    ``slices.md``.

    Returns:
        ``{split: scores}`` for the labelled splits found.
    """
    folder = best_model_dir(params, lang, arch)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no trained model; run `complex-ner train --lang {lang} --arch {arch}`"
        )
    tagger = Tagger.load(folder, device=pick_device(params.train.device))
    return _score_splits(params, lang, arch, eval_dir(params, lang, arch), tagger.predict)


def evaluate_ensemble(
    params: Params, lang: str, folders: Sequence[Path], rule: str, name: str
) -> dict[str, Any]:
    """Score saved models of ``lang`` together (:class:`TaggerEnsemble` by ``rule``), like
    :func:`evaluate_model`, with the reports under ``reports/ensembles/<lang>/<name>/``.

    Raises:
        FileNotFoundError: A folder is not a saved model.
        ValueError: An unknown rule, or models whose tag lists differ.
    """
    ensemble = TaggerEnsemble.load(folders, device=pick_device(params.train.device), rule=rule)
    out = ensemble_report_dir(params, lang, name)
    return _score_splits(params, lang, name, out, ensemble.predict)


def evaluate_arch_ensemble(
    params: Params, lang: str, archs: Sequence[str], rules: Sequence[str]
) -> dict[str, Any]:
    """Choose on ``val`` the best ensemble of ``lang``'s saved ``archs`` and score it like a model.

    Every combination of two or more architectures is combined by every rule (each member
    predicts ``val`` once); the one with the highest ``val`` macro-F1 (the first on ties:
    fewer members, then ``rules`` order) is evaluated as :func:`evaluate_model` does, under
    ``<evaluate.report_dir>/<lang>/ensemble/``, beside ``choice.json`` with every candidate.

    Returns:
        ``{split: scores}`` of the chosen ensemble, plus ``"choice"``: its members and rule.

    Raises:
        ValueError: Fewer than two architectures or no rule.
        FileNotFoundError: An architecture has no saved model.
    """
    if len(archs) < 2 or not rules:
        raise ValueError(f"an ensemble needs two or more archs and a rule, got {archs}, {rules}")
    device = pick_device(params.train.device)
    members = {}
    for arch in archs:
        folder = best_model_dir(params, lang, arch)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no trained {arch} model to ensemble")
        members[arch] = Tagger.load(folder, device=device)
    tags = TaggerEnsemble(list(members.values()), list(members)).tags  # raises unless they agree
    val = read_conll(split_file(params, lang, VAL_SPLIT))
    gold = [list(s.tags or ()) for s in val]
    own, marginals = {}, {}
    for arch, tagger in members.items():
        paths, marginals[arch] = tagger_marginals(
            tagger, [s.tokens for s in val], params.evaluate.batch_size
        )
        own[arch] = [[tags[i] for i in row] for row in paths]
    candidates, val_preds = [], []
    for size in range(2, len(archs) + 1):
        for subset in itertools.combinations(archs, size):
            for rule in rules:
                pred = combine(
                    rule,
                    [own[a] for a in subset],
                    [marginals[a] for a in subset],
                    tags,
                    params.evaluate.batch_size,
                )
                f1 = entity_scores(gold, pred, params.data.entity_types)["macro"]["f1"]
                candidates.append({"members": list(subset), "rule": rule, "val_macro_f1": f1})
                val_preds.append(pred)
    best = max(range(len(candidates)), key=lambda k: candidates[k]["val_macro_f1"])
    chosen = candidates[best]
    ensemble = TaggerEnsemble(
        [members[a] for a in chosen["members"]], chosen["members"], chosen["rule"]
    )
    folder = eval_dir(params, lang, ENSEMBLE)
    # Its val tags are already at hand: only the other splits are predicted again.
    known = {VAL_SPLIT: val_preds[best]}
    scores = _score_splits(params, lang, ENSEMBLE, folder, ensemble.predict, known)
    record = {"chosen": chosen, "candidates": candidates}
    atomic_write_text(folder / CHOICE_JSON, json.dumps(record, indent=2) + "\n")
    return {**scores, "choice": chosen}


def _score_splits(
    params: Params,
    lang: str,
    name: str,
    folder: Path,
    predict: Callable[[list[tuple[str, ...]], int], list[list[str]]],
    known: dict[str, list[list[str]]] | None = None,
) -> dict[str, Any]:
    """Predict every split of ``lang`` with ``predict`` (except the splits whose tags ``known``
    already holds); write ``name``'s reports per split under ``folder``."""
    known = known or {}
    types = params.data.entity_types
    results: dict[str, Any] = {}
    for split in (VAL_SPLIT, REPORTED_SPLIT, TEST_SPLIT):
        path = split_file(params, lang, split)
        if not path.is_file():
            continue
        out = folder / split
        sents = read_conll(path, labeled=split != TEST_SPLIT)
        if split in known:
            pred = known[split]
        else:
            pred = predict([s.tokens for s in sents], params.evaluate.batch_size)
        write_conll(out / PREDICTIONS_FILE, sents, pred)
        if any(s.tags is None for s in sents):
            continue  # unlabelled test data: predictions only
        gold = [list(s.tags or ()) for s in sents]
        scores = entity_scores(gold, pred, types)
        title = f"{lang} {name} on {split} ({len(sents):,} sentences)"
        if split == REPORTED_SPLIT:
            tokens = [s.tokens for s in sents]
            domains = [s.domain for s in sents]
            scores["slices"] = slice_scores(gold, pred, tokens, domains, lang, types)
            atomic_write_text(out / SLICES_MD, slices_markdown(scores["slices"], title))
        write_report(scores, out / METRICS_JSON, out / METRICS_MD, title)
        plot_confusion(confusion_counts(gold, pred, types), out / CONFUSION_PNG, title)
        results[split] = scores
    return results


def _read_scores(params: Params, lang: str, arch: str, split: str) -> dict[str, Any] | None:
    path = eval_split_dir(params, lang, arch, split) / METRICS_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_tables(params: Params, languages: Sequence[str], archs: Sequence[str]) -> dict[str, Any]:
    """Paper-style tables and the DVC metrics summary, on the reported (``heldout``) split.

    The summary (``evaluate.metrics_file``) holds per language and architecture the heldout
    macro-F1, micro-F1 and F1 per type, and the validation macro-F1 beside them for reference
    (the gap shows how much model choice on ``val`` flattered it).
    """
    root = params.path(params.evaluate.report_dir)
    types = params.data.entity_types
    summary: dict[str, Any] = {}
    sections = []
    for lang in languages:
        per_arch: dict[str, Any] = {}
        val_f1: dict[str, float] = {}
        for arch in archs:
            scores = _read_scores(params, lang, arch, REPORTED_SPLIT)
            if scores is None:
                continue
            per_arch[arch] = scores
            val = _read_scores(params, lang, arch, VAL_SPLIT)
            if val is not None:
                val_f1[arch] = val["macro"]["f1"]
        if not per_arch:
            continue
        summary[lang] = {}
        for arch, s in per_arch.items():
            row = {
                f"{REPORTED_SPLIT}_macro_f1": s["macro"]["f1"],
                f"{REPORTED_SPLIT}_micro_f1": s["micro"]["f1"],
                **{f"{REPORTED_SPLIT}_f1_{t}": s["per_type"][t]["f1"] for t in types},
            }
            if arch in val_f1:
                row[f"{VAL_SPLIT}_macro_f1"] = val_f1[arch]
            summary[lang][arch] = row
        entities = next(iter(per_arch.values()))["micro"]["support"]
        heading = f"{lang}: {REPORTED_SPLIT} split ({entities:,} gold entities)"
        table = paper_table(per_arch, types)
        reference = ", ".join(f"{arch} {f1:.4f}" for arch, f1 in val_f1.items())
        if reference:
            table += f"\n{VAL_SPLIT} macro-F1 (model choice, for reference): {reference}\n"
        atomic_write_text(root / f"{lang}.md", f"# {heading}\n\n{table}")
        sections.append(f"## {heading}\n\n{table}")
    metrics = params.path(params.evaluate.metrics_file)
    atomic_write_text(metrics, json.dumps(summary, indent=2) + "\n")
    body = "\n".join(sections)
    atomic_write_text(root / "results.md", f"# Results on the {REPORTED_SPLIT} split\n\n{body}")
    return summary
