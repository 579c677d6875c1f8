"""The SLA controller (Algorithm 2 with the release of issue 9, item 1) on scripted sequences worked out by hand,
and the overload case that used to collapse."""

import numpy as np
import pytest

import workbench as wb
from workbench.sim.controllers import RELEASED_FOREVER, sla_initial_limit, sla_update

B_MIN, B_MAX, ALPHA, DELTA, BUDGET, EPS = 1, 8, 2.0, 2.0, 1.0, 0.1


def run_script(steps, retry_batches):
    """Feed (tau_s, b_bar) pairs to bin 0; returns the limits and the final state."""
    b_low, b_high, released = np.array([float(B_MIN)]), np.array([float(B_MAX)]), np.zeros(1, np.int64)
    limits = [sla_update(b_low, b_high, released, 0, tau, b_bar, BUDGET, EPS, ALPHA, DELTA, B_MIN, B_MAX,
                         retry_batches) for tau, b_bar in steps]
    return limits, b_low[0], b_high[0], released[0]


def test_algorithm_2_steps_by_hand():
    assert sla_initial_limit(B_MIN, B_MAX) == 4                       # floor((1 + 8) / 2)
    limits, low, high, released = run_script([
        (0.5, 4),   # under: b_low = min(4, 8 - 2) = 4, b_high = min(8 + 2, 8) = 8          -> 6
        (2.0, 6),   # over:  b_high = max(6, 4 + 2) = 6, b_low = 4 - 2 = 2                 -> 4
        (1.0, 4),   # hold:  b_high = 4 + 1 = 5, b_low = 4 - 1 = 3                         -> 4
        (2.0, 4),   # over:  b_high = max(4, 3 + 2) = 5, b_low = max(3 - 2, 1) = 1         -> 3
    ], retry_batches=3)
    assert limits == [6, 4, 4, 3] and (low, high, released) == (1.0, 5.0, 0)


def test_a_budget_the_smallest_batches_miss_releases_the_bin_then_retries():
    steps = [(2.0, 4), (2.0, 4),              # over, b_bar = 4 > b_min + alpha: b_high = max(4, 1 + 2) = 4,
                                              # b_low = max(1 - 2, 1) = 1                                  -> 2, 2
             (2.0, 3),                        # b_low = b_min and b_bar = 3 <= 1 + 2: release to [8 - 2, 8] -> 7
             (3.0, 7), (3.0, 7), (3.0, 7),    # released: over-budget feedback ignored 3 times             -> 7
             (3.0, 7)]                        # retry: b_high = max(7, 6 + 2) = 8, b_low = 6 - 2 = 4         -> 6
    limits, low, high, released = run_script(steps, retry_batches=3)
    assert limits == [2, 2, 7, 7, 7, 7, 6]
    assert (low, high, released) == (4.0, 8.0, 0)
    # Algorithm 2 without the release stays at its floor b_min + alpha/2 = 2 for ever: the seed's collapse
    # (the fourth step would give b_high = max(3, 1 + 2) = 3, b_low = 1 -> 2)


def test_a_release_ends_when_a_batch_meets_the_budget_and_can_last_for_ever():
    limits, low, high, released = run_script([(2.0, 4), (2.0, 3)] + [(3.0, 7)] * 5, retry_batches=0)
    assert limits == [2] + [7] * 6 and released == RELEASED_FOREVER
    # an under-budget batch hands control back: b_low = min(7, 8 - 2) = 6, b_high = min(8 + 2, 8) = 8 -> 7
    limits, low, high, released = run_script([(2.0, 4), (2.0, 3), (0.5, 7)], retry_batches=0)
    assert limits[-1] == 7 and released == 0 and (low, high) == (6.0, 8.0)


def test_sustained_overload_keeps_the_throughput_of_static_batching():
    # the case scaled down: 4,000 default requests replayed at 70 req/s, 1 GPU, K = 4, SLA 1 s.
    # The longest bin's batches miss the 1 s budget even at size 1; Algorithm 2 alone sank to batches of
    # about 3 there (93% of GPU time, 9 req/s overall against static_fifo's 14.8 at batch 32).
    trace = wb.load_trace(num_requests=4000)
    trace = trace.time_scaled(70 / trace.mean_rate_rps)
    cfg = wb.SimConfig(scheduler="multi_bin_dynamic", k_bins=4, d_sla_s=1.0, b_max=32, batch_size=32)
    dynamic = wb.simulate(trace, cfg)
    fifo = wb.simulate(trace, cfg.replace(scheduler="static_fifo"))
    assert dynamic.summary["throughput_rps"] >= fifo.summary["throughput_rps"]
    longest = dynamic.batches[dynamic.batches["bin"] == 3]
    assert longest["size"].mean() > 16
    # the same holds with the seed's memory (b_mem never binds there): the release alone does it
    from workbench.sim.memory import SEED_MEMORY
    seed = wb.simulate(trace, cfg.replace(**SEED_MEMORY))
    assert seed.summary["throughput_rps"] >= wb.simulate(trace, cfg.replace(scheduler="static_fifo", **SEED_MEMORY)
                                                         ).summary["throughput_rps"]
