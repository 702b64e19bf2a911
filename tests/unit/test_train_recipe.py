"""The recipe benchmark: its variant options, and a --quick run (tiny random BERT, toy splits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchmarks import recipe

from complex_ner.core.config import Params

SECTIONS = tuple(Params.model_fields)


def test_a_variant_is_a_name_and_overrides_with_train_as_the_default_section() -> None:
    name, overrides = recipe.parse_variant(
        "mix=augment.mention_replace=0.3,model.dropout=0.1,archs=[bert_crf,bert_linear]", SECTIONS
    )
    assert name == "mix"
    assert overrides == (
        "train.augment.mention_replace=0.3",
        "model.dropout=0.1",
        "train.archs=[bert_crf,bert_linear]",
    )


@pytest.mark.parametrize("text", ["=average=ema", "only-a-name", "x=average"])
def test_a_malformed_variant_names_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--variant"):
        recipe.parse_variant(text, SECTIONS)


def test_variants_are_the_chosen_builtins_then_the_custom_ones() -> None:
    parser = recipe.argparse.Namespace(variants=["base", "ema"], variant=["hot=lr_head=1e-2"])
    chosen = recipe.pick_variants(parser)
    assert list(chosen) == ["base", "ema", "hot"]
    assert chosen["ema"] == ("train.average=ema",) and chosen["hot"] == ("train.lr_head=1e-2",)
    with pytest.raises(SystemExit, match="unknown"):
        recipe.pick_variants(recipe.argparse.Namespace(variants=["nope"], variant=[]))
    with pytest.raises(SystemExit, match="already"):
        recipe.pick_variants(recipe.argparse.Namespace(variants=["base"], variant=["base=seed=1"]))


def test_quick_run_records_the_threads_it_trained_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    try:
        record = recipe.main(
            ["--quick", "--lang", "es", "--variants", "base", "--set", "train.threads=1"]
            + ["--out", str(tmp_path / "recipe.json")]
        )
    finally:
        torch.set_num_threads(before)
    written = json.loads((tmp_path / "recipe.json").read_text(encoding="utf-8"))
    assert written["table"] == record["table"] and record["table"] in capsys.readouterr().out
    # machine_info() is read before the run applies train.threads; the record says what ran.
    assert written["machine"]["torch_threads"] == 1
    (row,) = written["rows_detail"]
    assert row["finished"] and row["epochs_run"] == 1 and len(row["val_macro_f1"]) == 1
