from pathlib import Path

import pytest

from complex_ner.core.config import DataConfig
from complex_ner.core.io import atomic_write_text
from complex_ner.domain.data import (
    DataFormatError,
    Sentence,
    format_conll,
    iter_conll,
    parse_conll,
    read_conll,
    write_conll,
)

TAGS = DataConfig().tags
SAMPLE = (
    "# id aaa-1\tdomain=train\n"
    "la _ _ O\n"
    "casa _ _ B-LOC\n"
    "blanca _ _ I-LOC\n"
    "\n"
    "# id bbb-2\tdomain=dev\n"
    "# _ _ O\n"
    "uno _ _ B-CW\n"
    "\n"
)


def test_parse_multiconer_keeps_ids_domains_and_lines() -> None:
    sents = parse_conll(SAMPLE, "x.conll", tagset=TAGS)
    assert [s.id for s in sents] == ["aaa-1", "bbb-2"]
    assert [s.domain for s in sents] == ["train", "dev"]
    assert sents[0].tokens == ("la", "casa", "blanca")
    assert sents[0].tags == ("O", "B-LOC", "I-LOC")
    assert sents[1].tokens == ("#", "uno")  # "#" is a token, not a header
    assert (sents[0].line, sents[1].line) == (2, 7)


def test_crlf_bom_and_trailing_spaces_are_tolerated() -> None:
    messy = "\ufeff" + SAMPLE.replace("\n", "  \r\n")
    assert parse_conll(messy, "x.conll") == parse_conll(SAMPLE, "x.conll")


def test_two_column_conll_with_docstart() -> None:
    text = "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\n"
    sents = parse_conll(text, "c.conll")
    assert [s.tokens for s in sents] == [("EU", "rejects"), ("Peter",)]
    assert [s.tags for s in sents] == [("B-ORG", "O"), ("B-PER",)]
    assert len({s.id for s in sents}) == 2 and all(s.domain is None for s in sents)


def test_writer_reproduces_the_official_format() -> None:
    assert format_conll(parse_conll(SAMPLE, "x.conll")) == SAMPLE


def test_writer_writes_predictions_keyed_by_id(tmp_path: Path) -> None:
    sents = parse_conll(SAMPLE, "x.conll")
    out = tmp_path / "pred.conll"
    write_conll(out, sents, tags=[["O", "O", "O"], ["O", "B-PER"]])
    again = read_conll(out)
    assert [s.id for s in again] == ["aaa-1", "bbb-2"]
    assert again[1].tags == ("O", "B-PER")
    with pytest.raises(ValueError, match="sentence 'aaa-1': 2 tags for 3 tokens"):
        format_conll(sents, tags=[["O", "O"], ["O", "O"]])


def test_unlabelled_test_files() -> None:
    sents = parse_conll("# id t1\tdomain=test\nhola\nmundo\n\n", "t.conll", labeled=False)
    assert sents[0].tokens == ("hola", "mundo") and sents[0].tags is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# id a\tdomain=train\nla _ _ O\ncasa\n\n", 3, "token line without a tag: 'casa'"),
        ("# id a\tdomain=train\nla _ _ B-FOO\n\n", 2, "unknown tag 'B-FOO'"),
        ("# id a\tdomain=train\nla _ _ O\n\n#\tdomain=train\nx _ _ O\n", 4, "header without an id"),
        ("# id a\tdomain=train\nla _ _ O\n\n# id a\tdomain=train\nx _ _ O\n", 4, "duplicate"),
        ("# id a\tdomain=train\nla x _ _ O\n", 2, "got 5 fields"),
        ("# id a\tdomain=train\n\n# id b\nx _ _ O\n", 1, "sentence 'a' has no tokens"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DataFormatError, match=message) as info:
        parse_conll(text, "bad.conll", tagset=TAGS)
    assert str(info.value).startswith(f"bad.conll:{line}: ")
    assert info.value.line == line


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conll"
    bad.write_bytes(b"# id a\tdomain=train\nla _ _ O\ncaf\xe9 _ _ O\n\n")
    with pytest.raises(DataFormatError, match=r"bad\.conll:3: bytes that are not UTF-8"):
        read_conll(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nope\.conll: file not found"):
        read_conll(tmp_path / "nope.conll")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.conll"
    target.write_text("old", encoding="utf-8")
    bad = Sentence(id="x", tokens=("a",), tags=None)
    with pytest.raises(ValueError, match="has no tags"):
        write_conll(target, [bad])
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"


def test_streaming_reader_matches_and_names_lines(tmp_path: Path) -> None:
    good = tmp_path / "good.conll"
    good.write_text("\ufeff" + SAMPLE.replace("\n", "\r\n"), encoding="utf-8")
    assert list(iter_conll(good)) == read_conll(good) == parse_conll(SAMPLE)
    bad = tmp_path / "bad.conll"
    bad.write_bytes(SAMPLE.encode() + b"# id c\tdomain=x\nca\xff _ _ O\n\n")
    stream = iter_conll(bad)
    assert [s.id for s in [next(stream), next(stream)]] == ["aaa-1", "bbb-2"]
    with pytest.raises(DataFormatError, match=r"bad\.conll:11: bytes that are not UTF-8"):
        next(stream)
