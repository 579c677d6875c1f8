"""One results folder, one parameter set.

Every step writes into the same folder (checkpoints, ``all_results.csv``,
``analysis.json``, plots), and step 3 reads step 2's answer from it, so a
folder that mixed parameter sets would report one run's best GPU count next
to another run's K sweep.  The first plan made in a folder records its
parameters in ``parameters.json``; a later plan with other parameters is
refused with a :class:`ResultsFolderConflict` naming the differences.

Other notebooks that write into a folder (``validation``, ``fidelity_vllm``)
record their own parameters as a *part* of the same file (``"parts":
{"validation": {...}}``) and are refused in the same way when a folder holds
their outputs of other parameters.  A folder the workbench did not make (it
exists, is not empty and has no ``parameters.json``) is refused outright, and
so is one holding a part's outputs without their parameters: nothing of it
would be safe to resume from or to overwrite.  :func:`claim` checks all this,
and that the folder can be written and no output path is a folder, before any
computing starts; it creates the folder only once the inputs are valid.

Without an explicit ``results_dir`` a plan writes to ``results/default`` at
the default parameters and otherwise to a folder named by what differs
(``results/max_gpus=32``), so the README's one-off commands never land in the
suite's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import ClassVar

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


def _read_file(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    if not path.is_file():
        raise ResultsFolderConflict(f"{path} is a folder where the workbench keeps its parameter record; move it "
                                    "away or use another results_dir")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("parameters", {}), dict) \
                or not isinstance(manifest.get("parts", {}), dict):
            raise ValueError("expected an object with 'parameters' and 'parts' objects")
        return manifest
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ResultsFolderConflict(f"{path}: unreadable parameter record ({exc}); delete it if the folder's "
                                    "results are yours to keep, or use another results_dir") from None


def read_manifest(results_dir: str | Path, part: str | None = None) -> dict | None:
    """The parameters recorded in ``results_dir`` (the steps', or those of ``part``), or None."""
    manifest = _read_file(Path(results_dir))
    return manifest.get("parameters") if part is None else manifest.get("parts", {}).get(part)


def check_folder(results_dir: str | Path, *, outputs=(), name: str = "results_dir") -> Path:
    """``results_dir`` resolved, if it can take these results: creates nothing.

    Refused (``ValueError``): a path that is a file or under one, a folder that cannot be written, an output
    path that is a folder; (:class:`ResultsFolderConflict`) an existing, non-empty folder without
    ``parameters.json`` (one the workbench did not make).
    """
    from workbench import checks
    from workbench.study.store.files import LOCK_NAME

    folder = checks.writable_folder(results_dir, name)
    for output in outputs:
        if (folder / output).is_dir():
            raise ValueError(f"{name}: {folder / output} is a folder, where this run writes its {output} file; "
                             "move it away or choose another results_dir (checked before computing anything)")
    if folder.is_dir() and not (folder / MANIFEST).exists():
        found = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
        if found:
            shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
            raise ResultsFolderConflict(
                f"results folder {folder} was not made by the workbench: it holds {shown} and no {MANIFEST}. "
                "Results are written only into a new or empty folder, or one the workbench made (so nothing of "
                "yours is overwritten and no run's rows are mixed with another's): choose another results_dir")
    return folder


def _compare(folder: Path, manifest: dict, wanted: dict, part: str | None, outputs, suggestion) -> bool:
    """True if ``wanted`` is already recorded; False if nothing is (and nothing of it is there); else refuse."""
    recorded = manifest.get("parameters") if part is None else manifest.get("parts", {}).get(part)
    if recorded is None:
        unrecorded = sorted(o for o in outputs if (folder / o).exists())
        if unrecorded:
            what = "the steps" if part is None else part
            raise ResultsFolderConflict(
                f"results folder {folder} holds {', '.join(unrecorded)} of {what} without a record of their "
                f"parameters in {MANIFEST}, so a rerun could mix two parameter sets: move those files away, "
                "or choose another results_dir")
        return False
    diff = differences(recorded, wanted)
    if diff:
        listed = "; ".join(f"{n}: {a!r} there, {b!r} here" for n, (a, b) in diff.items())
        fix = f" (the default folder for these parameters is {suggestion})" if suggestion else ""
        raise ResultsFolderConflict(
            f"results folder {folder} holds results of other parameters ({'' if part is None else part + ': '}"
            f"{listed}). A folder holds one parameter set: choose another results_dir{fix}, or delete "
            f"{folder} to start over.")
    return True


def check_claim(results_dir: str | Path, identity: dict, *, suggestion: str | None = None, part: str | None = None,
                outputs=()) -> Path:
    """Everything :func:`claim` checks (folder, outputs, recorded parameters), creating and recording nothing:
    what a command line checks before it starts any work."""
    folder = check_folder(results_dir, outputs=outputs)
    if folder.is_dir():
        _compare(folder, _read_file(folder), {k: _plain(v) for k, v in identity.items()}, part, outputs,
                 suggestion)
    return folder


def claim(results_dir: str | Path, identity: dict, *, suggestion: str | None = None, part: str | None = None,
          outputs=()) -> Path:
    """Make ``results_dir`` the folder of ``identity`` (record it), or refuse if it holds another parameter set.

    ``part`` names a notebook that records its parameters beside the steps' (``"validation"``); ``outputs``
    are the files this run writes (each must not be a folder; found there without a record of their
    parameters, they are refused).  Returns the folder (created now, after the checks).
    """
    from workbench.study.store.files import atomic_write_text, results_lock

    folder = check_claim(results_dir, identity, suggestion=suggestion, part=part, outputs=outputs)
    wanted = {k: _plain(v) for k, v in identity.items()}
    with results_lock(folder):  # creates the folder
        manifest = _read_file(folder)
        if not _compare(folder, manifest, wanted, part, outputs, suggestion):
            if part is None:
                manifest["parameters"] = wanted
            else:
                manifest.setdefault("parts", {})[part] = wanted
            atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return folder


class NotebookParams:
    """What a notebook's validated parameters share (a frozen dataclass with a ``results_dir`` field; the subclass
    validates in ``__post_init__``): built from the notebook's namespace (its ``parameters`` cell), identified by
    every parameter but the folder, and claiming the folder as the part ``notebook`` that writes ``outputs``."""

    notebook: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_namespace(cls, namespace: dict):
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})

    def _check_sla(self) -> None:
        """``ttft_sla_s`` and ``tpot_sla_s`` (seconds > 0) and ``attainment`` (a share in (0, 1]), validated in
        place: the SLA every study notebook takes."""
        from workbench import checks

        for name in ("ttft_sla_s", "tpot_sla_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=True, unit="s"))
        object.__setattr__(self, "attainment", checks.number(self.attainment, "attainment", low=0, low_open=True,
                                                             high=1, what="a share in (0, 1]"))

    def identity(self) -> dict:
        """What the notebook's outputs depend on: every parameter but the folder."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "results_dir"}

    def claim_results_dir(self) -> Path:
        """The folder, with these parameters recorded as the notebook's part (refused if it holds that part's
        results of other parameters, or is not a workbench folder); checked before anything is computed."""
        from workbench.study.store.files import resolve_results_dir

        return claim(resolve_results_dir(self.results_dir), self.identity(), part=self.notebook,
                     outputs=self.outputs)


__all__ = ["MANIFEST", "NotebookParams", "ResultsFolderConflict", "check_claim", "check_folder", "claim",
           "differences", "folder_name", "read_manifest"]
