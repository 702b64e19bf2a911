"""Smoke test of ``benchmarks/wwm_effect.py``: its smallest configuration (``--quick``: a tiny
random BERT, synthetic train/val/heldout splits) runs in this process, prints the table and
writes the JSON with the pre-training scores and both fine-tuning rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import wwm_effect

pytestmark = pytest.mark.usefixtures("one_thread")


def test_wwm_effect_quick_compares_base_and_adapted_encoders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wwm.json"
    argv = ["--quick", "--threads", "1", "--head-warmup-steps", "2", "--eval-split", "heldout"]
    record = wwm_effect.main([*argv, "--out", str(path)])
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["table"] == record["table"] and record["table"] in capsys.readouterr().out
    assert written["command"].startswith("python -m benchmarks.wwm_effect --quick")
    assert [r["variant"] for r in written["fine_tune"]] == ["base", "wwm"]
    assert all(
        r["eval_split"] == "heldout" and r["eval_sentences"] == 8 for r in written["fine_tune"]
    )
    pre = written["pretrain"]
    assert pre["head_warmup_steps"] == 2 and pre["steps"] > 0
    assert set(pre["scores"]) == {"before", "after_head_warmup", "end"}
    assert pre["scores"]["end"]["pieces"] > 0 and pre["corpus"]["eval_sentences"] > 0
    assert "pretrain.head_warmup_steps=2" in written["overrides"]
    assert len(record["table"].splitlines()) == 2 + 2
    assert record["summary"][0]["metric"] == "heldout macro-F1 gain from WWM"
    with pytest.raises(SystemExit, match="--eval-split nope"):
        wwm_effect.main(["--quick", "--eval-split", "nope"])
