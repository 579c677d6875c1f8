import re

import numpy as np
import pandas as pd
import pytest

from workbench import paths
from workbench.sim import latency as latency_module
from workbench.sim.latency import LatencyModel


def test_formula():
    m = LatencyModel(base_s=0.01, per_token_s=0.001, batch_penalty=0.5)
    # b=1: no penalty; b=2: L*(1 + 0.5*1/2)
    np.testing.assert_allclose(m.service_time_s([1, 2], [100, 100]), [0.11, 0.01 + 0.1 * 1.25])


def test_fit_recovers_known_coefficients(tmp_path):
    truth = LatencyModel(base_s=0.02, per_token_s=2e-4, batch_penalty=0.3)
    rows = [(b, L, float(truth.service_time_s(b, L))) for b in (1, 2, 4, 8, 16) for L in (64, 256, 1024)]
    path = tmp_path / "grid.csv"
    path.write_text("batch_size,max_seq_len,mean_latency_sec\n" + "\n".join(f"{b},{L},{y}" for b, L, y in rows))
    fit = LatencyModel.from_grid(path)
    assert fit.base_s == pytest.approx(0.02) and fit.per_token_s == pytest.approx(2e-4)
    assert fit.batch_penalty == pytest.approx(0.3) and fit.fit_rmse_s < 1e-9 and fit.fit_points == 15


def test_shipped_grid_fits_well():
    m = LatencyModel.default()
    assert m.source == paths.DEFAULT_LATENCY_GRID.name
    assert m.fit_max_rel_error < 0.02
    assert 0 < m.per_token_s < 1e-3


def test_bad_grids(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a CSV"):
        LatencyModel.from_grid(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("batch,len,lat\n1,2,3\n")
    with pytest.raises(ValueError, match="missing column"):
        LatencyModel.from_grid(bad)
    bad.write_text("batch_size,max_seq_len,mean_latency_sec\n1,128,0.05\n2,abc,0.06\n4,512,0.2\n")
    with pytest.raises(ValueError, match="row 3"):
        LatencyModel.from_grid(bad)


def test_negative_coefficients_refused():
    with pytest.raises(ValueError, match="per_token_s"):
        LatencyModel(per_token_s=-1.0)


def _grid(tmp_path, rows, name="grid.csv"):
    path = tmp_path / name
    path.write_text("batch_size,max_seq_len,mean_latency_sec\n" + "\n".join(f"{b},{L},{y}" for b, L, y in rows) + "\n")
    return path


def test_a_grid_with_one_sequence_length_or_one_batch_size_is_refused(tmp_path):
    truth = LatencyModel(base_s=0.02, per_token_s=2e-4, batch_penalty=0.3)
    one_length = [(b, 512, float(truth.service_time_s(b, 512))) for b in (1, 2, 4, 8)]
    with pytest.raises(ValueError, match="every row has max_seq_len = 512.*measure at least two sequence lengths"):
        LatencyModel.from_grid(_grid(tmp_path, one_length))
    one_size = [(4, L, float(truth.service_time_s(4, L))) for L in (128, 512, 2048)]
    with pytest.raises(ValueError, match="every row has batch_size = 4.*batch_penalty cannot be estimated"):
        LatencyModel.from_grid(_grid(tmp_path, one_size))


def test_a_grid_in_milliseconds_is_refused_with_the_fix(tmp_path):
    seconds = LatencyModel.from_grid(paths.DEFAULT_LATENCY_GRID)
    grid = pd.read_csv(paths.DEFAULT_LATENCY_GRID)
    grid["mean_latency_sec"] *= 1000.0
    path = tmp_path / "grid_ms.csv"
    grid.to_csv(path, index=False)
    with pytest.raises(ValueError, match="looks like milliseconds.*Divide the column by 1000"):
        LatencyModel.from_grid(path)
    assert seconds.base_s < latency_module.MAX_PLAUSIBLE_BASE_S and seconds.per_token_s < latency_module.MAX_PLAUSIBLE_PER_TOKEN_S
    # a slow but plausible device (10x the shipped grid's times) still fits
    grid["mean_latency_sec"] /= 100.0
    grid.to_csv(path, index=False)
    assert LatencyModel.from_grid(path).per_token_s == pytest.approx(10 * seconds.per_token_s)


def test_careless_grid_files_are_clear_errors_or_read(tmp_path):
    import gzip

    text = paths.DEFAULT_LATENCY_GRID.read_text()
    gz = tmp_path / "grid.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert LatencyModel.from_grid(gz).params() == LatencyModel.default().params()
    cases = {
        "latin1.csv": (text.encode() + "1,2,0.5\xe9\n".encode("latin-1"), "line 32: byte 0xe9 is not UTF-8 text"),
        "blank.csv": (b"  \n\n", "empty file (or only blank lines), expected a header line"),
        "big.csv": (b"batch_size,max_seq_len,mean_latency_sec\n1,128,0.05\n2,1e12,0.06\n4,512,0.2\n",
                    "row 3, column 'max_seq_len': found 1e+12, expected a whole number up to 2,147,483,647"),
        "twice.csv": ((text + text).encode(), "row 32, column 'batch_size': found 'batch_size', expected a number"),
        "wide.csv": (text.encode() + b"1,2,0.5,0.1,3,7\n", "malformed CSV"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(message)) as excinfo:
            LatencyModel.from_grid(tmp_path / name)
        assert str(tmp_path / name) in str(excinfo.value)
