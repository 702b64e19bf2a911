"""The lean prediction load on the real data and in a fresh process.

The raw tokenizer adapter must give exactly what transformers gives (pieces, offsets, alignments,
windows) on real MultiCoNER sentences; the prediction path must load without transformers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from complex_ner.domain.alignment import align_sentences, encode_sentences
from complex_ner.domain.rawtok import load_raw_tokenizer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["minilm", "e5"])
@pytest.mark.parametrize("lang", ["es", "zh"])
def test_adapter_matches_transformers_on_real_sentences(
    name: str,
    lang: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    real_sentences: Callable[[str, int], tuple[list[list[str]], list[list[str]]]],
) -> None:
    hf: Any = request.getfixturevalue(f"{name}_tokenizer")
    hf.save_pretrained(tmp_path)
    raw = load_raw_tokenizer(tmp_path)
    assert raw is not None
    sentences, _ = real_sentences(lang, 1000)
    texts = [" ".join(words) for words in sentences]
    kwargs: dict[str, Any] = {"add_special_tokens": False, "return_offsets_mapping": True}
    want, got = hf(texts, **kwargs), raw(texts, **kwargs)
    assert got["input_ids"] == want["input_ids"]
    assert got["offset_mapping"] == [[tuple(o) for o in row] for row in want["offset_mapping"]]
    # Real sentences glued far past a window: several windows each.
    sentences = sentences + [sum(sentences[i : i + 12], []) for i in range(0, 120, 12)]
    for join in ("space", "natural"):
        assert align_sentences(raw, sentences, join=join) == align_sentences(
            hf, sentences, join=join
        )
        assert encode_sentences(raw, sentences, 64, 16, join=join) == encode_sentences(
            hf, sentences, 64, 16, join=join
        )


def test_predict_path_never_imports_transformers(trained_tagger_dir: Path) -> None:
    code = (
        "import sys\n"
        "from complex_ner.engines.predict import load_tagger, predict_entities\n"
        f"tagger = load_tagger({str(trained_tagger_dir)!r})\n"
        "print(predict_entities(tagger, ['ana vive en lima']))\n"
        "heavy = [m for m in ('transformers', 'torch._dynamo', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
