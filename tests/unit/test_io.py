"""Atomic writes (core/io.py): what a crash or a full disk leaves, and the permissions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from complex_ner.core.io import (
    atomic_write_text,
    discard_dir,
    native_output,
    recover_dir,
    replace_dir,
    staging_dir,
    writing,
)
from complex_ner.engines.trainer import EpochRecords, TrainStart


def test_outputs_get_the_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.json", "{}")
        with staging_dir(tmp_path / "folder") as staging:
            replace_dir(staging, tmp_path / "folder")
    finally:
        os.umask(before)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_a_folder_renamed_aside_by_a_killed_swap_is_put_back(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    aside = tmp_path / ".checkpoint.old-1234abcd"
    aside.mkdir()
    (aside / "state.json").write_text("{}")
    # Killed between replace_dir's two renames: the folder is gone, the old one aside.
    assert recover_dir(folder)
    assert (folder / "state.json").read_text() == "{}" and not aside.exists()
    assert not recover_dir(folder)  # present: nothing to do
    # A fresh run discards it with a killed run's leftovers: none can come back later.
    (tmp_path / ".checkpoint.old-5678abcd").mkdir()
    (tmp_path / ".checkpoint.x1y2.tmp").mkdir()
    discard_dir(folder)
    assert list(tmp_path.iterdir()) == [] and not recover_dir(folder)


def test_a_native_writers_failed_write_becomes_an_oserror_naming_the_folder(
    tmp_path: Path,
) -> None:
    failed = "PytorchStreamWriter failed writing file data/0: file write failed"
    with (
        pytest.raises(OSError, match=r"model: could not be written .*file write failed"),
        writing(tmp_path / "model"),
    ):
        raise RuntimeError(failed)
    with pytest.raises(ValueError, match="unrelated"), writing(tmp_path / "model"):
        raise ValueError("unrelated")
    with pytest.raises(OSError, match="No space left") as caught, writing(tmp_path / "model"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write names no file
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "model")


def test_torch_save_on_a_full_disk_raises_the_files_oserror(tmp_path: Path) -> None:
    # torch.save's zip writer swallows its file's error when the disk fills mid-file ("unexpected
    # pos N vs M": test_resource_faults.py) and passes on an unnamed one when the first write
    # fails, as on /dev/full (every write ENOSPC): either way the error names the file.
    state = {"exp_avg": torch.arange(4096.0)}
    with pytest.raises(OSError) as caught, native_output(Path("/dev/full")) as fh:
        torch.save(state, fh)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "/dev/full"
    with native_output(tmp_path / "optimizer.pt") as fh:  # and a save that fits is whole
        torch.save(state, fh)
    assert torch.equal(torch.load(tmp_path / "optimizer.pt")["exp_avg"], state["exp_avg"])


def test_a_resumed_run_logs_the_restored_epochs_first() -> None:
    logged: list[dict] = []
    records = EpochRecords(logged.append)
    history = ({"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0})
    records.on_train_start(TrainStart(epochs=3, steps_per_epoch=4, start_epoch=2, history=history))
    records.on_epoch_end({"epoch": 3, "loss": 0.5})
    assert [r["epoch"] for r in logged] == [1, 2, 3]
