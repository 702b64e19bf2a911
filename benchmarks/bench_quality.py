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
    from complex_ner.core.config import ARCHITECTURES, load_params
    from complex_ner.core.device import pick_device
    from complex_ner.engines.train import train_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--langs", nargs="+", default=["es", "zh"])
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    ap.add_argument("--set", action="append", default=[], help="section.key=value override")
    ap.add_argument("--out", default="models/compare")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)

    rows: list[dict] = []

    def save() -> None:
        # Rewritten after every epoch, so a run stopped by a time limit keeps what it measured.
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
            tmp.replace(out)

    for lang in args.langs:
        for arch in args.archs:
            overrides = [*args.set, f"train.output_dir={args.out}"]
            p = load_params(args.params, overrides)
            partial = {"lang": lang, "arch": arch, "finished": False, "val_macro_f1": []}
            rows.append(partial)
            t0 = time.perf_counter()

            def on_epoch(record: dict, partial: dict = partial, t0: float = t0) -> None:
                partial["val_macro_f1"].append(round(record["val_macro_f1"], 4))
                partial["best_val_macro_f1"] = max(partial["val_macro_f1"])
                partial["epochs"] = len(partial["val_macro_f1"])
                partial["sec_per_epoch"] = round(record["epoch_seconds"], 1)
                partial["wall_seconds"] = round(time.perf_counter() - t0, 1)
                print(json.dumps(partial), flush=True)
                save()

            result = train_model(p, lang, arch, progress=False, on_epoch_end=on_epoch)
            wall = time.perf_counter() - t0
            h = result.history
            rows[-1] = {
                "lang": lang,
                "arch": arch,
                "finished": True,
                "device": str(pick_device(p.train.device)),
                "label_piece": p.model.piece_for(lang),
                "train_sentences": p.train.max_train_sentences or "all",
                "epochs": len(h),
                "best_val_macro_f1": round(result.best_f1, 4),
                "best_epoch": result.best_epoch,
                "val_micro_f1": round(h[result.best_epoch - 1]["val_micro_f1"], 4),
                "sec_per_epoch": round(sum(r["epoch_seconds"] for r in h) / len(h), 1),
                "pad_share": round(h[-1]["pad_share"], 4),
                "wall_seconds": round(wall, 1),
                "val_macro_f1": [round(r["val_macro_f1"], 4) for r in h],
                "best_per_type_f1": {
                    k[len("val_f1_") :]: round(v, 4)
                    for k, v in h[result.best_epoch - 1].items()
                    if k.startswith("val_f1_")
                },
            }
            print(json.dumps(rows[-1]), flush=True)
            save()
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return rows


if __name__ == "__main__":
    main()
