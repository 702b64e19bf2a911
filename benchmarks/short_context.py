"""How much do saved models lean on sentence context? Held-out entities cut down to short windows.

    python -m benchmarks.short_context --lang es \
        --model crf=models/trained/es/bert_crf/model \
        --out docs/cpu-2026-12-05c/short_context_es.json

The paper blames its test-set drop on questions and short search queries, which the held-out
split barely holds (es: 5 questions, 7 sentences of 1-5 tokens). As a proxy, every gold entity
of the held-out split becomes a short "query": the entity with at most ``k`` words of its own
sentence on each side (widened so that no other gold entity is cut), without the sentence's
other words. Each model tags every window; the rows are entity-level scores (seqeval strict
IOB2, the project's metric) per ``k``, beside the full sentences. The windows keep the corpus's
words and lower case, so they measure the loss of context only, not the style of real queries.
``--quick`` uses an untrained tiny random BERT on synthetic sentences (the numbers mean
nothing).
"""

from __future__ import annotations

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
    tiny_encoder,
    torch_threads,
    toy_sentences,
)
from complex_ner.core.bio import entity_spans
from complex_ner.core.config import ModelConfig, load_params
from complex_ner.core.paths import REPORTED_SPLIT, split_file
from complex_ner.domain.augment import entity_window
from complex_ner.domain.data import Sentence, read_conll
from complex_ner.domain.metrics import entity_scores
from complex_ner.domain.models.tagger import Tagger, build_model

#: Words of context kept on each side of an entity (None: the whole sentence).
CONTEXTS: tuple[int | None, ...] = (0, 1, 2, 4, None)


def entity_windows(sentence: Sentence, context: int) -> list[Sentence]:
    """One window per gold entity of ``sentence`` (:func:`complex_ner.domain.augment.entity_window`,
    the training crops' rule), ``context`` words on each side."""
    count = len(entity_spans(sentence.tags or ()))
    return [entity_window(sentence, i, context) for i in range(count)]


def _parser() -> Any:
    parser = base_parser("short_context", __doc__, threads=0, module="short_context")
    add_saved_model_options(parser)
    return parser


def _label(context: int | None) -> str:
    return "whole sentence" if context is None else f"entity +/- {context} tokens"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(_parser(), argv)
    machine = machine_info()
    types = entity_types()
    with tempfile.TemporaryDirectory(prefix="short-context-") as tmp, torch_threads(args.threads):
        if args.quick:
            encoder = tiny_encoder(Path(tmp) / "tiny-bert")
            torch.manual_seed(0)
            tagger = build_model(str(encoder), tag_set(), ModelConfig(dropout=0.0), lang="es")
            members = [("random", tagger.save(Path(tmp) / "random"))]
            sentences = toy_sentences(12)
        else:
            members = model_folders(args.model, least=1)
            params = load_params(args.params)
            sentences = read_conll(split_file(params, args.lang, REPORTED_SPLIT))
        sets = {
            _label(k): sentences
            if k is None
            else [w for s in sentences for w in entity_windows(s, k)]
            for k in CONTEXTS
        }
        rows = []
        scores: dict[str, dict[str, Any]] = {}
        for name, folder in members:
            tagger = Tagger.load(folder)
            for label, sents in sets.items():
                start = time.perf_counter()
                pred = tagger.predict([s.tokens for s in sents], args.batch_size)
                seconds = time.perf_counter() - start
                gold = [list(s.tags or ()) for s in sents]
                score = entity_scores(gold, pred, types)
                scores.setdefault(name, {})[label] = score
                rows.append(
                    [
                        name,
                        label,
                        len(sents),
                        round(sum(len(s.tokens) for s in sents) / len(sents), 1),
                        round(score["macro"]["f1"], 4),
                        round(score["micro"]["precision"], 4),
                        round(score["micro"]["recall"], 4),
                        round(score["micro"]["f1"], 4),
                        *(round(score["per_type"][t]["f1"], 4) for t in types),
                        round(seconds, 1),
                    ]
                )
            del tagger
    columns = [
        "model",
        "input",
        "sentences",
        "mean words",
        "macro-F1",
        "micro P",
        "micro R",
        "micro-F1",
        *types,
        "predict s",
    ]
    notes = [
        f"{args.lang}; the {REPORTED_SPLIT} split ({len(sentences):,} sentences); members: "
        + ", ".join(f"{n} = {f}" for n, f in members),
        "Each window holds one gold entity plus at most k words of its sentence on each side "
        "(widened so no other gold entity is cut); other entities inside a window count too.",
    ]
    record = result(
        args,
        "Entities with little context: held-out entities cut to short windows",
        columns,
        rows,
        notes=notes,
        machine=machine,
        scores=scores,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
