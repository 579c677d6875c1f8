"""What a calibration fits: per load stage, the mean and tail (p90) of TTFT, TPOT and E2E of a measured run.

BLIS calibrates on the mean and p90 of TTFT, ITL and E2E of each training run (inference-sim/inference-sim,
``approach.md``, section 5, "Training & Calibration"); here each of them is taken *per load stage* (the
arrival rate's stages, :mod:`workbench.study.fidelity.stages`), because a stage's TPOT is what a decode step
costs at that stage's batch size, and two stages at different batch sizes are what separate a step's fixed
cost from its per-request cost.

Each target is compared on the log of simulated / measured, divided by its noise ``sigma``: relative errors,
so no metric outweighs another by its size in seconds, and a miss by a factor 10 counts as much as a factor
1/10.  ``sigma = sqrt(NOISE_FLOOR^2 + se^2)``: ``se`` is the bootstrap standard error of the measured statistic
(relative; resampling the stage's requests), so a stage of 40 requests, or a p90 over few requests, counts
less than a well-measured mean, and ``NOISE_FLOOR`` (3%) is what separate runs of one server differ by in
their means, so no single target can dominate by being measured precisely.  A p90 has twice the sigma of a
mean (``TAIL_NOISE_FACTOR``): BLIS's own loss keeps only the means (TTFT and E2E), and a tail depends on
the few requests that queued longest.

A step-time model is judged by what a step time can explain: a target that multiplies a relative error of the
step time by ``A`` (its *amplification*: a queue-dominated TTFT of an overloaded run, 10 or more; a mean TPOT at
moderate load, about 2, as slower steps also grow the batch) is held to ``A`` times the noise floor
(:meth:`RunTargets.amplified`, measured by :mod:`workbench.study.fidelity.calibration` with a secant of every
step-time term scaled together), so a queue the engine reproduces only roughly does not outweigh the targets that
say what a step costs.

:func:`measured_occupancy` reads, from the measured timelines alone (no model), each request's mean decode
batch and decode context during its decode phase: what :mod:`workbench.study.fidelity.terms` needs to bound
each step-time term by what the real server did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.study.fidelity.stages import stage_index

METRICS = ("ttft_s", "tpot_s", "e2e_s")
STATISTICS = ("mean", "p90")
NOISE_FLOOR = 0.03
TAIL_NOISE_FACTOR = 2.0           # a p90 counts half as much as a mean (its sigma doubled)
BOOTSTRAP_SAMPLES = 100
MIN_TARGET_REQUESTS = 10          # a statistic over fewer scored requests is not a target
MIN_TAIL_REQUESTS = 30            # a p90 needs at least this many (its 90th percentile lies between 3 requests)
MISSING_LOG_RATIO = np.log(1e3)   # the error of a statistic the simulation could not compute (nothing served)


def _statistic(values: np.ndarray, statistic: str) -> float:
    if values.size == 0:
        return np.nan
    return float(values.mean()) if statistic == "mean" else float(np.percentile(values, 90))


@dataclass(frozen=True)
class RunTargets:
    """The targets of one training run: ``table`` (stage, metric, statistic, measured, sigma, requests; after
    :meth:`amplified`, amplification) and, per row, the requests it is computed over (``rows``)."""

    run: str
    boundaries_s: np.ndarray
    stage: np.ndarray            # per request of the trace
    scored: np.ndarray           # bool per request: its measured times are training data
    table: pd.DataFrame
    rows: tuple                  # per table row: (metric, statistic, request indices)
    noise_floor: float = NOISE_FLOOR

    @property
    def size(self) -> int:
        """Residuals per evaluation: one per target."""
        return len(self.table)

    @property
    def means(self) -> np.ndarray:
        """Bool per residual: a mean's (:mod:`workbench.study.fidelity.calibration`: the rows that decide whether
        the load stages pin a fixed step cost)."""
        return self.table["statistic"].to_numpy() == "mean"

    def amplification_of(self, metric: str = "e2e_s") -> float:
        """The largest amplification of the run's mean ``metric`` targets (1 before :meth:`amplified`)."""
        if "amplification" not in self.table:
            return 1.0
        rows = (self.table["metric"] == metric) & (self.table["statistic"] == "mean")
        return float(self.table.loc[rows, "amplification"].max()) if rows.any() else 1.0

    def amplified(self, amplification: np.ndarray) -> "RunTargets":
        """These targets with each one's noise floor times its ``amplification`` (at least 1): how many times a
        relative error of the step time a target multiplies (a queue-dominated TTFT, many; a mean TPOT, one), so
        a target counts by what a step-time model can say about it (see the module docstring)."""
        table = self.table.copy()
        factor = np.maximum(np.asarray(amplification, dtype=np.float64)[:len(table)], 1.0)
        floor = self.noise_floor * factor
        tail = np.where(table["statistic"].to_numpy() == "p90", TAIL_NOISE_FACTOR, 1.0)
        table["amplification"] = factor
        table["sigma"] = np.hypot(floor, table["se"].to_numpy()) * tail
        return dataclasses.replace(self, table=table)

    def simulated(self, requests: pd.DataFrame) -> np.ndarray:
        """The table's statistics of a simulation of the run (``res.requests``: ttft_s, tpot_s, e2e_s)."""
        columns = {m: requests[m].to_numpy(dtype=np.float64) for m in METRICS}
        out = np.empty(len(self.rows))
        for k, (metric, statistic, index) in enumerate(self.rows):
            values = columns[metric][index]
            out[k] = _statistic(values[np.isfinite(values)], statistic)
        return out

    def residuals(self, requests: pd.DataFrame) -> np.ndarray:
        """``log(simulated / measured) / sigma`` per target (a statistic the simulation cannot compute, e.g. no
        request of a stage served, counts as a factor 1000 off)."""
        simulated = self.simulated(requests)
        measured = self.table["measured"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(simulated / measured)
        ratio = np.where(np.isfinite(ratio), ratio, MISSING_LOG_RATIO)
        return ratio / self.table["sigma"].to_numpy()


def _bootstrap_se(values: np.ndarray, statistic: str, value: float, rng) -> float:
    """Relative (log) standard error of ``statistic`` of ``values``, by resampling them."""
    draws = values[rng.integers(0, values.size, (BOOTSTRAP_SAMPLES, values.size))]
    boot = draws.mean(axis=1) if statistic == "mean" else np.percentile(draws, 90, axis=1)
    return float(np.std(np.log(np.maximum(boot, 1e-300) / value)))


def uncached_prompt_tokens(trace, block_size: int) -> np.ndarray:
    """Per request, a lower bound on the prompt tokens it computes: its prompt less the prefix an earlier request
    already had (whole prefix-tree blocks, :mod:`workbench.sim.prefix_tree`); the whole prompt without hashes."""
    from workbench.sim.prefix_tree import prefix_tree

    prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
    if getattr(trace, "prefix_hashes", None) is None:
        return prompt
    tree = prefix_tree(trace, block_size)
    counts = np.diff(tree.path_off)
    request_of = np.repeat(np.arange(prompt.size), counts)
    first_user = np.full(tree.num_nodes, np.iinfo(np.int64).max)
    np.minimum.at(first_user, tree.path_node, request_of)
    seen = first_user[tree.path_node] < request_of       # the node was on an earlier request's path
    # the cached part of a path is its leading run of seen nodes: a node counts if it and all before it were seen
    depth = np.arange(tree.path_node.size) - np.repeat(tree.path_off[:-1], counts)
    unseen = np.concatenate([[0], np.cumsum(~seen)])       # unseen nodes before each position, over all paths
    leading = seen & (unseen[1:] - np.repeat(unseen[tree.path_off[:-1]], counts) == 0)
    last = np.full(prompt.size, -1)
    np.maximum.at(last, request_of[leading], depth[leading])
    cached = np.zeros(prompt.size, np.int64)
    has = last >= 0
    node = tree.path_node[tree.path_off[:-1][has] + last[has]]
    cached[has] = (tree.node_first[node].astype(np.int64) + tree.node_blocks[node]) * block_size
    return np.maximum(prompt - cached, 0)


COMPUTED_PROMPTS = "computed prompts"   # the requests group whose prompt was mostly not in the prefix cache


def run_targets(run, boundaries_s, *, seed: int = 0, noise_floor: float = NOISE_FLOOR,
                block_size: int = 16) -> RunTargets:
    """The targets of ``run`` (a ServingLog; its ``scored`` requests) split at the stage ``boundaries_s``
    (:class:`RunTargets`).

    A run whose prompts repeat (prefix hashes) also gets the mean and p90 TTFT, over the whole run, of the
    requests that computed at least half their prompt (the first of each repeated prompt, and the prompts sent
    once; ``block_size``: the engine's, to tell which blocks an earlier request had): when most requests hit the
    cache, their TTFT is the one place the run shows what a prefill costs per token."""
    trace = run.trace
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    boundaries = np.asarray(boundaries_s, dtype=np.float64)
    stage = stage_index(arrival, boundaries)
    scored = run.scored_mask
    measured = {m: run.measured[m].to_numpy(dtype=np.float64) for m in METRICS}
    many_tokens = np.asarray(trace.output_tokens) > 1
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[arrival.min()], boundaries])
    records, rows = [], []

    def add(members, metric, statistic, stage_number, start_s, group):
        needed = MIN_TAIL_REQUESTS if statistic == "p90" else MIN_TARGET_REQUESTS
        if members.size < needed:
            return
        values = measured[metric][members]
        value = _statistic(values, statistic)
        if not value > 0:
            return
        se = _bootstrap_se(values, statistic, value, rng)
        sigma = float(np.hypot(noise_floor, se)) * (TAIL_NOISE_FACTOR if statistic == "p90" else 1.0)
        records.append({"run": run.name, "stage": stage_number, "stage_start_s": start_s, "requests_group": group,
                        "metric": metric, "statistic": statistic, "measured": value, "se": se, "sigma": sigma,
                        "requests": int(members.size)})
        rows.append((metric, statistic, members))

    for s in range(boundaries.size + 1):
        in_stage = scored & (stage == s)
        for metric in METRICS:
            members = np.flatnonzero(in_stage & (many_tokens if metric == "tpot_s" else True))
            for statistic in STATISTICS:
                add(members, metric, statistic, s, float(starts[s]), "all")
    if trace.prefix_hashes is not None:
        prompt = np.asarray(trace.prompt_tokens, dtype=np.float64)
        computed = scored & (uncached_prompt_tokens(trace, block_size) >= 0.5 * prompt)
        if computed.sum() < 0.9 * scored.sum():     # else the stages' targets already are these requests'
            for statistic in STATISTICS:
                add(np.flatnonzero(computed), "ttft_s", statistic, -1, float(arrival.min()), COMPUTED_PROMPTS)
    table = pd.DataFrame(records, columns=["run", "stage", "stage_start_s", "requests_group", "metric", "statistic",
                                           "measured", "se", "sigma", "requests"])
    return RunTargets(run.name, boundaries, stage, scored, table, tuple(rows), noise_floor)


def _integral(times: np.ndarray, value_changes: np.ndarray, slope_changes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The integral from the first event to ``at`` of the piecewise-linear function whose value and slope jump by
    ``value_changes`` and ``slope_changes`` at ``times`` (sorted)."""
    order = np.argsort(times, kind="stable")
    t, dv, ds = times[order], value_changes[order], slope_changes[order]
    # just after event k: value v_k = sum(dv) + sum over earlier events of their slope times elapsed time
    slope = np.cumsum(ds)
    value_after = np.cumsum(dv) + np.concatenate([[0.0], np.cumsum(slope[:-1] * np.diff(t))])
    area = np.concatenate([[0.0], np.cumsum(value_after[:-1] * np.diff(t) + 0.5 * slope[:-1] * np.diff(t) ** 2)])
    k = np.clip(np.searchsorted(t, at, side="right") - 1, 0, t.size - 1)
    dt = np.maximum(at - t[k], 0.0)
    return area[k] + value_after[k] * dt + 0.5 * slope[k] * dt ** 2


def measured_occupancy(run) -> pd.DataFrame:
    """Per scored request with more than one output token, from the measured times alone: its decode window
    (first to last token), the mean number of scored requests decoding during it (``batch``, itself included)
    and their mean summed context (``context``: each one's prompt + tokens generated before the step, from
    prompt + 1 to prompt + output - 1, growing one token per TPOT).

    Only scored requests count (a held-out request's times are not training data), so ``batch`` and
    ``context`` are at most the server's: the bounds built on them stay valid."""
    trace = run.trace
    scored = run.scored_mask & (np.asarray(trace.output_tokens) > 1)
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)[scored]
    first = arrival + run.measured["ttft_s"].to_numpy(dtype=np.float64)[scored]
    last = arrival + run.measured["e2e_s"].to_numpy(dtype=np.float64)[scored]
    prompt = np.asarray(trace.prompt_tokens, dtype=np.float64)[scored]
    tokens = np.asarray(trace.output_tokens, dtype=np.float64)[scored]
    window = last - first
    times = np.concatenate([first, last])
    ones = np.ones_like(first)
    batch_area = _integral(times, np.concatenate([ones, -ones]), np.zeros(times.size), np.concatenate([first, last]))
    # the step computing output token k (k = 2..n) reads prompt + k - 1 tokens of context: from prompt + 1 at the
    # first token to prompt + n - 1 at the last, growing evenly in between
    start_context = prompt + 1.0
    end_context = prompt + tokens - 1.0
    rate = np.where(window > 0, (end_context - start_context) / np.maximum(window, 1e-12), 0.0)
    context_area = _integral(times, np.concatenate([start_context, -end_context]), np.concatenate([rate, -rate]),
                             np.concatenate([first, last]))
    n = first.size
    with np.errstate(divide="ignore", invalid="ignore"):
        batch = (batch_area[n:] - batch_area[:n]) / window
        context = (context_area[n:] - context_area[:n]) / window
    ok = window > 0
    return pd.DataFrame({"request": np.flatnonzero(scored)[ok], "ttft_s": (first - arrival)[ok],
                         "tpot_s": (window / np.maximum(tokens - 1, 1))[ok],
                         "batch": np.maximum(batch[ok], 1.0),
                         "context": np.maximum(context[ok], (start_context + end_context)[ok] / 2)})


__all__ = ["COMPUTED_PROMPTS", "METRICS", "NOISE_FLOOR", "RunTargets", "STATISTICS", "measured_occupancy", "run_targets",
           "uncached_prompt_tokens"]
