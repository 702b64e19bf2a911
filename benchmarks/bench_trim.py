"""Vocabulary trimming: size, load time, training speed, memory and F1, full vs trimmed.

:func:`complex_ner.domain.vocab.trim_encoder` keeps the pieces a corpus uses. This script trims
the encoder to the Spanish and Chinese processed splits (or, without them, to the benchmark
sentences), then trains ``bert_crf`` for one epoch from the same seed on the same Spanish slice
with each encoder, word embeddings frozen and trainable, and compares: folder size, parameters,
load time, seconds per step, peak RSS of the training loop, the epoch's mean loss, validation
macro-F1, and whether the validation tags are identical to the full encoder's.

    python -m benchmarks.bench_trim [--quick] [--json PATH]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_training import SEED, add_data_options, train_once
from benchmarks.harness import (
    base_parser,
    emit,
    load_sentences,
    machine_info,
    parse,
    pick_encoder,
    project_params,
    result,
    target,
    torch_threads,
)
from complex_ner.domain.alignment import join_words
from complex_ner.domain.data import Sentence
from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.vocab import corpus_texts, trim_encoder

COLUMNS = [
    "encoder",
    "vocab rows",
    "params (M)",
    "folder MB",
    "load s",
    "freeze embeddings",
    "s/step",
    "peak RSS MiB",
    "training RSS Δ MiB",
    "epoch loss",
    "val macro-F1",
    "val tags = full encoder's",
]


def folder_mb(folder: Path) -> float:
    """Size of the files directly in ``folder``, in MB."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def load_seconds(folder: Path) -> float:
    """Seconds to load the encoder and its tokenizer through transformers (the training path)."""
    start = time.perf_counter()
    load_encoder(str(folder))
    load_tokenizer(str(folder))
    return time.perf_counter() - start


def corpus(sentences: Sequence[Sentence], use_splits: bool) -> tuple[list[str], str]:
    """The processed es + zh splits as the model joins them, else the given sentences."""
    params = project_params()
    texts = [join_words(s.tokens, params.model.join)[0] for s in sentences]
    if not use_splits:
        return texts, f"the {len(texts)} benchmark sentences"
    try:
        return corpus_texts(params, ["es", "zh"]), "processed es + zh splits"
    except FileNotFoundError:
        return texts, f"the {len(texts)} benchmark sentences (no processed splits)"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("trim", __doc__)
    add_data_options(parser)
    args = parse(parser, argv)
    n = args.sentences or (16 if args.quick else 256)
    n_val = args.val_sentences or (8 if args.quick else 128)
    batch_size = args.batch_size or (8 if args.quick else 32)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-trim-") as tmp:
        full = pick_encoder(args, Path(tmp))
        train, source = load_sentences(n, 0, toy=args.quick)
        val, _ = load_sentences(n_val, n, toy=args.quick)
        texts, corpus_source = corpus([*train, *val], use_splits=not args.quick)
        start = time.perf_counter()
        report = trim_encoder(full, texts, Path(tmp) / "trimmed")
        trim_seconds = time.perf_counter() - start
        encoders = {
            "full": (full, report.vocab_before, report.params_before),
            "trimmed": (Path(report.output), report.vocab_after, report.params_after),
        }
        with torch_threads(args.threads) as threads:
            machine = machine_info()
            for freeze in (True, False):
                for name, (folder, vocab_rows, params) in encoders.items():
                    rec, tagger = train_once(
                        folder, "bert_crf", freeze, train, val, batch_size, "cpu",
                        collect=not args.quick,
                    )  # fmt: skip
                    rec.update(
                        encoder=name,
                        vocab_rows=vocab_rows,
                        params=params,
                        folder_mb=folder_mb(folder),
                        load_seconds=load_seconds(folder),
                        val_tags=tagger.predict([s.tokens for s in val]),
                    )
                    records.append(rec)
    full_tags = {r["freeze_embeddings"]: r["val_tags"] for r in records if r["encoder"] == "full"}
    rows = []
    for r in records:
        r["same_val_tags"] = r.pop("val_tags") == full_tags[r["freeze_embeddings"]]
        r.pop("lengths")
        rows.append(
            [
                r["encoder"],
                r["vocab_rows"],
                r["params"] / 1e6,
                r["folder_mb"],
                r["load_seconds"],
                r["freeze_embeddings"],
                r["seconds_per_step"],
                r["peak_rss_mib"],
                r["rss_delta_mib"],
                r["loss"],
                r["val_macro_f1"],
                "—" if r["encoder"] == "full" else r["same_val_tags"],
            ]
        )

    def pick(name: str, freeze: bool) -> dict[str, Any]:
        return next(r for r in records if (r["encoder"], r["freeze_embeddings"]) == (name, freeze))

    identical = [pick("trimmed", freeze)["same_val_tags"] for freeze in (True, False)]
    summary = [
        target(
            "trimmed vocab rows / params (M)",
            f"{report.vocab_after:,} / {report.params_after / 1e6:.1f} "
            f"(full {report.vocab_before:,} / {report.params_before / 1e6:.1f})",
        ),
        target(
            "s/step trainable embeddings: full / trimmed",
            f"{pick('full', False)['seconds_per_step']:.2f} / "
            f"{pick('trimmed', False)['seconds_per_step']:.2f}",
        ),
        target(
            "training RSS Δ MiB trainable embeddings: full / trimmed",
            f"{pick('full', False)['rss_delta_mib']:,.0f} / "
            f"{pick('trimmed', False)['rss_delta_mib']:,.0f}",
        ),
        target(
            "val tags identical to the full encoder's (frozen, trainable)",
            ", ".join(map(str, identical)),
            "identical",
            all(identical),
        ),
    ]
    notes = [
        f"Data: {source}; bert_crf, 1 epoch, batch {batch_size}, validation on {n_val} "
        f"sentences; seed {SEED} for the head and for training; torch threads: {threads}.",
        f"Trimmed over {corpus_source} ({report.corpus_texts:,} texts) in {trim_seconds:.1f} s, "
        "including the check that every text tokenizes to the same pieces.",
        "load s: encoder + tokenizer through transformers (the training path).",
    ]
    record = result(
        args,
        "Vocabulary trimming: full vs trimmed encoder",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
