"""ONNX export of a saved tagger: encoder + emission head, checked against the torch model.

``torch.onnx.export`` writes ``model.onnx`` into the tagger folder: inputs ``input_ids`` and
``attention_mask`` ``(batch, pieces)``, ``word_index`` and ``word_mask`` ``(batch, words)``, output
``emissions`` ``(batch, words, num_tags)``, with dynamic batch, piece and word axes. The CRF is
not in the graph: prediction decodes it in numpy from ``head.safetensors``
(:mod:`complex_ner.engines.onnx_tagger`). Any encoder ``transformers.AutoModel`` loads exports the
same way (BERT, XLM-R, e5).

Before the export counts, every given sentence (training passes the validation split) is run
through both models: the largest absolute emission difference is recorded and the word tags
must be identical; ``onnx.json`` then records the check and the tokenizer ids prediction needs.
With ``int8`` an onnxruntime dynamic int8 quantization (``model.int8.onnx``) is written too; its
agreement with the torch tags is recorded, not required. Weights are quantized per output
channel, and the projections that contract a wider dimension than they produce (the
feed-forward down-projections, and the small emission head) stay in fp32: their inputs are the
post-GELU activations, whose few large values make the per-tensor activation scale of dynamic
quantization too coarse for the rest (``docs/benchmarks.md`` has the layer-by-layer figures).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from complex_ner.core.io import (
    atomic_path,
    atomic_write_text,
    link_or_copy,
    replace_dir,
    staging_dir,
    writing,
)
from complex_ner.core.paths import EXPORT_FILE, ONNX_FILE, ONNX_INT8_FILE
from complex_ner.domain.alignment import merge_windows
from complex_ner.domain.batch import collate, gather_words
from complex_ner.domain.models.tagger import Tagger
from complex_ner.engines.onnx_tagger import OnnxTagger

__all__ = ["EXPORT_FORMAT", "ExportCheckError", "contracting_matmuls", "export_onnx"]

#: Version of ``onnx.json``.
EXPORT_FORMAT = 1
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")
_AXES = {
    "input_ids": {0: "batch", 1: "pieces"},
    "attention_mask": {0: "batch", 1: "pieces"},
    "word_index": {0: "batch", 1: "words"},
    "word_mask": {0: "batch", 1: "words"},
    "emissions": {0: "batch", 1: "words"},
}
# Two sentences of different lengths: the traced batch holds padding.
_EXAMPLE = (("hola",), ("el", "museo", "del", "prado", "está", "en", "madrid", "."))


class ExportCheckError(ValueError):
    """The export's tags differ from the torch model's on the check sentences."""


class _Emissions(nn.Module):
    """What the export computes: encoder, one label piece per word, the head's projection."""

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.encoder = tagger.encoder
        self.head = tagger.head

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, word_index: Tensor, word_mask: Tensor
    ) -> Tensor:
        # shape: (batch, pieces, hidden)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # shape: (batch, words, hidden)
        words = gather_words(hidden, word_index)
        # shape: (batch, words, num_tags)
        return self.head(words.float(), word_mask)


def _write_onnx(tagger: Tagger, path: Path) -> None:
    batch = collate(tagger.encode(_EXAMPLE), tagger.pad_id)
    args = (batch.input_ids, batch.attention_mask, batch.word_index, batch.word_mask)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns at every Python-side shape check (they hold for any input shape)
        # and about the TorchScript exporter's deprecation; the export is checked instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*LSTM")
        torch.onnx.export(
            _Emissions(tagger).eval(),
            args,
            str(tmp),
            dynamo=False,
            input_names=list(_INPUTS),
            output_names=["emissions"],
            dynamic_axes=_AXES,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _compare(
    tagger: Tagger, onnx: OnnxTagger, sentences: Sequence[Sequence[str]], batch_size: int
) -> dict[str, Any]:
    """Emission difference and tag agreement of ``onnx`` against ``tagger`` on ``sentences``."""
    windows = tagger.encode(sentences)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    ours: list[list[int]] = [[] for _ in windows]
    theirs: list[list[int]] = [[] for _ in windows]
    max_diff = 0.0
    torch_s = onnx_s = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        chunk = [windows[i] for i in idx]
        batch = collate(chunk, tagger.pad_id)
        began = time.perf_counter()
        with torch.inference_mode():
            # shape: (batch, words, num_tags)
            em_torch = tagger.emissions(batch).float()
            paths_torch = tagger.head.decode(em_torch, batch.word_mask)
        middle = time.perf_counter()
        em_onnx, lengths = onnx.emissions(chunk)
        paths_onnx, _ = onnx.decode(em_onnx, lengths)
        onnx_s += time.perf_counter() - middle
        torch_s += middle - began
        # shape: (batch, words)
        valid = batch.word_mask.numpy()
        diff = np.abs(em_torch.numpy() - em_onnx)[valid]
        max_diff = max(max_diff, float(diff.max()) if diff.size else 0.0)
        for row, i in enumerate(idx):
            ours[i], theirs[i] = paths_onnx[row], paths_torch[row]
    lengths = [len(s) for s in sentences]
    merged_ours = merge_windows(windows, ours, len(sentences), lengths)
    merged_theirs = merge_windows(windows, theirs, len(sentences), lengths)
    differ = sum(a != b for a, b in zip(merged_ours, merged_theirs, strict=True))
    words = sum(lengths)
    word_diff = sum(
        x != y
        for a, b in zip(merged_ours, merged_theirs, strict=True)
        for x, y in zip(a, b, strict=True)
    )
    return {
        # The raw tokenizer must cut the sentences into the windows training's tokenizer does.
        "same_windows": onnx.encode(sentences) == windows,
        "sentences": len(sentences),
        "words": words,
        "max_abs_emission_diff": max_diff,
        "sentences_with_other_tags": differ,
        "word_tag_agreement": 1.0 - word_diff / words if words else 1.0,
        "torch_seconds": round(torch_s, 3),
        "onnx_seconds": round(onnx_s, 3),
    }


def contracting_matmuls(model_path: Path) -> list[str]:
    """Names of the MatMul nodes whose constant weight maps a wider input to a narrower output.

    Found from the graph's shapes, not from module names, so any encoder's export gets the same
    rule (BERT, XLM-R and e5 down-projections are ``(intermediate, hidden)``).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    # shape: (in_features, out_features) for a MatMul's constant right-hand side
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and len(shapes.get(node.input[1], ())) == 2
        and shapes[node.input[1]][0] > shapes[node.input[1]][1]
    ]


def _quantize(source: Path, target: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = contracting_matmuls(source)
    with atomic_path(target) as tmp:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep_fp32,
        )
    return {"weights": "int8, per channel", "fp32_matmuls": keep_fp32}


def export_onnx(
    folder: str | Path,
    sentences: Sequence[Sequence[str]],
    *,
    int8: bool = False,
    batch_size: int = 32,
    tagger: Tagger | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Export a saved tagger folder to ONNX and check it on ``sentences``.

    Args:
        folder: A tagger folder written by :meth:`Tagger.save`.
        sentences: Check sentences (words); training passes its validation split.
        int8: Also write the dynamically quantized ``model.int8.onnx``.
        batch_size: Windows per batch in the check.
        tagger: The model to export (default: loaded from ``folder``); benchmarks pass one
            whose head ``Tagger.load`` cannot rebuild.
        strict: Refuse an export whose tags differ from torch's (False: only record it).

    Returns:
        What ``onnx.json`` records: the tokenizer ids, the opset and the checks.

    Raises:
        ExportCheckError: with ``strict``, some sentence gets other tags from the export than
            from torch (the folder's export files are removed).
    """
    folder = Path(folder)
    tagger = (Tagger.load(folder) if tagger is None else tagger).cpu().eval()
    # The export is made in a copy of the folder (hard links: no weights are copied) swapped in
    # whole at the end: a failure or a kill leaves the folder with its old export, never a new
    # model.onnx beside an old onnx.json or none.
    with staging_dir(folder) as staging, writing(folder):
        shutil.copytree(folder, staging, copy_function=link_or_copy, dirs_exist_ok=True)
        try:
            manifest = _export_into(staging, tagger, sentences, int8, batch_size, strict)
        except ExportCheckError as exc:
            # Refused: the folder keeps no export (its record first, which loaders look for).
            for name in (EXPORT_FILE, ONNX_FILE, ONNX_INT8_FILE):
                (folder / name).unlink(missing_ok=True)
            raise ExportCheckError(str(exc).replace(str(staging), str(folder))) from None
        replace_dir(staging, folder)
    return manifest


def _export_into(
    folder: Path,
    tagger: Tagger,
    sentences: Sequence[Sequence[str]],
    int8: bool,
    batch_size: int,
    strict: bool,
) -> dict[str, Any]:
    """:func:`export_onnx`'s work, in ``folder`` (a staging copy)."""
    fp32 = folder / ONNX_FILE
    (folder / EXPORT_FILE).unlink(missing_ok=True)  # no record of an older export survives
    began = time.perf_counter()
    _write_onnx(tagger, fp32)
    manifest: dict[str, Any] = {
        "format_version": EXPORT_FORMAT,
        "file": ONNX_FILE,
        "opset": OPSET,
        "torch": torch.__version__,
        "unk_id": tagger.tokenizer.unk_token_id,
        "pad_id": tagger.pad_id,
        "export_seconds": round(time.perf_counter() - began, 3),
    }
    threads = torch.get_num_threads()
    onnx = OnnxTagger.load(folder, threads=threads, manifest=manifest)
    check = _compare(tagger, onnx, sentences, batch_size)
    manifest["check"] = check
    if strict and (check["sentences_with_other_tags"] or not check["same_windows"]):
        raise ExportCheckError(
            f"{folder}: the ONNX export tags {check['sentences_with_other_tags']} of "
            f"{check['sentences']} sentences differently from torch "
            f"(max emission difference {check['max_abs_emission_diff']:.3g}; same windows: "
            f"{check['same_windows']})"
        )
    int8_path = folder / ONNX_INT8_FILE
    if int8:
        scheme = _quantize(fp32, int8_path)
        quantized = OnnxTagger.load(folder, int8=True, threads=threads, manifest=manifest)
        manifest["int8"] = {
            "file": ONNX_INT8_FILE,
            **scheme,
            "check": _compare(tagger, quantized, sentences, batch_size),
        }
    elif int8_path.exists():
        os.remove(int8_path)  # from an earlier export of other weights
    atomic_write_text(folder / EXPORT_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest
