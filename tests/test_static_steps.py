"""Static batches timed by a step-time model: the closed form against a step-by-step replay."""

import numpy as np
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.sim.static_steps import static_batch_time_s

MODEL = wb.StepTimeModel(prefill=(0.02, 1.5e-4, 1e-8), decode=(0.015, 2e-6, 4e-4),
                         decode_large=(0.012, 3e-6, 6e-4), decode_large_threshold=4)


def replay(model, prompts, outputs):
    """Step by step, as a static batch runs: one prefill, then lock-step decodes padded to the longest."""
    t = model.prefill_time_s(prompts)
    for k in range(1, max(outputs)):
        t += model.decode_time_s([p + k for p in prompts])
    return t


def test_one_request_by_hand():
    # prompt 100, output 3: prefill 0.02 + 0.015 + 1e-4 = 0.0351; decode steps at ctx 101 and 102:
    # 2 * (0.015 + 4e-4) + 2e-6 * (101 + 102) = 0.031206
    t = static_batch_time_s(MODEL.coefficients(), 1, 100.0, 1e4, 3.0)
    assert abs(t - (0.0351 + 0.031206)) < 1e-12


def test_single_token_outputs_are_prefill_only():
    t = static_batch_time_s(MODEL.coefficients(), 2, 30.0, 500.0, 1.0)
    assert abs(t - MODEL.prefill_time_s([10, 20])) < 1e-12


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 300)), min_size=1, max_size=12))
def test_closed_form_matches_the_replay(batch):
    prompts = [p for p, _ in batch]
    outputs = [o for _, o in batch]
    p = np.array(prompts, dtype=float)
    t = static_batch_time_s(MODEL.coefficients(), len(batch), p.sum(), (p * p).sum(), float(max(outputs)))
    expected = replay(MODEL, prompts, outputs)
    assert abs(t - expected) <= 1e-9 * expected
