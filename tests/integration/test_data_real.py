"""Reader, writer, ingest and split on the real MultiCoNER files."""

from pathlib import Path

import pytest

from complex_ner.core.config import load_params
from complex_ner.domain.data import format_conll, ingest, load_splits, read_conll, write_splits

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_round_trip_is_byte_identical(multiconer_dir: Path, lang: str) -> None:
    path = multiconer_dir / lang / "train.conll"
    sents = read_conll(path)
    headers = sum(line.startswith("# id ") for line in path.read_text("utf-8").splitlines())
    assert len(sents) == headers  # one sentence per header: none lost, none invented
    assert format_conll(sents).encode("utf-8") == path.read_bytes()


def make_project(tmp_path: Path, source: Path, extra: str = "") -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{source_dir: {source}}}\n{extra}", encoding="utf-8")
    return params


def test_ingest_split_deterministic_and_official_dev_kept_apart(
    tmp_path: Path, multiconer_dir: Path
) -> None:
    p = load_params(make_project(tmp_path, multiconer_dir))
    digests = ingest(p)
    assert set(digests) == {"es", "zh"}
    assert (tmp_path / "data/raw/es/train.conll").read_bytes() == (
        multiconer_dir / "es/train.conll"
    ).read_bytes()
    first = write_splits(p)
    a = (tmp_path / "data/processed/es/val.conll").read_bytes()
    write_splits(p)
    assert (tmp_path / "data/processed/es/val.conll").read_bytes() == a
    assert (tmp_path / "data/processed/es/heldout.conll").is_file()
    source = {s.id for s in read_conll(multiconer_dir / "es/train.conll")}
    for lang in ("es", "zh"):
        splits = load_splits(p, lang)
        train, val, held = ({s.id for s in splits[n]} for n in ("train", "val", "heldout"))
        assert first[lang] == {"train": len(train), "val": len(val), "heldout": len(held)}
        assert len(val) == len(held) == 1530  # exact sizes despite the grouped duplicates
        # Disjoint by id and by text: a repeated sentence sits in one split only.
        assert not train & val and not train & held and not val & held
        seen = {n: {s.tokens for s in splits[n]} for n in ("train", "val", "heldout")}
        assert not seen["train"] & (seen["val"] | seen["heldout"])
        assert not seen["val"] & seen["heldout"]
    assert train | val | held == {s.id for s in read_conll(multiconer_dir / "zh/train.conll")}
    splits = load_splits(p, "es")
    ids = {n: {s.id for s in splits[n]} for n in ("train", "val", "heldout")}
    assert ids["train"] | ids["val"] | ids["heldout"] == source  # a partition of the file

    # A user's download with an official dev file: dev becomes heldout (the reported split),
    # val is still a seeded hold-out of train.
    src = tmp_path / "download"
    (src / "es").mkdir(parents=True)
    rows = read_conll(multiconer_dir / "es/train.conll")
    (src / "es/train.conll").write_text(format_conll(rows[:200]), encoding="utf-8")
    (src / "es/dev.conll").write_text(format_conll(rows[200:250]), encoding="utf-8")
    user = tmp_path / "user"
    user.mkdir()
    q = load_params(make_project(user, src), ["data.languages=[es]"])
    ingest(q)
    s = load_splits(q, "es")
    assert [x.id for x in s["heldout"]] == [x.id for x in rows[200:250]]
    assert len(s["val"]) == 20
    assert {x.id for x in s["train"]} | {x.id for x in s["val"]} == {x.id for x in rows[:200]}
    assert not {x.id for x in s["train"]} & {x.id for x in s["val"]}
