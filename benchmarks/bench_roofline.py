"""Roofline of fp32 prediction on this CPU: the encoder's matrix work per sentence against what
one core's sgemm delivers, and the speedup over the HuggingFace pipeline that this caps any fp32
predictor at.

- Work: the benchmark sentences (the first ``--sentences`` of es/train.conll, as
  ``bench_inference``) go through our tokenizer path; every piece then costs
  ``2 x layers x (4 h² + 2 h i)`` FLOPs in the encoder's linear layers (query, key, value,
  attention output, FFN in and out; attention scores, GELU, LayerNorm and the classifier are left
  out, so the bound is generous).
- Peak: ``nn.Linear`` on one thread at the encoder's own shapes (``batch x mean pieces`` rows),
  timed after warm-up; the best of ``--repeats`` per shape, combined by each shape's FLOP share.
- Ceiling: sentences/s if every sentence cost only its linear FLOPs at that peak (no padding,
  nothing else). With ``--inference-json`` (a ``bench_inference`` output) the measured
  sentences/s of ours and the pipeline are set against it.

    .venv/bin/python benchmarks/bench_roofline.py [--inference-json PATH] [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_inference import OURS_SYSTEM as OURS  # noqa: E402
from benchmarks.bench_inference import PIPELINE_SYSTEM as PIPELINE  # noqa: E402
from benchmarks.run_all import (  # noqa: E402
    base_parser,
    default_encoder,
    emit,
    load_sentences,
    machine_info,
    make_result,
    tag_set,
    target,
    tiny_encoder,
    torch_threads,
)

COLUMNS = ["quantity", "value"]


def linear_flops_per_piece(config: dict[str, Any]) -> int:
    """FLOPs of one piece through the encoder's linear layers (multiply-add = 2)."""
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    return 2 * int(config["num_hidden_layers"]) * (4 * h * h + 2 * h * i)


def sgemm_rate(rows: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """Best GFLOP/s of ``nn.Linear(fan_in, fan_out)`` on ``rows`` rows (the caller sets threads)."""
    import torch

    layer = torch.nn.Linear(fan_in, fan_out)
    x = torch.randn(rows, fan_in)
    flops = 2 * rows * fan_in * fan_out
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            layer(x)
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def measured_rates(path: Path | None) -> dict[str, float]:
    """Sentences/s of the full CPU rows of a bench_inference JSON (empty without one)."""
    if path is None:
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        r["system"]: float(r["rate"])
        for r in raw.get("records", [])
        if r.get("phase") == "full" and r.get("device", "cpu") == "cpu"
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None, help="benchmark set size")
    parser.add_argument("--batch-size", type=int, default=32, help="rows = batch x mean pieces")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per shape")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--encoder", type=Path, default=None)
    parser.add_argument("--inference-json", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.sentences or (16 if args.quick else 5000)
    repeats = args.repeats or (3 if args.quick else 30)

    from complex_ner.domain.models.tagger import build_model

    with tempfile.TemporaryDirectory(prefix="bench-roofline-") as tmp:
        encoder = args.encoder or (
            tiny_encoder(Path(tmp) / "tiny-bert") if args.quick else default_encoder()
        )
        config = json.loads((Path(encoder) / "config.json").read_text(encoding="utf-8"))
        sentences, source = load_sentences(n, 0, allow_toy=args.quick)
        tagger = build_model(str(encoder), tag_set(), "bert_linear", dropout=0.0, lang="es")
        windows = tagger.encode([s.tokens for s in sentences])
    pieces = sum(len(w.input_ids) for w in windows) / len(sentences)
    per_piece = linear_flops_per_piece(config)
    per_sentence = per_piece * pieces
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    rows_n = max(1, round(args.batch_size * pieces))
    # (fan_in, fan_out, FLOP weight per layer): q, k, v, attention output; FFN in; FFN out.
    shapes = [(h, h, 4 * h * h), (h, i, h * i), (i, h, h * i)]
    with torch_threads(args.threads or None) as threads:
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
    summary = []
    extra: dict[str, Any] = {}
    if OURS in measured and PIPELINE in measured:
        ours, pipe = measured[OURS], measured[PIPELINE]
        rows += [
            ["ours, measured sentences/s (bench_inference)", round(ours, 1)],
            ["ours, linear GFLOP/s achieved", round(ours * per_sentence / 1e9, 1)],
            ["ours, share of the ceiling", round(ours / ceiling, 3)],
            ["HF pipeline, measured sentences/s", round(pipe, 1)],
            ["HF pipeline, share of the ceiling", round(pipe / ceiling, 3)],
            ["3x the pipeline needs sentences/s", round(3 * pipe, 1)],
            ["... that is, x the ceiling", round(3 * pipe / ceiling, 2)],
            ["most any fp32 predictor can reach: ceiling / pipeline", round(ceiling / pipe, 2)],
        ]
        summary.append(
            target(
                "fp32 ceiling over the pipeline (linear layers at sgemm peak)",
                f"{ceiling / pipe:.2f}x",
                ">= 3x would be possible",
                ceiling / pipe >= 3,
            )
        )
        extra = {"ours_rate": ours, "pipeline_rate": pipe}
    else:
        summary.append(target("ceiling sentences/s (fp32)", round(ceiling, 1), "—", None))
    result = make_result(
        "roofline",
        f"Roofline of fp32 prediction ({len(sentences):,} Spanish sentences)",
        "python benchmarks/bench_roofline.py" + (" --quick" if args.quick else ""),
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
    return emit(result, args.json)


if __name__ == "__main__":
    main()
