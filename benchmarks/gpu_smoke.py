"""GPU smoke check of the prediction paths: lean load vs transformers load, on CUDA with bf16.

Saves a ``bert_crf`` tagger over the given encoder folder (random head, seed 0), loads it twice
on the GPU (``Tagger.load(lean=True)``: raw tokenizer + plain-torch BERT; ``lean=False``:
transformers) and on the CPU, and compares emissions, tags and marginals on real sentences.

    python benchmarks/gpu_smoke.py --encoder models/encoders/e5-trim \
        --conll data/processed/es/val.conll
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> dict:
    import torch

    from complex_ner.core.config import DataConfig
    from complex_ner.core.device import autocast_context
    from complex_ner.domain.alignment import collate
    from complex_ner.domain.data import read_conll
    from complex_ner.domain.models.tagger import Tagger, build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path, required=True)
    ap.add_argument("--conll", type=Path, required=True)
    ap.add_argument("--sentences", type=int, default=512)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sents = [list(s.tokens) for s in read_conll(args.conll)[: args.sentences]]
    torch.manual_seed(0)
    tagger = build_model(str(args.encoder), DataConfig().tags, "bert_crf", lang="es")
    out: dict = {"device": device, "sentences": len(sents)}
    with tempfile.TemporaryDirectory() as tmp:
        tagger.save(Path(tmp) / "m")
        lean = Tagger.load(Path(tmp) / "m", device=device, lean=True)
        full = Tagger.load(Path(tmp) / "m", device=device, lean=False)
        cpu = Tagger.load(Path(tmp) / "m", device="cpu", lean=True)
    out["lean_encoder"] = type(lean.encoder).__name__
    out["full_encoder"] = type(full.encoder).__name__
    windows = lean.encode(sents[:64])
    batch = collate(windows, lean.pad_id).to(device)
    with torch.inference_mode(), autocast_context(torch.device(device), None):
        # shape: (batch, words, num_tags)
        em_lean = lean.emissions(batch).float()
        em_full = full.emissions(batch).float()
    out["emissions_max_abs_diff_lean_vs_transformers"] = float((em_lean - em_full).abs().max())
    tags_lean, marg_lean = lean.predict_ids(sents, batch_size=128, with_marginals=True)
    tags_full, _ = full.predict_ids(sents, batch_size=128)
    tags_cpu, _ = cpu.predict_ids(sents, batch_size=128)
    words = sum(len(t) for t in tags_lean)
    out["words"] = words

    def agreement(a: list[list[int]], b: list[list[int]]) -> float:
        pairs = [(u, v) for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True)]
        return sum(u == v for u, v in pairs) / len(pairs)

    out["same_words_lean_vs_transformers_gpu"] = agreement(tags_lean, tags_full)
    out["same_words_gpu_bf16_vs_cpu_fp32"] = agreement(tags_lean, tags_cpu)
    out["marginals_rows_sum_to_1"] = all(
        abs(sum(row) - 1) < 1e-3 for sent in (marg_lean or []) for row in sent
    )
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
