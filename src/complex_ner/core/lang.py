"""Language rules: scripts written without spaces, CJK character classes, word tokenizers.

Every per-language rule lives here once: how raw text is split into MultiCoNER-style tokens,
which characters are joined without a space, which languages are segmented into words for
whole-word masking, which must be written in CJK ideographs, and what makes a sentence a
question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "CHAR_TOKENIZED_LANGUAGES",
    "CJK_IDEOGRAPH_REGEX",
    "IDEOGRAPHIC_LANGUAGES",
    "SEGMENTED_LANGUAGES",
    "is_question",
    "joins_without_space",
    "token_spans",
]

#: Languages written without spaces between words: MultiCoNER-style tokenization gives one token
#: per character (Latin-script words and numbers stay whole).
CHAR_TOKENIZED_LANGUAGES = frozenset({"zh", "ja"})
#: Languages whose per-character tokens are grouped into words by a segmenter (jieba, which
#: knows Chinese only), so pre-training can mask whole words.
SEGMENTED_LANGUAGES = frozenset({"zh"})
#: Languages written in CJK ideographs: every sentence holds at least one (a data-gate check).
IDEOGRAPHIC_LANGUAGES = frozenset({"zh"})

# CJK ideographs: extension A, the unified block, compatibility ideographs and the
# supplementary ideographic planes (extensions B and later).
_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
# Everything else written without spaces: CJK radicals, punctuation, kana, bopomofo, kanbun,
# strokes, enclosed and compatibility forms, Yijing symbols, vertical and fullwidth forms.
# Hangul is left out: Korean is written with spaces.
_OTHER_NO_SPACE = "\u2e80-\u312f\u3190-\u33ff\u4dc0-\u4dff\ufe30-\ufe4f\uff00-\uffef"

#: A regex matching one CJK ideograph (a string, so Great Expectations can carry it).
CJK_IDEOGRAPH_REGEX = f"[{_IDEOGRAPHS}]"
_NO_SPACE_CHAR = re.compile(f"[{_IDEOGRAPHS}{_OTHER_NO_SPACE}]")

# C0/C1 control characters (NUL, escape, DEL...) separate tokens like spaces and are never one:
# MultiCoNER holds none, and a token made of them could not be written back to a CoNLL file.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# Space-separated languages: words (inner hyphens, apostrophes and dots kept, "3-2", "d'Or"),
# numbers and single punctuation marks, as MultiCoNER splits them ("el" "rey" "," "dijo").
_WORD_TOKEN = re.compile(rf"\w+(?:[-'’.]\w+)*|[^\w\s{_CONTROL}]")
# Languages tokenized per character: one token per non-space character, except that Latin-script
# words and numbers stay whole ("iPhone", "15").
_CHAR_TOKEN = re.compile(
    rf"[A-Za-z0-9\u00c0-\u024f]+(?:[-'.][A-Za-z0-9\u00c0-\u024f]+)*|[^\s{_CONTROL}]"
)


def joins_without_space(left: str, right: str) -> bool:
    """Whether two adjacent words are written without a space between them.

    True when the last character of ``left`` and the first of ``right`` both belong to scripts
    written without spaces (so two Chinese characters join, a Chinese and a Latin word do not).
    """
    return bool(
        left and right and _NO_SPACE_CHAR.match(left[-1]) and _NO_SPACE_CHAR.match(right[0])
    )


def token_spans(text: str, lang: str) -> list[tuple[int, int]]:
    """Split raw text the way MultiCoNER's data of ``lang`` is split.

    Returns:
        The ``(start, end)`` character span in ``text`` of each token, in order.
    """
    pattern = _CHAR_TOKEN if lang in CHAR_TOKENIZED_LANGUAGES else _WORD_TOKEN
    return [m.span() for m in pattern.finditer(text)]


# Questions. MultiCoNER text is lowercased and often unpunctuated (search-style queries), so a
# question mark alone misses most questions: an interrogative word counts too.
_QUESTION_MARKS = frozenset({"?", "¿", "？"})
#: Spanish interrogatives (with their accent: unaccented "que", "como", "donde" are mostly
#: relative words) that open a question.
_ES_INTERROGATIVES = frozenset(
    {
        "qué",
        "quién",
        "quiénes",
        "cuál",
        "cuáles",
        "cómo",
        "dónde",
        "cuándo",
        "cuánto",
        "cuánta",
        "cuántos",
        "cuántas",
    }
)
#: Chinese question words, simplified and traditional, found anywhere in the sentence. 几 ("how
#: many") is left out: in MultiCoNER it is almost always 几个 "several", 几乎 "almost" or a
#: transliteration (几内亚 Guinea), 219 Chinese training sentences against about 30 questions.
_ZH_QUESTION_WORDS = (
    "什么",
    "什麼",
    "甚麼",
    "谁",
    "誰",
    "哪",
    "怎么",
    "怎麼",
    "为什么",
    "為什麼",
    "多少",
)
#: Sentence-final question particles (before any closing punctuation).
_ZH_FINAL_PARTICLES = ("吗", "嗎")
_TRAILING_PUNCT = "。.！!…~～ "


def is_question(tokens: Sequence[str], lang: str) -> bool:
    """Whether a tokenized sentence of ``lang`` is a question.

    Any language: a question mark (``?``, ``¿``, ``？``) anywhere. Spanish: or an interrogative
    first word (qué, quién, cuál, cómo, dónde, cuándo, cuánto ...) or ``por qué``. Chinese:
    or a question word anywhere (什么 谁 哪 怎么 为什么 多少) or 吗 ending the sentence. Other
    languages: question marks only.
    """
    if any(mark in tok for tok in tokens for mark in _QUESTION_MARKS):
        return True
    if not tokens:
        return False
    if lang == "es":
        first = tokens[0]
        return first in _ES_INTERROGATIVES or (
            first == "por" and len(tokens) > 1 and tokens[1] == "qué"
        )
    if lang == "zh":
        text = "".join(tokens)
        return any(w in text for w in _ZH_QUESTION_WORDS) or text.rstrip(_TRAILING_PUNCT).endswith(
            _ZH_FINAL_PARTICLES
        )
    return False
