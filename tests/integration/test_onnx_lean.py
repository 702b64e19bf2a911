"""The lean prediction path on the real data and in a fresh process.

The raw ``tokenizers.Tokenizer`` must give exactly what transformers gives (alignments, windows)
on real MultiCoNER sentences; the prediction path (the ONNX export) must load and run without
torch and transformers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from complex_ner.domain.alignment import PieceTokenizer, align_sentences, encode_sentences
from complex_ner.engines.onnx_ensemble import save_ensemble

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["minilm", "e5"])
@pytest.mark.parametrize("lang", ["es", "zh"])
def test_raw_tokenizer_matches_transformers_on_real_sentences(
    name: str,
    lang: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    real_sentences: Callable[[str, int], tuple[list[list[str]], list[list[str]]]],
) -> None:
    hf: Any = request.getfixturevalue(f"{name}_tokenizer")
    hf.save_pretrained(tmp_path)
    backend = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    raw = PieceTokenizer(backend, hf.unk_token_id, hf.pad_token_id)
    sentences, _ = real_sentences(lang, 1000)
    # Real sentences glued far past a window: several windows each.
    sentences = sentences + [sum(sentences[i : i + 12], []) for i in range(0, 120, 12)]
    for join in ("space", "natural"):
        assert align_sentences(raw, sentences, join=join) == align_sentences(
            hf, sentences, join=join
        )
        assert encode_sentences(raw, sentences, 64, 16, join=join) == encode_sentences(
            hf, sentences, 64, 16, join=join
        )


def test_predict_path_never_imports_torch_or_transformers(
    trained_tagger_dir: Path, tmp_path: Path
) -> None:
    ensemble = tmp_path / "ensemble"  # an ensemble folder runs through the same path
    save_ensemble(ensemble, [trained_tagger_dir, trained_tagger_dir], "mean")
    code = (
        "import sys\n"
        "from complex_ner.app import serve\n"
        "from complex_ner.cli import app\n"
        "from complex_ner.engines.predict import load_tagger, predict_entities\n"
        f"tagger = load_tagger({str(trained_tagger_dir)!r})\n"
        "print(predict_entities(tagger, ['ana vive en lima']))\n"
        f"app(['predict', '--model', {str(trained_tagger_dir)!r}, 'ana vive en lima'],"
        " standalone_mode=False)\n"
        f"app(['predict', '--model', {str(ensemble)!r}, 'ana vive en lima'],"
        " standalone_mode=False)\n"
        "heavy = [m for m in ('torch', 'transformers', 'torchcrf', 'numba', 'pandas')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"entities"') == 2
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
