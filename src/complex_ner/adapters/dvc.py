"""Record what a Prefect run produced in DVC, so ``dvc status`` agrees with the files.

The Prefect pipeline calls the same functions the DVC stages call; afterwards ``dvc commit``
hashes the stages' outputs into dvc.lock and ``dvc push`` sends them to the default remote.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def commit_outputs(root: Path, push: bool = True) -> str:
    """``dvc commit --force`` (and ``dvc push``) in ``root``; a no-op outside a DVC project.

    Raises:
        RuntimeError: a DVC command failed (its output is in the message).
    """
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return "not a DVC project: nothing versioned"
    dvc = shutil.which("dvc")
    if dvc is None:
        raise RuntimeError("dvc is not on PATH")
    steps = [[dvc, "commit", "--force", "--quiet"]]
    if push:
        steps.append([dvc, "push", "--quiet"])
    for cmd in steps:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed:\n{done.stdout}{done.stderr}")
    return "dvc.lock updated" + (" and pushed" if push else "")
