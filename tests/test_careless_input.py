"""Careless input to the simulator (issue 9, item 12): values the engine cannot hold, an SLA in milliseconds.

(Trace files, latency grids, checkpoints and the command line have theirs in test_trace.py,
test_latency.py, test_sweep.py and test_suite.py.)
"""

import re
import warnings

import pytest

import workbench as wb
from workbench.sim.config import SimConfig


@pytest.mark.parametrize("field, value, message", [
    ("ctrl_window", 10**9, "ctrl_window: must be at most 10,000 (the engine keeps a window"),
    ("ctrl_window", 2**63, "ctrl_window: must be at most 10,000"),
    ("num_gpus", 10**9, "num_gpus: must be at most 100,000"),
    ("k_bins", 10**9, "k_bins: must be at most 10,000"),
    ("b_max", 2**40, "b_max: must be at most 2,147,483,647 (the compiled engine counts in 32-bit integers)"),
])
def test_values_too_large_for_the_engine_are_refused(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SimConfig(**{field: value})
    SimConfig(ctrl_window=10_000, num_gpus=100_000, k_bins=10_000, b_max=2**31 - 1)  # the bounds themselves are fine


def test_an_sla_in_milliseconds_by_mistake_warns():
    latency = wb.LatencyModel(base_s=0.01, per_token_s=1e-3, batch_penalty=0.5)
    trace = wb.Trace.from_arrays([0.0, 0.5, 1.0], [100, 400, 200], [50, 100, 20])
    # in a batch of b_max = 4 (penalty factor 1 + 0.5 * 3/4 = 1.375): median 220 tokens -> 0.3125 s,
    # longest 500 tokens -> 0.6975 s; the warning starts above 300 x 0.3125 = 93.75 s
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=2, b_max=4, d_sla_s=1000.0)
    with pytest.warns(wb.SlaScaleWarning, match=r"d_sla_s=1000 s is 3,200 times the median request's service time "
                                                 r"\(0\.312 s\) and above the longest .* \(0\.698 s: 500 tokens in a "
                                                 r"batch of 4\).*pass d_sla_s=1$"):
        result = wb.simulate(trace, cfg, latency=latency)
    assert result.summary["sla_violation_rate"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", wb.SlaScaleWarning)
        wb.simulate(trace, cfg.replace(d_sla_s=93.7), latency=latency)
        wb.simulate(trace, cfg.replace(d_sla_s=1.0), latency=latency)
        wb.simulate(wb.load_trace(num_requests=20_000, rps_scaling=200), wb.SimConfig(d_sla_s=5.0),
                    latency="seed-grid")  # the grid, a long SLA
    with pytest.warns(wb.SlaScaleWarning):
        wb.simulate(trace, cfg.replace(d_sla_s=93.8), latency=latency)
    with pytest.warns(wb.SlaScaleWarning, match="pass d_sla_s=1$"):  # the case: the seed's trace and grid
        wb.simulate(wb.load_trace(num_requests=20_000, rps_scaling=200), wb.SimConfig(d_sla_s=1000.0),
                    latency="seed-grid")


def test_every_integer_field_but_the_seed_has_an_upper_bound():
    import dataclasses

    ints = [f.name for f in dataclasses.fields(SimConfig) if f.type == "int" and f.name != "seed"]
    assert {"num_gpus", "ctrl_window", "batch_size", "edge_sample"} <= set(ints)
    for name in ints:
        with pytest.raises(ValueError, match=f"{name}: must be at most"):
            SimConfig(**{name: 2**63})
    assert SimConfig(seed=2**70).seed == 2**70
