"""A plain-Python, step-by-step replay of vLLM v0.2 scheduling on one replica that records every step.

It exists for calibration (:mod:`workbench.study.fidelity.calibration` needs to know
which steps each request lived through and what each step contained) and as an
independent reference for the compiled continuous engine on small traces.  It
loops over the running batch every step, so it is meant for thousands of
requests, not millions.

Rules (vLLM v0.2, ``chunked_prefill=False``, recompute preemption):

1. A request joins the FCFS waiting queue at ``arrival_s + a0 + a1 * prompt_tokens``
   (the step model's arrival overhead).
2. When the replica is free and requests wait, a *prefill step* admits them from
   the front of the queue while the running batch stays within ``max_num_seqs``,
   the step's prompt tokens within ``max_num_batched_tokens`` and their
   ``ceil(prompt / block_size)`` blocks fit in the free KV blocks; it stops at
   the first that does not fit (FCFS: no skipping).  Each admitted request emits
   its first token at the end of the step.  A request that could never be
   served (a prompt of more tokens than ``max_num_batched_tokens``, or more
   blocks than ``kv_blocks`` at its last token, ``ceil((prompt + output - 1) /
   block_size)``) is rejected up front and never queues.
3. Otherwise, if requests run, a *decode step*: each running request (in
   admission order) needs room for ``prompt + generated`` tokens, i.e. one more
   block when that crosses a block boundary; when no block is free the most
   recently admitted running request is preempted (its blocks freed, its
   generated tokens lost, back to the front of the queue) until the block
   fits, or the request itself is the one preempted.  Every request still
   running emits one token at the end of the step, over a context of
   ``prompt + generated`` tokens; a request that reaches its output length
   finishes and frees its blocks.
4. Step times come from :class:`~workbench.sim.steptime.StepTimeModel`
   (``prefill_time_s`` / ``decode_time_s``); the per-token overhead only shifts
   reported times (added by the caller), never the schedule.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from workbench.sim.steptime import StepTimeModel

PREFILL, DECODE = 0, 1


@dataclass(frozen=True)
class StepLog:
    """Every step (start_s, end_s, kind, n, sum_l, sum_l2, sum_ctx) and every request's times on the GPU."""

    start_s: np.ndarray
    end_s: np.ndarray
    kind: np.ndarray          # PREFILL or DECODE
    n: np.ndarray             # requests in the step
    sum_l: np.ndarray         # prefill tokens (prefill steps)
    sum_l2: np.ndarray        # sum of squared prompt lengths (prefill steps)
    sum_ctx: np.ndarray       # total context (decode steps)
    entry_s: np.ndarray       # when each request joined the queue (arrival + arrival overhead)
    first_token_s: np.ndarray  # end of the step that produced its first token (first time), NaN if rejected
    finish_s: np.ndarray      # end of the step that produced its last token, NaN if rejected
    preemptions: np.ndarray
    rejected: np.ndarray      # bool


def replay_steps(arrival_s, prompt_tokens, output_tokens, step: StepTimeModel, *, max_num_seqs: int,
                 max_num_batched_tokens: int, block_size: int, kv_blocks: int) -> StepLog:
    """Replay requests through one vLLM v0.2 replica (rules in the module docstring)."""
    arrival_s = np.asarray(arrival_s, dtype=np.float64)
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    out = np.asarray(output_tokens, dtype=np.int64)
    n_req = arrival_s.size
    a0, a1 = step.arrival_overhead_s
    entry = arrival_s + a0 + a1 * prompt
    rejected = (prompt > max_num_batched_tokens) | (-(-(prompt + out - 1) // block_size) > kv_blocks)
    order = np.argsort(entry, kind="stable")
    order = order[~rejected[order]]
    # plain Python lists: this loop touches single elements, where numpy scalars are slow
    prompt_l, out_l, entry_l = prompt.tolist(), out.tolist(), entry.tolist()
    first, finish = [math.nan] * n_req, [math.nan] * n_req
    preempt, generated, blocks = [0] * n_req, [0] * n_req, [0] * n_req
    pa, pb, pc = step.prefill
    small, large = step.decode, step.decode_large
    large_from = step.decode_large_threshold if large is not None else math.inf
    steps = []
    waiting: deque[int] = deque()
    running: list[int] = []      # admission order
    free_blocks = kv_blocks
    queue_order = order.tolist()
    next_arrival, t, n_queued = 0, 0.0, len(queue_order)
    while next_arrival < n_queued or waiting or running:
        if not waiting and not running and next_arrival < n_queued:
            t = max(t, entry_l[queue_order[next_arrival]])
        while next_arrival < n_queued and entry_l[queue_order[next_arrival]] <= t:
            waiting.append(queue_order[next_arrival])
            next_arrival += 1
        admitted, tokens = [], 0
        while waiting:
            r = waiting[0]
            need = -(-prompt_l[r] // block_size)
            if (len(running) + len(admitted) >= max_num_seqs or tokens + prompt_l[r] > max_num_batched_tokens
                    or need > free_blocks):
                break
            waiting.popleft()
            admitted.append(r)
            tokens += prompt_l[r]
            free_blocks -= need
            blocks[r] = need
        if admitted:
            sum_l2 = sum(prompt_l[r] ** 2 for r in admitted)
            duration = pa + pb * tokens + pc * sum_l2
            steps.append((t, t + duration, PREFILL, len(admitted), tokens, sum_l2, 0))
            t += duration
            for r in admitted:
                generated[r] = 1
                if math.isnan(first[r]):
                    first[r] = t
                if out_l[r] == 1:
                    finish[r] = t
                    free_blocks += blocks[r]
                    blocks[r] = 0
                else:
                    running.append(r)
            continue
        if not running:
            continue
        i = 0
        while i < len(running):
            r = running[i]
            need = -(-(prompt_l[r] + generated[r]) // block_size) - blocks[r]
            while need > free_blocks:
                victim = running.pop()
                free_blocks += blocks[victim]
                blocks[victim], generated[victim] = 0, 0
                preempt[victim] += 1
                waiting.appendleft(victim)
                if victim == r:
                    break
            if i < len(running) and running[i] == r:
                free_blocks -= need
                blocks[r] += need
                i += 1
        if not running:
            continue
        n = len(running)
        context = sum(prompt_l[r] + generated[r] for r in running)
        a, b, c = large if n >= large_from else small
        duration = a + b * context + c * n
        steps.append((t, t + duration, DECODE, n, 0, 0, context))
        t += duration
        still = []
        for r in running:
            generated[r] += 1
            if generated[r] >= out_l[r]:
                finish[r] = t
                free_blocks += blocks[r]
                blocks[r] = 0
            else:
                still.append(r)
        running = still
    table = np.array(steps, dtype=np.float64).reshape(-1, 7)
    return StepLog(table[:, 0], table[:, 1], table[:, 2].astype(np.int64), table[:, 3].astype(np.int64),
                   table[:, 4], table[:, 5], table[:, 6], entry, np.array(first), np.array(finish),
                   np.array(preempt, dtype=np.int64), rejected)


__all__ = ["DECODE", "PREFILL", "StepLog", "replay_steps"]
