"""Fine-tuning: AdamW, cyclic, linear or constant LR, early stopping on validation macro-F1.

The loop is the shared :class:`~complex_ner.engines.trainer.Trainer`; this module adds what is
particular to fine-tuning at each epoch's end: validation, keeping the best model, patience and
the resumable checkpoint. Each epoch re-seeds torch from ``(seed, epoch)`` and shuffles length
buckets with a generator seeded the same way, so a run resumed from its checkpoint makes exactly
the updates an uninterrupted run makes (on CPU). Progress and tracking are callbacks the caller
passes in.

Two switchable extras (both off by default): ``train.augment`` adds, every epoch,
mention-replaced copies and context crops of shares of the training sentences
(:mod:`complex_ner.domain.augment`, seeded by ``(seed, epoch)``); ``train.average`` keeps an
SWA or EMA average of the weights (:class:`~complex_ner.engines.trainer.WeightAveraging`),
validates it next to the raw weights and saves whichever scores higher.

Data-parallel: under torchrun (``train.devices`` > 1 starts it, see
:mod:`complex_ner.app.launch`) every process builds the same model, takes a disjoint share of
every global batch (:func:`~complex_ner.core.distributed.shard`, weighted so that DDP's
gradient average is the whole batch's gradient) and makes the same updates; rank 0 alone
validates, keeps the best model, writes the checkpoint and exports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from complex_ner.core.config import Params, TrainConfig
from complex_ner.core.device import pick_device, pick_precision
from complex_ner.core.distributed import World, process_group, shard, shard_weight, sum_over_ranks
from complex_ner.core.io import (
    atomic_write_text,
    discard_dir,
    native_output,
    recover_dir,
    replace_dir,
    staging_dir,
    write_json,
    writing,
)
from complex_ner.core.paths import (
    BEST_DIR,
    BUDGET_PLAN_FILE,
    CHECKPOINT_DIR,
    HISTORY_FILE,
    PENDING_BEST_DIR,
    run_dir,
    split_file,
)
from complex_ner.domain import augment as augmentation
from complex_ner.domain.alignment import EncodedWindow
from complex_ner.domain.batch import Batch, collate
from complex_ner.domain.data import Sentence, read_conll
from complex_ner.domain.encoders import freeze_lower_layers
from complex_ner.domain.models.tagger import Tagger, build_model, iter_batches
from complex_ner.engines.evaluate import evaluate_f1
from complex_ner.engines.export import export_onnx
from complex_ner.engines.pretrain import encoder_label, start_encoder
from complex_ner.engines.trainer import (
    Callback,
    Trainer,
    WeightAveraging,
    adamw,
    decay_groups,
    linear_schedule,
)

_WEIGHTS = "weights.safetensors"
_OPTIMIZER = "optimizer.pt"
_STATE = "state.json"


@dataclass
class FitResult:
    """What a training run produced."""

    best_f1: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    model_dir: Path | None = None
    stopped_early: bool = False
    best_weights: str = "raw"  # which weights the saved model holds: raw, swa or ema


def make_optimizer(tagger: Tagger, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with one rate for the encoder and another for the head and CRF."""
    groups = decay_groups(tagger.encoder, cfg.lr_encoder, cfg.weight_decay)
    groups += decay_groups(tagger.head, cfg.lr_head, cfg.weight_decay)
    return adamw(groups, fused=cfg.fused_adamw)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cyclic (one triangle per epoch, lr_min to the group's rate), linear or constant."""
    floor = cfg.lr_min / cfg.lr_encoder
    if cfg.schedule == "cyclic":
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.CyclicLR(
            optimizer,
            base_lr=[p * floor for p in peaks],
            max_lr=peaks,
            step_size_up=max(1, steps_per_epoch // 2),
            mode="triangular",
            cycle_momentum=False,
        )
    if cfg.schedule == "linear":
        total = max(1, cfg.epochs * steps_per_epoch)
        return linear_schedule(optimizer, total, cfg.warmup_fraction, floor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def label_ids(tagger: Tagger, sentences: Sequence[Sentence]) -> list[list[int]]:
    """Tag ids per word; unknown tags are an error naming the sentence."""
    out = []
    for s in sentences:
        if s.tags is None:
            raise ValueError(f"{s.source}:{s.line}: sentence {s.id!r} has no tags to train on")
        try:
            out.append([tagger.tag_to_id[t] for t in s.tags])
        except KeyError as exc:
            raise ValueError(f"{s.source}:{s.line}: unknown tag {exc.args[0]!r}") from None
    return out


def _save_checkpoint(
    folder: Path,
    tagger: Tagger,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    averager: WeightAveraging | None = None,
) -> None:
    from safetensors.torch import save_file

    with staging_dir(folder) as tmp, writing(folder):
        weights = {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()}
        save_file(weights, str(tmp / _WEIGHTS))
        # Optimizer state is tensors and numbers only; it is read back with weights_only=True.
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if averager is not None:
            extra["averaged"] = averager.state_dict()
        with native_output(tmp / _OPTIMIZER) as fh:
            torch.save(extra, fh)
        write_json(tmp / _STATE, state)
        replace_dir(tmp, folder)


def _load_checkpoint(
    folder: Path,
    tagger: Tagger,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    averager: WeightAveraging | None = None,
) -> dict[str, Any]:
    from safetensors.torch import load_file

    tagger.load_state_dict(load_file(str(folder / _WEIGHTS)))
    opt = torch.load(folder / _OPTIMIZER, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    if averager is not None:
        if "averaged" not in opt:
            raise ValueError(f"{folder}: the checkpoint holds no averaged weights (train.average)")
        averager.load_state_dict(opt["averaged"])
    return json.loads((folder / _STATE).read_text(encoding="utf-8"))


@dataclass
class _Step:
    """This process's part of one global batch and the weight of its mean loss."""

    batch: Batch
    weight: float = 1.0


class _WeightedLoss(nn.Module):
    """The tagger's loss on a :class:`_Step`, times its weight: a module's forward, so that
    DDP can wrap it (DDP hooks the gradient exchange into ``forward``, not into ``loss``)."""

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, step: _Step) -> Tensor:
        return self.tagger.loss(step.batch) * step.weight  # shape: ()


class _Batches:
    """The trainer's batch function: length-bucketed batches of the encoded training windows.

    With :mod:`~complex_ner.domain.augment` copies, each epoch's windows are the training set's
    plus those of that epoch's copies (encoded when the epoch starts). Counts the real pieces
    and padded slots of the current epoch for its throughput record. In a distributed world
    each global batch is split across the ranks and this one keeps its share (a batch smaller
    than the world leaves some ranks a zero-weight stand-in: every rank must join every step's
    gradient exchange).
    """

    def __init__(
        self,
        tagger: Tagger,
        windows: Sequence[EncodedWindow],
        labels: list[list[int]],
        batch_size: int,
        device: torch.device,
        augment: augmentation.Augmentations | None = None,
        world: World | None = None,
    ) -> None:
        self.tagger = tagger
        self.windows = windows
        self.labels = labels
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.world = world if world is not None else World()
        self.real = self.padded = 0
        self._epoch: tuple[int, list[EncodedWindow], list[list[int]]] | None = None

    def epoch_data(self, epoch: int) -> tuple[Sequence[EncodedWindow], list[list[int]]]:
        """The windows and label ids of one epoch (the training set, plus its copies)."""
        if self.augment is None or self.augment.copies_per_epoch == 0:
            return self.windows, self.labels
        if self._epoch is None or self._epoch[0] != epoch:
            copies = self.augment.copies(epoch)
            offset = len(self.labels)
            # The copies' windows index their label rows after the training set's.
            extra = [
                dataclasses.replace(w, sentence_index=w.sentence_index + offset)
                for w in self.tagger.encode([c.tokens for c in copies])
            ]
            labels = self.labels + label_ids(self.tagger, copies)
            self._epoch = (epoch, [*self.windows, *extra], labels)
        return self._epoch[1], self._epoch[2]

    def _units(self, window: EncodedWindow) -> int:
        """The loss terms of one window: one sequence, or its words (``Head.loss_unit``)."""
        return 1 if self.tagger.head.loss_unit == "sequence" else len(window.word_ids)

    def __call__(self, epoch: int, generator: torch.Generator) -> Iterator[_Step]:
        self.real = self.padded = 0
        windows, labels = self.epoch_data(epoch)
        for idx in iter_batches(windows, self.batch_size, generator):
            rows = [windows[i] for i in idx]
            weight = 1.0
            if self.world.distributed:
                mine = shard(rows, self.world)
                total = sum(self._units(w) for w in rows)
                weight = shard_weight(sum(self._units(w) for w in mine), total, self.world)
                rows = mine or rows[:1]
            batch = collate(rows, self.tagger.pad_id, labels).to(self.device)
            if weight > 0:
                self.real += int(batch.attention_mask.sum())
                self.padded += batch.attention_mask.numel()
            yield _Step(batch, weight)


#: ``stopped_by`` of the epoch record after which ``train.time_budget_minutes`` ended a run.
TIME_BUDGET_STOP = "time_budget"


def over_time_budget(history: Sequence[dict[str, Any]], minutes: float) -> bool:
    """True when one more epoch, at the mean epoch (with its validation) of ``history``, would
    end past ``minutes`` of training; ``minutes`` 0: never. A resumed run's history holds its
    past epochs, so the budget covers the whole run."""
    if minutes <= 0 or not history:
        return False
    spent = sum(float(r["epoch_seconds"]) + float(r["eval_seconds"]) for r in history)
    return spent + spent / len(history) > minutes * 60.0


class _EpochEnd:
    """Fine-tuning's end of epoch: validate, keep the best model, count patience, checkpoint.

    With weight averaging, the averaged weights are validated too (``avg_`` fields of the
    record) and the better of the two by validation macro-F1 (raw on a tie) is this epoch's
    score, for the best model and for patience; ``weights`` names it.

    Its state (best F1, epoch and weights, epochs without gain, whether patience ran out) is
    saved in the checkpoint with the history and the averaged weights, so a resumed run
    continues exactly.
    """

    def __init__(
        self,
        trainer: Trainer[_Step],
        batches: _Batches,
        val: Sequence[Sentence],
        cfg: TrainConfig,
        out_dir: Path,
        entity_types: Sequence[str],
        model_extra: dict[str, Any],
        averager: WeightAveraging | None = None,
    ) -> None:
        self.world = batches.world
        self.trainer = trainer
        self.averager = averager
        self.tagger = batches.tagger
        self.batches = batches
        self.val = val
        self.cfg = cfg
        self.out_dir = out_dir
        self.checkpoint = out_dir / CHECKPOINT_DIR
        # The best model so far; published as out_dir/model, with its export, when the run ends.
        self.pending = out_dir / PENDING_BEST_DIR
        self.entity_types = entity_types
        self.model_extra = model_extra
        self.epoch = 0
        self.best_f1 = -1.0
        self.best_epoch = 0
        self.best_weights = "raw"
        self.bad_epochs = 0
        self.stopped_early = False
        self.history: list[dict[str, Any]] = []

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }

    def restore(self) -> None:
        """Load the checkpoint into the tagger, optimizer, scheduler and this state."""
        t = self.trainer
        state = _load_checkpoint(
            self.checkpoint, self.tagger, t.optimizer, t.scheduler, self.averager
        )
        self.epoch = int(state["epoch"])
        self.best_f1 = float(state["best_f1"])
        self.best_epoch = int(state["best_epoch"])
        self.best_weights = str(state.get("best_weights", "raw"))
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_early = bool(state.get("stopped_early", False))
        self.history = list(state.get("history", []))

    def _scores(self) -> dict[str, Any]:
        return evaluate_f1(self.tagger, self.val, self.entity_types, self.cfg.batch_size * 2)

    def __call__(self, record: dict[str, Any]) -> bool:
        """Complete ``record`` with validation scores and throughput; True: patience ran out.

        Other ranks than 0 only count their tokens (every rank's go into the throughput).
        """
        started = time.perf_counter()
        real, padded = sum_over_ranks(
            [self.batches.real, self.batches.padded], self.world, self.trainer.device
        )
        if not self.world.main:
            self.epoch = int(record["epoch"])
            return False
        scores = self._scores()
        record.update(
            {
                "val_macro_f1": scores["macro"]["f1"],
                "val_micro_f1": scores["micro"]["f1"],
                **{f"val_f1_{t}": v["f1"] for t, v in scores["per_type"].items()},
            }
        )
        weights, best_scores = "raw", scores
        averager = self.averager
        if averager is not None and averager.count > 0:
            with averager.applied():
                averaged = self._scores()
            record.update(
                {
                    "avg_val_macro_f1": averaged["macro"]["f1"],
                    "avg_val_micro_f1": averaged["micro"]["f1"],
                    **{f"avg_val_f1_{t}": v["f1"] for t, v in averaged["per_type"].items()},
                    "averaged_steps": averager.count,
                }
            )
            if averaged["macro"]["f1"] > scores["macro"]["f1"]:
                weights, best_scores = averager.kind, averaged
        if averager is not None:
            record["weights"] = weights
        f1 = float(best_scores["macro"]["f1"])
        record.update(
            {
                "eval_seconds": time.perf_counter() - started,
                "pad_share": 1.0 - real / max(1, padded),
                "tokens_per_second": real / max(1e-9, float(record["epoch_seconds"])),
            }
        )
        self.history.append(record)
        self.epoch = int(record["epoch"])
        if f1 > self.best_f1:
            self.best_f1, self.best_epoch, self.bad_epochs = f1, self.epoch, 0
            self.best_weights = weights
            self._save_best(weights, best_scores)
        else:
            self.bad_epochs += 1
            self.stopped_early = self.bad_epochs >= self.cfg.patience
        # The last epoch ends the run anyway: the record says "time_budget" only when it cut one.
        last = self.epoch >= self.cfg.epochs
        if (
            not self.stopped_early
            and not last
            and over_time_budget(self.history, self.cfg.time_budget_minutes)
        ):
            self.stopped_early = True
            record["stopped_by"] = TIME_BUDGET_STOP
        t = self.trainer
        # After the best model: a checkpoint never names a best epoch whose weights are missing.
        _save_checkpoint(
            self.checkpoint, self.tagger, t.optimizer, t.scheduler, self._state(), averager
        )
        return self.stopped_early

    def _save_best(self, weights: str, scores: dict[str, Any]) -> None:
        extra = {"best_epoch": self.epoch, "weights": weights, "val_scores": scores}
        if weights == "raw" or self.averager is None:
            self.tagger.save(self.pending, extra={**extra, **self.model_extra})
            return
        with self.averager.applied():
            self.tagger.save(self.pending, extra={**extra, **self.model_extra})

    def publish(self, export: Callable[[Path], object]) -> Path | None:
        """End of a finished run: export the best model, then swap it in as ``out_dir/model``
        and write the history; the checkpoint goes last (it lets a killed run finish this).

        Until the swap the previous ``model`` folder (or none) stays in place: a run killed at
        any point never leaves a model folder without its ONNX export.
        """
        best = self.out_dir / BEST_DIR
        if self.pending.is_dir():
            export(self.pending)
            replace_dir(self.pending, best)
        atomic_write_text(self.out_dir / HISTORY_FILE, json.dumps(self.history, indent=2) + "\n")
        if not self.cfg.keep_checkpoint:
            # The checkpoint (weights plus optimizer state, ~3x the model) only serves --resume.
            discard_dir(self.checkpoint)
        return best if self.best_epoch and best.is_dir() else None


def fit(
    tagger: Tagger,
    train: Sequence[Sentence],
    val: Sequence[Sentence],
    cfg: TrainConfig,
    out_dir: str | Path,
    entity_types: Sequence[str],
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    model_extra: dict[str, Any] | None = None,
    world: World | None = None,
) -> FitResult:
    """Train ``tagger`` on ``train``, keep the best model on ``val`` under ``out_dir/model``.

    The saved model is then exported to ONNX and checked on ``val``
    (:func:`complex_ner.engines.export.export_onnx`).

    Args:
        resume: Continue from ``out_dir/checkpoint`` when it exists.
        callbacks: Observe the run (progress lines, tracking); one that returns True from
            ``on_epoch_end`` interrupts it after a complete checkpoint, to be resumed later.
        model_extra: Extra JSON written into the saved model's ``tagger.json``.
        world: The data-parallel processes (default: what torchrun's environment says; one
            process without it). Ranks other than 0 return a result without a model.
    """
    out_dir = Path(out_dir)
    world = world if world is not None else World.from_env()
    device = pick_device(cfg.device, world)
    precision = pick_precision(cfg.precision, device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.freeze_embeddings:
        tagger.encoder.get_input_embeddings().weight.requires_grad_(False)
    freeze_lower_layers(tagger.encoder, cfg.freeze_layers)
    tagger.to(device)
    if cfg.planned_minutes == 0 and not resume and world.main:
        (out_dir / BUDGET_PLAN_FILE).unlink(missing_ok=True)  # an earlier run's plan
    if cfg.planned_minutes > 0:
        if world.distributed:
            raise ValueError(
                "train.planned_minutes plans one process: set it to 0 with devices > 1"
            )
        plan = plan_to_budget(
            tagger, train, cfg, device, precision, out_dir / BUDGET_PLAN_FILE, resume
        )
        cfg = cfg.model_copy(update={"epochs": plan["epochs"]})
        train = seeded_subset(train, plan["train_sentences"], cfg.seed)
        model_extra = {**(model_extra or {}), "budget_plan": plan}
        if "train_sentences" in model_extra:
            model_extra["train_sentences"] = len(train)
    with process_group(world, device):
        end = _fit(
            tagger,
            train,
            val,
            cfg,
            out_dir,
            entity_types,
            resume,
            callbacks,
            model_extra or {},
            world,
            device,
            precision,
        )
    model_dir = None
    if world.main and (end.epoch >= cfg.epochs or end.stopped_early):
        # What prediction runs, checked against the saved torch model on the validation split.
        model_dir = end.publish(
            lambda folder: export_onnx(
                folder, [s.tokens for s in val], int8=cfg.export_int8, batch_size=cfg.batch_size * 2
            )
        )
    return FitResult(
        best_f1=end.best_f1,
        best_epoch=end.best_epoch,
        history=end.history,
        model_dir=model_dir,
        stopped_early=end.stopped_early,
        best_weights=end.best_weights,
    )


# Batches of the plan's sample. Each is stepped twice and timed the second time: on a CPU the
# first step at a new sequence length also builds its kernels, so first steps alone overstated
# a step by ~40% (docs/results.md), while a whole epoch repeats each length many times.
_PLAN_STEPS = 6


def seeded_subset(sentences: Sequence[Sentence], n: int, seed: int) -> list[Sentence]:
    """``n`` of ``sentences`` drawn with ``seed``, in their order (all of them when ``n`` is
    not smaller): a split file keeps its source's order, which need not be random."""
    if n >= len(sentences):
        return list(sentences)
    keep = sorted(random.Random(seed).sample(range(len(sentences)), n))
    return [sentences[i] for i in keep]


def plan_shape(fits: int, epochs: int, sentences: int, batch_size: int) -> tuple[int, int]:
    """``(epochs, sentences per epoch)`` for a budget of ``fits`` sentence passes.

    All ``epochs`` over all ``sentences`` when they fit; else the same epochs over fewer
    sentences while that keeps at least half of them, since repeats pay there (zh: a second
    pass over all of them, +6.8 points); else one epoch over as many as fit (at least one
    batch), since below that distinct sentences beat repeats (es: 3,000 x 2 lost to 12,240 x 1).
    """
    if fits >= epochs * sentences:
        return epochs, sentences
    if 2 * (fits // epochs) >= sentences:
        return epochs, fits // epochs
    return 1, min(sentences, max(batch_size, fits))


def plan_to_budget(
    tagger: Tagger,
    train: Sequence[Sentence],
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
    plan_file: Path,
    resume: bool = False,
) -> dict[str, Any]:
    """How many epochs over how many of ``train``'s sentences fit ``cfg.planned_minutes``.

    Times whole training steps (forward, backward, clipping and the optimizer's update, through
    the same :class:`~complex_ner.engines.trainer.Trainer` step) on a few batches of a seeded
    sample of ``train``, each batch's second step (see ``_PLAN_STEPS``), then puts every weight
    back and restores the random state, so a plan that fits changes nothing; shapes the run by
    :func:`plan_shape`; :func:`fit` then trains on :func:`seeded_subset` of that many
    sentences. Validation is not part of the plan.
    The plan is written to ``plan_file``; a resumed run reads it back instead of re-timing.

    Returns:
        ``{"epochs", "train_sentences", "seconds_per_sentence", "planned_minutes", "of"}``.
    """
    if resume and plan_file.is_file():
        return json.loads(plan_file.read_text(encoding="utf-8"))
    sample = seeded_subset(train, cfg.batch_size * _PLAN_STEPS, cfg.seed)
    windows = tagger.encode([s.tokens for s in sample])
    batches = _Batches(tagger, windows, label_ids(tagger, sample), cfg.batch_size, device)
    loss_fn = _WeightedLoss(tagger)
    was_training = tagger.training
    # The timed updates change the weights: a copy (on the CPU, ~0.1-0.5 GB) is put back after.
    saved = {k: v.detach().to("cpu", copy=True) for k, v in tagger.state_dict().items()}
    optimizer = make_optimizer(tagger, cfg)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    tagger.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        steps = list(batches(0, torch.Generator().manual_seed(cfg.seed)))
        timer = Trainer[_Step](
            tagger,
            optimizer,
            constant,
            epochs=1,
            steps_per_epoch=len(steps),
            seed=cfg.seed,
            device=device,
            precision=precision,
            clip_norm=cfg.clip_norm,
        )
        for step in steps:  # untimed: the first step at each length
            timer.step(loss_fn, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for step in steps:
            timer.step(loss_fn, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    tagger.load_state_dict(saved)
    tagger.zero_grad(set_to_none=True)
    tagger.train(was_training)
    per_sentence = seconds / max(1, len(sample))
    fits = int(cfg.planned_minutes * 60.0 / max(per_sentence, 1e-9))
    epochs, sentences = plan_shape(fits, cfg.epochs, len(train), cfg.batch_size)
    plan = {
        "planned_minutes": cfg.planned_minutes,
        "seconds_per_sentence": per_sentence,
        "epochs": epochs,
        "train_sentences": sentences,
        "of": {"epochs": cfg.epochs, "train_sentences": len(train)},
    }
    atomic_write_text(plan_file, json.dumps(plan, indent=2) + "\n")
    return plan


def _fit(
    tagger: Tagger,
    train: Sequence[Sentence],
    val: Sequence[Sentence],
    cfg: TrainConfig,
    out_dir: Path,
    entity_types: Sequence[str],
    resume: bool,
    callbacks: Sequence[Callback],
    model_extra: dict[str, Any],
    world: World,
    device: torch.device,
    precision: str,
) -> _EpochEnd:
    """The training loop of :func:`fit` (inside the process group); its end-of-epoch state."""
    windows = tagger.encode([s.tokens for s in train])
    augment = augmentation.build(train, cfg.augment, cfg.seed)
    labels = label_ids(tagger, train)
    batches = _Batches(tagger, windows, labels, cfg.batch_size, device, augment, world)
    # With augmentation every epoch has as many copies, so as many windows unless a copy got
    # longer than a window (rare): then the step counts of the schedule and progress lines are
    # off by a batch or so, which changes nothing else.
    steps_per_epoch = math.ceil(len(batches.epoch_data(1)[0]) / cfg.batch_size)
    optimizer = make_optimizer(tagger, cfg)
    averager = None
    if cfg.average != "none":
        # After freezing and moving the model: only trainable weights are averaged, in place.
        averager = WeightAveraging(tagger, cfg.average, cfg.average_start, cfg.ema_decay)
    trainer = Trainer[_Step](
        tagger,
        optimizer,
        make_scheduler(optimizer, cfg, steps_per_epoch),
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        seed=cfg.seed,
        device=device,
        precision=precision,
        clip_norm=cfg.clip_norm,
        # The average is updated before any other callback sees the step.
        callbacks=[averager, *callbacks] if averager is not None else callbacks,
        world=world,
    )
    end = _EpochEnd(trainer, batches, val, cfg, out_dir, entity_types, model_extra, averager)
    if resume and world.main:
        recover_dir(end.checkpoint)  # killed while the checkpoint was being swapped
    if resume and (end.checkpoint / _STATE).is_file():
        end.restore()  # every rank: each needs the weights, optimizer and scheduler state
    elif world.main:
        # A fresh start: no state or best model of an earlier (killed) run may leak into it.
        discard_dir(end.checkpoint)
        discard_dir(end.pending)
    loss: nn.Module = _WeightedLoss(tagger)
    if world.distributed:
        # Built after restoring: DDP starts by copying rank 0's weights to every rank.
        ids = [device.index] if device.type == "cuda" else None
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=ids)
    if not end.stopped_early:
        trainer.fit(batches, loss, start_epoch=end.epoch, history=end.history, epoch_end=end)
    return end


def load_training_data(params: Params, lang: str) -> tuple[list[Sentence], list[Sentence]]:
    """The validated, split train and val sentences of one language, capped by params."""
    train = read_conll(split_file(params, lang, "train"), tagset=params.data.tags)
    val = read_conll(split_file(params, lang, "val"), tagset=params.data.tags)
    cfg = params.train
    if cfg.max_train_sentences:
        train = train[: cfg.max_train_sentences]
    if cfg.max_val_sentences:
        val = val[: cfg.max_val_sentences]
    return train, val


def train_model(
    params: Params,
    lang: str,
    name: str,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    world: World | None = None,
) -> FitResult:
    """Build the encoder + head of the run ``name`` from params and train it on ``lang``.

    Args:
        name: A ``train.archs`` entry: an architecture, or ``<arch>-s<seed>`` with its own seed
            (:func:`~complex_ner.core.config.parse_run`); the run folder carries the name.
        resume: Continue from the run folder's checkpoint when it exists.
        callbacks: Passed to :func:`fit` (progress lines, tracking).
        world: Passed to :func:`fit` (default: torchrun's environment).
    """
    params = params.for_run(lang, name)
    m = params.model
    # Trimmed and/or WWM-adapted per params; FileNotFoundError names the command to run.
    encoder = start_encoder(params, lang)
    train, val = load_training_data(params, lang)
    # The head's initial weights must depend on train.seed alone, not on what this process drew
    # before (a flow that validated data first, a benchmark that warmed up).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.train.seed)
        tagger = build_model(encoder, params.data.tags, m, lang)
    extra = {
        "trained_with": {
            "model": m.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
        },
        "start_encoder": encoder_label(params, lang),
        "train_sentences": len(train),
        "val_sentences": len(val),
    }
    return fit(
        tagger,
        train,
        val,
        params.train,
        run_dir(params, lang, name),
        params.data.entity_types,
        resume=resume,
        callbacks=callbacks,
        model_extra=extra,
        world=world,
    )
