"""Whole-word-masking pretraining: word units, masking, the tied MLM head, and a tiny run.

Masking is checked on synthetic MultiCoNER-style sentences (``conll_sample``) with the real e5
(XLM-R SentencePiece) tokenizer; the model side uses tiny random BERTs, one with that
tokenizer's 250k-piece vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from complex_ner.core.config import ConfigError, load_params
from complex_ner.core.paths import SKIP_MARKER
from complex_ner.domain.alignment import align_sentences
from complex_ner.domain.data import Sentence, write_conll
from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.wwm import (
    IGNORE_INDEX,
    MaskingVocab,
    MaskStats,
    _jieba,
    encode_examples,
    has_mlm_head,
    load_mlm_model,
    masked_lm_loss,
    masking_vocab,
    word_groups,
    wwm_mask,
)
from complex_ner.engines.pretrain import pretrain_encoder, pretrained_encoder, write_skip_marker
from complex_ner.engines.trainer import Callback, StepInfo

FRACTION = 0.15
Sample = Callable[[str, int], tuple[list[list[str]], list[list[str]]]]  # conftest.conll_sample


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _jieba_words(text: str) -> list[str]:
    return list(_jieba().cut(text))  # the shared, initialised jieba tokenizer


# --------------------------------------------------------------------------- words


def test_spanish_words_are_the_multiconer_tokens() -> None:
    assert word_groups(["el", "museo", "del", "prado", ","], "es") == [0, 1, 2, 3, 4]


def test_chinese_words_come_from_jieba() -> None:
    tokens = list("北京大学的学生去了上海") + ["iphone"]
    groups = word_groups(tokens, "zh")
    words: dict[int, str] = {}
    for token, group in zip(tokens, groups, strict=True):
        words[group] = words.get(group, "") + token
    assert list(words.values()) == _jieba_words("北京大学的学生去了上海iphone")
    assert groups[:4] == [0, 0, 0, 0]  # 北京大学 is one word
    assert groups == sorted(groups)


def test_chinese_words_never_split_a_token() -> None:
    # Latin tokens inside Chinese text stay whole even where jieba would cut differently.
    tokens = ["我", "爱", "new", "york", "城"]
    groups = word_groups(tokens, "zh")
    assert len(groups) == len(tokens) and groups == sorted(groups)
    assert groups[2] != groups[3]  # a space separates them, so jieba keeps two words


# --------------------------------------------------------------------------- masking on real data


def _check_whole_words(example: Any, masked: list[int], labels: list[int]) -> tuple[int, int]:
    """Every piece of a word is predicted, or none is; returns (words, masked words)."""
    by_word: dict[int, list[int]] = {}
    for position, word in enumerate(example.word_ids):
        if word is None:
            assert labels[position] == IGNORE_INDEX  # special tokens are never predicted
            assert masked[position] == example.input_ids[position]
        else:
            by_word.setdefault(word, []).append(position)
    n_masked = 0
    for positions in by_word.values():
        flags = {labels[p] != IGNORE_INDEX for p in positions}
        assert len(flags) == 1, "a word is partly masked"
        if flags.pop():
            n_masked += 1
            assert all(labels[p] == example.input_ids[p] for p in positions)
        else:
            assert all(masked[p] == example.input_ids[p] for p in positions)
    return len(by_word), n_masked


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_masking_keeps_words_whole(e5_tokenizer: Any, conll_sample: Sample, lang: str) -> None:
    sentences, _ = conll_sample(lang, 200)
    examples = encode_examples(e5_tokenizer, sentences, lang, max_length=128)
    assert len(examples) == len(sentences)  # every sentence fits one 128-piece example
    rng = np.random.default_rng(7)
    for example in examples:
        masked, labels, stats = wwm_mask(
            example.input_ids, example.word_ids, e5_tokenizer, FRACTION, rng
        )
        n_words, n_masked = _check_whole_words(example, masked, labels)
        # The spec: the given share of the words, rounded, and never none.
        assert n_masked == stats.masked_words >= 1
        assert n_masked == 1 or abs(n_masked - FRACTION * n_words) <= 0.5


def test_masked_chinese_word_masks_all_its_characters(
    e5_tokenizer: Any, conll_sample: Sample
) -> None:
    """Checked independently of the example's word ids: via the alignment of the characters."""
    sentences, _ = conll_sample("zh", 200)
    alignments = align_sentences(e5_tokenizer, sentences)
    examples = encode_examples(e5_tokenizer, sentences, "zh", max_length=128)
    rng = np.random.default_rng(3)
    multi_char_masked = 0
    for tokens, alignment, example in zip(sentences, alignments, examples, strict=True):
        _masked, labels, _stats = wwm_mask(
            example.input_ids, example.word_ids, e5_tokenizer, FRACTION, rng
        )
        groups = word_groups(tokens, "zh")
        for group in set(groups):
            chars = [i for i, g in enumerate(groups) if g == group]
            pieces = [1 + p for c in chars for p in alignment.word_pieces[c]]  # 1: after <s>
            flags = {labels[p] != IGNORE_INDEX for p in pieces}
            assert len(flags) == 1, f"word {''.join(tokens[c] for c in chars)} partly masked"
            if len(chars) > 1 and flags.pop():
                multi_char_masked += 1
                # With join=space each character is a bare "▁" plus the character: both masked.
                assert len(pieces) >= len(chars)
    assert multi_char_masked > 50


def test_natural_join_merges_words_that_share_a_piece(
    e5_tokenizer: Any, conll_sample: Sample
) -> None:
    """With join=natural a piece such as 北京 can span two jieba words: they become one unit."""
    sentences, _ = conll_sample("zh", 100)
    alignments = align_sentences(e5_tokenizer, sentences, join="natural")
    examples = encode_examples(e5_tokenizer, sentences, "zh", join="natural")
    merged = 0
    for tokens, alignment, example in zip(sentences, alignments, examples, strict=True):
        groups = word_groups(tokens, "zh")
        for group in set(groups):
            pieces = {
                1 + p for c, g in enumerate(groups) if g == group for p in alignment.word_pieces[c]
            }
            assert len({example.word_ids[p] for p in pieces}) == 1
        merged += len(set(groups)) - len({w for w in example.word_ids if w is not None})
    assert merged > 0


def test_masking_rate_and_80_10_10_split(e5_tokenizer: Any, conll_sample: Sample) -> None:
    sentences, _ = conll_sample("es", 300)
    examples = encode_examples(e5_tokenizer, sentences, "es", max_length=128)
    vocab = masking_vocab(e5_tokenizer)
    total = MaskStats()
    rng = np.random.default_rng(11)
    mask_seen = random_seen = 0
    for _epoch in range(4):
        for example in examples:
            masked, labels, stats = wwm_mask(
                example.input_ids, example.word_ids, vocab, FRACTION, rng
            )
            total += stats
            for m, lab in zip(masked, labels, strict=True):
                if lab != IGNORE_INDEX:
                    mask_seen += m == vocab.mask_id
                    random_seen += m != vocab.mask_id and m != lab
                    assert m == vocab.mask_id or m not in vocab.special_ids
    s = total.summary()
    assert s["masked_word_share"] == pytest.approx(FRACTION, abs=0.01)
    assert s["masked_piece_share"] == pytest.approx(FRACTION, abs=0.03)
    assert total.masked_words > 3000
    assert s["mask_word_share"] == pytest.approx(0.8, abs=0.03)
    assert s["random_word_share"] == pytest.approx(0.1, abs=0.025)
    assert s["kept_word_share"] == pytest.approx(0.1, abs=0.025)
    assert mask_seen == total.mask_pieces
    # A random token can by chance equal the original piece; almost never.
    assert total.random_pieces - 5 <= random_seen <= total.random_pieces


def test_random_tokens_are_never_special() -> None:
    vocab = MaskingVocab(mask_id=4, vocab_size=8, special_ids=frozenset({0, 1, 2, 3, 4}))
    rng = np.random.default_rng(0)
    assert {vocab.random_id(rng) for _ in range(200)} == {5, 6, 7}


def test_masking_is_deterministic_under_a_seed(e5_tokenizer: Any, conll_sample: Sample) -> None:
    sentences, _ = conll_sample("zh", 50)
    examples = encode_examples(e5_tokenizer, sentences, "zh")

    def run(seed: int) -> list[tuple[list[int], list[int]]]:
        rng = np.random.default_rng(seed)
        return [
            wwm_mask(e.input_ids, e.word_ids, e5_tokenizer, FRACTION, rng)[:2] for e in examples
        ]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_one_word_sentence_gets_one_masked_word_and_no_word_none(e5_tokenizer: Any) -> None:
    rng = np.random.default_rng(0)
    _m, labels, stats = wwm_mask([0, 10, 11, 2], [None, 0, 0, None], e5_tokenizer, FRACTION, rng)
    assert stats.masked_words == 1 and labels[1:3] == [10, 11]
    _m, labels, stats = wwm_mask([0, 2], [None, None], e5_tokenizer, FRACTION, rng)
    assert stats.words == 0 and labels == [IGNORE_INDEX] * 2


def test_long_sentence_is_cut_between_words(e5_tokenizer: Any) -> None:
    words = ["palabra", "extraordinariamente", "larga"] * 40
    examples = encode_examples(e5_tokenizer, [words], "es", max_length=32)
    assert len(examples) > 1
    assert all(len(e.input_ids) <= 32 for e in examples)
    rebuilt = [i for e in examples for i in e.input_ids[1:-1]]
    assert rebuilt == align_sentences(e5_tokenizer, [words])[0].piece_ids


# --------------------------------------------------------------------------- model


def test_fresh_mlm_head_is_tied_to_the_embeddings(tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder = tiny_bert_dir
    assert not has_mlm_head(str(folder))
    model, fresh = load_mlm_model(str(folder), seed=1)
    assert fresh
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    base = load_encoder(str(folder)).state_dict()
    loaded = model.base_model.state_dict()
    assert all(torch.equal(base[k], loaded[k]) for k in base)
    again, _ = load_mlm_model(str(folder), seed=1)  # the fresh head depends only on the seed
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
    # A checkpoint with an MLM head keeps it.
    model.save_pretrained(tmp_path / "mlm")
    assert has_mlm_head(str(tmp_path / "mlm"))
    reloaded, fresh = load_mlm_model(str(tmp_path / "mlm"))
    assert not fresh
    head = "cls.predictions.transform.dense.weight"
    assert torch.equal(reloaded.state_dict()[head], model.state_dict()[head])


def test_masked_only_loss_equals_the_full_loss(tiny_bert_dir: Path) -> None:
    folder = tiny_bert_dir
    model, _ = load_mlm_model(str(folder))
    model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 3000, (3, 12), generator=gen)
    attention = torch.ones_like(ids)
    attention[2, 8:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2:4] = ids[0, 2:4]
    labels[1, 5] = ids[1, 5]
    labels[2, 1] = 7
    with torch.no_grad():
        fast = masked_lm_loss(model, ids, attention, labels)
        full = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)


# --------------------------------------------------------------------------- end to end


def _project(
    sample: Sample, tmp_path: Path, encoder: Path, lang: str, n: int = 20, **pretrain: Any
) -> Path:
    sentences, tags = sample(lang, n)
    processed = tmp_path / "data" / "processed" / lang
    rows = [
        Sentence(id=f"s{i}", tokens=tuple(w), tags=tuple(t))
        for i, (w, t) in enumerate(zip(sentences, tags, strict=True))
    ]
    write_conll(processed / "train.conll", rows)
    write_conll(processed / "val.conll", rows[:5])
    config = {
        "data": {"languages": ["es", "zh"]},
        "model": {"encoder": str(encoder)},
        "train": {"device": "cpu"},
        "pretrain": {
            "enabled": True,
            "languages": [lang],
            "epochs": 1,
            "batch_size": 8,
            "lr": 1e-3,
            "head_warmup_steps": 2,  # the warm-up itself: tests/unit/test_pretrain_warmup.py
            **pretrain,
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class _Built(Exception):
    pass


def _encoder_train_uses(params: Any, lang: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import complex_ner.engines.train as train

    seen: list[str] = []

    def fake_build(encoder: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(encoder)
        raise _Built

    monkeypatch.setattr(train, "build_model", fake_build)
    with pytest.raises(_Built):
        train.train_model(params, lang, "bert_crf")
    return seen[0]


def test_tiny_pretrain_writes_a_loadable_encoder_that_train_uses(
    tiny_e5_bert_dir: Path, conll_sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("北京大学的学生去了上海。\n\n他们喜欢iphone手机\n", encoding="utf-8")
    params = load_params(
        _project(
            conll_sample, tmp_path, tiny_e5_bert_dir, "zh", extra_text_files=[str(extra)], seed=4
        )
    )
    steps: list[StepInfo] = []

    class Steps(Callback):
        def on_step_end(self, step: StepInfo) -> None:
            steps.append(step)

    result = pretrain_encoder(params, "zh", callbacks=[Steps()])
    out = tmp_path / "models" / "encoders" / "wwm" / "zh"
    assert result.output_dir == out
    # val repeats train's first 5 sentences: dropped; one sentence is held back for scoring.
    assert result.corpus.sentences == 22 and result.corpus.extra_sentences == 2
    assert result.corpus.duplicates == 5 and result.corpus.eval_sentences == 1
    assert result.corpus.words < result.corpus.tokens  # jieba words group characters
    assert result.steps == len(steps) == 3 and result.fresh_head
    assert [s.step for s in steps] == [1, 2, 3] and all(s.total_steps == 3 for s in steps)
    assert [s.loss for s in steps] == result.losses and all(np.isfinite(result.losses))
    assert steps[0].lr > 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "pretrain.json"):
        assert (out / name).is_file(), name
    assert not has_mlm_head(str(out))  # the encoder only, without the MLM head
    text = "北 京 大 学 iphone"
    assert (
        load_tokenizer(str(out))(text)["input_ids"]
        == load_tokenizer(str(tiny_e5_bert_dir))(text)["input_ids"]
    )
    summary = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))
    assert summary["corpus"]["sentences"] == 22 and summary["steps"] == 3
    assert summary["masking"]["masked_word_share"] > 0.1
    adapted = load_encoder(str(out)).state_dict()
    original = load_encoder(str(tiny_e5_bert_dir)).state_dict()
    assert adapted.keys() == original.keys()
    assert not torch.equal(
        adapted["encoder.layer.0.attention.self.query.weight"],
        original["encoder.layer.0.attention.self.query.weight"],
    )
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left

    # Same seed, same run.
    again = pretrain_encoder(params, "zh")
    assert again.losses == result.losses

    # train_model picks the adapted encoder when enabled, model.encoder otherwise.
    assert Path(_encoder_train_uses(params, "zh", monkeypatch)) == out.resolve()
    off = params.model_copy(
        update={"pretrain": params.pretrain.model_copy(update={"enabled": False})}
    )
    assert Path(_encoder_train_uses(off, "zh", monkeypatch)) == tiny_e5_bert_dir.resolve()
    other = params.model_copy(
        update={"pretrain": params.pretrain.model_copy(update={"languages": ()})}
    )
    assert Path(_encoder_train_uses(other, "zh", monkeypatch)) == tiny_e5_bert_dir.resolve()


def test_disabled_writes_a_marker_and_enabled_train_names_the_command(
    tiny_e5_bert_dir: Path, conll_sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(
        _project(conll_sample, tmp_path, tiny_e5_bert_dir, "es", n=5), ["pretrain.enabled=false"]
    )
    folder = write_skip_marker(params, "es")
    assert [p.name for p in folder.iterdir()] == [SKIP_MARKER]
    enabled = params.model_copy(
        update={"pretrain": params.pretrain.model_copy(update={"enabled": True})}
    )
    with pytest.raises(FileNotFoundError, match=r"SKIPPED.*complex-ner pretrain --lang es"):
        pretrained_encoder(enabled, "es")
    with pytest.raises(FileNotFoundError, match="complex-ner pretrain --lang es"):
        _encoder_train_uses(enabled, "es", monkeypatch)


def test_cli_pretrain_disabled_is_quick_and_checks_the_language(
    tiny_e5_bert_dir: Path, conll_sample: Sample, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from complex_ner.cli import app

    path = _project(conll_sample, tmp_path, tiny_e5_bert_dir, "es", n=5)
    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "-p", str(path), "-S", "pretrain.enabled=false"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "encoders" / "wwm" / "es" / SKIP_MARKER).is_file()
    result = runner.invoke(app, ["pretrain", "-p", str(path), "--lang", "zh"])
    assert result.exit_code == 2
    assert "pretrain.languages" in result.output


def test_pretrain_config_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("pretrain: {}\n", encoding="utf-8")
    load_params(path)  # an empty section is valid: every field has a default
    for bad, field in [
        ("pretrain.mask_fraction=0", "pretrain.mask_fraction"),
        ("pretrain.epochs=0", "pretrain.epochs"),
        ("pretrain.max_sentences=-1", "pretrain.max_sentences"),
        ("pretrain.lr=0", "pretrain.lr"),
        ("pretrain.head_warmup_steps=-1", "pretrain.head_warmup_steps"),
        ("pretrain.head_lr=0", "pretrain.head_lr"),
        ("pretrain.eval_fraction=1.0", "pretrain.eval_fraction"),
        ("pretrain.languages=[es, es]", "pretrain.languages"),
        ("pretrain.enabled=maybe", "pretrain.enabled"),
        ("pretrain.nope=1", "pretrain.nope"),
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_params(path, [bad])
