"""The ONNX export and the prediction path that runs it (onnxruntime, tokenizers, numpy).

The export must tag every check sentence as the torch model does; the raw tokenizer must cut
the windows transformers' tokenizer cuts; the numpy CRF must give the torch CRF's paths and
marginals (tests/unit/test_crf.py checks it on random inputs against torchcrf and brute force).
The fresh-process check that this path imports neither torch nor transformers is
tests/integration/test_onnx_lean.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer

from complex_ner.core.config import DataConfig, ModelConfig
from complex_ner.core.paths import EXPORT_FILE, ONNX_FILE, ONNX_INT8_FILE
from complex_ner.domain.alignment import PieceTokenizer, align_sentences, encode_sentences
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines import export as export_module
from complex_ner.engines.export import ExportCheckError, contracting_matmuls, export_onnx
from complex_ner.engines.onnx_tagger import OnnxTagger
from complex_ner.engines.predict import load_tagger

Sample = Callable[[str, int], tuple[list[list[str]], list[list[str]]]]
TAGS = DataConfig().tags


def _long_sentences(sentences: list[list[str]]) -> list[list[str]]:
    """Sentences glued into ones far longer than a window."""
    return [sum(sentences[i : i + 12], []) for i in range(0, min(len(sentences), 48), 12)]


@pytest.mark.parametrize("name", ["minilm", "e5"])
@pytest.mark.parametrize("lang", ["es", "zh"])
@pytest.mark.parametrize("join", ["space", "natural"])
def test_raw_tokenizer_windows_like_transformers(
    name: str,
    lang: str,
    join: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    conll_sample: Sample,
) -> None:
    hf: Any = request.getfixturevalue(f"{name}_tokenizer")
    hf.save_pretrained(tmp_path)  # as Tagger.save writes it
    backend = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    raw = PieceTokenizer(backend, hf.unk_token_id, hf.pad_token_id)
    sentences, _ = conll_sample(lang, 200)
    sentences = sentences + _long_sentences(sentences) + [[]]
    assert align_sentences(raw, sentences, join=join) == align_sentences(hf, sentences, join=join)
    for max_length, stride in ((128, 32), (24, 6)):  # 24: most sentences need several windows
        want = encode_sentences(hf, sentences, max_length, stride, join=join)
        assert encode_sentences(raw, sentences, max_length, stride, join=join) == want


def test_training_exports_and_the_export_predicts_like_torch(
    trained_tagger_dir: Path, toy_corpus: Callable[[int], list[Any]], one_thread: None
) -> None:
    manifest = json.loads((trained_tagger_dir / EXPORT_FILE).read_text(encoding="utf-8"))
    assert manifest["check"]["sentences_with_other_tags"] == 0 and manifest["check"]["same_windows"]
    assert manifest["check"]["max_abs_emission_diff"] < 1e-4
    assert not (trained_tagger_dir / ONNX_INT8_FILE).exists()  # int8 is opt-in
    words = [list(s.tokens) for s in toy_corpus(20)]
    words += _long_sentences(words * 4)
    torch_tagger, onnx = Tagger.load(trained_tagger_dir), load_tagger(trained_tagger_dir)
    assert onnx.encode(words) == torch_tagger.encode(words)
    ids, marginals = onnx.predict_ids(words, batch_size=7, with_marginals=True)
    want_ids, want_marginals = torch_tagger.predict_ids(words, batch_size=7, with_marginals=True)
    assert ids == want_ids
    assert marginals is not None and want_marginals is not None
    for got, want in zip(marginals, want_marginals, strict=True):
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-4)


@pytest.mark.parametrize(
    ("encoder", "arch"),
    [
        ("tiny_bert_dir", "bert_crf"),
        ("tiny_bert_dir", "bert_bilstm_crf"),
        ("tiny_bert_dir", "bert_linear"),
        # XLM-R's SentencePiece tokenizer and 250k-row embeddings: the e5 family.
        pytest.param("tiny_e5_bert_dir", "bert_crf", marks=pytest.mark.slow),
    ],
)
def test_every_head_and_encoder_exports(
    arch: str,
    encoder: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    conll_sample: Sample,
    one_thread: None,
) -> None:
    encoder_dir: Path = request.getfixturevalue(encoder)
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, max_length=32, stride=8)  # most sentences: several windows
    tagger = build_model(str(encoder_dir), TAGS, config, "es")
    folder = tagger.save(tmp_path / "model")
    sentences, _ = conll_sample("es", 40)
    sentences = sentences + _long_sentences(sentences)
    manifest = export_onnx(folder, sentences, batch_size=8)
    assert manifest["check"]["sentences"] == len(sentences)
    assert manifest["check"]["sentences_with_other_tags"] == 0
    onnx = OnnxTagger.load(folder, threads=1)
    assert onnx.predict(sentences, batch_size=5) == Tagger.load(folder).predict(sentences, 5)


def test_int8_export_is_opt_in_and_recorded(
    trained_tagger_dir: Path, tmp_path: Path, toy_corpus: Callable[[int], list[Any]]
) -> None:
    folder = Path(shutil.copytree(trained_tagger_dir, tmp_path / "model"))
    words = [list(s.tokens) for s in toy_corpus(20)]
    manifest = export_onnx(folder, words, int8=True)
    assert (folder / ONNX_INT8_FILE).is_file()
    assert manifest["int8"]["check"]["sentences"] == len(words)
    # The down-projections (intermediate -> hidden, one per layer) and the emission head
    # (hidden -> tags) stay fp32; every other weight MatMul is quantized.
    kept = manifest["int8"]["fp32_matmuls"]
    layers = Tagger.load(folder).encoder.config.num_hidden_layers
    assert len(kept) == layers + 1
    assert sorted(kept) == sorted(contracting_matmuls(folder / ONNX_FILE))
    quantized_graph = onnx.load(str(folder / ONNX_INT8_FILE)).graph
    ops = {node.name: node.op_type for node in quantized_graph.node}
    assert all(ops[name] == "MatMul" for name in kept)
    assert sum(op in {"MatMulInteger", "DynamicQuantizeMatMul"} for op in ops.values()) > 0
    quantized = load_tagger(folder, int8=True)
    tags = quantized.predict(words)
    assert [len(t) for t in tags] == [len(w) for w in words]
    # A later export without int8 leaves no stale quantized file behind.
    export_onnx(folder, words)
    assert not (folder / ONNX_INT8_FILE).exists()
    with pytest.raises(FileNotFoundError, match="--int8"):
        load_tagger(folder, int8=True)


def test_an_export_that_tags_differently_is_refused(
    trained_tagger_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toy_corpus: Callable[[int], list[Any]],
) -> None:
    folder = Path(shutil.copytree(trained_tagger_dir, tmp_path / "model"))
    real = OnnxTagger.decode

    def shifted(self: OnnxTagger, *args: Any, **kwargs: Any) -> Any:
        paths, probs = real(self, *args, **kwargs)
        return [[0] * len(p) for p in paths], probs  # all "O"

    monkeypatch.setattr(export_module.OnnxTagger, "decode", shifted)
    words = [list(s.tokens) for s in toy_corpus(20)]  # the toy tagger finds their entities
    with pytest.raises(ExportCheckError, match=r"tags [1-9]\d* of 20 sentences differently"):
        export_onnx(folder, words)
    assert not (folder / ONNX_FILE).exists() and not (folder / EXPORT_FILE).exists()


def test_a_folder_without_export_names_the_command(
    trained_tagger_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(trained_tagger_dir, tmp_path / "model"))
    (folder / EXPORT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="complex-ner export --model"):
        load_tagger(folder)
