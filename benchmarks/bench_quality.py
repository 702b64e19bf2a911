"""Validation macro-F1 and training cost per language x architecture under one budget.

    python benchmarks/bench_quality.py --langs es zh --archs bert_crf bert_bilstm_crf bert_linear \
        --set train.max_train_sentences=1500 --set train.epochs=2 --json reports/quality.json

Every run uses the same params (seed, budget, encoder) apart from the architecture, so the
table compares heads, not luck. Models go to ``--out`` (default ``models/compare``), not to the
pipeline's ``models/trained``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> list[dict]:
    from complex_ner.config import ARCHITECTURES, load_params
    from complex_ner.train import train_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--langs", nargs="+", default=["es", "zh"])
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    ap.add_argument("--set", action="append", default=[], help="section.key=value override")
    ap.add_argument("--out", default="models/compare")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)

    rows = []
    for lang in args.langs:
        for arch in args.archs:
            overrides = [*args.set, f"train.output_dir={args.out}"]
            p = load_params(args.params, overrides)
            t0 = time.perf_counter()
            result = train_model(p, lang, arch, progress=False)
            wall = time.perf_counter() - t0
            h = result.history
            rows.append(
                {
                    "lang": lang,
                    "arch": arch,
                    "label_piece": p.model.piece_for(lang),
                    "train_sentences": p.train.max_train_sentences or "all",
                    "epochs": len(h),
                    "best_val_macro_f1": round(result.best_f1, 4),
                    "best_epoch": result.best_epoch,
                    "val_micro_f1": round(h[result.best_epoch - 1]["val_micro_f1"], 4),
                    "sec_per_epoch": round(sum(r["epoch_seconds"] for r in h) / len(h), 1),
                    "pad_share": round(h[-1]["pad_share"], 4),
                    "wall_seconds": round(wall, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
