"""A plain-Python, event-by-event replay of disaggregated prefill/decode serving that records every step.

It follows the rules of :mod:`workbench.sim.disagg_engine` (numbered there, R1-R12) one
step at a time, looping over every batch: it is the independent reference the
compiled engine is tested against (exactly), and the step log that calibration
(:mod:`workbench.study.fidelity.calibration_disagg`) reads to know which steps,
transfers and waits each request lived through.  Meant for thousands of requests,
not millions.

Everything is described by :class:`DisaggSettings` (plain numbers: the
scenario's :class:`~workbench.sim.config.SimConfig` fields, the two pools'
step-time coefficients or step tables and the KV bytes per token), so the
replay has no dependency on the compiled engine.  A pool with a step table
(kernel profiles, roofline: :mod:`workbench.sim.steptable`) is priced step by
step from it, a decode step from the contexts of its requests (their sum, the
longest and the shortest), where the compiled engine prices runs of decode
steps in closed form and tracks the longest and shortest context per lane.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workbench.sim.steptable import StepTable

from workbench.sim.routers import DISAGG_ROUTERS, LEAST_OUTSTANDING, ROUND_ROBIN  # the compiled engine's codes too

# event classes, processed in this order at equal times (then by instance index)
EV_JOIN, EV_PREFILL, EV_DECODE = 0, 1, 2


@dataclass(frozen=True)
class DisaggSettings:
    """Plain numbers the replay (and the compiled engine) run on; see :mod:`workbench.sim.disagg_engine`."""

    prefill_replicas: int
    decode_replicas: int
    decode_pp: int
    block_size: int
    prefill_kv_blocks: int
    decode_kv_blocks: int
    prefill_max_batch_size: int
    prefill_max_tokens: int
    decode_max_batch_size: int
    decode_waiting_block_fraction: float
    prefill_router: int
    decode_router: int
    kv_link_latency_s: float
    kv_link_bytes_per_s: float
    kv_bytes_per_token: float
    pipeline_overhead_s: float    # the decode model's per-step overhead that every pipeline stage repeats (R9)
    prefill_coef: tuple   # (a, b, c) seconds: a + b*sum(l) + c*sum(l^2)
    decode_coef: tuple    # (a, b, c, a_large, b_large, c_large, threshold): a + b*sum(ctx) + c*n
    arrival_overhead_s: tuple = (0.0, 0.0)
    # a pool whose model is a step table is priced from it, not from its coefficients (R3, R9)
    prefill_table: StepTable | None = field(default=None, repr=False)
    decode_table: StepTable | None = field(default=None, repr=False)

    def transfer_s(self, prompt_tokens: int) -> float:
        """KV transfer time of a prompt: latency + prompt x KV bytes per token / link bytes per second (R6)."""
        return self.kv_link_latency_s + prompt_tokens * self.kv_bytes_per_token / self.kv_link_bytes_per_s

    def table_arrays(self, pool: str) -> tuple[np.ndarray, np.ndarray]:
        """The ``(tf, ti)`` arrays the compiled engine takes for ``pool`` ("prefill" or "decode"): its table
        packed for the pool's steps (a fresh ``tf``: the engine writes its scratch slots), or the empty table
        that means "price from the coefficients".  A prefill step holds up to ``prefill_max_tokens`` tokens and
        no decodes; a decode micro-batch at most min(``decode_max_batch_size``, ``decode_kv_blocks``) requests
        (each holds a block at least)."""
        from workbench.sim.steptable import DENSE_MAX, TF_HEAD, TI_N

        if pool == "prefill" and self.prefill_table is not None:
            return self.prefill_table.pack(1, min(self.prefill_max_tokens, DENSE_MAX))
        if pool == "decode" and self.decode_table is not None:
            return self.decode_table.pack(max(1, min(self.decode_max_batch_size, self.decode_kv_blocks)))
        return np.zeros(TF_HEAD), np.zeros(TI_N, np.int64)

    @cached_property
    def priced_tables(self) -> dict:
        """Pool -> its ``(tf, ti)``, packed once for pricing steps from Python (the replay, the checks)."""
        return {pool: self.table_arrays(pool) for pool in ("prefill", "decode")}

    def prefill_time_s(self, sum_l: float, sum_l2: float, count: int = 1) -> float:
        """A prefill step of ``count`` prompts of ``sum_l`` tokens in all (``sum_l2``: their squares summed)."""
        if self.prefill_table is not None:
            from workbench.sim.steptable import step_time_py

            tf, ti = self.priced_tables["prefill"]
            return float(step_time_py(tf, ti, int(sum_l), int(count), 0, float(sum_l2), 0, 0.0, 0.0, 0.0))
        a, b, c = self.prefill_coef
        return a + b * sum_l + c * sum_l2

    def decode_time_s(self, n: int, sum_ctx: float, longest: float | None = None,
                      shortest: float | None = None) -> float:
        """One micro-batch's step time over the whole model (all stages): ``n`` requests whose contexts sum to
        ``sum_ctx``, the ``longest`` and ``shortest`` of them (a step table's skew correction; default: all at
        the mean)."""
        if self.decode_table is not None:
            from workbench.sim.steptable import step_time_py

            tf, ti = self.priced_tables["decode"]
            mean = sum_ctx / n
            return float(step_time_py(tf, ti, 0, 0, 0, 0.0, int(n), float(sum_ctx),
                                      float(mean if longest is None else longest),
                                      float(mean if shortest is None else shortest)))
        a, b, c, al, bl, cl, threshold = self.decode_coef
        if n >= threshold:
            a, b, c = al, bl, cl
        return a + b * sum_ctx + c * n

    def stage_s(self, step_s: float) -> float:
        """A pipeline stage's time for a micro-batch (R9): (step - overhead) / pp + overhead."""
        if self.decode_pp == 1:
            return step_s
        return (step_s - self.pipeline_overhead_s) / self.decode_pp + self.pipeline_overhead_s


def rejection(prompt, output, s: DisaggSettings) -> np.ndarray:
    """Per request: 0 = served, 1 = never fits an instance's KV cache, 2 = prompt over the prefill token budget (R2)."""
    prompt = np.asarray(prompt, dtype=np.int64)
    output = np.asarray(output, dtype=np.int64)
    bs = s.block_size
    peak_decode = -(-(prompt + output - 1) // bs)
    reason = np.zeros(prompt.size, np.int8)
    reason[prompt > s.prefill_max_tokens] = 2
    kv = (-(-prompt // bs) > s.prefill_kv_blocks) | ((output > 1) & (peak_decode > s.decode_kv_blocks))
    reason[kv] = 1
    return reason


@dataclass(frozen=True)
class DisaggStepLog:
    """What the replay recorded.

    Per request (NaN / -1 when rejected or not applicable): ``entry_s`` (joined the prefill queue),
    ``prefill_instance``, ``prefill_start_s`` (its prefill step began), ``first_token_s`` (that step ended),
    ``decode_instance``, ``transfer_start_s``, ``transfer_end_s``, ``decode_start_s`` (its first decode
    micro-batch was launched), ``finish_s`` (its last token), ``swaps``, ``reason`` (0 served, 1/2 rejected).
    ``prefill_steps``: rows (instance, start_s, end_s, requests, sum_l, sum_l2); ``decode_steps``: rows
    (instance, lane, launch_s, end_s, requests, sum_ctx); ``transfers``: rows (instance, start_s, end_s,
    request).  ``decode_steps_of[r]``: the row indices of the micro-batches request r was in.
    """

    entry_s: np.ndarray
    prefill_instance: np.ndarray
    prefill_start_s: np.ndarray
    first_token_s: np.ndarray
    decode_instance: np.ndarray
    transfer_start_s: np.ndarray
    transfer_end_s: np.ndarray
    decode_start_s: np.ndarray
    finish_s: np.ndarray
    swaps: np.ndarray
    reason: np.ndarray
    prefill_steps: np.ndarray
    decode_steps: np.ndarray
    transfers: np.ndarray
    decode_steps_of: list
    prefill_busy_s: np.ndarray
    decode_busy_s: np.ndarray
    first_token_grad: np.ndarray | None = None
    finish_grad: np.ndarray | None = None


class Dual:
    """A time and its gradient with respect to the step-time coefficients (:data:`GRAD_NAMES`).

    The replay's arithmetic is additions of step durations and maxima of times, so every time is
    piecewise linear in the coefficients; carrying the gradient along gives the schedule's exact local
    linearisation (what calibration fits).  Comparisons use the value only, so a replay with gradients
    takes exactly the decisions of one without.
    """

    __slots__ = ("v", "g")

    def __init__(self, v: float, g: np.ndarray):
        self.v = v
        self.g = g

    def __add__(self, other):
        if isinstance(other, Dual):
            return Dual(self.v + other.v, self.g + other.g)
        return Dual(self.v + other, self.g)

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Dual):
            return Dual(self.v - other.v, self.g - other.g)
        return Dual(self.v - other, self.g)

    def __float__(self):
        return self.v

    def _val(other):
        return other.v if isinstance(other, Dual) else other

    def __lt__(self, other):
        return self.v < Dual._val(other)

    def __le__(self, other):
        return self.v <= Dual._val(other)

    def __gt__(self, other):
        return self.v > Dual._val(other)

    def __ge__(self, other):
        return self.v >= Dual._val(other)

    def __eq__(self, other):
        return self.v == Dual._val(other)

    def __ne__(self, other):
        return self.v != Dual._val(other)

    __hash__ = None


# the coefficients a replay with gradients differentiates by (seconds)
GRAD_NAMES = ("prefill_a", "prefill_b", "prefill_c", "arrival_overhead_a", "arrival_overhead_b",
              "decode_a", "decode_b", "decode_c", "decode_large_a", "decode_large_b", "decode_large_c",
              "pipeline_overhead_s")


def _value(t) -> float:
    return t.v if isinstance(t, Dual) else float(t)


def replay_disagg(arrival_s, prompt_tokens, output_tokens, s: DisaggSettings, *, gradients: bool = False,
                  record_membership: bool = False) -> DisaggStepLog:
    """Replay requests through the disaggregated deployment ``s`` (rules R1-R12 of the compiled engine).

    ``gradients=True``: also return, per request, the gradient of its first-token and finish times with
    respect to the coefficients :data:`GRAD_NAMES` (``first_token_grad``, ``finish_grad``: n x 12); pools priced
    by step tables have no such coefficients, so ``gradients=True`` refuses them.
    """
    if gradients and (s.prefill_table is not None or s.decode_table is not None):
        raise ValueError("gradients=True: the gradients are with respect to the linear step-time coefficients, and "
                         f"the {'prefill' if s.prefill_table is not None else 'decode'} pool is priced by a step "
                         "table; replay without gradients, or calibrate a linear model")
    arrival = np.asarray(arrival_s, dtype=np.float64)
    prompt = [int(v) for v in np.asarray(prompt_tokens)]
    out = [int(v) for v in np.asarray(output_tokens)]
    n = arrival.size
    a0, a1 = s.arrival_overhead_s
    entry = arrival + a0 + a1 * np.asarray(prompt, dtype=np.float64)
    reason = rejection(prompt, out, s)
    order = [int(r) for r in np.argsort(entry, kind="stable") if reason[r] == 0]
    bs = s.block_size
    P, D, pp = s.prefill_replicas, s.decode_replicas, s.decode_pp
    cap_p, cap_d = s.prefill_kv_blocks, s.decode_kv_blocks
    K = len(GRAD_NAMES)
    unit = np.eye(K) if gradients else None
    pa, pb, pc = s.prefill_coef
    da, db, dc, la, lb, lc, threshold = s.decode_coef

    def entry_time(r):
        if not gradients:
            return float(entry[r])
        return Dual(float(entry[r]), unit[3] + prompt[r] * unit[4])

    def prefill_duration(sum_l, sum_l2, count):
        value = s.prefill_time_s(sum_l, sum_l2, count)
        if not gradients:
            return value
        return Dual(value, unit[0] + sum_l * unit[1] + sum_l2 * unit[2])

    def stage_duration(n_req, ctx, longest, shortest):
        step = s.decode_time_s(n_req, ctx, longest, shortest)
        value = s.stage_s(step)
        if not gradients:
            return value
        k = 8 if n_req >= threshold else 5
        g = unit[k] + ctx * unit[k + 1] + n_req * unit[k + 2]
        if pp > 1:
            g = g / pp + (1.0 - 1.0 / pp) * unit[11]
        return Dual(value, g)

    pf_inst, dc_inst = [-1] * n, [-1] * n
    pf_start, first, x_start, x_end, dc_start, finish = ([None] * n for _ in range(6))
    swaps, generated = [0] * n, [0] * n
    membership = [[] for _ in range(n)] if record_membership else None
    prefill_rows, decode_rows, transfer_rows = [], [], []
    pf_busy, dc_busy = [0.0] * P, [0.0] * D

    # prefill instances
    pq = [deque() for _ in range(P)]
    p_batch = [None] * P          # the step in flight: list of requests
    p_used = [0] * P              # in-step prompt blocks + held (prefilled, not yet moved) blocks
    p_out = [0] * P               # outstanding: routed, not yet prefilled
    p_event = [False] * P         # an EV_PREFILL event is pending
    # decode instances
    bridge = [deque() for _ in range(D)]
    waiting = [deque() for _ in range(D)]
    waiting_blocks = [0] * D
    swapped = [deque() for _ in range(D)]
    lanes = [[[] for _ in range(pp)] for _ in range(D)]     # running lists, admission order
    lane_end = [[None] * pp for _ in range(D)]               # completion of the micro-batch in flight
    last_lane = [pp - 1] * D      # the lane launched last (DistServe's cur_index)
    stage_free = [[0.0] * pp for _ in range(D)]
    d_used = [0] * D
    d_out = [0] * D
    x_req = [-1] * D              # request being transferred (-1: none)
    x_until = [None] * D
    d_version = [0] * D           # an EV_DECODE event is current only if it carries the instance's version
    d_pending = [False] * D
    rr_p = rr_d = 0

    events = []                   # (time, class, index, seq, version)
    seq = [0]

    def push(t, cls, idx, version=0):
        seq[0] += 1
        heapq.heappush(events, (t, cls, idx, seq[0], version))

    def blocks(tokens):
        return -(-tokens // bs)

    def wake_prefill(i, t):
        if p_batch[i] is None and not p_event[i]:
            p_event[i] = True
            push(t, EV_PREFILL, i)

    def decode_idle(j):
        return x_req[j] < 0 and all(e is None for e in lane_end[j])

    def schedule_decode(j):
        """The instance's next controller event: a transfer's end, else the earliest lane completion."""
        d_version[j] += 1
        if x_req[j] >= 0:
            t_next = x_until[j]
        else:
            ends = [e for e in lane_end[j] if e is not None]
            t_next = min(ends) if ends else None
        d_pending[j] = t_next is not None
        if t_next is not None:
            push(t_next, EV_DECODE, j, d_version[j])

    for r in order:
        push(entry_time(r), EV_JOIN, r)

    while events:
        t, cls, idx, _, version = heapq.heappop(events)
        if cls == EV_JOIN:
            r = idx
            # R1: route to a prefill instance
            if s.prefill_router == ROUND_ROBIN:
                i = rr_p
                rr_p = (rr_p + 1) % P
            else:
                i = min(range(P), key=lambda h: (p_out[h], h))
            pf_inst[r] = i
            pq[i].append(r)
            p_out[i] += 1
            wake_prefill(i, t)
            continue

        if cls == EV_PREFILL:
            i = idx
            if p_batch[i] is not None:
                # R4: the step's requests produce their first token
                batch = p_batch[i]
                p_batch[i] = None
                for r in batch:
                    first[r] = t
                    generated[r] = 1
                    p_out[i] -= 1
                    if out[r] == 1:
                        finish[r] = t
                        p_used[i] -= blocks(prompt[r])
                        continue
                    # R5: route to a decode instance; the KV stays here until moved
                    if s.decode_router == ROUND_ROBIN:
                        j = rr_d
                        rr_d = (rr_d + 1) % D
                    else:
                        j = min(range(D), key=lambda h: (d_out[h], h))
                    dc_inst[r] = j
                    d_out[j] += 1
                    bridge[j].append(r)
                    if decode_idle(j) and not d_pending[j]:
                        d_version[j] += 1
                        d_pending[j] = True
                        push(t, EV_DECODE, j, d_version[j])
            p_event[i] = False
            # R3: the next prefill step, FCFS under the batch, token and block limits
            batch, tokens, need = [], 0, 0
            while pq[i]:
                r = pq[i][0]
                b = blocks(prompt[r])
                if (len(batch) + 1 > s.prefill_max_batch_size or tokens + prompt[r] > s.prefill_max_tokens
                        or p_used[i] + need + b > cap_p):
                    break
                pq[i].popleft()
                batch.append(r)
                tokens += prompt[r]
                need += b
            if batch:
                p_used[i] += need
                sum_l2 = float(sum(prompt[r] * prompt[r] for r in batch))
                dt = prefill_duration(tokens, sum_l2, len(batch))
                for r in batch:
                    pf_start[r] = t
                p_batch[i] = batch
                end = t + dt
                pf_busy[i] += _value(dt)
                prefill_rows.append((i, _value(t), _value(end), len(batch), tokens, sum_l2))
                p_event[i] = True
                push(end, EV_PREFILL, i)
            continue

        # ------------------------------------------------------------ EV_DECODE: the instance's controller
        j = idx
        if version != d_version[j]:
            continue                    # superseded
        d_pending[j] = False
        if x_req[j] >= 0:
            # R6: the transfer ends: the request waits on this instance, the prefill side frees its blocks
            r = x_req[j]
            x_req[j] = -1
            waiting[j].append(r)
            waiting_blocks[j] += blocks(prompt[r] + 1)
            i = pf_inst[r]
            p_used[i] -= blocks(prompt[r])
            if pq[i]:
                wake_prefill(i, t)
        # R10: micro-batches that have completed (deferred ones too) produce their tokens
        for m in range(pp):
            if lane_end[j][m] is not None and lane_end[j][m] <= t:
                lane_end[j][m] = None
                still = []
                for r in lanes[j][m]:
                    generated[r] += 1
                    if generated[r] >= out[r]:
                        finish[r] = t
                        d_used[j] -= blocks(prompt[r] + out[r] - 1)
                        d_out[j] -= 1
                    else:
                        still.append(r)
                lanes[j][m] = still
        # R6: accept the bridge's head if the waiting blocks are under the threshold and its blocks are free
        if bridge[j]:
            r = bridge[j][0]
            b = blocks(prompt[r] + 1)
            if waiting_blocks[j] < s.decode_waiting_block_fraction * cap_d and b <= cap_d - d_used[j]:
                bridge[j].popleft()
                d_used[j] += b
                x_req[j] = r
                x_start[r] = t
                x_until[j] = t + s.transfer_s(prompt[r])
                x_end[r] = x_until[j]
                transfer_rows.append((j, _value(t), _value(x_until[j]), r))
                schedule_decode(j)
                continue
        # R7-R9: launch every lane with nothing in flight, in cyclic order after the lane launched last
        after = last_lane[j]
        for step_k in range(1, pp + 1):
            m = (after + step_k) % pp
            if lane_end[j][m] is not None:
                continue
            lane = lanes[j][m]
            need = sum(1 for r in lane if (prompt[r] + generated[r] - 1) % bs == 0)
            preempted = 0
            # R8: swap out the most recently admitted until this step's new blocks fit
            while lane and d_used[j] + need > cap_d:
                v = lane.pop()
                c = prompt[v] + generated[v]
                if (c - 1) % bs == 0:
                    need -= 1
                d_used[j] -= blocks(c - 1)
                swaps[v] += 1
                preempted += 1
                swapped[j].appendleft(v)   # victims go newest first, each in front: admission order is kept
            # (R7 after R8: a victim cannot fit again in the launch that swapped it out, it heads the swapped queue)
            # R7: admission: swapped first (their blocks must fit), then moved requests (blocks reserved)
            while swapped[j] and len(lane) < s.decode_max_batch_size:
                r = swapped[j][0]
                c = prompt[r] + generated[r]
                if d_used[j] + need + blocks(c) > cap_d:
                    break
                swapped[j].popleft()
                d_used[j] += blocks(c - 1)
                if (c - 1) % bs == 0:
                    need += 1
                lane.append(r)
            others = min((len(lanes[j][k]) for k in range(pp) if k != m), default=1 << 60)
            while waiting[j] and len(lane) < s.decode_max_batch_size and len(lane) <= others:
                r = waiting[j].popleft()
                waiting_blocks[j] -= blocks(prompt[r] + 1)
                d_used[j] -= blocks(prompt[r] + 1) - blocks(prompt[r])   # the reserved slot: counted in need
                if prompt[r] % bs == 0:
                    need += 1
                dc_start[r] = t
                lane.append(r)
            if not lane:
                continue
            d_used[j] += need
            if d_used[j] > cap_d:
                raise AssertionError("decode instance over its KV capacity")
            contexts = [prompt[r] + generated[r] for r in lane]
            ctx = sum(contexts)
            tau = stage_duration(len(lane), float(ctx), max(contexts), min(contexts))
            begin = t
            for stage in range(pp):
                begin = max(begin, stage_free[j][stage])
                stage_free[j][stage] = begin + tau
                begin = begin + tau
            lane_end[j][m] = begin
            dc_busy[j] += _value(tau)          # every stage computes tau for this micro-batch
            last_lane[j] = m
            if record_membership:
                for r in lane:
                    membership[r].append(len(decode_rows))
            decode_rows.append((j, m, _value(t), _value(begin), len(lane), float(ctx)))
        schedule_decode(j)

    def values(times):
        return np.array([math.nan if x is None else _value(x) for x in times], dtype=np.float64)

    def grads(times):
        g = np.full((n, K), np.nan)
        for r, x in enumerate(times):
            if x is not None:
                g[r] = x.g if isinstance(x, Dual) else 0.0
        return g

    return DisaggStepLog(
        entry_s=entry, prefill_instance=np.array(pf_inst), prefill_start_s=values(pf_start),
        first_token_s=values(first), decode_instance=np.array(dc_inst), transfer_start_s=values(x_start),
        transfer_end_s=values(x_end), decode_start_s=values(dc_start), finish_s=values(finish),
        swaps=np.array(swaps), reason=reason,
        prefill_steps=np.array(prefill_rows, dtype=np.float64).reshape(-1, 6),
        decode_steps=np.array(decode_rows, dtype=np.float64).reshape(-1, 6),
        transfers=np.array(transfer_rows, dtype=np.float64).reshape(-1, 4),
        decode_steps_of=membership or [], prefill_busy_s=np.array(pf_busy), decode_busy_s=np.array(dc_busy),
        first_token_grad=grads(first) if gradients else None, finish_grad=grads(finish) if gradients else None)


__all__ = ["DISAGG_ROUTERS", "Dual", "GRAD_NAMES", "DisaggSettings", "DisaggStepLog", "LEAST_OUTSTANDING",
           "ROUND_ROBIN", "rejection", "replay_disagg"]
