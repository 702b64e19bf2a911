"""Validation macro-F1 and training cost per language x architecture under one budget.

    python -m benchmarks.bench_quality --langs es zh \
        --archs bert_crf bert_bilstm_crf bert_linear \
        --set train.max_train_sentences=1500 --set train.epochs=2 --json reports/quality.json

Every run uses the same params (seed, budget, encoder) apart from the architecture, so the
table compares heads, not luck. Models go to ``--out`` (default ``models/compare``), not to the
pipeline's ``models/trained``. The result is rewritten after every epoch, so a run stopped by a
time limit keeps what it measured. ``--quick`` trains a tiny random BERT for one epoch on
synthetic splits.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    base_parser,
    emit,
    machine_info,
    parse,
    result,
    tiny_encoder,
    toy_sentences,
    write_json,
)
from complex_ner.core.config import ARCHITECTURES, Params, load_params
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import split_file
from complex_ner.domain.data import format_conll
from complex_ner.engines.train import train_model
from complex_ner.engines.trainer import Callback

COLUMNS = [
    "lang",
    "arch",
    "device",
    "train sentences",
    "epochs",
    "best val macro-F1",
    "best epoch",
    "val micro-F1",
    "s/epoch",
    "pad share",
    "wall s",
]


class EpochRows(Callback):
    """Updates one partial row after every epoch and saves the rows so far."""

    def __init__(self, row: dict[str, Any], save: Any) -> None:
        self.row, self.save = row, save
        self.start = time.perf_counter()

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        row = self.row
        row["val_macro_f1"].append(round(record["val_macro_f1"], 4))
        row.update(
            best_val_macro_f1=max(row["val_macro_f1"]),
            epochs=len(row["val_macro_f1"]),
            sec_per_epoch=round(record["epoch_seconds"], 1),
            wall_seconds=round(time.perf_counter() - self.start, 1),
        )
        self.save()


def quick_overrides(folder: Path, langs: Sequence[str]) -> list[str]:
    """A tiny random BERT and synthetic train/val splits under ``folder``, as overrides."""
    encoder = tiny_encoder(folder / "tiny-bert")
    processed = folder / "processed"
    params = load_params(ROOT / "params.yaml", [f"split.processed_dir={processed}"])
    for lang in langs:
        for split, (n, offset) in {"train": (24, 0), "val": (8, 24)}.items():
            text = format_conll(toy_sentences(n, offset))
            atomic_write_text(split_file(params, lang, split), text)
    return [
        f"split.processed_dir={processed}",
        f"model.encoder={encoder}",
        "trim.enabled=false",  # the tiny encoder as it is
        "train.epochs=1",
        "train.batch_size=8",
    ]


def final_row(params: Params, lang: str, arch: str, fitted: Any, wall: float) -> dict[str, Any]:
    """The finished run's row."""
    h = fitted.history
    best = h[fitted.best_epoch - 1]
    return {
        "lang": lang,
        "arch": arch,
        "finished": True,
        "device": str(pick_device(params.train.device)),
        "label_piece": params.model.piece_for(lang),
        "train_sentences": params.train.max_train_sentences or "all",
        "epochs": len(h),
        "best_val_macro_f1": round(fitted.best_f1, 4),
        "best_epoch": fitted.best_epoch,
        "val_micro_f1": round(best["val_micro_f1"], 4),
        "sec_per_epoch": round(sum(r["epoch_seconds"] for r in h) / len(h), 1),
        "pad_share": round(h[-1]["pad_share"], 4),
        "wall_seconds": round(wall, 1),
        "val_macro_f1": [round(r["val_macro_f1"], 4) for r in h],
        "best_per_type_f1": {
            k[len("val_f1_") :]: round(v, 4) for k, v in best.items() if k.startswith("val_f1_")
        },
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("quality", __doc__, threads=None)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--langs", nargs="+", default=None, help="default: train.languages")
    parser.add_argument("--archs", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    parser.add_argument("--out", default="models/compare", help="train.output_dir of the runs")
    args = parse(parser, argv)
    rows: list[dict[str, Any]] = []
    machine = machine_info()

    def save() -> None:
        if args.json is not None:
            partial = {"benchmark": "quality", "partial": True, "machine": machine}
            write_json(args.json, {**partial, "rows_detail": rows})

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        langs = args.langs or (["es"] if args.quick else None)
        overrides = [*args.set, f"train.output_dir={Path(args.out).resolve()}"]
        if args.quick:
            overrides += quick_overrides(Path(tmp), langs)
            overrides.append(f"train.output_dir={Path(tmp) / 'out'}")
        if args.encoder is not None:
            overrides += [f"model.encoder={args.encoder.resolve()}", "trim.enabled=false"]
        params = load_params(args.params, overrides)
        for lang in langs or params.train.languages:
            for arch in args.archs:
                row: dict[str, Any] = {"lang": lang, "arch": arch, "finished": False}
                row["val_macro_f1"] = []
                rows.append(row)
                start = time.perf_counter()
                fitted = train_model(params, lang, arch, callbacks=[EpochRows(row, save)])
                rows[-1] = final_row(params, lang, arch, fitted, time.perf_counter() - start)
                save()
    table_rows = [
        [r["lang"], r["arch"], r["device"], r["train_sentences"], r["epochs"]]
        + [r["best_val_macro_f1"], r["best_epoch"], r["val_micro_f1"], r["sec_per_epoch"]]
        + [r["pad_share"], r["wall_seconds"]]
        for r in rows
    ]
    record = result(
        args,
        "Validation macro-F1 and training cost per language x architecture",
        COLUMNS,
        table_rows,
        notes=[f"Overrides: {' '.join(overrides) or 'none'}."],
        machine=machine,
        rows_detail=rows,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
