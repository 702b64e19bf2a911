"""Prediction through a tagger folder's ONNX export: onnxruntime, tokenizers and numpy only.

The export (:mod:`complex_ner.engines.export`) holds encoder + emission head; words become
encoder windows exactly as in training (:mod:`complex_ner.domain.alignment`, run on the raw
``tokenizers.Tokenizer``), and the CRF is decoded with :mod:`complex_ner.domain.models.numpy_crf`
(the linear head: argmax repaired to BIO, softmax confidences). Importing this module imports
neither torch nor transformers; ``tests/integration/test_onnx_lean.py`` checks it in a fresh
process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from complex_ner.core.io import link_or_copy
from complex_ner.core.paths import (
    EXPORT_FILE,
    HEAD_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    SERVED_FILES,
    TOKENIZER_DIR,
)
from complex_ner.domain.alignment import (
    EncodedWindow,
    PieceTokenizer,
    pad_windows,
    predict_windows,
)
from complex_ner.domain.models.numpy_crf import (
    CRFScores,
    argmax_repaired,
    crf_marginals,
    softmax_marginals,
    viterbi,
)
from complex_ner.domain.models.spec import TaggerSpec, read_tagger_json

__all__ = ["CRF_KEYS", "OnnxTagger", "copy_served_files", "export_key"]

#: Where a CRF head keeps its scores in ``head.safetensors`` (the torch module's names).
CRF_KEYS = ("crf.crf.start_transitions", "crf.crf.transitions", "crf.crf.end_transitions")
TOKENIZER_JSON = "tokenizer.json"


def export_key(model_path: Path) -> str:
    """An export file's version: its path, size and modification time."""
    stat = model_path.stat()
    return f"{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def copy_served_files(folder: Path, target: Path) -> None:
    """Put what prediction needs of a tagger folder (:data:`~complex_ner.core.paths.SERVED_FILES`,
    not the torch encoder) into the new folder ``target``, hard-linked where possible."""
    target.mkdir(parents=True)
    for name in SERVED_FILES:
        source = folder / name
        if source.is_dir():
            shutil.copytree(source, target / name, copy_function=link_or_copy)
        elif source.is_file():
            link_or_copy(str(source), str(target / name))


class OnnxTagger:
    """A saved tagger run through its ONNX export (same ``predict`` API as the torch tagger).

    Args:
        spec: The tagger's spec (``tagger.json``).
        session: An ``onnxruntime.InferenceSession`` of the export.
        tokenizer: The raw tokenizer with its unknown and padding ids.
        crf: The CRF scores, or None for the linear head.
        model_key: Identifies the export file's version (path, size, modification time):
            chunked prediction reuses no chunk another model tagged.
    """

    def __init__(
        self,
        spec: TaggerSpec,
        session: Any,
        tokenizer: PieceTokenizer,
        crf: CRFScores | None,
        model_key: str = "unknown",
    ) -> None:
        self.model_key = model_key
        self.spec = spec
        self.tags = spec.tags
        self.tag_to_id = {t: i for i, t in enumerate(spec.tags)}
        self.session = session
        self.tokenizer = tokenizer
        self.crf = crf
        # The exporter drops inputs the graph does not use (the CRF heads ignore word_mask).
        self._inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        int8: bool = False,
        threads: int = 0,
        manifest: dict[str, Any] | None = None,
    ) -> OnnxTagger:
        """Load a tagger folder's export.

        Args:
            folder: The tagger folder (``tagger.json``, ``tokenizer/``, ``head.safetensors``
                and the export).
            int8: Run the dynamically quantized export (``model.int8.onnx``).
            threads: onnxruntime's intra-op threads; 0 lets onnxruntime choose.
            manifest: The export's record (default: read from ``onnx.json``).

        Raises:
            FileNotFoundError: no ``tagger.json``, no export or no ``tokenizer.json``.
        """
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        spec, _ = read_tagger_json(folder)
        if manifest is None:
            path = folder / EXPORT_FILE
            if not path.is_file():
                raise FileNotFoundError(
                    f"{folder}: no ONNX export ({EXPORT_FILE}); "
                    f"run `complex-ner export --model {folder}`"
                )
            manifest = json.loads(path.read_text(encoding="utf-8"))
        model_path = cls.export_path(folder, int8)
        if not model_path.is_file():
            hint = " --int8" if int8 else ""
            raise FileNotFoundError(
                f"{model_path}: no such export; run `complex-ner export --model {folder}{hint}`"
            )
        tokenizer_path = folder / TOKENIZER_DIR / TOKENIZER_JSON
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"{folder}: no {TOKENIZER_DIR}/{TOKENIZER_JSON}")
        backend = Tokenizer.from_file(str(tokenizer_path))
        tokenizer = PieceTokenizer(backend, manifest.get("unk_id"), int(manifest["pad_id"]))
        crf = None
        if spec.arch != "bert_linear":
            head = load_file(str(folder / HEAD_FILE))
            start, transitions, end = (head[k] for k in CRF_KEYS)
            crf = CRFScores(spec.tags, start, transitions, end)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        return cls(spec, session, tokenizer, crf, export_key(model_path))

    @staticmethod
    def export_path(folder: Path, int8: bool = False) -> Path:
        """The export file a tagger folder's model runs (fp32 or int8)."""
        return folder / (ONNX_INT8_FILE if int8 else ONNX_FILE)

    # ------------------------------------------------------------------ arrays

    def encode(self, sentences: Sequence[Sequence[str]]) -> list[EncodedWindow]:
        """Windows for these sentences with this tagger's alignment settings."""
        return self.spec.encode(self.tokenizer, sentences)

    def emissions(self, windows: Sequence[EncodedWindow]) -> tuple[np.ndarray, list[int]]:
        """Word emissions ``(batch, words, num_tags)`` of a batch of windows, and their lengths."""
        feeds = pad_windows(windows, self.tokenizer.pad_id)
        # shape: (batch, words, num_tags)
        emissions = self.session.run(None, {name: feeds[name] for name in self._inputs})[0]
        return emissions, [len(w.word_ids) for w in windows]

    def decode(
        self, emissions: np.ndarray, lengths: Sequence[int], with_marginals: bool = False
    ) -> tuple[list[list[int]], np.ndarray | None]:
        """Tag ids per window (valid BIO) and, optionally, marginals ``(batch, words, tags)``."""
        if self.crf is not None:
            paths = viterbi(emissions, lengths, self.crf)
            probs = crf_marginals(emissions, lengths, self.crf) if with_marginals else None
        else:
            paths = argmax_repaired(emissions, lengths, self.tags)
            probs = softmax_marginals(emissions, lengths) if with_marginals else None
        return paths, probs

    # ------------------------------------------------------------------ words in, tags out

    def predict_ids(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 64,
        with_marginals: bool = False,
    ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
        """Tag ids per word (and, optionally, per-word tag marginals) for every sentence.

        Every input word gets a tag, long sentences through overlapping windows
        (:func:`~complex_ner.domain.alignment.predict_windows`).
        """

        def decode(
            chunk: Sequence[EncodedWindow], marginals: bool
        ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
            emissions, lengths = self.emissions(chunk)
            paths, probs = self.decode(emissions, lengths, marginals)
            if probs is None:
                return paths, None
            return paths, [probs[row, :n].tolist() for row, n in enumerate(lengths)]

        return predict_windows(
            self.encode(sentences), [len(s) for s in sentences], decode, batch_size, with_marginals
        )

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """BIO tags per word for every sentence."""
        ids, _ = self.predict_ids(sentences, batch_size)
        return [[self.tags[i] for i in row] for row in ids]
