"""Filesystem locations, anchored on the package's own location (never the CWD)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = REPO_ROOT / "data"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
RESULTS_DIR = REPO_ROOT / "results"
DEFAULT_LATENCY_GRID = DATA_DIR / "latency_grid_qwen3_1.7b_rtx4080.csv"


def cache_dir() -> Path:
    """Folder for derived, re-creatable data (parsed traces, the synthetic trace).

    ``WORKBENCH_CACHE_DIR`` overrides the default ``data/cache`` (gitignored).
    Created on first use.
    """
    path = Path(os.environ.get("WORKBENCH_CACHE_DIR", DATA_DIR / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
