"""Training, saving and resuming on a tiny random BERT with the real MiniLM tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from complex_ner.core.config import ARCHITECTURES, DataConfig, ModelConfig, TrainConfig
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.train import fit, over_time_budget, plan_shape, seeded_subset
from complex_ner.engines.trainer import Callback, ProgressLogger

TYPES = DataConfig().entity_types
TAGS = DataConfig().tags
ToyCorpus = Callable[[int], list[Sentence]]  # conftest.toy_corpus

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class StopAfter(Callback):
    """Interrupts a run after ``epochs`` epochs of this call (as a killed job would)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.seen = 0

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        self.seen += 1
        return self.seen >= self.epochs


@pytest.fixture
def cfg(toy_train_config: TrainConfig) -> Callable[..., TrainConfig]:
    """:func:`toy_train_config` (tests/conftest.py) with some settings changed."""
    return lambda **kw: toy_train_config.model_copy(update=kw)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_overfits_twenty_sentences(
    tiny_bert_dir: Path,
    toy_corpus: ToyCorpus,
    tmp_path: Path,
    arch: str,
    cfg: Callable[..., TrainConfig],
) -> None:
    data = toy_corpus(20)
    model = ModelConfig(arch=arch, dropout=0.0, lstm_hidden=16, fc_hidden=32)
    tagger = build_model(str(tiny_bert_dir), TAGS, model, "es")
    result = fit(tagger, data, data, cfg(), tmp_path / arch, TYPES)
    assert result.best_f1 == pytest.approx(1.0)
    assert result.model_dir is not None and (result.model_dir / "tagger.json").is_file()


def test_save_load_predict_identical(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, cfg: Callable[..., TrainConfig]
) -> None:
    data = toy_corpus(10)
    model = ModelConfig(arch="bert_bilstm_crf", lstm_hidden=8)
    tagger = build_model(str(tiny_bert_dir), TAGS, model, "es")
    fit(tagger, data, data, cfg(epochs=3), tmp_path, TYPES)
    best = Tagger.load(tmp_path / "model")
    again = Tagger.load(tmp_path / "model")
    words = [list(s.tokens) for s in data] + [["palabra"] * 300]  # a long one is windowed
    assert best.predict(words) == again.predict(words)
    assert [len(p) for p in best.predict(words)] == [len(w) for w in words]
    ids_a, marg = best.predict_ids(words[:2], with_marginals=True)
    assert marg is not None and len(marg[0]) == len(words[0])
    assert all(abs(sum(p) - 1.0) < 1e-4 for p in marg[0])


def test_resume_equals_uninterrupted(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, cfg: Callable[..., TrainConfig]
) -> None:
    data = toy_corpus(12)
    c = cfg(epochs=3, schedule="cyclic", patience=10)

    def fresh() -> Tagger:
        torch.manual_seed(0)
        return build_model(
            str(tiny_bert_dir), TAGS, ModelConfig(arch="bert_crf", dropout=0.1), "es"
        )

    full = fit(fresh(), data, data, c, tmp_path / "a", TYPES)
    part = fit(fresh(), data, data, c, tmp_path / "b", TYPES, callbacks=[StopAfter(1)])
    assert len(part.history) == 1
    done = fit(fresh(), data, data, c, tmp_path / "b", TYPES, resume=True)
    assert [h["loss"] for h in done.history] == [h["loss"] for h in full.history]
    assert not (tmp_path / "a" / "checkpoint").exists()  # removed once a run has finished
    a = Tagger.load(tmp_path / "a" / "model").state_dict()
    b = Tagger.load(tmp_path / "b" / "model").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_initial_head_depends_on_seed_alone(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import complex_ner.engines.train as train_module
    from complex_ner.core.config import Params

    heads: list[dict[str, torch.Tensor]] = []

    def capture(tagger: Tagger, *args: object, **kwargs: object) -> None:
        heads.append({k: v.clone() for k, v in tagger.head.state_dict().items()})

    monkeypatch.setattr(train_module, "fit", capture)
    monkeypatch.setattr(
        train_module, "load_training_data", lambda p, lang: (toy_corpus(20), toy_corpus(2))
    )
    monkeypatch.setattr(train_module, "start_encoder", lambda params, lang: str(tiny_bert_dir))
    params = Params(root=tmp_path)
    before = torch.random.get_rng_state()
    train_module.train_model(params, "es", "bert_linear")
    torch.rand(1000)  # whatever the process drew in between must not matter
    train_module.train_model(params, "es", "bert_linear")
    assert len(heads) == 2
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    torch.random.set_rng_state(before)
    train_module.train_model(params, "es", "bert_linear")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone


def test_patience_stops_early_and_a_resume_does_not_continue(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, cfg: Callable[..., TrainConfig]
) -> None:
    data = toy_corpus(8)
    # A rate of zero never improves on the first epoch's F1: patience 2 stops after epoch 3.
    c = cfg(epochs=6, lr_encoder=1e-12, lr_min=1e-12, lr_head=1e-12, patience=2)
    c = c.model_copy(update={"keep_checkpoint": True})
    model = ModelConfig(arch="bert_linear", dropout=0.0)
    result = fit(build_model(str(tiny_bert_dir), TAGS, model, "es"), data, data, c, tmp_path, TYPES)
    assert result.stopped_early and result.best_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    again = fit(
        build_model(str(tiny_bert_dir), TAGS, model, "es"),
        data,
        data,
        c,
        tmp_path,
        TYPES,
        resume=True,
    )
    assert again.stopped_early and [h["epoch"] for h in again.history] == [1, 2, 3]
    saved = json.loads((tmp_path / "history.json").read_text(encoding="utf-8"))
    assert [h["epoch"] for h in saved] == [1, 2, 3]


def test_time_budget_rule_projects_one_more_mean_epoch() -> None:
    epochs = [{"epoch_seconds": 50.0, "eval_seconds": 10.0}] * 2  # 120 s so far, 60 s each
    assert not over_time_budget(epochs, 3.0)  # 120 + 60 = 180 s: the third epoch still fits
    assert over_time_budget(epochs, 2.9)
    assert not over_time_budget(epochs, 0.0)  # 0: no budget
    assert not over_time_budget([], 0.001)  # nothing measured yet: the first epoch always runs


@pytest.mark.parametrize(
    ("minutes", "epochs", "epochs_run"),
    [(1e-6, 3, 1), (600.0, 3, 3), (1e-6, 1, 1)],  # the last: over budget, but nothing was cut
)
def test_time_budget_ends_like_early_stopping_with_the_best_model_saved(
    tiny_bert_dir: Path,
    toy_corpus: ToyCorpus,
    tmp_path: Path,
    cfg: Callable[..., TrainConfig],
    minutes: float,
    epochs: int,
    epochs_run: int,
) -> None:
    data = toy_corpus(8)
    c = cfg(epochs=epochs, time_budget_minutes=minutes)
    model = ModelConfig(arch="bert_linear", dropout=0.0)
    result = fit(build_model(str(tiny_bert_dir), TAGS, model, "es"), data, data, c, tmp_path, TYPES)
    assert [h["epoch"] for h in result.history] == list(range(1, epochs_run + 1))
    assert result.model_dir is not None and (result.model_dir / "model.onnx").is_file()
    cut = epochs_run < epochs
    stopped = [h.get("stopped_by") for h in result.history]
    assert stopped == [None] * (epochs_run - 1) + ["time_budget" if cut else None]
    assert result.stopped_early == cut


def test_callbacks_see_validation_records_and_progress_lines(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, cfg: Callable[..., TrainConfig]
) -> None:
    data = toy_corpus(8)
    records: list[dict[str, Any]] = []
    lines: list[str] = []

    class Records(Callback):
        def on_epoch_end(self, record: dict[str, Any]) -> None:
            records.append(record)

    model = ModelConfig(arch="bert_crf", dropout=0.0)
    tagger = build_model(str(tiny_bert_dir), TAGS, model, "es")
    callbacks = [ProgressLogger("es bert_crf", lines.append), Records()]
    result = fit(tagger, data, data, cfg(epochs=2), tmp_path, TYPES, callbacks=callbacks)
    assert records == result.history
    for record in records:
        assert {"loss", "lr", "val_macro_f1", "val_micro_f1", "val_f1_PER", "pad_share"} <= set(
            record
        )
    # One line per epoch (steps are quicker than the 30 s between step lines).
    assert len(lines) == 2
    assert lines[0].startswith("es bert_crf epoch 1/2 step 1/2 loss ")
    assert "val-F1 " in lines[0] and "(best)" in lines[0]
    assert lines[1].startswith("es bert_crf epoch 2/2 step 2/2 ")


def test_train_model_trains_each_language_with_its_own_changes(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import complex_ner.engines.train as train_module
    from complex_ner.core.config import Params

    seen: dict[str, TrainConfig] = {}

    def capture(
        tagger: Tagger, train: object, val: object, cfg: TrainConfig, *a: object, **kw: Any
    ) -> None:
        seen[tagger.spec.lang] = cfg
        assert kw["model_extra"]["trained_with"]["train"]["epochs"] == cfg.epochs

    monkeypatch.setattr(train_module, "fit", capture)
    monkeypatch.setattr(
        train_module, "load_training_data", lambda p, lang: (toy_corpus(20), toy_corpus(2))
    )
    monkeypatch.setattr(train_module, "start_encoder", lambda params, lang: str(tiny_bert_dir))
    base = Params(root=tmp_path)
    train = TrainConfig.model_validate(
        base.train.model_dump() | {"epochs": 1, "by_language": {"zh": {"epochs": 2}}}
    )
    params = base.model_copy(update={"train": train})
    train_module.train_model(params, "es", "bert_crf")
    train_module.train_model(params, "zh", "bert_crf")
    assert (seen["es"].epochs, seen["zh"].epochs) == (1, 2)


def test_a_run_with_its_own_seed_trains_as_that_seed_in_its_own_folder(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import complex_ner.engines.train as train_module
    from complex_ner.core.config import Params

    seen: list[dict[str, Any]] = []

    def capture(
        tagger: Tagger,
        train: object,
        val: object,
        cfg: TrainConfig,
        out: Path,
        *a: object,
        **kw: Any,
    ) -> None:
        head = {k: v.clone() for k, v in tagger.head.state_dict().items()}
        seen.append({"cfg": cfg, "out": out, "head": head, "extra": kw["model_extra"]})

    monkeypatch.setattr(train_module, "fit", capture)
    monkeypatch.setattr(
        train_module, "load_training_data", lambda p, lang: (toy_corpus(20), toy_corpus(2))
    )
    monkeypatch.setattr(train_module, "start_encoder", lambda params, lang: str(tiny_bert_dir))
    params = Params(root=tmp_path)  # train.seed 13
    reseeded = params.model_copy(update={"train": params.train.model_copy(update={"seed": 29})})
    train_module.train_model(params, "es", "bert_crf")
    train_module.train_model(params, "es", "bert_crf-s29")
    train_module.train_model(reseeded, "es", "bert_crf")
    plain, own, same = seen
    assert own["out"] == tmp_path / "models/trained/es/bert_crf-s29"
    assert plain["out"] == same["out"] == tmp_path / "models/trained/es/bert_crf"
    assert (plain["cfg"].seed, own["cfg"].seed) == (13, 29) and own["cfg"] == same["cfg"]
    # What the saved model records it was trained with: the run's architecture and seed.
    assert own["extra"] == same["extra"]
    assert own["extra"]["trained_with"]["model"]["arch"] == "bert_crf"
    assert own["extra"]["trained_with"]["train"]["seed"] == 29
    assert all(torch.equal(own["head"][k], same["head"][k]) for k in own["head"])
    assert not all(torch.equal(own["head"][k], plain["head"][k]) for k in own["head"])


@pytest.mark.parametrize(
    ("fits", "expected"),
    [
        (10_000, (2, 100)),  # the whole plan fits
        (200, (2, 100)),
        (150, (2, 75)),  # fewer sentences, same epochs, while an epoch keeps half of them
        (99, (1, 99)),  # below half: one epoch over as many as fit
        (3, (1, 8)),  # never less than one batch
    ],
)
def test_the_plan_keeps_epochs_while_half_the_sentences_fit(
    fits: int, expected: tuple[int, int]
) -> None:
    assert plan_shape(fits, epochs=2, sentences=100, batch_size=8) == expected


def test_seeded_subset_keeps_the_order_and_depends_on_the_seed(toy_corpus: ToyCorpus) -> None:
    corpus = toy_corpus(20)
    a, b = seeded_subset(corpus, 7, 1), seeded_subset(corpus, 7, 2)
    assert len(a) == 7 and a != b
    assert [corpus.index(s) for s in a] == sorted(corpus.index(s) for s in a)
    assert seeded_subset(corpus, 7, 1) == a and seeded_subset(corpus, 30, 1) == corpus


def test_a_plan_that_fits_changes_nothing_and_a_tight_one_trains_less(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    corpus = toy_corpus(20)

    def run(name: str, **kw: Any) -> tuple[Any, Tagger]:
        torch.manual_seed(0)
        tagger = build_model(str(tiny_bert_dir), TAGS, ModelConfig(dropout=0.1), lang="es")
        result = fit(tagger, corpus, corpus[:6], cfg(epochs=2, **kw), tmp_path / name, TYPES)
        return result, tagger

    plain, plain_tagger = run("plain")
    roomy, roomy_tagger = run("roomy", planned_minutes=600.0)
    plan = json.loads((tmp_path / "roomy" / "budget_plan.json").read_text(encoding="utf-8"))
    assert (plan["epochs"], plan["train_sentences"]) == (2, 20) and plan["seconds_per_sentence"] > 0
    # Timing the plan drew no random numbers and changed no weight: the same run.
    assert [r["val_macro_f1"] for r in roomy.history] == [r["val_macro_f1"] for r in plain.history]
    for a, b in zip(plain_tagger.parameters(), roomy_tagger.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = json.loads((roomy.model_dir / "tagger.json").read_text(encoding="utf-8"))
    assert saved["budget_plan"] == plan
    tight, _ = run("tight", planned_minutes=1e-6)
    plan = json.loads((tmp_path / "tight" / "budget_plan.json").read_text(encoding="utf-8"))
    assert (plan["epochs"], plan["train_sentences"]) == (1, 8)  # one epoch, one batch of 8
    assert len(tight.history) == 1 and tight.model_dir is not None
    run("tight")  # the same folder without a plan: the earlier plan no longer describes it
    assert not (tmp_path / "tight" / "budget_plan.json").exists()


def test_the_train_command_says_when_the_plan_cut_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import complex_ner.app.stages as stages
    from complex_ner.cli import app
    from complex_ner.core.config import load_params
    from complex_ner.core.paths import BUDGET_PLAN_FILE, run_dir

    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n", encoding="utf-8")
    folder = run_dir(load_params(params_file), "es", "bert_crf")
    run = SimpleNamespace(best_f1=0.33, best_epoch=1, model_dir=folder / "model", run_id="r1")
    monkeypatch.setattr(stages, "train", lambda *args, **kwargs: run)
    args = ["train", "--lang", "es", "-p", str(params_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "planned_minutes" not in result.output  # no plan file: no plan
    plan = {
        "planned_minutes": 5.0,
        "seconds_per_sentence": 0.166,
        "epochs": 1,
        "train_sentences": 1805,
        "of": {"epochs": 1, "train_sentences": 12240},
    }
    folder.mkdir(parents=True)
    (folder / BUDGET_PLAN_FILE).write_text(json.dumps(plan), encoding="utf-8")
    result = CliRunner().invoke(app, args)
    assert "train.planned_minutes 5 allowed 1 epoch(s) over 1,805 of 12,240 sentences" in (
        result.output
    )
    plan.update(train_sentences=12240)  # a plan that fitted: nothing to say
    (folder / BUDGET_PLAN_FILE).write_text(json.dumps(plan), encoding="utf-8")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "planned_minutes" not in result.output


def test_the_train_command_says_when_the_time_budget_cut_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import complex_ner.app.stages as stages
    from complex_ner.cli import app
    from complex_ner.core.config import load_params
    from complex_ner.core.paths import HISTORY_FILE, run_dir

    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "train: {epochs: 3, time_budget_minutes: 10,\n"
        "        by_language: {zh: {time_budget_minutes: 11.5}}}\n",
        encoding="utf-8",
    )
    folder = run_dir(load_params(params_file), "zh", "bert_crf")
    run = SimpleNamespace(best_f1=0.5, best_epoch=2, model_dir=folder / "model", run_id="r1")
    monkeypatch.setattr(stages, "train", lambda *args, **kwargs: run)
    args = ["train", "--lang", "zh", "-p", str(params_file)]
    folder.mkdir(parents=True)
    history = [{"epoch": 1}, {"epoch": 2, "stopped_by": "time_budget"}]
    (folder / HISTORY_FILE).write_text(json.dumps(history), encoding="utf-8")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "zh bert_crf: train.time_budget_minutes 11.5 ended the run after epoch 2 of 3" in (
        result.output
    )
    del history[-1]["stopped_by"]  # every epoch ran: nothing to say
    (folder / HISTORY_FILE).write_text(json.dumps(history), encoding="utf-8")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "time_budget_minutes" not in result.output


def test_the_train_command_takes_a_run_name_and_names_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import complex_ner.app.stages as stages
    from complex_ner.cli import app

    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n", encoding="utf-8")
    calls: list[str] = []

    def train(params: object, lang: str, arch: str, **kwargs: object) -> SimpleNamespace:
        calls.append(arch)
        return SimpleNamespace(best_f1=0.5, best_epoch=1, model_dir=tmp_path, run_id="r1")

    monkeypatch.setattr(stages, "train", train)
    args = ["train", "--lang", "es", "-p", str(params_file), "--arch"]
    result = CliRunner().invoke(app, [*args, "bert_crf-s29"])
    assert result.exit_code == 0, result.output
    assert calls == ["bert_crf-s29"] and "es bert_crf-s29: best validation" in result.output
    result = CliRunner().invoke(app, [*args, "bert_crf_s29"])
    assert result.exit_code == 2 and calls == ["bert_crf-s29"]
    assert "--arch: 'bert_crf_s29' is neither an architecture" in result.output


def test_frozen_lower_layers_stay_unchanged_and_the_rest_learns(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    corpus = toy_corpus(12)
    tagger = build_model(str(tiny_bert_dir), TAGS, ModelConfig(dropout=0.0), lang="es")
    before = {k: v.clone() for k, v in tagger.encoder.state_dict().items()}
    fit(tagger, corpus, corpus, cfg(epochs=2, freeze_layers=1), tmp_path, TYPES)
    after = Tagger.load(tmp_path / "model").encoder.state_dict()
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in before if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))


def test_freezing_more_blocks_than_the_encoder_has_is_a_clear_error(
    tiny_bert_dir: Path, toy_corpus: ToyCorpus, cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    from complex_ner.domain.encoders import freeze_lower_layers

    tagger = build_model(str(tiny_bert_dir), TAGS, ModelConfig(), lang="es")
    with pytest.raises(ValueError, match="train.freeze_layers: 3 exceeds the encoder's 2"):
        fit(tagger, toy_corpus(4), toy_corpus(4), cfg(freeze_layers=3), tmp_path, TYPES)
    with pytest.raises(ValueError, match="Linear has no encoder.layer blocks"):
        freeze_lower_layers(torch.nn.Linear(2, 2), 1)
    freeze_lower_layers(torch.nn.Linear(2, 2), 0)  # nothing to freeze: nothing asked of it
