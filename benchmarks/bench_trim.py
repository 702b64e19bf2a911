"""Vocabulary trimming: size, load time, training speed, memory and F1, full vs trimmed.

The default encoder's 250k-row word-embedding matrix is 96M of its 118M parameters.
:func:`complex_ner.domain.vocab.trim_encoder` keeps the pieces a corpus uses. This script trims the
default encoder to the Spanish and Chinese processed splits (or, without them, to the
benchmark sentences), then trains ``bert_crf`` for one epoch from the same seed on the same
Spanish slice with each encoder, word embeddings frozen and trainable, and compares: folder
size, parameters, load time, seconds per step, peak RSS of the training loop, the epoch's mean
loss, validation macro-F1, and whether the validation tags are identical to the full encoder's.

    .venv/bin/python benchmarks/bench_trim.py [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_training import train_once  # noqa: E402
from benchmarks.run_all import (  # noqa: E402
    ROOT,
    base_parser,
    default_encoder,
    emit,
    load_sentences,
    machine_info,
    make_result,
    target,
    tiny_encoder,
    torch_threads,
)

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
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def load_seconds(folder: Path) -> float:
    from complex_ner.domain.encoders import load_encoder, load_tokenizer

    start = time.perf_counter()
    load_encoder(str(folder))
    load_tokenizer(str(folder))
    return time.perf_counter() - start


def corpus(sentences: Sequence[Any], use_splits: bool = True) -> tuple[list[str], str]:
    """The processed es + zh splits joined as the model joins them, else the given sentences
    (always for ``--quick``: fast, and no processed splits needed)."""
    from complex_ner.core.config import load_params
    from complex_ner.domain.alignment import join_words
    from complex_ner.domain.vocab import corpus_texts

    params = load_params(ROOT / "params.yaml")
    texts = [join_words(s.tokens, params.model.join)[0] for s in sentences]
    if not use_splits:
        return texts, f"the {len(texts)} benchmark sentences"
    try:
        return corpus_texts(params, ["es", "zh"]), "processed es + zh splits"
    except FileNotFoundError:
        return texts, f"the {len(texts)} benchmark sentences (no processed splits)"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None)
    parser.add_argument("--val-sentences", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--encoder", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.sentences or (16 if args.quick else 256)
    n_val = args.val_sentences or (8 if args.quick else 128)
    batch_size = args.batch_size or (8 if args.quick else 32)

    from complex_ner.domain.vocab import trim_encoder

    with tempfile.TemporaryDirectory(prefix="bench-trim-") as tmp:
        full = args.encoder or (
            tiny_encoder(Path(tmp) / "tiny-bert") if args.quick else default_encoder()
        )
        train, source = load_sentences(n, 0, allow_toy=args.quick)
        val, _ = load_sentences(n_val, n, allow_toy=args.quick)
        texts, corpus_source = corpus([*train, *val], use_splits=not args.quick)
        start = time.perf_counter()
        report = trim_encoder(full, texts, Path(tmp) / "trimmed")
        trim_seconds = time.perf_counter() - start
        trimmed = Path(report.output)
        encoders = {"full": (Path(full), report.vocab_before, report.params_before)}
        encoders["trimmed"] = (trimmed, report.vocab_after, report.params_after)
        records: list[dict[str, Any]] = []
        with torch_threads(args.threads or None) as threads:
            machine = machine_info()
            for freeze in (True, False):
                for name, (folder, rows, params) in encoders.items():
                    rec = train_once(
                        folder, "bert_crf", freeze, train, val, batch_size, threads, "cpu",
                        collect=not args.quick, predict_val=True,
                    )  # fmt: skip
                    rec.update(
                        encoder=name,
                        vocab_rows=rows,
                        params=params,
                        folder_mb=folder_mb(folder),
                        load_seconds=load_seconds(folder),
                    )
                    records.append(rec)
    full_tags = {r["freeze_embeddings"]: r["val_tags"] for r in records if r["encoder"] == "full"}
    rows = []
    for r in records:
        same = r["val_tags"] == full_tags[r["freeze_embeddings"]]
        r["same_val_tags"] = same
        rows.append(
            [
                r["encoder"],
                r["vocab_rows"],
                r["params"] / 1e6,
                r["folder_mb"],
                r["load_seconds"],
                "yes" if r["freeze_embeddings"] else "no",
                r["seconds_per_step"],
                r["peak_rss_mib"],
                r["rss_delta_mib"],
                r["loss"],
                r["val_macro_f1"],
                "—" if r["encoder"] == "full" else ("yes" if same else "no"),
            ]
        )

    def pick(name: str, freeze: bool) -> dict[str, Any]:
        return next(r for r in records if (r["encoder"], r["freeze_embeddings"]) == (name, freeze))

    summary = [
        target(
            "trimmed vocab rows / params (M)",
            f"{report.vocab_after:,} / {report.params_after / 1e6:.1f} "
            f"(full {report.vocab_before:,} / {report.params_before / 1e6:.1f})",
            None,
            None,
        ),
        target(
            "s/step trainable embeddings: full / trimmed",
            f"{pick('full', False)['seconds_per_step']:.2f} / "
            f"{pick('trimmed', False)['seconds_per_step']:.2f}",
            None,
            None,
        ),
        target(
            "training RSS Δ MiB trainable embeddings: full / trimmed",
            f"{pick('full', False)['rss_delta_mib']:,.0f} / "
            f"{pick('trimmed', False)['rss_delta_mib']:,.0f}",
            None,
            None,
        ),
        target(
            "val tags identical to the full encoder's (frozen, trainable)",
            f"{pick('trimmed', True)['same_val_tags']}, {pick('trimmed', False)['same_val_tags']}",
            "identical",
            pick("trimmed", True)["same_val_tags"] and pick("trimmed", False)["same_val_tags"],
        ),
    ]
    notes = [
        f"Data: {source}; bert_crf, 1 epoch, batch {batch_size}, validation on {n_val} "
        f"sentences; seed 13 for the head and for training; torch threads: {threads}.",
        f"Trimmed over {corpus_source} ({report.corpus_texts:,} texts) in {trim_seconds:.1f} s, "
        "including the check that every text tokenizes to the same pieces.",
        "load s: encoder + tokenizer through transformers (the training path).",
    ]
    for r in records:
        r.pop("val_tags", None)
        r.pop("lengths", None)
    result = make_result(
        "trim",
        "Vocabulary trimming: full vs trimmed default encoder",
        "python benchmarks/bench_trim.py" + (" --quick" if args.quick else ""),
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
    )
    return emit(result, args.json)


if __name__ == "__main__":
    main()
