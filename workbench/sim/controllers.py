"""Batch-size controllers of the dynamic schedulers, after Pang, Li & Wang (arXiv 2503.05248).

Small compiled functions over per-bin state arrays, so that any engine can
call them at the events it has (a completed batch, a dispatch).  Each takes
the bin index ``j`` and updates that bin's entries in place.

* :func:`sla_update`: Algorithm 2 on batch service time, with one change
  (issue 9, item 1): when the controller sits at its smallest interval and the
  batches there still miss the budget, the batch size cannot reach the target
  and the controller *releases* the bin: its limit goes to the top of the
  interval (as if the budget were never binding) and over-budget feedback is
  ignored for ``retry_batches`` completed batches of that bin, after which it
  tries shrinking again (``retry_batches = 0``: never).  A batch under budget
  ends a release at once.  Why release rather than hold at the floor: service
  time grows with the longest request far more than with the batch size, so
  in a bin of long requests even a batch of one misses; shrinking there buys
  no request its SLA and only lowers throughput, which lengthens every
  queue (the collapse of issue 9: 93% of GPU time in that bin at batch 2.7).
* :func:`token_stats_add` and :func:`memory_limit`: Algorithm 1 adapted to a
  static batch (see :mod:`workbench.sim.static_engine`).
"""

from __future__ import annotations

import math

from numba import njit

RELEASED_FOREVER = -1   # `released` value: the SLA controller gave up on the bin for the rest of the run


@njit(cache=True)
def sla_initial_limit(b_min, b_max):
    """Algorithm 2 starts mid-interval: ``floor((b_min + b_max) / 2)``."""
    return (b_min + b_max) // 2


@njit(cache=True, inline="always")
def window_mean(win_x, win_y, win_n, j, x, y, window):
    """Add the pair (``x``, ``y``) to row ``j``'s ring of the last ``window`` pairs; return both means.

    Algorithm 2's ``tau`` and ``b_bar``: the static engine feeds (service time, size) of each completed
    batch, the continuous engine (step time, decodes) of each step with decodes.
    """
    w = win_n[j] % window
    win_x[j, w] = x
    win_y[j, w] = y
    win_n[j] += 1
    k = min(win_n[j], window)
    mean_x = 0.0
    mean_y = 0.0
    for w in range(k):
        mean_x += win_x[j, w]
        mean_y += win_y[j, w]
    return mean_x / k, mean_y / k


@njit(cache=True, inline="always")
def sla_update(b_low, b_high, released, j, tau_s, b_bar, budget_s, eps_s, alpha, delta, b_min, b_max,
               retry_batches, allow_release=True):
    """One Algorithm 2 step for bin ``j`` after a completed batch; returns the new ``b_sla``.

    ``tau_s`` and ``b_bar`` are the mean service time and size of the bin's
    last completed batches; ``b_low``/``b_high`` (float arrays) hold the
    interval and ``released`` (int array) the release countdown (0 = active,
    > 0 batches left, ``RELEASED_FOREVER``).  ``allow_release=False`` is Algorithm 2 as
    written (the continuous engine's ``continuous_sla``): it keeps shrinking to ``b_min``.
    """
    over = tau_s > budget_s + eps_s
    if released[j] != 0:
        if not over:
            released[j] = 0                       # the budget is reachable after all: normal control
        else:
            if released[j] > 0:
                released[j] -= 1                  # at 0 the next over-budget batch shrinks again
            return int(math.floor((b_low[j] + b_high[j]) / 2.0))
    if over:
        if allow_release and b_low[j] <= b_min and b_bar <= b_min + alpha:
            # the smallest interval misses too: the lever cannot reach the target, stop pulling it
            b_high[j] = float(b_max)
            b_low[j] = max(float(b_max) - alpha, float(b_min))
            released[j] = retry_batches if retry_batches > 0 else RELEASED_FOREVER
        else:
            b_high[j] = min(max(b_bar, b_low[j] + alpha), float(b_max))
            b_low[j] = max(b_low[j] - delta, float(b_min))
    elif tau_s < budget_s - eps_s:
        b_low[j] = max(min(b_bar, b_high[j] - alpha), float(b_min))
        b_high[j] = min(b_high[j] + delta, float(b_max))
    else:
        b_high[j] = min(b_bar + alpha // 2, float(b_max))
        b_low[j] = max(b_bar - alpha // 2, float(b_min))
    return int(math.floor((b_low[j] + b_high[j]) / 2.0))


@njit(cache=True, inline="always")
def token_stats_add(tok_n, tok_mean, tok_m2, j, tokens):
    """Add one completed request's prompt+output ``tokens`` to bin ``j``'s running mean/variance (Welford)."""
    tok_n[j] += 1.0
    d = tokens - tok_mean[j]
    tok_mean[j] += d / tok_n[j]
    tok_m2[j] += d * (tokens - tok_mean[j])


@njit(cache=True, inline="always")
def batch_limit(mu, sigma, theta, capacity_tokens):
    """The largest ``b`` with ``b mu + theta sqrt(b) sigma <= capacity_tokens`` (at least 1)."""
    root = (-theta * sigma + math.sqrt(theta * theta * sigma * sigma + 4.0 * mu * capacity_tokens)) / (2.0 * mu)
    return max(1, int(math.floor(root * root)))


@njit(cache=True, inline="always")
def memory_limit(tok_n, tok_mean, tok_m2, j, kv_capacity_tokens, theta, previous):
    """Algorithm 1 for bin ``j``: the largest ``b`` with ``b mu + theta sqrt(b) sigma <= capacity``.

    Needs two completed requests for a standard deviation; before that it
    returns ``previous``.  Never below 1 (a single request that fits is
    always allowed; the engine's hard KV cut still applies).
    """
    if tok_n[j] < 2 or tok_mean[j] <= 0:
        return previous
    return batch_limit(tok_mean[j], math.sqrt(max(tok_m2[j], 0.0) / (tok_n[j] - 1.0)), theta, kv_capacity_tokens)
