"""Resource faults: a full disk and a read-only folder during training, export and registration.

Each test runs twice, once per way of making the fault:

- ``mount``: a real file system. A small tmpfs mounted over the output folder (``ENOSPC`` from
  the kernel, whichever library writes), and a read-only bind mount (``EROFS``; as root a
  ``chmod`` would not stop a write). Mounting needs root (or ``CAP_SYS_ADMIN``); the variant
  skips, naming why, where it is refused. The commands run in this process through typer's
  runner: the fault is the file system's, and a subprocess's import cost is saved.
- ``inject``: ``faultfs.c``, built here, preloaded (``LD_PRELOAD``) into the command, which then
  runs in a subprocess: the libc write and open family of every writer (Python, safetensors'
  Rust, torch's and onnx's C++, SQLite) fails under the folder with ``ENOSPC`` once the given
  bytes are written, or with ``EROFS``. It needs only a C compiler, so it runs without mount
  rights.

Each time the command fails with one clear line (``error: ...``, no traceback), the model folder
stays the old complete one, no temporary is left behind, and the registry (versions, aliases,
alias file) is as before.
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
from tests.integration.reliability import (
    CliProject,
    problems,
    registry_state,
    snapshot,
    toy_project,
)

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


FAULTFS = Path(__file__).with_name("faultfs.c")


@pytest.fixture(scope="session")
def faultfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``faultfs.c`` built as a shared library (skips only where no C compiler exists)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc, clang) to build tests/integration/faultfs.c")
    lib = tmp_path_factory.mktemp("faultfs") / "faultfs.so"
    cmd = [compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(FAULTFS), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stderr}"
    return lib


class Faults:
    """Full-disk and read-only faults made by mounting (``mount``) or by the preloaded shim
    (``inject``), and the command run so that the fault reaches it."""

    def __init__(self, how: str, shim: Path | None) -> None:
        self.how = how
        self.shim = shim
        self.env: dict[str, str] | None = None  # the shim's settings while a fault is on

    @contextmanager
    def full_disk(self, folder: Path, free_bytes: int) -> Iterator[None]:
        """``folder`` with ``free_bytes`` of room for new writes."""
        if self.how == "mount":
            with full_disk(folder, free_bytes):
                yield
        else:
            with self._injected(folder, "enospc", free_bytes):
                yield

    @contextmanager
    def read_only(self, folder: Path) -> Iterator[None]:
        """``folder`` read-only."""
        if self.how == "mount":
            with read_only(folder):
                yield
        else:
            with self._injected(folder, "erofs"):
                yield

    @contextmanager
    def _injected(self, folder: Path, mode: str, quota: int = 0) -> Iterator[None]:
        assert self.shim is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.env = {
            "LD_PRELOAD": str(self.shim),
            "FAULTFS_PREFIX": str(folder.resolve()),
            "FAULTFS_MODE": mode,
            "FAULTFS_QUOTA_BYTES": str(quota),
        }
        try:
            yield
        finally:
            self.env = None

    def cli(self, params: Params, *args: str) -> tuple[int, str]:
        """``complex-ner <args>``: exit code, stderr. With an injected fault on, in a subprocess
        that preloads the shim (only that process: pytest itself writes freely)."""
        if self.env is None:
            return cli(params, *args)
        done = CliProject(params.root, extra_env=self.env).run(
            *args, "--params", str(params.root / "params.yaml")
        )
        return done.returncode, done.stderr


@pytest.fixture(params=["mount", "inject"])
def faults(request: pytest.FixtureRequest) -> Faults:
    """Each way of making a fault in turn."""
    shim = request.getfixturevalue("faultfs") if request.param == "inject" else None
    return Faults(request.param, shim)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
) -> Params:
    """A tiny project with a trained, evaluated and registered model (its own MLflow store)."""
    root = tmp_path_factory.mktemp("faults")
    # Embeddings trained too: the optimizer state is then big enough (~8 MB) to fill a disk.
    toy_project(root, tiny_bert_dir, toy_corpus(24), {"threads": 1, "freeze_embeddings": False})
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


def assert_clear_error(code: int, stderr: str, reason: str, project: Params) -> None:
    """Exit 1 and a last ``error:`` line with the reason and the path it failed on."""
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines and reason in lines[-1] and str(project.root) in lines[-1], stderr


def hidden_leftovers(folder: Path) -> list[str]:
    """Temporaries of atomic writes still there (hidden names), besides the pending model."""
    return [
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if p.name != FILLER
        and not p.name.startswith(".model.pending")
        and not any(part.startswith(".model.pending") for part in p.relative_to(folder).parts)
    ]


# The best model of epoch 1 (~4.8 MB: encoder weights, tokenizer) fits in both; then the
# checkpoint's weights (safetensors, ~4.1 MB) do not fit in 6 MiB, and in 12 MiB its optimizer
# state (torch.save, ~8.2 MB) fills the disk mid-file.
@pytest.mark.parametrize("room", [6 << 20, 12 << 20], ids=["weights", "optimizer"])
def test_full_disk_during_training_keeps_the_old_model(
    project: Params, faults: Faults, room: int
) -> None:
    out = run_dir(project, "es", "bert_crf")
    registry = registry_state(project)
    before = snapshot(out)
    run_id = stages.recorded_run_id(project, "es", "bert_crf")
    with faults.full_disk(out, room):
        code, stderr = faults.cli(project, "train", "--lang", "es")
        assert_clear_error(code, stderr, "No space left on device", project)
        assert {p: d for p, d in snapshot(out).items() if p.startswith("model/")} == {
            p: d for p, d in before.items() if p.startswith("model/")
        }
        assert not problems(out) and not hidden_leftovers(out)
        # The old model still names its run: it can be evaluated and registered.
        assert stages.recorded_run_id(project, "es", "bert_crf") == run_id
    assert registry_state(project) == registry


def test_read_only_output_during_training_keeps_the_old_model(
    project: Params, faults: Faults
) -> None:
    out = run_dir(project, "es", "bert_crf")
    registry = registry_state(project)
    before = snapshot(out)
    with faults.read_only(out):
        code, stderr = faults.cli(project, "train", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system", project)
    assert snapshot(out) == before
    assert registry_state(project) == registry


def test_full_disk_during_export_keeps_the_old_export(project: Params, faults: Faults) -> None:
    folder = best_model_dir(project, "es", "bert_crf")
    before = snapshot(folder)
    # The copy it exports in is hard links; the new model.onnx (~4 MB) does not fit.
    with faults.full_disk(folder.parent, 1 << 20):
        code, stderr = faults.cli(project, "export", "--model", str(folder))
        assert_clear_error(code, stderr, "No space left on device", project)
        assert snapshot(folder) == before
        assert not hidden_leftovers(folder.parent)
    with faults.read_only(folder.parent):
        code, stderr = faults.cli(project, "export", "--model", str(folder))
        assert_clear_error(code, stderr, "Read-only file system", project)
    assert snapshot(folder) == before


def test_read_only_or_full_output_during_registration_leaves_the_registry(
    project: Params, faults: Faults
) -> None:
    reports = project.path(project.register.output).parent
    registry = registry_state(project)
    assert registry["versions"] and registry["file"] == registry["aliases"]
    with faults.read_only(reports):
        code, stderr = faults.cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system", project)
    assert registry_state(project) == registry
    with faults.full_disk(reports, 0):
        code, stderr = faults.cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "No space left on device", project)
    assert registry_state(project) == registry
    # The registry's own folder (the SQLite store, the alias file, the lock) read-only.
    with faults.read_only(project.root / "mlruns"):
        code, stderr = faults.cli(project, "register", "--lang", "es")
        assert_clear_error(code, stderr, "Read-only file system", project)
    assert registry_state(project) == registry
    code, stderr = faults.cli(project, "register", "--lang", "es")  # and it works again
    assert code == 0, stderr
    assert len(registry_state(project)["versions"]) == len(registry["versions"]) + 1
