"""The cheap bound the fleet planner prunes with: the fewest replicas that *could* meet the SLA, never more.

:func:`workbench.study.runs.fleet.plan_fleet` simulates a candidate fleet only when this bound says it may be
the cheapest; a candidate whose bound already costs more than a fleet that was confirmed by simulation is
pruned.  That is safe only if the bound never asks for more replicas than the simulator needs, i.e. if it is
an **upper bound on capacity**.  It is built so, from two facts about any schedule of the trace:

1. **Work.**  Every engine step takes at least the sum of lower bounds on the shares of its requests
   (:func:`work_coefficients`): a step holds at most ``X = max_num_batched_tokens`` tokens and ``B =
   max_num_seqs`` sequences, the per-token part of a step (``token_s(x)``: GEMMs, all-reduces) is at least
   ``x x min token_s(x') / x'`` over ``x' <= X`` (that ratio is checked at the table's grid points, where it
   is extreme: each piece of a piecewise-linear table is ``alpha + beta x``, whose ratio to ``x`` is
   monotone), the same for the per-sequence part, a decode's attention at least ``e0 + e1 x context``
   (the lower envelope of the table's attention per decode, below it at every grid point and so everywhere
   between), a prompt's causal attention at least ``quad x P (P + 1) / 2`` however it is chunked, and the
   fixed cost of a step at least ``min(fixed_prefill, fixed_decode)``, shared either by its at most ``X``
   tokens or by its at most ``B`` sequences.  A linear model's coefficients give these directly (the
   smaller of its two decode regimes).  So a request's share of the replica's busy time is at least
   ``w_i`` (its prefill part ``p_i`` and its decode part), and a replica does at most ``L`` seconds of work
   in ``L`` seconds.
2. **Deadlines.**  A request that meets the SLA has its first token by ``arrival + ttft_s`` (so its prefill
   work is done by then) and its last by ``arrival + ttft_s + tpot_s x (output - 1)``; a request that
   misses its SLA even *alone* on an idle replica (:func:`alone_times`: the same steps the engine runs for
   it, no queue, no batch) or that the KV cache cannot hold misses it under any load.

Cut the replayed trace's time into windows of length ``L`` (several lengths, from ``ttft_s`` to the whole
span, and two offsets each).  A request counts in the window holding its arrival with ``w_i`` if its last
deadline falls in the same window, with ``p_i`` if only its first does, else with 0: that much of its work
must be done inside the window.  If ``n`` replicas serve the window, the work counted there is at most
``n L`` unless some of its requests miss; the fewest misses that bring window ``j`` within ``n L`` drop its
largest shares first, and a request ``m`` (ranked by share within its window) must be dropped exactly when
``slack_m = D_j - (shares ranked above m) > n L``, ``D_j`` the window's total.  A fleet meeting the SLA for
``attainment`` of the ``N`` requests misses at most ``N - ceil(attainment N)`` of them (those that miss alone
included), so ``count(slack > n L) <= budget``: ``n >= slack_(budget + 1) / L`` (the ``budget + 1``-th
largest slack).  The same holds for the KV cache (``K`` tokens a replica): a request that meets its SLA keeps
at least ``prompt + 1`` tokens in the cache for at least its alone decode time, which the window's ``n K L``
token-seconds must hold.  The bound is the largest ``n`` over every window length, offset, resource and
fixed-cost sharing: each is necessary, so the largest is too.  Bursts are why short windows matter: a
BurstGPT-like trace's load comes in bursts, and a fleet sized for the mean rate misses TTFT in them.

A disaggregated fleet gets the bound per pool: the prefill instances do every prefill (``p_i``, deadline
``arrival + ttft_s``; DistServe's prefill steps take whole prompts, up to ``prefill_max_tokens`` tokens and
``prefill_max_batch_size`` prompts), the decode instances every decode step (deadline ``arrival + ttft_s +
tpot_s (output - 1)``, up to ``decode_max_batch_size`` a step) and hold the KV cache.

What the bound assumes, and where it holds exactly: step times grow with what a step holds, and a table's
attention does not shrink when prefill tokens join decodes (true of linear models and of the roofline,
whose parts add up; a kernel-profile table with a negative skew correction could break it, and the planner
does not use kernel profiles).  ``tests/test_fleet.py`` checks it against the simulator: the replicas the
simulator needs (and the capacity it finds) are never below what the bound says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workbench.sim.bound_kernels import alone_table, window_kth

# ----------------------------------------------------------------------------------------- per-step costs


@dataclass(frozen=True)
class WorkCoefficients:
    """Lower bounds on a request's share of the steps that serve it (seconds; see the module docstring).

    A prompt of ``P`` tokens in ``pieces`` chunks costs at least ``per_prompt_token_s x P + pair_term(P) +
    per_piece_s x pieces``; each of its ``output - 1`` decode steps at context ``c`` at least
    ``per_decode_s + per_context_s x c``; every step at least ``fixed_s``, shared by at most
    ``tokens_per_step`` tokens or ``seqs_per_step`` sequences."""

    fixed_s: float
    per_prompt_token_s: float
    per_pair_s: float        # x P (P + 1) / 2 when >= 0; a negative fitted curvature: x P^2
    per_piece_s: float
    per_decode_s: float
    per_context_s: float
    tokens_per_step: int
    seqs_per_step: int

    def pair_term(self, prompt: np.ndarray) -> np.ndarray:
        """The quadratic part of a prompt's prefill, at its least over every way of chunking it: ``sum l (p +
        l)`` over chunks is ``(P^2 + sum l^2) / 2``, between ``P (P + 1) / 2`` and ``P^2``."""
        p = np.asarray(prompt, dtype=np.float64)
        return self.per_pair_s * (p * (p + 1) / 2 if self.per_pair_s >= 0 else p * p)

    def pair_term_whole(self, prompt: np.ndarray) -> np.ndarray:
        """The quadratic part of a prompt prefilled in one piece: ``l (p + l)`` with ``p = 0``, ``P^2``."""
        p = np.asarray(prompt, dtype=np.float64)
        return self.per_pair_s * p * p


def _min_ratio(grid: np.ndarray, values: np.ndarray, top: float) -> float:
    """min of ``f(x) / x`` over ``0 < x <= top`` for the piecewise-linear ``f`` through (grid, values), linear
    past the grid's ends: on each piece ``(alpha + beta x) / x`` is monotone, so the minimum is at a grid
    point or at ``top``."""
    grid = np.asarray(grid, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    at_top = float(np.interp(top, grid, values)) if top <= grid[-1] else float(
        values[-1] + (values[-1] - values[-2]) / (grid[-1] - grid[-2]) * (top - grid[-1])) if grid.size > 1 \
        else float(values[-1])
    inside = (grid > 0) & (grid <= top)
    ratios = np.append(values[inside] / grid[inside], at_top / top)
    return max(0.0, float(ratios.min()))


def _attention_per_decode(table, seqs_per_step: int) -> tuple[float, float]:
    """``(e0, e1)`` with ``attention(0, 0, nd, kv) / nd >= e0 + e1 kv`` for every ``0 < nd <= seqs_per_step``
    and ``kv >= 0``: the per-decode attention at each kv grid point, least over the nd grid points up to
    ``seqs_per_step`` (each piece in nd is linear, so its ratio to nd is extreme at the ends), then the line
    from its value at kv = 0 with the least slope to every other grid point and past the grid's end."""
    nd, kv = table.nd_grid, table.kv_grid
    att = table.attention_s[0, 0]      # pc = 0, kp = 0 (the grids start at 0)
    rows = [i for i in range(nd.size) if 0 < nd[i] <= seqs_per_step]
    per = [att[i] / nd[i] for i in rows]
    if seqs_per_step > nd[-1] or not rows or nd[rows[-1]] < seqs_per_step:
        # the value at nd = seqs_per_step (interpolated, or extrapolated past the grid)
        hi = min(int(np.searchsorted(nd, seqs_per_step)), nd.size - 1)
        lo = max(hi - 1, 0)
        t = (seqs_per_step - nd[lo]) / (nd[hi] - nd[lo]) if nd[hi] > nd[lo] else 0.0
        per.append((att[lo] + t * (att[hi] - att[lo])) / seqs_per_step)
    m = np.min(np.array(per), axis=0)          # per-decode attention at each kv grid point, least over nd
    if kv[0] != 0:
        raise ValueError("step table: its kv grid must start at 0 for the fleet bound")
    e0 = float(m[0])
    e1 = float(((m[1:] - m[0]) / kv[1:]).min()) if kv.size > 1 else 0.0
    if kv.size > 1:   # past the grid's end the table extrapolates with its last piece's slope
        e1 = min(e1, float((m[-1] - m[-2]) / (kv[-1] - kv[-2])))
    return e0, e1


def work_coefficients(step, *, tokens_per_step: int, seqs_per_step: int) -> WorkCoefficients:
    """The :class:`WorkCoefficients` of a :class:`~workbench.sim.steptime.StepTimeModel`: from its table
    (roofline; see the module docstring) or from its linear coefficients (both decode regimes)."""
    X, B = int(tokens_per_step), int(seqs_per_step)
    table = step.table
    if table is None:
        a_p, b_p, c_p = step.prefill
        regimes = [step.decode] + ([step.decode_large] if step.decode_large is not None else [])
        return WorkCoefficients(
            fixed_s=min([a_p] + [r[0] for r in regimes]), per_prompt_token_s=b_p, per_pair_s=c_p, per_piece_s=0.0,
            per_decode_s=min(r[2] for r in regimes), per_context_s=min(r[1] for r in regimes),
            tokens_per_step=X, seqs_per_step=B)
    g = _min_ratio(table.token_grid, table.token_s, X)
    h = _min_ratio(table.seq_grid, table.seq_s, B)
    e0, e1 = _attention_per_decode(table, B)
    # a prompt token's attention outside the quadratic term: the least per-token attention of a prefill piece
    # with nothing cached (pc grid points up to X; the cached context only adds to it)
    pc, att_p = table.pc_grid, table.attention_s[:, 0, 0, 0]
    a_p1 = _min_ratio(pc, att_p - att_p[0], X) if pc.size > 1 else 0.0
    return WorkCoefficients(
        fixed_s=min(table.fixed_prefill_s, table.fixed_decode_s), per_prompt_token_s=g + a_p1,
        per_pair_s=table.prefill_quad_s, per_piece_s=h, per_decode_s=g + h + e0, per_context_s=e1,
        tokens_per_step=X, seqs_per_step=B)


def request_work_s(coef: WorkCoefficients, prompt, output, *, chunk_tokens: int | None) -> dict[str, np.ndarray]:
    """Per request: ``prefill`` and ``decode`` lower bounds on its share of the steps (seconds, fixed costs
    left out), and its share of the fixed costs under each sharing rule: ``fixed_prefill_tokens`` /
    ``fixed_decode_tokens`` (a step's at most ``tokens_per_step`` tokens) and ``fixed_prefill_seqs`` /
    ``fixed_decode_seqs`` (its at most ``seqs_per_step`` sequences).  ``chunk_tokens``: the prompt's chunks
    (None: one piece, DistServe's whole-prompt prefill)."""
    p = np.asarray(prompt, dtype=np.float64)
    o = np.asarray(output, dtype=np.float64)
    decodes = np.maximum(o - 1, 0)
    pieces = np.ceil(p / chunk_tokens) if chunk_tokens else np.ones_like(p)
    context_sum = decodes * p + decodes * (decodes + 1) / 2    # contexts P + 1 .. P + output - 1
    # a share is never negative (a fitted coefficient below zero only lowers the bound)
    pairs = coef.pair_term(p) if chunk_tokens else coef.pair_term_whole(p)
    prefill = np.maximum(coef.per_prompt_token_s * p + pairs + coef.per_piece_s * pieces, 0.0)
    decode = np.maximum(coef.per_decode_s * decodes + coef.per_context_s * context_sum, 0.0)
    F, X, B = coef.fixed_s, float(coef.tokens_per_step), float(coef.seqs_per_step)
    return {"prefill": prefill, "decode": decode,
            "fixed_prefill_tokens": F * p / X, "fixed_decode_tokens": F * decodes / X,
            "fixed_prefill_seqs": F * pieces / B, "fixed_decode_seqs": F * decodes / B}


# ------------------------------------------------------------------------------------------ alone


def alone_times(step, prompt, output, *, chunk_tokens: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ttft_s, tpot_s, decode_s)`` of each request served alone on an idle replica (NaN TPOT for one output
    token; ``decode_s``: its decode steps' time in all):
    the prompt in chunks of ``chunk_tokens`` (None: one piece), one step each, then one decode step per
    further token at contexts ``prompt + 1`` .. ``prompt + output - 1``; the arrival and per-token overheads
    added as the engines add them.  Nothing under load is faster (steps only grow with what they hold)."""
    p = np.asarray(prompt, dtype=np.int64)
    o = np.asarray(output, dtype=np.int64)
    if step.table is not None:
        tf, ti = step.table.pack(1)
        prefill, decode = alone_table(tf, ti, p, o, int(chunk_tokens or max(int(p.max(initial=1)), 1)))
    else:
        a_p, b_p, c_p = step.prefill
        pf = p.astype(np.float64)
        if chunk_tokens:
            full, rest = np.divmod(p, chunk_tokens)
            pieces = full + (rest > 0)
            squares = full * float(chunk_tokens) ** 2 + rest.astype(np.float64) ** 2
        else:
            pieces, squares = np.ones_like(pf), pf * pf
        prefill = pieces * a_p + b_p * pf + c_p * (pf * pf + squares) / 2
        regime = step.decode_large if (step.decode_large is not None and step.decode_large_threshold <= 1) \
            else step.decode
        a_d, b_d, c_d = regime
        decodes = np.maximum(o - 1, 0).astype(np.float64)
        decode = decodes * (a_d + c_d) + b_d * (decodes * pf + decodes * (decodes + 1) / 2)
    a0, a1 = step.arrival_overhead_s
    ttft = a0 + a1 * p + prefill + step.token_overhead_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(o > 1, decode / np.maximum(o - 1, 1) + step.token_overhead_s, np.nan)
    return ttft, tpot, decode


# ------------------------------------------------------------------------------------------ the bound


@dataclass(frozen=True)
class PoolDemand:
    """What one pool of identical replicas must do for the requests that can meet the SLA (arrays over the
    trace's requests, at the trace's own rate): GPU work with its deadline, and KV token-seconds."""

    name: str                    # "replicas", "prefill instances", "decode instances"
    work_s: dict                 # sharing rule -> (work counted if the first deadline is in the window, if both)
    kv_token_s: np.ndarray       # KV token-seconds held (counted with the second deadline), or None
    kv_tokens: float             # KV tokens one replica holds (inf: not a limit)


@dataclass(frozen=True)
class Bound:
    """The bound of one candidate at one rate: ``replicas`` (the fewest that could meet the SLA, per pool for
    a disaggregated fleet), what binds, and the shares meeting each limit alone."""

    replicas: dict               # pool -> fewest replicas (0: infeasible at any size)
    feasible: bool               # whether enough requests can meet the SLA alone
    binding: dict                # pool -> "GPU time" or "KV cache", with the window length that binds
    alone_share: float           # share of the requests that meet both limits alone and fit the KV cache
    alone_ttft_share: float
    alone_tpot_share: float
    fits_share: float            # share the KV cache (and token budget) can hold at all
    kv_tokens: float = math.nan  # KV tokens one replica (a decode instance) holds, for the reason of a miss

    @property
    def limit(self) -> str:
        """The limit that rules the candidate out when it is infeasible: "TTFT", "TPOT" or "memory"."""
        shares = {"memory": self.fits_share, "TTFT": self.alone_ttft_share, "TPOT": self.alone_tpot_share}
        return min(shares, key=shares.get)


def _windows(span_s: float, ttft_s: float) -> list[float]:
    """Window lengths: ``2 ttft_s`` times 1, 4, 16, ... below ``span_s``, and ``span_s`` itself: pass the time
    from the first arrival to the last deadline, so that one window holds every request with both deadlines
    (a window must outlast ``ttft_s`` to hold a request's first deadline at all)."""
    lengths, L = [], 2.0 * max(ttft_s, 1e-3)
    while L < span_s:
        lengths.append(L)
        L *= 4
    lengths.append(max(span_s, 2.0 * ttft_s) * (1 + 1e-9) + 1e-9)
    return lengths


def fewest_replicas(arrival_s: np.ndarray, first_deadline_s: np.ndarray, second_deadline_s: np.ndarray,
                    first: np.ndarray, both: np.ndarray, capacity_per_replica_per_s: float, budget: int,
                    lengths) -> tuple[int, float]:
    """The fewest replicas (each doing ``capacity_per_replica_per_s`` of the resource per second) for which at
    most ``budget`` requests miss, over windows of ``lengths`` (two offsets each); ``first``/``both``: each
    request's demand when its first / both deadlines fall in its arrival's window (see the module docstring;
    ``arrival_s`` ascending).  Returns (replicas, the window length that sets it)."""
    best, where = 0, math.nan
    arrays = [np.ascontiguousarray(a, dtype=np.float64)
              for a in (arrival_s, first_deadline_s, second_deadline_s, first, both)]
    for L in lengths:
        for offset in (0.0, L / 2):
            per_window = L * capacity_per_replica_per_s
            # the (budget + 1)-th largest slack: with fewer replicas more than budget requests must miss; a
            # window whose total share fits best replicas cannot raise the answer (skipped without sorting)
            kth = window_kth(*arrays, float(L), float(offset), int(budget), best * per_window)
            if kth < 0:
                continue
            n = int(math.ceil(kth / per_window * (1 - 1e-12)))
            if n > best:
                best, where = n, L
    return best, where


def pool_bound(demand: PoolDemand, arrival_s, ttft_deadline_s, last_deadline_s, ok: np.ndarray, budget: int,
               lengths) -> tuple[int, str]:
    """Fewest replicas of one pool and what binds ("GPU time" or "KV cache", with the window)."""
    best, why = 1, "GPU time"
    a, t1, t2 = arrival_s[ok], ttft_deadline_s[ok], last_deadline_s[ok]
    # either way of sharing a step's fixed cost gives a valid bound: the one that asks more work of the
    # requests that can meet the SLA is used (one pass instead of two)
    rule = max(demand.work_s, key=lambda r: float(demand.work_s[r][1][ok].sum()))
    for first, both in (demand.work_s[rule],):
        n, L = fewest_replicas(a, t1, t2, first[ok], both[ok], 1.0, budget, lengths)
        if n > best:
            best, why = n, f"GPU time ({_window_text(L)})"
    if demand.kv_token_s is not None and math.isfinite(demand.kv_tokens):
        kv = demand.kv_token_s[ok]
        n, L = fewest_replicas(a, t1, t2, np.zeros_like(kv), kv, demand.kv_tokens, budget, lengths)
        if n > best:
            best, why = n, f"KV cache ({_window_text(L)})"
    return best, why


def _window_text(L: float) -> str:
    return f"in bursts of {L:.3g} s" if math.isfinite(L) else "over the trace"


def budget_of(n_requests: int, attainment: float) -> int:
    """Requests a fleet meeting ``attainment`` may miss: ``N - ceil(attainment N)``."""
    return n_requests - int(math.ceil(attainment * n_requests - 1e-9))


__all__ = ["Bound", "PoolDemand", "WorkCoefficients", "alone_times", "budget_of", "fewest_replicas", "pool_bound",
           "request_work_s", "work_coefficients"]
