"""Fine-tuning: Adam(W), cyclic or linear LR, early stopping on validation macro-F1, resumable.

Each epoch re-seeds torch from ``(seed, epoch)`` and shuffles length buckets with a generator
seeded the same way, so a run resumed from its checkpoint makes exactly the updates an
uninterrupted run makes (on CPU).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from complex_ner.core.config import Params, TrainConfig
from complex_ner.core.device import autocast_context, pick_device, pick_precision
from complex_ner.core.io import atomic_write_text, replace_dir
from complex_ner.core.paths import BEST_DIR, CHECKPOINT_DIR, HISTORY_FILE, run_dir
from complex_ner.domain.alignment import collate
from complex_ner.domain.data import Sentence, read_conll
from complex_ner.domain.models.tagger import Tagger, build_model, iter_batches

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    """What a training run produced."""

    best_f1: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    model_dir: Path | None = None
    stopped_early: bool = False


def make_optimizer(tagger: Tagger, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with one rate for the encoder and another for the head and CRF."""

    def groups(module: torch.nn.Module, lr: float) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            # Biases and norm scales are not regularised (as in BERT's recipe).
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        return [
            {"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    param_groups = groups(tagger.encoder, cfg.lr_encoder) + groups(tagger.head, cfg.lr_head)
    return torch.optim.AdamW([g for g in param_groups if g["params"]])


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cyclic (one triangle per epoch, lr_min to the group's rate), linear or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cyclic":
        peaks = [g["lr"] for g in optimizer.param_groups]
        floor = cfg.lr_min / cfg.lr_encoder
        return torch.optim.lr_scheduler.CyclicLR(
            optimizer,
            base_lr=[p * floor for p in peaks],
            max_lr=peaks,
            step_size_up=max(1, steps_per_epoch // 2),
            mode="triangular",
            cycle_momentum=False,
        )
    if cfg.schedule == "linear":
        warmup = int(total * cfg.warmup_fraction)
        floor = cfg.lr_min / cfg.lr_encoder

        def factor(step: int) -> float:
            if step < warmup:
                return max(floor, (step + 1) / warmup)
            return max(floor, 1.0 - (step - warmup) / max(1, total - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
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


def evaluate_f1(
    tagger: Tagger, sentences: Sequence[Sentence], entity_types: Sequence[str], batch_size: int
) -> dict[str, Any]:
    """Entity-level scores of the tagger on labelled sentences."""
    from complex_ner.domain.metrics import entity_scores

    pred = tagger.predict([s.tokens for s in sentences], batch_size=batch_size)
    gold = [list(s.tags or ()) for s in sentences]
    return entity_scores(gold, pred, entity_types)


def _save_checkpoint(
    folder: Path,
    tagger: Tagger,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()}
        save_file(weights, str(tmp / "weights.safetensors"))
        # Optimizer state is tensors and numbers only; it is read back with weights_only=True.
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_checkpoint(
    folder: Path, tagger: Tagger, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    from safetensors.torch import load_file

    tagger.load_state_dict(load_file(str(folder / "weights.safetensors")))
    opt = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def fit(
    tagger: Tagger,
    train: Sequence[Sentence],
    val: Sequence[Sentence],
    cfg: TrainConfig,
    out_dir: str | Path,
    entity_types: Sequence[str],
    *,
    resume: bool = False,
    stop_after: int | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    model_extra: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``tagger`` on ``train``, keep the best model on ``val`` under ``out_dir/model``.

    Args:
        resume: Continue from ``out_dir/checkpoint`` when it exists.
        stop_after: Stop after this many epochs in this call (to simulate an interruption).
        on_epoch_end: Called with each epoch's metrics (MLflow logging hooks in here).
        model_extra: Extra JSON written into the saved model's ``tagger.json``.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    device = pick_device(cfg.device)
    precision = pick_precision(cfg.precision, device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.freeze_embeddings:
        emb = tagger.encoder.get_input_embeddings()
        emb.weight.requires_grad_(False)
    tagger.to(device)

    windows = tagger.encode([s.tokens for s in train])
    labels = label_ids(tagger, train)
    steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
    optimizer = make_optimizer(tagger, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    state: dict[str, Any] = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0}
    history: list[dict[str, Any]] = []
    ckpt = out_dir / CHECKPOINT_DIR
    if resume and (ckpt / "state.json").is_file():
        state = _load_checkpoint(ckpt, tagger, optimizer, scheduler)
        history = state.pop("history", [])
    elif out_dir.exists() and not resume:
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)

    run_epochs = 0
    stopped_early = state.get("stopped_early", False)
    while state["epoch"] < cfg.epochs and not stopped_early:
        if stop_after is not None and run_epochs >= stop_after:
            break
        epoch = state["epoch"] + 1
        torch.manual_seed(cfg.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        tagger.train()
        t0 = time.perf_counter()
        total_loss, real, padded, n_batches = 0.0, 0, 0, 0
        batches = list(iter_batches(windows, cfg.batch_size, gen))
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for idx in bar:
            batch = collate([windows[i] for i in idx], tagger.pad_id, labels).to(device)
            real += int(batch.attention_mask.sum())
            padded += batch.attention_mask.numel()
            with autocast_context(device, precision):
                loss = tagger.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(tagger.parameters(), cfg.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += float(loss.detach())
            n_batches += 1
            bar.set_postfix(
                loss=f"{float(loss.detach()):.3f}", val_f1=f"{max(state['best_f1'], 0):.3f}"
            )
        train_seconds = time.perf_counter() - t0
        scores = evaluate_f1(tagger, val, entity_types, cfg.batch_size * 2)
        record = {
            "epoch": epoch,
            "loss": total_loss / max(1, n_batches),
            "val_macro_f1": scores["macro"]["f1"],
            "val_micro_f1": scores["micro"]["f1"],
            **{f"val_f1_{t}": v["f1"] for t, v in scores["per_type"].items()},
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds,
            "pad_share": 1.0 - real / max(1, padded),
            "tokens_per_second": real / max(1e-9, train_seconds),
        }
        history.append(record)
        state["epoch"] = epoch
        if record["val_macro_f1"] > state["best_f1"]:
            state.update(best_f1=record["val_macro_f1"], best_epoch=epoch, bad_epochs=0)
            tagger.save(
                out_dir / BEST_DIR,
                extra={"best_epoch": epoch, "val_scores": scores, **(model_extra or {})},
            )
        else:
            state["bad_epochs"] += 1
            stopped_early = state["bad_epochs"] >= cfg.patience
        state["stopped_early"] = stopped_early
        _save_checkpoint(ckpt, tagger, optimizer, scheduler, {**state, "history": history})
        atomic_write_text(out_dir / HISTORY_FILE, json.dumps(history, indent=2) + "\n")
        if progress:
            print(
                f"epoch {epoch}: loss {record['loss']:.4f}  "
                f"val macro-F1 {record['val_macro_f1']:.4f}  "
                f"({train_seconds:.0f}s, pad {record['pad_share']:.1%})",
                flush=True,
            )
        if on_epoch_end is not None:
            on_epoch_end(record)
        run_epochs += 1
    finished = state["epoch"] >= cfg.epochs or stopped_early
    if finished and not cfg.keep_checkpoint:
        # The checkpoint (weights plus optimizer state, ~3x the model) only serves --resume.
        shutil.rmtree(ckpt, ignore_errors=True)
    return FitResult(
        best_f1=state["best_f1"],
        best_epoch=state["best_epoch"],
        history=history,
        model_dir=out_dir / BEST_DIR if state["best_epoch"] else None,
        stopped_early=stopped_early,
    )


def load_training_data(params: Params, lang: str) -> tuple[list[Sentence], list[Sentence]]:
    """The validated, split train and val sentences of one language, capped by params."""
    base = params.path(params.split.processed_dir) / lang
    train = read_conll(base / "train.conll", tagset=params.data.tags)
    val = read_conll(base / "val.conll", tagset=params.data.tags)
    cfg = params.train
    if cfg.max_train_sentences:
        train = train[: cfg.max_train_sentences]
    if cfg.max_val_sentences:
        val = val[: cfg.max_val_sentences]
    return train, val


def _build(params: Params, encoder: str, lang: str, arch: str) -> Tagger:
    m = params.model
    return build_model(
        encoder,
        params.data.tags,
        arch,
        dropout=m.dropout,
        lstm_hidden=m.lstm_hidden,
        fc_hidden=m.fc_hidden,
        max_length=m.max_length,
        stride=m.stride,
        label_piece=m.piece_for(lang),
        join=m.join,
        lang=lang,
    )


def train_model(
    params: Params,
    lang: str,
    arch: str,
    *,
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> FitResult:
    """Build the encoder + ``arch`` head from params and train it on ``lang``."""
    from complex_ner.domain.encoders import resolve_encoder

    m = params.model
    # With WWM pretraining enabled for this language, start from its adapted encoder.
    pretrained = params.pretrain.enabled and lang in params.pretrain.languages
    if pretrained:
        from complex_ner.engines.pretrain import pretrained_encoder

        encoder = pretrained_encoder(params, lang)  # FileNotFoundError names the command
    else:
        encoder = resolve_encoder(m.encoder, params.root)
    train, val = load_training_data(params, lang)
    # The head's initial weights must depend on train.seed alone, not on what this process drew
    # before (a flow that validated data first, a benchmark that warmed up).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.train.seed)
        tagger = _build(params, encoder, lang, arch)
    extra = {
        "trained_with": {"model": vars(m) | {"arch": arch}, "train": vars(params.train)},
        "pretrained_encoder": f"{params.pretrain.output_dir}/{lang}" if pretrained else None,
        "train_sentences": len(train),
        "val_sentences": len(val),
    }
    return fit(
        tagger,
        train,
        val,
        params.train,
        run_dir(params, lang, arch),
        params.data.entity_types,
        resume=resume,
        on_epoch_end=on_epoch_end,
        progress=progress,
        model_extra=json.loads(json.dumps(extra, default=list)),
    )
