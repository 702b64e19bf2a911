"""The champion decision is made on the heldout split, never on the validation split that chose
the epoch. The registry (MLflow) is replaced by a dictionary; the decision code is the real one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from complex_ner.adapters import registry, tracking
from complex_ner.app import stages
from complex_ner.core.config import Params
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import CHALLENGER, CHAMPION, RUN_FILE, run_dir, split_file
from complex_ner.domain.data import Sentence, read_conll, write_conll
from complex_ner.domain.models.tagger import Tagger
from complex_ner.engines.evaluate import evaluate_f1


class FakeRegistry:
    """Runs, versions and aliases of one language, as the registry adapter reports them."""

    def __init__(self, runs: dict[str, dict[str, float]], champion: dict[str, str] | None) -> None:
        self.runs = runs
        self.versions: dict[str, dict[str, str]] = {}
        self.aliases: dict[str, str] = {}
        if champion is not None:
            self.versions["1"] = champion
            self.aliases[CHAMPION] = "1"

    def install(self, monkeypatch: pytest.MonkeyPatch, stale: tuple[str, ...] = ()) -> None:
        """Runs in ``stale`` were evaluated on other heldout data than today's."""

        def run_summary(params: Params, rid: str) -> registry.RunSummary:
            current = tracking.eval_data_hash(params, "es", "heldout")
            tags = {"arch": "bert_crf", "lang": "es", "git_commit": "abc"}
            tags[stages.HELDOUT_HASH_TAG] = "older" if rid in stale else current
            return registry.RunSummary(rid, tags, self.runs[rid], f"models:/m-{rid}")

        def snapshot(params: Params, lang: str) -> registry.Snapshot:
            return registry.Snapshot(
                lang, "complex-ner-es", frozenset(self.versions), dict(self.aliases), None
            )

        def restore(params: Params, before: registry.Snapshot) -> None:
            self.versions = {v: t for v, t in self.versions.items() if v in before.versions}
            self.aliases = dict(before.aliases)

        def register_version(params: Params, lang: str, uri: str, tags: dict[str, str]) -> str:
            version = str(len(self.versions) + 1)
            self.versions[version] = tags
            return version

        def version_by_alias(params: Params, lang: str, alias: str) -> Any:
            v = self.aliases.get(alias)
            return None if v is None else (v, self.versions[v])

        def set_alias(params: Params, lang: str, alias: str, version: str) -> None:
            self.aliases[alias] = version

        monkeypatch.setattr(registry, "run_summary", run_summary)
        monkeypatch.setattr(registry, "register_version", register_version)
        monkeypatch.setattr(registry, "version_by_alias", version_by_alias)
        monkeypatch.setattr(registry, "set_alias", set_alias)
        monkeypatch.setattr(registry, "snapshot", snapshot)
        monkeypatch.setattr(registry, "restore", restore)


@pytest.fixture
def params(tmp_path: Path, toy_corpus: Callable[[int], list[Sentence]]) -> Params:
    p = Params.defaults(tmp_path)
    corpus = toy_corpus(20)
    write_conll(split_file(p, "es", "val"), corpus[:8])
    # Heldout: the toy sentences with every person relabelled as a company, so a tagger that
    # learned the toy corpus scores below 1 here (and 1 on val).
    relabelled = [
        Sentence(s.id, s.tokens, tuple(t.replace("PER", "CORP") for t in s.tags or ()))
        for s in corpus[8:16]
    ]
    write_conll(split_file(p, "es", "heldout"), relabelled)
    return p


def test_the_best_run_on_heldout_wins_not_the_best_on_val(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = {
        "a": {"eval_val_macro_f1": 0.9, "eval_heldout_macro_f1": 0.5},
        "b": {"eval_val_macro_f1": 0.6, "eval_heldout_macro_f1": 0.7, "eval_heldout_micro_f1": 0.8},
    }
    current = tracking.eval_data_hash(params, "es", "heldout")
    champion = {"heldout_macro_f1": repr(0.65), "heldout_data_hash": current}
    fake = FakeRegistry(runs, champion)
    fake.install(monkeypatch)
    out = stages.register_best(params, "es", ["a", "b"])
    assert out.run_id == "b" and out.heldout_macro_f1 == 0.7
    assert out.champion_f1 == 0.65 and out.alias == CHAMPION  # 0.7 > 0.65 on the same file
    tags = fake.versions[out.version]
    assert tags["heldout_macro_f1"] == repr(0.7) and tags["heldout_micro_f1"] == repr(0.8)
    assert tags["heldout_data_hash"] == current != tracking.eval_data_hash(params, "es", "val")
    assert tags["val_macro_f1"] == repr(0.6)  # kept for reference only


def test_a_run_without_a_heldout_score_cannot_be_registered(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeRegistry({"a": {"eval_val_macro_f1": 0.9}}, None).install(monkeypatch)
    with pytest.raises(LookupError, match="eval_heldout_macro_f1"):
        stages.register_best(params, "es", ["a"])


def test_a_champion_scored_on_other_data_is_rescored_on_heldout(
    params: Params, monkeypatch: pytest.MonkeyPatch, trained_tagger_dir: Path
) -> None:
    # A champion registered before: only a validation score, which says nothing about heldout.
    val_hash = tracking.eval_data_hash(params, "es", "val")
    champion = {"val_macro_f1": repr(1.0), "val_data_hash": val_hash}
    fake = FakeRegistry({"a": {"eval_heldout_macro_f1": 0.2}}, champion)
    fake.install(monkeypatch)
    monkeypatch.setattr(registry, "resolve_tagger_dir", lambda uri, p: trained_tagger_dir)
    heldout = read_conll(split_file(params, "es", "heldout"))
    expected = evaluate_f1(Tagger.load(trained_tagger_dir), heldout, params.data.entity_types, 8)
    # PER -> CORP: both score 0 (missed, spurious), LOC and GRP stay right.
    assert expected["macro"]["f1"] == pytest.approx(0.5)
    out = stages.register_best(params, "es", ["a"])
    assert out.champion_f1 == pytest.approx(0.5)  # not the stored validation 1.0
    assert out.alias == CHALLENGER


def test_a_candidate_scored_on_other_heldout_data_is_rescored(
    params: Params, monkeypatch: pytest.MonkeyPatch, trained_tagger_dir: Path
) -> None:
    # Its logged 0.9 was measured before the heldout file changed: it must not face a champion
    # measured on today's file with it.
    current = tracking.eval_data_hash(params, "es", "heldout")
    champion = {"heldout_macro_f1": repr(0.6), "heldout_data_hash": current}
    fake = FakeRegistry({"a": {"eval_heldout_macro_f1": 0.9}}, champion)
    fake.install(monkeypatch, stale=("a",))
    monkeypatch.setattr(registry, "resolve_tagger_dir", lambda uri, p: trained_tagger_dir)
    out = stages.register_best(params, "es", ["a"])
    assert out.heldout_macro_f1 == pytest.approx(0.5)  # re-scored, as in the test above
    assert out.alias == CHALLENGER and fake.aliases[CHAMPION] == "1"
    assert fake.versions[out.version]["heldout_macro_f1"] == repr(out.heldout_macro_f1)


def test_a_registration_that_fails_half_way_leaves_the_registry_as_it_was(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = tracking.eval_data_hash(params, "es", "heldout")
    champion = {"heldout_macro_f1": repr(0.1), "heldout_data_hash": current}
    fake = FakeRegistry({"a": {"eval_heldout_macro_f1": 0.9}}, champion)
    fake.install(monkeypatch)

    def set_alias_then_fail(params: Params, lang: str, alias: str, version: str) -> None:
        fake.aliases[alias] = version
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry, "set_alias", set_alias_then_fail)
    with pytest.raises(OSError, match="No space left"):
        stages.register_best(params, "es", ["a"])
    assert fake.versions == {"1": champion} and fake.aliases == {CHAMPION: "1"}


def test_of_several_bert_crf_seeds_the_best_on_val_is_the_candidate(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    archs = ("bert_linear", "bert_crf", "bert_crf-s29", "bert_crf-s41")
    p = params.model_copy(update={"train": params.train.model_copy(update={"archs": archs})})
    # bert_linear is best on val but is not BERT+CRF; bert_crf-s41 was never trained.
    for name, rid, val in (("bert_linear", "l", 0.95), ("bert_crf", "a", 0.7)):
        atomic_write_text(
            run_dir(p, "es", name) / RUN_FILE, json.dumps({"run_id": rid, "best_f1": val})
        )
    assert stages.registry_candidate(p, "es") == "a"
    atomic_write_text(
        run_dir(p, "es", "bert_crf-s29") / RUN_FILE, json.dumps({"run_id": "b", "best_f1": 0.75})
    )
    assert stages.registry_candidate(p, "es") == "b"
    # "a" would score higher on heldout: among seeds the choice is on val, never on heldout.
    runs = {"a": {"eval_heldout_macro_f1": 0.8}, "b": {"eval_heldout_macro_f1": 0.6}}
    FakeRegistry(runs, None).install(monkeypatch)
    out = stages.register_best(p, "es")
    assert out.run_id == "b" and out.heldout_macro_f1 == 0.6 and out.alias == CHAMPION
