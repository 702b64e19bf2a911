"""Training, saving and resuming on a tiny random BERT with the real MiniLM tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from complex_ner.core.config import ARCHITECTURES, DataConfig, TrainConfig
from complex_ner.domain.data import Sentence
from complex_ner.domain.encoders import minilm_dir, tiny_random_bert
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.train import fit

TYPES = DataConfig().entity_types
TAGS = DataConfig().tags
NAMES = ["ana", "luis", "marta", "pedro", "sofia"]
PLACES = ["lima", "quito", "madrid", "bogota", "cusco"]
BANDS = ["the beatles", "los prisioneros", "soda stereo"]


def corpus(n: int = 20) -> list[Sentence]:
    out = []
    for i in range(n):
        name, place, band = NAMES[i % 5], PLACES[(i * 2) % 5], BANDS[i % 3].split()
        tokens = [name, "vive", "en", place, "y", "escucha", *band]
        tags = ["B-PER", "O", "O", "B-LOC", "O", "O", "B-GRP"] + ["I-GRP"] * (len(band) - 1)
        out.append(Sentence(id=f"s{i}", tokens=tuple(tokens), tags=tuple(tags)))
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_bert(minilm_dir(), tmp_path_factory.mktemp("tiny") / "bert", hidden=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cfg(**kw) -> TrainConfig:
    base = TrainConfig(
        epochs=25,
        batch_size=8,
        lr_encoder=3e-3,
        lr_min=1e-4,
        lr_head=3e-2,
        schedule="constant",
        patience=100,
        freeze_embeddings=False,
        device="cpu",
        seed=3,
    )
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_overfits_twenty_sentences(tiny_dir: Path, tmp_path: Path, arch: str) -> None:
    data = corpus(20)
    tagger = build_model(str(tiny_dir), TAGS, arch, dropout=0.0, lstm_hidden=16, fc_hidden=32)
    result = fit(tagger, data, data, cfg(), tmp_path / arch, TYPES, progress=False)
    assert result.best_f1 == pytest.approx(1.0)
    assert result.model_dir is not None and (result.model_dir / "tagger.json").is_file()


def test_save_load_predict_identical(tiny_dir: Path, tmp_path: Path) -> None:
    data = corpus(10)
    tagger = build_model(str(tiny_dir), TAGS, "bert_bilstm_crf", lstm_hidden=8)
    fit(tagger, data, data, cfg(epochs=3), tmp_path, TYPES, progress=False)
    best = Tagger.load(tmp_path / "model")
    again = Tagger.load(tmp_path / "model")
    words = [list(s.tokens) for s in data] + [["palabra"] * 300]  # a long one is windowed
    assert best.predict(words) == again.predict(words)
    assert [len(p) for p in best.predict(words)] == [len(w) for w in words]
    ids_a, marg = best.predict_ids(words[:2], with_marginals=True)
    assert marg is not None and len(marg[0]) == len(words[0])
    assert all(abs(sum(p) - 1.0) < 1e-4 for p in marg[0])


def test_resume_equals_uninterrupted(tiny_dir: Path, tmp_path: Path) -> None:
    data = corpus(12)
    c = cfg(epochs=3, schedule="cyclic", patience=10)

    def fresh() -> Tagger:
        torch.manual_seed(0)
        return build_model(str(tiny_dir), TAGS, "bert_crf", dropout=0.1)

    full = fit(fresh(), data, data, c, tmp_path / "a", TYPES, progress=False)
    part = fit(fresh(), data, data, c, tmp_path / "b", TYPES, progress=False, stop_after=1)
    assert len(part.history) == 1
    done = fit(fresh(), data, data, c, tmp_path / "b", TYPES, progress=False, resume=True)
    assert [h["loss"] for h in done.history] == [h["loss"] for h in full.history]
    assert not (tmp_path / "a" / "checkpoint").exists()  # removed once a run has finished
    a = Tagger.load(tmp_path / "a" / "model").state_dict()
    b = Tagger.load(tmp_path / "b" / "model").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_initial_head_depends_on_seed_alone(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import complex_ner.domain.encoders as encoders
    import complex_ner.engines.train as train_module
    from complex_ner.core.config import Params

    heads: list[dict[str, torch.Tensor]] = []

    def capture(tagger: Tagger, *args: object, **kwargs: object) -> None:
        heads.append({k: v.clone() for k, v in tagger.head.state_dict().items()})

    monkeypatch.setattr(train_module, "fit", capture)
    monkeypatch.setattr(train_module, "load_training_data", lambda p, lang: (corpus(), corpus(2)))
    monkeypatch.setattr(encoders, "resolve_encoder", lambda name, root=None: str(tiny_dir))
    params = dataclasses.replace(Params(), root=tmp_path)
    before = torch.random.get_rng_state()
    train_module.train_model(params, "es", "bert_linear")
    torch.rand(1000)  # whatever the process drew in between must not matter
    train_module.train_model(params, "es", "bert_linear")
    assert len(heads) == 2
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    torch.random.set_rng_state(before)
    train_module.train_model(params, "es", "bert_linear")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
