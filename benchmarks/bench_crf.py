"""CRF decoding: the prediction path's numpy Viterbi and the torch loop against torchcrf.

All decode the same random emissions with the same (torchcrf) transition scores and no BIO
constraint masks, so the best paths must be identical; every timed call is checked against the
reference path and the mismatches are counted (must be 0). A separate check decodes random
inputs of varied shapes, masks, score scales and exact ties with every decoder.

Timing: ``--repeats`` calls after warm-up, with one torch thread and with torch's default
thread count, under ``torch.inference_mode`` as in ``Tagger.predict_ids``. Columns:

- ``numpy``: :func:`complex_ner.domain.models.numpy_crf.viterbi`, what prediction runs on the
  ONNX export's emissions (CPU only; its time includes nothing but the decoding);
- ``torch loop``: :func:`complex_ner.domain.models.crf.viterbi_decode`, what validation during
  training runs (any device).

    python -m benchmarks.bench_crf [--quick] [--json PATH]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchcrf import CRF

from benchmarks.harness import (
    base_parser,
    bench_devices,
    emit,
    machine_info,
    parse,
    result,
    target,
    time_calls,
    torch_threads,
)
from complex_ner.domain.models.crf import viterbi_decode
from complex_ner.domain.models.numpy_crf import CRFScores, viterbi

FULL_SHAPES = [(64, 48, 13), (1, 48, 13), (16, 24, 13), (256, 48, 13), (64, 128, 13)]
QUICK_SHAPES = [(8, 12, 13), (1, 12, 13)]
#: Targets of the performance issue: 10x torchcrf on a batch, no slower on one sentence.
BATCH_SPEEDUP_TARGET = 10.0
SINGLE_SPEEDUP_TARGET = 1.0
COLUMNS = [
    "batch x words x tags",
    "device",
    "threads",
    "numpy ms (IQR)",
    "torchcrf ms (IQR)",
    "speedup",
    "torch loop ms",
    "torch loop speedup",
    "timed calls",
    "path mismatches",
]
BACKENDS = ("numpy", "torch")


def random_case(
    batch: int,
    seq_len: int,
    num_tags: int,
    generator: torch.Generator,
    device: str = "cpu",
    scale: float = 0.1,
    ties: bool = False,
) -> tuple[CRF, torch.Tensor, torch.Tensor]:
    """A torchcrf CRF, emissions and a varied prefix mask (row 0 full length).

    ``scale`` 0.1 keeps torchcrf's uniform(-0.1, 0.1) initialisation; other scales draw the
    transitions from N(0, scale²); ``ties`` uses small integers, so many path scores are equal.
    """
    crf = CRF(num_tags, batch_first=True)
    params = (crf.start_transitions, crf.transitions, crf.end_transitions)
    with torch.no_grad():
        if ties:
            for p in params:
                p.copy_(torch.randint(-2, 3, p.shape, generator=generator).float())
            # shape: (batch, seq_len, num_tags)
            emissions = torch.randint(-2, 3, (batch, seq_len, num_tags), generator=generator)
            emissions = emissions.float()
        else:
            if scale != 0.1:
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=generator) * scale)
            emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
    # shape: (batch,)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    # shape: (batch, seq_len)
    mask = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
    return crf.to(device), emissions.to(device), mask.to(device)


def decode(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor, backend: str) -> list[list[int]]:
    """The numpy decoder or the torch loop with torchcrf's transition scores."""
    if backend == "numpy":
        scores = CRFScores(
            [f"T{i}" for i in range(crf.num_tags)],
            crf.start_transitions.detach().cpu().numpy(),
            crf.transitions.detach().cpu().numpy(),
            crf.end_transitions.detach().cpu().numpy(),
            constrain=False,
        )
        return viterbi(emissions.cpu().numpy(), mask.sum(1).tolist(), scores)
    return viterbi_decode(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )


def mismatches(paths: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> int:
    """Number of sequences whose path differs from the reference."""
    if len(paths) != len(reference):
        return max(len(paths), len(reference))
    return sum(list(a) != list(b) for a, b in zip(paths, reference, strict=True))


def equivalence_check(n_cases: int, seed: int = 0) -> dict[str, int]:
    """Decode ``n_cases`` random inputs with torchcrf and every decoder; count differences."""
    gen = torch.Generator().manual_seed(seed)
    counts = {"inputs": 0, "sequences": 0, "tie_inputs": 0}
    counts.update({f"{b}_mismatched_sequences": 0 for b in BACKENDS})
    tag_choices = (1, 2, 3, 5, 13, 25)
    with torch_threads(1), torch.inference_mode():
        torch.manual_seed(seed)  # torchcrf's own initialisation
        for k in range(n_cases):
            batch = int(torch.randint(1, 65, (1,), generator=gen))
            seq_len = int(torch.randint(1, 65, (1,), generator=gen))
            num_tags = tag_choices[int(torch.randint(0, len(tag_choices), (1,), generator=gen))]
            ties = k % 5 == 4
            scale = (0.1, 1.0, 5.0)[k % 3]
            crf, em, mask = random_case(batch, seq_len, num_tags, gen, scale=scale, ties=ties)
            reference = crf.decode(em, mask)
            for backend in BACKENDS:
                paths = decode(crf, em, mask, backend)
                counts[f"{backend}_mismatched_sequences"] += mismatches(paths, reference)
            counts["inputs"] += 1
            counts["sequences"] += batch
            counts["tie_inputs"] += ties
    return counts


def bench_shape(
    shape: tuple[int, int, int], device: str, threads: int | None, repeats: int, budget_s: float
) -> dict[str, Any]:
    """Time torchcrf, numpy and the torch loop on one shape; check every timed call."""
    batch, seq_len, num_tags = shape
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if device == "cuda" else None
    bad = {"numpy": 0, "torchcrf": 0, "torch": 0}
    with torch_threads(threads) as used, torch.inference_mode():
        crf, em, mask = random_case(batch, seq_len, num_tags, gen, device=device)
        reference = crf.decode(em, mask)

        def run(name: str, fn: Any) -> Any:
            def check(paths: list[list[int]]) -> None:
                bad[name] += mismatches(paths, reference)

            return time_calls(fn, repeats, budget_s=budget_s, sync=sync, check=check)

        fast = run("numpy", lambda: decode(crf, em, mask, "numpy"))
        ref = run("torchcrf", lambda: crf.decode(em, mask))
        loop = run("torch", lambda: decode(crf, em, mask, "torch"))
    return {
        "shape": list(shape),
        "device": device,
        "threads": used,
        "numpy": fast.as_dict(),
        "torchcrf": ref.as_dict(),
        "torch_loop": loop.as_dict(),
        "speedup": ref.median / fast.median,
        "torch_loop_speedup": ref.median / loop.median,
        "timed_calls": fast.n + ref.n + loop.n,
        "mismatches": bad["numpy"] + bad["torchcrf"],
        "torch_loop_mismatches": bad["torch"],
    }


def _ms(timing: dict[str, Any]) -> str:
    return f"{timing['median'] * 1e3:.3g} ({timing['iqr'] * 1e3:.2g})"


def summarize(cells: list[dict[str, Any]], check: dict[str, int]) -> list[dict[str, Any]]:
    """The headline rows: mismatches and speedups at the largest and the one-sentence batch."""
    total = sum(c["mismatches"] for c in cells) + check["numpy_mismatched_sequences"]
    summary = [target("path mismatches (all timed calls, random inputs)", total, "0", total == 0)]
    first_single = next((c["shape"] for c in cells if c["shape"][0] == 1), None)
    for c in cells:
        if c["device"] != "cpu" or c["shape"] not in (cells[0]["shape"], first_single):
            continue
        label = f"{'x'.join(map(str, c['shape']))}, {c['threads']} thread(s)"
        goal = BATCH_SPEEDUP_TARGET if c["shape"][0] > 1 else SINGLE_SPEEDUP_TARGET
        summary.append(
            target(
                f"speedup vs torchcrf at {label}",
                round(c["speedup"], 2),
                f">= {goal:g}x",
                c["speedup"] >= goal,
            )
        )
        if c["shape"][0] == 1:
            summary.append(
                target(
                    f"torch loop speedup at {label}",
                    round(c["torch_loop_speedup"], 2),
                    f">= {SINGLE_SPEEDUP_TARGET:g}x",
                    c["torch_loop_speedup"] >= SINGLE_SPEEDUP_TARGET,
                )
            )
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("crf", __doc__, threads=None)
    parser.add_argument("--random-inputs", type=int, default=None, help="equivalence inputs")
    args = parse(parser, argv)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (5 if args.quick else 50)
    budget = 0.5 if args.quick else 3.0
    n_random = args.random_inputs or (100 if args.quick else 3000)
    default_threads = torch.get_num_threads()
    machine = machine_info()

    devices = bench_devices(args.devices)
    settings: list[tuple[str, int | None]] = []
    if "cpu" in devices:
        settings += [("cpu", 1)] + ([("cpu", default_threads)] if default_threads != 1 else [])
    if "cuda" in devices:
        settings.append(("cuda", None))
    cells = [
        bench_shape(shape, device, threads, repeats, budget)
        for device, threads in settings
        for shape in shapes
    ]
    check = equivalence_check(n_random)

    rows: list[list[Any]] = [
        [
            "x".join(map(str, c["shape"])),
            c["device"],
            c["threads"] if c["device"] == "cpu" else "—",
            _ms(c["numpy"]) if c["device"] == "cpu" else None,
            _ms(c["torchcrf"]),
            c["speedup"],
            c["torch_loop"]["median"] * 1e3,
            c["torch_loop_speedup"],
            c["timed_calls"],
            c["mismatches"],
        ]
        for c in cells
    ]
    rows.append(
        [
            f"{check['inputs']:,} random inputs (1-64 x 1-64 x 1-25, "
            f"{check['tie_inputs']} with exact ties)",
            "cpu",
            1,
            None,
            None,
            None,
            None,
            None,
            None,
            check["numpy_mismatched_sequences"],
        ]
    )
    torch_loop_bad = sum(c["torch_loop_mismatches"] for c in cells)
    torch_loop_bad += check["torch_mismatched_sequences"]
    notes = [
        "Same transitions (torchcrf's parameters, uniform(-0.1, 0.1)), random N(0, 1) emissions, "
        "random prefix lengths (row 0 full); all under torch.inference_mode.",
        f"Median (IQR) of up to {repeats} timed calls after 3 warm-up calls; a cell stops after "
        f"{budget:g} s of timed calls (at least 5 calls).",
        f"Path mismatches against torchcrf: torch loop {torch_loop_bad}.",
    ]
    if "cuda" not in devices:
        notes.append("No CUDA rows (no GPU here, or --devices cpu).")
    record = result(
        args,
        "CRF decoding: batched Viterbi vs torchcrf.CRF.decode",
        COLUMNS,
        rows,
        summary=summarize(cells, check),
        notes=notes,
        machine=machine,
        cells=cells,
        equivalence=check,
        total_mismatches=sum(c["mismatches"] for c in cells) + check["numpy_mismatched_sequences"],
        torch_loop_mismatches=torch_loop_bad,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
