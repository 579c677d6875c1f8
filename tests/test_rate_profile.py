"""Rate profiles (workbench.traces.rate_profile), replay over them, the synthetic day and the lifted size limit."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.traces import synthetic
from workbench.traces.rate_profile import RateProfile, replay_over_profile, source_intensity


# ------------------------------------------------------------------ the profile, by hand
def test_constant_profile_by_hand():
    p = RateProfile.constant(2.0, 10.0)
    assert p.total == 20.0 and p.mean_rate_rps == 2.0 and p.duration_s == 10.0
    assert p.cumulative([0, 2.5, 10, 12]) == pytest.approx([0, 5, 20, 20])
    assert p.inverse([0, 5, 20]) == pytest.approx([0, 2.5, 10])


def test_ramp_profile_by_hand():
    # lambda(t) = 2 t on [0, 2]: Lambda(t) = t^2, Lambda^-1(u) = sqrt(u)
    p = RateProfile.from_knots([0, 2], [0, 4])
    assert p.cumulative([0.5, 1, 2]) == pytest.approx([0.25, 1, 4])
    assert p.inverse([0.25, 2.25, 4]) == pytest.approx([0.5, 1.5, 2])
    assert p.rate_at([0, 1, 2]) == pytest.approx([0, 2, 4])
    # falling: lambda(t) = 4 - 2 t, Lambda(t) = 4 t - t^2; Lambda(1) = 3
    down = RateProfile.from_knots([0, 2], [4, 0])
    assert down.cumulative(1.0) == pytest.approx(3.0)
    assert down.inverse(3.0) == pytest.approx(1.0)
    assert down.inverse(4.0) == pytest.approx(2.0)


def test_step_and_zero_pieces_by_hand():
    step = RateProfile.from_knots([0, 1, 1, 3], [1, 1, 3, 3])   # 1/s for a second, then 3/s
    assert step.cumulative([1, 2, 3]) == pytest.approx([1, 4, 7])
    assert step.inverse([0.5, 2.5, 7]) == pytest.approx([0.5, 1.5, 3])
    assert step.rate_at([0.5, 1.0, 2.0]) == pytest.approx([1, 3, 3])   # right-continuous at the step
    gap = RateProfile.from_knots([0, 1, 2, 3], [1, 0, 0, 1])   # nothing arrives in [1, 2]
    assert gap.cumulative([1, 1.5, 2, 3]) == pytest.approx([0.5, 0.5, 0.5, 1.0])
    assert gap.inverse(0.5) == pytest.approx(1.0)   # the earliest time reaching it
    assert gap.inverse(0.5 + 1e-9) == pytest.approx(2.0, abs=1e-3)


def test_hourly_means_are_kept_exactly():
    means = np.r_[np.linspace(1, 5, 12), np.linspace(5, 1, 12)]
    for smooth in (True, False):
        p = RateProfile.from_hourly(means, smooth=smooth, days=2)
        assert p.duration_s == 2 * 86_400
        assert p.mean_rates(3600) == pytest.approx(np.tile(means, 2))
    flat = RateProfile.from_hourly(np.full(24, 3.0))
    assert flat.rates_rps == pytest.approx(np.full(flat.rates_rps.size, 3.0))
    # stepwise: the highest rate within each hour is the hour's own
    assert RateProfile.from_hourly(means, smooth=False).peak_rates(3600) == pytest.approx(means)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100), st.floats(0, 50)), min_size=1, max_size=8), st.floats(0.05, 50))
def test_inverse_undoes_cumulative(pieces, last_rate):
    """Property: Lambda is non-decreasing, Lambda^-1 is non-decreasing, and Lambda(Lambda^-1(u)) = u."""
    times = np.r_[0.0, np.cumsum([d for d, _ in pieces])]
    rates = np.r_[[r for _, r in pieces], last_rate]
    p = RateProfile.from_knots(times, rates)
    u = np.linspace(0, p.total, 257)
    t = p.inverse(u)
    assert np.all(np.diff(t) >= -1e-9 * p.duration_s)
    assert p.cumulative(t) == pytest.approx(u, rel=1e-7, abs=1e-7 * p.total)
    grid = np.linspace(0, p.duration_s, 101)
    assert np.all(np.diff(p.cumulative(grid)) >= -1e-9 * p.total)


@pytest.mark.parametrize("times, rates, match", [
    ([], [], "times_s: empty; a rate profile needs at least two knots, e.g. RateProfile.constant"),
    ([0, 1], [], "rates_rps: empty"),
    ([0, 1], [1, -1], r"rates_rps\[1\] = -1 is negative: an arrival rate is >= 0 \(0 for a pause\); correct it$"),
    ([0, 1, 2], [1, -1, -3], r"rates_rps\[1\] = -1 is negative: .* \(2 negative values in all\)"),
    ([-1, 1], [1, 1], r"times_s\[0\] = -1 is negative: a knot's time is seconds from the profile's start"),
    ([0, 1], [1, 2, 3], r"rates_rps: 3 rates for 2 knot times \(times_s\); give one rate per knot"),
    ([0, 2, 1], [1, 1, 1], "before"),
    ([1, 2], [1, 1], "starts at 0"),
    ([0, 1], [0, 0], "every rate is 0"),
    ([0], [1], "at least two knots"),
    ([0, 1], [1, np.nan], "not finite"),
    ([0, 0], [1, 1], "lasts 0 s"),
])
def test_bad_profiles_are_refused(times, rates, match):
    with pytest.raises(ValueError, match=match):
        RateProfile.from_knots(times, rates)


def test_bad_hourly_profiles_are_refused():
    with pytest.raises(ValueError, match="hourly_rps: must have 24 values, one mean rate .* per hour of the day from "
                                         "00:00, got 23$"):
        RateProfile.from_hourly(np.ones(23))
    with pytest.raises(ValueError, match=r"hourly_rps: must have 24 values, .*got 0 \(empty\)"):
        RateProfile.from_hourly([])
    with pytest.raises(ValueError, match=r"hourly_rps\[0\] = -1 is negative: an hour's mean arrival rate is >= 0"):
        RateProfile.from_hourly(np.r_[-1.0, np.ones(23)])
    with pytest.raises(ValueError, match="hourly_rps: must be 1-D"):
        RateProfile.from_hourly(np.ones((2, 24)))
    with pytest.raises(ValueError, match="every hour's rate is 0"):
        RateProfile.from_hourly(np.zeros(24))
    sharp = np.r_[100.0, np.zeros(23)]   # one busy hour: linear pieces through it would dip below 0
    with pytest.raises(ValueError, match="smooth=False"):
        RateProfile.from_hourly(sharp)
    assert RateProfile.from_hourly(sharp, smooth=False).mean_rates(3600) == pytest.approx(sharp / 1.0)
    with pytest.raises(ValueError, match="rate_rps"):
        RateProfile.constant(-1, 10)


# ------------------------------------------------------------------ replay
def _trace(arrival_s, seed=0):
    rng = np.random.default_rng(seed)
    n = len(arrival_s)
    return wb.Trace.from_arrays(arrival_s, rng.integers(1, 500, n), rng.integers(1, 200, n))


def test_replay_on_a_constant_profile_rescales_time_linearly():
    trace = _trace([0.0, 1.0, 1.0, 3.0, 10.0])
    out = replay_over_profile(trace, RateProfile.constant(1.0, 100.0))
    assert out.arrival_s == pytest.approx([0, 10, 10, 30, 100])
    assert np.array_equal(out.prompt_tokens, trace.prompt_tokens)
    assert np.array_equal(out.output_tokens, trace.output_tokens)
    assert out.meta.options["rate_profile"].startswith("constant")
    assert "over constant" in out.label


def test_replay_follows_the_profile():
    """A Poisson stream replayed over the published day: each hour's count is the profile's, within 4 sigma."""
    rng = np.random.default_rng(1)
    n = 400_000
    trace = _trace(np.cumsum(rng.exponential(1.0, n)) - 1.0)
    profile = synthetic.daily_profile()
    out = replay_over_profile(trace, profile)
    assert out.arrival_s[-1] == pytest.approx(86_400)
    counts = np.bincount(np.minimum(out.arrival_s // 3600, 23).astype(int), minlength=24)
    expected = profile.with_total(n).mean_rates(3600) * 3600
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 2), (counts, expected)
    # time-rescaling back: the gaps are unit exponentials again (their mean and squared CV)
    back = profile.with_total(n).cumulative(out.arrival_s)
    gaps = np.diff(back)
    assert gaps.mean() == pytest.approx(1.0, rel=0.01)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1.0, rel=0.03)


def test_source_window_removes_the_traces_own_swings():
    rng = np.random.default_rng(2)
    slow = np.cumsum(rng.exponential(1.0, 20_000))            # 1 request/s ...
    fast = slow[-1] + np.cumsum(rng.exponential(0.1, 20_000))  # ... then 10/s
    trace = _trace(np.r_[slow, fast] - slow[0])
    flat = RateProfile.constant(1.0, 1000.0)
    kept = replay_over_profile(trace, flat)                    # the swing is carried over
    removed = replay_over_profile(trace, flat, source_window_s=500.0)
    half = lambda t: np.count_nonzero(t < 500.0) / t.size     # noqa: E731
    # kept: time is rescaled linearly, so the first 500 s hold the slow part's first 11,000 s: ~11,000 requests
    assert half(kept.arrival_s) == pytest.approx(11_000 / 40_000, abs=0.02)
    assert half(removed.arrival_s) == pytest.approx(0.5, abs=0.02)
    assert np.all(np.diff(removed.arrival_s) >= 0)


def test_source_intensity_by_hand():
    assert source_intensity(np.array([0.0, 1.0, 4.0]), None) == pytest.approx([0, 0.75, 3])
    # windows of 2 s over the span [0, 4]: counts 2 (t=0, 1) and 1 (t=4, the span's end); linear within each
    assert source_intensity(np.array([0.0, 1.0, 4.0]), 2.0) == pytest.approx([0, 1, 3])
    # a last window cut short by the trace's end spreads its arrivals over what there is of it: [2, 3] here
    assert source_intensity(np.array([0.0, 1.0, 3.0]), 2.0) == pytest.approx([0, 1, 3])
    assert source_intensity(np.array([0.0, 1.0, 2.5, 3.0]), 2.0) == pytest.approx([0, 1, 3, 4])


def test_replay_refuses_bad_input():
    trace = _trace([0.0, 1.0])
    with pytest.raises(TypeError, match="RateProfile"):
        replay_over_profile(trace, [1, 2, 3])
    with pytest.raises(TypeError, match="Trace"):
        replay_over_profile(np.arange(3), RateProfile.constant(1, 1))
    with pytest.raises(ValueError, match="source_window_s"):
        replay_over_profile(trace, RateProfile.constant(1, 1), source_window_s=-5)


# ------------------------------------------------------------------ the synthetic day and the size limit
def test_daily_profile_is_burstgpts_day():
    p = synthetic.daily_profile(1.0)
    hourly = p.mean_rates(3600)
    assert hourly == pytest.approx(synthetic.HOURLY_MEANS / synthetic.HOURLY_MEANS.mean())
    assert hourly.max() / hourly.min() == pytest.approx(14.945, rel=1e-3)
    assert int(np.argmax(hourly)) == 13 and int(np.argmin(hourly)) == 6
    soft = synthetic.daily_profile(2.0, peak_to_trough=3.0)
    hourly = soft.mean_rates(3600)
    assert hourly.max() / hourly.min() == pytest.approx(3.0)
    assert soft.mean_rate_rps == pytest.approx(2.0)
    assert int(np.argmax(hourly)) == 13 and int(np.argmin(hourly)) == 6   # the hours keep their order
    with pytest.raises(ValueError, match="peak_to_trough"):
        synthetic.daily_profile(1.0, peak_to_trough=0.5)
    with pytest.raises(ValueError, match="mean_rate_rps"):
        synthetic.daily_profile(-1.0)


def test_day_trace_follows_the_day_and_keeps_the_requests():
    n = 200_000
    day = synthetic.day_trace(n, seed=0)
    first = wb.load_trace(num_requests=n, use_real_timestamps=True)
    assert len(day) == n and day.is_synthetic and "synthetic" in day.label
    assert np.array_equal(day.prompt_tokens, first.prompt_tokens)
    assert np.array_equal(day.output_tokens, first.output_tokens)
    assert day.arrival_s[-1] == pytest.approx(86_400)
    counts = np.bincount(np.minimum(day.arrival_s // 3600, 23).astype(int), minlength=24)
    expected = synthetic.daily_profile(n / 86_400).mean_rates(3600) * 3600
    # bursty within the hour (Gamma renewal): looser than Poisson, still the day's shape to ~10%
    assert np.all(np.abs(counts / expected - 1) < 0.1), counts / expected
    assert np.corrcoef(counts, expected)[0, 1] > 0.99
    # and minute by minute no spike: the last minutes of the day carry the profile's rate, not a pile-up
    per_minute = np.bincount(np.minimum(day.arrival_s // 60, 1439).astype(int), minlength=1440)
    rate = synthetic.daily_profile(n / 86_400).rate_at(np.arange(1440) * 60 + 30) * 60
    assert per_minute[-10:].sum() < 2 * rate[-10:].sum()


def test_more_requests_than_burstgpt_1_has():
    """The synthetic trace grows by further 61-day periods; its first 1.4 million requests do not change."""
    one_period = wb.load_trace()   # 1,429,737 rows less the failed ones (1.78%)
    assert 1_400_000 < len(one_period) < 1_410_000 and "periods" not in one_period.meta.generator
    with warnings.catch_warnings():
        warnings.simplefilter("error", wb.TraceSizeWarning)
        more = wb.load_trace(num_requests=1_500_000)
    assert len(more) == 1_500_000 and more.meta.generator["periods"] == 2
    k = len(one_period)
    assert np.array_equal(more.arrival_s[:k], one_period.arrival_s)
    assert np.array_equal(more.prompt_tokens[:k], one_period.prompt_tokens)
    # the second period starts after the first's 61 days (times / 200 by default)
    assert more.arrival_s[k] >= 61 * 86_400 / 200 - 1
    second = synthetic.synthetic_rows(seed=0, period=1)
    assert second["timestamp_s"][0] >= 61 * 86_400
    assert not np.array_equal(second["request_tokens"][:1000], synthetic.synthetic_rows(seed=0)["request_tokens"][:1000])
