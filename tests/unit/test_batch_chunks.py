"""Chunked batch prediction: the chunk plan, reading a chunk, order, resume and bad input."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from complex_ner.domain.data import (
    DataFormatError,
    conll_spans,
    iter_conll,
    iter_conll_span,
    read_conll,
)
from complex_ner.engines.predict import (
    PLAN_FILE,
    join_batch,
    peak_rss_mb,
    plan_batch,
    predict_chunk,
    predict_conll_batched,
)

# Headers and headerless sentences, runs of blank lines, a header straight after a sentence
# (no blank line), a BOM, CRLF line ends, trailing spaces and a last sentence without a blank.
MIXED = (
    "\ufeff# id a\tdomain=x\r\nuno _ _ _\r\ndos _ _ _\r\n\r\n\r\n"
    "tres _ _ _\ncuatro _ _ _\n\n"
    "# id c\tdomain=x\ncinco _ _ _\n"
    "# id d\tdomain=x\nseis _ _ _  \nsiete _ _ _\n\n"
    "-DOCSTART- _ _ _\n\nocho _ _ _\n\n\n"
    "# id f\tdomain=y\nnueve _ _ _\ndiez _ _ _"
)


class FakeTagger:
    """Tags words by a rule and records the chunks it was asked for."""

    model_key = "fake-1"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        self.calls.append(len(sentences))
        return [["B-LOC" if w.endswith("0") else "O" for w in s] for s in sentences]


def _file(tmp_path: Path, text: str = MIXED, name: str = "in.conll") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _big(tmp_path: Path, n: int = 23) -> Path:
    rows = [
        f"# id s{i}\tdomain=t\n" + "".join(f"w{i}x{j} _ _ _\n" for j in range(i % 4 + 1)) + "\n"
        for i in range(n)
    ]
    return _file(tmp_path, "".join(rows), "big.conll")


def _ids(sentences: object) -> list[tuple[str, tuple[str, ...], int | None]]:
    return [(s.id, s.tokens, s.line) for s in sentences]  # type: ignore[attr-defined]


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 4, 6, 7, 50])
def test_chunks_read_back_the_whole_file_in_order(tmp_path: Path, per_chunk: int) -> None:
    path = _file(tmp_path)
    whole = list(iter_conll(path, labeled=False))
    assert len(whole) == 6
    spans = list(conll_spans(path, per_chunk, labeled=False))
    assert [s.sentences for s in spans][:-1] == [per_chunk] * (len(spans) - 1)
    assert sum(s.sentences for s in spans) == 6
    # Byte ranges tile the file from its start; nothing read twice or skipped.
    assert spans[0].start == 0 and all(
        a.end == b.start for a, b in zip(spans, spans[1:], strict=False)
    )
    assert spans[-1].end == path.stat().st_size
    pieces = [s for span in spans for s in iter_conll_span(path, span, labeled=False)]
    # Same ids (conll-<n> for headerless sentences counts on across chunks), tokens, lines.
    assert _ids(pieces) == _ids(whole)


def test_planning_checks_the_whole_file_and_names_the_line(tmp_path: Path) -> None:
    path = _big(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = next(i for i, line in enumerate(lines) if line.startswith("w17x"))
    lines[bad] = "w17x0 _ _\n"  # three fields
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"big.conll:{bad + 1}: expected 'token _ _ TAG'"):
        list(conll_spans(path, 5, labeled=False))
    dup = _file(tmp_path, "# id a\nx _ _ _\n\n# id b\ny _ _ _\n\n# id a\nz _ _ _\n\n", "dup.conll")
    with pytest.raises(DataFormatError, match=r"dup.conll:7: duplicate sentence id 'a'"):
        list(conll_spans(dup, 2, labeled=False))
    with pytest.raises(ValueError, match="at least 1"):
        list(conll_spans(path, 0))


def test_a_chunk_of_a_changed_file_fails_with_its_line(tmp_path: Path) -> None:
    path = _big(tmp_path)
    spans = list(conll_spans(path, 5, labeled=False))
    text = path.read_text(encoding="utf-8")
    # Same length, so the byte ranges still fall on lines: one sentence now reads as two.
    path.write_text(text.replace("w13x1 _ _ _\n", "\n13x1 _ _ _\n"), encoding="utf-8")
    with pytest.raises(DataFormatError, match="expected 5 sentences from here, found 6"):
        list(iter_conll_span(path, spans[2], labeled=False))
    path.write_text(text.replace("w13x1 _ _ _\n", "w13x1 _ ___\n"), encoding="utf-8")
    line = text[: text.index("w13x1 _ _ _")].count("\n") + 1
    with pytest.raises(DataFormatError, match=rf"big.conll:{line}: expected 'token _ _ TAG'"):
        list(iter_conll_span(path, spans[2], labeled=False))


def test_chunks_finished_in_any_order_join_in_input_order(tmp_path: Path) -> None:
    path, out = _big(tmp_path), tmp_path / "out.conll"
    tagger = FakeTagger()
    job = plan_batch(path, out, 5, tagger.model_key)
    assert len(job.spans) == 5 and job.sentences == 23
    for index in (3, 0, 4, 2, 1):  # as a pool of workers might finish them
        done = predict_chunk(tagger, job, index, batch_size=4)
        assert done["index"] == index and not done["reused"]
        assert done["pid"] == os.getpid() and done["peak_rss_mb"] > 0
    join_batch(job)
    assert not job.parts.exists()
    got = read_conll(out)
    source = read_conll(path, labeled=False)
    assert [s.id for s in got] == [s.id for s in source]
    assert [s.tokens for s in got] == [s.tokens for s in source]
    tags = tagger.predict([s.tokens for s in source])
    assert [list(s.tags or ()) for s in got] == tags and any("B-LOC" in t for t in tags)


def test_join_refuses_an_unfinished_job_and_writes_nothing(tmp_path: Path) -> None:
    path, out = _big(tmp_path), tmp_path / "out.conll"
    job = plan_batch(path, out, 5, "m")
    for index in (0, 1, 3, 4):
        predict_chunk(FakeTagger(), job, index)
    with pytest.raises(FileNotFoundError, match=r"1 of 5 chunks not predicted yet \(first: 2\)"):
        join_batch(job)
    assert not out.exists() and job.done(0)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_a_rerun_keeps_finished_chunks_of_the_same_job_only(tmp_path: Path) -> None:
    path, out = _big(tmp_path), tmp_path / "out.conll"
    job = plan_batch(path, out, 5, "model-a")
    predict_chunk(FakeTagger(), job, 0)
    predict_chunk(FakeTagger(), job, 3)
    # The same job: the plan is read back, the two parts count as done and are not redone.
    again = plan_batch(path, out, 5, "model-a")
    assert again.spans == job.spans
    assert [again.done(i) for i in range(5)] == [True, False, False, True, False]
    tagger = FakeTagger()
    assert predict_chunk(tagger, again, 3)["reused"] and tagger.calls == []
    # Another model, another chunk size or a changed input: the parts start over.
    assert not any(plan_batch(path, out, 5, "model-b").done(i) for i in range(5))
    predict_chunk(FakeTagger(), plan_batch(path, out, 5, "model-b"), 0)
    assert not plan_batch(path, out, 4, "model-b").done(0)
    predict_chunk(FakeTagger(), plan_batch(path, out, 4, "model-b"), 0)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not plan_batch(path, out, 4, "model-b").done(0)
    assert (job.parts / PLAN_FILE).is_file()


def test_sequential_batched_prediction_resumes_by_chunk(tmp_path: Path) -> None:
    path, out = _big(tmp_path), tmp_path / "out.conll"
    tagger = FakeTagger()
    job = plan_batch(path, out, 5, tagger.model_key)
    predict_chunk(tagger, job, 1)
    tagger.calls.clear()
    seen: list[int] = []
    result = predict_conll_batched(tagger, path, out, chunk_size=5, progress=seen.append)
    assert result == {"sentences": 23, "chunks": 5, "reused_chunks": 1}
    assert tagger.calls == [5, 5, 5, 3] and seen == [5, 10, 15, 20, 23]
    assert [s.id for s in read_conll(out)] == [f"s{i}" for i in range(23)]


def test_peak_memory_is_this_process_high_water_mark() -> None:
    before = peak_rss_mb()
    block = bytearray(64 * 2**20)  # touched: 64 MiB resident
    block[::4096] = b"x" * len(block[::4096])
    assert peak_rss_mb() >= before
    assert peak_rss_mb() > 64
    del block


def test_the_benchmark_file_repeats_the_source_with_new_ids(tmp_path: Path) -> None:
    from benchmarks.bench_batch_predict import build_test_file, head

    source = read_conll(_big(tmp_path, 3))
    built = read_conll(build_test_file(source, 8, tmp_path / "built.conll"), labeled=False)
    assert len(built) == 8 and len({s.id for s in built}) == 8
    assert all(s.tags is None for s in built)
    by_id = {s.id: s.tokens for s in source}
    assert all(s.tokens == by_id[s.id.rsplit("-r", 1)[0]] for s in built)
    # Every pass holds each source sentence once (reshuffled): passes 1 and 2 are complete.
    assert sorted(s.id for s in built[:3]) == ["s0-r0", "s1-r0", "s2-r0"]
    first = read_conll(head(tmp_path / "built.conll", 5, tmp_path / "five.conll"), labeled=False)
    assert [s.id for s in first] == [s.id for s in built[:5]]
