"""Prediction throughput: our ``Tagger.predict`` against a HuggingFace token-classification
pipeline running the same encoder with the same weights.

Both sides carry one identical single-``nn.Linear`` classifier over the same encoder weights:

- ours: a ``Tagger`` whose head is replaced (in this file only) by :class:`OneLinearHead`,
  per-word argmax over the configured label piece (the first piece of each word), repaired to
  valid BIO; windows sorted by length and batched;
- HF: ``AutoModelForTokenClassification`` built from the same encoder folder, its encoder and
  ``classifier`` overwritten with our weights (checked equal), run through
  ``pipeline("token-classification", aggregation_strategy="first")`` on the words joined by
  spaces (the same text our tokenizer sees).

The classifier is a linear probe fitted on frozen encoder features of held-out training
sentences (those after the benchmark set), so predictions carry real decision margins and the
tag agreement and F1 numbers mean something. It is a weak model (frozen encoder, one linear
layer): its F1 only serves to compare fp32, int8 and the pipeline, not as a model score.

The pipeline's entity groups are converted back to word-level BIO (``B-`` on the first word a
group overlaps, ``I-`` after); its grouping rule (a new group on ``B-`` or a type change) is the
same BIO repair ours applies, so any difference comes from the encoder inputs or the piece a
word is read from.

Timing: batch sizes are swept on a subset; the best of each system then tags the full set,
chunk by chunk with the systems interleaved on each chunk (so load changes on a shared
machine hit both alike). Peak RSS is sampled during each system's runs.

    .venv/bin/python benchmarks/bench_inference.py [--quick] [--json PATH]
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_all import (  # noqa: E402
    PeakRSS,
    base_parser,
    bench_devices,
    cuda_available,
    default_encoder,
    emit,
    entity_types,
    load_sentences,
    machine_info,
    make_result,
    release_memory,
    rss_mb,
    tag_set,
    target,
    tiny_encoder,
    torch_threads,
)

COLUMNS = [
    "system",
    "device",
    "threads",
    "batch size",
    "sentences",
    "sentences/s",
    "vs pipeline",
    "same words vs pipeline",
    "same sentences vs pipeline",
    "same words vs fp32",
    "F1 (linear probe)",
    "peak RSS MiB",
    "RSS Δ MiB",
]
#: Names of the two full-set systems in the table and the JSON records (bench_roofline reads them).
OURS_SYSTEM = "ours (one linear head)"
PIPELINE_SYSTEM = "HF pipeline, aggregation=first"


def _one_linear_head_class() -> type:
    from torch import Tensor, nn

    from complex_ner.domain.models.heads import Head, LinearHead

    class OneLinearHead(LinearHead):
        """One ``nn.Linear`` to emissions, then LinearHead's argmax + BIO repair, softmax and
        cross-entropy: the head of a HF ``*ForTokenClassification`` model."""

        def __init__(self, hidden_size: int, tags: Sequence[str]) -> None:
            Head.__init__(self, hidden_size, tags)  # not LinearHead's two layers
            self.dropout = nn.Dropout(0.0)
            self.classifier = nn.Linear(hidden_size, self.num_tags)

        def forward(self, features: Tensor, mask: Tensor) -> Tensor:
            self._validate_features(features, mask)
            # shape: (batch, words, num_tags)
            return self.classifier(self.dropout(features))

    return OneLinearHead


# --------------------------------------------------------------------------- models


def build_models(encoder_dir: Path, device: str) -> tuple[Any, Any]:
    """Our tagger with a one-linear head and the HF token-classification model, same weights."""
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from complex_ner.domain.models.tagger import build_model

    tags = tag_set()
    tagger = build_model(str(encoder_dir), tags, "bert_linear", dropout=0.0, lang="es")
    tagger.head = _one_linear_head_class()(int(tagger.encoder.config.hidden_size), tags)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier" is expected here
    try:
        hf = AutoModelForTokenClassification.from_pretrained(
            str(encoder_dir),
            num_labels=len(tags),
            id2label=dict(enumerate(tags)),
            label2id={t: i for i, t in enumerate(tags)},
            use_safetensors=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    hf.base_model.load_state_dict(tagger.encoder.state_dict(), strict=True)
    copy_classifier(tagger, hf)
    tagger.eval().to(device)
    hf.eval().to(device)
    return tagger, hf


def copy_classifier(tagger: Any, hf: Any) -> None:
    import torch

    with torch.no_grad():
        hf.classifier.weight.copy_(tagger.head.classifier.weight)
        hf.classifier.bias.copy_(tagger.head.classifier.bias)


def same_weights(tagger: Any, hf: Any) -> bool:
    import torch

    ours = tagger.encoder.state_dict()
    theirs = hf.base_model.state_dict()
    if set(ours) != set(theirs):
        return False
    enc = all(torch.equal(ours[k].cpu(), theirs[k].cpu()) for k in ours)
    head = torch.equal(tagger.head.classifier.weight.cpu(), hf.classifier.weight.cpu())
    return enc and head and torch.equal(tagger.head.classifier.bias.cpu(), hf.classifier.bias.cpu())


def fit_probe(tagger: Any, sentences: Sequence[Any], steps: int = 300) -> dict[str, float]:
    """Fit the one-linear classifier on frozen word features of ``sentences`` (full batch)."""
    import torch
    import torch.nn.functional as F

    from complex_ner.domain.alignment import collate, gather_words

    words = [list(s.tokens) for s in sentences]
    labels = [[tagger.tag_to_id[t] for t in s.tags] for s in sentences]
    windows = tagger.encode(words)
    feats, golds = [], []
    device = tagger.device
    with torch.no_grad():
        for start in range(0, len(windows), 64):
            chunk = windows[start : start + 64]
            batch = collate(chunk, tagger.pad_id, labels).to(device)
            hidden = tagger.encoder(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state
            vecs = gather_words(hidden, batch.word_index).float()
            feats.append(vecs[batch.word_mask].cpu())
            golds.append(batch.labels[batch.word_mask].cpu())  # type: ignore[index]
    x, y = torch.cat(feats), torch.cat(golds)
    head = tagger.head.classifier
    weight = head.weight.detach().cpu().clone().requires_grad_(True)
    bias = head.bias.detach().cpu().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(xs @ weight.T + bias, y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        # Fold the standardisation into the layer: w' = w / std, b' = b - w' . mean.
        w = weight / std
        b = bias - w @ mean
        head.weight.copy_(w.to(head.weight.device))
        head.bias.copy_(b.to(head.bias.device))
        acc = float(((x @ w.T + b).argmax(1) == y).float().mean())
    return {"words": int(len(y)), "train_accuracy": acc, "final_loss": float(loss.detach())}


def quantized_copy(tagger: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` of a CPU copy of ``tagger``."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        from torch.ao.quantization import quantize_dynamic

        clone = copy.deepcopy(tagger).cpu().eval()
        return quantize_dynamic(clone, {nn.Linear}, dtype=torch.qint8)


# --------------------------------------------------------------------------- runners


def hf_pipeline(hf: Any, tokenizer: Any, device: str) -> Any:
    from transformers import pipeline

    return pipeline(
        "token-classification",
        model=hf,
        tokenizer=tokenizer,
        aggregation_strategy="first",
        device=0 if device == "cuda" else -1,
    )


def word_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return spans


def groups_to_tags(groups: Sequence[dict[str, Any]], words: Sequence[str]) -> list[str]:
    """Word-level BIO from pipeline entity groups over ``" ".join(words)``."""
    spans = word_spans(words)
    tags = ["O"] * len(words)
    for group in sorted(groups, key=lambda g: g["start"]):
        hit = [i for i, (s, e) in enumerate(spans) if s < group["end"] and group["start"] < e]
        hit = [i for i in hit if tags[i] == "O"]
        for k, i in enumerate(hit):
            tags[i] = ("B-" if k == 0 else "I-") + group["entity_group"]
    return tags


def make_runner(
    kind: str, model: Any, device: str, tokenizer: Any = None
) -> Callable[[list[list[str]], int], Any]:
    """``run(sentences, batch_size) -> word tags`` (entities for ``"entities"``)."""
    import contextlib

    import torch

    if kind == "pipeline":
        pipe = hf_pipeline(model, tokenizer, device)

        def run_pipe(sentences: list[list[str]], batch_size: int) -> list[list[str]]:
            texts = [" ".join(words) for words in sentences]
            amp = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if device == "cuda"
                else contextlib.nullcontext()
            )
            with warnings.catch_warnings(), torch.inference_mode(), amp:
                warnings.simplefilter("ignore")  # the XLM-R "fallback heuristic" warning
                out = pipe(texts, batch_size=batch_size)
            return [groups_to_tags(g, w) for g, w in zip(out, sentences, strict=True)]

        return run_pipe
    if kind == "entities":
        from complex_ner.engines.predict import predict_entities

        def run_entities(sentences: list[list[str]], batch_size: int) -> Any:
            return predict_entities(model, [" ".join(w) for w in sentences], batch_size)

        return run_entities

    def run_ours(sentences: list[list[str]], batch_size: int) -> list[list[str]]:
        with torch.inference_mode():
            return model.predict(sentences, batch_size=batch_size)

    return run_ours


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------- comparison


def agreement(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> tuple[float, float]:
    words = sum(len(x) for x in a)
    same_words = sum(p == q for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True))
    same_sents = sum(list(x) == list(y) for x, y in zip(a, b, strict=True))
    return same_words / max(1, words), same_sents / max(1, len(a))


def macro_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    from complex_ner.domain.metrics import entity_scores

    return float(entity_scores(gold, pred, entity_types())["macro"]["f1"])


def explain_differences(
    tagger: Any, sentences: Sequence[Sequence[str]], ours: Any, theirs: Any
) -> dict[str, Any]:
    """Sort words tagged differently by the likely cause.

    - ``windowed``: the sentence is longer than one 128-piece window, so our context differs
      (the pipeline reads up to 512 pieces at once);
    - ``bare_piece``: the sentence has a bare ``▁`` piece, which the pipeline's space
      heuristic treats as a word of its own, while ours reads the word from its other piece;
    - ``near_tie``: neither; float differences between two batch layouts flipped an argmax whose
      top-2 margin is tiny (the median margin of our logits on those words is reported).
    """
    import torch

    from complex_ner.domain.alignment import collate

    windows = tagger.encode(sentences)
    per_sentence: dict[int, int] = {}
    for w in windows:
        per_sentence[w.sentence_index] = per_sentence.get(w.sentence_index, 0) + 1
    counts = {"windowed": 0, "bare_piece": 0, "near_tie": 0}
    tie_sentences: dict[int, list[int]] = {}
    for i, (x, y) in enumerate(zip(ours, theirs, strict=True)):
        diff = [k for k, (p, q) in enumerate(zip(x, y, strict=True)) if p != q]
        if not diff:
            continue
        text = " ".join(sentences[i])
        pieces = tagger.tokenizer.convert_ids_to_tokens(
            tagger.tokenizer(text, add_special_tokens=False)["input_ids"]
        )
        if per_sentence.get(i, 0) > 1:
            counts["windowed"] += len(diff)
        elif "▁" in pieces:
            counts["bare_piece"] += len(diff)
        else:
            counts["near_tie"] += len(diff)
            tie_sentences[i] = diff
    margins: list[float] = []
    if tie_sentences:
        by_sentence = {w.sentence_index: w for w in windows if w.sentence_index in tie_sentences}
        with torch.inference_mode():
            for i, diff in tie_sentences.items():
                batch = collate([by_sentence[i]], tagger.pad_id).to(tagger.device)
                em = tagger.emissions(batch).float()[0]
                top = em.topk(2, dim=-1).values
                margins += [float(top[k, 0] - top[k, 1]) for k in diff]
    logits_range = None
    if margins:
        margins.sort()
        logits_range = margins[len(margins) // 2]
    return {**counts, "near_tie_median_margin": logits_range}


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import tempfile

    import torch

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None, help="benchmark set size")
    parser.add_argument("--probe-sentences", type=int, default=None)
    parser.add_argument("--sweep-sentences", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--ours-batch-sizes", type=int, nargs="+", default=[8, 32, 64, 128])
    parser.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--chunk", type=int, default=1000, help="sentences per interleaved chunk")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--encoder", type=Path, default=None)
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    n = args.sentences or (24 if args.quick else 5000)
    n_probe = args.probe_sentences or (24 if args.quick else 500)
    n_sweep = min(n, args.sweep_sentences or (12 if args.quick else 256))
    chunk = min(args.chunk, n) if not args.quick else max(1, n // 2)
    ours_sizes = [1, 8] if args.quick else args.ours_batch_sizes
    hf_sizes = [1, 8] if args.quick else args.hf_batch_sizes

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        encoder_dir = args.encoder or (
            tiny_encoder(Path(tmp) / "tiny-bert") if args.quick else default_encoder()
        )
        sentences, source = load_sentences(n, 0, allow_toy=args.quick)
        probe_sentences, _ = load_sentences(n_probe, n, allow_toy=args.quick)
        words = [list(s.tokens) for s in sentences]
        gold = [list(s.tags) for s in sentences]
        with torch_threads(args.threads or None) as threads:
            machine = machine_info()
            rss_start = rss_mb()
            tagger, hf = build_models(Path(encoder_dir), "cpu")
            probe = fit_probe(tagger, probe_sentences, steps=50 if args.quick else 300)
            copy_classifier(tagger, hf)
            weights_equal = same_weights(tagger, hf)
            rss_models = rss_mb()
            devices = bench_devices(args.devices)
            rows: list[list[Any]] = []
            records: list[dict[str, Any]] = []
            summary: list[dict[str, Any]] = []
            diff_info: dict[str, Any] = {}
            for device in devices:
                rec = run_device(
                    device,
                    tagger,
                    hf,
                    words,
                    gold,
                    n_sweep,
                    chunk,
                    ours_sizes,
                    hf_sizes,
                    threads,
                    default_threads,
                    with_int8=device == "cpu" and not args.no_int8,
                    quick=args.quick,
                )
                records.extend(rec["records"])
                rows.extend(rec["rows"])
                summary.extend(rec["summary"])
                diff_info[device] = rec["differences"]
    notes = [
        f"Data: {source}; sweep on the first {n_sweep} sentences, full runs on all {n} "
        f"(chunks of {chunk}, systems interleaved per chunk). torch threads: {threads} "
        f"(default here: {default_threads}; the host is shared, see the load average).",
        f"Same weights in both models: {'yes' if weights_equal else 'NO'} (encoder state dict "
        "and classifier compared with torch.equal).",
        f"Linear probe: fitted on {probe['words']:,} words of {n_probe} held-out training "
        f"sentences (after the benchmark set), train accuracy {probe['train_accuracy']:.3f}.",
        f"RSS: {rss_start:.0f} MiB before loading, {rss_models:.0f} MiB with our tagger and the "
        "HF model loaded (two copies of the encoder). 'RSS Δ' is the peak above the RSS "
        "before that system's run.",
    ]
    for device, info in diff_info.items():
        if info:
            notes.append(
                f"{device}: words tagged differently from the pipeline: {info['windowed']} in "
                f"sentences longer than one 128-piece window (ours windows, the pipeline reads "
                f"up to 512 pieces), {info['bare_piece']} in sentences with a bare '▁' piece "
                f"(the pipeline's space heuristic makes it a word of its own), "
                f"{info['near_tie']} other"
                + (
                    f" (median top-2 logit margin of ours on those words "
                    f"{info['near_tie_median_margin']:.3g}: small margins mean float near-ties "
                    "between the two batch layouts)."
                    if info["near_tie_median_margin"] is not None
                    else "."
                )
            )
    if not cuda_available():
        notes.append("No CUDA GPU here: GPU (bf16 autocast) rows skipped.")
    result = make_result(
        "inference",
        f"Prediction throughput: ours vs HF token-classification pipeline ({n:,} Spanish "
        "sentences)",
        "python benchmarks/bench_inference.py" + (" --quick" if args.quick else ""),
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        records=records,
        probe=probe,
        same_weights=weights_equal,
        differences=diff_info,
        encoder=str(encoder_dir),
    )
    return emit(result, args.json)


def run_device(
    device: str,
    tagger: Any,
    hf: Any,
    words: list[list[str]],
    gold: list[list[str]],
    n_sweep: int,
    chunk: int,
    ours_sizes: Sequence[int],
    hf_sizes: Sequence[int],
    threads: int,
    default_threads: int,
    with_int8: bool,
    quick: bool = False,
) -> dict[str, Any]:
    """Sweep batch sizes, then run the best of each system on the full set, interleaved.

    ``quick`` skips what only matters for real numbers: freeing memory between runs (a full
    garbage collection) and F1 (its seqeval import costs seconds; a random tiny model scores 0).
    """
    import torch

    from complex_ner.domain.models.tagger import Tagger

    tagger.to(device)
    hf.to(device)
    thr: Any = threads if device == "cpu" else "—"
    ours = make_runner("ours", tagger, device)
    pipe = make_runner("pipeline", hf, device, tagger.tokenizer)
    warm = words[: min(8, len(words))]
    ours(warm, 8)
    pipe(warm, 8)
    subset = words[:n_sweep]
    rows: list[list[Any]] = []
    records: list[dict[str, Any]] = []

    def sweep(name: str, run: Callable[..., Any], sizes: Sequence[int]) -> tuple[int, float]:
        best_bs, best_rate = sizes[0], 0.0
        for bs in sizes:
            _, seconds = timed(lambda bs=bs: run(subset, bs), device)
            rate = len(subset) / seconds
            records.append({"system": name, "phase": "sweep", "batch_size": bs, "rate": rate})
            rows.append(
                [f"{name} (sweep)", device, thr, bs, len(subset), rate]
                + [None] * (len(COLUMNS) - 6)
            )
            if rate > best_rate:
                best_bs, best_rate = bs, rate
        return best_bs, best_rate

    ours_bs, _ = sweep("ours", ours, ours_sizes)
    hf_bs, _ = sweep("HF pipeline", pipe, hf_sizes)

    # Extra single points on the subset: the CRF head, the text-to-entities path, and default
    # threads (the machine is shared: intra-op threads can be oversubscribed).
    crf = Tagger(
        tagger.encoder, tagger.tokenizer, dataclasses.replace(tagger.spec, arch="bert_crf")
    )
    crf.head.to(device)
    extras: list[tuple[str, Callable[..., Any], Any]] = [
        ("ours, bert_crf head (untrained CRF)", make_runner("ours", crf, device), thr),
        (
            "ours, predict_entities (text -> entities + confidence)",
            make_runner("entities", tagger, device),
            thr,
        ),
    ]
    for name, run, t in extras:
        run(warm, ours_bs)
        _, seconds = timed(lambda run=run: run(subset, ours_bs), device)
        rows.append(
            [name + " (subset)", device, t, ours_bs, len(subset), len(subset) / seconds]
            + [None] * (len(COLUMNS) - 6)
        )
        records.append({"system": name, "phase": "subset", "rate": len(subset) / seconds})
    if device == "cpu" and default_threads != threads:
        with torch_threads(default_threads):
            ours(warm, ours_bs)
            _, seconds = timed(lambda: ours(subset, ours_bs), device)
        rows.append(
            [
                "ours, torch default threads (subset)",
                device,
                default_threads,
                ours_bs,
                len(subset),
                len(subset) / seconds,
            ]
            + [None] * (len(COLUMNS) - 6)
        )
        records.append({"system": "ours default threads", "rate": len(subset) / seconds})

    systems: list[tuple[str, Callable[..., Any], int]] = [
        (OURS_SYSTEM, ours, ours_bs),
        (PIPELINE_SYSTEM, pipe, hf_bs),
    ]
    if with_int8:
        q = quantized_copy(tagger)
        systems.append(("ours, dynamic int8 (nn.Linear)", make_runner("ours", q, device), ours_bs))
        systems[-1][1](warm, ours_bs)
    outputs: dict[str, list[Any]] = {name: [] for name, _, _ in systems}
    seconds: dict[str, float] = {name: 0.0 for name, _, _ in systems}
    peak: dict[str, float] = {name: 0.0 for name, _, _ in systems}
    delta: dict[str, float] = {name: 0.0 for name, _, _ in systems}
    for start in range(0, len(words), chunk):
        part = words[start : start + chunk]
        for name, run, bs in systems:
            if not quick:
                release_memory()
            with PeakRSS() as mem:
                out, sec = timed(lambda run=run, bs=bs, part=part: run(part, bs), device)
            outputs[name].extend(out)
            seconds[name] += sec
            peak[name] = max(peak[name], mem.peak)
            delta[name] = max(delta[name], mem.delta)
    ours_tags = outputs[systems[0][0]]
    hf_tags = outputs[systems[1][0]]
    hf_rate = len(words) / seconds[systems[1][0]]
    for name, _, bs in systems:
        tags = outputs[name]
        rate = len(words) / seconds[name]
        w_hf, s_hf = agreement(tags, hf_tags)
        w_fp = agreement(tags, ours_tags)[0]
        f1 = None if quick else macro_f1(gold, tags)
        rows.append(
            [
                name,
                device + (" bf16" if device == "cuda" else ""),
                thr,
                bs,
                len(words),
                rate,
                rate / hf_rate,
                w_hf,
                s_hf,
                w_fp,
                f1,
                peak[name],
                delta[name],
            ]
        )
        records.append(
            {
                "system": name,
                "device": device,
                "phase": "full",
                "batch_size": bs,
                "sentences": len(words),
                "seconds": seconds[name],
                "rate": rate,
                "vs_pipeline": rate / hf_rate,
                "word_agreement_vs_pipeline": w_hf,
                "sentence_agreement_vs_pipeline": s_hf,
                "word_agreement_vs_fp32": w_fp,
                "macro_f1": f1,
                "peak_rss_mib": peak[name],
                "rss_delta_mib": delta[name],
            }
        )
    ours_rate = len(words) / seconds[systems[0][0]]
    w_hf, s_hf = agreement(ours_tags, hf_tags)
    summary = [
        target(
            f"ours vs HF pipeline, sentences/s ratio ({device})",
            round(ours_rate / hf_rate, 2),
            ">= 3x",
            ours_rate / hf_rate >= 3,
        ),
        target(f"ours sentences/s ({device}, batch {ours_bs})", round(ours_rate, 1), None, None),
        target(f"HF pipeline sentences/s ({device}, batch {hf_bs})", round(hf_rate, 1), None, None),
        target(f"same words as pipeline ({device})", round(w_hf, 4), None, None),
        target(f"same sentences as pipeline ({device})", round(s_hf, 4), None, None),
    ]
    if with_int8:
        name = systems[2][0]
        q_rate = len(words) / seconds[name]
        summary.append(
            target("int8 / fp32 throughput (cpu)", round(q_rate / ours_rate, 2), None, None)
        )
        summary.append(
            target(
                "int8 words same as fp32 (cpu)",
                round(agreement(outputs[name], ours_tags)[0], 4),
                None,
                None,
            )
        )
        if not quick:
            cost = macro_f1(gold, ours_tags) - macro_f1(gold, outputs[name])
            summary.append(
                target("int8 macro-F1 cost, linear probe (cpu)", round(cost, 4), None, None)
            )
    differences = explain_differences(tagger, words, ours_tags, hf_tags)
    tagger.to("cpu")
    hf.to("cpu")
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"rows": rows, "records": records, "summary": summary, "differences": differences}


if __name__ == "__main__":
    main()
