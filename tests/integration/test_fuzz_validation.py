"""The data gate fuzzed: generated corpora with tags, tokens, ids and headers of every shape go
through ingest and the Great Expectations gate.

Outcome: the gate passes, or fails with examples that point at the file and line holding the
bad value, or ingest refuses the file naming its line. Nothing else escapes, and no temporary
or half-written report is left behind.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from complex_ner.core.config import DataConfig, load_params
from complex_ner.domain.data import DataFormatError, ingest
from complex_ner.domain.validation import ValidationFailed, validate_data
from tests.fuzzing import profiles, tally

pytestmark = pytest.mark.integration
TAGS = DataConfig().tags
COLUMNS = re.compile(r"[ \t]+")
ODD = "\x00\u00a0\u3000\u200b\u0301\ufeff\u202e😀#"
token = st.one_of(
    st.sampled_from(["ana", "lima", "la", "de", "北", "京", "人", "abc", ",", "。", "#"]),
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Zs", "Zl", "Zp")),
        min_size=1,
        max_size=6,
    ).filter(lambda t: not t.startswith("#") and t != "-DOCSTART-"),
    st.text(st.sampled_from(ODD), min_size=1, max_size=3),
)
#: A sentence with every entity type, so that some generated corpora can pass the gate.
ALL_TYPES = {
    "es": "ana _ _ B-PER\nlima _ _ B-LOC\nreal _ _ B-GRP\nsony _ _ B-CORP\niphone _ _ B-PROD\n"
    "hamlet _ _ B-CW\n",
    "zh": "王 _ _ B-PER\n京 _ _ B-LOC\n人 _ _ B-GRP\n索 _ _ B-CORP\n机 _ _ B-PROD\n书 _ _ B-CW\n",
}
tag = st.one_of(
    st.sampled_from(TAGS),
    st.sampled_from(TAGS),
    st.sampled_from(TAGS),
    st.sampled_from(["B-FOO", "b-per", "I-", "B-", "-", "B-PER-X", "o", "B-LOC\u00a0"]),
)


@st.composite
def corpus(draw: st.DrawFn) -> tuple[str, str]:
    """(language, train file text): sentences of 1-9 tokens, ids that may repeat."""
    lang = draw(st.sampled_from(["es", "zh"]))
    out = [f"# id all-types\tdomain=train\n{ALL_TYPES[lang]}\n"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 12))):
        # Mostly unique ids; one sentence in ten reuses one (ingest names the duplicate).
        sid = draw(
            st.integers(0, 9).flatmap(lambda k: st.just("a") if k == 0 else st.uuids().map(str))
        )
        header = draw(
            st.integers(0, 9).flatmap(
                lambda k, sid=sid: (
                    st.sampled_from([f"# id {sid}", f"#id {sid}", ""])
                    if k == 0
                    else st.just(f"# id {sid}\tdomain=train")
                )
            )
        )
        words = draw(st.lists(st.tuples(token, tag), min_size=1, max_size=9))
        body = "".join(f"{w} _ _ {t}\n" for w, t in words)
        out.append((header + "\n" if header else "") + body + "\n")
    return lang, "".join(out)


def check_examples(report: dict, lang: str) -> None:
    """Each located example of a failed expectation names a line that holds what it says."""
    for e in report["languages"][lang]["expectations"]:
        for ex in e["examples"] if not e["success"] else []:
            if "missing" in ex:
                continue
            lines = Path(ex["file"]).read_text(encoding="utf-8").split("\n")
            assert 1 <= ex["line"] <= len(lines), ex
            fields = COLUMNS.split(lines[ex["line"] - 1].strip(" \t\r").removeprefix("\ufeff"))
            value = ex["value"]
            if "token" in value:
                assert fields[0] == value["token"], (ex, fields)
            if "tag" in value:
                assert fields[-1] == value["tag"], (ex, fields)
            if "transition" in value:
                assert fields[-1] == value["transition"].split(" ", 1)[1], (ex, fields)
            if e["table"] == "sentences":  # the sentence's first token line
                assert len(fields) == 4, (ex, fields)
                before = lines[ex["line"] - 2] if ex["line"] > 1 else ""
                assert before.strip() == "" or before.startswith("#"), (ex, before)


@pytest.mark.parametrize("profile", profiles(fast=5, long=80))
def test_generated_corpora_pass_or_fail_naming_file_and_line(tmp_path: Path, profile) -> None:
    @profile
    @given(case=corpus())
    def run(case: tuple[str, str]) -> None:
        lang, text = case
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "src" / lang).mkdir(parents=True)
        (root / "src" / lang / "train.conll").write_text(text, encoding="utf-8")
        (root / "params.yaml").write_text(
            f"data: {{source_dir: src, languages: [{lang}]}}\n", encoding="utf-8"
        )
        params = load_params(root / "params.yaml")
        try:
            ingest(params)
        except DataFormatError as exc:
            assert str(exc).startswith(f"{root / 'src' / lang / 'train.conll'}:{exc.line}: ")
            assert not (root / "data" / "raw").exists()  # nothing half-ingested
            tally("validation gate", "error at ingest")
            return
        try:
            validate_data(params)
            outcome = "passed"
        except ValidationFailed as exc:
            assert "FAILED" in exc.summary
            outcome = "failed, located"
        report_dir = root / "reports" / "validation"
        report = json.loads((report_dir / "results.json").read_text(encoding="utf-8"))
        assert report["success"] is (outcome == "passed")
        check_examples(report, lang)
        assert (report_dir / "data_docs" / "index.html").is_file()
        assert not list(report_dir.glob(".data_docs.*")) and not list(report_dir.glob(".*.tmp*"))
        tally("validation gate", outcome)

    run()
