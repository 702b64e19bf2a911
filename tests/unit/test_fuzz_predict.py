"""Prediction fuzzed: the entity API, the pyfunc model and ``complex-ner predict``.

Inputs: empty and blank text, control characters, mixed scripts, emoji, lone surrogates,
100,000-character strings, non-strings, nested JSON, every input shape. Outcome: entities whose
offsets point into the input, or one clear error naming the row and the field; never another
exception.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from complex_ner.adapters.serving import LIMITS, NerPyfunc
from complex_ner.cli import app
from complex_ner.core.config import DataConfig
from complex_ner.core.paths import TAGGER_ARTIFACT
from complex_ner.engines.predict import InputError, load_tagger, predict_entities
from tests.fuzzing import profiles, tally

TYPES = set(DataConfig().entity_types)
NASTY = "\x00\x07\x0b\x1b\x7f\x85\ufeff\u200b\u200d\u0301\u00a0\u3000\u2028\u202e\ud800😀👩‍🚀"
WORDS = ["ana", "vive", "en", "lima", "luis", "quito", "soda", "stereo", "北京", "Москва", "مصر"]

# Text: words of the toy corpus (so entities come out), any code point, the nasty ones.
piece = st.one_of(
    st.sampled_from(WORDS),
    st.text(st.characters(), max_size=6),
    st.text(st.sampled_from(NASTY), min_size=1, max_size=3),
    st.sampled_from([" ", "  ", "\t", "\n", "\r\n", ".", "¿", "?", "-", "'"]),
)
short_text = st.one_of(
    st.lists(piece, max_size=20).map("".join),
    st.sampled_from(["", " ", "\t\n", "\x00", "😀" * 50]),
)
huge_text = st.integers(20_000, 100_000).map(lambda n: ("ana vive en 北京 😀 " * n)[:n])
text = st.integers(0, 29).flatmap(lambda k: huge_text if k == 0 else short_text)
word = st.one_of(st.sampled_from(WORDS), st.text(st.characters(), min_size=0, max_size=6))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
cell = st.one_of(text, text, json_value, st.lists(word, max_size=8), st.just(math.nan))
row = st.one_of(
    text,
    st.lists(word, max_size=12),
    st.fixed_dictionaries({"text": cell}),
    st.fixed_dictionaries({"tokens": cell}),
    json_value,
)


@st.composite
def model_input(draw: st.DrawFn) -> Any:
    """Every shape the API is handed: a DataFrame (as MLflow passes it), a list, a dict, a
    string, or something else entirely."""
    kind = draw(st.sampled_from(["frame_text", "frame_tokens", "frame_mixed", "list", "other"]))
    if kind == "frame_text":
        return pd.DataFrame({"text": draw(st.lists(cell, max_size=6))}, dtype=object)
    if kind == "frame_tokens":
        return pd.DataFrame({"tokens": draw(st.lists(cell, max_size=6))}, dtype=object)
    if kind == "frame_mixed":
        rows = draw(st.lists(st.tuples(cell, cell), max_size=6))
        columns = draw(st.sampled_from([["text", "tokens"], ["x", "y"], ["tokens", "text"]]))
        return pd.DataFrame(rows, columns=columns, dtype=object)
    if kind == "list":
        return draw(st.lists(row, max_size=6))
    return draw(st.one_of(row, json_value, st.binary(max_size=8)))


def rows_of(x: Any) -> list[Any]:
    if isinstance(x, pd.DataFrame):
        return x.to_dict("records")
    return [x] if isinstance(x, str | dict) else list(x)


def check_entities(x: Any, out: list[list[dict[str, Any]]]) -> None:
    """One entity list per row; each entity's offsets point at its text in the input."""
    rows = rows_of(x)
    assert len(out) == len(rows)
    for r, ents in zip(rows, out, strict=True):
        rec = r if isinstance(r, dict) else ({"tokens": r} if isinstance(r, list) else {"text": r})
        if isinstance(rec.get("tokens"), list | tuple):
            source = " ".join(rec["tokens"])
        else:
            source = rec.get("text")
        for e in ents:
            assert e["type"] in TYPES and 0.0 < e["confidence"] <= 1.0
            assert 0 <= e["token_start"] < e["token_end"]
            assert source[e["start"] : e["end"]] == e["text"]


@pytest.fixture(scope="module")
def tagger(trained_tagger_dir: Path) -> Any:
    return load_tagger(trained_tagger_dir, threads=1)


@pytest.mark.parametrize("profile", profiles(fast=120, long=4000))
def test_any_input_gives_entities_or_names_row_and_field(tagger: Any, profile) -> None:
    @profile
    @given(x=model_input(), batch_size=st.integers(1, 9))
    def run(x: Any, batch_size: int) -> None:
        try:
            out = predict_entities(tagger, x, batch_size)
        except InputError as exc:
            message = str(exc)
            assert message.startswith(("row ", "unsupported input type", "expected a ")), message
            assert len(message) < 300
            tally("predict_entities", "error: " + message.split(":")[0].split(" ")[0])
            return
        check_entities(x, out)
        tally("predict_entities", "result")

    run()


@pytest.fixture(scope="module")
def pyfunc(trained_tagger_dir: Path) -> NerPyfunc:
    model = NerPyfunc()
    model.load_context(SimpleNamespace(artifacts={TAGGER_ARTIFACT: str(trained_tagger_dir)}))
    return model


@pytest.mark.parametrize("profile", profiles(fast=80, long=3000))
def test_pyfunc_answers_or_raises_a_400_error(pyfunc: NerPyfunc, profile) -> None:
    @profile
    @given(
        x=model_input(),
        params=st.one_of(st.none(), st.fixed_dictionaries({"batch_size": json_value})),
    )
    def run(x: Any, params: dict[str, Any] | None) -> None:
        try:
            out = pyfunc.predict(None, x, params)
        except MlflowException as exc:
            assert exc.get_http_status_code() == 400 and exc.message
            tally("pyfunc predict", "error 400")
            return
        assert list(out.columns) == ["entities"]
        check_entities(x, out["entities"].tolist())
        tally("pyfunc predict", "result")

    run()


def test_pyfunc_limits_rows_and_characters(pyfunc: NerPyfunc) -> None:
    full_rows = LIMITS.max_total_chars // LIMITS.max_chars
    long_rows = pd.DataFrame({"text": ["a" * LIMITS.max_chars] * full_rows})
    assert len(pyfunc.predict(None, long_rows)) == full_rows
    short = "a" * (LIMITS.max_total_chars // LIMITS.max_rows)
    frame = pd.DataFrame({"text": [short] * LIMITS.max_rows})
    assert len(pyfunc.predict(None, frame)) == LIMITS.max_rows
    for frame, message in (
        (pd.DataFrame({"text": ["hola"] * (LIMITS.max_rows + 1)}), "rows in one request"),
        (
            pd.DataFrame({"text": ["a" * (LIMITS.max_chars + 1)]}),
            f"row 0: 'text' has {LIMITS.max_chars + 1:,} characters",
        ),
        (pd.DataFrame({"tokens": [["ab"] * LIMITS.max_chars]}), "row 0: 'tokens' has"),
        (
            pd.DataFrame({"text": ["a" * LIMITS.max_chars] * (full_rows + 1)}),
            f"rows 0-{full_rows} hold {(full_rows + 1) * LIMITS.max_chars:,} characters; "
            f"at most {LIMITS.max_total_chars:,} per request",
        ),
    ):
        with pytest.raises(MlflowException, match=message) as info:
            pyfunc.predict(None, frame)
        assert info.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="params.batch_size") as info:
        pyfunc.predict(None, pd.DataFrame({"text": ["hola"]}), {"batch_size": 0})
    assert info.value.get_http_status_code() == 400


def test_a_100k_character_text_is_tagged_whole(tagger: Any) -> None:
    text = ("Luis vive en Quito 😀 y escucha Soda Stereo 北京 " * 2500)[:100_000]
    ents = predict_entities(tagger, [text])[0]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in ents)
    assert {e["type"] for e in ents} >= {"PER", "LOC"}
    assert max(e["end"] for e in ents) > 99_000  # the last windows are tagged too


# --------------------------------------------------------------------------- the CLI


def test_cli_conll_output_refuses_a_lone_surrogate(trained_tagger_dir: Path) -> None:
    """Found by the long CLI fuzz run: --format conll skipped the checks of the JSON path."""
    args = ["predict", "-m", str(trained_tagger_dir), "-f", "conll", "ana", "\ud800"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and (res.exception is None or isinstance(res.exception, SystemExit))
    assert res.stderr.strip() == (
        "error: row 1: 'text' is not valid Unicode (a lone surrogate U+D800 at character 0)"
    )


cli_line = st.one_of(
    st.lists(piece, max_size=12).map("".join), st.sampled_from(["", " ", "\x00\x00"])
)


@st.composite
def cli_call(draw: st.DrawFn, model: Path, folder: Path) -> tuple[list[str], bytes | None]:
    """Arguments and stdin of one ``complex-ner predict`` call: text arguments, stdin bytes, or
    a --file (.txt or .conll) of generated or damaged bytes."""
    fmt = draw(st.sampled_from(["jsonl", "conll"]))
    base = ["predict", "-m", str(model), "-f", fmt, "-p", str(folder / "none.yaml")]
    source = draw(st.sampled_from(["args", "stdin", "txt", "conll"]))
    lines = draw(st.lists(cli_line.filter(lambda s: "\n" not in s and "\r" not in s), max_size=8))
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):  # damaged: bytes that are not UTF-8, or a line cut short
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xe4\xb8", b"\x00"])) + data[at:]
    if source == "args":
        return [*base, *[ln for ln in lines if ln and not ln.startswith("-")]], None
    if source == "stdin":
        return base, data
    path = folder / f"in.{source}"
    if source == "conll":
        words = [ln.split() for ln in lines]
        data = b"\n\n".join(
            "\n".join(f"{w} _ _ _" for w in ws).encode("utf-8", "surrogatepass")
            for ws in words
            if ws
        )
        if draw(st.booleans()):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\x00", b"\n# id\n"])) + data[at:]
    path.write_bytes(data)
    return [*base, "--file", str(path)], None


@pytest.mark.parametrize("profile", profiles(fast=40, long=1500))
def test_cli_predict_prints_results_or_one_error_line(
    trained_tagger_dir: Path, tmp_path: Path, profile
) -> None:
    runner = CliRunner()

    @profile
    @given(call=cli_call(trained_tagger_dir, tmp_path))
    def run(call: tuple[list[str], bytes | None]) -> None:
        args, stdin = call
        res = runner.invoke(app, args, input=stdin)
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
        if res.exit_code != 0:
            assert res.exit_code in (1, 2)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[:500]
            tally("cli predict", "error: " + lines[0].split(": ")[-1][:24])
            return
        if "-f" in args and args[args.index("-f") + 1] == "jsonl":
            # JSON lines end with "\n" only: U+2028 or U+0085 inside a string is not a break.
            for out in res.stdout.split("\n")[:-1]:
                rec = json.loads(out)
                source = rec.get("text", " ".join(rec.get("tokens", [])))
                assert all(source[e["start"] : e["end"]] == e["text"] for e in rec["entities"])
        tally("cli predict", "result")

    run()
