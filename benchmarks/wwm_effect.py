"""Does WWM continued pre-training help fine-tuning? Pre-train, then fine-tune with and without.

    python -m benchmarks.wwm_effect --lang zh --epochs 1 --head-warmup-steps 200 \
        --ft-sentences 3000 --ft-epochs 2 --eval-split heldout --out reports/wwm_effect_zh.json

1. Pre-trains the encoder (:func:`complex_ner.engines.pretrain.pretrain_encoder`) on the
   language's train + val text (``--sentences`` caps it; ``--epochs`` or ``--steps``), with a
   ``--head-warmup-steps`` warm-up of the fresh MLM head, into ``--work`` (not the pipeline's
   ``pretrain.output_dir``). Reports the MLM loss and masked-token accuracy on the held-back
   slice before and after the warm-up and at the end, and the seconds.
2. Fine-tunes ``--arch`` (BERT+CRF) twice with the same params, seed and budget
   (``--ft-sentences``, ``--ft-epochs``): from the base encoder and from the adapted one.
3. Scores both best checkpoints on ``--eval-split`` (``val`` by default; ``heldout`` is the
   split no stage trains or selects on; the val text is in the pre-training corpus, unlabelled).

The base encoder is ``--encoder``, else ``models/encoders/e5-trimmed`` when it exists, else
``model.encoder`` (``trim.enabled`` is turned off: the folder given is used as it is). The JSON is
rewritten after each phase, so a run stopped by a time limit keeps what it measured.
``--quick`` runs a tiny random BERT on synthetic splits (seconds; the numbers mean nothing).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    base_parser,
    emit,
    machine_info,
    parse,
    result,
    target,
    tiny_encoder,
    torch_threads,
    toy_sentences,
    write_json,
)
from complex_ner.core.config import ARCHITECTURES, Params, load_params
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import VAL_SPLIT, split_file
from complex_ner.domain.data import format_conll, read_conll
from complex_ner.domain.encoders import load_tokenizer, resolve_encoder
from complex_ner.domain.models.tagger import Tagger
from complex_ner.engines.evaluate import evaluate_f1
from complex_ner.engines.pretrain import base_encoder, build_corpus, pretrain_encoder
from complex_ner.engines.train import train_model
from complex_ner.engines.trainer import default_callbacks

DEFAULT_ENCODER = ROOT / "models" / "encoders" / "e5-trimmed"
SCORE_POINTS = ("before", "after_head_warmup", "end")

COLUMNS = [
    "variant",
    "pretrain steps (head + main)",
    "pretrain s",
    "MLM loss before / warm-up / end",
    "masked acc before / warm-up / end",
    "ft epochs",
    "best val macro-F1",
    "eval macro-F1",
    "eval micro-F1",
    "ft s",
]


def _parser() -> Any:
    parser = base_parser("wwm_effect", __doc__, threads=0, module="wwm_effect")
    parser.add_argument("--out", dest="json", type=Path, help="write the JSON result here")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--lang", default="es")
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    parser.add_argument("--work", type=Path, default=None, help="default models/wwm_effect/<lang>")
    pre = parser.add_argument_group("pre-training")
    pre.add_argument("--sentences", type=int, default=None, help="pretrain.max_sentences (0 all)")
    budget = pre.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, help="pretrain.epochs")
    budget.add_argument(
        "--steps", type=int, default=None, help="main-phase steps: caps the sentences to fit"
    )
    pre.add_argument("--head-warmup-steps", type=int, default=None)
    pre.add_argument("--head-lr", type=float, default=None)
    pre.add_argument("--lr", type=float, default=None, help="pretrain.lr")
    pre.add_argument("--eval-fraction", type=float, default=None, help="pretrain.eval_fraction")
    ft = parser.add_argument_group("fine-tuning")
    ft.add_argument("--arch", choices=ARCHITECTURES, default="bert_crf")
    ft.add_argument("--ft-sentences", type=int, default=None, help="train.max_train_sentences")
    ft.add_argument("--ft-epochs", type=int, default=None, help="train.epochs")
    ft.add_argument("--seed", type=int, default=None, help="train.seed (default: params)")
    ft.add_argument("--eval-split", default=VAL_SPLIT, help="val (default), heldout, ...")
    return parser


def _quick_overrides(folder: Path, lang: str) -> list[str]:
    """A tiny random BERT and synthetic train/val/heldout splits under ``folder``."""
    encoder = tiny_encoder(folder / "tiny-bert")
    processed = folder / "processed"
    params = load_params(ROOT / "params.yaml", [f"split.processed_dir={processed}"])
    for split, (n, offset) in {"train": (24, 0), "val": (8, 24), "heldout": (8, 32)}.items():
        atomic_write_text(split_file(params, lang, split), format_conll(toy_sentences(n, offset)))
    return [
        f"split.processed_dir={processed}",
        f"model.encoder={encoder}",
        "train.batch_size=8",
        "train.device=cpu",
        "pretrain.batch_size=8",
        "pretrain.head_warmup_steps=3",
        "pretrain.eval_fraction=0.1",
    ]


def _pick_encoder(args: Any, params: Params) -> str:
    if args.encoder is not None:
        return str(Path(args.encoder).resolve())
    if not args.quick and DEFAULT_ENCODER.is_dir():  # --quick: the tiny BERT
        return str(DEFAULT_ENCODER)
    return resolve_encoder(params.model.encoder, params.root)


def _sentences_for_steps(params: Params, lang: str, steps: int) -> tuple[int, int]:
    """``(max_sentences, epochs)`` giving at least ``steps`` main-phase steps: one pass over the
    first sentences when the corpus is big enough, else enough passes over all of it."""
    cfg = params.pretrain
    uncapped = params.model_copy(update={"pretrain": cfg.model_copy(update={"max_sentences": 0})})
    corpus = build_corpus(uncapped, lang, load_tokenizer(base_encoder(uncapped, lang)))
    per_epoch = math.ceil(len(corpus.examples) / cfg.batch_size)
    if per_epoch >= steps:
        # Held-back sentences are drawn from the capped corpus: leave room for them.
        wanted = math.ceil(steps * cfg.batch_size / (1.0 - cfg.eval_fraction)) + 1
        return min(wanted, corpus.stats.sentences), 1
    return 0, math.ceil(steps / per_epoch)


def _overrides(args: Any, params: Params, work: Path) -> list[str]:
    out = [
        f"model.encoder={_pick_encoder(args, params)}",
        "trim.enabled=false",
        f"pretrain.languages=[{args.lang}]",
        f"pretrain.output_dir={work / 'encoders'}",
    ]
    pairs = [
        ("pretrain.max_sentences", args.sentences),
        ("pretrain.epochs", args.epochs),
        ("pretrain.head_warmup_steps", args.head_warmup_steps),
        ("pretrain.head_lr", args.head_lr),
        ("pretrain.lr", args.lr),
        ("pretrain.eval_fraction", args.eval_fraction),
        ("train.max_train_sentences", args.ft_sentences),
        ("train.epochs", args.ft_epochs),
        ("train.seed", args.seed),
    ]
    return out + [f"{key}={value}" for key, value in pairs if value is not None]


def _fine_tune(
    params: Params, lang: str, arch: str, split: str, variant: str, work: Path
) -> dict[str, Any]:
    """Fine-tune one variant and score its best checkpoint on ``split``."""
    started = time.perf_counter()
    fitted = train_model(params, lang, arch, callbacks=default_callbacks(f"{lang} {variant}"))
    seconds = time.perf_counter() - started
    if fitted.model_dir is None:
        raise RuntimeError(f"{variant}: fine-tuning saved no best model")
    tagger = Tagger.load(fitted.model_dir, device=pick_device(params.train.device))
    sentences = read_conll(split_file(params, lang, split), tagset=params.data.tags)
    scores = evaluate_f1(tagger, sentences, params.data.entity_types, params.evaluate.batch_size)
    return {
        "variant": variant,
        "run_dir": str(work),
        "ft_epochs": len(fitted.history),
        "best_epoch": fitted.best_epoch,
        "best_val_macro_f1": round(fitted.best_f1, 4),
        "eval_split": split,
        "eval_sentences": len(sentences),
        "eval_macro_f1": round(float(scores["macro"]["f1"]), 4),
        "eval_micro_f1": round(float(scores["micro"]["f1"]), 4),
        "ft_seconds": round(seconds, 1),
    }


def _triple(scores: dict[str, Any], key: str) -> str:
    values = [(scores.get(p) or {}).get(key) for p in SCORE_POINTS]
    return " / ".join("—" if v is None else f"{v:.3f}" for v in values)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(_parser(), argv)
    machine = machine_info()
    detail: dict[str, Any] = {"lang": args.lang, "pretrain": None, "fine_tune": []}

    def save() -> None:
        if args.json is not None:
            write_json(args.json, {"benchmark": "wwm_effect", "partial": True, **detail})

    with tempfile.TemporaryDirectory(prefix="wwm-effect-") as tmp, torch_threads(args.threads):
        work = (args.work or ROOT / "models" / "wwm_effect" / args.lang).resolve()
        overrides = list(args.set)
        if args.quick:
            work = Path(tmp) / "work"
            overrides += _quick_overrides(Path(tmp), args.lang)
            overrides += ["pretrain.epochs=1", "train.epochs=1"]
        params = load_params(args.params, overrides)
        overrides += _overrides(args, params, work)
        params = load_params(args.params, overrides)
        eval_file = split_file(params, args.lang, args.eval_split)
        if not eval_file.is_file():
            raise SystemExit(f"--eval-split {args.eval_split}: {eval_file} does not exist")
        if args.steps is not None:
            cap, epochs = _sentences_for_steps(params, args.lang, args.steps)
            overrides += [f"pretrain.max_sentences={cap}", f"pretrain.epochs={epochs}"]
            params = load_params(args.params, overrides)
        detail["overrides"] = overrides

        pretrained = pretrain_encoder(
            params,
            args.lang,
            callbacks=default_callbacks(f"{args.lang} pretrain"),
            head_callbacks=default_callbacks(f"{args.lang} pretrain head warm-up"),
        )
        scores = {k: v.summary() if v.pieces else None for k, v in pretrained.scores.items()}
        detail["pretrain"] = {
            "encoder": params.model.encoder,
            "output_dir": str(pretrained.output_dir),
            "corpus": asdict(pretrained.corpus),
            "head_warmup_steps": pretrained.head_warmup_steps,
            "steps": pretrained.steps,
            "seconds": round(pretrained.seconds, 1),
            "head_seconds": round(pretrained.head_seconds, 1),
            "loss": pretrained.loss_summary(),
            "scores": scores,
        }
        save()

        for variant, enabled in (("base", False), ("wwm", True)):
            ft_params = load_params(
                args.params,
                [
                    *overrides,
                    f"pretrain.enabled={str(enabled).lower()}",
                    f"train.output_dir={work / 'runs' / variant}",
                ],
            )
            row = _fine_tune(
                ft_params, args.lang, args.arch, args.eval_split, variant, work / "runs" / variant
            )
            detail["fine_tune"].append(row)
            save()

    pre = detail["pretrain"]
    rows = []
    for row in detail["fine_tune"]:
        wwm = row["variant"] == "wwm"
        rows.append(
            [
                f"{args.arch} from {'WWM-adapted' if wwm else 'base'} encoder",
                f"{pre['head_warmup_steps']} + {pre['steps']}" if wwm else None,
                pre["seconds"] if wwm else None,
                _triple(pre["scores"], "loss") if wwm else None,
                _triple(pre["scores"], "accuracy") if wwm else None,
                row["ft_epochs"],
                row["best_val_macro_f1"],
                row["eval_macro_f1"],
                row["eval_micro_f1"],
                row["ft_seconds"],
            ]
        )
    base, wwm = detail["fine_tune"]
    delta = round(wwm["eval_macro_f1"] - base["eval_macro_f1"], 4)
    end = (pre["scores"].get("end") or {}).get("accuracy")
    before = (pre["scores"].get("before") or {}).get("accuracy")
    learnt = None if end is None or before is None else end > before
    record = result(
        args,
        f"WWM pre-training and fine-tuning, {args.lang} ({args.eval_split} split)",
        COLUMNS,
        rows,
        summary=[
            target(f"{args.eval_split} macro-F1 gain from WWM", delta, "> 0", delta > 0),
            target("masked accuracy end vs before", end, f"> {before}", learnt),
        ],
        notes=[
            f"Encoder {params.model.encoder}; same fine-tuning params and seed "
            f"(train.seed {params.train.seed}) for both rows; eval on {args.eval_split} "
            f"({base['eval_sentences']} sentences).",
            f"Pre-training corpus: {pre['corpus']['sentences']} sentences (train "
            f"{pre['corpus']['train_sentences']}, val {pre['corpus']['val_sentences']}, "
            f"extra {pre['corpus']['extra_sentences']}), {pre['corpus']['eval_sentences']} "
            "held back for the MLM scores (loss / accuracy: before the head warm-up, after it, "
            "at the end; '—' without a held-back slice).",
            f"Overrides: {' '.join(overrides)}.",
        ],
        machine=machine,
        **detail,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
