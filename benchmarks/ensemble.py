"""Do saved models of one language score higher together? Each member alone and every ensemble.

    python -m benchmarks.ensemble --lang es \
        --model crf=models/recipe/cpu_paper_es/base/es/bert_crf/model \
        --model bilstm=models/recipe/cpu_paper_bilstm_es/base/es/bert_bilstm_crf/model \
        --out docs/cpu-2026-12-04/ensemble_es.json

Each member's tag marginals (and its own decoded tags) are computed once per split; then every
subset of two or more members is combined both ways: decoded from its averaged marginals
and by a majority vote on entities (:func:`complex_ner.domain.models.ensemble.combine`; of two
members, the entities both predicted). The evaluate stage makes the same choice among the
trained architectures when ``evaluate.ensemble_rules`` is set (as ``make run-paper`` does).
Rows: each member with its own decoding, each member decoded from its marginals alone (what the
ensemble's decoding rule costs or gains for one model), and every ensemble. The member or
ensemble with the best ``val`` macro-F1 is the one chosen; ``heldout`` (which nothing selects
on) is its reported score.
``--quick`` uses two untrained tiny random BERTs on synthetic sentences (the numbers mean
nothing).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    add_saved_model_options,
    base_parser,
    emit,
    entity_types,
    machine_info,
    model_folders,
    parse,
    result,
    tag_set,
    target,
    tiny_encoder,
    torch_threads,
    toy_sentences,
)
from complex_ner.core.config import ModelConfig, load_params
from complex_ner.core.paths import REPORTED_SPLIT, VAL_SPLIT, split_file
from complex_ner.domain.data import Sentence, read_conll
from complex_ner.domain.metrics import entity_scores
from complex_ner.domain.models.ensemble import combine, decode_marginals, tagger_marginals
from complex_ner.domain.models.tagger import Tagger, build_model

SPLITS = (VAL_SPLIT, REPORTED_SPLIT)


def _parser() -> Any:
    parser = base_parser("ensemble", __doc__, threads=0, module="ensemble")
    add_saved_model_options(parser)
    return parser


def _quick_members(scratch: Path) -> tuple[list[tuple[str, Path]], dict[str, list[Sentence]]]:
    encoder = tiny_encoder(scratch / "tiny-bert")
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        tagger = build_model(str(encoder), tag_set(), ModelConfig(dropout=0.0), lang="es")
        members.append((f"random{seed}", tagger.save(scratch / f"random{seed}")))
    return members, {VAL_SPLIT: toy_sentences(12), REPORTED_SPLIT: toy_sentences(12, 12)}


def _sum(seconds: dict[str, float], members: Sequence[str], start: float) -> float:
    """The members' prediction seconds plus the combining since ``start``."""
    return sum(seconds[n] for n in members) + time.perf_counter() - start


def _scores(gold: list[list[str]], ids: list[list[int]], tags: Sequence[str]) -> dict[str, Any]:
    pred = [[tags[i] for i in row] for row in ids]
    return entity_scores(gold, pred, entity_types())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(_parser(), argv)
    machine = machine_info()
    types = entity_types()
    with tempfile.TemporaryDirectory(prefix="ensemble-") as tmp, torch_threads(args.threads):
        if args.quick:
            members, data = _quick_members(Path(tmp))
        else:
            members = model_folders(args.model, least=2)
            params = load_params(args.params)
            data = {s: read_conll(split_file(params, args.lang, s)) for s in SPLITS}
        gold = {s: [list(x.tags or ()) for x in sents] for s, sents in data.items()}
        # scores[label][split]
        scores: dict[str, dict[str, dict[str, Any]]] = {}
        seconds: dict[str, float] = {}
        marginals: dict[str, dict[str, list[torch.Tensor]]] = {}
        own: dict[str, dict[str, list[list[str]]]] = {}
        tags: tuple[str, ...] | None = None
        for name, folder in members:
            tagger = Tagger.load(folder)
            if tags is None:
                tags = tuple(tagger.tags)
            elif tuple(tagger.tags) != tags:
                raise SystemExit(f"--model {name}: its tags differ from the first model's")
            marginals[name], own[name] = {}, {}
            start = time.perf_counter()
            for split, sents in data.items():
                paths, probs = tagger_marginals(tagger, [x.tokens for x in sents], args.batch_size)
                marginals[name][split] = probs
                own[name][split] = [[tags[i] for i in row] for row in paths]
                scores.setdefault(f"{name} (own decoding)", {})[split] = entity_scores(
                    gold[split], own[name][split], types
                )
                scores.setdefault(f"{name} (from its marginals)", {})[split] = _scores(
                    gold[split], decode_marginals(probs, tags, args.batch_size), tags
                )
            seconds[name] = time.perf_counter() - start
            for how in ("own decoding", "from its marginals"):
                seconds[f"{name} ({how})"] = seconds[name]
            del tagger
        assert tags is not None
        names = [n for n, _ in members]
        for size in range(2, len(names) + 1):
            for subset in itertools.combinations(names, size):
                label = " + ".join(subset)
                for rule, how in (("mean", "mean marginals"), ("vote", "span vote")):
                    start = time.perf_counter()
                    for split in data:
                        pred = combine(
                            rule,
                            [own[n][split] for n in subset],
                            [marginals[n][split] for n in subset],
                            tags,
                            args.batch_size,
                        )
                        scores.setdefault(f"{label} ({how})", {})[split] = entity_scores(
                            gold[split], pred, types
                        )
                    seconds[f"{label} ({how})"] = _sum(seconds, subset, start)

    candidates = [k for k in scores if not k.endswith("(from its marginals)")]
    chosen = max(candidates, key=lambda k: scores[k][VAL_SPLIT]["macro"]["f1"])
    best_member = max(
        (f"{n} (own decoding)" for n in names), key=lambda k: scores[k][VAL_SPLIT]["macro"]["f1"]
    )
    columns = [
        "members",
        f"{VAL_SPLIT} macro-F1",
        f"{REPORTED_SPLIT} macro-F1",
        f"{REPORTED_SPLIT} micro-F1",
        *(f"{REPORTED_SPLIT} {t}" for t in types),
        "predict s (both splits)",
    ]
    rows = []
    for label, by_split in scores.items():
        held = by_split[REPORTED_SPLIT]
        rows.append(
            [
                label + (" **chosen on val**" if label == chosen else ""),
                round(by_split[VAL_SPLIT]["macro"]["f1"], 4),
                round(held["macro"]["f1"], 4),
                round(held["micro"]["f1"], 4),
                *(round(held["per_type"][t]["f1"], 4) for t in types),
                round(seconds[label], 1),
            ]
        )
    gain = (
        scores[chosen][REPORTED_SPLIT]["macro"]["f1"]
        - scores[best_member][REPORTED_SPLIT]["macro"]["f1"]
    )
    summary = [
        target(
            f"{REPORTED_SPLIT} macro-F1 of the choice on val ({chosen})",
            round(scores[chosen][REPORTED_SPLIT]["macro"]["f1"], 4),
        ),
        target(
            f"{REPORTED_SPLIT} gain over the best single model on val ({best_member})",
            round(gain, 4),
            "> 0",
            gain > 0,
        ),
    ]
    notes = [
        f"{args.lang}; members: "
        + ", ".join(f"{n} = {f}" for n, f in members)
        + f"; {len(data[VAL_SPLIT]):,} {VAL_SPLIT} and {len(data[REPORTED_SPLIT]):,} "
        f"{REPORTED_SPLIT} sentences.",
        "An ensemble's seconds add its members' prediction time (their marginals) to its own "
        "decoding; its members run one after another.",
    ]
    record = result(
        args,
        "Ensembles of saved models (averaged marginals or a vote on entities)",
        columns,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        chosen=chosen,
        scores=scores,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
