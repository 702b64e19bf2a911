"""Atomic file and folder writes, hashing and headless plotting: nothing is left half-written.

Every output goes to a temporary sibling first and is renamed into place only when complete, so
an interrupted run leaves the previous file (or nothing), never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# The process's umask, read once at import (reading it means setting it): the temporaries of
# mkstemp/mkdtemp are private (0600/0700), the outputs they become get the usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path):  # a failed write names the file it was for
            yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``out_dir``; removed if the block fails.

    Beside (not in /tmp) so the final rename stays on one file system and is atomic.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    staging.chmod(0o777 & ~_UMASK)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# How the native writers report a failed write: safetensors' Rust ("I/O error: No space left on
# device (os error 28)"), torch.save's C++ ("PytorchStreamWriter failed writing file ...: file
# write failed"). Python's own writers raise OSError.
_IO_FAILURE = re.compile(
    r"os error \d+|file write failed|No space left|Read-only file system|Permission denied|"
    r"Disk quota exceeded|File too large"
)


@contextmanager
def writing(target: str | Path) -> Iterator[None]:
    """Turn a native writer's failed write inside the block into an ``OSError`` naming
    ``target`` (and name it in an ``OSError`` that names no file), so that a full disk or a
    read-only folder is a clear error like any other."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        # A write to an open file (onnx.save's) names none: "[Errno 28] No space left on device".
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    except Exception as exc:
        if not _IO_FAILURE.search(str(exc)):
            raise
        raise OSError(f"{target}: could not be written ({exc})") from exc


class _KeptErrors:
    """An unbuffered binary file that writes all it is given or raises, and remembers its first
    error (the writer may swallow it)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        try:
            while view:  # a short write: the kernel wrote what fitted
                view = view[self._fh.write(view) :]
        except OSError as exc:
            self.error = self.error or exc
            raise
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


@contextmanager
def native_output(path: Path) -> Iterator[Any]:
    """``path`` opened for a native writer that swallows the file's errors: torch.save's zip
    writer reports a disk that fills mid-file as "unexpected pos N vs M", the kernel's short
    write lost. The file's own error is raised instead, naming ``path``."""
    with open(path, "wb", buffering=0) as fh:  # unbuffered: no write left for close to fail
        kept = _KeptErrors(fh)
        try:
            yield kept
        except Exception as exc:
            if kept.error is None:
                raise
            raise OSError(kept.error.errno, kept.error.strerror, str(path)) from exc


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Indented UTF-8 JSON (for files inside a staging folder; elsewhere use atomic_write_text)."""
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def link_or_copy(source: str, target: str) -> None:
    """Hard-link ``source`` to ``target`` (for files that are replaced whole, never edited in
    place), or copy it where the file system has no hard links; ``shutil.copytree``'s
    ``copy_function``."""
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links, or another device
        shutil.copy2(source, target)


def replace_dir(tmp: Path, folder: Path) -> None:
    """Swap a finished temporary folder in place of ``folder``; it is never left half-written.

    rename(2) cannot replace a non-empty folder, so the old one is first renamed aside (under a
    unique name, so concurrent writers do not collide), put back if the swap fails, and removed
    last.

    Raises:
        NotADirectoryError: ``folder`` exists and is not a folder.
    """
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(folder: Path) -> bool:
    """Put back the folder :func:`replace_dir` had renamed aside when a kill came between its
    two renames (``folder`` gone, one ``.<name>.old-*`` beside it); True if it did.

    Only for folders one process writes (a run's checkpoint): with concurrent writers the
    aside copy may be another writer's.
    """
    if folder.exists():
        return False
    aside = sorted(folder.parent.glob(f".{folder.name}.old-*"))
    if len(aside) != 1 or not aside[0].is_dir():
        return False
    os.replace(aside[0], folder)
    return True


def discard_dir(folder: Path) -> None:
    """Remove ``folder`` with what killed writes of it left beside it (``.<name>.old-*`` and
    ``.<name>.*.tmp``), so that :func:`recover_dir` never brings back an older run's copy.

    Only for folders one process writes (a run's checkpoint).
    """
    shutil.rmtree(folder, ignore_errors=True)
    for pattern in (f".{folder.name}.old-*", f".{folder.name}.*.tmp"):
        for stale in folder.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend (imported only when a plot is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically, then free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 (LF line ends) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
