"""Training speed per architecture: seconds per step, tokens/s, padding, and frozen embeddings.

Each configuration trains a fresh tagger for one epoch with ``complex_ner.engines.train.fit`` on
a fixed slice of Spanish training sentences and a small validation set; the numbers come from
fit's own history record (``epoch_seconds`` covers the training loop only, ``tokens_per_second``
counts real pieces, ``pad_share`` is the padded share of the piece tensors the encoder sees).

- Batching: fit always uses length-bucketed batches (``iter_batches``). The padded share of
  random batches is computed exactly from the same windows: the expected padded length of a
  random batch of ``m`` out of ``N`` windows is ``E[max] = sum_k l_(k) C(k-1, m-1) / C(N, m)``
  over the sorted lengths ``l_(1) <= ... <= l_(N)``.
- Frozen embeddings: ``freeze_embeddings`` true (the default) vs false for ``bert_crf``;
  unfreezing the word-embedding matrix adds its dense gradient and two AdamW moment buffers.
  Peak RSS is sampled by a fit callback from the first step to the end of the last one (fit's
  validation pass is left out).

    python -m benchmarks.bench_training [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    PeakRSS,
    base_parser,
    bench_devices,
    emit,
    entity_types,
    load_sentences,
    machine_info,
    parse,
    pick_encoder,
    release_memory,
    result,
    tag_set,
    target,
    torch_threads,
)
from complex_ner.core.config import ModelConfig, TrainConfig
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.train import fit
from complex_ner.engines.trainer import Callback, LoopResult, StepInfo, TrainStart

ARCHS = ("bert_crf", "bert_bilstm_crf", "bert_linear")
SEED = 13
COLUMNS = [
    "arch",
    "device",
    "freeze embeddings",
    "batching",
    "steps",
    "s/step",
    "real pieces/s",
    "pad share",
    "padded pieces",
    "trainable params (M)",
    "peak RSS MiB",
    "training RSS Δ MiB",
]


# --------------------------------------------------------------------------- padding


def expected_max(sorted_lengths: Sequence[int], m: int) -> Fraction:
    """Exact expected maximum of ``m`` values drawn without replacement from the list."""
    n = len(sorted_lengths)
    # The k-th smallest is the maximum in C(k-1, m-1) of the C(n, m) subsets.
    acc = sum(sorted_lengths[k - 1] * math.comb(k - 1, m - 1) for k in range(m, n + 1))
    return Fraction(acc, math.comb(n, m))


def random_batching_padding(lengths: Sequence[int], batch_size: int) -> dict[str, float]:
    """Expected padded pieces and pad share of random batches (a shuffled split into chunks)."""
    ordered = sorted(lengths)
    full, rest = divmod(len(ordered), batch_size)
    padded = full * batch_size * expected_max(ordered, batch_size) if full else Fraction(0)
    if rest:
        padded += rest * expected_max(ordered, rest)
    real = sum(ordered)
    return {"padded": float(padded), "real": real, "pad_share": 1 - real / float(padded)}


def bucketed_padding(lengths: Sequence[int], batch_size: int) -> dict[str, float]:
    """Padded pieces of ``iter_batches``' length buckets (sorted, then chunked)."""
    ordered = sorted(lengths)
    chunks = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    padded = sum(len(chunk) * chunk[-1] for chunk in chunks)
    real = sum(ordered)
    return {"padded": float(padded), "real": real, "pad_share": 1 - real / padded}


# --------------------------------------------------------------------------- one run


class TrainingLoopMemory(Callback):
    """Samples RSS from the start of the loop to the end of its last step."""

    def __init__(self) -> None:
        self.sampler = PeakRSS()
        self.total_steps = 0

    def on_train_start(self, start: TrainStart) -> None:
        self.total_steps = start.total_steps
        self.sampler.start()

    def on_step_end(self, step: StepInfo) -> None:
        if step.step >= self.total_steps:
            self.sampler.pause()  # fit's validation pass comes next

    def on_train_end(self, result: LoopResult) -> None:
        self.sampler.stop()


def train_once(
    encoder: Path,
    arch: str,
    freeze: bool,
    train: Sequence[Sentence],
    val: Sequence[Sentence],
    batch_size: int,
    device: str,
    *,
    collect: bool = True,
    **options: Any,
) -> tuple[dict[str, Any], Tagger]:
    """One epoch of fit on a fresh tagger: its record (step time, throughput, padding, peak
    memory) and the trained tagger.

    ``collect`` frees memory first for comparable RSS baselines (``--quick`` skips it: a full
    collection takes time). ``options``: further :class:`TrainConfig` fields.
    """
    if collect:
        release_memory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # the same initial head for every encoder and freeze setting
        tagger = build_model(str(encoder), tag_set(), ModelConfig(arch=arch), "es")
    cfg = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        freeze_embeddings=freeze,
        device=device,
        threads=0,  # the caller's torch_threads holds
        patience=1,
        seed=SEED,
        **options,
    )
    lengths = [len(w.input_ids) for w in tagger.encode([s.tokens for s in train])]
    embedding_rows = int(tagger.encoder.get_input_embeddings().weight.shape[0])
    memory = TrainingLoopMemory()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        start = time.perf_counter()
        fitted = fit(tagger, train, val, cfg, out, entity_types(), callbacks=[memory])
        wall = time.perf_counter() - start
    record = fitted.history[0]
    steps = math.ceil(len(lengths) / batch_size)
    out_record = {
        "arch": arch,
        "device": device,
        "freeze_embeddings": freeze,
        "steps": steps,
        "windows": len(lengths),
        "epoch_seconds": record["epoch_seconds"],
        "seconds_per_step": record["epoch_seconds"] / steps,
        "tokens_per_second": record["tokens_per_second"],
        "pad_share": record["pad_share"],
        "fit_wall_seconds": wall,
        "trainable_params": sum(p.numel() for p in tagger.parameters() if p.requires_grad),
        "embedding_rows": embedding_rows,
        "loss": record["loss"],
        "val_macro_f1": record["val_macro_f1"],
        "peak_rss_mib": memory.sampler.peak,
        "rss_delta_mib": memory.sampler.delta,
        "lengths": lengths,
    }
    if device == "cuda":
        out_record["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out_record, tagger


# --------------------------------------------------------------------------- main


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--sentences``, ``--val-sentences`` and ``--batch-size`` (shared with bench_trim)."""
    parser.add_argument("--sentences", type=int, default=None, help="training sentences")
    parser.add_argument("--val-sentences", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)


def unfrozen_notes(records: list[dict[str, Any]]) -> tuple[list[dict], list[str]]:
    """Summary rows and notes comparing each unfrozen run with its frozen twin."""
    summary, notes = [], []
    for free in (r for r in records if not r["freeze_embeddings"]):
        key = (free["arch"], free["device"])
        frozen = next(
            (r for r in records if (r["arch"], r["device"]) == key and r["freeze_embeddings"]),
            None,
        )
        if frozen is None:
            continue
        ratio = free["seconds_per_step"] / frozen["seconds_per_step"]
        extra = free["rss_delta_mib"] - frozen["rss_delta_mib"]
        arch, device = key
        summary += [
            target(f"{arch} step time, unfrozen / frozen embeddings ({device})", round(ratio, 2)),
            target(f"{arch} extra training memory when unfrozen ({device}, MiB)", round(extra)),
        ]
        notes.append(
            f"{arch} on {device}: unfreezing the {free['embedding_rows']:,}-row embeddings "
            f"makes a step {ratio:.2f}x as long and adds {extra:.0f} MiB to the training "
            f"loop's peak RSS ({free['trainable_params'] / 1e6:.1f}M vs "
            f"{frozen['trainable_params'] / 1e6:.1f}M trainable parameters)."
        )
    return summary, notes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("training", __doc__)
    add_data_options(parser)
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument(
        "--unfrozen-archs",
        nargs="*",
        choices=ARCHS,
        default=["bert_crf"],
        help="archs also trained with freeze_embeddings=false",
    )
    args = parse(parser, argv)
    n = args.sentences or (24 if args.quick else 256)
    n_val = args.val_sentences or (4 if args.quick else 16)
    batch_size = args.batch_size or (8 if args.quick else 32)
    devices = bench_devices(args.devices)
    configs = [(a, True) for a in args.archs] + [(a, False) for a in args.unfrozen_archs]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        encoder = pick_encoder(args, Path(tmp))
        train, source = load_sentences(n, 0, toy=args.quick)
        val, _ = load_sentences(n_val, n, toy=args.quick)
        with torch_threads(args.threads) as threads:
            machine = machine_info()
            for device in devices:
                for arch, freeze in configs:
                    rec, _ = train_once(
                        encoder, arch, freeze, train, val, batch_size, device,
                        collect=not args.quick,
                    )  # fmt: skip
                    records.append(rec)

    rows: list[list[Any]] = []
    padding: dict[str, Any] = {}
    for rec in records:
        bucket = bucketed_padding(rec["lengths"], batch_size)
        rows.append(
            [
                rec["arch"],
                rec["device"] + (" bf16" if rec["device"] == "cuda" else ""),
                rec["freeze_embeddings"],
                "length buckets (measured)",
                rec["steps"],
                rec["seconds_per_step"],
                rec["tokens_per_second"],
                rec["pad_share"],
                int(bucket["padded"]),
                rec["trainable_params"] / 1e6,
                rec.get("cuda_peak_mib", rec["peak_rss_mib"]),
                rec["rss_delta_mib"] if rec["device"] == "cpu" else None,
            ]
        )
        padding.setdefault(
            rec["arch"],
            {"bucketed": bucket, "random": random_batching_padding(rec["lengths"], batch_size)},
        )
    # Every arch sees the same windows (same tokenizer), so random batching gets one row.
    first = records[0]
    rand, bucket = padding[first["arch"]]["random"], padding[first["arch"]]["bucketed"]
    rows.append(
        ["any (same windows)", "—", "—", "random batches (exact expectation)", first["steps"]]
        + [None, None, rand["pad_share"], int(round(rand["padded"])), None, None, None]
    )
    summary = [
        target("pad share, length buckets (measured by fit)", round(first["pad_share"], 4)),
        target("pad share, random batches (exact expectation)", round(rand["pad_share"], 4)),
        target("padded pieces, random / buckets", round(rand["padded"] / bucket["padded"], 2)),
    ]
    summary += [
        target(f"s/step {r['arch']} (cpu, frozen emb.)", round(r["seconds_per_step"], 2))
        for r in records
        if r["device"] == "cpu" and r["freeze_embeddings"]
    ]
    notes = [
        f"Data: {source}; {len(first['lengths'])} windows, batch {batch_size}, 1 epoch, "
        f"validation on {n_val} sentences (not timed). torch threads: {threads}.",
        "fit's pad_share against the exact bucketed share: "
        + ", ".join(f"{a}: {p['bucketed']['pad_share']:.4f}" for a, p in padding.items())
        + ".",
    ]
    more_summary, more_notes = unfrozen_notes(records)
    summary += more_summary
    notes += more_notes
    if "cuda" not in devices:
        notes.append("No CUDA rows (no GPU here, or --devices cpu).")
    for rec in records:
        rec.pop("lengths")
    record = result(
        args,
        "Training step speed, padding and frozen embeddings",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
        padding=padding,
        encoder=str(encoder),
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
