"""One training run of a tiny tagger, recorded per rank: the process test_distributed.py starts,
alone or under torchrun.

    python tests/integration/ddp_worker.py OUT ENCODER ARCH
    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        tests/integration/ddp_worker.py OUT ENCODER ARCH

Writes ``OUT/rank<r>.json``: every step's loss (as the trainer reports it), a digest of every
step's gradients and of the final weights, and what :func:`fit` returned on this rank.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from complex_ner.core.config import DataConfig, ModelConfig, TrainConfig
from complex_ner.core.distributed import World
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines.train import fit
from complex_ner.engines.trainer import Callback, StepInfo

_NAMES = ("ana", "luis", "marta", "pedro", "sofia")
_PLACES = ("lima", "quito", "madrid", "bogota", "cusco")
_FILLER = ("y", "luego", "fue", "a", "la", "casa", "de", "su", "madre")


def corpus(n: int) -> list[Sentence]:
    """Sentences of 5 to 14 words, so batches of different lengths and padding."""
    out = []
    for k in range(n):
        filler = list(_FILLER[: k % 10])
        tokens = [_NAMES[k % 5], "vive", "en", _PLACES[(k * 2) % 5], *filler, "."]
        tags = ["B-PER", "O", "O", "B-LOC"] + ["O"] * (len(filler) + 1)
        out.append(Sentence(id=f"s{k}", tokens=tuple(tokens), tags=tuple(tags)))
    return out


def digest(tensors: list[torch.Tensor]) -> str:
    """sha256 of the tensors' bytes: equal only when every value is bitwise equal."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Record(Callback):
    """Each step's reported loss and a digest of the gradients the optimizer just applied."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.losses: list[float] = []
        self.grads: list[str] = []
        self.grad_norms: list[float] = []

    def on_step_end(self, step: StepInfo) -> None:
        # The trainer clears gradients at the start of the next step: here they are the ones
        # this step applied (after DDP's all-reduce and clipping).
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        self.losses.append(step.loss)
        self.grads.append(digest(grads))
        self.grad_norms.append(
            float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
        )


def main(out: Path, encoder: str, arch: str) -> None:
    world = World.from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tagger = build_model(encoder, DataConfig().tags, ModelConfig(arch=arch, dropout=0.0), "es")
    cfg = TrainConfig(
        epochs=2,
        batch_size=8,
        lr_encoder=3e-3,
        lr_min=1e-4,
        lr_head=3e-2,
        schedule="constant",
        patience=100,
        freeze_embeddings=False,
        device="cpu",
        precision="fp32",
    )
    record = Record(tagger)
    # 37 sentences, batches of 8: the last global batch has 5, split 3 + 2 across two ranks.
    data = corpus(37)
    result = fit(
        tagger, data, data[:8], cfg, out / "run", DataConfig().entity_types, callbacks=[record]
    )
    payload = {
        "rank": world.rank,
        "world_size": world.size,
        "losses": record.losses,
        "grads": record.grads,
        "grad_norms": record.grad_norms,
        "weights": digest(list(tagger.state_dict().values())),
        "model_dir": str(result.model_dir) if result.model_dir else None,
        "history": [h["loss"] for h in result.history],
    }
    (out / f"rank{world.rank}.json").write_text(json.dumps(payload), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
