"""Ensembles of saved taggers: averaged marginals, BIO-constrained decoding against brute force."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from benchmarks import ensemble as ensemble_bench

from complex_ner.core.bio import allowed_after, entity_spans, tag_set
from complex_ner.core.config import DataConfig, ModelConfig
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.ensemble import (
    TaggerEnsemble,
    decode_marginals,
    majority_spans,
    tagger_marginals,
)
from complex_ner.domain.models.tagger import Tagger, build_model

TAGS = tag_set(["PER", "LOC"])


def _valid(path: tuple[int, ...], tags: tuple[str, ...]) -> bool:
    previous = None
    for i in path:
        if not allowed_after(previous, tags[i]):
            return False
        previous = tags[i]
    return True


def _brute_force(marginals: torch.Tensor, tags: tuple[str, ...]) -> list[int]:
    best, best_score = None, -math.inf
    for path in itertools.product(range(len(tags)), repeat=len(marginals)):
        if not _valid(path, tags):
            continue
        score = sum(math.log(max(float(marginals[k, t]), 1e-12)) for k, t in enumerate(path))
        if score > best_score:
            best, best_score = list(path), score
    assert best is not None
    return best


def test_decode_marginals_matches_brute_force_over_valid_paths() -> None:
    gen = torch.Generator().manual_seed(0)
    # Lengths out of order and an empty sentence: batching must put every path back in place.
    lengths = [3, 1, 0, 4, 2, 3, 1]
    marginals = [torch.softmax(torch.randn(n, len(TAGS), generator=gen) * 3, -1) for n in lengths]
    # An I- tag that is the most likely one everywhere must not open a path or follow O.
    marginals.append(torch.tensor([[0.1, 0.05, 0.6, 0.1, 0.15]] * 2))
    got = decode_marginals(marginals, TAGS, batch_size=3)
    assert got == [_brute_force(m, TAGS) if len(m) else [] for m in marginals]
    assert got[-1] != [2, 2]


def test_decode_marginals_names_a_sentence_of_the_wrong_shape() -> None:
    good = torch.full((2, len(TAGS)), 1 / len(TAGS))
    with pytest.raises(ValueError, match=r"sentence 1: marginals must have shape \(words, 5\)"):
        decode_marginals([good, torch.ones(2, 3)], TAGS)


def test_majority_spans_keeps_the_entities_most_members_predicted() -> None:
    a = ["B-PER", "I-PER", "O", "B-LOC", "O"]
    b = ["B-PER", "I-PER", "O", "O", "B-LOC"]
    c = ["B-PER", "O", "O", "B-LOC", "O"]
    # PER(0,2): a and b; LOC(3,4): a and c; LOC(4,5): b; PER(0,1): c.
    assert majority_spans([a, b, c]) == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    # Of two members, what both predicted; of one, its own entities (repaired stray I- dropped).
    assert majority_spans([a, b]) == ["B-PER", "I-PER", "O", "O", "O"]
    assert majority_spans([["O", "I-LOC", "B-CW"]]) == ["O", "O", "B-CW"]


def test_majority_spans_of_random_members_never_overlap_and_match_counting() -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        n, members = 6, int(torch.randint(1, 6, (1,), generator=gen))
        preds = [
            [TAGS[int(i)] for i in torch.randint(len(TAGS), (n,), generator=gen)]
            for _ in range(members)
        ]
        got = entity_spans(majority_spans(preds))
        counts: dict[tuple[str, int, int], int] = {}
        for p in preds:
            for span in entity_spans(p):
                counts[span] = counts.get(span, 0) + 1
        assert got == sorted((s for s, k in counts.items() if 2 * k > members), key=lambda s: s[1])


def test_majority_spans_refuses_ragged_or_missing_members() -> None:
    with pytest.raises(ValueError, match=r"different lengths: \[2, 1\]"):
        majority_spans([["O", "O"], ["O"]])
    with pytest.raises(ValueError, match="at least one"):
        majority_spans([])


@pytest.fixture(scope="module")
def two_taggers(tiny_bert_dir: Path) -> list[Tagger]:
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(build_model(str(tiny_bert_dir), DataConfig().tags, ModelConfig(), lang="es"))
    return [t.eval() for t in out]


def test_ensemble_averages_its_members_marginals_and_decodes_them(
    two_taggers: list[Tagger], toy_corpus: Callable[[int], list[Sentence]], one_thread: None
) -> None:
    sentences = [s.tokens for s in toy_corpus(6)]
    ens = TaggerEnsemble(two_taggers, rule="mean")
    mean = ens.marginals(sentences, batch_size=4)
    (_, first), (_, second) = (tagger_marginals(t, sentences, 4) for t in two_taggers)
    assert [tuple(m.shape) for m in mean] == [(len(s), len(ens.tags)) for s in sentences]
    for m, a, b in zip(mean, first, second, strict=True):
        torch.testing.assert_close(m, (a + b) / 2)
        torch.testing.assert_close(m.sum(-1), torch.ones(len(m), dtype=m.dtype))
    ids = decode_marginals(mean, ens.tags)
    assert ens.predict(sentences, batch_size=4) == [[ens.tags[i] for i in row] for row in ids]
    # The two random members disagree, so the mean is not just one of them.
    assert any(not torch.allclose(a, b) for a, b in zip(first, second, strict=True))


def test_a_trained_tagger_alone_keeps_its_own_tags_by_vote(
    trained_tagger_dir: Path, toy_corpus: Callable[[int], list[Sentence]], one_thread: None
) -> None:
    # Not so by the mean rule: the best path by marginals need not be the CRF's Viterbi path.
    corpus = toy_corpus(20)
    ens = TaggerEnsemble.load([trained_tagger_dir])
    assert ens.names == [str(trained_tagger_dir)]
    assert ens.predict([s.tokens for s in corpus]) == [list(s.tags or ()) for s in corpus]


def test_the_vote_rule_keeps_what_most_members_tagged(
    two_taggers: list[Tagger], toy_corpus: Callable[[int], list[Sentence]], one_thread: None
) -> None:
    sentences = [s.tokens for s in toy_corpus(6)]
    members = [*two_taggers, two_taggers[0]]
    first = two_taggers[0].predict(sentences)
    # Two of three members are the same tagger: its entities always win the vote.
    assert TaggerEnsemble(members).predict(sentences) == [majority_spans([p]) for p in first]


def test_members_with_other_tags_are_refused_by_name(
    two_taggers: list[Tagger], tiny_bert_dir: Path
) -> None:
    other = build_model(str(tiny_bert_dir), TAGS, ModelConfig(), lang="es")
    with pytest.raises(ValueError, match=r"^b: tags \['O', 'B-PER'"):
        TaggerEnsemble([two_taggers[0], other], names=["a", "b"])
    with pytest.raises(ValueError, match="at least one tagger"):
        TaggerEnsemble([])
    with pytest.raises(ValueError, match="rule must be one of vote, mean, got 'max'"):
        TaggerEnsemble(two_taggers, rule="max")


def test_benchmark_quick_scores_each_member_and_the_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    path = tmp_path / "ensemble.json"
    record = ensemble_bench.main(["--quick", "--threads", "1", "--json", str(path)])
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["table"] == record["table"] and record["table"] in capsys.readouterr().out
    labels = set(record["scores"])
    assert labels == {
        "random0 (own decoding)",
        "random0 (from its marginals)",
        "random1 (own decoding)",
        "random1 (from its marginals)",
        "random0 + random1 (mean marginals)",
        "random0 + random1 (span vote)",
    }
    val = {k: v["val"]["macro"]["f1"] for k, v in record["scores"].items()}
    chosen = record["chosen"]
    assert not chosen.endswith("(from its marginals)")
    assert val[chosen] == max(v for k, v in val.items() if not k.endswith("(from its marginals)"))
