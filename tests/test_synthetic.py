import numpy as np
import pandas as pd
import pytest

from workbench.traces import synthetic
from workbench.traces.synthetic import (BURSTGPT_TARGETS, GENERATOR_VERSION, compare_to_targets, synthetic_rows,
                                 synthetic_trace, trace_statistics)
from workbench.traces.trace import clear_memory_cache, load_trace


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(path))
        clear_memory_cache()
        yield path
        clear_memory_cache()


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows(seed=0)


@pytest.fixture(scope="module")
def default_trace(cache_dir):
    return load_trace()


def test_rows_look_like_burstgpt_1(rows):
    assert {k: v.dtype for k, v in rows.items()} == {
        "timestamp_s": np.int64, "model": np.int8, "log_type": np.int8,
        "request_tokens": np.int32, "response_tokens": np.int32}
    assert all(v.size == 1_429_737 for v in rows.values())
    assert np.all(np.diff(rows["timestamp_s"]) >= 0) and rows["timestamp_s"][0] >= 0
    assert rows["timestamp_s"][-1] < 61 * 86_400
    assert set(np.unique(rows["model"])) == {0, 1} and set(np.unique(rows["log_type"])) == {0, 1}
    assert rows["request_tokens"].min() >= 1


def test_default_seed_matches_every_published_statistic(rows):
    table = compare_to_targets(trace_statistics(rows))
    assert list(table["quantity"]) == list(BURSTGPT_TARGETS)
    assert table["passed"].all(), "\n" + table[~table["passed"]].to_string()


def test_a_modelling_error_fails_the_targets(rows):
    """Uniform arrivals (no diurnal profile, no day effect, no bursts) must not pass."""
    flat = dict(rows, timestamp_s=np.sort(np.random.default_rng(0).integers(0, 61 * 86_400, rows["timestamp_s"].size)))
    table = compare_to_targets(trace_statistics(flat)).set_index("quantity")
    failed = set(table.index[~table["passed"]])
    assert {"requests_per_hour_07h", "requests_per_hour_14h", "requests_per_day_cv", "gaps_over_1h"} <= failed
    assert table.loc["mean_request_tokens", "passed"]


def test_hourly_profile_passes_through_published_hours():
    for hour, value in synthetic.PUBLISHED_HOURLY_MEANS.items():
        assert synthetic.HOURLY_MEANS[hour] == pytest.approx(value)
    assert synthetic.HOURLY_MEANS.sum() == pytest.approx(1_429_737 / 61)
    assert synthetic.HOURLY_MEANS.min() > 0


def test_deterministic_per_seed():
    a, b, c = synthetic_rows(20_000, seed=1), synthetic_rows(20_000, seed=1), synthetic_rows(20_000, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["timestamp_s"], c["timestamp_s"])
    assert not np.array_equal(a["request_tokens"], c["request_tokens"])


@pytest.mark.parametrize("num_rows", [0, -5, 2.5])
def test_bad_num_rows(num_rows):
    with pytest.raises(ValueError, match="num_rows must be a positive integer"):
        synthetic_rows(num_rows)


def test_default_trace_is_labelled_synthetic_and_compact(default_trace, cache_dir):
    assert default_trace.is_synthetic and "synthetic" in default_trace.label
    assert default_trace.label == f"synthetic BurstGPT-like (seed 0, {len(default_trace):,} req)"
    assert default_trace.meta.generator["version"] == GENERATOR_VERSION
    assert default_trace.meta.rows_read == 1_429_737
    assert len(default_trace) + default_trace.meta.rows_dropped["failed (0 response tokens)"] == 1_429_737
    nbytes = sum(a.nbytes for a in (default_trace.arrival_s, default_trace.prompt_tokens, default_trace.output_tokens))
    assert nbytes <= 40e6
    # the default load (issue 20): BurstGPT's 0.271 req/s, without its failed rows, 10x faster
    assert default_trace.mean_rate_rps == pytest.approx(0.271 * 10 * (1 - 0.0178), rel=0.02)
    assert list(cache_dir.glob(f"synthetic-g{GENERATOR_VERSION}-*seed0.npz"))


def test_synthetic_trace_is_load_trace_none(default_trace):
    assert synthetic_trace() is default_trace
    other = synthetic_trace(1_000, seed=1)
    assert len(other) == 1_000 and other.fingerprint != default_trace.head(1_000).fingerprint


def test_load_options_apply_to_synthetic_rows_like_a_file(cache_dir, rows, tmp_path):
    """The first 20k synthetic rows written as a BurstGPT CSV load to the same arrays."""
    n = 20_000
    frame = pd.DataFrame({
        "Timestamp": rows["timestamp_s"][:n],
        "Model": np.array(synthetic.MODEL_NAMES)[rows["model"][:n]],
        "Request tokens": rows["request_tokens"][:n], "Response tokens": rows["response_tokens"][:n],
        "Total tokens": rows["request_tokens"][:n] + rows["response_tokens"][:n],
        "Log Type": np.array(synthetic.LOG_TYPE_NAMES)[rows["log_type"][:n]]})
    path = tmp_path / "BurstGPT_1.csv"
    frame.to_csv(path, index=False)
    options = dict(models="GPT-4", log_types="API log", rps_scaling=50.0)
    from_file = load_trace(path, **options)
    from_generator = load_trace(None, num_requests=len(from_file), **options)
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(from_file, name), getattr(from_generator, name))
    assert from_generator.meta.rows_dropped["model filter"] > 0


def test_statistics_of_a_trace(cache_dir):
    trace = load_trace(use_real_timestamps=True, drop_failed=False)
    stats = trace_statistics(trace)
    assert stats["num_requests"] == 1_429_737
    table = compare_to_targets(stats)
    assert set(table["quantity"]) == {"mean_rate_rps", "failure_share", "mean_request_tokens",
                                      "mean_response_tokens", "mean_total_tokens", "max_request_tokens",
                                      "max_response_tokens"}
    assert table["passed"].all(), "\n" + table.to_string()
    assert "failure_share" not in trace_statistics(load_trace(num_requests=1_000))
