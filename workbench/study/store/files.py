"""Files of a results folder: where a folder a user names is, its lock, and atomic writes.

Every write replaces a whole file atomically (a temp file in the same folder, flushed and fsynced, then
``os.replace`` and an fsync of the folder), so a reader opening it at any moment sees the old file or the new
one, never a part.  Every read-merge-write of a folder's files holds :func:`results_lock`, an exclusive
``fcntl.flock`` on ``<folder>/.workbench.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pandas as pd

from workbench import paths

log = logging.getLogger(__name__)

LOCK_NAME = ".workbench.lock"


def resolve_user_path(path: str | os.PathLike) -> Path:
    """Absolute path for a results folder or dataset a user named.

    A relative path is taken relative to the current directory, as a user
    typing it expects, except when the current directory is ``notebooks/``
    (a notebook opened in JupyterLab runs there): then it is relative to the
    repository root, so ``results/default`` means the same folder in both.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    cwd = Path.cwd().resolve()
    base = paths.REPO_ROOT if cwd == paths.NOTEBOOKS_DIR.resolve() else cwd
    return (base / p).resolve()


resolve_results_dir = resolve_user_path


def display_path(path: str | Path) -> str:
    """A path as shared output shows it: relative to the repository (or else the current directory) when
    inside it, else ``.../<name>``; never the machine's absolute path."""
    path = Path(path).resolve()
    for base in (paths.REPO_ROOT.resolve(), Path.cwd().resolve()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return f".../{path.name}"


def display_source(path: Path) -> str:
    """A checkpoint as log lines and rows show it: relative to the repository when inside it, else its folder's
    name and its own (never the machine's absolute path)."""
    try:
        return str(path.resolve().relative_to(paths.REPO_ROOT.resolve()))
    except ValueError:
        return f"{path.parent.name}/{path.name}"


@contextlib.contextmanager
def results_lock(results_dir: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock over the results folder (blocks until the other holder is done)."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+") as fh:
        t0 = time.monotonic()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another writer to release %s", folder / LOCK_NAME)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            log.info("got the lock on %s after %.1f s", folder, time.monotonic() - t0)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# Missing values are written as NaN, never as an empty cell: an empty cell in a metric column of a
# current row is damage (a hand edit, a bad merge), which read_rows reports instead of letting a NaN
# drop silently out of sums and means.
MISSING = "NaN"


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame, *, keep_empty: bool = False) -> None:
    """``frame`` as a CSV at ``path``, written atomically, a missing value as ``NaN``; a column with no value in any
    row (a setting this run's engines do not have, an interval of one seed) left out unless ``keep_empty``, so
    every column of a table for reading says something.  Checkpoints keep every column (``keep_empty``): a
    rerun, and the code that reads them, find the columns of every test (``capacity_rps`` where no capacity was
    found, ``capacity_error`` where every search found one).  A frame without rows keeps its header."""
    if not keep_empty and len(frame):
        frame = frame.loc[:, [c for c in frame.columns if not _empty_column(frame[c])]]
    buf = io.StringIO()
    frame.to_csv(buf, index=False, na_rep=MISSING)
    atomic_write_text(path, buf.getvalue())


def _empty_column(values: pd.Series) -> bool:
    """No row has a value: every cell missing or blank text."""
    present = values.notna()
    if present.any() and values.dtype.kind not in "fiubcmM":
        present &= values.astype(str).str.strip() != ""
    return not present.any()


__all__ = ["LOCK_NAME", "MISSING", "atomic_write_bytes", "atomic_write_text", "display_path", "display_source",
           "resolve_results_dir", "resolve_user_path", "results_lock", "write_csv_atomic"]
