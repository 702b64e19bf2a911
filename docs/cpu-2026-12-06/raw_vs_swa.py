"""One paper-budget run, two sets of weights: its last raw weights and its SWA average.

The run (``benchmarks.recipe --variants swa --set train.keep_checkpoint=true``) keeps its
resumable checkpoint: the raw weights after the last epoch and the trainer's averaged weights
(``train.average: swa``). Both are scored here on ``val`` and ``heldout`` with the engine's own
``evaluate_f1``, so "average or not" is compared at the same point of the same run.

Run from the project root: ``.venv/bin/python docs/cpu-2026-12-06/raw_vs_swa.py LANG RUN_DIR``
(RUN_DIR holds ``model/`` and ``checkpoint/``).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from complex_ner.core.config import load_params
from complex_ner.core.paths import split_file
from complex_ner.domain.data import read_conll
from complex_ner.domain.models.tagger import Tagger
from complex_ner.engines.evaluate import evaluate_f1
from complex_ner.engines.trainer import WeightAveraging

lang, run = sys.argv[1], Path(sys.argv[2])
params = load_params("params.yaml")
types = params.data.entity_types
splits = {s: read_conll(split_file(params, lang, s)) for s in ("val", "heldout")}

tagger = Tagger.load(run / "model")
tagger.load_state_dict(load_file(str(run / "checkpoint" / "weights.safetensors")))
tagger.requires_grad_(True)  # the trainer averaged every trained weight (embeddings too)
averager = WeightAveraging(tagger, "swa")
extra = torch.load(run / "checkpoint" / "optimizer.pt", weights_only=True, map_location="cpu")
averager.load_state_dict(extra["averaged"])
tagger.eval()


def scores() -> str:
    out = []
    for name, sentences in splits.items():
        s = evaluate_f1(tagger, sentences, types, params.evaluate.batch_size)
        out.append(f"{name} macro {s['macro']['f1']:.4f} micro {s['micro']['f1']:.4f}")
    return ", ".join(out)


print(f"{lang} raw weights after the last epoch: {scores()}")
with averager.applied():
    print(f"{lang} SWA of {averager.count} steps: {scores()}")
