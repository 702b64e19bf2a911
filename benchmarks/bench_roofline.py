"""Roofline of fp32 prediction on this CPU: the encoder's matrix work per sentence against what
the core's sgemm delivers, and the speedup over the HuggingFace pipeline that this caps any fp32
predictor at.

- Work: the benchmark sentences (the first ``--sentences`` of es/train.conll, as
  ``bench_inference``) go through our tokenizer path; every piece then costs
  ``2 x layers x (4 h² + 2 h i)`` FLOPs in the encoder's linear layers (query, key, value,
  attention output, FFN in and out; attention scores, GELU, LayerNorm and the classifier are left
  out, so the bound is generous).
- Peak: ``nn.Linear`` at the encoder's own shapes (``batch x mean pieces`` rows), timed after
  warm-up; the best of ``--repeats`` per shape, combined by each shape's FLOP share.
- Ceiling: sentences/s if every sentence cost only its linear FLOPs at that peak (no padding,
  nothing else). With ``--inference-json`` (a ``bench_inference`` result) the measured
  sentences/s of ours and the pipeline are set against it.

    python -m benchmarks.bench_roofline [--inference-json PATH] [--quick]
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_inference import OURS_SYSTEM, PIPELINE_SYSTEM, SPEEDUP_TARGET
from benchmarks.harness import (
    base_parser,
    emit,
    load_sentences,
    machine_info,
    parse,
    pick_encoder,
    result,
    tag_set,
    target,
    time_calls,
    torch_threads,
)
from complex_ner.core.config import ModelConfig
from complex_ner.domain.models.tagger import build_model

COLUMNS = ["quantity", "value"]


def linear_flops_per_piece(config: dict[str, Any]) -> int:
    """FLOPs of one piece through the encoder's linear layers (multiply-add = 2)."""
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    return 2 * int(config["num_hidden_layers"]) * (4 * h * h + 2 * h * i)


def sgemm_rate(rows: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """Best GFLOP/s of ``nn.Linear(fan_in, fan_out)`` on ``rows`` rows (the caller sets threads)."""
    layer = torch.nn.Linear(fan_in, fan_out)
    # shape: (rows, fan_in)
    x = torch.randn(rows, fan_in)
    with torch.inference_mode():
        timing = time_calls(lambda: layer(x), repeats, min_repeats=repeats)
    return 2 * rows * fan_in * fan_out / timing.best / 1e9


def measured_rates(path: Path | None) -> dict[str, float]:
    """Sentences/s of the full CPU rows of a bench_inference result (empty without one)."""
    if path is None:
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        r["system"]: float(r["rate"])
        for r in raw.get("records", [])
        if r.get("phase") == "full" and r.get("device", "cpu") == "cpu"
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("roofline", __doc__)
    parser.add_argument("--sentences", type=int, default=None, help="benchmark set size")
    parser.add_argument("--batch-size", type=int, default=32, help="rows = batch x mean pieces")
    parser.add_argument("--inference-json", type=Path, default=None)
    args = parse(parser, argv)
    n = args.sentences or (16 if args.quick else 5000)
    repeats = args.repeats or (3 if args.quick else 30)

    with tempfile.TemporaryDirectory(prefix="bench-roofline-") as tmp:
        encoder = pick_encoder(args, Path(tmp))
        config = json.loads((encoder / "config.json").read_text(encoding="utf-8"))
        sentences, source = load_sentences(n, 0, toy=args.quick)
        model = ModelConfig(arch="bert_linear", dropout=0.0)
        windows = build_model(str(encoder), tag_set(), model, "es").encode(
            [s.tokens for s in sentences]
        )
    pieces = sum(len(w.input_ids) for w in windows) / len(sentences)
    per_piece = linear_flops_per_piece(config)
    per_sentence = per_piece * pieces
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    rows_n = max(1, round(args.batch_size * pieces))
    # (fan_in, fan_out, FLOP weight per layer): q, k, v, attention output; FFN in; FFN out.
    shapes = [(h, h, 4 * h * h), (h, i, h * i), (i, h, h * i)]
    with torch_threads(args.threads) as threads:
        machine = machine_info()
        rates = [sgemm_rate(rows_n, fi, fo, repeats) for fi, fo, _ in shapes]
    weight = sum(w for _, _, w in shapes)
    # Time-weighted: seconds per FLOP add up across shapes.
    peak = weight / sum(w / r for (_, _, w), r in zip(shapes, rates, strict=True))
    ceiling = peak * 1e9 / per_sentence
    measured = measured_rates(args.inference_json)

    rows: list[list[Any]] = [
        ["sentences", len(sentences)],
        ["pieces per sentence (mean, with special pieces)", round(pieces, 2)],
        ["encoder linear MFLOP per piece", round(per_piece / 1e6, 2)],
        ["encoder linear GFLOP per sentence", round(per_sentence / 1e9, 3)],
    ]
    for (fi, fo, _), r in zip(shapes, rates, strict=True):
        rows.append([f"sgemm GFLOP/s, {rows_n} x {fi} -> {fo}, {threads} thread(s)", round(r, 1)])
    rows.append(["sgemm GFLOP/s, combined by FLOP share", round(peak, 1)])
    rows.append(["ceiling: sentences/s with linear layers alone at that rate", round(ceiling, 1)])
    extra: dict[str, Any] = {}
    if OURS_SYSTEM in measured and PIPELINE_SYSTEM in measured:
        ours, pipe = measured[OURS_SYSTEM], measured[PIPELINE_SYSTEM]
        needed = SPEEDUP_TARGET * pipe
        rows += [
            ["ours, measured sentences/s (bench_inference)", round(ours, 1)],
            ["ours, linear GFLOP/s achieved", round(ours * per_sentence / 1e9, 1)],
            ["ours, share of the ceiling", round(ours / ceiling, 3)],
            ["HF pipeline, measured sentences/s", round(pipe, 1)],
            ["HF pipeline, share of the ceiling", round(pipe / ceiling, 3)],
            [f"{SPEEDUP_TARGET:g}x the pipeline needs sentences/s", round(needed, 1)],
            ["... that is, x the ceiling", round(needed / ceiling, 2)],
            ["most any fp32 predictor can reach: ceiling / pipeline", round(ceiling / pipe, 2)],
        ]
        summary = [
            target(
                "fp32 ceiling over the pipeline (linear layers at sgemm peak)",
                f"{ceiling / pipe:.2f}x",
                f">= {SPEEDUP_TARGET:g}x would be possible",
                ceiling / pipe >= SPEEDUP_TARGET,
            )
        ]
        extra = {"ours_rate": ours, "pipeline_rate": pipe}
    else:
        summary = [target("ceiling sentences/s (fp32)", round(ceiling, 1))]
    record = result(
        args,
        f"Roofline of fp32 prediction ({len(sentences):,} Spanish sentences)",
        COLUMNS,
        rows,
        summary=summary,
        notes=[
            f"Data: {source}; encoder {encoder}; FLOPs per piece 2 x layers x (4h² + 2hi) "
            f"with h={h}, i={i}, layers={config['num_hidden_layers']}.",
            "The ceiling leaves out attention scores, softmax, GELU, LayerNorm, embeddings, "
            "tokenization and decoding: a real predictor stays below it.",
        ],
        machine=machine,
        pieces_per_sentence=pieces,
        flops_per_sentence=per_sentence,
        sgemm_gflops=rates,
        peak_gflops=peak,
        ceiling_rate=ceiling,
        **extra,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
