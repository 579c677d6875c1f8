"""Compiled loops of the fleet planner's bound (:mod:`workbench.study.runs.fleet_bound`, which states the
bound and proves it): a request's prefill and decode time alone on a replica from a packed step table, and the
slack of the requests in each window of a trace.  Kept with the engines so that the study layer compiles
nothing (numba's cache key covers the modules that import numba, :mod:`workbench.sim.jit_cache`)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from workbench.sim.steptable import table_decode_run, table_step_s


@njit(cache=True)
def alone_table(tf, ti, prompt, output, chunk):
    """Prefill time (chunks of ``chunk`` tokens, alone) and total decode time (one decode a step) per
    request, from a packed step table."""
    n = prompt.size
    prefill = np.empty(n)
    decode = np.zeros(n)
    for i in range(n):
        P = prompt[i]
        done = 0
        t = 0.0
        while done < P:
            l = min(chunk, P - done)
            t += table_step_s(tf, ti, float(l), 1, float(done), float(l) * float(done + l), 0, 0.0, 0.0, 0.0)
            done += l
        prefill[i] = t
        left = output[i] - 1
        ctx = P + 1
        total = 0.0
        while left > 0:
            e, f, k = table_decode_run(tf, ti, 1, float(ctx), float(ctx), float(ctx))
            m = min(k, left)
            total += m * e + f * m * (m - 1) / 2.0
            ctx += m
            left -= m
        decode[i] = total
    return prefill, decode


@njit(cache=True)
def window_kth(arrival_s, first_deadline_s, second_deadline_s, first, both, L, offset, budget, threshold):
    """The ``budget + 1``-th largest slack of the requests with a share in their window (see the module
    docstring), windows of length ``L`` starting at ``-offset`` (arrivals ascending, so a window's requests
    are contiguous); -1 when no window's total share exceeds ``threshold`` (then no slack does either) or
    when at most ``budget`` requests have a share."""
    n = arrival_s.size
    share = np.zeros(n)
    window = np.empty(n, np.int64)
    largest, count = 0.0, 0
    total, current = 0.0, -(2 ** 62)
    for i in range(n):
        w = math.floor((arrival_s[i] + offset) / L)
        window[i] = w
        if math.floor((second_deadline_s[i] + offset) / L) == w:
            share[i] = both[i]
        elif math.floor((first_deadline_s[i] + offset) / L) == w:
            share[i] = first[i]
        if w != current:
            current, total = w, 0.0
        if share[i] > 0.0:
            total += share[i]
            count += 1
            largest = max(largest, total)
    if largest <= threshold or count <= budget:
        return -1.0
    slack = np.empty(count)
    k = 0
    i = 0
    while i < n:
        j = i
        while j < n and window[j] == window[i]:
            j += 1
        ranked = np.sort(share[i:j])[::-1]
        rest = ranked.sum()
        for m in range(j - i):
            if ranked[m] <= 0.0:
                break
            slack[k] = rest
            rest -= ranked[m]
            k += 1
        i = j
    return np.partition(slack, count - budget - 1)[count - budget - 1]


__all__ = ["alone_table", "window_kth"]
