"""WWM pre-training that can help: the head warm-up, the corpus and the held-back scores.

Tiny random BERTs with the MiniLM tokenizer (``tiny_bert_dir``) and synthetic sentences; the
masking itself is tested in ``test_pretrain.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from complex_ner.core.config import Params, PretrainConfig, load_params
from complex_ner.domain.data import Sentence, write_conll
from complex_ner.domain.encoders import load_tokenizer
from complex_ner.domain.wwm import (
    IGNORE_INDEX,
    MaskingVocab,
    MlmScore,
    encode_examples,
    eval_mask,
    head_parameters,
    init_fresh_head,
    load_mlm_model,
    piece_counts,
    score_predictions,
)
from complex_ner.engines.pretrain import (
    build_corpus,
    corpus_sentences,
    eval_batches,
    evaluate_mlm,
    hold_back,
    pretrain_encoder,
    warm_up_head,
)
from complex_ner.engines.trainer import Callback, StepInfo

Sample = Callable[[str, int], tuple[list[list[str]], list[list[str]]]]  # conftest.conll_sample
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _pattern_sentences(n: int) -> list[list[str]]:
    """Distinct sentences with fixed words in fixed places: learnable from a few MLM steps."""
    names = ["ana", "luis", "marta", "pedro", "sofia"]
    places = ["lima", "quito", "madrid", "bogota", "cusco"]
    bands = [["the", "beatles"], ["los", "prisioneros"], ["soda", "stereo"]]
    return [
        [names[i % 5], "vive", "en", places[i // 5 % 5], "y", "escucha", *bands[i // 25 % 3]]
        for i in range(n)
    ]


def _project(
    tmp_path: Path, encoder: Path, splits: dict[str, list[list[str]]], **pretrain: Any
) -> Params:
    processed = tmp_path / "data" / "processed" / "es"
    for split, sentences in splits.items():
        rows = [
            Sentence(id=f"{split}{i}", tokens=tuple(t), tags=("O",) * len(t))
            for i, t in enumerate(sentences)
        ]
        write_conll(processed / f"{split}.conll", rows)
    config = {
        "data": {"languages": ["es"]},
        "model": {"encoder": str(encoder)},
        "train": {"device": "cpu"},
        "pretrain": {"enabled": True, "languages": ["es"], "batch_size": 8, **pretrain},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_params(path)


class _Steps(Callback):
    def __init__(self) -> None:
        self.steps: list[StepInfo] = []

    def on_step_end(self, step: StepInfo) -> None:
        self.steps.append(step)


# --------------------------------------------------------------------------- corpus


def test_corpus_is_train_and_val_text_never_heldout(
    tmp_path: Path, tiny_bert_dir: Path, conll_sample: Sample
) -> None:
    sentences, _ = conll_sample("es", 40)
    train, val = sentences[:20], [*sentences[20:30], sentences[0]]  # one repeat of train
    heldout = [["zzheldout", *s] for s in sentences[30:]]
    extra = tmp_path / "extra.txt"
    extra.write_text("El Museo del Prado.\n\nOtra línea\n", encoding="utf-8")
    params = _project(
        tmp_path,
        tiny_bert_dir,
        {"train": train, "val": val, "heldout": heldout},
        extra_text_files=[str(extra)],
    )
    got, stats = corpus_sentences(params, "es")
    assert got[:30] == train + val[:10]
    assert got[30:] == [["el", "museo", "del", "prado", "."], ["otra", "línea"]]  # lowercased
    assert not any("zzheldout" in s for s in got)
    assert (stats.sentences, stats.train_sentences, stats.val_sentences) == (32, 20, 10)
    assert (stats.extra_sentences, stats.duplicates) == (2, 1)

    capped = params.model_copy(
        update={"pretrain": params.pretrain.model_copy(update={"max_sentences": 25})}
    )
    got, stats = corpus_sentences(capped, "es")
    assert got == train + val[:5] and stats.val_sentences == 5 and stats.extra_sentences == 0

    # A text file among the labelled splits (heldout, dev, test live there) is refused.
    inside = tmp_path / "data" / "processed" / "es" / "heldout.txt"
    inside.write_text("zzheldout texto\n", encoding="utf-8")
    leaky = params.model_copy(
        update={"pretrain": params.pretrain.model_copy(update={"extra_text_files": (str(inside),)})}
    )
    with pytest.raises(ValueError, match=r"pretrain\.extra_text_files.*split\.processed_dir"):
        corpus_sentences(leaky, "es")


def test_held_back_sentences_are_seeded_and_never_trained_on(
    tmp_path: Path, tiny_bert_dir: Path, conll_sample: Sample
) -> None:
    sentences, _ = conll_sample("es", 50)
    kept, held = hold_back(sentences, 0.1, seed=3)
    assert len(held) == 5 and len(kept) == 45
    assert sorted(map(tuple, kept + held)) == sorted(map(tuple, sentences))
    assert hold_back(sentences, 0.1, seed=3) == (kept, held)
    assert hold_back(sentences, 0.1, seed=4)[1] != held
    assert hold_back(sentences, 0.0, seed=3) == (sentences, [])
    assert len(hold_back(sentences[:3], 0.02, seed=3)[1]) == 1  # at least one, never all
    assert hold_back(sentences[:1], 0.5, seed=3) == (sentences[:1], [])

    params = _project(tmp_path, tiny_bert_dir, {"train": sentences}, eval_fraction=0.1)
    corpus = build_corpus(params, "es", load_tokenizer(str(tiny_bert_dir)))
    assert corpus.stats.eval_sentences == 5 and len(corpus.held_out) == 5
    assert corpus.stats.examples == len(corpus.examples) == 45
    trained = {tuple(e.input_ids) for e in corpus.examples}
    assert not any(tuple(e.input_ids) in trained for e in corpus.held_out)


# --------------------------------------------------------------------------- scores


def test_score_predictions_on_a_toy_example() -> None:
    # 4 predicted pieces: words 7 (two pieces), 8 and 9. Top predictions 1, 2, 3, 0.
    logits = torch.tensor(
        [
            [0.0, 5.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 4.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 3.0, 2.0],
            [6.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    targets = torch.tensor([1, 2, 4, 0])
    words = torch.tensor([7, 7, 8, 9])
    score = score_predictions(logits, targets, words)
    assert (score.pieces, score.correct_pieces) == (4, 3)
    assert (score.words, score.correct_words) == (3, 2)  # word 8's only piece is wrong
    assert score.accuracy == 0.75 and score.word_accuracy == pytest.approx(2 / 3)
    assert score.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)

    # Summed over batches: a word wrong in one piece is wrong.
    total = MlmScore()
    total += score
    total += score_predictions(logits[:2], torch.tensor([1, 3]), torch.tensor([5, 5]))
    assert (total.pieces, total.correct_pieces, total.words, total.correct_words) == (6, 4, 4, 2)
    assert math.isnan(MlmScore().accuracy) and math.isnan(MlmScore().loss)
    with pytest.raises(ValueError, match="4 logit rows, 3 targets"):
        score_predictions(logits, targets[:3], words[:3])


def test_eval_mask_masks_every_piece_of_the_chosen_words() -> None:
    vocab = MaskingVocab(mask_id=4, vocab_size=50, special_ids=frozenset({0, 1, 2, 3, 4}))
    ids = [0, 10, 11, 12, 13, 14, 2]
    word_ids: list[int | None] = [None, 0, 0, 1, 2, 2, None]
    for seed in range(30):  # training masking would leave or randomise some chosen words
        masked, labels, words = eval_mask(ids, word_ids, vocab, 0.5, np.random.default_rng(seed))
        predicted = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        assert predicted and all(masked[i] == 4 and labels[i] == ids[i] for i in predicted)
        assert [w for w in words if w != IGNORE_INDEX] == [word_ids[i] for i in predicted]
        chosen = {word_ids[i] for i in predicted}
        assert len(chosen) == 2  # round(0.5 * 3) words, whole
        assert predicted == [i for i, w in enumerate(word_ids) if w in chosen]
        assert [m for i, m in enumerate(masked) if i not in predicted] == [
            x for i, x in enumerate(ids) if i not in predicted
        ]


# --------------------------------------------------------------------------- head


def test_fresh_head_starts_at_the_unigram_prior(tiny_bert_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    examples = encode_examples(tokenizer, _pattern_sentences(40), "es")
    held = eval_batches(examples, tokenizer, 0.15, 8, seed=1)
    model, fresh = load_mlm_model(str(tiny_bert_dir), seed=2)
    assert fresh
    random_head = evaluate_mlm(model, held, CPU)
    rows = model.get_output_embeddings().weight.shape[0]
    counts = piece_counts(examples, rows)
    init_fresh_head(model, counts)
    started = evaluate_mlm(model, held, CPU)
    assert started.pieces == random_head.pieces > 0
    # The library's random head is at about log(vocab); the prior alone is far below it.
    assert random_head.loss > math.log(rows) - 1.0
    assert started.loss < random_head.loss - 3.0
    dense = model.cls.predictions.transform.dense.weight
    assert torch.equal(dense, torch.eye(dense.shape[0]))
    bias = model.get_output_embeddings().bias
    assert int(bias.argmax()) == int(np.argmax(counts))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(ValueError, match="piece counts"):
        init_fresh_head(model, counts[:-1])


def test_head_warmup_changes_the_head_and_not_the_encoder(tiny_bert_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    examples = encode_examples(tokenizer, _pattern_sentences(30), "es")
    model, _ = load_mlm_model(str(tiny_bert_dir), seed=2)
    init_fresh_head(model, piece_counts(examples, model.get_output_embeddings().weight.shape[0]))
    encoder_before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    head_before = [p.detach().clone() for p in head_parameters(model)]
    flags = [p.requires_grad for p in model.parameters()]
    # freeze_embeddings false: the tied decoder weight is the encoder's and stays fixed anyway.
    cfg = PretrainConfig(head_warmup_steps=6, head_lr=1e-2, batch_size=8, freeze_embeddings=False)
    seen = _Steps()
    loop = warm_up_head(model, examples, tokenizer, cfg, device=CPU, callbacks=[seen])
    assert [s.step for s in seen.steps] == list(range(1, 7)) and len(loop.step_losses) == 6
    after = model.base_model.state_dict()
    assert all(torch.equal(encoder_before[k], after[k]) for k in encoder_before)
    head_after = head_parameters(model)
    assert len(head_after) == len(head_before) >= 4  # transform, LayerNorm, decoder bias
    assert all(not torch.equal(a, b) for a, b in zip(head_before, head_after, strict=True))
    assert [p.requires_grad for p in model.parameters()] == flags  # restored
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(ValueError, match="head_warmup_steps"):
        warm_up_head(model, examples, tokenizer, PretrainConfig(head_warmup_steps=0), device=CPU)


# --------------------------------------------------------------------------- end to end


def test_pretrain_reports_loss_and_accuracy_before_after_warmup_and_at_the_end(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    params = _project(
        tmp_path,
        tiny_bert_dir,
        {"train": _pattern_sentences(60), "val": _pattern_sentences(75)[60:]},
        head_warmup_steps=5,
        head_lr=1e-2,
        lr=3e-3,
        epochs=8,
        eval_fraction=0.2,
        seed=6,
    )
    head, main = _Steps(), _Steps()
    result = pretrain_encoder(params, "es", callbacks=[main], head_callbacks=[head])
    assert result.corpus.val_sentences == 15 and result.corpus.eval_sentences == 15
    assert result.head_warmup_steps == len(head.steps) == 5
    assert result.steps == len(main.steps) == 8 * 8  # 60 kept sentences, batch 8
    assert [s.step for s in head.steps] == [1, 2, 3, 4, 5]
    before, warm, end = (result.scores[k] for k in ("before", "after_head_warmup", "end"))
    assert before.pieces == warm.pieces == end.pieces > 0  # the same fixed masks
    assert warm.loss != before.loss  # the head changed
    # The fixed words ("vive", "en", "y", "escucha") are learnt: a direct check.
    assert end.accuracy > before.accuracy + 0.2 and end.loss < before.loss

    metrics = result.metrics()
    for name in ("eval_before_accuracy", "eval_after_head_warmup_loss", "eval_end_word_accuracy"):
        assert math.isfinite(metrics[name]), name
    assert metrics["eval_end_accuracy"] == end.accuracy
    assert metrics["head_warmup_steps"] == 5 and metrics["head_warmup_first_loss"] > 0

    summary = json.loads((result.output_dir / "pretrain.json").read_text(encoding="utf-8"))
    assert summary["head_warmup"]["steps"] == 5 and summary["corpus"]["eval_sentences"] == 15
    assert summary["mlm_eval"]["end"]["accuracy"] == end.accuracy
    assert summary["mlm_eval"]["before"]["loss"] == before.loss
    assert summary["loss"]["head_warmup_first"] == result.head_losses[0]
    assert summary["loss"]["first"] == result.losses[0]
    assert summary["head_init"].startswith("identity transform")

    # No held-back slice: the scores are empty and not logged, the rest still runs.
    none = params.model_copy(
        update={
            "pretrain": params.pretrain.model_copy(
                update={"eval_fraction": 0.0, "epochs": 1, "head_warmup_steps": 0}
            )
        }
    )
    quiet = pretrain_encoder(none, "es")
    assert quiet.head_warmup_steps == 0 and quiet.corpus.eval_sentences == 0
    assert not any(k.startswith("eval_") for k in quiet.metrics())
    summary = json.loads((quiet.output_dir / "pretrain.json").read_text(encoding="utf-8"))
    assert summary["mlm_eval"]["end"] is None
