"""The lean prediction load: raw tokenizer adapter and plain-torch BERT against transformers.

Both must reproduce the transformers objects exactly (same pieces, offsets, windows; bit-equal
hidden states), on synthetic Spanish and Chinese MultiCoNER-style sentences and on long, windowed
ones (tests/integration/test_lean_load_real.py repeats the comparison on the real data).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from complex_ner.core.config import ModelConfig
from complex_ner.domain.alignment import align_sentences, collate, encode_sentences
from complex_ner.domain.encoders import load_encoder, minilm_dir
from complex_ner.domain.models.bert_lite import LiteBertConfig, LiteBertModel, load_lite_encoder
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.domain.rawtok import RawTokenizer, load_raw_tokenizer

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
Sample = Callable[[str, int], tuple[list[list[str]], list[list[str]]]]


@pytest.fixture(scope="module", params=["minilm", "e5"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, RawTokenizer]:
    """A transformers fast tokenizer and the adapter over the folder it saves (as Tagger.save)."""
    hf = request.getfixturevalue(f"{request.param}_tokenizer")
    folder = tmp_path_factory.mktemp(f"saved-{request.param}")
    hf.save_pretrained(folder)
    raw = load_raw_tokenizer(folder)
    assert raw is not None
    return hf, raw


def _long_sentences(sentences: list[list[str]]) -> list[list[str]]:
    """Sentences glued into ones far longer than a window."""
    return [sum(sentences[i : i + 12], []) for i in range(0, min(len(sentences), 48), 12)]


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_adapter_encodes_sentences_like_transformers(
    pair: tuple[Any, RawTokenizer], lang: str, conll_sample: Sample
) -> None:
    hf, raw = pair
    sentences, _ = conll_sample(lang, 300)
    texts = [" ".join(words) for words in sentences] + ["", "  dos  espacios ", "<mask> x"]
    kwargs: dict[str, Any] = {
        "add_special_tokens": False,
        "return_offsets_mapping": True,
        "truncation": False,
        "padding": False,
    }
    want, got = hf(texts, verbose=False, **kwargs), raw(texts, verbose=False, **kwargs)
    assert got["input_ids"] == want["input_ids"]
    assert got["offset_mapping"] == [[tuple(o) for o in row] for row in want["offset_mapping"]]
    for ids in want["input_ids"][:50]:
        assert raw.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    special = {"add_special_tokens": True, "return_special_tokens_mask": True}
    for text in ("a", texts[:3]):
        got, want = raw(text, **special), hf(text, **special)
        # token_type_ids (BERT) are not returned: the encoder is always called without them.
        assert set(got) == {"input_ids", "attention_mask", "special_tokens_mask"}
        assert got == {key: want[key] for key in got}


def test_adapter_special_tokens_match(pair: tuple[Any, RawTokenizer]) -> None:
    hf, raw = pair
    for name in ("unk", "pad", "cls", "sep", "mask"):
        assert getattr(raw, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert raw.all_special_ids == hf.all_special_ids
    assert raw.all_special_tokens == hf.all_special_tokens
    assert len(raw) == len(hf)
    assert raw.convert_ids_to_tokens(raw.unk_token_id) == hf.unk_token


@pytest.mark.parametrize("lang", ["es", "zh"])
@pytest.mark.parametrize("join", ["space", "natural"])
def test_adapter_aligns_and_windows_like_transformers(
    pair: tuple[Any, RawTokenizer], lang: str, join: str, conll_sample: Sample
) -> None:
    hf, raw = pair
    sentences, _ = conll_sample(lang, 300)
    sentences = sentences + _long_sentences(sentences) + [[]]
    assert align_sentences(raw, sentences, join=join) == align_sentences(hf, sentences, join=join)
    for max_length, stride in ((128, 32), (24, 6)):  # 24: most sentences need several windows
        want = encode_sentences(hf, sentences, max_length, stride, join=join)
        got = encode_sentences(raw, sentences, max_length, stride, join=join)
        assert got == want
    assert len(want) > len(sentences)


def test_adapter_saves_the_files_it_was_loaded_from(tmp_path: Path) -> None:
    source = minilm_dir()
    raw = load_raw_tokenizer(source)
    assert raw is not None
    written = raw.save_pretrained(tmp_path / "copy")
    assert written
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (source / name).read_bytes()
    assert load_raw_tokenizer(tmp_path / "nothing-here") is None


def test_adapter_refuses_truncation_and_padding() -> None:
    raw = load_raw_tokenizer(minilm_dir())
    assert raw is not None
    with pytest.raises(NotImplementedError):
        raw("hola", truncation=True)
    with pytest.raises(NotImplementedError):
        raw(["hola", "que tal"], padding=True)


# --------------------------------------------------------------------------- encoder


def _batches(tokenizer: Any, sentences: list[list[str]]) -> list[Any]:
    windows = encode_sentences(tokenizer, sentences + _long_sentences(sentences), 64, 16)
    pad = tokenizer.pad_token_id
    # One window alone (no padding: SDPA gets no mask) and mixed lengths (a boolean mask).
    return [collate(windows[:1], pad), collate(windows[:32], pad), collate(windows, pad)]


@pytest.mark.parametrize("source", ["minilm", "tiny"])
def test_lite_bert_outputs_equal_transformers_bit_for_bit(
    source: str, request: pytest.FixtureRequest, minilm_tokenizer: Any, conll_sample: Sample
) -> None:
    folder = minilm_dir() if source == "minilm" else request.getfixturevalue("tiny_bert_dir")
    lite = load_lite_encoder(folder)
    assert isinstance(lite, LiteBertModel)
    hf = load_encoder(str(folder)).eval()
    assert lite.state_dict().keys() == hf.state_dict().keys()
    with torch.inference_mode():
        for batch in _batches(minilm_tokenizer, conll_sample("es", 40)[0]):
            assert bool((batch.attention_mask == 0).any()) or batch.input_ids.size(0) == 1
            want = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            got = lite(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            assert torch.equal(got.last_hidden_state, want.last_hidden_state)


@pytest.mark.parametrize(
    "change",
    [
        {"model_type": "xlm-roberta"},
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "gelu_new"},
        {"is_decoder": True},
        {"dtype": "float16"},
    ],
)
def test_lite_bert_declines_what_it_does_not_reproduce(
    change: dict[str, Any], tiny_bert_copy: Path, tmp_path: Path
) -> None:
    folder = tiny_bert_copy
    raw = json.loads((folder / "config.json").read_text())
    assert LiteBertConfig.supported(raw) is not None
    assert LiteBertConfig.supported({**raw, **change}) is None
    (folder / "config.json").write_text(json.dumps({**raw, **change}))
    assert load_lite_encoder(folder) is None
    assert load_lite_encoder(tmp_path / "missing") is None


# --------------------------------------------------------------------------- tagger


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved bert_crf tagger (random head) over the real MiniLM encoder."""
    tmp = tmp_path_factory.mktemp("lean")
    torch.manual_seed(0)
    tagger = build_model(str(minilm_dir()), TAGS, ModelConfig(arch="bert_crf"), "es")
    return tagger.save(tmp / "model")


def test_lean_tagger_predicts_exactly_like_the_transformers_load(
    tagger_dir: Path, tmp_path: Path, conll_sample: Sample
) -> None:
    lean, full = Tagger.load(tagger_dir), Tagger.load(tagger_dir, lean=False)
    assert isinstance(lean.tokenizer, RawTokenizer) and isinstance(lean.encoder, LiteBertModel)
    assert not isinstance(full.encoder, LiteBertModel)
    assert lean.pad_id == full.pad_id
    a, b = lean.state_dict(), full.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sentences, _ = conll_sample("es", 30)
    sentences = sentences + _long_sentences(sentences)
    assert lean.predict_ids(sentences, 16, with_marginals=True) == full.predict_ids(
        sentences, 16, with_marginals=True
    )
    # A lean-loaded tagger saves a folder that loads (either way) to the same model.
    again = Tagger.load(lean.save(tmp_path / "again"), lean=False)
    assert again.predict(sentences[:8]) == full.predict(sentences[:8])


def test_lean_load_falls_back_to_transformers(tagger_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tagger_dir, tmp_path / "model"))
    # No tokenizer.json: transformers builds the tokenizer from the WordPiece vocabulary.
    (copy / "tokenizer" / "tokenizer.json").unlink()
    shutil.copy(minilm_dir() / "vocab.txt", copy / "tokenizer" / "vocab.txt")
    # A config the plain-torch encoder does not reproduce (feed-forward chunking).
    config = json.loads((copy / "encoder" / "config.json").read_text())
    (copy / "encoder" / "config.json").write_text(
        json.dumps({**config, "chunk_size_feed_forward": 4})
    )
    tagger = Tagger.load(copy)
    assert not isinstance(tagger.tokenizer, RawTokenizer)
    assert not isinstance(tagger.encoder, LiteBertModel)
    words = [["ana", "vive", "en", "lima"], ["hola", "mundo"]]
    assert tagger.encode(words) == Tagger.load(tagger_dir).encode(words)
