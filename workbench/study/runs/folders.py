"""One results folder, one parameter set.

Every step writes into the same folder (checkpoints, ``all_results.csv``,
``analysis.json``, plots), and step 3 reads step 2's answer from it, so a
folder that mixed parameter sets would report one run's best GPU count next
to another run's K sweep.  The first plan made in a folder records its
parameters in ``parameters.json``; a later plan with other parameters is
refused with a :class:`ResultsFolderConflict` naming the differences.

Without an explicit ``results_dir`` a plan writes to ``results/default`` at
the default parameters and otherwise to a folder named by what differs
(``results/max_gpus=32``), so the README's one-off commands never land in the
suite's folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = "parameters.json"
DEFAULT_FOLDER = "default"
# Parameters that say how or where a run goes, not what it computes.
RUN_ONLY = frozenset({"results_dir", "executor"})
_MAX_NAME = 80


class ResultsFolderConflict(ValueError):
    """A results folder already holds results of another parameter set."""


def _plain(value):
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value) if abs(value) < 1e15 else value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _text(name: str, value) -> str:
    if name == "dataset" and value is not None:
        return Path(str(value)).stem
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def folder_name(identity: dict, defaults: dict) -> str:
    """``default`` at the default parameters, else ``name=value`` for each that differs, joined by ``__``."""
    changed = [f"{name}={_text(name, value)}" for name, value in identity.items()
               if _plain(value) != _plain(defaults.get(name))]
    if not changed:
        return DEFAULT_FOLDER
    name = "__".join(changed)
    name = "".join(c if c.isalnum() or c in "=._-" else "-" for c in name)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
        name = f"{name[:_MAX_NAME - 11]}-{digest}"
    return name


def differences(recorded: dict, wanted: dict) -> dict[str, tuple]:
    """Parameter -> (value recorded in the folder, value wanted now), for every parameter that differs."""
    names = list(dict.fromkeys([*recorded, *wanted]))
    return {n: (recorded.get(n), wanted.get(n)) for n in names
            if _plain(recorded.get(n)) != _plain(wanted.get(n))}


def read_manifest(results_dir: str | Path) -> dict | None:
    path = Path(results_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["parameters"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultsFolderConflict(f"{path}: unreadable parameter record ({exc}); delete it if the folder's "
                                    "results are yours to keep, or use another results_dir") from None


def claim(results_dir: str | Path, identity: dict, *, suggestion: str | None = None) -> None:
    """Make ``results_dir`` the folder of ``identity`` (record it), or refuse if it holds another parameter set."""
    from workbench.study.runs.sweep import atomic_write_text, results_lock

    folder = Path(results_dir)
    wanted = {k: _plain(v) for k, v in identity.items()}
    with results_lock(folder):
        recorded = read_manifest(folder)
        if recorded is None:
            legacy = [p.name for p in folder.glob("*.csv")]
            if legacy:
                log.warning("%s holds results without a parameter record (%s); recording these parameters",
                            folder, ", ".join(sorted(legacy)))
            atomic_write_text(folder / MANIFEST, json.dumps({"parameters": wanted}, indent=2) + "\n")
            return
        diff = differences(recorded, wanted)
        if diff:
            listed = "; ".join(f"{n}: {a!r} there, {b!r} here" for n, (a, b) in diff.items())
            fix = f" (the default folder for these parameters is {suggestion})" if suggestion else ""
            raise ResultsFolderConflict(
                f"results folder {folder} holds results of other parameters ({listed}). A folder holds one "
                f"parameter set: choose another results_dir{fix}, or delete {folder} to start over.")


__all__ = ["MANIFEST", "ResultsFolderConflict", "claim", "differences", "folder_name", "read_manifest"]
