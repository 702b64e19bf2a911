"""Data-parallel training for real: two gloo processes under torchrun against one process.

Both runs train the same tiny tagger (dropout 0, fp32) at the same global batch of 8
(:mod:`tests.integration.ddp_worker`); the two-process run splits each batch 4 + 4 (the last,
of 5, 3 + 2). DDP must leave both ranks with bitwise the same gradients at every step and the
same final weights, the loss curve must be the single process's up to float summation order,
and only rank 0 may save the model. Then ``train.devices: 2`` through the CLI, as DVC runs it:
torchrun started by the command itself, one MLflow run (rank 0's), one model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from complex_ner.adapters import tracking
from complex_ner.core.paths import CHECKPOINT_DIR, RUN_FILE, best_model_dir, run_dir
from complex_ner.domain.data import Sentence
from tests.integration.test_stages import _project

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


def test_train_devices_2_runs_torchrun_and_rank_0_alone_logs(
    sh: Callable[..., str],
    tmp_path: Path,
    tiny_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    project = _project(tmp_path, tiny_bert_dir, toy_corpus(24))
    cli = str(Path(sys.executable).with_name("complex-ner"))
    out = sh(
        [
            cli,
            "train",
            "--lang",
            "es",
            "--params",
            str(tmp_path / "params.yaml"),
            "--set",
            "train.devices=2",
            "--set",
            "train.threads=1",
            "--no-progress",
        ],
        tmp_path,
        timeout=300,
    )
    # One report line (rank 0's), one MLflow run, one saved model.
    assert out.count("best validation macro-F1") == 1, out
    client = mlflow.MlflowClient(tracking.tracking_uri(project))
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["es-bert_crf"]
    assert runs[0].data.tags["world_size"] == "2"
    assert runs[0].data.params["train.devices"] == "2"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_macro_f1")] == [
        1,
        2,
    ]
    recorded = json.loads((run_dir(project, "es", "bert_crf") / RUN_FILE).read_text())
    assert recorded["run_id"] == runs[0].info.run_id
    assert (best_model_dir(project, "es", "bert_crf") / "model.onnx").is_file()
