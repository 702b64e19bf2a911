"""Fine-tuning with mention replacement and weight averaging on a tiny random BERT."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import complex_ner.engines.train as train_module
from complex_ner.core.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.train import fit
from complex_ner.engines.trainer import Callback, WeightAveraging

TYPES = DataConfig().entity_types
TAGS = DataConfig().tags
ToyCorpus = Callable[[int], list[Sentence]]  # conftest.toy_corpus

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class StopAfter(Callback):
    """Interrupts a run after ``epochs`` epochs of this call (as a killed job would)."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.seen = epochs, 0

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        self.seen += 1
        return self.seen >= self.epochs


@pytest.fixture
def cfg(toy_train_config: TrainConfig) -> Callable[..., TrainConfig]:
    """:func:`toy_train_config` (tests/conftest.py) with some settings changed."""
    return lambda **kw: toy_train_config.model_copy(update=kw)


def fresh(tiny_bert_dir: Path) -> Tagger:
    torch.manual_seed(0)
    return build_model(str(tiny_bert_dir), TAGS, ModelConfig(arch="bert_crf", dropout=0.1), "es")


def trainable(tagger: Tagger) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tagger.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "update",
    [
        {"augment": AugmentConfig(mention_replace=0.5)},
        {"augment": AugmentConfig(mention_replace=0.5, context_crop=0.5)},
        {"average": "swa"},
        {"average": "ema", "ema_decay": 0.5},
    ],
    ids=["augment", "augment+crop", "swa", "ema"],
)
def test_each_option_trains_end_to_end(
    tiny_bert_dir: Path,
    toy_corpus: ToyCorpus,
    tmp_path: Path,
    cfg: Callable[..., TrainConfig],
    update: dict[str, Any],
) -> None:
    data = toy_corpus(12)
    result = fit(fresh(tiny_bert_dir), data, data, cfg(epochs=3, **update), tmp_path, TYPES)
    assert len(result.history) == 3 and result.model_dir is not None
    meta = json.loads((result.model_dir / "tagger.json").read_text(encoding="utf-8"))
    assert meta["best_epoch"] == result.best_epoch
    if "average" in update:
        # 2 steps per epoch, averaging after int(6 * 0.5) = 3: from epoch 2's second step.
        assert "avg_val_macro_f1" not in result.history[0]
        assert [h["averaged_steps"] for h in result.history[1:]] == [1, 3]
        assert meta["weights"] == result.best_weights in ("raw", update["average"])
        best = result.history[result.best_epoch - 1]
        assert best["weights"] == result.best_weights
        assert result.best_f1 == max(best["val_macro_f1"], best.get("avg_val_macro_f1", -1.0))
    else:
        assert result.best_weights == "raw" and "weights" not in result.history[0]


def fake_scores(values: Sequence[float]) -> Callable[..., dict[str, Any]]:
    """``evaluate_f1`` returning the next macro-F1 of ``values`` on each call."""
    left = list(values)

    def scores(*_args: object) -> dict[str, Any]:
        f1 = left.pop(0)
        return {
            "macro": {"f1": f1},
            "micro": {"f1": f1},
            "per_type": {t: {"f1": f1} for t in TYPES},
        }

    return scores


@pytest.mark.parametrize(("raw", "averaged", "saved"), [(0.2, 0.5, "ema"), (0.5, 0.2, "raw")])
def test_the_saved_model_holds_the_weights_that_scored_better(
    tiny_bert_dir: Path,
    toy_corpus: ToyCorpus,
    tmp_path: Path,
    cfg: Callable[..., TrainConfig],
    monkeypatch: pytest.MonkeyPatch,
    raw: float,
    averaged: float,
    saved: str,
) -> None:
    averagers: list[WeightAveraging] = []

    class Recorded(WeightAveraging):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            averagers.append(self)

    monkeypatch.setattr(train_module, "WeightAveraging", Recorded)
    monkeypatch.setattr(train_module, "evaluate_f1", fake_scores([raw, averaged]))
    data = toy_corpus(12)
    tagger = fresh(tiny_bert_dir)
    # One epoch of 3 steps; the average starts after the first.
    c = cfg(epochs=1, batch_size=4, average="ema", ema_decay=0.5)
    result = fit(tagger, data, data, c, tmp_path, TYPES)
    assert result.best_weights == saved and result.best_f1 == max(raw, averaged)
    assert result.history[0]["weights"] == saved
    expected = averagers[0].averaged_state() if saved == "ema" else trainable(tagger)
    assert not all(
        torch.equal(averagers[0].averaged_state()[n], v) for n, v in trainable(tagger).items()
    )
    loaded = dict(Tagger.load(tmp_path / "model").named_parameters())
    assert expected.keys() <= loaded.keys()
    assert all(torch.equal(loaded[n], v.cpu()) for n, v in expected.items())


def test_resume_with_augmentation_and_averaging_equals_uninterrupted(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, cfg: Callable[..., TrainConfig]
) -> None:
    data = toy_corpus(12)
    c = cfg(
        epochs=3,
        schedule="cyclic",
        patience=10,
        average="ema",
        ema_decay=0.5,
        augment=AugmentConfig(mention_replace=0.5),
    )
    full = fit(fresh(tiny_bert_dir), data, data, c, tmp_path / "a", TYPES)
    # 12 sentences and 6 copies: 3 steps per epoch, averaging after int(9 * 0.5) = 4 steps.
    # Stopped after epoch 2, the checkpoint holds two averaged steps.
    part = fit(fresh(tiny_bert_dir), data, data, c, tmp_path / "b", TYPES, callbacks=[StopAfter(2)])
    assert part.history[-1]["averaged_steps"] == 2
    done = fit(fresh(tiny_bert_dir), data, data, c, tmp_path / "b", TYPES, resume=True)
    keys = ("loss", "val_macro_f1", "avg_val_macro_f1", "averaged_steps", "weights")
    assert [[h.get(k) for k in keys] for h in done.history] == [
        [h.get(k) for k in keys] for h in full.history
    ]
    assert done.best_weights == full.best_weights
    a = Tagger.load(tmp_path / "a" / "model").state_dict()
    b = Tagger.load(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
