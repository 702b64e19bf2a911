"""Same start, gradients and dropout: how far apart are torch's loop AdamW and the fused kernel?

Run from the project root after `make run` (needs the trim stage's encoder and the es splits):
``.venv/bin/python docs/cpu-2026-12-05d/one_step_diff.py N [bf16|fp32]`` (N steps of batch 16).
Prints, per weight tensor, the largest |fused - loop| difference relative to the largest update.
"""

import copy
import sys

import torch

from complex_ner.core.config import TrainConfig, load_params
from complex_ner.domain.batch import collate
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines import train as T
from complex_ner.engines.pretrain import start_encoder
from complex_ner.engines.trainer import Trainer

steps = int(sys.argv[1])
precision = sys.argv[2] if len(sys.argv) > 2 else "bf16"
params = load_params("params.yaml").for_run("es", "bert_crf")
train, _ = T.load_training_data(params, "es")
torch.manual_seed(13)
tagger = build_model(start_encoder(params, "es"), params.data.tags, params.model, "es")
sample = train[:16]
windows = tagger.encode([s.tokens for s in sample])
batch = collate(windows, tagger.pad_id, T.label_ids(tagger, sample))
tagger.train()
start = {k: v.clone() for k, v in tagger.state_dict().items()}
out = {}
for fused in (False, True):
    model = copy.deepcopy(tagger)
    optimizer = T.make_optimizer(model, TrainConfig(fused_adamw=fused))
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    # The training engine's own step: autocast, backward, clipping, update.
    trainer = Trainer(
        model, optimizer, constant, epochs=1, steps_per_epoch=steps, seed=13,
        device=torch.device("cpu"), precision=precision, clip_norm=1.0,
    )  # fmt: skip
    for _ in range(steps):
        torch.manual_seed(0)  # the same dropout masks in both runs
        trainer.step(model.loss, batch)
    out[fused] = {k: v.clone() for k, v in model.state_dict().items()}
rows = []
for k, v in start.items():
    if not v.is_floating_point():
        continue
    update = (out[False][k] - v).abs().max().item()
    diff = (out[True][k] - out[False][k]).abs().max().item()
    rows.append((diff / (update + 1e-30), k, update, diff))
rows.sort(reverse=True)
print(
    f"{precision}, after {steps} step(s): median ratio {rows[len(rows) // 2][0]:.2e} "
    f"over {len(rows)} tensors"
)
for ratio, name, update, diff in rows[:3]:
    print(f"  {ratio:.2e} {name}: largest update {update:.2e}, largest difference {diff:.2e}")
