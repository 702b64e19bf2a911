"""The recipe benchmark's variant options (the training itself is checked by --quick runs)."""

from __future__ import annotations

import pytest
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
