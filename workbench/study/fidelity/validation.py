"""Fidelity checks: the simulator against queueing theory and the papers' closed forms.

Each ``check_*`` function runs one case of the validation report and returns a
:class:`CaseResult`: table rows (one per checked quantity) and the data the
notebook plots.  :func:`run_validation` runs them all and returns the table.

Columns of the table: ``case``, ``quantity``, ``theory`` (the closed form,
the exact count, the bound or the published target), ``simulated``,
``rel_error`` = (simulated - theory) / |theory|, ``abs_error``, ``tolerance``
and ``tolerance_kind`` (``relative``, ``absolute`` or ``upper bound``),
``passed``, ``n_requests`` (per run), ``runs``, ``stderr`` (standard error of
``simulated``, same unit) and a ``note``.

How statistical tolerances are set: where a quantity is a long-run mean of a
correlated sequence (queueing delays), the first ``WARMUP_FRACTION`` of the
requests of every run are discarded (the system starts empty), the rest of
each run is cut into ``BATCH_MEANS`` contiguous batches, and the standard
error comes from the batch means of all runs.  The tolerance is then
``max(stated floor, Z_TOLERANCE standard errors)``: the floor is what a
modelling error would exceed, and the standard-error term keeps a check from
failing by chance at small sizes.  Both are written in the table.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.memory import SEED_MEMORY
from workbench.study.store.folders import NotebookParams
from workbench.sim.metrics import STATUS_COMPLETED, littles_law
from workbench.sim.simulate import SimResult, simulate
from workbench.study.store.files import write_csv_atomic
from workbench.traces.trace import Trace

log = logging.getLogger(__name__)

WARMUP_FRACTION = 0.1   # share of each run's requests discarded before mean delays are taken
BATCH_MEANS = 10        # contiguous batches per run for the standard error
Z_TOLERANCE = 3.0       # standard errors a statistical tolerance allows (about 99.7% two-sided)
LITTLE_TOLERANCE = 1e-9  # Little's law on a drained run is an identity of the record: only rounding is allowed
DEFAULT_REQUESTS = 3_000_000  # per queueing run at the default size (the notebook's n_requests)
DEFAULT_SEEDS = 5

COLUMNS = ("case", "quantity", "theory", "simulated", "rel_error", "abs_error", "tolerance", "tolerance_kind",
           "passed", "n_requests", "runs", "stderr", "note")

CASE_MD1 = "1 M/D/1"
CASE_MMC = "2 M/M/c (Erlang C)"
CASE_LITTLE = "3 Little's law"
CASE_MBB = "4 Multi-Bin Batching"
CASE_MECHANICS = "5 memory and SLA"
CASE_TRACE = "6 synthetic BurstGPT"
CASES = (CASE_MD1, CASE_MMC, CASE_LITTLE, CASE_MBB, CASE_MECHANICS, CASE_TRACE)


# ---------------------------------------------------------------- closed forms

def md1_wait_s(arrival_rate: float, service_s: float) -> float:
    """Mean wait in queue of M/D/1 (Pollaczek-Khinchine): rho s / (2 (1 - rho))."""
    rho = arrival_rate * service_s
    if not 0 <= rho < 1:
        raise ValueError(f"M/D/1 needs 0 <= rho < 1, got rho = {rho!r}")
    return rho * service_s / (2.0 * (1.0 - rho))


def erlang_c(num_servers: int, offered_load: float) -> float:
    """Probability of waiting in M/M/c, offered load a = lambda / mu (Erlang C formula)."""
    c = int(num_servers)
    if c < 1 or not 0 <= offered_load < c:
        raise ValueError(f"Erlang C needs c >= 1 and 0 <= a < c, got c = {num_servers!r}, a = {offered_load!r}")
    # Erlang B by its stable recursion, then C = B / (1 - rho (1 - B))
    erlang_b = 1.0
    for j in range(1, c + 1):
        erlang_b = offered_load * erlang_b / (j + offered_load * erlang_b)
    rho = offered_load / c
    return erlang_b / (1.0 - rho * (1.0 - erlang_b))


def mmc_wait_s(arrival_rate: float, service_rate: float, num_servers: int) -> float:
    """Mean wait in queue of M/M/c: C(c, a) / (c mu - lambda)."""
    return erlang_c(num_servers, arrival_rate / service_rate) / (num_servers * service_rate - arrival_rate)


def mbb_expected_batch_tokens(l_min: float, l_max: float, batch_size: int, k_bins: float) -> float:
    """Multi-Bin Batching, Theorem 4.2: expected longest length of a batch with ``k_bins`` equal-mass bins.

    Lengths uniform on [l_min, l_max]; bin i is [l_{i-1}, l_i) with width
    w = (l_max - l_min) / k.  Inside a bin the B lengths are uniform on the bin,
    and the maximum of B uniforms sits at B/(B+1) of the width, so a bin's
    batches cost l_{i-1} + B/(B+1) w; every bin serves the same share 1/k of
    the requests.  Averaging the lower edges gives
    (l_max + l_min)/2 - w/2, hence
    E = (l_max + l_min)/2 + w (B/(B+1) - 1/2).  ``k_bins = inf`` gives the limit.
    """
    width = (l_max - l_min) / k_bins
    return (l_max + l_min) / 2.0 + width * (batch_size / (batch_size + 1.0) - 0.5)


def mbb_throughput_rps(l_min: float, l_max: float, batch_size: int, k_bins: float, per_token_s: float) -> float:
    """Proposition 4.1 with Theorem 4.2: B / E[t_service], service = per_token_s x longest length."""
    return batch_size / (per_token_s * mbb_expected_batch_tokens(l_min, l_max, batch_size, k_bins))


def discrete_uniform_expected_max(low: int, high: int, batch_size: int) -> float:
    """Exact E[max] of ``batch_size`` i.i.d. integers uniform on {low, ..., high}."""
    m = high - low + 1
    below = np.arange(1, m, dtype=np.float64) / m          # P(X < low + j) for j = 1..m-1
    return float(high - np.sum(below ** batch_size))


def mbb_expected_batch_tokens_discrete(l_min: int, l_max: int, batch_size: int, k_bins: int) -> float:
    """The Theorem 4.2 quantity for integer lengths on {l_min..l_max} when k divides the count of values."""
    values = l_max - l_min + 1
    if values % k_bins:
        raise ValueError(f"{values} integer lengths cannot be split into {k_bins} bins of equal mass")
    m = values // k_bins
    return float(np.mean([discrete_uniform_expected_max(l_min + i * m, l_min + (i + 1) * m - 1, batch_size)
                          for i in range(k_bins)]))


def sla_controller_ceiling(b_max: int, alpha: int) -> int:
    """Fixed point of Algorithm 2 when every batch is under budget.

    The under-budget branch keeps ``b_low <= b_high - alpha`` with ``b_high``
    capped at ``b_max``, so ``b_sla = floor((b_low + b_high) / 2)`` settles at
    ``b_max - ceil(alpha / 2)``, not at ``b_max``.
    """
    return (2 * b_max - alpha) // 2


def sla_controller_floor(b_min: int, alpha: int) -> int:
    """Smallest limit of Algorithm 2 (``b_low = b_min``, ``b_high = b_min + alpha``): ``b_min + floor(alpha / 2)``.

    Algorithm 2 alone settles there when every batch is over budget; the
    workbench's controller releases the bin once batches of that size still
    miss (see :mod:`workbench.sim.controllers`)."""
    return (2 * b_min + alpha) // 2


# ---------------------------------------------------------------- scenario builders

def case_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream for (seed, case, configuration, replicate): no shared draws between checks."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


def poisson_arrivals_s(rate_rps: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Poisson arrival times at ``rate_rps``, the first at 0."""
    arrival_s = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    return arrival_s - arrival_s[0]


def geometric_tokens(mean_tokens: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths on {1, 2, ...} with the given mean: the discrete counterpart of an exponential."""
    return rng.geometric(1.0 / mean_tokens, n)


def stratified_uniform_tokens(l_min: int, l_max: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Every integer of {l_min..l_max} equally often (``n`` rounded up to a whole number of copies), shuffled.

    An exactly uniform sample: equal-mass bins then fall on the exact value
    boundaries and hold equal counts, so sampling noise in the bin edges and
    in the bins' sizes does not blur a throughput comparison.
    """
    values = np.arange(l_min, l_max + 1)
    copies = max(1, -(-n // values.size))
    return rng.permutation(np.tile(values, copies))


def make_trace(arrival_s, output_tokens, prompt_tokens=None, *, source: str) -> Trace:
    """A validation scenario as a workbench ``Trace`` (prompt tokens default to 0)."""
    output_tokens = np.asarray(output_tokens)
    if prompt_tokens is None:
        prompt_tokens = np.zeros(output_tokens.size, np.int32)
    return Trace.from_arrays(arrival_s, prompt_tokens, output_tokens, source=f"validation: {source}")


# ---------------------------------------------------------------- rows and statistics

@dataclass
class CaseResult:
    """Rows of one case (a DataFrame with ``COLUMNS``) and what its plots need."""

    rows: pd.DataFrame
    data: dict = field(default_factory=dict)


def _row(case: str, quantity: str, theory: float, simulated: float, tolerance: float, kind: str = "relative", *,
         n_requests: int = 0, runs: int = 1, stderr: float = float("nan"), note: str = "") -> dict:
    theory, simulated = float(theory), float(simulated)
    abs_error = simulated - theory
    rel_error = abs_error / abs(theory) if theory != 0 else float("nan")
    if kind == "relative":
        passed = abs(rel_error) <= tolerance
    elif kind == "absolute":
        passed = abs(abs_error) <= tolerance
    elif kind == "upper bound":
        passed = simulated <= theory + tolerance
    else:
        raise ValueError(f"unknown tolerance kind {kind!r}")
    return {"case": case, "quantity": quantity, "theory": theory, "simulated": simulated, "rel_error": rel_error,
            "abs_error": abs_error, "tolerance": float(tolerance), "tolerance_kind": kind, "passed": bool(passed),
            "n_requests": int(n_requests), "runs": int(runs), "stderr": float(stderr), "note": note}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS))


def batch_means_estimate(samples_per_run: list[np.ndarray], batches: int = BATCH_MEANS) -> tuple[float, float]:
    """Mean of all samples and its standard error from ``batches`` contiguous batch means per run."""
    means = [chunk.mean() for s in samples_per_run for chunk in np.array_split(np.asarray(s, float), batches)]
    pooled = float(np.mean(np.concatenate([np.asarray(s, float) for s in samples_per_run])))
    stderr = float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")
    return pooled, stderr


def _seed_estimate(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, float)
    stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), stderr


def statistical_tolerance(floor: float, stderr: float, theory: float) -> float:
    """``max(floor, Z_TOLERANCE x relative standard error)``."""
    if not math.isfinite(stderr):
        return floor
    return max(floor, Z_TOLERANCE * stderr / abs(theory))


def _tolerance_note(floor: float, stderr: float, theory: float) -> str:
    se_rel = stderr / abs(theory) if math.isfinite(stderr) else float("nan")
    return f"tolerance = max({floor:.1%}, {Z_TOLERANCE:g} x SE {se_rel:.3%})"


def _after_warmup(values: np.ndarray) -> np.ndarray:
    return values[int(WARMUP_FRACTION * values.size):]


class _LittleLedger:
    """Little's law on every run of a case; the row reports the run with the largest error."""

    def __init__(self, label: str):
        self.label = label
        self.runs = 0
        self.worst: tuple[float, float, float] | None = None
        self.n_requests = 0

    def add(self, res: SimResult) -> None:
        done = res.status == STATUS_COMPLETED
        check = littles_law(res.arrival_s, res.finish_s, done)
        error = abs(check["L"] - check["lambda_W"]) / check["lambda_W"]
        self.runs += 1
        self.n_requests = max(self.n_requests, int(res.arrival_s.size))
        if self.worst is None or error > self.worst[0]:
            self.worst = (error, check["lambda_W"], check["L"])

    def row(self) -> dict:
        _, lambda_w, time_average = self.worst
        return _row(CASE_LITTLE, f"L = lambda W: {self.label}", lambda_w, time_average, LITTLE_TOLERANCE,
                    n_requests=self.n_requests, runs=self.runs,
                    note=f"time-average of N(t) from an event sweep vs lambda x mean time in system, both from "
                         "the same per-request record: a bookkeeping check (every request counted once, finish >= "
                         "arrival), not a fidelity check; the utilisation rows and cases 1-2 test the times; "
                         f"worst of {self.runs} runs shown")


# ---------------------------------------------------------------- run sizes

def _check_sizes(n_requests: int, seeds: int = 1) -> None:
    checks.integer(n_requests, "n_requests", low=1_000, high=10**9)
    checks.integer(seeds, "seeds", low=1, high=1_000)


def multi_bin_requests(n_requests: int) -> int:
    """Requests per case-4 run: a quarter of the queueing runs' size (saturated throughput converges fast)."""
    return max(int(n_requests) // 4, 4_096)


def mechanics_requests(n_requests: int) -> int:
    """Requests per case-5 run: a fifth of the queueing runs' size (one run per setting, no seeds)."""
    return max(int(n_requests) // 5, 10_000)


# ---------------------------------------------------------------- case 1: M/D/1

def check_md1(n_requests: int = DEFAULT_REQUESTS, seeds: int = DEFAULT_SEEDS, seed: int = 42,
              loads: tuple[float, ...] = (0.5, 0.8, 0.9), service_s: float = 1.0,
              floor: float = 0.02) -> CaseResult:
    """One GPU, batch size 1, Poisson arrivals, deterministic service: mean wait vs Pollaczek-Khinchine.

    Also returns Little's law rows and the GPU utilisation (Little's law at the
    server: the mean number in service is lambda x s = rho).
    """
    _check_sizes(n_requests, seeds)
    latency = LatencyModel(base_s=service_s, per_token_s=0.0, batch_penalty=0.0)
    cfg = SimConfig(scheduler="static_fifo", num_gpus=1, batch_size=1, seed=seed)
    rows, little, curves = [], _LittleLedger("M/D/1 runs"), []
    for i, rho in enumerate(loads):
        rate = rho / service_s
        waits, utilisation = [], []
        for r in range(seeds):
            rng = case_rng(seed, 1, i, r)
            trace = make_trace(poisson_arrivals_s(rate, n_requests, rng), np.ones(n_requests, np.int32),
                               source=f"M/D/1 rho={rho} run {r}")
            res = simulate(trace, cfg, latency=latency)
            waits.append(_after_warmup(res.start_s - res.arrival_s))
            utilisation.append(res.summary["gpu_utilization_mean"])
            little.add(res)
        theory = md1_wait_s(rate, service_s)
        mean, stderr = batch_means_estimate(waits)
        rows.append(_row(CASE_MD1, f"mean wait in queue, rho={rho}", theory, mean,
                         statistical_tolerance(floor, stderr, theory), n_requests=n_requests, runs=seeds,
                         stderr=stderr, note=_tolerance_note(floor, stderr, theory)
                         + f"; first {WARMUP_FRACTION:.0%} of each run discarded; service {service_s:g} s"))
        util, util_se = _seed_estimate(utilisation)
        rows.append(_row(CASE_LITTLE, f"GPU utilisation = lambda E[S] (M/D/1, rho={rho})", rho, util,
                         statistical_tolerance(0.01, util_se, rho), n_requests=n_requests, runs=seeds,
                         stderr=util_se, note="Little's law at the server: mean number in service; "
                         + _tolerance_note(0.01, util_se, rho)))
        curves.append({"rho": rho, "theory_s": theory, "simulated_s": mean, "stderr_s": stderr})
    rows.append(little.row())
    return CaseResult(_frame(rows), {"points": pd.DataFrame(curves), "service_s": service_s})


# ---------------------------------------------------------------- case 2: M/M/c

def check_mmc(n_requests: int = DEFAULT_REQUESTS, seeds: int = DEFAULT_SEEDS, seed: int = 42,
              servers: tuple[int, ...] = (2, 4, 16), load: float = 0.9, mean_tokens: int = 1000,
              mean_service_s: float = 1.0, floor_wait: float = 0.02, floor_p_wait: float = 0.01) -> CaseResult:
    """Several GPUs, batch size 1, service linear in geometric output lengths: wait and P(wait) vs Erlang C.

    A geometric length with mean m has squared coefficient of variation
    1 - 1/m, so with m = 1000 the service law is exponential to 0.1%; the
    M/G/c correction (about (1 + SCV)/2 on the mean wait) is -0.05%.
    """
    _check_sizes(n_requests, seeds)
    latency = LatencyModel(base_s=0.0, per_token_s=mean_service_s / mean_tokens, batch_penalty=0.0)
    mu = 1.0 / mean_service_s
    rows, little = [], _LittleLedger("M/M/c runs")
    for i, c in enumerate(servers):
        rate = load * c * mu
        cfg = SimConfig(scheduler="static_fifo", num_gpus=c, batch_size=1, seed=seed)
        waits, waited, utilisation = [], [], []
        for r in range(seeds):
            rng = case_rng(seed, 2, i, r)
            arrival_s = poisson_arrivals_s(rate, n_requests, rng)
            trace = make_trace(arrival_s, geometric_tokens(mean_tokens, n_requests, rng),
                               source=f"M/M/{c} rho={load} run {r}")
            res = simulate(trace, cfg, latency=latency)
            wait = _after_warmup(res.start_s - res.arrival_s)
            waits.append(wait)
            waited.append(wait > 0)
            utilisation.append(res.summary["gpu_utilization_mean"])
            little.add(res)
        wq = mmc_wait_s(rate, mu, c)
        mean, stderr = batch_means_estimate(waits)
        rows.append(_row(CASE_MMC, f"mean wait in queue, c={c}, rho={load}", wq, mean,
                         statistical_tolerance(floor_wait, stderr, wq), n_requests=n_requests, runs=seeds,
                         stderr=stderr, note=_tolerance_note(floor_wait, stderr, wq)
                         + f"; first {WARMUP_FRACTION:.0%} discarded; E[S] = {mean_service_s:g} s"))
        p_wait = erlang_c(c, rate / mu)
        share, share_se = batch_means_estimate(waited)
        rows.append(_row(CASE_MMC, f"P(wait), c={c}, rho={load}", p_wait, share,
                         statistical_tolerance(floor_p_wait, share_se, p_wait), n_requests=n_requests, runs=seeds,
                         stderr=share_se, note=_tolerance_note(floor_p_wait, share_se, p_wait)
                         + "; share of requests that start after they arrive"))
        util, util_se = _seed_estimate(utilisation)
        rows.append(_row(CASE_LITTLE, f"GPU utilisation = lambda E[S] / c (M/M/{c}, rho={load})", load, util,
                         statistical_tolerance(0.01, util_se, load), n_requests=n_requests, runs=seeds,
                         stderr=util_se, note="Little's law at the servers: mean busy GPUs / c; "
                         + _tolerance_note(0.01, util_se, load)))
    rows.append(little.row())
    return CaseResult(_frame(rows))


# ---------------------------------------------------------------- case 4: Multi-Bin Batching

def check_multi_bin(n_requests: int = DEFAULT_REQUESTS // 4, seeds: int = DEFAULT_SEEDS, seed: int = 42,
                    k_values: tuple[int, ...] = (1, 2, 4, 8, 16), batch_size: int = 16,
                    l_min: int = 100, l_max: int = 1123, per_token_s: float = 1e-3,
                    floor: float = 0.005) -> CaseResult:
    """Saturated ``multi_bin_fixed`` (all requests at t = 0, one GPU, oracle lengths) vs Theorem 4.2.

    Throughput = completed / makespan against B / (c E[longest]); the k -> inf
    row extrapolates the simulated 1/throughput, which Theorem 4.2 makes linear
    in 1/k, to 1/k = 0.  Integer lengths: {100..1123} has 1024 values, so the
    exact discrete expectation is within 0.05% of the closed form (in the note).
    Lengths come from :func:`stratified_uniform_tokens`, so every bin holds
    whole batches; batches are still random draws from their bin.
    """
    _check_sizes(n_requests, seeds)
    latency = LatencyModel(base_s=0.0, per_token_s=per_token_s, batch_penalty=0.0)
    rows, little, points = [], _LittleLedger("Multi-Bin Batching runs"), []
    for i, k in enumerate(k_values):
        cfg = SimConfig(scheduler="multi_bin_fixed", num_gpus=1, batch_size=batch_size, k_bins=k,
                        predictor="oracle", seed=seed)
        throughput, partial = [], []
        for r in range(seeds):
            rng = case_rng(seed, 4, i, r)
            lengths = stratified_uniform_tokens(l_min, l_max, n_requests, rng)
            trace = make_trace(np.zeros(lengths.size), lengths, source=f"saturated uniform k={k} run {r}")
            res = simulate(trace, cfg, latency=latency)
            throughput.append(res.summary["throughput_rps"])
            partial.append(int(np.count_nonzero(res.batches["size"].to_numpy() < batch_size)))
            little.add(res)
        theory = mbb_throughput_rps(l_min, l_max, batch_size, k, per_token_s)
        mean, stderr = _seed_estimate(throughput)
        note = (f"B={batch_size}, lengths uniform on {{{l_min}..{l_max}}}, service {per_token_s:g} s/token; "
                f"{_tolerance_note(floor, stderr, theory)}; {len(lengths):,} requests per run, every value "
                f"{len(lengths) // (l_max - l_min + 1):,} times in random order; "
                f"partial batches: {max(partial)}")
        if (l_max - l_min + 1) % k == 0:
            exact = batch_size / (per_token_s * mbb_expected_batch_tokens_discrete(l_min, l_max, batch_size, k))
            note += f"; exact discrete value {exact:.4f} ({(exact - theory) / theory:+.3%} from the closed form)"
        rows.append(_row(CASE_MBB, f"throughput (req/s), k={k}", theory, mean,
                         statistical_tolerance(floor, stderr, theory), n_requests=len(lengths), runs=seeds,
                         stderr=stderr, note=note))
        points.append({"k": k, "theory_rps": theory, "simulated_rps": mean, "stderr_rps": stderr})
    points = pd.DataFrame(points)
    limit = mbb_throughput_rps(l_min, l_max, batch_size, math.inf, per_token_s)
    if len(points) >= 2:
        _, intercept = np.polyfit(1.0 / points["k"], 1.0 / points["simulated_rps"], 1)
        rows.append(_row(CASE_MBB, "throughput (req/s), k -> infinity", limit, 1.0 / intercept, floor,
                         n_requests=len(lengths), runs=seeds * len(points),
                         note=f"B / (c (l_min + l_max)/2) (Remark 4.3) vs the simulated 1/throughput extrapolated "
                              f"linearly in 1/k to 0 (Theorem 4.2 is exactly linear in 1/k); tolerance {floor:.1%}"))
    rows.append(little.row())
    return CaseResult(_frame(rows), {"points": points, "limit_rps": limit, "batch_size": batch_size,
                                     "l_min": l_min, "l_max": l_max, "per_token_s": per_token_s})


# ---------------------------------------------------------------- case 5: memory and SLA mechanics

MECHANICS_SCHEDULERS = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "multi_bin_fixed")


def heavy_tailed_trace(n: int, rng: np.random.Generator, *, rate_rps: float, source: str) -> Trace:
    """Pareto-tailed prompts (some longer than a small KV cache) and geometric outputs, Poisson arrivals."""
    prompt = np.minimum(rng.pareto(1.5, n) * 150 + 10, 20_000).astype(np.int64)
    output = geometric_tokens(150, n, rng)
    return make_trace(poisson_arrivals_s(rate_rps, n, rng), output, prompt, source=source)


def memory_bound_batches(res: SimResult, seq_tokens: np.ndarray) -> int:
    """Batches the KV capacity cut short: the bin's next request had arrived and would not fit.

    A bin's queue is FIFO and a batch takes a contiguous run of it, so the
    request after a batch's last member (in the bin's arrival order) is the
    one the engine stopped at.
    """
    capacity = res.config.kv_capacity_tokens
    batches = res.batches
    served = np.flatnonzero(res.status == STATUS_COMPLETED)
    order = served[np.lexsort((served, res.bin[served]))]          # by bin, then arrival order
    batch = res.batch_id[order]
    last = np.flatnonzero(np.r_[batch[1:] != batch[:-1], True])    # last member of each run
    has_next = (last + 1 < order.size)
    last = last[has_next]
    nxt = order[last + 1]
    same_bin = res.bin[nxt] == res.bin[order[last]]
    b = batch[last][same_bin]
    nxt = nxt[same_bin]
    start = batches["start_s"].to_numpy()[b]
    tokens = batches["tokens"].to_numpy()[b]
    short = (batches["size"] < batches["size_limit"]).to_numpy()[b]
    return int(np.count_nonzero(short & (res.arrival_s[nxt] <= start) & (tokens + seq_tokens[nxt] > capacity)))


def check_memory(n_requests: int = DEFAULT_REQUESTS // 5, seed: int = 42, kv_capacity_tokens: int = 8_000,
                 rate_rps: float = 500.0) -> CaseResult:
    """KV memory: under overload with a small cache, every batch of every scheduler fits, and requests that
    can never fit are rejected and counted."""
    _check_sizes(n_requests)
    kv_gb_per_token = 5e-6
    base = SimConfig(**SEED_MEMORY)   # the GPU used in full: its memory minus weights and margin is the cache
    gpu_mem_gb = base.weights_gb + base.mem_margin_gb + kv_capacity_tokens * kv_gb_per_token
    trace = heavy_tailed_trace(n_requests, case_rng(seed, 5, 0), rate_rps=rate_rps,
                               source="heavy-tailed overload")
    seq = trace.prompt_tokens.astype(np.int64) + trace.output_tokens
    rows, little = [], _LittleLedger("memory runs (all schedulers)")
    rejected_counts = []
    for name in MECHANICS_SCHEDULERS:
        cfg = base.replace(scheduler=name, gpu_mem_gb=gpu_mem_gb, kv_gb_per_token=kv_gb_per_token, batch_size=32,
                           b_max=32, predictor="oracle", seed=seed)
        capacity = cfg.kv_capacity_tokens
        res = simulate(trace, cfg)
        batches = res.batches
        cut = memory_bound_batches(res, seq)
        rows.append(_row(CASE_MECHANICS, f"largest batch KV tokens <= capacity ({name})", capacity,
                         batches["tokens"].max(), 0.0, "upper bound", n_requests=n_requests,
                         note=f"all {len(batches):,} batches checked; in {cut:,} ({cut / len(batches):.0%}) "
                              "memory cut the batch below its size limit (the bin's next waiting request "
                              "would not fit)"))
        rejected_counts.append(res.summary["rejected"])
        little.add(res)
        s = res.summary
        if name == MECHANICS_SCHEDULERS[0]:
            rows.append(_row(CASE_MECHANICS, "rejected requests (prompt + output > KV capacity)",
                             int(np.count_nonzero(seq > capacity)), s["rejected"], 0.0, "absolute",
                             n_requests=n_requests, note="exact count from the trace; status 'rejected'"))
        conserved = s["completed"] + s["rejected"]
        rows.append(_row(CASE_MECHANICS, f"completed + rejected = offered ({name})", n_requests, conserved, 0.0,
                         "absolute", n_requests=n_requests,
                         note=f"{s['completed']:,} completed, {s['rejected']:,} rejected"))
    if len(set(rejected_counts)) != 1:
        rows.append(_row(CASE_MECHANICS, "rejections agree across schedulers", rejected_counts[0],
                         max(rejected_counts), 0.0, "absolute", n_requests=n_requests))
    rows.append(little.row())
    return CaseResult(_frame(rows), {"kv_capacity_tokens": kv_capacity_tokens})


def _steady(values: np.ndarray) -> np.ndarray:
    """The second half of a controller run (after the transient)."""
    return values[values.size // 2:]


CONTROLLER_BUDGETS_S = {"generous": 5.0, "tight": 0.1, "feasible": 0.5}


def check_controller(n_requests: int = DEFAULT_REQUESTS // 5, seed: int = 42, rate_rps: float = 1_000.0,
                     budgets_s: dict[str, float] | None = None, sla_budget_fraction: float = 0.5,
                     hold_floor: float = 0.05, spread_limit: float = 0.15) -> CaseResult:
    """The SLA controller (Algorithm 2 on batch service time) under sustained overload, default latency model.

    Three budgets D on the same trace (``d_sla_s = D / sla_budget_fraction``):
    ``generous``, which no batch can exceed (the limit must rise to Algorithm
    2's ceiling); ``tight``, which even a single average request exceeds (the
    batch size cannot reach it: the controller must release the bin, so the
    limit returns to the ceiling instead of sinking to the floor, and the
    throughput is at least static batching's at ``b_max``); and ``feasible``,
    in between (the mean batch service time must hold D).  The retry of a
    released bin is switched off (``ctrl_retry_batches=0``) so the steady
    limit is exactly the ceiling.
    """
    _check_sizes(n_requests)
    budgets_s = {**CONTROLLER_BUDGETS_S, **(budgets_s or {})}
    latency = LatencyModel.default()
    rng = case_rng(seed, 5, 1)
    n = n_requests
    trace = make_trace(poisson_arrivals_s(rate_rps, n, rng), geometric_tokens(150, n, rng),
                       geometric_tokens(300, n, rng), source="controller overload")
    mean_seq = float(np.mean(trace.prompt_tokens.astype(np.int64) + trace.output_tokens))
    # the controller's settings are pinned (not the defaults) so the fixed points below stay as documented
    base = SimConfig(scheduler="dynamic_no_bins", sla_budget_fraction=sla_budget_fraction, b_min=1, b_max=32,
                     ctrl_alpha=2, ctrl_delta=2, ctrl_window=8, ctrl_eps_fraction=0.05, ctrl_retry_batches=0,
                     seed=seed)
    rows, little, runs, throughputs = [], _LittleLedger("SLA controller runs"), {}, {}
    for label in ("generous", "tight", "feasible"):
        cfg = base.replace(d_sla_s=budgets_s[label] / sla_budget_fraction)
        res = simulate(trace, cfg, latency=latency)
        little.add(res)
        throughputs[label] = res.summary["throughput_rps"]
        runs[label] = res.batches[["start_s", "service_s", "size", "size_limit"]].assign(
            budget_s=cfg.sla_budget_fraction * cfg.d_sla_s)
    ceiling = sla_controller_ceiling(base.b_max, base.ctrl_alpha)
    floor_b = sla_controller_floor(base.b_min, base.ctrl_alpha)
    generous, tight, hold = runs["generous"], runs["tight"], runs["feasible"]
    rows.append(_row(CASE_MECHANICS, "SLA controller rises: steady batch-size limit, budget never binding",
                     ceiling, _steady(generous["size_limit"].to_numpy()).mean(), 0.01, n_requests=n,
                     note=f"D = {budgets_s['generous']:g} s, longest batch took {generous['service_s'].max():.2f} s; "
                          f"Algorithm 2's ceiling is b_max - ceil(alpha/2) = {ceiling}; "
                          "steady state = second half of the batches"))
    rows.append(_row(CASE_MECHANICS, "SLA controller releases an infeasible budget: steady batch-size limit",
                     ceiling, _steady(tight["size_limit"].to_numpy()).mean(), 0.01, n_requests=n,
                     note=f"D = {budgets_s['tight']:g} s < t(1, mean length {mean_seq:.0f}) = "
                          f"{float(latency.service_time_s(1, mean_seq)):.3f} s: at its smallest interval (floor "
                          f"b_min + floor(alpha/2) = {floor_b}) batches still miss, so the controller stops "
                          f"shrinking and releases the limit to the ceiling {ceiling}"))
    fifo = simulate(trace, base.replace(scheduler="static_fifo", batch_size=ceiling,
                                        d_sla_s=budgets_s["tight"] / sla_budget_fraction), latency=latency)
    rows.append(_row(CASE_MECHANICS,
                     "infeasible budget: static_fifo throughput at the ceiling <= the controller's (req/s)",
                     throughputs["tight"], fifo.summary["throughput_rps"], 0.01 * throughputs["tight"], "upper bound",
                     n_requests=n,
                     note=f"the controlled run does {throughputs['tight']:.3f} req/s; static_fifo with batch "
                          f"{ceiling} (the controller's ceiling): {fifo.summary['throughput_rps']:.3f} req/s; "
                          "Algorithm 2 alone would sit at its floor; 1% allowed for the batches before the release"))
    budget = budgets_s["feasible"]
    service = _steady(hold["service_s"].to_numpy())
    tau = _steady(hold["service_s"].rolling(base.ctrl_window).mean().to_numpy())
    rows.append(_row(CASE_MECHANICS, "SLA controller holds a feasible target: mean batch service time (s)",
                     budget, service.mean(), hold_floor, n_requests=n,
                     stderr=float(service.std(ddof=1) / math.sqrt(service.size)),
                     note=f"D = {budget:g} s, {service.size:,} steady-state batches of mean size "
                          f"{_steady(hold['size'].to_numpy()).mean():.1f}; tolerance {hold_floor:.0%}"))
    spread = float(np.mean(np.abs(tau - budget)) / budget)
    rows.append(_row(CASE_MECHANICS, "SLA controller holds a feasible target: mean |tau - D| / D", 0.0, spread,
                     spread_limit, "absolute", n_requests=n,
                     note=f"tau = mean service time of the last {base.ctrl_window} batches (what the controller "
                          f"reads); hold band eps = {base.ctrl_eps_fraction:.0%} of D; limit {spread_limit:.0%}"))
    rows.append(little.row())
    return CaseResult(_frame(rows), {"runs": runs, "ceiling": ceiling, "floor": floor_b,
                                     "window": base.ctrl_window})




def check_mechanics(n_requests: int = DEFAULT_REQUESTS // 5, seed: int = 42) -> CaseResult:
    """Case 5: :func:`check_memory` and :func:`check_controller`."""
    memory = check_memory(n_requests, seed)
    controller = check_controller(n_requests, seed)
    return CaseResult(pd.concat([memory.rows, controller.rows], ignore_index=True),
                      {**memory.data, **controller.data})


# ---------------------------------------------------------------- case 6: synthetic trace

def check_synthetic_trace(trace_seed: int = 42) -> CaseResult:
    """The synthetic BurstGPT-like rows generated with ``trace_seed`` against the published statistics.

    The suite's ``seed`` (default 42) also seeds the synthetic trace its steps
    simulate, so passing the same seed checks the very trace they use.
    """
    from workbench.traces import synthetic

    rows_raw = synthetic.synthetic_rows(synthetic.NUM_ROWS, seed=trace_seed)
    stats = synthetic.trace_statistics(rows_raw)
    compared = synthetic.compare_to_targets(stats)
    rows = []
    for rec in compared.itertuples(index=False):
        target = synthetic.BURSTGPT_TARGETS[rec.quantity]
        rows.append(_row(CASE_TRACE, rec.quantity, rec.target, rec.generated, rec.tolerance, rec.tolerance_kind,
                         n_requests=int(stats["num_requests"]), note=f"seed {trace_seed}; {target.why}"))
    frame = _frame(rows)
    if not np.array_equal(frame["passed"].to_numpy(), compared["passed"].to_numpy()):
        raise AssertionError("validation and synthetic.compare_to_targets disagree on a pass/fail")
    hours = {h: stats[f"requests_per_hour_{h:02d}h"] for h in range(24)}
    return CaseResult(frame, {"rows": rows_raw, "stats": stats, "hourly_generated": pd.Series(hours),
                              "hourly_published": pd.Series(synthetic.PUBLISHED_HOURLY_MEANS).sort_index()})


# ---------------------------------------------------------------- everything

def collect(results: list[CaseResult]) -> pd.DataFrame:
    """One table from several cases, ordered by case number."""
    table = pd.concat([r.rows for r in results], ignore_index=True)
    order = {c: i for i, c in enumerate(CASES)}
    table = table.sort_values("case", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    log.info("validation: %d of %d checks passed", int(table["passed"].sum()), len(table))
    return table


def run_validation(n_requests: int = DEFAULT_REQUESTS, seeds: int = DEFAULT_SEEDS, seed: int = 42,
                   include_trace: bool = True) -> pd.DataFrame:
    """Every case: ``n_requests`` per queueing run (cases 1-2) with ``seeds`` replicates each,
    :func:`multi_bin_requests` per case-4 run (also ``seeds`` replicates), :func:`mechanics_requests`
    per case-5 run, and (``include_trace``) the synthetic trace."""
    results = [check_md1(n_requests, seeds, seed), check_mmc(n_requests, seeds, seed),
               check_multi_bin(multi_bin_requests(n_requests), seeds, seed),
               check_mechanics(mechanics_requests(n_requests), seed)]
    if include_trace:
        results.append(check_synthetic_trace(seed))
    return collect(results)


BRIEF_COLUMNS = ("case", "quantity", "theory", "simulated", "rel_error", "tolerance", "tolerance_kind", "passed")


def brief(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader needs first (the CSV keeps all of them)."""
    return table[list(BRIEF_COLUMNS)]


def summary_by_case(table: pd.DataFrame) -> pd.DataFrame:
    """Per case: checks, passed, and the largest |relative error| among rows with a non-zero theory."""
    grouped = table.groupby("case", sort=False)
    return pd.DataFrame({
        "checks": grouped.size(),
        "passed": grouped["passed"].sum().astype(int),
        "max_abs_rel_error": grouped["rel_error"].apply(lambda s: s.abs().max()),
    }).reset_index()


def closing_note(table: pd.DataFrame, listed: int = 6) -> str:
    """Markdown: per case, how many checks passed and their relative errors (the largest ``listed``)."""
    lines = []
    for case, rows in table.groupby("case", sort=False):
        with_rel = rows[np.isfinite(rows["rel_error"].to_numpy(float))]
        ranked = with_rel.reindex(with_rel["rel_error"].abs().sort_values(ascending=False).index)
        shown = ", ".join(f"{r.quantity} {r.rel_error:+.3%}" for r in ranked.head(listed).itertuples())
        more = f" and {len(ranked) - listed} more" if len(ranked) > listed else ""
        others = rows[~np.isfinite(rows["rel_error"].to_numpy(float))]
        extra = "".join(f"; {r.quantity} = {r.simulated:.4g} (limit {r.tolerance:g})" for r in others.itertuples())
        verdict = "all passed" if rows["passed"].all() else f"**{int((~rows['passed']).sum())} FAILED**"
        lines.append(f"- **{case}**: {int(rows['passed'].sum())}/{len(rows)} checks, {verdict}. "
                     f"Relative errors, largest first: {shown}{more}{extra}.")
    return "\n".join(lines)


NOTEBOOK = "validation"
# what the notebook writes into its results folder (checked before any case runs: none may be a folder)
OUTPUTS = ("validation.csv", "validation_md1.png", "validation_multi_bin.png", "validation_controller.png",
           "validation_synthetic_trace.png")


@dataclass(frozen=True)
class ValidationParams(NotebookParams):
    """The validation notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs = NOTEBOOK, OUTPUTS

    n_requests: int = DEFAULT_REQUESTS
    seeds: int = DEFAULT_SEEDS
    seed: int = 42
    results_dir: str = "results/default"
    include_trace: bool = True

    def __post_init__(self):
        object.__setattr__(self, "n_requests", checks.integer(self.n_requests, "n_requests", low=1_000, high=10**9))
        object.__setattr__(self, "seeds", checks.integer(self.seeds, "seeds", low=1, high=1_000))
        object.__setattr__(self, "seed", checks.integer(self.seed, "seed", low=0))
        object.__setattr__(self, "include_trace", checks.boolean(self.include_trace, "include_trace"))
        checks.path(self.results_dir, "results_dir", expected="a folder path")


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table as CSV atomically (readers see the old file or the new one, never a part)."""
    write_csv_atomic(path, table)
    return Path(path)
