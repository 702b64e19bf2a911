"""Data-parallel training for real: two gloo processes under torchrun against one process.

Both runs train the same tiny tagger (dropout 0, fp32) at the same global batch of 8
(:mod:`tests.integration.ddp_worker`); the two-process run splits each batch 4 + 4 (the last,
of 5, 3 + 2). DDP must leave both ranks with bitwise the same gradients at every step and the
same final weights, the loss curve must be the single process's up to float summation order,
and only rank 0 may save the model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from complex_ner.core.paths import CHECKPOINT_DIR

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("ddp_worker.py")


def _train(
    sh: Callable[..., str], root: Path, out: Path, encoder: Path, arch: str, procs: int
) -> list[dict]:
    out.mkdir(parents=True)
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    sh([*launcher, str(WORKER), str(out), str(encoder), arch], root, timeout=300)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(procs)]


@pytest.mark.parametrize("arch", ["bert_crf", "bert_linear"])
def test_two_gloo_processes_match_one(
    sh: Callable[..., str], root: Path, tmp_path: Path, tiny_bert_dir: Path, arch: str
) -> None:
    (single,) = _train(sh, root, tmp_path / "one", tiny_bert_dir, arch, 1)
    rank0, rank1 = _train(sh, root, tmp_path / "two", tiny_bert_dir, arch, 2)

    assert rank0["world_size"] == rank1["world_size"] == 2
    steps = len(single["losses"])
    assert steps == 10  # ceil(37 / 8) = 5 global batches per epoch, 2 epochs
    # Gradients in sync: after DDP's all-reduce every rank applied the very same gradients.
    assert len(rank0["grads"]) == len(rank1["grads"]) == steps
    assert rank0["grads"] == rank1["grads"]
    assert rank0["weights"] == rank1["weights"]
    # Both ranks report the whole batch's loss; it is the single process's loss at every step
    # (a CRF's mean over sequences and the linear head's mean over words alike).
    assert rank0["losses"] == rank1["losses"]
    assert rank0["losses"] == pytest.approx(single["losses"], rel=1e-3, abs=1e-6)
    assert rank0["grad_norms"] == pytest.approx(single["grad_norms"], rel=1e-3)
    # Rank 0 alone saved the model (and removed its finished checkpoint).
    assert rank0["model_dir"] is not None and Path(rank0["model_dir"]).is_dir()
    assert rank1["model_dir"] is None
    assert not (tmp_path / "two" / "run" / CHECKPOINT_DIR).exists()
