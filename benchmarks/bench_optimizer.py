"""AdamW's implementations side by side: the update alone, and whole training epochs through fit.

On a 2-core CPU a training step of the default encoder spends a large share of its time in the
optimizer: AdamW touches every trainable weight (the trimmed e5-small with trainable word
embeddings: ~34M) several times per step, in torch's default per-tensor implementation one
small op after another. This script measures

- **update**: one ``optimizer.step()`` on fixed gradients (after one backward pass), for torch's
  default implementation (a per-tensor loop on the CPU), ``foreach=True`` and ``fused=True``;
- **epoch**: one epoch of ``complex_ner.engines.train.fit`` on the same Spanish sentences with
  ``train.fused_adamw`` false and true (the engine's whole step: forward, backward, clipping,
  update), per batch size; the numbers come from fit's own history record.

Every configuration starts from the same seeded tagger (``freeze_embeddings`` false, the
project's default). ``--encoder`` defaults to the trim stage's output when it exists (what
``make run`` trains), else the project's default encoder.

    python -m benchmarks.bench_optimizer [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_training import SEED, train_once
from benchmarks.harness import (
    base_parser,
    bench_devices,
    emit,
    load_sentences,
    machine_info,
    parse,
    pick_encoder,
    project_params,
    result,
    tag_set,
    target,
    time_calls,
    torch_threads,
)
from complex_ner.core.config import ModelConfig, TrainConfig
from complex_ner.domain.batch import collate
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines.train import label_ids, make_optimizer

#: torch.optim.AdamW keyword arguments of each implementation.
IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "loop (torch's CPU default)": {"foreach": False, "fused": False},
    "foreach (torch's CUDA default)": {"foreach": True},
    "fused": {"fused": True},
}
COLUMNS = [
    "measure",
    "implementation",
    "batch",
    "device",
    "ms (median)",
    "IQR ms",
    "speed-up",
    "steps",
    "epoch loss",
]


def default_encoder(args: argparse.Namespace, scratch: Path) -> Path:
    """``--encoder``; else the trim stage's output when present; else :func:`pick_encoder`."""
    if args.encoder is None and not args.quick:
        params = project_params()
        trimmed = params.path(params.trim.output_dir)
        if (trimmed / "config.json").is_file():
            return trimmed
    return pick_encoder(args, scratch)


def update_times(
    encoder: Path, train: Sequence[Any], batch_size: int, device: str, repeats: int
) -> dict[str, Any]:
    """Median seconds of one AdamW update per implementation, on the gradients of one batch."""
    torch.manual_seed(SEED)
    tagger = build_model(str(encoder), tag_set(), ModelConfig(arch="bert_crf"), "es")
    tagger.to(device).train()
    sample = list(train[:batch_size])
    windows = tagger.encode([s.tokens for s in sample])
    batch = collate(windows, tagger.pad_id, label_ids(tagger, sample)).to(device)
    tagger.loss(batch).backward()
    groups = make_optimizer(tagger, TrainConfig(freeze_embeddings=False)).param_groups
    sync = torch.cuda.synchronize if device == "cuda" else None
    out: dict[str, Any] = {}
    for name, kwargs in IMPLEMENTATIONS.items():
        # Fresh group dicts: an optimizer writes its defaults (fused, foreach) into them.
        plain = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups]
        optimizer = torch.optim.AdamW(plain, **kwargs)
        timing = time_calls(optimizer.step, repeats, warmup=2, sync=sync)
        out[name] = timing.as_dict()
    out["trainable_params"] = sum(p.numel() for g in groups for p in g["params"])
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("optimizer", __doc__, threads=0)
    parser.add_argument("--sentences", type=int, default=None, help="training sentences")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    args = parse(parser, argv)
    n = args.sentences or (24 if args.quick else 512)
    n_val = 4 if args.quick else 32
    sizes = args.batch_sizes or ([8] if args.quick else [16, 32])
    repeats = args.repeats or (3 if args.quick else 20)
    devices = bench_devices(args.devices)
    rows: list[list[Any]] = []
    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-optimizer-") as tmp:
        encoder = default_encoder(args, Path(tmp))
        train, source = load_sentences(n, 0, toy=args.quick)
        val, _ = load_sentences(n_val, n, toy=args.quick)
        with torch_threads(args.threads) as threads:
            machine = machine_info()
            for device in devices:
                updates = update_times(encoder, train, sizes[0], device, repeats)
                base = updates[next(iter(IMPLEMENTATIONS))]["median"]
                for name in IMPLEMENTATIONS:
                    t = updates[name]
                    rows.append(
                        ["update", name, sizes[0], device, t["median"] * 1e3, t["iqr"] * 1e3]
                        + [base / t["median"], None, None]
                    )
                records.append({"measure": "update", "device": device, **updates})
                summary.append(
                    target(
                        f"AdamW update, loop / fused ({device})",
                        round(base / updates["fused"]["median"], 2),
                    )
                )
                for size in sizes:
                    epoch = {}
                    for fused in (False, True):
                        rec, _ = train_once(
                            encoder, "bert_crf", False, train, val, size, device,
                            collect=not args.quick, fused_adamw=fused,
                        )  # fmt: skip
                        rec.pop("lengths")
                        epoch[fused] = rec
                        records.append({"measure": "epoch", "fused_adamw": fused, **rec})
                    for fused, rec in epoch.items():
                        rows.append(
                            [
                                "fit epoch, per step",
                                "fused" if fused else "torch's default",
                                size,
                                device,
                                rec["seconds_per_step"] * 1e3,
                                None,
                                epoch[False]["seconds_per_step"] / rec["seconds_per_step"],
                                rec["steps"],
                                rec["loss"],
                            ]
                        )
                    summary.append(
                        target(
                            f"fit epoch time, default / fused AdamW (batch {size}, {device})",
                            round(epoch[False]["epoch_seconds"] / epoch[True]["epoch_seconds"], 2),
                        )
                    )
    notes = [
        f"Data: {source}; validation on {n_val} sentences (not timed). Encoder: {encoder}; "
        f"{records[0]['trainable_params'] / 1e6:.1f}M trainable parameters (embeddings "
        f"trainable). torch threads: {threads}.",
        "update: one optimizer.step() on the fixed gradients of one batch, after 2 untimed "
        f"ones, {repeats} timed; epoch: fit's epoch_seconds (training loop only) / steps.",
        "epoch loss: the mean training loss of the epoch; from the same start both "
        "implementations end at nearly the same value (the same rule; rounding differs).",
    ]
    record = result(
        args,
        "AdamW implementations: the update alone and whole training epochs",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
        encoder=str(encoder),
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
