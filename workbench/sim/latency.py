"""Batch service-time model of one GPU.

    t(b, L) = base_s + per_token_s * L * (1 + batch_penalty * (b - 1) / b)

``b`` is the batch size and ``L`` the longest prompt + output length in the
batch: in a static batch the slowest request holds every other one.  The
model is linear in (base_s, per_token_s, per_token_s * batch_penalty), so a
calibration grid is fitted by ordinary least squares.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks, paths

log = logging.getLogger(__name__)

GRID_COLUMNS = ("batch_size", "max_seq_len", "mean_latency_sec")
# Beyond these a grid is taken to be in milliseconds, not seconds: no GPU spends a second of fixed
# overhead on a batch, or a tenth of a second per token of the longest sequence (the shipped grid: 15 ms
# and 0.3 ms; a 70B model on one GPU ~ 30 ms per decode step, i.e. below 0.1 s per token of prompt + output).
MAX_PLAUSIBLE_BASE_S = 1.0
MAX_PLAUSIBLE_PER_TOKEN_S = 0.1
# A model built by hand may be an abstract queue (the theory checks serve a batch in 1 s); beyond 10 s of fixed
# time per batch it is a fixed cost of tens of milliseconds written in milliseconds
MAX_HAND_BASE_S = 10.0


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
        # above these a coefficient was given in milliseconds (a fitted grid is held to MAX_PLAUSIBLE_BASE_S)
        for name, sane_high in (("base_s", MAX_HAND_BASE_S), ("per_token_s", MAX_PLAUSIBLE_PER_TOKEN_S),
                                ("batch_penalty", None)):
            object.__setattr__(self, name, checks.number(
                getattr(self, name), f"LatencyModel.{name}", low=0, unit="s" if sane_high else "",
                sane_high=sane_high, sane_hint="LatencyModel takes seconds: divide milliseconds by 1000"))
        if self.base_s == 0 and self.per_token_s == 0:
            raise ValueError("LatencyModel: a batch must take time: base_s and per_token_s are both 0, so every "
                             "latency would be 0; give the fixed time per batch (base_s) or the time per token "
                             "(per_token_s), in seconds")

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
        path = Path(checks.path(path, "path", expected="a latency grid CSV's path"))
        if path.is_dir():
            raise IsADirectoryError(f"latency grid {path}: a folder, not a CSV file (columns {', '.join(GRID_COLUMNS)})")
        if not path.is_file():
            raise FileNotFoundError(f"latency grid {path} not found; expected a CSV with columns {', '.join(GRID_COLUMNS)}")
        grid = _read_grid(path)
        missing = [c for c in GRID_COLUMNS if c not in grid.columns]
        if missing:
            raise ValueError(
                f"latency grid {path}: missing column(s) {missing}; found {list(grid.columns)}, "
                f"expected at least {list(GRID_COLUMNS)}"
            )
        values = grid[list(GRID_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        problems = [(values.isna(), "a number"), (values <= 0, "a number > 0")]
        for column in ("batch_size", "max_seq_len"):
            whole = values[column].isna() | ((values[column] == np.floor(values[column])) & (values[column] <= 2**31 - 1))
            problems.append((~whole.to_frame(), f"a whole number up to {2**31 - 1:,}"))
        for bad, expected in problems:
            if bad.to_numpy().any():
                row = int(np.flatnonzero(bad.to_numpy().any(axis=1))[0])
                column = next(c for c in bad.columns if bad[c].iloc[row])
                cell = grid[column].iloc[row]
                cell = repr(cell) if isinstance(cell, str) else f"{cell:g}"
                raise ValueError(f"latency grid {path}: row {row + 2}, column {column!r}: found {cell}, "
                                 f"expected {expected}")
        if len(values) < 3:
            raise ValueError(f"latency grid {path}: need at least 3 rows to fit 3 coefficients, got {len(values)}")
        b = values["batch_size"].to_numpy(float)
        L = values["max_seq_len"].to_numpy(float)
        y = values["mean_latency_sec"].to_numpy(float)
        _check_identifiable(path, b, L)
        design = np.column_stack([np.ones_like(L), L, L * (b - 1.0) / b])
        (base, per_token, penalty_term), *_ = np.linalg.lstsq(design, y, rcond=None)
        if per_token <= 0:
            raise ValueError(f"latency grid {path}: fitted per-token time {per_token:.3g} s is not positive")
        if base > MAX_PLAUSIBLE_BASE_S or per_token > MAX_PLAUSIBLE_PER_TOKEN_S:
            raise ValueError(
                f"latency grid {path}: mean_latency_sec looks like milliseconds, not seconds: the fit gives "
                f"{base:.3g} s of fixed time per batch and {per_token:.3g} s per token of the longest sequence "
                f"(plausible: below {MAX_PLAUSIBLE_BASE_S:g} s and {MAX_PLAUSIBLE_PER_TOKEN_S:g} s; the shipped grid "
                "gives 0.015 s and 0.0003 s). Divide the column by 1000, or fix the unit where the grid was exported")
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


def _read_grid(path: Path) -> pd.DataFrame:
    """The grid CSV (gzip-compressed too), or a ValueError naming the file and what is wrong."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        frame = pd.read_csv(path, compression="gzip" if gzipped else None, encoding="utf-8")
        if not isinstance(frame.index, pd.RangeIndex):   # rows with an extra field: pandas made them an index
            raw = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
            checks.csv_fields(raw.decode("utf-8"), f"latency grid {path}")
        return frame
    except pd.errors.EmptyDataError:
        raise ValueError(f"latency grid {path}: empty file (or only blank lines), expected a header line "
                         f"{','.join(GRID_COLUMNS)} and one row per (batch size, sequence length)") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"latency grid {path}: malformed CSV: {exc}") from None
    except UnicodeDecodeError:
        raw = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
        try:
            raw.decode("utf-8")
            where = ""
        except UnicodeDecodeError as exc:
            where = f" line {raw.count(10, 0, exc.start) + 1}: byte 0x{raw[exc.start]:02x}"
        raise ValueError(f"latency grid {path}:{where or ' the file'} is not UTF-8 text; re-save it as UTF-8 CSV") from None
    except (OSError, EOFError) as exc:  # a damaged gzip file
        raise ValueError(f"latency grid {path}: cannot be read ({exc})") from None


def _check_identifiable(path: Path, batch_size: np.ndarray, max_seq_len: np.ndarray) -> None:
    """Refuse a grid from which the three coefficients cannot all be told apart (any fit would be "exact")."""
    lengths, sizes = np.unique(max_seq_len), np.unique(batch_size)
    if lengths.size < 2:
        raise ValueError(
            f"latency grid {path}: every row has max_seq_len = {lengths[0]:g}, so the fixed time per batch (base_s) "
            "and the time per token (per_token_s) cannot be told apart; measure at least two sequence lengths")
    if sizes.size < 2:
        raise ValueError(
            f"latency grid {path}: every row has batch_size = {sizes[0]:g}, so batch_penalty cannot be estimated; "
            "measure at least two batch sizes (including 1 or any two different sizes)")


_DEFAULT: list[LatencyModel] = []


def _default_model() -> LatencyModel:
    if not _DEFAULT:
        _DEFAULT.append(LatencyModel.from_grid(paths.DEFAULT_LATENCY_GRID))
    return _DEFAULT[0]
