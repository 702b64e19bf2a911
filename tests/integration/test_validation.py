"""The Great Expectations gate: each expectation shown failing on crafted files."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from complex_ner.cli import app
from complex_ner.core.config import load_params
from complex_ner.domain.data import Sentence, ingest
from complex_ner.domain.validation import (
    ValidationFailed,
    _run_gx,
    build_tables,
    require_validated,
    validate_data,
)

pytestmark = pytest.mark.integration

ALL_TYPES = (
    "# id good-1\tdomain=train\n"
    "ana _ _ B-PER\nen _ _ O\nlima _ _ B-LOC\n\n"
    "# id good-2\tdomain=train\n"
    "el _ _ O\nreal _ _ B-GRP\nmadrid _ _ I-GRP\nde _ _ O\nsony _ _ B-CORP\n\n"
    "# id good-3\tdomain=train\n"
    "un _ _ O\niphone _ _ B-PROD\ny _ _ O\nhamlet _ _ B-CW\n\n"
)
ES_TRAIN = ALL_TYPES + (
    "# id bad-tag\tdomain=train\n"  # line 19
    "hola _ _ O\nmundo _ _ B-FOO\n\n"  # B-FOO on line 21
    "# id bad-bio\tdomain=train\n"  # line 23
    "la _ _ O\ncasa _ _ I-LOC\n\n"  # I-LOC after O on line 25
    "# id bad-space\tdomain=train\n"  # line 27
    "a\u00a0b _ _ O\n\n"  # line 28
    "# id too-long\tdomain=train\n"  # first token on line 31
    + "".join(f"w{i} _ _ O\n" for i in range(7))
    + "\n"
)
ES_DEV = "# id good-1\tdomain=dev\nana _ _ B-PER\n\n"
ZH_TRAIN = (
    "# id zh-1\tdomain=train\n北 _ _ B-LOC\n京 _ _ I-LOC\n很 _ _ O\n大 _ _ O\n\n"
    "# id zh-2\tdomain=train\n王 _ _ B-PER\n在 _ _ O\n索 _ _ B-CORP\n尼 _ _ I-CORP\n\n"
    "# id zh-3\tdomain=train\n人 _ _ B-GRP\n和 _ _ O\n手 _ _ B-PROD\n机 _ _ I-PROD\n\n"
    "# id zh-latin\tdomain=train\nabc _ _ O\n\n"  # no CJK, line 20
)


def make_project(tmp_path: Path, files: dict[str, str], extra: str = "") -> Path:
    for rel, text in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text, encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text(
        "data: {source_dir: src}\nvalidate: {max_sentence_length: 6}\n" + extra, encoding="utf-8"
    )
    return params


def failures(report: dict, lang: str) -> dict[str, dict]:
    return {
        e["description"]: e for e in report["languages"][lang]["expectations"] if not e["success"]
    }


def test_each_expectation_fails_with_file_and_line(tmp_path: Path) -> None:
    params = load_params(
        make_project(
            tmp_path,
            {"es/train.conll": ES_TRAIN, "es/dev.conll": ES_DEV, "zh/train.conll": ZH_TRAIN},
        )
    )
    ingest(params)
    with pytest.raises(ValidationFailed) as info:
        validate_data(params)
    report = json.loads((tmp_path / "reports/validation/results.json").read_text("utf-8"))
    assert (tmp_path / "reports/validation/data_docs/index.html").is_file()
    assert report["success"] is False
    es, zh = failures(report, "es"), failures(report, "zh")
    raw = str(tmp_path / "data/raw/es/train.conll")

    def where(e: dict) -> set[tuple[str, int]]:
        return {(x["file"], x["line"]) for x in e["examples"]}

    assert where(es["tags in the tag set"]) == {(raw, 21)}
    bio = es["BIO well-formed (no I-X after O, at the start or after another type)"]
    assert (raw, 25) in where(bio)
    assert where(es["tokens non-empty and without whitespace"]) == {(raw, 28)}
    assert where(es["sentence length within bounds"]) == {(raw, 31)}
    shared = es["no sentence id shared between splits"]
    assert shared["unexpected_count"] == 2  # good-1 in train and in dev
    assert "every entity type present in train" not in es
    assert zh["every entity type present in train"]["examples"] == [{"missing": ["CW"]}]
    cjk = zh["Chinese sentences contain CJK characters (validate.min_ideographic_share of them)"]
    assert where(cjk) == {(str(tmp_path / "data/raw/zh/train.conll"), 20)}
    assert set(zh) == {
        "every entity type present in train",
        "Chinese sentences contain CJK characters (validate.min_ideographic_share of them)",
    }
    summary = info.value.summary
    assert "[es] FAILED" in summary and f"{raw}:21" in summary
    # The gate: nothing downstream runs on failed data.
    with pytest.raises(ValidationFailed, match="failed validation"):
        require_validated(params)


def test_duplicate_ids_within_a_split_fail(tmp_path: Path) -> None:
    params = load_params(make_project(tmp_path, {"es/train.conll": ALL_TYPES}))
    s = Sentence(id="dup", tokens=("a",), tags=("O",), source="f.conll", line=3)
    tables = {"es": build_tables({"train": [s, s], "val": []}, "es")}
    out = _run_gx(params, tables, tmp_path / "docs")["es"]
    dup = next(o for o in out if o.expectation == "expect_compound_columns_to_be_unique")
    assert not dup.success and dup.unexpected_count == 2
    assert dup.examples[0]["file"] == "f.conll" and dup.examples[0]["line"] == 3


def test_a_few_latin_only_chinese_sentences_pass_up_to_the_configured_share(
    tmp_path: Path,
) -> None:
    """The official Chinese split holds a few Latin-only titles; the gate allows a share."""
    params = load_params(make_project(tmp_path, {"es/train.conll": ALL_TYPES}))
    chinese = [Sentence(id=f"z{i}", tokens=("北", "京"), tags=("O", "O")) for i in range(99)]
    latin = Sentence(id="latin", tokens=("xbox", "one"), tags=("O", "O"), source="f", line=1)

    def cjk_check(share: float) -> Any:
        strict = params.model_copy(
            update={"validate": params.validate.model_copy(update={"min_ideographic_share": share})}
        )
        tables = {"zh": build_tables({"train": [*chinese, latin], "val": []}, "zh")}
        out = _run_gx(strict, tables, tmp_path / f"docs-{share}")["zh"]
        return next(o for o in out if o.column == "text")

    assert cjk_check(0.99).success
    failed = cjk_check(1.0)
    assert not failed.success and failed.unexpected_count == 1


def test_cli_validate_pass_then_gate_detects_changed_data(tmp_path: Path) -> None:
    zh_ok = ZH_TRAIN.replace("abc _ _ O", "好 _ _ O") + "# id zh-4\n书 _ _ B-CW\n\n"
    es_dev = "# id dev-1\tdomain=dev\nana _ _ B-PER\n\n"
    files = {"es/train.conll": ALL_TYPES, "es/dev.conll": es_dev, "zh/train.conll": zh_ok}
    params = make_project(tmp_path, files)
    runner = CliRunner()
    args = ["--params", str(params)]
    assert runner.invoke(app, ["ingest", *args]).exit_code == 0
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 0, result.output
    assert "[es] passed" in result.output and "[zh] passed" in result.output
    assert runner.invoke(app, ["split", *args]).exit_code == 0
    for split in ("train", "val", "heldout"):
        assert (tmp_path / f"data/processed/zh/{split}.conll").is_file()
    # es has an official dev file: it is the heldout split, as published.
    assert (tmp_path / "data/processed/es/heldout.conll").read_text("utf-8") == es_dev
    # Data edited after validation: the split stage refuses it.
    raw = tmp_path / "data/raw/es/train.conll"
    raw.write_text(raw.read_text("utf-8").replace("B-CW", "B-FOO"), encoding="utf-8")
    result = runner.invoke(app, ["split", *args])
    assert result.exit_code == 1
    assert "changed since it was validated" in result.output
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 1
    assert f"{raw}:" in result.output and "B-FOO" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"# id a\tdomain=train\nla _ _ O\ncasa\n\n", "train.conll:3: token line without a tag"),
        (b"#\tdomain=train\nla _ _ O\n\n", "train.conll:1: sentence header without an id"),
        (b"# id a\tdomain=train\nla _ _ O\ncaf\xe9 _ _ O\n\n", "train.conll:3: bytes that are not"),
    ],
)
def test_cli_bad_input_leaves_no_partial_output(
    tmp_path: Path, content: bytes, message: str
) -> None:
    params = make_project(tmp_path, {"es/train.conll": ALL_TYPES})
    (tmp_path / "src/zh").mkdir()
    (tmp_path / "src/zh/train.conll").write_bytes(content)
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "--params", str(params)])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "data").exists()  # es was fine, but nothing was written


def test_cli_missing_source_file(tmp_path: Path) -> None:
    params = make_project(tmp_path, {"es/train.conll": ALL_TYPES})
    result = CliRunner().invoke(app, ["ingest", "--params", str(params)])
    assert result.exit_code == 1
    assert "zh/train.conll: file not found" in result.output
