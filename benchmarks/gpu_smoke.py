"""GPU smoke check of the prediction paths: lean load vs transformers load, on CUDA with bf16.

Saves a ``bert_crf`` tagger over the encoder (random head, seed 0), loads it twice on the GPU
(``Tagger.load(lean=True)``: raw tokenizer + plain-torch BERT; ``lean=False``: transformers) and
once on the CPU, and compares emissions, tags and marginals on real sentences (without a GPU
both loads run on the CPU).

    python -m benchmarks.gpu_smoke --encoder models/encoders/e5-trim \
        --conll data/processed/es/val.conll
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    base_parser,
    emit,
    machine_info,
    parse,
    pick_encoder,
    project_params,
    result,
    tag_set,
    toy_sentences,
)
from complex_ner.core.config import ModelConfig
from complex_ner.core.device import autocast_context
from complex_ner.core.paths import split_file
from complex_ner.domain.alignment import collate
from complex_ner.domain.data import read_conll
from complex_ner.domain.models.tagger import Tagger, build_model

COLUMNS = ["check", "value"]


def agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """Share of words with the same tag id."""
    pairs = [(u, v) for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True)]
    return sum(u == v for u, v in pairs) / len(pairs)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("gpu_smoke", __doc__, threads=None, module="gpu_smoke")
    parser.add_argument("--conll", type=Path, default=None, help="default: the es val split")
    parser.add_argument("--sentences", type=int, default=None)
    args = parse(parser, argv)
    device = "cuda" if torch.cuda.is_available() and args.devices != "cpu" else "cpu"
    n = args.sentences or (16 if args.quick else 512)
    if args.quick:
        sentences = [list(s.tokens) for s in toy_sentences(n)]
    else:
        conll = args.conll or split_file(project_params(), "es", "val")
        sentences = [list(s.tokens) for s in read_conll(conll)[:n]]
    out: dict[str, Any] = {"device": device, "sentences": len(sentences)}
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        encoder = pick_encoder(args, Path(tmp))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tagger = build_model(str(encoder), tag_set(), ModelConfig(arch="bert_crf"), "es")
        folder = tagger.save(Path(tmp) / "model")
        lean = Tagger.load(folder, device=device, lean=True)
        full = Tagger.load(folder, device=device, lean=False)
        cpu = Tagger.load(folder, device="cpu", lean=True)
    out["lean_encoder"] = type(lean.encoder).__name__
    out["full_encoder"] = type(full.encoder).__name__
    batch = collate(lean.encode(sentences[:64]), lean.pad_id).to(device)
    with torch.inference_mode(), autocast_context(torch.device(device), None):
        # shape: (batch, words, num_tags)
        em_lean = lean.emissions(batch).float()
        em_full = full.emissions(batch).float()
    out["emissions_max_abs_diff_lean_vs_transformers"] = float((em_lean - em_full).abs().max())
    tags_lean, marg_lean = lean.predict_ids(sentences, batch_size=128, with_marginals=True)
    tags_full, _ = full.predict_ids(sentences, batch_size=128)
    tags_cpu, _ = cpu.predict_ids(sentences, batch_size=128)
    out["words"] = sum(len(t) for t in tags_lean)
    out["same_words_lean_vs_transformers"] = agreement(tags_lean, tags_full)
    out[f"same_words_{device}_vs_cpu_fp32"] = agreement(tags_lean, tags_cpu)
    out["marginals_rows_sum_to_1"] = all(
        abs(sum(row) - 1) < 1e-3 for sent in (marg_lean or []) for row in sent
    )
    record = result(
        args,
        f"Prediction load paths on {device}: lean vs transformers",
        COLUMNS,
        [[k, v] for k, v in out.items()],
        machine=machine_info(),
        checks=out,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
