"""Resource faults: a full disk and a read-only folder during training, export and registration.

The disk is a real one: a small tmpfs mounted over the output folder (``ENOSPC`` from the
kernel, whichever library writes), and a read-only bind mount (``EROFS``; as root a ``chmod``
would not stop a write). Mounting needs root, which this project's machines and CI have; the
tests skip, naming why, where it is refused. Each time the command fails with one clear line
(``error: ...``, no traceback), the model folder stays the old complete one, no temporary is
left behind, and the registry (versions, aliases, alias file) is as before.

The commands run in this process through typer's runner: the fault is the file system's, not
the process's, and the import cost of a subprocess per case is saved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complex_ner.app import stages
from complex_ner.cli import app
from complex_ner.core.config import Params, load_params
from complex_ner.core.paths import best_model_dir, run_dir
from complex_ner.domain.data import Sentence
from tests.integration.reliability import problems, registry_state, snapshot, toy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)}: {done.stderr.strip()} (needs root)")


FILLER = ".fill"


@contextmanager
def full_disk(folder: Path, free_bytes: int) -> Iterator[Path]:
    """``folder`` on a tmpfs holding its current files and ``free_bytes`` of room (a hidden
    filler file takes the rest)."""
    saved = folder.with_name(folder.name + "-saved")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(folder, saved)
    folder.mkdir()
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    _mount("-t", "tmpfs", "-o", f"size={used + free_bytes + (4 << 20)}", "tmpfs", str(folder))
    try:
        shutil.copytree(saved, folder, dirs_exist_ok=True)
        filler = folder / FILLER
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - free_bytes))
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
        folder.rmdir()
        shutil.move(saved, folder)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only over itself."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(folder), str(folder))
    try:
        _mount("-o", "remount,bind,ro", str(folder))
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
) -> Params:
    """A tiny project with a trained, evaluated and registered model (its own MLflow store)."""
    root = tmp_path_factory.mktemp("faults")
    toy_project(root, tiny_bert_dir, toy_corpus(24), {"threads": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        params = load_params(root / "params.yaml")
        stages.train(params, "es", "bert_crf", log=None)
        stages.evaluate(params, "es", "bert_crf")
        stages.register(params, ["es"])
    return params


def cli(params: Params, *args: str) -> tuple[int, str]:
    """``complex-ner <args> --params <project>`` in this process: exit code, stderr."""
    result = CliRunner().invoke(app, [*args, "--params", str(params.root / "params.yaml")])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # what a user would see as a traceback
    return result.exit_code, result.stderr


def assert_clear_error(code: int, stderr: str, reason: str) -> None:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines and reason in lines[-1], stderr


def hidden_leftovers(folder: Path) -> list[str]:
    """Temporaries of atomic writes still there (hidden names), besides the pending model."""
    return [
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if p.name != FILLER
        and not p.name.startswith(".model.pending")
        and not any(part.startswith(".model.pending") for part in p.relative_to(folder).parts)
    ]


def test_full_disk_during_training_keeps_the_old_model(project: Params) -> None:
    out = run_dir(project, "es", "bert_crf")
    registry = registry_state(project)
    before = snapshot(out)
    # Room for the best model of epoch 1 (~4.6 MB) but not for its checkpoint (~13 MB).
    with full_disk(out, 6 << 20):
        code, stderr = cli(project, "train", "--lang", "es")
        assert_clear_error(code, stderr, "No space left on device")
        assert {p: d for p, d in snapshot(out).items() if p.startswith("model/")} == {
            p: d for p, d in before.items() if p.startswith("model/")
        }
        assert not problems(out) and not hidden_leftovers(out)
    assert registry_state(project) == registry


def test_read_only_output_during_training_keeps_the_old_model(project: Params) -> None:
    out = run_dir(project, "es", "bert_crf")
    registry = registry_state(project)
    before = snapshot(out)
    with read_only(out):
        code, stderr = cli(project, "train", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system")
    assert snapshot(out) == before
    assert registry_state(project) == registry


def test_full_disk_during_export_keeps_the_old_export(project: Params) -> None:
    folder = best_model_dir(project, "es", "bert_crf")
    before = snapshot(folder)
    # The copy it exports in is hard links; the new model.onnx (~4 MB) does not fit.
    with full_disk(folder.parent, 1 << 20):
        code, stderr = cli(project, "export", "--model", str(folder))
        assert_clear_error(code, stderr, "No space left on device")
        assert snapshot(folder) == before
        assert not hidden_leftovers(folder.parent)
    with read_only(folder.parent):
        code, stderr = cli(project, "export", "--model", str(folder))
        assert_clear_error(code, stderr, "Read-only file system")
    assert snapshot(folder) == before


def test_read_only_or_full_output_during_registration_leaves_the_registry(
    project: Params,
) -> None:
    reports = project.path(project.register.output).parent
    registry = registry_state(project)
    assert registry["versions"] and registry["file"] == registry["aliases"]
    with read_only(reports):
        code, stderr = cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system")
    assert registry_state(project) == registry
    with full_disk(reports, 0):
        code, stderr = cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "No space left on device")
    assert registry_state(project) == registry
    # The registry's own folder (the SQLite store, the alias file, the lock) read-only.
    with read_only(project.root / "mlruns"):
        code, stderr = cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system")
    assert registry_state(project) == registry
    code, stderr = cli(project, "register", "--lang", "es")  # and it works again
    assert code == 0, stderr
    assert len(registry_state(project)["versions"]) == len(registry["versions"]) + 1
