"""Training recipes compared at one budget: augmentation, weight averaging, embeddings, rates.

    python -m benchmarks.recipe --lang es --sentences 3000 --epochs 1 \
        --variants base augment swa ema --eval-split val --out reports/recipe-es.json

Each variant is a set of params overrides on top of params.yaml and ``--set``; every variant
trains with ``engines.train.train_model`` on the same sentences, epochs, seed and encoder, so
the table compares recipes, not luck. Each variant's saved model (the best validation point,
raw or averaged weights) is then scored on ``--eval-split`` (a processed split,
``<split.processed_dir>/<lang>/<split>.conll``) with ``engines.evaluate.evaluate_f1``.

Built-in variants: see :data:`VARIANTS` (``--variants`` picks them, default base augment swa
ema). ``--variant NAME=key=value,key=value`` adds one; a key without a params section
(``augment.mention_replace=0.3``, ``lr_head=1e-3``) is a ``train`` key. Models go to
``--models/<variant>`` (default ``models/recipe``), not to the pipeline's ``models/trained``.
``--config`` applies a named configuration (``configs/experiments/paper.yaml``) before ``--set``.
The JSON (``--out``) is rewritten after every epoch, so a run stopped by a time limit keeps
what it measured. ``--quick`` trains a tiny random BERT on synthetic splits.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_quality import quick_overrides
from benchmarks.harness import ROOT, base_parser, emit, machine_info, parse, result, write_json
from complex_ner.app.pipeline import config_overrides
from complex_ner.core.config import ARCHITECTURES, Params, load_params
from complex_ner.core.device import pick_device
from complex_ner.core.paths import TAGGER_FILE, split_file
from complex_ner.domain.data import read_conll
from complex_ner.domain.models.tagger import Tagger
from complex_ner.engines.evaluate import evaluate_f1
from complex_ner.engines.train import train_model
from complex_ner.engines.trainer import Callback, ProgressLogger

#: Built-in variants: name -> overrides.
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "augment": ("train.augment.mention_replace=0.5",),
    "crop": ("train.augment.context_crop=0.5",),
    "swa": ("train.average=swa",),
    "ema": ("train.average=ema",),
    "frozen_emb": ("train.freeze_embeddings=true",),
    "trainable_emb": ("train.freeze_embeddings=false",),
    "lr_enc_5e-5": ("train.lr_encoder=5.0e-5",),
    "lr_enc_2e-4": ("train.lr_encoder=2.0e-4",),
    "lr_head_1e-3": ("train.lr_head=1.0e-3",),
    "lr_head_1e-2": ("train.lr_head=1.0e-2",),
    "freeze_6": ("train.freeze_layers=6",),
    "freeze_9": ("train.freeze_layers=9",),
}
DEFAULT_VARIANTS = ("base", "augment", "swa", "ema")
# A comma starts a new override only before "key=": list values ([a,b]) keep theirs.
_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.]*=)")


def parse_variant(text: str, sections: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """``NAME=key=value,key=value`` -> ``(NAME, ("train.key=value", ...))``.

    Raises:
        ValueError: no name, or an override that is not ``key=value`` (names the option).
    """
    name, _, rest = text.partition("=")
    if not name.strip() or not rest.strip():
        raise ValueError(f"--variant {text!r}: expected NAME=key=value[,key=value...]")
    overrides = []
    for item in _OVERRIDE_SPLIT.split(rest):
        key, eq, value = item.strip().partition("=")
        if not eq or not key:
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
        if key.split(".", 1)[0] not in sections:
            key = f"train.{key}"
        overrides.append(f"{key}={value}")
    return name.strip(), tuple(overrides)


def pick_variants(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """The variants to run, in order: the chosen built-ins, then the ``--variant`` ones."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; built-in: {', '.join(VARIANTS)}")
    chosen = {name: VARIANTS[name] for name in args.variants}
    sections = tuple(Params.model_fields)
    for text in args.variant:
        try:
            name, overrides = parse_variant(text, sections)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        if name in chosen:
            raise SystemExit(f"--variant {text!r}: variant {name!r} is already in the list")
        chosen[name] = overrides
    if not chosen:
        raise SystemExit("no variants to run")
    return chosen


class EpochScores(Callback):
    """Adds each epoch's validation scores to the variant's row and saves the rows so far."""

    def __init__(self, row: dict[str, Any], save: Any) -> None:
        self.row, self.save = row, save

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.row["val_macro_f1"].append(round(record["val_macro_f1"], 4))
        # None for an epoch that ended before averaging began (or without averaging).
        averaged = record.get("avg_val_macro_f1")
        self.row["avg_val_macro_f1"].append(None if averaged is None else round(averaged, 4))
        self.row.setdefault("epoch_seconds", []).append(round(record["epoch_seconds"], 1))
        if "stopped_by" in record:  # train.time_budget_minutes ended the run here
            self.row["stopped_by"] = record["stopped_by"]
        self.save()


def per_epoch(row: dict[str, Any]) -> str:
    """``0.412 / 0.520``, with the averaged weights' scores in brackets when there are any."""
    text = " / ".join(f"{v:.3f}" for v in row["val_macro_f1"])
    averaged = row["avg_val_macro_f1"]
    if any(v is not None for v in averaged):
        text += " (avg " + " / ".join("—" if v is None else f"{v:.3f}" for v in averaged) + ")"
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("recipe", __doc__, threads=None, module="recipe")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--lang", default="es")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="bert_crf")
    parser.add_argument("--sentences", type=int, default=None, help="train.max_train_sentences")
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs")
    parser.add_argument("--eval-split", default="val", help="processed split scored at the end")
    parser.add_argument(
        "--variants", nargs="*", default=list(DEFAULT_VARIANTS), help="built-in variants"
    )
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=key=value,key=value (repeatable)"
    )
    parser.add_argument(
        "--config", type=Path, help="a named configuration (configs/experiments/*.yaml) first"
    )
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    parser.add_argument("--models", default="models/recipe", help="models go to <models>/<name>")
    parser.add_argument("--out", dest="json", type=Path, help="write the result here (JSON)")
    args = parse(parser, argv)
    variants = pick_variants(args)
    machine = machine_info()
    rows: list[dict[str, Any]] = []

    def save() -> None:
        if args.json is not None:
            partial = {"benchmark": "recipe", "partial": True, "machine": machine}
            write_json(args.json, {**partial, "rows_detail": rows})

    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        common = []
        if args.quick:
            # The tiny random BERT as it is: no trimmed or WWM-adapted encoder to look for.
            off = [f"{s}.enabled=false" for s in ("trim", "pretrain") if s in Params.model_fields]
            common = [*quick_overrides(Path(tmp), [args.lang]), *off]
        if args.config is not None:
            common += config_overrides(args.config)
        common += args.set
        if args.encoder is not None:
            common += [f"model.encoder={args.encoder.resolve()}", "trim.enabled=false"]
        if args.sentences is not None:
            common.append(f"train.max_train_sentences={args.sentences}")
        if args.epochs is not None:
            common.append(f"train.epochs={args.epochs}")
        models = Path(tmp) / "models" if args.quick else Path(args.models).resolve()
        # Every variant's params first: a typo fails before anything trains.
        runs = {
            name: load_params(
                args.params, [*common, *overrides, f"train.output_dir={models / name}"]
            )
            for name, overrides in variants.items()
        }
        first = next(iter(runs.values()))
        eval_path = split_file(first, args.lang, args.eval_split)
        if not eval_path.is_file():
            raise SystemExit(f"--eval-split {args.eval_split}: {eval_path} not found")
        eval_sentences = read_conll(eval_path, tagset=first.data.tags)
        types = first.data.entity_types
        for name, params in runs.items():
            row: dict[str, Any] = {"variant": name, "overrides": list(variants[name])}
            row.update(finished=False, val_macro_f1=[], avg_val_macro_f1=[])
            rows.append(row)
            start = time.perf_counter()
            progress = ProgressLogger(f"{args.lang} {name}")
            fitted = train_model(
                params, args.lang, args.arch, callbacks=[progress, EpochScores(row, save)]
            )
            seconds = time.perf_counter() - start
            # The run sets torch's threads from train.threads: record what it trained with.
            machine["torch_threads"] = torch.get_num_threads()
            if fitted.model_dir is None:
                raise RuntimeError(f"variant {name}: no model was saved")
            tagger = Tagger.load(fitted.model_dir, device=pick_device(params.train.device))
            scores = evaluate_f1(tagger, eval_sentences, types, params.evaluate.batch_size)
            meta = json.loads((fitted.model_dir / TAGGER_FILE).read_text(encoding="utf-8"))
            row.update(
                finished=True,
                train_sentences=meta.get("train_sentences"),
                best_val_macro_f1=round(fitted.best_f1, 4),
                best_epoch=fitted.best_epoch,
                epochs_run=len(fitted.history),
                saved_weights=fitted.best_weights,
                eval_macro_f1=round(scores["macro"]["f1"], 4),
                eval_micro_f1=round(scores["micro"]["f1"], 4),
                eval_per_type_f1={t: round(v["f1"], 4) for t, v in scores["per_type"].items()},
                train_seconds=round(seconds, 1),
            )
            save()
    split = args.eval_split
    columns = [
        "variant",
        "val macro-F1 per epoch",
        "best val macro-F1",
        "saved weights",
        f"{split} macro-F1",
        f"{split} micro-F1",
        *[f"{split} {t}" for t in types],
        "train s",
    ]
    table_rows = [
        [r["variant"], per_epoch(r), r["best_val_macro_f1"], r["saved_weights"]]
        + [r["eval_macro_f1"], r["eval_micro_f1"]]
        + [r["eval_per_type_f1"].get(t) for t in types]
        + [r["train_seconds"]]
        for r in rows
    ]
    p = first.train
    sentences = sorted({r["train_sentences"] for r in rows}, key=str)
    notes = [
        f"{args.lang} {args.arch}; same budget and seed for every variant: "
        f"{'/'.join(map(str, sentences))} training sentences (before copies), "
        f"{p.epochs} epoch(s), seed {p.seed}; scored on {eval_path} "
        f"({len(eval_sentences):,} sentences).",
        "Overrides per variant: "
        + "; ".join(f"{n}: {' '.join(o) or 'none'}" for n, o in variants.items())
        + ".",
        f"Common overrides: {' '.join(common) or 'none'}.",
    ]
    record = result(
        args,
        "Training recipes at one budget (validation and held-out macro-F1)",
        columns,
        table_rows,
        notes=notes,
        machine=machine,
        rows_detail=rows,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
