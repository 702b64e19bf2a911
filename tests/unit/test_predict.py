"""Raw-text tokenization, entity extraction, the prediction CLI and resumable batch prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from complex_ner.cli import app
from complex_ner.core.config import DataConfig
from complex_ner.domain.data import Sentence, format_conll, read_conll
from complex_ner.engines.predict import (
    InputError,
    entities_from_tags,
    load_tagger,
    predict_conll_batched,
    predict_entities,
    tokenize,
)

TAGS = DataConfig().tags


def test_spanish_tokenization_keeps_offsets() -> None:
    text = "Ana vive en Lima, ¿no?  El 3-2 fue  épico."
    toks = tokenize(text, "es")
    assert [t.text for t in toks] == [
        "Ana",
        "vive",
        "en",
        "Lima",
        ",",
        "¿",
        "no",
        "?",
        "El",
        "3-2",
        "fue",
        "épico",
        ".",
    ]
    assert all(text[t.start : t.end] == t.text for t in toks)


def test_chinese_tokenization_char_by_char_with_latin_runs() -> None:
    text = "我在iPhone 15上看了北京。"
    toks = tokenize(text, "zh")
    assert [t.text for t in toks] == [
        "我",
        "在",
        "iPhone",
        "15",
        "上",
        "看",
        "了",
        "北",
        "京",
        "。",
    ]
    assert all(text[t.start : t.end] == t.text for t in toks)


def test_entities_from_tags_offsets_and_confidence() -> None:
    text = "Ana vive en Nueva York"
    toks = tokenize(text, "es")
    tags = ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    idx = {t: i for i, t in enumerate(TAGS)}
    marg = [[0.0] * len(TAGS) for _ in tags]
    for k, t in enumerate(tags):
        marg[k][idx[t]] = 0.5 if k == 4 else 1.0
    ents = entities_from_tags(tags, toks, text, marg, idx)
    assert [(e.text, e.type, e.token_start, e.token_end) for e in ents] == [
        ("Ana", "PER", 0, 1),
        ("Nueva York", "LOC", 3, 5),
    ]
    assert [text[e.start : e.end] for e in ents] == ["Ana", "Nueva York"]
    assert ents[1].confidence == pytest.approx(0.75)


def test_predict_entities_on_text_tokens_and_bad_input(trained_tagger_dir: Path) -> None:
    tagger = load_tagger(trained_tagger_dir)
    text = "Luis vive en Quito y escucha Soda Stereo"
    out = predict_entities(tagger, [text, ["marta", "vive", "en", "lima"], "", "   "])
    assert [(e["text"], e["type"]) for e in out[0]] == [
        ("Luis", "PER"),
        ("Quito", "LOC"),
        ("Soda Stereo", "GRP"),
    ]
    assert all(0.0 < e["confidence"] <= 1.0 for e in out[0])
    assert [e["type"] for e in out[1]] == ["PER", "LOC"]
    assert out[2] == [] and out[3] == []
    long = " ".join(["ana vive en lima"] * 200)  # 800 words: windows, no truncation
    ids, _ = tagger.predict_ids([long.split()])
    assert len(ids[0]) == 800
    ents = predict_entities(tagger, [long])[0]
    assert ents and all(long[e["start"] : e["end"]] == e["text"] for e in ents)
    assert max(e["token_end"] for e in ents) > 700  # the last windows are tagged too
    with pytest.raises(InputError, match="row 0: 'text' must be a string"):
        predict_entities(tagger, [{"text": 3}])
    with pytest.raises(InputError, match="row 0: 'tokens' must be a list of non-empty strings"):
        predict_entities(tagger, [["ok", ""]])


def test_cli_predict_jsonl_conll_and_unknown_model(
    trained_tagger_dir: Path, tmp_path: Path, toy_corpus: Any
) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--model", str(trained_tagger_dir), "Ana vive en Cusco"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(e["text"], e["type"]) for e in line["entities"]] == [("Ana", "PER"), ("Cusco", "LOC")]
    src = tmp_path / "in.conll"
    src.write_text(format_conll(toy_corpus(3)), encoding="utf-8")
    res = runner.invoke(
        app, ["predict", "-m", str(trained_tagger_dir), "--file", str(src), "-f", "conll"]
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "out.conll"
    out.write_text(res.stdout, encoding="utf-8")
    assert [s.tags for s in read_conll(out)] == [s.tags for s in toy_corpus(3)]
    res = runner.invoke(app, ["predict", "-m", str(tmp_path / "nope"), "hola"])
    assert res.exit_code == 1 and "no such model folder" in res.output


def test_batch_prediction_resumes_without_redoing_chunks(
    trained_tagger_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_corpus: Any
) -> None:
    tagger = load_tagger(trained_tagger_dir)
    sents = [Sentence(f"t{i}", s.tokens, None, "test") for i, s in enumerate(toy_corpus(20))]
    src = tmp_path / "test.conll"
    src.write_text(
        "".join(
            f"# id {s.id}\tdomain=test\n" + "".join(f"{t} _ _ _\n" for t in s.tokens) + "\n"
            for s in sents
        ),
        encoding="utf-8",
    )
    out = tmp_path / "sub.conll"
    calls = []
    original = tagger.predict

    def flaky(words, batch_size=64):
        calls.append(len(words))
        if len(calls) == 3:
            raise KeyboardInterrupt  # interrupted during the third chunk
        return original(words, batch_size=batch_size)

    monkeypatch.setattr(tagger, "predict", flaky)
    with pytest.raises(KeyboardInterrupt):
        predict_conll_batched(tagger, src, out, chunk_size=6)
    assert not out.exists() and len(list(out.with_name("sub.conll.parts").glob("chunk-*"))) == 2
    result = predict_conll_batched(tagger, src, out, chunk_size=6)
    assert result == {"sentences": 20, "chunks": 4, "reused_chunks": 2}
    assert calls == [6, 6, 6, 6, 2]  # the two finished chunks were not predicted again
    got = read_conll(out)
    assert [s.id for s in got] == [s.id for s in sents]
    assert [s.tags for s in got] == [s.tags for s in toy_corpus(20)]
    assert not out.with_name("sub.conll.parts").exists()
