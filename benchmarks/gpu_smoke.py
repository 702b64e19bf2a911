"""GPU smoke check of the prediction paths: the torch model on CUDA (bf16) vs the ONNX export.

Saves a ``bert_crf`` tagger over the encoder (random head, seed 0), exports it to ONNX
(onnxruntime on the CPU, what prediction runs), loads the torch model on the GPU and on the CPU,
and compares emissions, tags and marginals on real sentences (without a GPU both torch loads run
on the CPU).

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
from complex_ner.domain.batch import collate
from complex_ner.domain.data import read_conll
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.export import export_onnx
from complex_ner.engines.onnx_tagger import OnnxTagger

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
        export_onnx(folder, sentences[:64])
        onnx = OnnxTagger.load(folder)
        gpu = Tagger.load(folder, device=device)
        cpu = Tagger.load(folder, device="cpu")
    windows = onnx.encode(sentences[:64])
    batch = collate(windows, gpu.pad_id).to(device)
    with torch.inference_mode(), autocast_context(torch.device(device), None):
        # shape: (batch, words, num_tags)
        em_torch = gpu.emissions(batch).float().cpu()
    em_onnx, _ = onnx.emissions(windows)
    out["emissions_max_abs_diff_onnx_vs_torch"] = float(
        (em_torch - torch.from_numpy(em_onnx)).abs()[batch.word_mask.cpu()].max()
    )
    tags_onnx, marg_onnx = onnx.predict_ids(sentences, batch_size=128, with_marginals=True)
    tags_gpu, _ = gpu.predict_ids(sentences, batch_size=128)
    tags_cpu, _ = cpu.predict_ids(sentences, batch_size=128)
    out["words"] = sum(len(t) for t in tags_onnx)
    out[f"same_words_onnx_vs_torch_{device}"] = agreement(tags_onnx, tags_gpu)
    out["same_words_onnx_vs_torch_cpu_fp32"] = agreement(tags_onnx, tags_cpu)
    out["marginals_rows_sum_to_1"] = all(
        abs(sum(row) - 1) < 1e-3 for sent in (marg_onnx or []) for row in sent
    )
    record = result(
        args,
        f"Prediction paths: torch on {device} vs the ONNX export",
        COLUMNS,
        [[k, v] for k, v in out.items()],
        machine=machine_info(),
        checks=out,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
