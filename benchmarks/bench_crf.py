"""Batched Viterbi (``complex_ner.domain.models.crf.viterbi_decode``) against ``torchcrf.CRF.decode``.

Both decode the same random emissions with the same (torchcrf) transition scores and no BIO
constraint masks, so the best paths must be identical; every timed call is checked against the
reference path and the mismatches are counted (must be 0). A separate check decodes thousands
of random inputs of varied shapes, masks, score scales and exact ties.

Timing: median of up to 50 calls after warm-up (``time.perf_counter``), with one torch thread and
with torch's default thread count; the calls run under ``torch.inference_mode`` as in
``Tagger.predict_ids``. "ours" is the product's ``viterbi_decode`` in a process whose compiled
(numba) kernel is already loaded, so on CPU it takes the compiled path at every batch size
(the "ours path" column says which path it took). "torch-only path" times the product's
fallback, ``crf._viterbi_torch`` (the per-word loop of torch operations that CUDA tensors and
hosts without numba use, and that a fresh process uses for batches below
``crf._LOAD_MIN_BATCH`` until the kernel is loaded).

The kernel's one-off costs are measured apart from the steady state, in fresh child processes
with an empty ``NUMBA_CACHE_DIR``: importing numba, the first call with a cold cache (type
inference + LLVM compilation + writing the cache), then the first call of a second process
that finds the cache (loading the machine code).

    .venv/bin/python benchmarks/bench_crf.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_all import (  # noqa: E402
    ROOT,
    base_parser,
    bench_devices,
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
    "ours path",
    "torch-only path ms",
    "torch-only speedup",
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
    """The product's decoder (compiled kernel on CPU once loaded, torch loop otherwise)."""
    from complex_ner.domain.models.crf import viterbi_decode

    return viterbi_decode(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )


@torch_no_grad_lazy
def torch_only(crf: Any, emissions: Any, mask: Any) -> list[list[int]]:
    """The product's torch-loop path alone (validation included), as CUDA tensors get it."""
    from complex_ner.domain.models import crf as crf_module

    mask = crf_module.as_bool_mask(mask, emissions.shape[:2])
    return crf_module._viterbi_torch(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )


def ours_path(batch: int, device: str) -> str:
    """Which implementation ``viterbi_decode`` takes for this batch on this device, now."""
    from complex_ner.domain.models import crf as crf_module

    if device != "cpu" or not crf_module._use_compiled(batch) or crf_module._kernel() is None:
        return "torch"
    return "compiled"


def load_kernel() -> None:
    """Load (compile or read from numba's cache) the kernel, as a first bulk decode would."""
    import torch
    from torchcrf import CRF

    from complex_ner.domain.models import crf as crf_module

    crf = CRF(13, batch_first=True)
    emissions = torch.randn(2, 3, 13)
    mask = torch.ones(2, 3, dtype=torch.bool)
    args = (crf.start_transitions, crf.transitions, crf.end_transitions)
    for dtype in (torch.float32, torch.float64):
        crf_module._viterbi_compiled(emissions.to(dtype), mask, *args)


COMPILE_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from complex_ner.domain.models import crf
t1 = time.perf_counter()
numba_at_import = "numba" in sys.modules
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
emissions = torch.randn(64, 48, 13, generator=gen)
mask = torch.ones(64, 48, dtype=torch.bool)
params = [torch.randn(*s, generator=gen) for s in ((13,), (13, 13), (13,))]
t2 = time.perf_counter()
kernel = crf._kernel()
t3 = time.perf_counter()
first = crf._viterbi_compiled(emissions, mask, *params)
t4 = time.perf_counter()
second = crf._viterbi_compiled(emissions, mask, *params)
t5 = time.perf_counter()
print(json.dumps({
    "import_crf_s": t1 - t0,
    "numba_imported_by_crf_import": numba_at_import,
    "import_numba_s": t3 - t2,
    "first_call_s": t4 - t3,
    "second_call_ms": (t5 - t4) * 1e3,
    "compiled": kernel is not None and first is not None and first == second,
}))
"""


def compile_times() -> dict[str, Any]:
    """One-off kernel costs in fresh processes: cold numba cache, then a cache hit.

    Both children share an empty temporary ``NUMBA_CACHE_DIR`` (which numba prefers to the cache
    next to ``crf.py``), so the first one compiles and the second one loads the cached code.
    """
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        env = {
            **os.environ,
            "NUMBA_CACHE_DIR": cache_dir,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
            ),
        }
        for label in ("cold", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", COMPILE_CHILD],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=600,
            )
            if proc.returncode != 0:
                out[label] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def mismatches(paths: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> int:
    """Number of sequences whose path differs from the reference."""
    if len(paths) != len(reference):
        return max(len(paths), len(reference))
    return sum(list(a) != list(b) for a, b in zip(paths, reference, strict=True))


def equivalence_check(n_cases: int, seed: int = 0) -> dict[str, int]:
    """Decode ``n_cases`` random inputs with torchcrf, ours and the torch-only path."""
    import torch

    from complex_ner.domain.models import crf as crf_module

    gen = torch.Generator().manual_seed(seed)
    counts = {
        "inputs": 0,
        "sequences": 0,
        "mismatched_sequences": 0,
        "torch_only_mismatched_sequences": 0,
        "compiled_fallbacks": 0,
        "tie_inputs": 0,
    }
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
            counts["mismatched_sequences"] += mismatches(ours(crf, em, mask), reference)
            counts["torch_only_mismatched_sequences"] += mismatches(
                torch_only(crf, em, mask), reference
            )
            # ours must really have been the kernel: finite scores never fall back.
            compiled = crf_module._viterbi_compiled(
                em, mask, crf.start_transitions, crf.transitions, crf.end_transitions
            )
            counts["compiled_fallbacks"] += compiled is None
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
    bad = {"ours": 0, "torchcrf": 0, "torch_only": 0}
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
        t_torch, _ = time_calls(
            lambda: torch_only(crf, em, mask),
            repeats=repeats,
            budget_s=budget_s,
            sync=sync,
            check=checker("torch_only"),
        )
    return {
        "shape": list(shape),
        "device": device,
        "threads": used,
        "ours_path": ours_path(batch, device),
        "ours_ms": t_ours * 1e3,
        "torchcrf_ms": t_ref * 1e3,
        "speedup": t_ref / t_ours,
        "torch_only_ms": t_torch * 1e3,
        "torch_only_speedup": t_ref / t_torch,
        "timed_calls": n_ours + n_ref,
        "mismatches": bad["ours"] + bad["torchcrf"],
        "torch_only_mismatches": bad["torch_only"],
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

    # One-off costs first, in fresh processes, then the steady state in this one.
    compile_cost = compile_times()
    load_kernel()

    devices = bench_devices(args.devices)
    settings: list[tuple[str, int | None]] = []
    if "cpu" in devices:
        settings.append(("cpu", 1))
        if default_threads != 1:
            settings.append(("cpu", default_threads))
    if "cuda" in devices:
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
            c["ours_path"],
            c["torch_only_ms"],
            c["torch_only_speedup"],
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
            "compiled",
            None,
            None,
            None,
            check["mismatched_sequences"],
        ]
    )
    total_mismatches = sum(c["mismatches"] for c in cells) + check["mismatched_sequences"]
    torch_only_bad = sum(c["torch_only_mismatches"] for c in cells)
    torch_only_bad += check["torch_only_mismatched_sequences"]

    def cell(shape: tuple[int, int, int], threads: int) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in cells
                if tuple(c["shape"]) == shape and c["device"] == "cpu" and c["threads"] == threads
            ),
            None,
        )

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
            summary.append(
                target(
                    f"torch-only path speedup at {label}, {thr} thread(s) (a fresh process's "
                    f"batches below {_load_min_batch()} before the kernel is loaded)",
                    round(one["torch_only_speedup"], 2),
                    ">= 1x (no slower)",
                    one["torch_only_speedup"] >= 1,
                )
            )
    cold, cached = compile_cost.get("cold", {}), compile_cost.get("cached", {})
    summary += [
        target("kernel: import numba (s, fresh process)", cold.get("import_numba_s"), "—", None),
        target(
            "kernel: first call, cold numba cache (s, compile + write cache)",
            cold.get("first_call_s"),
            "—",
            None,
        ),
        target(
            "kernel: first call, numba cache hit (s, second fresh process)",
            cached.get("first_call_s"),
            "—",
            None,
        ),
        target(
            "numba imported by `import complex_ner.domain.models.crf`",
            cold.get("numba_imported_by_crf_import"),
            "False",
            cold.get("numba_imported_by_crf_import") is False,
        ),
    ]
    notes = [
        "Same transitions (torchcrf's parameters, uniform(-0.1, 0.1)), random N(0, 1) emissions, "
        "random prefix lengths (row 0 full); all run under torch.inference_mode.",
        f"Median of up to {repeats} timed calls after 3 warm-up calls; a cell stops after "
        f"{budget:g} s of timed calls (at least 5 calls).",
        "ours = viterbi_decode with the numba kernel already loaded (steady state of a "
        "long-running process); torch-only path = crf._viterbi_torch, the fallback (CUDA, "
        f"no numba, and a fresh process's batches below {_load_min_batch()} until a larger one "
        f"loads the kernel); its path mismatches vs torchcrf: {torch_only_bad}.",
        "Kernel one-off costs (fresh processes, 64x48x13 float32, empty NUMBA_CACHE_DIR): "
        f"cold {_costs(cold)}; cache hit {_costs(cached)}.",
        f"Random inputs: the compiled kernel fell back to torch on "
        f"{check['compiled_fallbacks']} of {check['inputs']} (finite scores: must be 0).",
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
        compile_times=compile_cost,
        total_mismatches=total_mismatches,
        torch_only_mismatches=torch_only_bad,
        # The former "sketch" (list backtrack, no mask blend) is now the torch-only path.
        sketch_mismatches=torch_only_bad,
    )
    return emit(result, args.json)


def _load_min_batch() -> int:
    from complex_ner.domain.models import crf as crf_module

    return crf_module._LOAD_MIN_BATCH


def _costs(child: dict[str, Any]) -> str:
    if "first_call_s" not in child:
        return f"not measured ({child.get('error')})"
    return (
        f"import numba {child['import_numba_s']:.2f} s + first call {child['first_call_s']:.2f} s "
        f"(then {child['second_call_ms']:.2f} ms per call)"
    )


if __name__ == "__main__":
    main()
