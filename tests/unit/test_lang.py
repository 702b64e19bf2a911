"""Tests of the language rules: tokenizers, the no-space join rule, the CJK class, questions."""

from __future__ import annotations

import random
import re

import pytest

from complex_ner.core.lang import (
    CJK_IDEOGRAPH_REGEX,
    is_question,
    joins_without_space,
    token_spans,
)


def tokens(text: str, lang: str) -> list[str]:
    return [text[start:end] for start, end in token_spans(text, lang)]


def test_chinese_tokens_are_characters_but_latin_runs_stay_whole() -> None:
    text = "我在iPhone 15上看了《北京》, e.g. Jean-Luc's 3.5"
    assert tokens(text, "zh") == [
        *"我在",
        "iPhone",
        "15",
        *"上看了《北京》,",
        "e.g",
        ".",
        "Jean-Luc's",
        "3.5",
    ]


def test_spaced_languages_split_words_numbers_and_punctuation() -> None:
    text = "Ana vive en Lima, ¿no?  El 3-2 fue  épico. l'Or"
    assert tokens(text, "es") == [
        *("Ana", "vive", "en", "Lima", ",", "¿", "no", "?"),
        *("El", "3-2", "fue", "épico", ".", "l'Or"),
    ]
    # Written without spaces, a Chinese run is one "word" to a spaced language's tokenizer.
    assert tokens("北京大学", "es") == ["北京大学"]


def test_token_spans_cover_every_non_space_character_once() -> None:
    rng = random.Random(0)
    alphabet = "北京大学東京かなカナ한국abcXYZ019é-'., 。\u3000\t"
    for lang in ("zh", "es"):
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
            spans = token_spans(text, lang)
            assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:], strict=False))
            assert "".join(text[a:b] for a, b in spans) == "".join(text.split())
            if lang == "zh":
                # Every CJK ideograph is a token of its own.
                for a, b in spans:
                    if re.search(CJK_IDEOGRAPH_REGEX, text[a:b]):
                        assert b - a == 1


def test_joins_without_space() -> None:
    assert joins_without_space("北京", "大学")
    assert joins_without_space("東京", "かな")  # kana
    assert joins_without_space("北", "。")  # CJK punctuation
    assert joins_without_space("\U00020000", "北")  # supplementary-plane ideograph
    assert not joins_without_space("北京", "iPhone")
    assert not joins_without_space("iPhone", "北京")
    assert not joins_without_space("한국", "서울")  # Korean is written with spaces
    assert not joins_without_space("", "北")


def test_cjk_ideograph_regex() -> None:
    pattern = re.compile(CJK_IDEOGRAPH_REGEX)
    for text in ("北京", "abc 京", "\U00020000"):
        assert pattern.search(text)
    for text in ("abc", "かなカナ", "한국", "。《》", ""):
        assert not pattern.search(text)


def test_every_ideograph_joins_without_space() -> None:
    # The gate's ideograph class is part of the no-space class the joining uses.
    pattern = re.compile(CJK_IDEOGRAPH_REGEX)
    for code in range(0x2E80, 0x30000):
        char = chr(code)
        if pattern.match(char):
            assert joins_without_space(char, char), hex(code)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¿ dónde nació shakira", True),  # an opening mark is enough
        ("quién escribió cien años de soledad", True),  # lowercased, no punctuation
        ("cuántos goles marcó messi en 2012", True),
        ("por qué se hundió el titanic", True),
        ("qué es un san miguel de pallaques", True),
        ("what's my line ? fue un programa", True),  # a question mark anywhere
        ("el museo del prado está en madrid .", False),
        ("la casa que compró en lima", False),  # unaccented relative "que"
        ("por la mañana llegó a madrid", False),  # "por" without "qué"
        ("", False),
    ],
)
def test_spanish_questions(text: str, expected: bool) -> None:
    assert is_question(text.split(), "es") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("什么是變相怪傑", True),
        ("谁写了红楼梦", True),
        ("哪里班台", True),
        ("太阳为什么会发光", True),
        ("多少钱一个大同煤礦集團成本", True),
        ("你还好吗", True),  # final particle
        ("你还好吗。", True),  # final particle before closing punctuation
        ("这是真的？", True),
        ("把干冰放进去会发生糖漿?", True),
        ("北京是中国的首都。", False),
        ("吗啡是一种药物", False),  # 吗 (morphine) not at the end
        ("在1925年的几个月里他住在伦敦", False),  # 几 "several" is not a question word
        ("它被发现在新几内亚.", False),
    ],
)
def test_chinese_questions(text: str, expected: bool) -> None:
    assert is_question(tokens(text, "zh"), "zh") is expected


def test_other_languages_use_question_marks_only() -> None:
    assert is_question(["what", "is", "this", "?"], "en")
    assert not is_question(["what", "is", "this"], "en")
