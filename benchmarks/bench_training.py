"""Training speed per architecture: seconds per step, tokens/s, padding, and frozen embeddings.

Each configuration trains a fresh tagger (default encoder, multilingual-e5-small) for one epoch
with ``complex_ner.engines.train.fit`` on a fixed slice of Spanish training sentences (256 by default,
batch 32) and a tiny validation set; the numbers come from fit's own history record
(``epoch_seconds`` covers the training loop only, ``tokens_per_second`` counts real pieces,
``pad_share`` is the padded share of the piece tensors the encoder sees).

- Batching: fit always uses length-bucketed batches (``iter_batches``). The padded share of
  random batches is computed analytically from the same windows: the expected padded length of
  a random batch of ``m`` out of ``N`` windows is ``E[max] = sum_k l_(k) C(k-1, m-1) / C(N, m)``
  over the sorted lengths ``l_(1) <= ... <= l_(N)``.
- Frozen embeddings: ``freeze_embeddings`` true (the default) vs false for ``bert_crf``; the
  250k-row word-embedding matrix is 96M of the encoder's 118M parameters, so unfreezing it adds
  its dense gradient and two AdamW moment buffers. Peak RSS is sampled during the training loop
  (the sampler stops when fit starts its validation pass).

    .venv/bin/python benchmarks/bench_training.py [--quick] [--json PATH]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_all import (  # noqa: E402
    PeakRSS,
    base_parser,
    bench_devices,
    cuda_available,
    default_encoder,
    emit,
    entity_types,
    load_sentences,
    machine_info,
    make_result,
    release_memory,
    tag_set,
    target,
    tiny_encoder,
    torch_threads,
)

ARCHS = ("bert_crf", "bert_bilstm_crf", "bert_linear")
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
    total = math.comb(n, m)
    acc = sum(
        sorted_lengths[k - 1] * math.comb(k - 1, m - 1) for k in range(m, n + 1)
    )  # the k-th smallest is the maximum in C(k-1, m-1) of the C(n, m) subsets
    return Fraction(acc, total)


def random_batching_padding(lengths: Sequence[int], batch_size: int) -> dict[str, float]:
    """Expected padded pieces and pad share of random batches (a shuffled split into chunks)."""
    ordered = sorted(lengths)
    n = len(ordered)
    full, rest = divmod(n, batch_size)
    padded = full * batch_size * expected_max(ordered, batch_size) if full else Fraction(0)
    if rest:
        padded += rest * expected_max(ordered, rest)
    real = sum(ordered)
    return {"padded": float(padded), "real": real, "pad_share": 1 - real / float(padded)}


def bucketed_padding(lengths: Sequence[int], batch_size: int) -> dict[str, float]:
    """Padded pieces of ``iter_batches``' length buckets (sorted, then chunked)."""
    ordered = sorted(lengths)
    padded = sum(
        len(ordered[i : i + batch_size]) * ordered[i : i + batch_size][-1]
        for i in range(0, len(ordered), batch_size)
    )
    real = sum(ordered)
    return {"padded": float(padded), "real": real, "pad_share": 1 - real / padded}


# --------------------------------------------------------------------------- one run


def train_once(
    encoder: Path,
    arch: str,
    freeze: bool,
    train: Sequence[Any],
    val: Sequence[Any],
    batch_size: int,
    threads: int,
    device: str,
    collect: bool = True,
    predict_val: bool = False,
) -> dict[str, Any]:
    """One epoch of fit on a fresh tagger; step time, throughput, padding and peak memory."""
    import torch

    from complex_ner.core.config import TrainConfig
    from complex_ner.domain.models.tagger import build_model
    from complex_ner.engines.train import fit

    if collect:  # comparable RSS baselines; skipped by --quick (a full collection takes time)
        release_memory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(13)  # the same initial head for every encoder and freeze setting
        tagger = build_model(str(encoder), tag_set(), arch, lang="es")
    cfg = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        freeze_embeddings=freeze,
        device=device,
        precision="auto",
        threads=threads if device == "cpu" else 0,
        patience=1,
        seed=13,
    )
    windows = tagger.encode([s.tokens for s in train])
    lengths = [len(w.input_ids) for w in windows]
    embedding_rows = int(tagger.encoder.get_input_embeddings().weight.shape[0])
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        sampler = PeakRSS()
        original_predict = tagger.predict

        def predict_after_training(*args: Any, **kwargs: Any) -> Any:
            sampler.pause()  # fit's validation pass starts: the training loop is over
            return original_predict(*args, **kwargs)

        tagger.predict = predict_after_training  # type: ignore[method-assign]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with sampler:
            result = fit(tagger, train, val, cfg, out, entity_types(), progress=False)
        wall = time.perf_counter() - start
    trainable = sum(p.numel() for p in tagger.parameters() if p.requires_grad)
    record = result.history[0]
    steps = math.ceil(len(windows) / batch_size)
    out_record = {
        "arch": arch,
        "device": device,
        "freeze_embeddings": freeze,
        "steps": steps,
        "windows": len(windows),
        "epoch_seconds": record["epoch_seconds"],
        "seconds_per_step": record["epoch_seconds"] / steps,
        "tokens_per_second": record["tokens_per_second"],
        "pad_share": record["pad_share"],
        "fit_wall_seconds": wall,
        "trainable_params": trainable,
        "embedding_rows": embedding_rows,
        "loss": record["loss"],
        "val_macro_f1": record["val_macro_f1"],
        "peak_rss_mib": sampler.peak,
        "rss_delta_mib": sampler.delta,
        "lengths": lengths,
    }
    if device == "cuda":
        out_record["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if predict_val:
        out_record["val_tags"] = original_predict([s.tokens for s in val])
    del tagger, result
    return out_record


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None)
    parser.add_argument("--val-sentences", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument(
        "--unfrozen-archs",
        nargs="*",
        choices=ARCHS,
        default=["bert_crf"],
        help="archs also trained with freeze_embeddings=false",
    )
    parser.add_argument("--encoder", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.sentences or (24 if args.quick else 256)
    n_val = args.val_sentences or (4 if args.quick else 16)
    batch_size = args.batch_size or (8 if args.quick else 32)

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        encoder = args.encoder or (
            tiny_encoder(Path(tmp) / "tiny-bert") if args.quick else default_encoder()
        )
        train, source = load_sentences(n, 0, allow_toy=args.quick)
        val, _ = load_sentences(n_val, n, allow_toy=args.quick)
        devices = bench_devices(args.devices)
        configs = [(a, True) for a in args.archs] + [(a, False) for a in args.unfrozen_archs]
        records: list[dict[str, Any]] = []
        with torch_threads(args.threads or None) as threads:
            machine = machine_info()
            for device in devices:
                for arch, freeze in configs:
                    records.append(
                        train_once(
                            Path(encoder),
                            arch,
                            freeze,
                            train,
                            val,
                            batch_size,
                            threads,
                            device,
                            collect=not args.quick,
                        )
                    )

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
        if rec["arch"] not in padding:
            padding[rec["arch"]] = {
                "bucketed": bucket,
                "random": random_batching_padding(rec["lengths"], batch_size),
            }
    # Every arch sees the same windows (same tokenizer), so random batching gets one row.
    first = records[0]
    rand = padding[first["arch"]]["random"]
    rows.append(
        [
            "any (same windows)",
            "—",
            "—",
            "random batches (analytic)",
            first["steps"],
            None,
            None,
            rand["pad_share"],
            int(round(rand["padded"])),
            None,
            None,
            None,
        ]
    )
    bucket = padding[first["arch"]]["bucketed"]
    summary = [
        target(
            "pad share, length buckets (measured by fit)", round(first["pad_share"], 4), None, None
        ),
        target("pad share, random batches (analytic)", round(rand["pad_share"], 4), None, None),
        target(
            "padded pieces, random / buckets",
            round(rand["padded"] / bucket["padded"], 2),
            None,
            None,
        ),
    ]
    for rec in records:
        if rec["device"] == "cpu" and rec["freeze_embeddings"]:
            summary.append(
                target(
                    f"s/step {rec['arch']} (cpu, frozen emb.)",
                    round(rec["seconds_per_step"], 2),
                    None,
                    None,
                )
            )
    notes = [
        f"Data: {source}; {len(first['lengths'])} windows, batch {batch_size}, 1 epoch, "
        f"validation on {n_val} sentences (not timed). torch threads: {threads}.",
        "fit's pad_share equals the analytic bucketed share: "
        + ", ".join(f"{a}: {padding[a]['bucketed']['pad_share']:.4f}" for a in padding)
        + ".",
    ]
    for arch in {r["arch"] for r in records if not r["freeze_embeddings"]}:
        for device in devices:
            frozen = next(
                (
                    r
                    for r in records
                    if (r["arch"], r["device"], r["freeze_embeddings"]) == (arch, device, True)
                ),
                None,
            )
            free = next(
                (
                    r
                    for r in records
                    if (r["arch"], r["device"], r["freeze_embeddings"]) == (arch, device, False)
                ),
                None,
            )
            if frozen is None or free is None:
                continue
            ratio = free["seconds_per_step"] / frozen["seconds_per_step"]
            extra = free["rss_delta_mib"] - frozen["rss_delta_mib"]
            summary.append(
                target(
                    f"{arch} step time, unfrozen / frozen embeddings ({device})",
                    round(ratio, 2),
                    None,
                    None,
                )
            )
            summary.append(
                target(
                    f"{arch} extra training memory when unfrozen ({device}, MiB)",
                    round(extra),
                    None,
                    None,
                )
            )
            notes.append(
                f"{arch} on {device}: unfreezing the {free['embedding_rows']:,}-row embeddings "
                f"makes a step {ratio:.2f}x as long and adds {extra:.0f} MiB to the training "
                f"loop's peak RSS ({free['trainable_params'] / 1e6:.1f}M vs "
                f"{frozen['trainable_params'] / 1e6:.1f}M trainable parameters)."
            )
    if not cuda_available():
        notes.append("No CUDA GPU here: GPU (bf16 autocast) rows skipped.")
    for rec in records:
        rec.pop("lengths", None)
    result = make_result(
        "training",
        "Training step speed, padding and frozen embeddings",
        "python benchmarks/bench_training.py" + (" --quick" if args.quick else ""),
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
        padding=padding,
        encoder=str(encoder),
    )
    return emit(result, args.json)


if __name__ == "__main__":
    main()
