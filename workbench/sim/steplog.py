"""Every step a replica ran and what it contained, from the continuous engine itself.

:func:`step_features` gives each step's features, over which its time is linear in the step-time model's
coefficients (what a step contained: the checks of the engine's step times use it).
:func:`replay_steps` runs the compiled engine (:func:`workbench.simulate`, so every rule of
:mod:`workbench.sim.continuous_engine` applies: vLLM v0.2 or v1, preemption that keeps generated tokens,
prefix caching) with a step log long enough for the whole run, and expands each logged run of ``k``
identical decode steps into its ``k`` steps (step ``j`` of a run starting at ``t`` with first step time
``E`` and increment ``F``: from ``t + j E + F j (j - 1) / 2``, context sum ``ctx + n j``).  A step's
features are then those of the model: prefill pieces ``sum(l)`` and ``sum(l * (p + l))`` (``p``: tokens
already in the KV cache, cached prefixes included), decodes ``n`` and ``sum(ctx)``; ``kind`` says which
fixed cost it pays (prefill, decode, or both: ``max(a_p, a_d)``).

(Until issue 14 this module was a separate plain-Python replay of the v0.2 rules; the engine's log makes it
exact for every rule, and the independent check of the engine is ``tests/continuous_reference.py``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workbench.sim import continuous_engine as ceng
from workbench.sim.metrics import STATUS_COMPLETED
from workbench.sim.steptime import StepTimeModel

PREFILL, DECODE, MIXED = 0, 1, 2


@dataclass(frozen=True)
class StepLog:
    """Every step (start_s, end_s, kind, n, sum_l, sum_l2, sum_ctx) of one replica, and every request's times."""

    start_s: np.ndarray
    end_s: np.ndarray
    kind: np.ndarray          # PREFILL, DECODE or MIXED (chunked prefill: decodes and prefill pieces in one step)
    n: np.ndarray             # decodes in the step (prefill pieces for a prefill-only step)
    sum_l: np.ndarray         # prefill tokens computed
    sum_l2: np.ndarray        # sum of l * (p + l) over the prefill pieces (sum of l^2 without chunks or cached prefixes)
    sum_ctx: np.ndarray       # total context of the decodes
    entry_s: np.ndarray       # when each request joined the queue (arrival + arrival overhead)
    first_token_s: np.ndarray  # end of the step that produced its first token (first time), NaN if rejected
    finish_s: np.ndarray      # end of the step that produced its last token, NaN if not completed
    preemptions: np.ndarray
    rejected: np.ndarray      # bool: not completed (rejected up front, or dropped after a preemption)
    replica: np.ndarray       # the replica each step ran on


def replay_steps(trace, step: StepTimeModel, cfg) -> StepLog:
    """Run ``trace`` through the continuous engine under ``cfg`` (a continuous scheduler) and log every step."""
    from workbench.sim.simulate import simulate

    capacity = 4 * len(trace) + 1024
    while True:
        res = simulate(trace, cfg, latency=step, step_log=capacity)
        log_f, log_i = res.continuous["log_f"], res.continuous["log_i"]
        if log_f.shape[0] < capacity:
            break
        capacity *= 4            # the log was cut: run again with room for every decision
    k = log_i[:, ceng.S_K]
    row = np.repeat(np.arange(k.size), k)
    j = np.arange(row.size) - np.repeat(np.cumsum(k) - k, k)            # step index within its row
    start_row = log_f[row, ceng.F_START]
    end_row = log_f[row, ceng.F_END]
    prefill = log_i[row, ceng.S_PREFILL_REQS] > 0
    decodes = log_i[row, ceng.S_DECODES]
    # a run's steps take e, e + f, e + 2f, ... (the engine's own arithmetic: e from the model, f = b_d * n)
    kk = k[row]
    ctx_first = log_f[row, ceng.F_CONTEXT]
    a_d, b_d, c_d = _decode_terms(step, decodes)
    e = a_d + (b_d * ctx_first + c_d * decodes)
    f = b_d * decodes
    run = kk > 1
    start = np.where(run, start_row + (j * e + f * (j * (j - 1) / 2.0)), start_row)
    end = np.where(run, start_row + ((j + 1) * e + f * ((j + 1) * j / 2.0)), end_row)
    kind = np.where(prefill & (decodes > 0), MIXED, np.where(prefill, PREFILL, DECODE)).astype(np.int64)
    n = np.where(prefill & (decodes == 0), log_i[row, ceng.S_PREFILL_REQS], decodes).astype(np.int64)
    sum_ctx = np.where(decodes > 0, ctx_first + decodes * j, 0.0)
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    a0, a1 = step.arrival_overhead_s
    c = res.continuous
    return StepLog(start, end, kind, n, log_i[row, ceng.S_PREFILL_TOKENS].astype(np.float64),
                   log_f[row, ceng.F_PREFILL_QUAD], sum_ctx, arrival + a0 + a1 * np.asarray(trace.prompt_tokens),
                   np.asarray(c["first_token_step_end_s"]), np.asarray(c["last_step_end_s"]),
                   np.asarray(c["preemptions"], dtype=np.int64), res.status != STATUS_COMPLETED,
                   log_i[row, ceng.S_REPLICA])


def step_features(steps: StepLog, model: StepTimeModel) -> np.ndarray:
    """One row of the 9 step coefficients' features per step (prefill a, b, c; decode a, b, c; large-batch decode
    a, b, c): the step's time under ``model`` is ``row @ model.coefficients()[:9]``.

    A mixed step (chunked prefill) has both variable parts and one fixed cost, ``max(a_p, a_d)``: its fixed-cost
    feature goes to the kind whose fixed cost ``model`` makes larger."""
    threshold = model.decode_large_threshold if model.decode_large is not None else 2**62
    x = np.zeros((steps.start_s.size, 9))
    has_prefill = steps.kind != DECODE
    has_decode = steps.kind != PREFILL
    mixed = steps.kind == MIXED
    x[has_prefill, 1], x[has_prefill, 2] = steps.sum_l[has_prefill], steps.sum_l2[has_prefill]
    large = has_decode & (steps.n >= threshold)
    small = has_decode & ~large
    x[small, 4], x[small, 5] = steps.sum_ctx[small], steps.n[small]
    x[large, 7], x[large, 8] = steps.sum_ctx[large], steps.n[large]
    a_p = model.prefill[0]
    a_small = model.decode[0]
    a_large = model.decode_large[0] if model.decode_large is not None else a_small
    prefill_fixed = has_prefill & ~(mixed & ((small & (a_small > a_p)) | (large & (a_large > a_p))))
    x[prefill_fixed, 0] = 1.0
    x[small & ~prefill_fixed, 3] = 1.0
    x[large & ~prefill_fixed, 6] = 1.0
    return x


def _decode_terms(step: StepTimeModel, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step, the decode regime's coefficients (a, b, c) for ``n`` decodes."""
    threshold = step.decode_large_threshold if step.decode_large is not None else math.inf
    large = step.decode_large if step.decode_large is not None else step.decode
    return tuple(np.where(n >= threshold, large[i], step.decode[i]) for i in range(3))


__all__ = ["DECODE", "MIXED", "PREFILL", "StepLog", "replay_steps", "step_features"]
