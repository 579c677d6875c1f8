"""Batch service-time model of one GPU.

    t(b, L) = base_s + per_token_s * L * (1 + batch_penalty * (b - 1) / b)

``b`` is the batch size and ``L`` the longest prompt + output length in the
batch: in a static batch the slowest request holds every other one.  The
model is linear in (base_s, per_token_s, per_token_s * batch_penalty), so a
calibration grid is fitted by ordinary least squares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import paths

log = logging.getLogger(__name__)

GRID_COLUMNS = ("batch_size", "max_seq_len", "mean_latency_sec")


@dataclass(frozen=True)
class LatencyModel:
    """Service time of a batch; see the module docstring for the formula."""

    base_s: float = 0.015
    per_token_s: float = 3.0e-4
    batch_penalty: float = 0.4
    source: str = "manual"
    fit_rmse_s: float = float("nan")
    fit_max_rel_error: float = float("nan")
    fit_points: int = field(default=0)

    def __post_init__(self):
        for name in ("base_s", "per_token_s", "batch_penalty"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"LatencyModel.{name} must be a finite number >= 0, got {value!r}")

    def service_time_s(self, batch_size, max_seq_len):
        """Vectorised t(b, L); ``batch_size`` >= 1."""
        b = np.asarray(batch_size, dtype=np.float64)
        if np.any(b < 1):
            raise ValueError("batch_size must be >= 1")
        L = np.asarray(max_seq_len, dtype=np.float64)
        return self.base_s + self.per_token_s * L * (1.0 + self.batch_penalty * (b - 1.0) / b)

    def params(self) -> dict:
        """The coefficients that determine simulation results (used in test ids)."""
        return {"base_s": self.base_s, "per_token_s": self.per_token_s, "batch_penalty": self.batch_penalty}

    @classmethod
    def from_grid(cls, path: str | Path) -> "LatencyModel":
        """Least-squares fit of the three coefficients to a calibration grid CSV."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latency grid {path} not found; expected a CSV with columns {', '.join(GRID_COLUMNS)}")
        grid = pd.read_csv(path)
        missing = [c for c in GRID_COLUMNS if c not in grid.columns]
        if missing:
            raise ValueError(
                f"latency grid {path}: missing column(s) {missing}; found {list(grid.columns)}, "
                f"expected at least {list(GRID_COLUMNS)}"
            )
        values = grid[list(GRID_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1) | (values <= 0).any(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"latency grid {path}: row {row + 2} has a missing, non-numeric or non-positive value")
        if len(values) < 3:
            raise ValueError(f"latency grid {path}: need at least 3 rows to fit 3 coefficients, got {len(values)}")
        b = values["batch_size"].to_numpy(float)
        L = values["max_seq_len"].to_numpy(float)
        y = values["mean_latency_sec"].to_numpy(float)
        design = np.column_stack([np.ones_like(L), L, L * (b - 1.0) / b])
        (base, per_token, penalty_term), *_ = np.linalg.lstsq(design, y, rcond=None)
        if per_token <= 0:
            raise ValueError(f"latency grid {path}: fitted per-token time {per_token:.3g} s is not positive")
        pred = design @ np.array([base, per_token, penalty_term])
        model = cls(
            base_s=max(float(base), 0.0),
            per_token_s=float(per_token),
            batch_penalty=max(float(penalty_term / per_token), 0.0),
            source=path.name,
            fit_rmse_s=float(np.sqrt(np.mean((pred - y) ** 2))),
            fit_max_rel_error=float(np.max(np.abs(pred - y) / y)),
            fit_points=len(y),
        )
        log.info("fitted base %.4g s, %.4g s/token, batch penalty %.3g to %s: rmse %.2g s, max rel error %.2g%%",
                 model.base_s, model.per_token_s, model.batch_penalty, path.name, model.fit_rmse_s,
                 100 * model.fit_max_rel_error)
        return model

    @classmethod
    def default(cls) -> "LatencyModel":
        """The model fitted to the shipped grid (labelled Qwen3-1.7B on an RTX 4080 by the seed project; the
        grid was generated from this formula, not measured: the fit is exact)."""
        return _default_model()


_DEFAULT: list[LatencyModel] = []


def _default_model() -> LatencyModel:
    if not _DEFAULT:
        _DEFAULT.append(LatencyModel.from_grid(paths.DEFAULT_LATENCY_GRID))
    return _DEFAULT[0]
