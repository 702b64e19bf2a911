"""Chinese input representation: the space, char and natural joins under one fine-tuning budget.

    python -m benchmarks.zh_input --sentences 3000 --epochs 2 --out reports/zh_input.json

MultiCoNER Chinese has one character per word; ``model.join`` decides which pieces the encoder
sees (:mod:`complex_ner.domain.alignment`): ``space`` gives each character a bare ``▁`` piece
plus the character, ``char`` one un-prefixed piece per character, ``natural`` the encoder's own
multi-character pieces (a piece spanning several words is shared by them). For each join the
script reports pieces per sentence, windows and the share of words sharing their label piece,
then fine-tunes ``bert_crf`` (:func:`complex_ner.engines.train.train_model`) on the first
``--sentences`` training sentences for ``--epochs`` epochs and reports training seconds,
seconds per evaluation pass and macro-F1 on ``--split`` (default ``val``). Every run uses the
same params (seed, budget, encoder, head) apart from ``model.join``; patience is set to the
epoch count, so every join trains the whole budget. The result is rewritten after each join, so
a run stopped by a time limit keeps what it measured.

The default encoder is ``models/encoders/e5-trimmed`` when present. A trimmed vocabulary keeps
every character's pieces (enough for ``space`` and ``char``) but only the multi-character pieces
of the text it was trimmed on: trimmed on space-joined text, ``natural`` degenerates to one
piece per character. Give ``--encoder`` the full encoder, or one trimmed with
``model.join=natural``, for a fair ``natural`` row.

``--quick`` trains a tiny random BERT with the e5 tokenizer on synthetic Chinese sentences.
"""

from __future__ import annotations

import shutil
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
    torch_threads,
    write_json,
)
from complex_ner.core.config import Params, load_params
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_text
from complex_ner.core.lang import joins_without_space
from complex_ner.core.paths import split_file
from complex_ner.domain.alignment import alignment_stats, char_pieces
from complex_ner.domain.data import Sentence, format_conll
from complex_ner.domain.encoders import (
    load_tokenizer,
    provision_tokenizer,
    resolve_encoder,
    tiny_random_bert,
)
from complex_ner.domain.metrics import entity_scores
from complex_ner.engines.train import load_training_data, train_model

LANG = "zh"
ARCH = "bert_crf"
JOINS = ("space", "char", "natural")
#: The vocabulary-trimmed e5 the lead measures with, when it is there.
TRIMMED_ENCODER = ROOT / "models" / "encoders" / "e5-trimmed"

COLUMNS = [
    "join",
    "pieces/sentence",
    "train windows",
    "eval windows",
    "words sharing label piece",
    "train s",
    "eval s/pass",
    "macro-F1",
    "best macro-F1",
    "best epoch",
]


# --------------------------------------------------------------------------- --quick inputs

_PEOPLE = ("周杰伦", "李白", "王菲")
_PLACES = ("长江", "巴黎", "北京")
_PRODUCTS = ("iphone", "微信")


def toy_zh_sentences(n: int, offset: int = 0) -> list[Sentence]:
    """Labelled synthetic Chinese sentences, one token per character, Latin runs whole."""
    out = []
    for k in range(offset, offset + n):
        person, place, product = _PEOPLE[k % 3], _PLACES[(k * 2) % 3], _PRODUCTS[k % 2]
        parts = [(person, "PER"), ("在", None), (place, "LOC"), ("用", None), (product, "PROD")]
        tokens: list[str] = []
        tags: list[str] = []
        for text, kind in [*parts, ("。", None)]:
            chars = [text] if text.isascii() else list(text)
            tokens += chars
            if kind is None:
                tags += ["O"] * len(chars)
            else:
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(chars) - 1)
        out.append(Sentence(id=f"zh{k}", tokens=tuple(tokens), tags=tuple(tags)))
    return out


def quick_inputs(scratch: Path, encoder: Path | None) -> tuple[Path, Path]:
    """Synthetic train/val splits and (unless given) a tiny random BERT with the e5 tokenizer.

    Returns:
        The processed-data folder and the encoder folder.
    """
    processed = scratch / "quick-data"
    for split, (n, offset) in {"train": (24, 0), "val": (8, 24)}.items():
        text = format_conll(toy_zh_sentences(n, offset))
        atomic_write_text(processed / LANG / f"{split}.conll", text)
    if encoder is None:
        encoder = tiny_random_bert(provision_tokenizer(scratch / "e5-tokenizer"), scratch / "tiny")
    return processed, encoder


# --------------------------------------------------------------------------- one run


def eval_copy(params: Params, split: str, scratch: Path) -> Path:
    """A processed folder whose ``val`` split is ``split`` (train_model validates on ``val``)."""
    folder = scratch / "data"
    (folder / LANG).mkdir(parents=True, exist_ok=True)
    for name, source in (("train", "train"), ("val", split)):
        path = split_file(params, LANG, source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {LANG} {source} split; run `complex-ner split`")
        shutil.copyfile(path, folder / LANG / f"{name}.conll")
    return folder


def char_coverage(tokenizer: Any, sentences: Sequence[Sentence]) -> dict[str, float]:
    """Of the characters in words written without spaces: the share whose ``char`` piece is
    un-prefixed, only the word-initial ``▁`` form, or missing (those words keep their space
    pieces)."""
    chars = [
        c
        for s in sentences
        for w in s.tokens
        if w and all(joins_without_space(c, c) for c in w)
        for c in w
    ]
    pieces = char_pieces(tokenizer, chars)
    counts = {"unprefixed": 0, "prefixed": 0, "missing": 0}
    for char in chars:
        found = pieces[char]
        if found is None:
            counts["missing"] += 1
        else:
            counts["prefixed" if found[1].startswith("\u2581") else "unprefixed"] += 1
    total = max(len(chars), 1)
    return {"chars": len(chars), **{k: round(v / total, 4) for k, v in counts.items()}}


def run_join(params: Params, tokenizer: Any) -> dict[str, Any]:
    """Alignment numbers, then training and evaluation, for ``params.model.join``."""
    train, val = load_training_data(params, LANG)
    m = params.model
    join = m.join
    train_stats = alignment_stats(
        tokenizer, [s.tokens for s in train], m.max_length, m.stride, join=join
    )
    eval_stats = alignment_stats(tokenizer, [s.tokens for s in val], m.max_length, m.stride, join)
    start = time.perf_counter()
    fitted = train_model(params, LANG, ARCH)
    wall = time.perf_counter() - start
    history = fitted.history
    return {
        "join": join,
        "device": str(pick_device(params.train.device)),
        "train_sentences": len(train),
        "eval_sentences": len(val),
        "epochs": len(history),
        "pieces_per_sentence": round(train_stats["pieces"] / max(len(train), 1), 2),
        "pieces_per_word": round(train_stats["pieces_per_word"], 3),
        "train_windows": train_stats["windows"],
        "eval_windows": eval_stats["windows"],
        "shared_label_share": round(
            train_stats["words_sharing_label_piece"] / max(train_stats["words"], 1), 4
        ),
        "train_seconds": round(sum(r["epoch_seconds"] for r in history), 1),
        "eval_seconds_per_pass": round(sum(r["eval_seconds"] for r in history) / len(history), 2),
        "macro_f1": round(history[-1]["val_macro_f1"], 4),
        "best_macro_f1": round(fitted.best_f1, 4),
        "best_epoch": fitted.best_epoch,
        "macro_f1_per_epoch": [round(r["val_macro_f1"], 4) for r in history],
        "wall_seconds": round(wall, 1),
        "train_alignment": train_stats,
        "eval_alignment": eval_stats,
    }


def trimmed_note(encoder: Path) -> list[str]:
    """A warning when the encoder's vocabulary was trimmed to a corpus (``trim.json``)."""
    if not (encoder / "trim.json").is_file():
        return []
    return [
        "The encoder's vocabulary is trimmed (trim.json): it keeps every character's pieces, but "
        "only the multi-character pieces its corpus produced; trimmed from space-joined text, "
        "the natural join finds almost none. Measure natural with the full encoder or one trimmed "
        "with model.join=natural."
    ]


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("zh_input", __doc__, threads=0, module="zh_input")
    parser.add_argument("--out", dest="json", type=Path, help="write the result here (= --json)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--sentences", type=int, default=None, help="first N training sentences (3000; --quick 24)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="2; --quick 1")
    parser.add_argument("--split", default="val", help="processed zh split to evaluate on")
    parser.add_argument("--eval-sentences", type=int, default=0, help="first N of --split (0: all)")
    parser.add_argument("--joins", nargs="+", choices=JOINS, default=list(JOINS))
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    args = parse(parser, argv)
    if args.sentences is None:
        args.sentences = 24 if args.quick else 3000
    if args.epochs is None:
        args.epochs = 1 if args.quick else 2
    if args.sentences < 1 or args.epochs < 1 or args.eval_sentences < 0:
        parser.error("--sentences and --epochs must be >= 1, --eval-sentences >= 0")
    machine = machine_info()
    rows: list[dict[str, Any]] = []

    def save() -> None:
        if args.json is not None:
            partial = {"benchmark": "zh_input", "partial": True, "machine": machine}
            write_json(args.json, {**partial, "rows_detail": rows})

    with tempfile.TemporaryDirectory(prefix="bench-zh-input-") as tmp:
        scratch = Path(tmp)
        source = list(args.set)  # where the splits are read from
        encoder = args.encoder
        if args.quick:
            synthetic, encoder = quick_inputs(scratch, encoder)
            source.append(f"split.processed_dir={synthetic}")
        elif encoder is None and TRIMMED_ENCODER.is_dir():
            encoder = TRIMMED_ENCODER
        processed = eval_copy(load_params(args.params, source), args.split, scratch)
        common = [
            *args.set,
            f"split.processed_dir={processed}",
            f"train.max_train_sentences={args.sentences}",
            f"train.max_val_sentences={args.eval_sentences}",
            f"train.epochs={args.epochs}",
            f"train.patience={args.epochs}",  # no early stop: the same budget for every join
            f"train.threads={args.threads}",
            "pretrain.enabled=false",  # the encoder given, not an adapted one
            "trim.enabled=false",  # trimmed already (e5-trimmed), or the full encoder on purpose
        ]
        if args.devices != "all":
            common.append(f"train.device={args.devices}")
        if encoder is not None:
            common.append(f"model.encoder={Path(encoder).resolve()}")
        params = load_params(args.params, common)
        encoder_name = resolve_encoder(params.model.encoder, params.root)
        tokenizer = load_tokenizer(encoder_name)
        # The scorer's first call imports its libraries (seconds): not the first join's cost.
        entity_scores([["B-PER"]], [["B-PER"]], params.data.entity_types)
        with torch_threads(args.threads):
            for join in args.joins:
                run_dir = scratch / "runs" / join
                params = load_params(
                    args.params, [*common, f"model.join={join}", f"train.output_dir={run_dir}"]
                )
                rows.append(run_join(params, tokenizer))
                save()
                shutil.rmtree(run_dir, ignore_errors=True)  # the models are not kept
        train, val = load_training_data(params, LANG)
        coverage = char_coverage(tokenizer, [*train, *val])
    table = [
        [r["join"], r["pieces_per_sentence"], r["train_windows"], r["eval_windows"]]
        + [r["shared_label_share"], r["train_seconds"], r["eval_seconds_per_pass"]]
        + [r["macro_f1"], r["best_macro_f1"], r["best_epoch"]]
        for r in rows
    ]
    record = result(
        args,
        f"Chinese input representation: {ARCH}, {args.sentences} sentences, {args.epochs} epochs",
        COLUMNS,
        table,
        notes=[
            f"Encoder: {encoder_name}; evaluated on {args.split} "
            f"({rows[0]['eval_sentences']} sentences); device {rows[0]['device']}.",
            f"Characters of CJK words whose `char` piece is un-prefixed: "
            f"{coverage['unprefixed']:.1%}, word-initial only: {coverage['prefixed']:.1%}, "
            f"none (space pieces kept): {coverage['missing']:.1%}.",
            f"Overrides: {' '.join(common)}.",
            *trimmed_note(Path(encoder_name)),
        ],
        machine=machine,
        rows_detail=rows,
        char_coverage=coverage,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
