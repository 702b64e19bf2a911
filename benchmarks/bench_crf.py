"""Batched Viterbi (``complex_ner.models.crf.viterbi_decode``) against ``torchcrf.CRF.decode``.

Both decode the same random emissions with the same (torchcrf) transition scores and no BIO
constraint masks, so the best paths must be identical; every timed call is checked against the
reference path and the mismatches are counted (must be 0). A separate check decodes thousands
of random inputs of varied shapes, masks, score scales and exact ties.

Timing: median of up to 50 calls after warm-up (``time.perf_counter``), with one torch thread and
with torch's default thread count; both calls run under ``torch.inference_mode`` as in
``Tagger.predict_ids``. The "recursion only" column times just the forward max-plus loop of
``viterbi_decode`` (same tensor operations, re-stated here): no implementation that keeps one
set of torch operations per time step can beat it, so torchcrf's time divided by it bounds the
speedup any faster backtrack could bring.

The "sketch" column times :func:`sketch_viterbi`, a proposal that lives only in this file (not
product code): the same forward recursion without ``torch.where`` on steps where every sequence
is still running, and the backtrack in plain Python over one ``torch.stack(history).tolist()``
instead of one ``gather``/``where``/assignment per step. Its paths are checked the same way.

    .venv/bin/python benchmarks/bench_crf.py [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_all import (  # noqa: E402
    base_parser,
    cuda_available,
    emit,
    machine_info,
    make_result,
    target,
    time_calls,
    torch_threads,
)

FULL_SHAPES = [(64, 48, 13), (1, 48, 13), (16, 24, 13), (256, 48, 13), (64, 128, 13)]
QUICK_SHAPES = [(8, 12, 13), (1, 12, 13)]
HEADLINE = (64, 48, 13)
COLUMNS = [
    "batch x words x tags",
    "device",
    "threads",
    "ours ms",
    "torchcrf ms",
    "speedup",
    "ours recursion-only ms",
    "speedup bound (free backtrack)",
    "sketch ms",
    "sketch speedup",
    "timed calls",
    "path mismatches",
]


def random_case(
    batch: int,
    seq_len: int,
    num_tags: int,
    generator: Any,
    device: str = "cpu",
    scale: float = 1.0,
    ties: bool = False,
) -> tuple[Any, Any, Any]:
    """A torchcrf CRF, emissions and a varied prefix mask (row 0 full length)."""
    import torch
    from torchcrf import CRF

    crf = CRF(num_tags, batch_first=True)
    with torch.no_grad():
        if ties:  # small integers: many exactly equal path scores
            for p in (crf.start_transitions, crf.transitions, crf.end_transitions):
                p.copy_(torch.randint(-2, 3, p.shape, generator=generator).float())
            emissions = torch.randint(-2, 3, (batch, seq_len, num_tags), generator=generator)
            emissions = emissions.float()
        else:
            if scale != 0.1:  # 0.1: keep torchcrf's uniform(-0.1, 0.1) initialisation
                for p in (crf.start_transitions, crf.transitions, crf.end_transitions):
                    p.copy_(torch.randn(p.shape, generator=generator) * scale)
            emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    mask = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
    return crf.to(device), emissions.to(device), mask.to(device)


def torch_no_grad_lazy(fn: Any) -> Any:
    """``torch.no_grad()`` around ``fn`` without importing torch at module import."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def ours(crf: Any, emissions: Any, mask: Any) -> list[list[int]]:
    from complex_ner.models.crf import viterbi_decode

    return viterbi_decode(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )


def recursion_only(crf: Any, emissions: Any, mask: Any) -> Any:
    """The forward max-plus loop of ``viterbi_decode`` alone (its per-step tensor operations)."""
    import torch

    trans = crf.transitions
    score = crf.start_transitions + emissions[:, 0]
    history = []
    for i in range(1, emissions.size(1)):
        next_score = score.unsqueeze(2) + trans + emissions[:, i].unsqueeze(1)
        next_score, indices = next_score.max(dim=1)
        score = torch.where(mask[:, i].unsqueeze(1), next_score, score)
        history.append(indices)
    return score


@torch_no_grad_lazy
def sketch_viterbi(
    emissions: Any, mask: Any, start: Any, transitions: Any, end: Any
) -> list[list[int]]:
    """Proposal: ``viterbi_decode`` (unconstrained) with a cheaper mask and backtrack.

    Same float operations in the same order as torchcrf, so the paths are identical.
    """
    import torch

    seq_len = emissions.size(1)
    lengths = mask.sum(dim=1).tolist()
    shortest = min(lengths)
    steps = emissions.unbind(1)
    # shape: (batch, 1) per step; only needed past the shortest sequence's end
    on = mask.unsqueeze(2).unbind(1) if shortest < seq_len else ()
    score = start + steps[0]
    history = []
    for i in range(1, seq_len):
        next_score = score.unsqueeze(2) + transitions + steps[i].unsqueeze(1)
        next_score, indices = next_score.max(dim=1)
        score = next_score if i < shortest else torch.where(on[i], next_score, score)
        history.append(indices)
    best_last = (score + end).argmax(dim=1).tolist()
    back = torch.stack(history).tolist() if history else []
    paths = []
    for b, tag in enumerate(best_last):
        path = [tag]
        for t in range(lengths[b] - 2, -1, -1):
            tag = back[t][b][tag]
            path.append(tag)
        path.reverse()
        paths.append(path)
    return paths


def mismatches(paths: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> int:
    """Number of sequences whose path differs from the reference."""
    if len(paths) != len(reference):
        return max(len(paths), len(reference))
    return sum(list(a) != list(b) for a, b in zip(paths, reference, strict=True))


def equivalence_check(n_cases: int, seed: int = 0) -> dict[str, int]:
    """Decode ``n_cases`` random inputs both ways; count differing paths."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    counts = {
        "inputs": 0,
        "sequences": 0,
        "mismatched_sequences": 0,
        "sketch_mismatched_sequences": 0,
        "tie_inputs": 0,
    }
    tag_choices = (1, 2, 3, 5, 13, 25)
    with torch_threads(1), torch.inference_mode():
        torch.manual_seed(seed)  # torchcrf's own initialisation
        for k in range(n_cases):
            batch = int(torch.randint(1, 33, (1,), generator=gen))
            seq_len = int(torch.randint(1, 65, (1,), generator=gen))
            num_tags = tag_choices[int(torch.randint(0, len(tag_choices), (1,), generator=gen))]
            ties = k % 5 == 4
            scale = (0.1, 1.0, 5.0)[k % 3]
            crf, em, mask = random_case(batch, seq_len, num_tags, gen, scale=scale, ties=ties)
            reference = crf.decode(em, mask)
            counts["mismatched_sequences"] += mismatches(ours(crf, em, mask), reference)
            sketch = sketch_viterbi(
                em, mask, crf.start_transitions, crf.transitions, crf.end_transitions
            )
            counts["sketch_mismatched_sequences"] += mismatches(sketch, reference)
            counts["inputs"] += 1
            counts["sequences"] += batch
            counts["tie_inputs"] += ties
    return counts


def bench_shape(
    shape: tuple[int, int, int],
    device: str,
    threads: int | None,
    repeats: int,
    budget_s: float,
    seed: int,
) -> dict[str, Any]:
    import torch

    batch, seq_len, num_tags = shape
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sync = torch.cuda.synchronize if device == "cuda" else None
    bad = {"ours": 0, "torchcrf": 0, "sketch": 0}
    with torch_threads(threads) as used, torch.inference_mode():
        crf, em, mask = random_case(batch, seq_len, num_tags, gen, device=device, scale=0.1)
        reference = crf.decode(em, mask)

        def checker(name: str) -> Any:
            def check(paths: list[list[int]]) -> None:
                bad[name] += mismatches(paths, reference)

            return check

        t_ours, n_ours = time_calls(
            lambda: ours(crf, em, mask),
            repeats=repeats,
            budget_s=budget_s,
            sync=sync,
            check=checker("ours"),
        )
        t_ref, n_ref = time_calls(
            lambda: crf.decode(em, mask),
            repeats=repeats,
            budget_s=budget_s,
            sync=sync,
            check=checker("torchcrf"),
        )
        t_rec, _ = time_calls(
            lambda: recursion_only(crf, em, mask), repeats=repeats, budget_s=budget_s, sync=sync
        )
        t_sketch, _ = time_calls(
            lambda: sketch_viterbi(
                em, mask, crf.start_transitions, crf.transitions, crf.end_transitions
            ),
            repeats=repeats,
            budget_s=budget_s,
            sync=sync,
            check=checker("sketch"),
        )
    return {
        "shape": list(shape),
        "device": device,
        "threads": used,
        "ours_ms": t_ours * 1e3,
        "torchcrf_ms": t_ref * 1e3,
        "speedup": t_ref / t_ours,
        "recursion_only_ms": t_rec * 1e3,
        "speedup_bound": t_ref / t_rec,
        "sketch_ms": t_sketch * 1e3,
        "sketch_speedup": t_ref / t_sketch,
        "timed_calls": n_ours + n_ref,
        "mismatches": bad["ours"] + bad["torchcrf"],
        "sketch_mismatches": bad["sketch"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import torch

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per cell")
    parser.add_argument("--random-inputs", type=int, default=None, help="equivalence inputs")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    machine = machine_info()
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (5 if args.quick else 50)
    budget = 0.5 if args.quick else 3.0
    n_random = args.random_inputs or (100 if args.quick else 3000)

    settings: list[tuple[str, int | None]] = [("cpu", 1)]
    if default_threads != 1:
        settings.append(("cpu", default_threads))
    if cuda_available():
        settings.append(("cuda", None))
    cells = [
        bench_shape(shape, device, threads, repeats, budget, seed=i)
        for device, threads in settings
        for i, shape in enumerate(shapes)
    ]
    check = equivalence_check(n_random)

    rows: list[list[Any]] = [
        [
            "x".join(str(d) for d in c["shape"]),
            c["device"],
            c["threads"] if c["device"] == "cpu" else "—",
            c["ours_ms"],
            c["torchcrf_ms"],
            c["speedup"],
            c["recursion_only_ms"],
            c["speedup_bound"],
            c["sketch_ms"],
            c["sketch_speedup"],
            c["timed_calls"],
            c["mismatches"],
        ]
        for c in cells
    ]
    rows.append(
        [
            f"{check['inputs']:,} random inputs (1-32 x 1-64 x 1-25, "
            f"{check['tie_inputs']} with exact ties)",
            "cpu",
            1,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            check["mismatched_sequences"],
        ]
    )
    total_mismatches = sum(c["mismatches"] for c in cells) + check["mismatched_sequences"]

    def cell(shape: tuple[int, int, int], threads: int) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in cells
                if tuple(c["shape"]) == shape and c["device"] == "cpu" and c["threads"] == threads
            ),
            None,
        )

    sketch_bad = sum(c["sketch_mismatches"] for c in cells)
    sketch_bad += check["sketch_mismatched_sequences"]
    summary = [
        target(
            "path mismatches (all runs and random inputs)",
            total_mismatches,
            "0",
            total_mismatches == 0,
        )
    ]
    headline_shapes = [s for s in shapes if s[0] > 1][:1] + [s for s in shapes if s[0] == 1][:1]
    for thr in sorted({t for d, t in settings if d == "cpu" and t is not None}):
        big, one = (cell(s, thr) for s in headline_shapes)
        if big is not None:
            label = "x".join(map(str, big["shape"]))
            summary.append(
                target(
                    f"speedup vs torchcrf at {label}, {thr} thread(s)",
                    round(big["speedup"], 2),
                    ">= 10x",
                    big["speedup"] >= 10,
                )
            )
        if one is not None:
            label = "x".join(map(str, one["shape"]))
            summary.append(
                target(
                    f"speedup vs torchcrf at {label}, {thr} thread(s)",
                    round(one["speedup"], 2),
                    ">= 1x (no slower)",
                    one["speedup"] >= 1,
                )
            )
    notes = [
        "Same transitions (torchcrf's parameters, uniform(-0.1, 0.1)), random N(0, 1) emissions, "
        "random prefix lengths (row 0 full); both run under torch.inference_mode.",
        f"Median of up to {repeats} timed calls after 3 warm-up calls; a cell stops after "
        f"{budget:g} s of timed calls (at least 5 calls).",
        "speedup bound = torchcrf ms / recursion-only ms: the most any change to the backtrack "
        "alone could give while the forward recursion stays one set of torch ops per word.",
        f"sketch = sketch_viterbi (this file only, a proposal for crf.py): no torch.where "
        f"before the shortest sequence ends, backtrack over one .tolist(); path mismatches "
        f"vs torchcrf over all timed calls and random inputs: {sketch_bad}.",
    ]
    if not cuda_available():
        notes.append("No CUDA GPU here: GPU rows skipped (run on a GPU machine to add them).")
    else:
        notes.append("GPU rows decode fp32 emissions (autocast leaves add/max/where in fp32).")
    result = make_result(
        "crf",
        "CRF decoding: batched Viterbi vs torchcrf.CRF.decode",
        "python benchmarks/bench_crf.py" + (" --quick" if args.quick else ""),
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        cells=cells,
        equivalence=check,
        total_mismatches=total_mismatches,
        sketch_mismatches=sketch_bad,
    )
    return emit(result, args.json)


if __name__ == "__main__":
    main()
