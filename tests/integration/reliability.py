"""Helpers of the reliability tests: a tiny project driven through the real ``complex-ner``
command, faults injected into it (``faultrun.py``), and checks that no output is half-written
and that the registry is consistent. Fixtures are in ``conftest.py``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from complex_ner.app import stages
from complex_ner.core.config import Params, load_params
from complex_ner.core.paths import CHAMPION, EXPORT_FILE, ONNX_FILE, TAGGER_FILE, best_model_dir
from complex_ner.domain.data import Sentence, read_conll, write_conll

FAULTRUN = Path(__file__).with_name("faultrun.py")
KILLED = -signal.SIGKILL
#: Folders of the project that are not pipeline outputs (the MLflow store is checked apart).
NOT_OUTPUTS = ("source", "mlruns", "params.yaml")


@dataclass
class CliProject:
    """A tiny project folder and the ``complex-ner`` command run in it (in a subprocess)."""

    root: Path
    #: Set for every command (e.g. ``MLFLOW_TRACKING_URI`` of a store shared by projects).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> Params:
        return load_params(self.root / "params.yaml")

    def env(self, fault: Mapping[str, str | int] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
        # The project's own store, never one a test process exported.
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "COMPLEX_NER_PARENT_RUN_ID"):
            env.pop(key, None)
        env.update(self.extra_env)
        env.update({f"FAULT_{k.upper()}": str(v) for k, v in (fault or {}).items()})
        return env

    def command(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, str(FAULTRUN), *args]

    def run(
        self, *args: str, fault: Mapping[str, str | int] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``complex-ner <args>`` (with a fault); the completed process."""
        return subprocess.run(
            self.command(args),
            cwd=self.root,
            env=self.env(fault),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 600) -> str:
        """Run ``complex-ner <args>`` without a fault; it must succeed; its stdout."""
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"complex-ner {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def killed(self, *args: str, mode: str, match: str, at: int) -> None:
        """Run ``complex-ner <args>`` until the fault point kills it (it must be reached)."""
        done = self.run(*args, fault={"mode": mode, "match": match, "at": at})
        assert done.returncode == KILLED, (
            f"{mode} #{at} matching {match!r} was not reached "
            f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )

    def count_points(self, *args: str, match: str) -> dict[str, int]:
        """Run ``complex-ner <args>`` cleanly; its matching renames and writes."""
        counts = self.root.parent / f"counts-{time.monotonic_ns()}.json"
        done = self.run(*args, fault={"match": match, "count_file": str(counts)})
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return json.loads(counts.read_text(encoding="utf-8"))

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``complex-ner <args>`` in the background (output to files beside the root)."""
        log = self.root.parent / f"{args[0]}-{time.monotonic_ns()}.log"
        handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            self.command(args),
            cwd=self.root,
            env=self.env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        handle.close()  # the child has its own descriptor
        proc.log_path = log  # type: ignore[attr-defined]
        return proc


def toy_project(
    root: Path,
    encoder: Path,
    data: Sequence[Any],
    train: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """A project folder whose processed splits are ``data`` (val: its first 8 sentences,
    heldout: the next 8) and whose params train ``encoder`` on the CPU; its params file.

    Args:
        train: Changes of the ``train`` section (2 epochs, constant rates that learn the toy
            corpus by default).
        sections: More params sections.
    """
    processed = root / "data" / "processed" / "es"
    write_conll(processed / "train.conll", data)
    write_conll(processed / "val.conll", data[:8])
    write_conll(processed / "heldout.conll", data[8:16])
    config = {
        "data": {"languages": ["es"]},
        "model": {"encoder": str(encoder), "dropout": 0.0},
        "train": {
            "languages": ["es"],
            "epochs": 2,
            "batch_size": 8,
            "lr_encoder": 3e-3,
            "lr_min": 1e-4,
            "lr_head": 3e-2,
            "device": "cpu",
            "max_train_sentences": 0,
            **(train or {}),
        },
        **sections,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


#: Per-epoch metrics that measure time, not the model: they differ between any two runs.
TIMINGS = ("epoch_seconds", "eval_seconds", "tokens_per_second")


def add_source_sentence(project: CliProject) -> None:
    """Change the source data, so that a stage's new output differs from its old one."""
    path = project.root / "source" / "es" / "train.conll"
    sentences = read_conll(path)
    write_conll(path, [*sentences, Sentence("extra", ("hola", "lima"), ("O", "B-LOC"))])


# ------------------------------------------------------------------------------ outputs


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every visible output file (relative path -> digest); hidden names (the
    temporaries of atomic writes) and :data:`NOT_OUTPUTS` left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_OUTPUTS or any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def problems(root: Path) -> list[str]:
    """Visible outputs that are not complete: unreadable JSON, CoNLL or PNG, empty files, a
    model folder without its ONNX export. Empty: nothing half-written is visible."""
    found = []
    for rel in snapshot(root):
        path = root / rel
        try:
            if path.stat().st_size == 0:
                found.append(f"{rel}: empty")
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".conll":
                if not read_conll(path, labeled=False):
                    found.append(f"{rel}: no sentence")
            elif path.suffix == ".png" and not path.read_bytes().endswith(b"IEND\xaeB`\x82"):
                found.append(f"{rel}: truncated PNG")
        except Exception as exc:  # any failure to read is the finding
            found.append(f"{rel}: {type(exc).__name__}: {exc}")
    for tagger_json in root.rglob(TAGGER_FILE):
        folder = tagger_json.parent
        rel = folder.relative_to(root)
        if any(p.startswith(".") for p in rel.parts) or rel.parts[0] in NOT_OUTPUTS:
            continue
        for name in (EXPORT_FILE, ONNX_FILE, "head.safetensors", "encoder", "tokenizer"):
            if not (folder / name).exists():
                found.append(f"{rel}: model folder without {name}")
    return found


def assert_old_or_new(
    before: Mapping[str, str], killed: Mapping[str, str], after: Mapping[str, str]
) -> None:
    """Every output visible after the kill is the old file or the one the rerun wrote."""
    wrong = [
        path for path, digest in killed.items() if digest not in (before.get(path), after.get(path))
    ]
    assert not wrong, f"neither the old nor the new output after the kill: {wrong}"


# ------------------------------------------------------------------------------ registry


def registry_state(params: Params, lang: str = "es") -> dict[str, Any]:
    """Versions (with tags), MLflow aliases and the alias file of one registered model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from complex_ner.adapters import registry, tracking
    from complex_ner.core.paths import registered_name

    tracking.setup(params)
    client = mlflow.MlflowClient()
    name = registered_name(lang)
    try:
        aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
        versions = {
            str(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{name}'")
        }
    except MlflowException:
        aliases, versions = {}, {}
    path = registry.alias_file(params)
    index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entries = index.get("models", {}).get(name, {})
    return {
        "versions": versions,
        "aliases": aliases,
        "file": {alias: e["version"] for alias, e in entries.items()},
    }


#: What every registered version carries (app/stages.py register_best).
VERSION_TAGS = ("heldout_macro_f1", "heldout_data_hash", "arch", "lang", "data_version")


def registry_problems(state: Mapping[str, Any]) -> list[str]:
    """Inconsistencies: an untagged version, an alias file entry MLflow does not agree with,
    versions but no champion."""
    found = []
    for version, tags in state["versions"].items():
        missing = [t for t in VERSION_TAGS if t not in tags]
        if missing:
            found.append(f"version {version} lacks tags {missing}")
    for alias, version in state["file"].items():
        if state["aliases"].get(alias) != version:
            found.append(
                f"alias file: {alias} -> v{version}, MLflow: {state['aliases'].get(alias)}"
            )
    if state["versions"] and "champion" not in state["aliases"]:
        found.append("versions but no champion")
    return found


# ------------------------------------------------------------------------------ races


@dataclass
class Race:
    """The two projects, their shared store, and the runs' heldout scores."""

    good: CliProject
    bad: CliProject
    store: str

    def heldout(self, sentences: list[Sentence]) -> None:
        """Give both projects the same new heldout split."""
        for project in (self.good, self.bad):
            write_conll(project.root / "data" / "processed" / "es" / "heldout.conll", sentences)

    def scores(self) -> dict[str, float]:
        """Both saved models' macro-F1 on the current heldout split."""
        return {
            name: stages.heldout_f1(
                project.params, "es", str(best_model_dir(project.params, "es", "bert_crf"))
            )
            for name, project in (("good", self.good), ("bad", self.bad))
        }

    def round(self) -> dict[str, object]:
        """Both registrations at once; the registry state after them."""
        procs = [p.start("register", "--lang", "es") for p in (self.good, self.bad)]
        codes = [proc.wait(timeout=600) for proc in procs]
        assert codes == [0, 0], [proc.log_path.read_text() for proc in procs]
        return registry_state(self.good.params)


def champion_run(race: Race, state: dict) -> str:
    """Which project's model the champion is."""
    import mlflow

    version = mlflow.MlflowClient().get_model_version("complex-ner-es", state["aliases"][CHAMPION])
    runs = {
        stages.recorded_run_id(p.params, "es", "bert_crf"): name
        for name, p in (("good", race.good), ("bad", race.bad))
    }
    return runs[version.run_id]
