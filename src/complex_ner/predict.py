"""Raw text in, entities out: MultiCoNER-style tokenization and entity extraction.

Kept free of Prefect, Great Expectations, DVC and MLflow imports: this is the prediction path,
and its cold start is measured.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Spanish (and other space-separated languages): words, numbers and single punctuation marks,
# as MultiCoNER splits them ("el" "rey" "," "dijo" ...).
_WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)
# Chinese: one token per CJK character; Latin-script words and numbers stay whole.
_ZH = re.compile(r"[A-Za-z0-9\u00c0-\u024f]+(?:[-'.][A-Za-z0-9\u00c0-\u024f]+)*|\S", re.UNICODE)
CHAR_LANGUAGES = frozenset({"zh", "ja"})


@dataclass(frozen=True)
class Token:
    """A token and its character span in the original text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Entity:
    """One predicted entity; ``end`` and ``token_end`` are exclusive."""

    text: str
    type: str
    start: int
    end: int
    token_start: int
    token_end: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenize(text: str, lang: str) -> list[Token]:
    """Split raw text the way MultiCoNER's data is split, keeping character offsets.

    Offsets index the original string, so ``text[t.start:t.end]`` is the token before
    lowercasing (see :func:`model_words`).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    pattern = _ZH if lang in CHAR_LANGUAGES else _WORD
    return [Token(m.group(0), m.start(), m.end()) for m in pattern.finditer(text)]


def model_words(tokens: Sequence[Token], lang: str) -> list[str]:
    """The words the model sees: lowercased (MultiCoNER is all lowercase) and NFC-normalised."""
    return [unicodedata.normalize("NFC", t.text).lower() for t in tokens]


def entities_from_tags(
    tags: Sequence[str],
    tokens: Sequence[Token] | None = None,
    text: str | None = None,
    marginals: Sequence[Sequence[float]] | None = None,
    tag_index: dict[str, int] | None = None,
    words: Sequence[str] | None = None,
) -> list[Entity]:
    """Strict IOB2 entities of one sentence with their offsets and confidence.

    Confidence is the mean, over the entity's tokens, of the marginal probability of the
    predicted tag (CRF forward-backward or softmax); 1.0 when no marginals are given.
    Character offsets refer to ``text`` when ``tokens`` carry spans into it; for pre-tokenized
    input they refer to the words joined by single spaces.
    """
    if tokens is None:
        if words is None:
            raise ValueError("give tokens or words")
        pos, built = 0, []
        for w in words:
            built.append(Token(w, pos, pos + len(w)))
            pos += len(w) + 1
        tokens = built
        text = " ".join(words)
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(tokens)} tokens")
    out: list[Entity] = []
    i = 0
    while i < len(tags):
        tag = tags[i]
        if not tag.startswith("B-"):
            i += 1  # strict IOB2: decoding never emits a stray I-X
            continue
        kind, j = tag[2:], i + 1
        while j < len(tags) and tags[j] == f"I-{kind}":
            j += 1
        conf = 1.0
        if marginals is not None and tag_index is not None:
            probs = [marginals[k][tag_index[tags[k]]] for k in range(i, j)]
            conf = float(sum(probs) / len(probs))
        start, end = tokens[i].start, tokens[j - 1].end
        span = text[start:end] if text is not None else " ".join(t.text for t in tokens[i:j])
        out.append(Entity(span, kind, start, end, i, j, round(conf, 6)))
        i = j
    return out
