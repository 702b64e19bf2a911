"""Smoke test of ``benchmarks/trim_open_domain.py`` (``--quick``: toy corpus, tiny e5 BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import trim_open_domain


def test_quick_run_reports_unknown_pieces_per_language_and_encoder(
    tiny_e5_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "result.json"
    record = trim_open_domain.main(
        ["--quick", "--json", str(path), "--encoder", str(tiny_e5_bert_dir)]
    )
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["table"] == record["table"] and record["table"] in capsys.readouterr().out
    assert written["command"].startswith("python -m benchmarks.trim_open_domain")
    rows = {(r["lang"], r["text"], r["encoder"]): r for r in record["records"]}
    assert len(rows) == 2 * 2 * 3
    for lang in ("es", "zh"):
        full, plain, chars = (
            rows[lang, "open-domain", name] for name in ("full", "trimmed", "trimmed + char pieces")
        )
        # The toy corpus lacks most open-domain characters: the plain trim loses them, the char
        # pieces bring every one of the languages' scripts back.
        assert plain["unk_pieces"] > full["unk_pieces"]
        assert chars["unk_pieces"] == full["unk_pieces"]
        assert full["differ_share"] == 0 and plain["differ_share"] > 0
        assert plain["vocab_rows"] < chars["vocab_rows"] < full["vocab_rows"]
        assert rows[lang, "toy held-out", "trimmed"]["differ_share"] == 0  # in the corpus
    added = next(t for t in record["summary"] if t["metric"].startswith("<unk> pieces trimming"))
    assert added["met"] is True
