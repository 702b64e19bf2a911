"""CRF decoding: the product's batched Viterbi (``viterbi_decode``) against ``torchcrf.CRF.decode``.

Both decode the same random emissions with the same (torchcrf) transition scores and no BIO
constraint masks, so the best paths must be identical; every timed call is checked against the
reference path and the mismatches are counted (must be 0). A separate check decodes random
inputs of varied shapes, masks, score scales and exact ties with every backend.

Timing: ``--repeats`` calls after warm-up, with one torch thread and with torch's default
thread count, under ``torch.inference_mode`` as in ``Tagger.predict_ids``. Columns:

- ``auto``: ``viterbi_decode`` as the product calls it, in a process whose compiled (numba)
  kernel is loaded, i.e. the steady state of a long-running process;
- ``torch loop``: ``viterbi_decode(backend="torch")``, the path of CUDA tensors, of hosts
  without numba, and of a fresh process's small batches before the kernel is loaded.

The kernel's one-off costs are measured apart, in fresh child processes sharing an empty
``NUMBA_CACHE_DIR``: importing numba, the first call with a cold cache (compilation and cache
write), then the first call of a second process that finds the cache.

    python -m benchmarks.bench_crf [--quick] [--json PATH] [--no-kernel-costs]
"""

from __future__ import annotations

import tempfile
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
    run_python,
    target,
    time_calls,
    torch_threads,
)
from complex_ner.domain.models.crf import viterbi_decode

FULL_SHAPES = [(64, 48, 13), (1, 48, 13), (16, 24, 13), (256, 48, 13), (64, 128, 13)]
QUICK_SHAPES = [(8, 12, 13), (1, 12, 13)]
#: Targets of the performance issue: 10x torchcrf on a batch, no slower on one sentence.
BATCH_SPEEDUP_TARGET = 10.0
SINGLE_SPEEDUP_TARGET = 1.0
COLUMNS = [
    "batch x words x tags",
    "device",
    "threads",
    "auto ms (IQR)",
    "torchcrf ms (IQR)",
    "speedup",
    "torch loop ms",
    "torch loop speedup",
    "timed calls",
    "path mismatches",
]
BACKENDS = ("auto", "torch", "compiled")

# A fresh process: numba's import, then the kernel's first and second call (64x48x13 float32).
KERNEL_CHILD = r"""
import json, sys, time
import torch
from complex_ner.domain.models.crf import viterbi_decode
numba_at_import = "numba" in sys.modules
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
emissions = torch.randn(64, 48, 13, generator=gen)
mask = torch.ones(64, 48, dtype=torch.bool)
params = [torch.randn(*s, generator=gen) for s in ((13,), (13, 13), (13,))]
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
first = viterbi_decode(emissions, mask, *params, backend="compiled")
t2 = time.perf_counter()
second = viterbi_decode(emissions, mask, *params, backend="compiled")
t3 = time.perf_counter()
print(json.dumps({
    "numba_imported_by_crf_import": numba_at_import,
    "import_numba_s": t1 - t0,
    "first_call_s": t2 - t1,
    "second_call_ms": (t3 - t2) * 1e3,
    "same_paths": first == second,
}))
"""


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
    """The product's decoder with torchcrf's transition scores."""
    return viterbi_decode(
        emissions,
        mask,
        crf.start_transitions,
        crf.transitions,
        crf.end_transitions,
        backend=backend,
    )


def mismatches(paths: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> int:
    """Number of sequences whose path differs from the reference."""
    if len(paths) != len(reference):
        return max(len(paths), len(reference))
    return sum(list(a) != list(b) for a, b in zip(paths, reference, strict=True))


def kernel_costs() -> dict[str, Any]:
    """One-off kernel costs in two fresh processes: a cold numba cache, then a cache hit."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        for label in ("cold", "cached"):
            try:
                out[label] = run_python(KERNEL_CHILD, env={"NUMBA_CACHE_DIR": cache_dir})
            except RuntimeError as exc:
                out[label] = {"error": str(exc).splitlines()[-1]}
    return out


def equivalence_check(n_cases: int, seed: int = 0) -> dict[str, int]:
    """Decode ``n_cases`` random inputs with torchcrf and every backend; count differences.

    Finite scores must never make the compiled backend refuse an input (``compiled_refused``).
    """
    gen = torch.Generator().manual_seed(seed)
    counts = {"inputs": 0, "sequences": 0, "tie_inputs": 0, "compiled_refused": 0}
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
                try:
                    paths = decode(crf, em, mask, backend)
                except ValueError:
                    counts["compiled_refused"] += 1
                    continue
                counts[f"{backend}_mismatched_sequences"] += mismatches(paths, reference)
            counts["inputs"] += 1
            counts["sequences"] += batch
            counts["tie_inputs"] += ties
    return counts


def bench_shape(
    shape: tuple[int, int, int], device: str, threads: int | None, repeats: int, budget_s: float
) -> dict[str, Any]:
    """Time torchcrf, ``auto`` and the torch loop on one shape; check every timed call."""
    batch, seq_len, num_tags = shape
    gen = torch.Generator().manual_seed(batch * 1000 + seq_len)
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if device == "cuda" else None
    bad = {"auto": 0, "torchcrf": 0, "torch": 0}
    with torch_threads(threads) as used, torch.inference_mode():
        crf, em, mask = random_case(batch, seq_len, num_tags, gen, device=device)
        reference = crf.decode(em, mask)

        def run(name: str, fn: Any) -> Any:
            def check(paths: list[list[int]]) -> None:
                bad[name] += mismatches(paths, reference)

            return time_calls(fn, repeats, budget_s=budget_s, sync=sync, check=check)

        auto = run("auto", lambda: decode(crf, em, mask, "auto"))
        ref = run("torchcrf", lambda: crf.decode(em, mask))
        loop = run("torch", lambda: decode(crf, em, mask, "torch"))
    return {
        "shape": list(shape),
        "device": device,
        "threads": used,
        "auto": auto.as_dict(),
        "torchcrf": ref.as_dict(),
        "torch_loop": loop.as_dict(),
        "speedup": ref.median / auto.median,
        "torch_loop_speedup": ref.median / loop.median,
        "timed_calls": auto.n + ref.n + loop.n,
        "mismatches": bad["auto"] + bad["torchcrf"],
        "torch_loop_mismatches": bad["torch"],
    }


def _ms(timing: dict[str, Any]) -> str:
    return f"{timing['median'] * 1e3:.3g} ({timing['iqr'] * 1e3:.2g})"


def _costs(child: dict[str, Any]) -> str:
    if "first_call_s" not in child:
        return f"not measured ({child.get('error')})"
    return (
        f"import numba {child['import_numba_s']:.2f} s + first call {child['first_call_s']:.2f} s "
        f"(then {child['second_call_ms']:.2f} ms per call)"
    )


def summarize(
    cells: list[dict[str, Any]], check: dict[str, int], costs: dict[str, Any]
) -> list[dict[str, Any]]:
    """The headline rows: mismatches, speedups at the largest and the one-sentence batch, and
    the kernel's one-off costs."""
    total = sum(c["mismatches"] for c in cells) + check["auto_mismatched_sequences"]
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
                    f"torch loop speedup at {label} (a fresh process's small batches)",
                    round(c["torch_loop_speedup"], 2),
                    f">= {SINGLE_SPEEDUP_TARGET:g}x",
                    c["torch_loop_speedup"] >= SINGLE_SPEEDUP_TARGET,
                )
            )
    if costs:
        cold, cached = costs.get("cold", {}), costs.get("cached", {})
        imported = cold.get("numba_imported_by_crf_import")
        summary += [
            target("kernel: import numba (s, fresh process)", cold.get("import_numba_s")),
            target("kernel: first call, cold numba cache (s)", cold.get("first_call_s")),
            target("kernel: first call, numba cache hit (s)", cached.get("first_call_s")),
            target("numba imported by importing crf", imported, "False", imported is False),
        ]
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("crf", __doc__, threads=None)
    parser.add_argument("--random-inputs", type=int, default=None, help="equivalence inputs")
    parser.add_argument(
        "--no-kernel-costs",
        action="store_true",
        help="skip the fresh-process measurements of the kernel's one-off costs",
    )
    args = parse(parser, argv)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (5 if args.quick else 50)
    budget = 0.5 if args.quick else 3.0
    n_random = args.random_inputs or (100 if args.quick else 3000)
    default_threads = torch.get_num_threads()
    machine = machine_info()

    # One-off costs first, in fresh processes; then load the kernel here for the steady state.
    costs = {} if args.no_kernel_costs else kernel_costs()
    decode(*random_case(2, 3, 13, torch.Generator().manual_seed(0)), "compiled")

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
            _ms(c["auto"]),
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
            check["auto_mismatched_sequences"],
        ]
    )
    torch_loop_bad = sum(c["torch_loop_mismatches"] for c in cells)
    torch_loop_bad += check["torch_mismatched_sequences"]
    notes = [
        "Same transitions (torchcrf's parameters, uniform(-0.1, 0.1)), random N(0, 1) emissions, "
        "random prefix lengths (row 0 full); all under torch.inference_mode.",
        f"Median (IQR) of up to {repeats} timed calls after 3 warm-up calls; a cell stops after "
        f"{budget:g} s of timed calls (at least 5 calls).",
        f"Path mismatches against torchcrf: torch loop {torch_loop_bad}, compiled backend "
        f"{check['compiled_mismatched_sequences']} on the random inputs, which it refused "
        f"{check['compiled_refused']} times (finite scores: must be 0).",
    ]
    if costs:
        notes.append(
            "Kernel one-off costs (fresh processes, 64x48x13 float32, empty NUMBA_CACHE_DIR): "
            f"cold {_costs(costs.get('cold', {}))}; cache hit {_costs(costs.get('cached', {}))}."
        )
    if "cuda" not in devices:
        notes.append("No CUDA rows (no GPU here, or --devices cpu).")
    record = result(
        args,
        "CRF decoding: batched Viterbi vs torchcrf.CRF.decode",
        COLUMNS,
        rows,
        summary=summarize(cells, check, costs),
        notes=notes,
        machine=machine,
        cells=cells,
        equivalence=check,
        kernel_costs=costs,
        total_mismatches=sum(c["mismatches"] for c in cells) + check["auto_mismatched_sequences"],
        torch_loop_mismatches=torch_loop_bad,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
