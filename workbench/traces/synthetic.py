"""Synthetic BurstGPT-like trace: a stand-in for ``BurstGPT_1.csv`` when the real file is absent.

The generator produces raw, file-like rows (timestamps in whole seconds since
0:00 of day 0, Model, Log Type, request/response tokens, failures as 0 response
tokens), so ``load_trace`` applies its options to them exactly as to the real
file. Every constant comes from /work/shared/BURSTGPT_FACTS.md:

Arrivals (61 days, 1,429,737 rows, i.e. 0.271 req/s)
    load(day d, hour h) = day_weight[d] * HOURLY_MEANS[h]
    * ``HOURLY_MEANS``: the smoothest 24-h profile (least squared second
      differences, periodic) that passes exactly through the 8 published
      hour-of-day means and sums to the published mean per day (23,438).
      Plain interpolation would overshoot that sum by 10%: the unpublished
      hours must be lower, which the smooth fit puts in the late afternoon.
    * ``day_weight``: lognormal, sigma ``DAY_LOG_SIGMA`` = 0.96, taken at the
      61 mid-quantiles (a stratified sample) and shuffled by the seed. sigma
      follows from the published extremes being symmetric in log space
      (ln(max/median) = 2.34, ln(median/min) = 2.22 at z = +-2.4) and gives
      CV 1.10, three spike days of 80-150k requests, a quietest day near 1.5k.
      Stratifying makes the day-level statistics nearly seed-independent;
      the seed still decides which days are busy.
    * Idle windows: the real trace has 49 gaps over 1 h (longest 15,240 s)
      that no within-hour process produces, so ``IDLE_WINDOWS`` = 49 windows
      without arrivals, durations spread (exponential quantiles) from 1 h to
      ``IDLE_LONGEST_S``, start 02:00-08:00 (the night trough) on distinct days
      drawn with probability 1/day_weight. The hour-of-day totals are
      rescaled afterwards, so idle windows do not bend the published profile.
    * Counts per (day, hour) slot: one multinomial over all slots (exactly
      ``num_rows`` rows); within a slot's active interval the arrivals follow
      a Gamma renewal process with shape ``GAMMA_SHAPE`` = 0.3 (the BurstGPT
      demo uses 0.25-0.5), conditioned on the slot's count. Floored to 1 s.

Labels (independent of time): joint Model x Log Type shares ``LABEL_SHARES``
from the paper's rates (ChatGPT conversation 0.019 req/s, ChatGPT API 0.21 of
0.271) and the published marginals (ChatGPT 84.7%, API 89.6%); failures
Bernoulli ``FAILURE_SHARE`` = 1.78%.

Tokens
    * request: lognormal, sigma 1.3, mean 625 before truncation (about 621
      after), redrawn above the published max 29,665 (truncated, no spike).
    * response (median m, lognormal, redrawn above the max 7,315):
      conversation logs: the published U-shaped mean curve, 250 - 50 log10(r)
      below 100 request tokens, 150 up to 300, then linear to 450 at 2,000;
      sigma 1.0 (mean/median 1.65, matching median ~90 at mean ~150).
      ChatGPT API: bimodal, 40% short answers (median 10, sigma 0.5) and 60%
      long ones with median 80 + 0.1 r (sigma 0.6): the linear correlation.
      GPT-4 API: median 60 + 0.1 r, sigma 0.7.
      The API constants are tuned so that the non-failed mean is ~125
      (published 126) and the mean total ~740 (published ~734).
Not modelled: exact duplicate rows (2.9%), time-varying label mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from workbench.traces.trace import Trace

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever the rows for a seed change (invalidates the disk cache)

NUM_ROWS = 1_429_737  # BurstGPT_1.csv including failures
NUM_DAYS = 61
DAY_S = 86_400
HOUR_S = 3_600
MODEL_NAMES = ("ChatGPT", "GPT-4")  # codes 0, 1
LOG_TYPE_NAMES = ("Conversation log", "API log")  # codes 0, 1

PUBLISHED_HOURLY_MEANS = {7: 153, 4: 368, 10: 879, 0: 940, 23: 1026, 19: 1568, 12: 1744, 14: 1796}
DAY_LOG_SIGMA = 0.96
GAMMA_SHAPE = 0.3
IDLE_WINDOWS = 49
IDLE_LONGEST_S = 15_000  # the gap also includes the inter-arrival pieces on both sides
IDLE_START_HOURS = (2.0, 8.0)

LABEL_SHARES = {  # (model code, log type code) -> share of rows
    (0, 0): 0.070,  # ChatGPT conversation: 0.019 / 0.271
    (0, 1): 0.777,  # ChatGPT API: 0.847 - 0.070
    (1, 0): 0.034,  # GPT-4 conversation: 0.104 - 0.070
    (1, 1): 0.119,  # GPT-4 API: 0.896 - 0.777
}
FAILURE_SHARE = 0.0178
MAX_REQUEST_TOKENS = 29_665
MAX_RESPONSE_TOKENS = 7_315
REQUEST_MEAN_TOKENS = 625.0
REQUEST_LOG_SIGMA = 1.3
CONVERSATION_LOG_SIGMA = 1.0
API_SHORT_SHARE, API_SHORT_MEDIAN, API_SHORT_SIGMA = 0.4, 10.0, 0.5
API_CHATGPT_BASE, API_CHATGPT_SLOPE, API_CHATGPT_SIGMA = 80.0, 0.1, 0.6
API_GPT4_BASE, API_GPT4_SLOPE, API_GPT4_SIGMA = 60.0, 0.1, 0.7


def _smooth_hourly_profile() -> np.ndarray:
    """Smoothest periodic 24-h profile through the published hours, summing to the mean per day."""
    eye = np.eye(24)
    second_diff = eye - 2 * np.roll(eye, 1, axis=1) + np.roll(eye, 2, axis=1)
    hours = list(PUBLISHED_HOURLY_MEANS)
    constraints = np.vstack([eye[hours], np.ones(24)])
    values = np.r_[list(PUBLISHED_HOURLY_MEANS.values()), NUM_ROWS / NUM_DAYS]
    k = len(values)
    kkt = np.block([[2 * second_diff.T @ second_diff, constraints.T], [constraints, np.zeros((k, k))]])
    return np.linalg.solve(kkt, np.r_[np.zeros(24), values])[:24]


HOURLY_MEANS = _smooth_hourly_profile()


def synthetic_rows(num_rows: int = NUM_ROWS, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Raw file-like rows of the synthetic trace (see the module docstring for the model).

    Returns ``timestamp_s`` (int64, sorted), ``model`` and ``log_type`` (int8 codes
    into ``MODEL_NAMES`` / ``LOG_TYPE_NAMES``), ``request_tokens`` and
    ``response_tokens`` (int32, 0 = failed). ``num_rows`` rescales the load only.
    """
    if int(num_rows) != num_rows or num_rows < 1:
        raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
    num_rows = int(num_rows)
    started = time.perf_counter()
    # independent streams: changing one component leaves the others' draws intact
    arrival_rng, label_rng, token_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    timestamp_s = _arrival_times_s(num_rows, arrival_rng)
    model, log_type = _labels(num_rows, label_rng)
    request_tokens, response_tokens = _tokens(model, log_type, token_rng)
    logger.info("generated %d synthetic rows (seed %d) in %.2f s", num_rows, seed, time.perf_counter() - started)
    return {"timestamp_s": timestamp_s, "model": model, "log_type": log_type,
            "request_tokens": request_tokens, "response_tokens": response_tokens}


def _arrival_times_s(num_rows: int, rng: np.random.Generator) -> np.ndarray:
    quantiles = np.array([NormalDist().inv_cdf((i + 0.5) / NUM_DAYS) for i in range(NUM_DAYS)])
    day_weight = rng.permutation(np.exp(DAY_LOG_SIGMA * quantiles))
    load = day_weight[:, None] * HOURLY_MEANS[None, :]
    start_s, end_s = _active_intervals_s(day_weight, rng)
    active_load = load * (end_s - start_s) / HOUR_S
    active_load *= load.sum(axis=0) / active_load.sum(axis=0)
    counts = rng.multinomial(num_rows, (active_load / active_load.sum()).ravel())

    # Gamma renewal conditioned on the count: a slot with n arrivals gets n + 1
    # Gamma pieces whose partial sums, normalised by their total, place the arrivals.
    num_slots = counts.size
    pieces = counts + 1
    piece_end = np.cumsum(pieces)
    cumulative = np.cumsum(rng.gamma(GAMMA_SHAPE, size=piece_end[-1]))
    slot_base = np.r_[0.0, cumulative[piece_end[:-1] - 1]]
    slot_total = cumulative[piece_end - 1] - slot_base
    slot = np.repeat(np.arange(num_slots), pieces)
    fraction = (cumulative - slot_base[slot]) / slot_total[slot]
    is_arrival = np.ones(slot.size, dtype=bool)
    is_arrival[piece_end - 1] = False  # the last piece of each slot ends at the slot's end
    slot, fraction = slot[is_arrival], fraction[is_arrival]
    start, end = start_s.ravel(), end_s.ravel()
    arrival_s = slot * HOUR_S + start[slot] + fraction * (end[slot] - start[slot])
    return np.minimum(np.floor(arrival_s), NUM_DAYS * DAY_S - 1).astype(np.int64)


def _active_intervals_s(day_weight: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per (day, hour) slot, the [start, end) seconds within the hour outside idle windows."""
    start_s = np.zeros((NUM_DAYS, 24))
    end_s = np.full((NUM_DAYS, 24), float(HOUR_S))
    rank = np.arange(IDLE_WINDOWS)
    spread = np.log1p(-(rank + 0.5) / IDLE_WINDOWS) / np.log(0.5 / IDLE_WINDOWS)  # exponential quantiles, max 1
    duration_s = HOUR_S + (IDLE_LONGEST_S - HOUR_S) * spread
    inverse = 1 / day_weight
    days = rng.choice(NUM_DAYS, IDLE_WINDOWS, replace=False, p=inverse / inverse.sum())
    begin_s = rng.uniform(IDLE_START_HOURS[0] * HOUR_S, IDLE_START_HOURS[1] * HOUR_S, IDLE_WINDOWS)
    for day, begin, duration in zip(days, begin_s, duration_s):
        first, last = int(begin // HOUR_S), int((begin + duration) // HOUR_S)
        end_s[day, first] = begin - first * HOUR_S
        start_s[day, first + 1:last] = end_s[day, first + 1:last] = 0.0
        start_s[day, last] = begin + duration - last * HOUR_S
    return start_s, end_s


def _labels(num_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    combos = np.array(list(LABEL_SHARES), dtype=np.int8)
    shares = np.array(list(LABEL_SHARES.values()))
    pick = np.searchsorted(np.cumsum(shares) / shares.sum(), rng.random(num_rows), side="right")
    return combos[pick, 0], combos[pick, 1]


def _tokens(model: np.ndarray, log_type: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = model.size
    request_median = REQUEST_MEAN_TOKENS * np.exp(-REQUEST_LOG_SIGMA ** 2 / 2)
    request = _lognormal_at_most(rng, np.full(n, request_median), np.full(n, REQUEST_LOG_SIGMA), MAX_REQUEST_TOKENS)

    median, sigma = np.empty(n), np.empty(n)
    conv = log_type == 0
    r = request[conv].astype(np.float64)
    mean = np.where(r < 100, 250 - 50 * np.log10(r), np.where(r < 300, 150.0, 150 + (r - 300) * 300 / 1700))
    median[conv] = mean * np.exp(-CONVERSATION_LOG_SIGMA ** 2 / 2)
    sigma[conv] = CONVERSATION_LOG_SIGMA
    api_chatgpt = (log_type == 1) & (model == 0)
    short = rng.random(int(api_chatgpt.sum())) < API_SHORT_SHARE
    median[api_chatgpt] = np.where(short, API_SHORT_MEDIAN, API_CHATGPT_BASE + API_CHATGPT_SLOPE * request[api_chatgpt])
    sigma[api_chatgpt] = np.where(short, API_SHORT_SIGMA, API_CHATGPT_SIGMA)
    api_gpt4 = (log_type == 1) & (model == 1)
    median[api_gpt4] = API_GPT4_BASE + API_GPT4_SLOPE * request[api_gpt4]
    sigma[api_gpt4] = API_GPT4_SIGMA
    response = _lognormal_at_most(rng, median, sigma, MAX_RESPONSE_TOKENS)
    response[rng.random(n) < FAILURE_SHARE] = 0
    return request, response


def _lognormal_at_most(rng: np.random.Generator, median: np.ndarray, sigma: np.ndarray, upper: int) -> np.ndarray:
    """Whole-token lognormal draws >= 1, truncated at ``upper`` by redrawing (no spike at the cap)."""
    mu = np.log(median)
    x = rng.lognormal(mu, sigma)
    for _ in range(20):
        over = np.flatnonzero(x > upper)
        if over.size == 0:
            break
        x[over] = rng.lognormal(mu[over], sigma[over])
    return np.clip(np.ceil(x), 1, upper).astype(np.int32)


def synthetic_trace(num_requests: int | None = None, *, seed: int = 0, rps_scaling: float | None = None,
                    use_real_timestamps: bool = False, drop_failed: bool = True) -> Trace:
    """The synthetic BurstGPT-like trace; the same as ``load_trace(None, ...)`` (``rps_scaling=None``: its
    default, :data:`workbench.traces.trace.DEFAULT_RPS_SCALING`)."""
    from workbench.traces.trace import DEFAULT_RPS_SCALING, load_trace

    rps_scaling = DEFAULT_RPS_SCALING if rps_scaling is None else rps_scaling
    return load_trace(None, num_requests=num_requests, rps_scaling=rps_scaling,
                      use_real_timestamps=use_real_timestamps, drop_failed=drop_failed, seed=seed)


@dataclass(frozen=True)
class Target:
    """A published statistic of BurstGPT_1 and how close a generated trace must come."""

    value: float
    tolerance: float
    relative: bool  # tolerance is a fraction of ``value`` (else in the quantity's unit)
    why: str


_HOUR_WHY = "61-day average of one hour: ~1% noise; a flat or shifted profile misses by >30%"
BURSTGPT_TARGETS: dict[str, Target] = {
    "mean_rate_rps": Target(0.271, 0.01, True, "1.43M rows over the span; only the row count and span matter"),
    "span_days": Target(61.0, 0.1, False, "timestamps 5 to 5,269,973 s"),
    "failure_share": Target(0.0178, 0.001, False, "Bernoulli noise over 1.43M rows is 0.0001"),
    "chatgpt_share": Target(0.847, 0.005, False, "multinomial noise is 0.0003"),
    "api_share": Target(0.896, 0.005, False, "multinomial noise is 0.0003"),
    "mean_request_tokens": Target(621, 0.03, True, "heavy tail: the mean of 1.43M draws moves ~0.5%; 'about 621'"),
    "mean_response_tokens": Target(126, 0.03, True, "non-failed rows; 'about 126'"),
    "mean_total_tokens": Target(734, 0.03, True, "all rows; 'about 734' (621 + 126 would be 747)"),
    "max_request_tokens": Target(29_665, 0.02, True, "truncated at the published max; the sample max lands just below"),
    "max_response_tokens": Target(7_315, 0.02, True, "truncated at the published max; the sample max lands just below"),
    **{f"requests_per_hour_{h:02d}h": Target(v, 0.05, True, _HOUR_WHY)
       for h, v in sorted(PUBLISHED_HOURLY_MEANS.items())},
    "requests_per_day_min": Target(1_576, 0.15, True, "an extreme order statistic of 61 days"),
    "requests_per_day_median": Target(14_457, 0.10, True, "set by the lognormal sigma"),
    "requests_per_day_mean": Target(23_438, 0.02, True, "row count / 61 days"),
    "requests_per_day_max": Target(149_520, 0.10, True, "an extreme order statistic of 61 days"),
    "requests_per_day_cv": Target(1.13, 0.10, True, "dominated by the 3 spike days; no day effect gives ~0.1"),
    "longest_gap_s": Target(15_240, 0.15, True, "the longest idle window plus the inter-arrival pieces around it"),
    "gaps_over_1h": Target(49, 0.20, True, "the idle windows; a within-hour process alone gives 0-2"),
}


def trace_statistics(rows_or_trace: Mapping[str, np.ndarray] | Trace) -> dict[str, float]:
    """The ``BURSTGPT_TARGETS`` quantities measured on raw rows (all of them) or a ``Trace``.

    A ``Trace`` gives what its arrays allow: request count, mean rate on the
    trace's own clock (scaled unless loaded with ``use_real_timestamps``),
    token means and maxima, and the failure share if failures were kept.
    """
    if isinstance(rows_or_trace, Mapping):
        return _row_statistics(rows_or_trace)
    trace = rows_or_trace
    prompt = trace.prompt_tokens.astype(np.int64)
    output = trace.output_tokens.astype(np.int64)
    failed = output == 0
    stats = {"num_requests": len(trace), "mean_rate_rps": trace.mean_rate_rps,
             **_token_statistics(prompt, output, failed)}
    if not trace.meta.options.get("drop_failed", False):
        stats["failure_share"] = float(failed.mean())
    return stats


def _token_statistics(request: np.ndarray, response: np.ndarray, failed: np.ndarray) -> dict[str, float]:
    return {
        "mean_request_tokens": float(request.mean()),
        "mean_response_tokens": float(response[~failed].mean()),
        "mean_total_tokens": float((request + response).mean()),
        "max_request_tokens": int(request.max()),
        "max_response_tokens": int(response.max()),
    }


def _row_statistics(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    timestamp_s = np.sort(np.asarray(rows["timestamp_s"]))
    request = np.asarray(rows["request_tokens"], dtype=np.int64)
    response = np.asarray(rows["response_tokens"], dtype=np.int64)
    failed = response == 0
    span_s = float(timestamp_s[-1] - timestamp_s[0])
    day = (timestamp_s // DAY_S).astype(np.int64)
    num_days = int(day[-1]) + 1
    per_hour = np.bincount(((timestamp_s // HOUR_S) % 24).astype(np.int64), minlength=24) / num_days
    per_day = np.bincount(day, minlength=num_days)
    gaps_s = np.diff(timestamp_s)
    return {
        "num_requests": int(timestamp_s.size),
        "mean_rate_rps": timestamp_s.size / span_s if span_s > 0 else float("inf"),
        "span_days": span_s / DAY_S,
        "failure_share": float(failed.mean()),
        "chatgpt_share": float(np.mean(np.asarray(rows["model"]) == 0)),
        "api_share": float(np.mean(np.asarray(rows["log_type"]) == 1)),
        **_token_statistics(request, response, failed),
        **{f"requests_per_hour_{h:02d}h": float(per_hour[h]) for h in range(24)},
        "requests_per_day_min": int(per_day.min()),
        "requests_per_day_median": float(np.median(per_day)),
        "requests_per_day_mean": float(per_day.mean()),
        "requests_per_day_max": int(per_day.max()),
        "requests_per_day_cv": float(per_day.std() / per_day.mean()),
        "longest_gap_s": float(gaps_s.max()) if gaps_s.size else 0.0,
        "gaps_over_1h": int(np.sum(gaps_s > HOUR_S)),
    }


def compare_to_targets(stats: Mapping[str, float]) -> pd.DataFrame:
    """One row per target found in ``stats``: target, generated, errors, tolerance, passed."""
    records = []
    for quantity, target in BURSTGPT_TARGETS.items():
        if quantity not in stats:
            continue
        generated = float(stats[quantity])
        abs_error = generated - target.value
        rel_error = abs_error / target.value
        within = abs(rel_error) if target.relative else abs(abs_error)
        records.append({"quantity": quantity, "target": target.value, "generated": generated,
                        "rel_error": rel_error, "abs_error": abs_error, "tolerance": target.tolerance,
                        "tolerance_kind": "relative" if target.relative else "absolute",
                        "passed": bool(within <= target.tolerance)})
    return pd.DataFrame.from_records(records, columns=["quantity", "target", "generated", "rel_error", "abs_error",
                                                       "tolerance", "tolerance_kind", "passed"])
