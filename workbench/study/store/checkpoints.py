"""Checkpoints: result CSVs of one row per test, keyed by ``test_id``, as the sweeps write and everything reads them.

Format
    A row holds a test's configuration columns and its metrics; ``simulator_version`` (a hash of the
    simulator's source, :func:`simulator_version`) says which code computed it, ``finished_at`` is the last
    column (a row cut short is recognisable).  Rows of different K have different ``bin{j}_*`` columns,
    placed by :func:`canonical_columns` whatever order the tests finished in.  A missing value is written as
    ``NaN``, never as an empty cell.  The whole file is rewritten atomically at every merge
    (:func:`merge_rows`, under :func:`~workbench.study.store.files.results_lock`).

Reading
    :func:`read_rows` drops a torn last line and refuses (:class:`CheckpointError`, naming file, line and
    column, and saying to move the file aside) what no writer here produces: a repeated header, a row wider
    than the header or cut short mid-file, text in a column of numbers, an empty cell in a metric column of a
    row of the current simulator code.  :func:`finished_ids` are the rows the current code computed; :func:`current_rows_near`
    finds them in the other checkpoints near a folder (another step's, another parameter set's).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from workbench import paths
from workbench.study.store.files import MISSING, write_csv_atomic

log = logging.getLogger(__name__)

# Columns that measure the machine, not the model: they differ between two runs
# of the same test, and are left out when rows are compared.
TIMING_COLUMNS = ("wall_s", "finished_at", "sim_wall_s", "sim_requests_per_s")
GRID_PROFILE = "seed-grid"  # latency_profile of a test on the seed study's formula grid (a LatencyModel)


class CheckpointError(ValueError):
    """A results CSV that cannot be resumed from (repeated header, over-wide row, blank metric cell)."""


# The modules whose code determines a simulation's (and a capacity search's)
# numbers.  A row computed by other code than the running one is not reused (it
# is recomputed and replaced), so a simulator fix never hides behind an old checkpoint.
# (The trace's content is covered by its fingerprint, so the loader is not listed.)
SIMULATOR_MODULES = ("sim", "study/runs/capacity.py")


@functools.lru_cache(maxsize=1)
def simulator_version() -> str:
    """12 hex digits of sha256 over the source of :data:`SIMULATOR_MODULES`."""
    digest = hashlib.sha256()
    for name in SIMULATOR_MODULES:
        target = paths.PACKAGE_DIR / name
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            if file.is_file():
                digest.update(file.relative_to(paths.PACKAGE_DIR).as_posix().encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _move_aside(path: Path) -> str:
    return (f"this file cannot be resumed from: move it aside (mv '{path}' '{path}.bad') and rerun, which "
            "recomputes its tests, or repair that line by hand")


def _records(path: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a results CSV, blank lines skipped; CheckpointError on damage
    that no writer of the workbench produces (a repeated header, a row wider than the header)."""
    reader = csv.reader(io.StringIO(text))
    records, line = [], 1
    for fields in reader:
        if fields:
            records.append((line, fields))
        line = reader.line_num + 1
    (header_line, header), rows = records[0], records[1:]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise CheckpointError(f"{path}: line {header_line}: the header names column(s) {duplicated} twice; "
                              f"{_move_aside(path)}")
    for line, fields in rows:
        if fields == header:
            raise CheckpointError(f"{path}: line {line} repeats the header (two files concatenated?); "
                                  f"{_move_aside(path)}")
        if len(fields) > len(header):
            raise CheckpointError(f"{path}: line {line} has {len(fields)} fields but the header has {len(header)}; "
                                  f"{_move_aside(path)}")
    return header, rows


def read_rows(path: str | os.PathLike, key: Sequence[str] = ("test_id",)) -> pd.DataFrame:
    """A results CSV as a DataFrame: a torn last line and incomplete rows dropped (with a warning), one row
    per ``key``.

    Damage that no writer of the workbench produces is a :class:`CheckpointError` naming the file, the line
    (and the column) and the fix: a repeated header, a row with more fields than the header, a short row
    other than the last, an empty cell in a metric column of a row computed by the current simulator.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return pd.DataFrame()
    header, records = _records(path, text)
    if "test_id" not in header:
        raise CheckpointError(f"{path} is not a workbench results file (no test_id column); "
                              "move it away or pick another results folder")
    short = [i for i, (_, fields) in enumerate(records) if len(fields) < len(header)]
    if short and short[0] < len(records) - 1:
        line, fields = records[short[0]]
        raise CheckpointError(f"{path}: line {line} has {len(fields)} fields but the header has {len(header)} "
                              f"(a row cut short in the middle of the file); {_move_aside(path)}")
    if short:  # a crash in the middle of a write by a tool that appends
        log.warning("%s: the last line is torn; dropping it", path)
        records = records[:-1]
    if not records:
        return pd.DataFrame()
    # hex digests stay text: "0123456789012345" or "12e4..." read as numbers would never match again
    text_columns = {c: str for c in ("test_id", "simulator_version", "trace_fingerprint") if c in header}
    frame = pd.read_csv(io.StringIO(text), nrows=len(records), dtype=text_columns)
    _check_text_in_numbers(path, frame, records)
    _check_blank_metrics(path, frame, records)
    complete = frame["test_id"].notna()
    if "finished_at" in frame.columns:  # the last column: missing means the row was cut short
        complete &= frame["finished_at"].notna()
    if not complete.all():
        log.warning("%s: dropping %d incomplete row(s)", path, int((~complete).sum()))
        frame = frame[complete]
    duplicated = frame.duplicated(subset=list(key), keep="last")
    if duplicated.any():
        log.warning("%s: dropping %d duplicate row(s) (kept the last of each %s)", path, int(duplicated.sum()),
                    "/".join(key))
        frame = frame[~duplicated]
    # one block per dtype, not per column (read_csv's frame of ~200 columns): adding a column to a frame of
    # 100+ blocks makes pandas warn (PerformanceWarning) in every notebook that derives one
    return frame.reset_index(drop=True).copy()


_PER_BIN = re.compile(r"^bin(\d+)_")

# Columns that hold text (names, ids, sentences, times of day): a number there is just text.  Every other column
# holds numbers (or true/false), so a cell of text in one is damage (a hand edit), refused naming its line.
TEXT_COLUMNS = frozenset({"test_id", "base_test_id", "simulator_version", "trace_fingerprint", "capacity_hint_from",
                          "step", "label", "scheduler", "dataset", "trace_label", "latency_profile", "latency_kind",
                          "capacity_criterion", "capacity_error", "reused_from", "finished_at"})
# a column named with one of these unit suffixes holds numbers whatever its cells hold
_NUMBER_SUFFIXES = ("_s", "_rps", "_gb", "_rate", "_per_s", "_tokens", "_share", "_attainment")


def _check_text_in_numbers(path: Path, frame: pd.DataFrame, records: list[tuple[int, list[str]]]) -> None:
    """A cell of text in a column of numbers (``abc`` where a rate belongs) is refused, naming the file, the line,
    the column and the fix, before anything tries to add it up ("could not convert string to float")."""
    for j, column in enumerate(frame.columns):
        if column in TEXT_COLUMNS or frame[column].dtype.kind in "fiub":
            continue   # numbers or booleans throughout
        cells = frame[column]
        present = cells.notna() & (cells.astype(str).str.strip() != "")
        booleans = cells.astype(str).isin(("True", "False", "true", "false"))
        numbers = pd.to_numeric(cells.where(~booleans), errors="coerce").notna() | booleans
        text = present & ~numbers
        if not text.any() or not (numbers.any() or str(column).endswith(_NUMBER_SUFFIXES)):
            continue   # a column of text (one a later version added), not numbers with text among them
        i = int(np.flatnonzero(text.to_numpy())[0])
        line, _ = records[i]
        raise CheckpointError(
            f"{path}: line {line}, column {column!r}: {cells.iloc[i]!r} where a number is expected "
            f"({int(text.sum())} such cell(s) in that column); {_move_aside(path)}")


def _check_blank_metrics(path: Path, frame: pd.DataFrame, records: list[tuple[int, list[str]]]) -> None:
    """An empty cell in a numeric column of a row of the current simulator code is damage: refuse it.

    (Rows of other simulator versions are recomputed anyway, and older files wrote NaN as an empty cell.)
    """
    current = np.ones(len(frame), dtype=bool)
    if "simulator_version" in frame.columns:
        current = (frame["simulator_version"].astype(str) == simulator_version()).to_numpy()
    if not current.any():
        return
    for j, column in enumerate(frame.columns):
        if frame[column].dtype.kind not in "fiub" or frame[column].isna().all():
            continue  # text, or a column nobody filled in
        for i in np.flatnonzero(current):
            line, fields = records[i]
            if fields[j] == "":
                raise CheckpointError(
                    f"{path}: line {line}, column {column!r}: empty cell where a number is expected (a missing "
                    f"value is written as {MISSING}); {_move_aside(path)}")


def canonical_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in an order that does not depend on which rows came first.

    Rows of different K have different ``bin{j}_*`` columns, so the order of a
    concatenation depends on the order in which tests finished; the per-bin
    columns go right after ``k_bins_effective`` sorted by bin, and
    ``finished_at`` last, so a row cut short is recognisable.
    """
    cols = [c for c in frame.columns if not _PER_BIN.match(c) and c != "finished_at"]
    per_bin = sorted((c for c in frame.columns if _PER_BIN.match(c)),
                     key=lambda c: (int(_PER_BIN.match(c).group(1)), c))
    at = cols.index("k_bins_effective") + 1 if "k_bins_effective" in cols else len(cols)
    return frame[cols[:at] + per_bin + cols[at:] + (["finished_at"] if "finished_at" in frame else [])]


def load_and_repair(path: Path) -> pd.DataFrame:
    """``read_rows``, and rewrite the file clean if rows had to be dropped (call under the lock)."""
    rows = read_rows(path)
    if path.is_file():
        with open(path, "rb") as fh:
            data_lines = sum(1 for line in fh if line.strip()) - 1
        if data_lines != len(rows):
            log.warning("%s: rewriting it without the %d dropped row(s)", path, data_lines - len(rows))
            if rows.empty:
                path.unlink()
            else:
                write_csv_atomic(path, canonical_columns(rows), keep_empty=True)
    return rows


def finished_ids(rows: pd.DataFrame) -> set[str]:
    """The test ids in ``rows`` computed by the current simulator code."""
    if rows.empty:
        return set()
    if "simulator_version" in rows.columns:
        current = rows["simulator_version"].astype(str) == simulator_version()
        if not current.all():
            log.warning("%d checkpointed row(s) were computed by other simulator code; they will be recomputed",
                        int((~current).sum()))
        rows = rows[current]
    return set(rows["test_id"])


def merge_rows(path: str | os.PathLike, rows: Sequence[dict] | pd.DataFrame) -> pd.DataFrame:
    """Merge ``rows`` into the checkpoint at ``path`` (last wins per test_id); call under :func:`results_lock`."""
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    old = read_rows(path)
    if not old.empty and not new.empty:
        old = old[~old["test_id"].isin(set(new["test_id"]))]
    parts = [f for f in (old, new) if not f.empty]
    merged = pd.concat(parts, ignore_index=True, sort=False) if parts else new
    merged = canonical_columns(merged)
    write_csv_atomic(path, merged, keep_empty=True)   # every column, even one no row has yet: the schema resumes
    return merged


def select_rows(rows: pd.DataFrame, ids: Iterable[str]) -> pd.DataFrame:
    """The rows of ``ids`` in that order (missing ids are skipped).

    Per-bin columns that none of these rows has (``bin{j}_*`` for j >= the
    largest K among them) are dropped.
    """
    ids = list(ids)
    if rows.empty:
        return rows
    by_id = rows.set_index("test_id", drop=False)
    present = [i for i in ids if i in by_id.index]
    out = by_id.loc[present].reset_index(drop=True)
    empty_bins = [c for c in out.columns if _PER_BIN.match(c) and out[c].isna().all()]
    return canonical_columns(out.drop(columns=empty_bins))


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the timing columns: what must agree between two runs of the same tests."""
    return rows.drop(columns=[c for c in TIMING_COLUMNS if c in rows.columns]).reset_index(drop=True)


# --------------------------------------------------------------------------- checkpoints near a folder

# Files of a results tree that hold aggregates, not one row per test: never a source of reused rows.
_NOT_CHECKPOINTS = ("all_results.csv",)


def _checkpoint_files(results_dir: Path, exclude: Path | None = None) -> list[Path]:
    """The per-test result CSVs that may hold tests of ``results_dir``: its own other files (another step's
    checkpoint), those of the folder it lies in (the comparison's folder inside the steps' one) and, when it
    lies in the repository's ``results/``, those of every results folder there
    (``results/default`` next to ``results/max_gpus=32``, and their subfolders), nearest first."""
    roots = [(results_dir, ("*.csv", "*/*.csv")), (results_dir.parent, ("*.csv",))]
    results_root = paths.RESULTS_DIR.resolve()
    if results_root in results_dir.resolve().parents:
        roots.append((results_root, ("*/*.csv", "*/*/*.csv", "*/*/*/*.csv")))
    seen, out = ({exclude.resolve()} if exclude is not None else set()), []
    for root, patterns in roots:
        for pattern in patterns:
            for path in sorted(root.glob(pattern)):
                if path.name in _NOT_CHECKPOINTS or path.name.endswith("_summary.csv"):
                    continue
                resolved = path.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    out.append(path)
    return out


def _has_test_ids(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "test_id" in next(csv.reader(fh), [])
    except OSError:
        return False


_ROWS_SEEN: dict[Path, tuple[tuple[int, int], pd.DataFrame]] = {}


def _rows_of(path: Path) -> pd.DataFrame:
    """``read_rows(path)``, kept while the file does not change (a notebook looks at the same checkpoints of
    other folders several times)."""
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    seen = _ROWS_SEEN.get(path)
    if seen is None or seen[0] != key:
        _ROWS_SEEN[path] = seen = (key, read_rows(path))
    return seen[1]


def current_rows_near(results_dir: Path, ids: Iterable[str], exclude: Path | None) -> dict[str, tuple[dict, Path]]:
    """The rows of ``ids`` that checkpoints near ``results_dir`` (any but ``exclude``; see
    :func:`_checkpoint_files`) hold, computed by the current simulator code: test id -> (row, its checkpoint),
    the nearest checkpoint's row where several hold one.  Columns none of a file's rows has are left out."""
    wanted = set(ids)
    found: dict[str, tuple[dict, Path]] = {}
    for path in _checkpoint_files(results_dir, exclude):
        if not wanted - found.keys():
            break
        if not _has_test_ids(path):
            continue
        try:
            rows = _rows_of(path)
        except (CheckpointError, ValueError, OSError) as exc:
            log.debug("not reusing rows of %s: %s", path, exc)
            continue
        if rows.empty or "simulator_version" not in rows:
            continue
        rows = rows[(rows["simulator_version"].astype(str) == simulator_version())
                    & rows["test_id"].isin(wanted - found.keys())]
        rows = rows.dropna(axis=1, how="all")   # another file's columns that none of these rows has
        for record in rows.to_dict("records"):
            found[record["test_id"]] = (record, path)
    return found


__all__ = ["CheckpointError", "GRID_PROFILE", "SIMULATOR_MODULES", "TIMING_COLUMNS", "canonical_columns",
           "comparable", "current_rows_near", "finished_ids", "load_and_repair", "merge_rows", "read_rows",
           "select_rows", "simulator_version"]
