"""Shared fixtures: the project root, the real MultiCoNER data, tokenizers and tiny models.

Importing ``complex_ner`` here applies the offline environment defaults (``core/env.py``)
before any test module imports transformers, MLflow or Prefect.

Unit tests get a synthetic MultiCoNER-style corpus (:func:`conll_sample`); only tests under
``tests/integration`` may read the real data (:func:`multiconer_dir`, :func:`real_sentences`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import complex_ner  # noqa: F401  (applies the offline environment defaults)
from complex_ner.adapters.mlflow_server import free_port as free_tcp_port
from complex_ner.core.config import SOURCE_ENV, DataConfig, ModelConfig, TrainConfig, load_params
from complex_ner.domain.data import Sentence, read_conll
from complex_ner.domain.encoders import (
    load_tokenizer,
    minilm_dir,
    provision_tokenizer,
    tiny_random_bert,
)
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines.train import fit

ROOT = Path(__file__).resolve().parents[1]

#: (words, tags) per sentence, as a CoNLL file holds them.
Corpus = tuple[list[list[str]], list[list[str]]]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is ``integration``; ``gpu`` tests skip without CUDA."""
    integration = ROOT / "tests" / "integration"
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    # Asked only when a gpu test was collected: the query initialises the CUDA driver.
    if gpu and not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz tests' tally (tests/fuzzing.py): generated cases and their outcomes."""
    from tests.fuzzing import TALLY

    if not TALLY:
        return
    terminalreporter.section("fuzz cases")
    for name, outcomes in sorted(TALLY.items()):
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
        terminalreporter.write_line(f"{name}: {sum(outcomes.values()):,} cases ({detail})")


@pytest.fixture(scope="session")
def root() -> Path:
    """The project folder (holds params.yaml, dvc.yaml)."""
    return ROOT


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (timings and float reductions stable on a shared host)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_tcp_port()


# ---------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def multiconer_dir() -> Path:
    """The MultiCoNER source folder named by params.yaml (or ``$COMPLEX_NER_DATA_SOURCE``).

    Missing, it skips the test, except under ``CI=true`` where it fails: a CI run must not pass
    by skipping every test that needs the data.
    """
    path = load_params(ROOT / "params.yaml").source_dir
    missing = [lang for lang in ("es", "zh") if not (path / lang / "train.conll").is_file()]
    if not missing:
        return path
    where = ", ".join(f"{lang}/train.conll" for lang in missing)
    message = (
        f"MultiCoNER data not found: {path} has no {where} "
        f"(set data.source_dir in params.yaml or ${SOURCE_ENV})"
    )
    if _in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_sentences(multiconer_dir: Path) -> Callable[[str, int], Corpus]:
    """``real_sentences(lang, limit)``: the first sentences of the real ``<lang>/train.conll``."""
    cache: dict[str, list[Sentence]] = {}

    def read(lang: str, limit: int = 300) -> Corpus:
        if lang not in cache:
            cache[lang] = read_conll(multiconer_dir / lang / "train.conll")
        rows = cache[lang][:limit]
        return [list(s.tokens) for s in rows], [list(s.tags or ()) for s in rows]

    return read


# ---------------------------------------------------------------------------- synthetic corpus


# Lower-cased like MultiCoNER, accents included.
_ES_WORDS = (
    "la el de en y que fue su con por una un del los las se es más también después año "
    "ciudad río canción película álbum equipo jugó nació publicó grabó dirigió ganó "
    "vivió música historia región capital según época pequeño famoso segunda tercera "
    "generación presidente fundó compañía estación universidad durante entre desde "
    "hasta él está investigación portátil consola avión quinto julio mayo siglo xix "
    "primera novela autor obra premio canal televisión serie temporada campeonato liga "
    "pingüino cigüeña niño español extraordinariamente aproximadamente internacional"
)
# Common multi-character words (jieba knows them), traditional script, single characters.
_ZH_WORDS = (
    "我们 他们 北京 上海 大学 学生 喜欢 电影 音乐 公司 城市 位于 成立 发布 第一 历史 国家 "
    "政府 时间 地区 首都 年代 工作 主要 作品 导演 演员 歌手 球队 比赛 获得 以及 其中 东南部 "
    "附近 著名 中国 日本 发展 科学 技术 研究 出版 小说 游戏 手机 电脑 區域 歷史 臺灣 鐵路 "
    "的 在 是 了 和 于 为 有 也 被 个 年 月 大 约"
)


@dataclass(frozen=True)
class _Vocabulary:
    """What synthetic sentences of one language are drawn from."""

    words: tuple[str, ...]
    marks: tuple[str, ...]
    numbers: tuple[str, ...]
    entities: dict[str, tuple[str, ...]]
    length: tuple[int, int]  # words and entities per sentence, before the final stop
    stop: str


_VOCABULARIES = {
    # Inverted marks, decimal commas, roman numerals, brackets.
    "es": _Vocabulary(
        words=tuple(_ES_WORDS.split()),
        marks=(",", ".", "(", ")", "¿", "?", "¡", "!", '"', "'", ":", ";", "-"),
        numbers=("1990", "2008", "1.500", "3-2", "2,5", "12", "xiv", "n.º", "50%"),
        entities={
            "PER": ("gabriel garcía márquez", "josé martí", "frida kahlo", "ana maría matute"),
            "LOC": ("río de la plata", "buenos aires", "nueva york", "sierra nevada", "córdoba"),
            "GRP": ("los prisioneros", "real madrid", "soda stereo", "la oreja de van gogh"),
            "CORP": ("telefónica", "sega", "nintendo", "banco santander", "pluna"),
            "PROD": ("game gear", "iphone 4", "seat ibiza", "coca-cola zero"),
            "CW": ("cien años de soledad", "don quijote de la mancha", "el laberinto del fauno"),
        },
        length=(7, 26),
        stop=".",
    ),
    # Full-width punctuation, Latin and digit runs.
    "zh": _Vocabulary(
        words=tuple(_ZH_WORDS.split()),
        marks=("，", "。", "、", "《", "》", "（", "）", ",", ".", "：", "“", "”"),
        numbers=("2007", "15", "iphone", "nba", "3d", "bbc"),
        entities={
            "PER": ("周杰伦", "李白", "王菲", "孫中山"),
            "LOC": ("长江", "黄山", "巴黎", "纽约", "波茲南"),
            "GRP": ("曼联", "五月天", "皇家马德里"),
            "CORP": ("华为", "索尼", "腾讯", "任天堂"),
            "PROD": ("微信", "可口可乐", "iphone 手机"),
            "CW": ("红楼梦", "三国演义", "西游记"),
        },
        length=(5, 16),
        stop="。",
    ),
}

_ZH_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")


def _tokens(lang: str, phrase: str) -> list[str]:
    # MultiCoNER's Chinese files hold one token per character, Latin and digit runs whole.
    return _ZH_TOKEN.findall(phrase) if lang == "zh" else phrase.split()


def _synthetic_corpus(lang: str, n: int) -> Corpus:
    """``n`` MultiCoNER-like sentences (6 entity types, BIO tags), the same on every call."""
    if lang not in _VOCABULARIES:
        raise ValueError(f"no synthetic corpus for language {lang!r}")
    vocab = _VOCABULARIES[lang]
    rng = random.Random(f"conll-sample-{lang}")
    types = sorted(vocab.entities)
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    for _ in range(n):
        tokens: list[str] = []
        labels: list[str] = []
        for _ in range(rng.randint(*vocab.length)):
            roll = rng.random()
            if roll < 0.15:
                kind = rng.choice(types)
                span = _tokens(lang, rng.choice(vocab.entities[kind]))
                tokens += span
                labels += [f"B-{kind}"] + [f"I-{kind}"] * (len(span) - 1)
                continue
            if roll < 0.25:
                span = [rng.choice(vocab.marks)]
            elif roll < 0.3:
                span = _tokens(lang, rng.choice(vocab.numbers))
            else:
                span = _tokens(lang, rng.choice(vocab.words))
            tokens += span
            labels += ["O"] * len(span)
        sentences.append([*tokens, vocab.stop])
        tags.append([*labels, "O"])
    return sentences, tags


@pytest.fixture(scope="session")
def conll_sample() -> Callable[[str, int], Corpus]:
    """``conll_sample(lang, limit)``: ``limit`` synthetic MultiCoNER-style sentences (es, zh).

    Deterministic; accents, inverted marks, numbers, full-width punctuation, traditional
    characters and Latin runs inside Chinese, multi-token entities of all six types.
    """
    cache: dict[tuple[str, int], Corpus] = {}

    def sample(lang: str, limit: int = 300) -> Corpus:
        if (lang, limit) not in cache:
            cache[lang, limit] = _synthetic_corpus(lang, limit)
        sentences, tags = cache[lang, limit]
        return [list(s) for s in sentences], [list(t) for t in tags]

    return sample


# Names, places and bands in a fixed pattern: a tiny model learns it to F1 1.0 in a few seconds.
_NAMES = ("ana", "luis", "marta", "pedro", "sofia")
_PLACES = ("lima", "quito", "madrid", "bogota", "cusco")
_BANDS = ("the beatles", "los prisioneros", "soda stereo")


def _toy_sentence(sid: str, name: str, place: str, band: str | None) -> Sentence:
    """ "<name> vive en <place>", then " y escucha <band>" when a band is given."""
    tokens, tags = [name, "vive", "en", place], ["B-PER", "O", "O", "B-LOC"]
    if band is not None:
        words = band.split()
        tokens += ["y", "escucha", *words]
        tags += ["O", "O", "B-GRP"] + ["I-GRP"] * (len(words) - 1)
    return Sentence(id=sid, tokens=tuple(tokens), tags=tuple(tags))


def _toy_sentences(n: int) -> list[Sentence]:
    return [
        _toy_sentence(f"s{i}", _NAMES[i % 5], _PLACES[(i * 2) % 5], _BANDS[i % 3]) for i in range(n)
    ]


@pytest.fixture(scope="session")
def toy_corpus() -> Callable[[int], list[Sentence]]:
    """``toy_corpus(n)``: ``n`` Spanish sentences "<name> vive en <place> y escucha <band>"."""
    return _toy_sentences


def _toy_training_corpus() -> list[Sentence]:
    """:func:`toy_corpus` (20) plus every name with every place, with and without a band.

    The tests ask the trained tagger about pairs such as "marta vive en quito" that the 20
    sentences never hold; trained on those 20 alone, whether it generalised to them depended
    on the CPU's float rounding (CI's machine once tagged only the name).
    """
    pairs = [(a, b) for a in range(5) for b in range(5)]
    full = [_toy_sentence(f"f{a}{b}", _NAMES[a], _PLACES[b], _BANDS[(a + b) % 3]) for a, b in pairs]
    short = [_toy_sentence(f"p{a}{b}", _NAMES[a], _PLACES[b], None) for a, b in pairs]
    return _toy_sentences(20) + full + short


# ---------------------------------------------------------------------------- tokenizers, models


@pytest.fixture(scope="session")
def e5_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only the multilingual-e5-small tokenizer files (provisioned, ~3 s)."""
    return provision_tokenizer(tmp_path_factory.mktemp("e5") / "tokenizer")


@pytest.fixture(scope="session")
def e5_tokenizer(e5_tokenizer_dir: Path) -> Any:
    """The multilingual-e5-small (XLM-R unigram) fast tokenizer."""
    return load_tokenizer(str(e5_tokenizer_dir))


@pytest.fixture(scope="session")
def minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 fast tokenizer (uncased English WordPiece)."""
    return load_tokenizer(str(minilm_dir()))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the MiniLM tokenizer. Read-only: copy it
    before changing its files."""
    return tiny_random_bert(minilm_dir(), tmp_path_factory.mktemp("tiny-bert") / "bert")


@pytest.fixture(scope="session")
def tiny_e5_bert_dir(tmp_path_factory: pytest.TempPathFactory, e5_tokenizer_dir: Path) -> Path:
    """A tiny random BERT (hidden 32) with the e5 tokenizer and its 250k-piece vocabulary.
    Read-only: copy it before changing its files."""
    return tiny_random_bert(e5_tokenizer_dir, tmp_path_factory.mktemp("tiny-e5") / "bert")


@pytest.fixture(scope="session")
def toy_train_config() -> TrainConfig:
    """Settings under which a tiny BERT learns :func:`toy_corpus` in seconds, on the CPU."""
    return TrainConfig(
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


@pytest.fixture(scope="session")
def trained_tagger_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path, toy_train_config: TrainConfig
) -> Path:
    """A saved bert_crf tagger over :func:`tiny_bert_dir` that tags :func:`toy_corpus`, and every
    name-lives-in-place sentence of its words, exactly."""
    out = tmp_path_factory.mktemp("trained") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tagger = build_model(
            str(tiny_bert_dir), DataConfig().tags, ModelConfig(dropout=0.0), lang="es"
        )
        corpus = _toy_training_corpus()
        result = fit(tagger, corpus, corpus, toy_train_config, out, DataConfig().entity_types)
    finally:
        torch.set_num_threads(before)
    assert result.best_f1 == pytest.approx(1.0), "the toy tagger did not learn the toy corpus"
    return out / "model"


@pytest.fixture
def tiny_bert_copy(tiny_bert_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of :func:`tiny_bert_dir`."""
    return Path(shutil.copytree(tiny_bert_dir, tmp_path / "tiny-bert"))
