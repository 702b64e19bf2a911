"""The CoNLL reader fuzzed: random bytes, encodings, line endings, huge lines, NUL bytes, tags
and headers of every shape.

Whatever the file holds, the reader returns sentences that point at the right lines, or raises
one :class:`DataFormatError` naming the file and a line of it, with a message of bounded size.
Nothing else escapes, and the whole-file and streaming readers agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from complex_ner.core.config import DataConfig
from complex_ner.domain.data import (
    DataFormatError,
    Sentence,
    format_conll,
    iter_conll,
    parse_conll,
    read_conll,
)
from tests.fuzzing import profiles, tally

TAGS = DataConfig().tags
COLUMNS = re.compile(r"[ \t]+")
#: Longest error message allowed, besides the path: a line can be megabytes long.
MAX_MESSAGE = 300

# Characters chosen to break things: NUL and other controls, BOMs, zero-width and combining
# marks, non-breaking and ideographic spaces, right-to-left text, emoji (astral plane), CJK.
NASTY = "\x00\x01\x0b\x0c\x1b\x7f\x85\ufeff\u200b\u200d\u0301\u00a0\u3000\u2028\u202e😀👩‍🚀é北ا"
chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from(NASTY))
benign = st.characters(codec="utf-8", exclude_categories=("Cc", "Zs", "Zl", "Zp"))


def sometimes_nasty(size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Text of ``benign`` characters, one time in five of any (controls, spaces, marks...)."""
    return st.integers(0, 4).flatmap(
        lambda k: st.text(chars if k == 0 else benign, min_size=min_size, max_size=size)
    )


token = sometimes_nasty(10, min_size=1)
ident = sometimes_nasty(8)
tag = st.one_of(
    st.sampled_from(TAGS),
    st.sampled_from(["B-", "I-", "-", "B-per", "b-PER", "X-LOC", "B-PER-X", "B-PER\u00a0", "_"]),
    sometimes_nasty(8),
)
header = st.one_of(
    st.builds(lambda i, d: f"# id {i}\tdomain={d}", ident, ident),
    st.builds(lambda i: f"# id {i}", ident),
    st.sampled_from(["#", "# id", "#\tdomain=x", "# domain=train", "#id x", "# id a b c", "# x"]),
    st.text(chars, max_size=20).map(lambda t: "#" + t),
)
token_line = st.one_of(
    st.builds(lambda t, g: f"{t} _ _ {g}", token, tag),
    st.builds(lambda t, g: f"{t}\t{g}", token, tag),
    st.builds(
        lambda t, g, sep: sep.join([t, "_", "_", g]), token, tag, st.sampled_from([" ", "\t", "  "])
    ),
    token,
    st.just("-DOCSTART- O"),
    st.text(chars, max_size=30),
)
huge_line = st.builds(
    lambda n, t: "x" * n + t, st.integers(5_000, 200_000), st.sampled_from([" _ _ O", "", " a b"])
)
normal_line = st.one_of(
    header, token_line, token_line, st.sampled_from(["", "", " ", "\t", " \t "])
)
line = st.integers(0, 19).flatmap(lambda k: huge_line if k == 0 else normal_line)
ending = st.sampled_from(["\n"] * 6 + ["\r\n"] * 3 + ["\r", "\n\n"])
encoding = st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1", "gb18030", "cp1252"])


@st.composite
def conll_bytes(draw: st.DrawFn) -> bytes:
    """A file of generated lines, endings and encodings, sometimes damaged afterwards."""
    text = "".join(draw(line) + draw(ending) for _ in range(draw(st.integers(0, 30))))
    if draw(st.booleans()):
        text = text.rstrip("\n")  # no final newline
    data = text.encode(draw(encoding), errors="replace")
    damage = draw(st.sampled_from(["none"] * 5 + ["truncate", "insert", "flip"]))
    if data and damage == "truncate":  # a write cut short, possibly inside a character
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "insert":  # NUL runs and stray bytes
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\x00" * 8, b"\xff", b"\xc3", b"\r", b"\x1a"]))
            + data[at:]
        )
    elif data and damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data


def check_read(path: Path, data: bytes, labeled: bool) -> str:
    """Read ``data`` from ``path`` both ways; check the outcome; name it for the tally."""
    path.write_bytes(data)
    lines = data.split(b"\n")
    try:
        sentences = read_conll(path, labeled=labeled)
    except DataFormatError as exc:
        check_error(exc, path, len(lines))
        with pytest.raises(DataFormatError) as streamed:
            list(iter_conll(path, labeled=labeled))
        check_error(streamed.value, path, len(lines))
        return outcome(exc)
    assert list(iter_conll(path, labeled=labeled)) == sentences
    check_sentences(sentences, lines, path, labeled)
    return "result"


def outcome(exc: Exception) -> str:
    """The kind of a clear error, for the tally: its message's first words."""
    message = str(exc).split(": ", 1)[-1]
    return "error: " + re.match(r"[a-zA-Z \-]*", message).group().strip()[:32]


def check_error(exc: DataFormatError, path: Path, n_lines: int) -> None:
    message = str(exc)
    assert message.startswith(f"{path}:{exc.line}: "), message[:200]
    assert exc.line is not None and 1 <= exc.line <= n_lines + 1
    assert len(message) <= len(str(path)) + MAX_MESSAGE, message[:200]


def check_sentences(
    sentences: list[Sentence], lines: list[bytes], path: Path, labeled: bool
) -> None:
    """Every sentence non-empty, ids unique, and each token found on the line it names."""
    assert len({s.id for s in sentences}) == len(sentences)
    for s in sentences:
        assert s.tokens and s.source == str(path) and s.line is not None
        assert s.tags is None or len(s.tags) == len(s.tokens)
        if labeled:
            assert s.tags is not None
        for i, tok in enumerate(s.tokens):
            assert tok and not re.search(r"[ \t\x00-\x08\x0a-\x1f\x7f-\x9f]", tok)
            raw = lines[s.line - 1 + i].decode("utf-8").removeprefix("\ufeff")
            fields = COLUMNS.split(raw.rstrip("\r").strip(" \t"))
            assert fields[0] == tok, (s.line + i, raw[:80], tok)
            if s.tags is not None:
                assert fields[-1] == s.tags[i]


@pytest.mark.parametrize("profile", profiles(fast=150, long=5000))
def test_generated_files_read_or_fail_naming_file_and_line(tmp_path: Path, profile) -> None:
    @profile
    @given(data=conll_bytes(), labeled=st.booleans())
    def run(data: bytes, labeled: bool) -> None:
        tally("reader: generated CoNLL files", check_read(tmp_path / "in.conll", data, labeled))

    run()


@pytest.mark.parametrize("profile", profiles(fast=100, long=3000))
def test_random_bytes_read_or_fail_naming_file_and_line(tmp_path: Path, profile) -> None:
    @profile
    @given(data=st.binary(max_size=4096), labeled=st.booleans())
    def run(data: bytes, labeled: bool) -> None:
        tally("reader: random bytes", check_read(tmp_path / "in.conll", data, labeled))

    run()


clean_token = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=10,
).filter(lambda t: t != "-DOCSTART-" and not t.startswith("#") and t.strip() == t)


@st.composite
def clean_sentences(draw: st.DrawFn) -> list[Sentence]:
    out = []
    for i in range(draw(st.integers(1, 8))):
        words = draw(st.lists(clean_token, min_size=1, max_size=12))
        tags = draw(st.lists(st.sampled_from(TAGS), min_size=len(words), max_size=len(words)))
        domain = draw(st.one_of(st.none(), st.sampled_from(["train", "dev", "wiki"])))
        out.append(Sentence(f"s-{i}", tuple(words), tuple(tags), domain))
    return out


@pytest.mark.parametrize("profile", profiles(fast=100, long=3000))
def test_any_written_corpus_reads_back_exactly(profile) -> None:
    @profile
    @given(sentences=clean_sentences(), crlf=st.booleans())
    def run(sentences: list[Sentence], crlf: bool) -> None:
        text = format_conll(sentences)
        back = parse_conll(text.replace("\n", "\r\n") if crlf else text, "w.conll", tagset=TAGS)
        assert back == sentences
        tally("reader: written corpus round trip", "result")

    run()


def test_nul_run_and_lone_carriage_return_are_named() -> None:
    with pytest.raises(DataFormatError, match=r"^x\.conll:2: control character '\\x00'"):
        parse_conll("# id a\nla\x00\x00 _ _ O\n", "x.conll")
    with pytest.raises(DataFormatError, match=r"^x\.conll:1: control character '\\r'.*column 9"):
        parse_conll("la _ _ O\rcasa _ _ O\n", "x.conll")


def test_a_huge_line_is_quoted_short() -> None:
    with pytest.raises(DataFormatError) as info:
        parse_conll("# id a\n" + "x" * 1_000_000 + "\n", "x.conll")
    assert str(info.value).endswith("... (1,000,000 characters)")
    assert len(str(info.value)) < 200


def test_docstart_inside_a_sentence_ends_it() -> None:
    sents = parse_conll("la O\ncasa O\n-DOCSTART- O\nuno O\n", "x.conll")
    assert [(s.tokens, s.line) for s in sents] == [(("la", "casa"), 1), (("uno",), 4)]
