"""The ``batch_predict`` flow for real: chunks mapped over Prefect tasks on a pool of two
worker processes, resuming an interrupted run, the submission in input order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flows.batch_predict import run

from complex_ner.app import serve
from complex_ner.domain.data import Sentence, format_conll, read_conll
from complex_ner.engines.predict import load_tagger, predict_conll_batched

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    """A Prefect server for the module (``run`` hands its address to the pool's workers)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_two_workers_resume_and_write_in_input_order(
    trained_tagger_dir: Path,
    tmp_path: Path,
    root: Path,
    toy_corpus: Callable[[int], list[Sentence]],
) -> None:
    sentences = [Sentence(f"t{i}", s.tokens, None, "test") for i, s in enumerate(toy_corpus(30))]
    source = tmp_path / "test.conll"
    source.write_text(format_conll(sentences, [["_"] * len(s.tokens) for s in sentences]))
    out = tmp_path / "sub.conll"
    # An earlier run was interrupted after finishing chunk 2 of 5.
    job = serve.plan_batch(trained_tagger_dir, source, out, chunk_size=7)
    serve.predict_chunk(trained_tagger_dir, job, 2)

    result = run(
        2,
        input_path=str(source),
        output_path=str(out),
        model=str(trained_tagger_dir),
        chunk_size=7,
        batch_size=4,
        params_path=str(root / "params.yaml"),
    )

    assert result["sentences"] == 30 and result["chunks"] == 5
    assert result["reused_chunks"] == 1
    # The four other chunks ran as tasks in the pool's worker processes (at most two).
    assert 1 <= len(result["workers"]) <= 2
    assert sum(w["chunks"] for w in result["workers"]) == 4
    assert all(w["peak_rss_mb"] > 0 for w in result["workers"])
    got = read_conll(out)
    assert [s.id for s in got] == [s.id for s in sentences]
    # Exactly what one process tagging the whole file in order writes.
    single = tmp_path / "single.conll"
    predict_conll_batched(load_tagger(trained_tagger_dir), source, single, chunk_size=30)
    assert out.read_bytes() == single.read_bytes()
    assert not job.parts.exists()
    assert [s.tags for s in got] == [s.tags for s in toy_corpus(30)]


def test_bad_input_fails_before_any_chunk_naming_the_line(
    trained_tagger_dir: Path, tmp_path: Path, root: Path
) -> None:
    source = tmp_path / "bad.conll"
    source.write_text("# id a\nuno _ _ _\n\n# id b\ndos _ _\n\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.conll:5: expected 'token _ _ TAG'"):
        run(
            1,
            input_path=str(source),
            output_path=str(tmp_path / "out.conll"),
            model=str(trained_tagger_dir),
            params_path=str(root / "params.yaml"),
        )
    assert not (tmp_path / "out.conll").exists()
    assert not (tmp_path / "out.conll.parts").exists()
