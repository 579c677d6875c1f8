"""Compiled disaggregated serving: prefill instances and decode instances on separate GPUs (DistServe, Splitwise).

``prefill_replicas`` prefill instances (each ``prefill_tp`` GPUs) compute prompts;
the KV cache of each prompt moves over a link to one of ``decode_replicas``
decode instances (each ``decode_tp x decode_pp`` GPUs), which generate the rest
of the output with continuous batching.  The rules, numbered, each with the
DistServe code it follows (``LLMServe/DistServe``: the real engine under
``distserve/``, its simulator under ``simdistserve/``).  The measured runs
this engine is validated against (``data/groundtruth/distserve_opt13b_a100_disagg/``)
are of the real engine, so where the two differ the real engine is followed,
except where said.

Arrivals and prefill
  R1. A request joins at ``arrival_s + a0 + a1 * prompt_tokens`` (the prefill
      model's arrival overhead), joins in time order (ties: trace order), and
      is routed to a prefill instance: ``round_robin`` cycles over them in join
      order; ``least_outstanding`` picks the one with the fewest requests routed
      to it and not yet prefilled (ties: lowest index) (simdistserve
      ``base/scheduler.py`` ``Scheduler._find_best_worker_and_queue``:
      ``_prefill_ips + len(queue)``; the real engine runs one instance per
      server behind a round-robin proxy,
      ``evaluation/2-benchmark-serving/2-start-api-server.py``).
  R2. Rejected before the run, with a reason: a prompt over
      ``prefill_max_tokens`` (it could never enter a prefill batch), a prompt
      whose blocks ``ceil(prompt / block_size)`` exceed a prefill instance's
      ``prefill_kv_blocks``, or (output > 1) a request whose KV at its last
      step, ``ceil((prompt + output - 1) / block_size)`` blocks, exceeds a
      decode instance's ``decode_kv_blocks``.
  R3. A prefill instance runs steps back to back while it can admit: FCFS
      from the head of its queue while the step holds at most
      ``prefill_max_batch_size`` prompts, ``prefill_max_tokens`` prompt tokens,
      and the blocks of the step's prompts plus those it already holds (prompts
      in flight and prefilled prompts whose KV has not moved yet) fit in its
      ``prefill_kv_blocks``; the first that does not fit stops admission
      (``distserve/context_stage_scheduler.py``
      ``ContextStageFCFSScheduler.get_next_batch_and_pop``, limits 1-3).  Step
      time ``a_p + b_p * sum(l) + c_p * sum(l^2)`` from the prefill pool's
      model (``simdistserve/estimators/time_estimator.py`` ``get_prefill_time``).
      A prefill pool whose model is a step table (kernel profiles, roofline:
      :mod:`workbench.sim.steptable`) prices the step from the table instead:
      its prompts as ``count`` pieces of ``sum(l)`` tokens with no cached
      context, ``sum(l (0 + l)) = sum(l^2)`` for the per-piece quadratic term,
      no decodes (``steptable.table_step_s``, as the continuous engine prices a
      prefill-only step).
  R4. The first token comes from the prefill step (its end): ``ttft =
      end - arrival + token_overhead`` (``distserve/single_stage_engine.py``
      ``ContextStageLLMEngine._step`` emits a StepOutput per request).  A
      request with one output token is done there and frees its blocks.

Moving the KV cache
  R5. At its first token a request is routed to a decode instance
      (``round_robin`` in the order requests finish prefill, or
      ``least_outstanding``: fewest routed and not finished; simdistserve
      ``Scheduler.schedule_decode``) and joins that instance's *bridge* queue
      (FCFS).  Its KV stays on the prefill instance, counted against that
      instance's blocks, until moved (``ContextStageLLMEngine._step``: "Cannot
      free blocks now!"; ``unaccepted_queue`` in limit 3).  So when decode is
      slower than prefill, unmoved KV fills the prefill instance, which then
      admits no new prompt: arrivals wait in its queue (back-pressure, visible
      as TTFT).
  R6. A decode instance accepts the head of its bridge when the blocks held by
      moved requests not yet decoding are under ``decode_waiting_block_fraction
      x decode_kv_blocks`` and ``ceil((prompt + 1) / block_size)`` blocks are
      free (``distserve/decoding_stage_scheduler.py``
      ``DecodingStageFCFSScheduler.post_process`` ``should_accept``).  It
      reserves those blocks (the prompt's and the slot its first decode step
      writes: DistServe allocates the prompt's only and counts the slot at
      admission; reserving it means a moved request can always start) and
      moves the KV: ``kv_transfer_s = kv_link_latency_s + prompt_tokens x
      kv_bytes_per_token / (kv_link_gbps x 1e9 / 8)``, bytes per token the
      model's (``SimConfig.kv_gb_per_token_effective``).  Transfers are done one
      at a time by the decode instance's controller, which launches no
      micro-batch meanwhile (``DecodingStageLLMEngine._step`` awaits
      ``post_process`` -> ``_migrate_blocks``).  When the transfer ends the
      prefill side frees the prompt's blocks (``clear_migrated_blocks_callback``)
      and the request waits on the decode instance.

Decoding
  R7. A decode instance runs ``decode_pp`` micro-batches (*lanes*), each with
      its own requests.  When a lane is launched, after R8: swapped-out
      requests re-enter first, FCFS, while the lane holds fewer than
      ``decode_max_batch_size`` and their blocks ``ceil((prompt +
      generated) / block_size)`` fit; then moved requests, FCFS, while the lane
      holds fewer than ``decode_max_batch_size`` and no more than the smallest
      other lane (``DecodingStageFCFSScheduler.get_next_batch``: swapped queue
      first, then waiting).  The balance condition is ours: DistServe admits
      into the lane being launched whatever is waiting, which in a
      deterministic simulation locks into one large and one small lane (the
      larger lane's longer stage time gives it the longer window to collect
      arrivals); DistServe's own simulator re-forms micro-batches every round
      (simdistserve ``Worker._enter_decodes`` takes the first stage's queue).
  R8. Before a lane's step, the blocks its requests need (one more for each
      whose context ``prompt + generated - 1`` is a multiple of ``block_size``)
      must be free; if not, its most recently admitted request is swapped out,
      repeatedly (vLLM's victim; DistServe pops the last of the lane): its
      blocks are freed, its generated tokens kept, it goes to the front of the
      instance's swapped queue (several victims keep their admission order)
      and re-enters by R7 (not in the launch that swapped it out: it heads the
      swapped queue and does not fit).  Swap time over PCIe is not charged
      (DistServe swaps on separate CUDA streams).
  R9. A lane's step takes the decode pool's ``T = a_d + b_d * sum(ctx) + c_d
      * n`` over its ``n`` requests (``ctx = prompt + generated``; the
      large-batch coefficients at ``n >= threshold``;
      ``time_estimator.get_decode_time``).  With ``decode_pp = 1`` the step
      is that.  With ``pp > 1`` it passes through ``pp`` stages in order, each
      taking ``(T - o) / pp + o`` (the step divided by the stages plus a
      per-stage cost ``o (1 - 1/pp)``; ``o`` = the model's
      ``pipeline_overhead_s``, the part of a step's fixed cost every stage
      repeats), each stage serving the micro-batches in launch order; up to
      ``pp`` micro-batches are in flight (``DecodingStageLLMEngine._step``:
      ``batches_in_pipeline``).  DistServe's simulator divides the step by
      ``pp`` with no decode per-stage cost; the measured ``c21d12`` runs show
      a stage is slower than that (see the fidelity notebook).  A decode pool
      whose model is a step table gives ``T`` from the table instead: ``n``
      decodes whose contexts sum to ``sum(ctx)``, with the table's skew
      correction (when it has one) from the lane's longest and shortest
      context (``steptable.table_decode_run``, as the continuous engine's
      ``_schedule_table``; a lane keeps both, and recomputes them from its
      requests when the longest or the shortest leaves); the stage rule is the
      same.
  R10. When a lane's step completes, each of its requests emits a token; one
      that reaches its output length finishes and frees its blocks.  E2E =
      last token - arrival + output x token overheads (the prefill model's for
      the first token, the decode model's for the rest).
  R11. Each decode instance has one controller, as DistServe's decode loop: it
      acts when a lane completes (or, idle, when a request reaches its
      bridge): it records the completed lanes' tokens (a lane that completed
      during a transfer is recorded when the transfer ends), then moves the
      next acceptable bridge request (R6) if any, else launches every lane
      with nothing in flight, in cyclic order after the lane launched last
      (``cur_index`` of ``get_next_batch``).  A bridge request that arrives
      while a lane is in flight waits for its completion.
  R12. Equal times: joins first (trace order), then prefill instances, then
      decode instances (by index).

DistServe's simulator (``simdistserve/``) differs from its engine in ways the
measured runs settle, and this engine follows the engine: the simulator has
no KV capacity on either side (no back-pressure, no swaps; ``base/worker.py``),
no KV transfer (``clusters/disagg.py`` hands a prefilled request straight to a
decode worker), decodes ``output_lens`` steps after the prefill's token (one
more than the engine's ``output - 1``; ``base/request.py`` ``should_finish``),
adds a Ray overhead of 2 ms + 1e-4 ms per token to every step
(``Worker.add_ray_overhead``; here serving overheads are calibrated instead),
and charges no per-stage cost to a pipelined decode (``get_decode_time``:
``pp_const = 0``).

Not modelled, as DistServe has none of them: prefix caching, chunked prefill
(vLLM v1's mixed steps), vLLM's admission watermark and v0.2 padding limit,
the colocated routers, and recompute preemption (a decode instance swaps, R8).
A SimConfig that sets ``prefix_caching``, ``chunked_prefill``,
``kv_watermark``, ``max_paddings`` or ``router`` for this engine is refused
(:class:`~workbench.sim.config.SimConfig`), never run without them.

Records: per request its prefill and decode instance, the start of its prefill
step, its first token, the end of its KV transfer, the launch of its first
decode step, its last token and its swaps; per instance busy time (a decode
instance: the stage time of its micro-batches) and block-seconds of KV in use.
``decode_queue_s = first decode launch - first token - kv_transfer_s``.

Speed: with ``decode_pp = 1`` a series of decode steps with nothing joining
is one event, as in :mod:`workbench.sim.continuous_engine` (whose heap and
block-counting helpers this module uses): ``k`` steps of ``n`` decodes take
``k T + b_d n k (k - 1) / 2``, a heap of finishing decode counts gives the next
finish, a histogram of context modulo ``block_size`` the blocks each step
needs; the series ends at the next finish, when blocks run out, or after the
step in flight when a request reaches the instance's bridge.  With a step
table ``T`` and ``b_d n`` become the table's ``E`` and ``F``, exact while its
linear piece lasts (``steptable.table_decode_run``), and the series ends there
too.  Swapped and
waiting requests cannot enter during such a series: blocks only shrink until
the next finish.  With ``decode_pp > 1`` every micro-batch is an event.

Code layout: the state lives in a few 2-D arrays with named columns (``RQ_*``/``T_*`` per request, ``PS_*``
per prefill instance, ``DS_*``/``DF_*`` per decode instance, ``LS_*``/``LF_*`` per lane, ``CI_*``/``CF_*``
settings; ``U_USED`` and ``A_*``, the KV accounting, in the same columns for both kinds of instance), as in
:mod:`workbench.sim.continuous_engine`.  :func:`run_disaggregated` allocates it and calls :func:`_event_loop`,
which allocates nothing and is compiled without reference counting; it inlines one helper per rule:
:func:`_join` (R1), :func:`_first_tokens` (R4, R5), :func:`_prefill_step` (R3), :func:`_transfer_end` and
:func:`_start_transfer` (R6), :func:`_complete_lanes` (R10), :func:`_swap_out` (R8), :func:`_admit` (R7) and
:func:`_launch` (R9), so they cost nothing for the arrays they take.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workbench.sim.continuous_engine import (C_PA, C_PB, C_PC, _blocks_over, _ceil_div, _decode_coefs, _heap_push,
                                             _heap_remove, _heap_set, _mod, _pow2_shift, _run_time, _steps_fitting,
                                             _steps_to_reach, list_span)
from workbench.sim.steptable import TI_DEC_NMAX, TI_SKEW, table_decode_run, table_record_run, table_step_s

ERR_TIME_BACKWARDS = 1
ERR_BLOCKS = 2
ERR_HEAP = 3
ERR_LEFT = 4

# (The engine's state lives in a few 2-D arrays with named columns: every array passed to a compiled helper
# costs a reference-count update per call unless the caller is compiled without reference counting, and numba
# inlines functions of at most ~30 arguments.)
# float settings: the step-time coefficients in StepTimeModel.coefficients()' layout (C_PA..C_PC the prefill
# pool's, C_DA.. the decode pool's; see continuous_engine), then the link and the pipeline
CF_WAIT_LIMIT, CF_LINK_LATENCY, CF_KV_BYTES, CF_LINK_BPS, CF_PIPE_OVERHEAD = range(13, 18)
CF_N = 18
# integer settings (the last three: whether the prefill pool's model is a step table, the decode pool's, and
# whether the decode pool's table has a skew correction, so that lanes track their longest and shortest context)
(CI_P, CI_D, CI_PP, CI_BS, CI_SHIFT, CI_CAP_P, CI_CAP_D, CI_P_MAX_BATCH, CI_P_MAX_TOKENS, CI_D_MAX_BATCH,
 CI_P_ROUTER, CI_D_ROUTER, CI_JUMPS, CI_P_TABLE, CI_D_TABLE, CI_D_SKEW) = range(16)
CI_N = 16
# per request, int32: prefill instance, decode instance, swaps, the next in whichever queue holds it (one at a
# time), the previous and next in its lane (in admission order)
RQ_PF, RQ_DC, RQ_SWAPS, RQ_LINK, RQ_PREV, RQ_NEXT = range(6)
RQ_N = 6
# per request, float64, one ROW per time (each a contiguous array): start of its prefill step, first token, end of
# its KV transfer, launch of its first decode step, last token
T_PF_START, T_FIRST, T_X_END, T_DC_START, T_FINISH = range(5)
# per instance (prefill and decode alike), the KV accounting: int64 blocks in use; float64 block-seconds, when
# they were last integrated, busy seconds
U_USED = 0
A_BLOCK_S, A_LAST, A_BUSY = range(3)
# per prefill instance, int64: its queue (head, tail, length), the step in flight (first request, count; linked by
# RQ_LINK), requests routed and not yet prefilled, steps
PS_Q_HEAD, PS_Q_TAIL, PS_Q_LEN, PS_STEP_HEAD, PS_STEP_N, PS_OUT, PS_STEPS = range(1, 8)
PS_N = 8
PF_N = 3
# per decode instance, int64: bridge, moved-and-waiting and swapped queues (head, tail), the blocks reserved by
# waiting requests, requests routed and not finished, the request whose KV is moving (-1: none), the lane launched
# last, lanes in flight, steps
(DS_BR_HEAD, DS_BR_TAIL, DS_WT_HEAD, DS_WT_TAIL, DS_WT_BLOCKS, DS_SW_HEAD, DS_SW_TAIL, DS_OUT, DS_X_REQ,
 DS_LAST_LANE, DS_IN_FLIGHT, DS_STEPS) = range(1, 13)
DS_N = 13
# per decode instance, float64 (after the accounting): end of the transfer in progress, seconds spent moving KV
DF_X_UNTIL, DF_XFER = range(3, 5)
DF_N = 5
# per lane (micro-batch ``j * pp + m`` of decode instance j), int64: its requests (head, tail, count), sum of their
# S_r, steps it has run, size of its finish heap, in flight, steps of the series in flight; with a skew-corrected
# step table, the largest and smallest S_r and whether they are stale (one of them left)
LS_HEAD, LS_TAIL, LS_N_DEC, LS_CTX_BASE, LS_DCOUNT, LS_FIN_N, LS_BUSY, LS_K, LS_S_MAX, LS_S_MIN, LS_S_STALE = range(11)
LS_N = 11
# per lane, float64: launch and end of the step (or series) in flight, its first step's time and growth per step
LF_START, LF_END, LF_E, LF_F = range(4)
LF_N = 4


@njit(cache=True, inline="always")
def _acc(fl, it, k, now):
    """Integrate instance ``k``'s KV blocks in use up to ``now`` (call before changing ``it[k, U_USED]``)."""
    fl[k, A_BLOCK_S] += it[k, U_USED] * (now - fl[k, A_LAST])
    fl[k, A_LAST] = now


@njit(cache=True, inline="always")
def _route_to(router, rr, n, it, column):
    """R1/R5's choice of instance: round robin (router 0; ``rr`` is the next in turn) or the fewest outstanding
    requests (``it[:, column]``), lowest index on a tie (router 1).  Returns (instance, next rr)."""
    if router == 0:
        return rr, rr + 1 if rr + 1 < n else 0
    best = 0
    for h in range(1, n):
        if it[h, column] < it[best, column]:
            best = h
    return best, rr


@njit(cache=True, inline="always")
def _append(rq, link, it, head, tail, owner, r):
    """Append request ``r`` to the list of ``owner`` (its first and last request in columns ``head``, ``tail`` of
    ``it``), linked by column ``link`` of ``rq``."""
    rq[r, link] = -1
    if it[owner, tail] >= 0:
        rq[it[owner, tail], link] = r
    else:
        it[owner, head] = r
    it[owner, tail] = r


@njit(cache=True, inline="always")
def _enter(L, r, s_r, finish_count, bs, shift, skew, rq, ctx0, hpos, ls, hist, fin_key, fin_id):
    """Request ``r`` joins lane ``L`` last, its step's context ``s_r`` plus the lane's decode count; it finishes
    when the lane's decode count reaches ``finish_count``.  ``skew``: keep the lane's longest and shortest S_r."""
    if skew and ls[L, LS_S_STALE] == 0:
        if ls[L, LS_N_DEC] == 0:
            ls[L, LS_S_MAX] = s_r
            ls[L, LS_S_MIN] = s_r
        else:
            ls[L, LS_S_MAX] = max(ls[L, LS_S_MAX], s_r)
            ls[L, LS_S_MIN] = min(ls[L, LS_S_MIN], s_r)
    ctx0[r] = s_r
    hist[L, _mod(s_r, bs, shift)] += 1
    ls[L, LS_CTX_BASE] += s_r
    ls[L, LS_N_DEC] += 1
    ls[L, LS_FIN_N] = _heap_push(fin_key, fin_id, hpos, L, ls[L, LS_FIN_N], finish_count, r)
    rq[r, RQ_PREV] = ls[L, LS_TAIL]
    _append(rq, RQ_NEXT, ls, LS_HEAD, LS_TAIL, L, r)


@njit(cache=True, inline="always")
def _leave_span(skew, ls, L, s_r):
    """A request with context base ``s_r`` leaves lane ``L``: its span is stale if it was the longest or the
    shortest (only tracked with a skew-corrected step table)."""
    if skew and (s_r >= ls[L, LS_S_MAX] or s_r <= ls[L, LS_S_MIN]):
        ls[L, LS_S_STALE] = 1


@njit(cache=True, inline="always")
def _lane_span(rq, ctx0, ls, L):
    """(longest, shortest) context base of lane ``L``'s requests, recomputed from its list when stale (a walk of
    at most ``decode_max_batch_size`` requests, needed only when the longest or shortest left)."""
    if ls[L, LS_S_STALE]:
        ls[L, LS_S_MAX], ls[L, LS_S_MIN] = list_span(rq, ctx0, ls[L, LS_HEAD], RQ_NEXT, -1, 0)
        ls[L, LS_S_STALE] = 0
    return ls[L, LS_S_MAX], ls[L, LS_S_MIN]


@njit(cache=True, inline="always")
def _join(r, now, rr_p, pev_n, ci, rq, ps, pev_key, pev_id, pev_pos):
    """R1: request ``r`` joins a prefill instance's queue; an idle instance decides at this instant.  Returns
    (next round-robin instance, size of the prefill event heap)."""
    i, rr_p = _route_to(ci[CI_P_ROUTER], rr_p, ci[CI_P], ps, PS_OUT)
    rq[r, RQ_PF] = i
    _append(rq, RQ_LINK, ps, PS_Q_HEAD, PS_Q_TAIL, i, r)
    ps[i, PS_Q_LEN] += 1
    ps[i, PS_OUT] += 1
    if pev_pos[i] < 0 and ps[i, PS_STEP_N] == 0:
        pev_n = _heap_push(pev_key, pev_id, pev_pos, 0, pev_n, now, i)
    return rr_p, pev_n


@njit(cache=True, inline="always")
def _first_tokens(i, now, rr_d, dev_n, ci, prompt, output, rq, tq, ps, pf, ds, df, ls, lf, dev_key, dev_id, dev_pos):
    """R4: the prompts of prefill instance ``i``'s step give their first token; R5: each with more to generate is
    routed to a decode instance's bridge, whose idle controller acts now, and whose series of decode steps in
    flight is cut after the step in flight.  Returns (next round-robin instance, size of the decode event heap)."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    pp = ci[CI_PP]
    r = ps[i, PS_STEP_HEAD]
    for _ in range(ps[i, PS_STEP_N]):
        nxt = rq[r, RQ_LINK]
        tq[T_FIRST, r] = now
        ps[i, PS_OUT] -= 1
        if output[r] == 1:
            tq[T_FINISH, r] = now
            _acc(pf, ps, i, now)
            ps[i, U_USED] -= _ceil_div(np.int64(prompt[r]), bs, shift)
        else:
            j, rr_d = _route_to(ci[CI_D_ROUTER], rr_d, ci[CI_D], ds, DS_OUT)
            rq[r, RQ_DC] = j
            ds[j, DS_OUT] += 1
            _append(rq, RQ_LINK, ds, DS_BR_HEAD, DS_BR_TAIL, j, r)
            if ds[j, DS_X_REQ] < 0 and ds[j, DS_IN_FLIGHT] == 0:
                if dev_pos[j] < 0:      # idle: its controller acts now (after same-time prefill events)
                    dev_n = _heap_push(dev_key, dev_id, dev_pos, 0, dev_n, now, j)
            elif pp == 1 and ds[j, DS_X_REQ] < 0:
                L = j
                if ls[L, LS_K] > 1:
                    # cut the series of decode steps after the step in flight
                    s_i = _steps_to_reach(lf[L, LF_E], lf[L, LF_F], ls[L, LS_K], now - lf[L, LF_START])
                    if s_i < ls[L, LS_K]:
                        ds[j, DS_STEPS] -= ls[L, LS_K] - s_i
                        ls[L, LS_K] = s_i
                        cut_end = lf[L, LF_START] + _run_time(lf[L, LF_E], lf[L, LF_F], s_i)
                        df[j, A_BUSY] -= lf[L, LF_END] - cut_end
                        lf[L, LF_END] = cut_end
                        _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], lf[L, LF_END])
        r = nxt
    ps[i, PS_STEP_N] = 0
    return rr_d, dev_n


@njit(cache=True, inline="always")
def _prefill_step(i, now, pev_n, ci, cf, prompt, rq, tq, ps, pf, pev_key, pev_id, pev_pos, tf, ti):
    """R3: prefill instance ``i``'s next step, FCFS while the batch, token and block limits hold; none: the
    instance leaves the event heap.  Its time from the prefill pool's coefficients, or from its step table
    (``tf``, ``ti``).  Returns the size of the prefill event heap."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    tokens = np.int64(0)
    sq = np.int64(0)
    need = np.int64(0)
    count = 0
    head = ps[i, PS_Q_HEAD]
    r = head
    while r >= 0:
        p = np.int64(prompt[r])
        b = _ceil_div(p, bs, shift)
        if (count + 1 > ci[CI_P_MAX_BATCH] or tokens + p > ci[CI_P_MAX_TOKENS]
                or ps[i, U_USED] + need + b > ci[CI_CAP_P]):
            break
        tokens += p
        sq += p * p
        need += b
        count += 1
        tq[T_PF_START, r] = now
        r = rq[r, RQ_LINK]
    if count > 0:
        ps[i, PS_Q_HEAD] = r
        if r < 0:
            ps[i, PS_Q_TAIL] = -1
        ps[i, PS_Q_LEN] -= count
        ps[i, PS_STEP_HEAD] = head
        ps[i, PS_STEP_N] = count
        _acc(pf, ps, i, now)
        ps[i, U_USED] += need
        if ci[CI_P_TABLE]:   # the step's prompts, no cached context, sum(l (0 + l)), no decodes
            dt = table_step_s(tf, ti, tokens, count, 0, float(sq), 0, 0.0, 0.0, 0.0)
        else:
            dt = cf[C_PA] + cf[C_PB] * float(tokens) + cf[C_PC] * float(sq)
        pf[i, A_BUSY] += dt
        ps[i, PS_STEPS] += 1
        _heap_set(pev_key, pev_id, pev_pos, 0, pev_n, pev_pos[i], now + dt)
    else:
        pev_n = _heap_remove(pev_key, pev_id, pev_pos, 0, pev_n, pev_pos[i])
    return pev_n


@njit(cache=True, inline="always")
def _transfer_end(j, now, pev_n, ci, prompt, rq, ps, pf, ds, pev_key, pev_id, pev_pos):
    """R6: decode instance ``j``'s transfer ends: the request waits there; its prefill instance frees the prompt's
    blocks and, idle with a queue, decides at this instant.  Returns the size of the prefill event heap."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    r = ds[j, DS_X_REQ]
    ds[j, DS_X_REQ] = -1
    _append(rq, RQ_LINK, ds, DS_WT_HEAD, DS_WT_TAIL, j, r)
    p = np.int64(prompt[r])
    ds[j, DS_WT_BLOCKS] += _ceil_div(p + 1, bs, shift)
    i = rq[r, RQ_PF]
    _acc(pf, ps, i, now)
    ps[i, U_USED] -= _ceil_div(p, bs, shift)
    if ps[i, PS_Q_LEN] > 0 and pev_pos[i] < 0 and ps[i, PS_STEP_N] == 0:
        pev_n = _heap_push(pev_key, pev_id, pev_pos, 0, pev_n, now, i)
    return pev_n


@njit(cache=True, inline="always")
def _complete_lanes(j, now, ci, rq, tq, ctx0, hpos, ds, df, ls, lf, hist, fin_key, fin_id):
    """R10: the lanes of decode instance ``j`` whose step (or series) has completed by ``now`` produce their
    tokens; the requests that reach their output length finish and free their blocks.  Returns an error code."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    pp = ci[CI_PP]
    error = 0
    for mm in range(pp):
        L = j * pp + mm
        if ls[L, LS_BUSY] == 0 or lf[L, LF_END] > now:
            continue
        ls[L, LS_BUSY] = 0
        ds[j, DS_IN_FLIGHT] -= 1
        k = ls[L, LS_K]
        d0 = ls[L, LS_DCOUNT]
        _acc(df, ds, j, now)
        if k > 1:
            grown = _blocks_over(hist, L, bs, shift, ls[L, LS_N_DEC], d0 + 1, k - 1)
            df[j, A_BLOCK_S] += 0.5 * grown * (now - lf[L, LF_START])   # the blocks grew through the series
            ds[j, U_USED] += grown
        if ds[j, U_USED] > ci[CI_CAP_D]:
            error = ERR_BLOCKS
        d = d0 + k
        ls[L, LS_DCOUNT] = d
        while ls[L, LS_FIN_N] > 0 and fin_key[L, 0] <= d:
            r = fin_id[L, 0]
            if fin_key[L, 0] != d:
                error = ERR_HEAP
            ls[L, LS_FIN_N] = _heap_remove(fin_key, fin_id, hpos, L, ls[L, LS_FIN_N], 0)
            s_r = ctx0[r]
            ds[j, U_USED] -= _ceil_div(s_r + d - 1, bs, shift)
            hist[L, _mod(s_r, bs, shift)] -= 1
            ls[L, LS_CTX_BASE] -= s_r
            ls[L, LS_N_DEC] -= 1
            _leave_span(ci[CI_D_SKEW], ls, L, s_r)
            tq[T_FINISH, r] = now
            ds[j, DS_OUT] -= 1
            p_, n_ = rq[r, RQ_PREV], rq[r, RQ_NEXT]
            if p_ >= 0:
                rq[p_, RQ_NEXT] = n_
            else:
                ls[L, LS_HEAD] = n_
            if n_ >= 0:
                rq[n_, RQ_PREV] = p_
            else:
                ls[L, LS_TAIL] = p_
    return error


@njit(cache=True, inline="always")
def _start_transfer(j, now, dev_n, ci, cf, prompt, rq, tq, ds, df, dev_key, dev_id, dev_pos):
    """R6: decode instance ``j`` moves its bridge's head if it is acceptable (the waiting requests' blocks under
    the limit, the prompt's and its first step's blocks free).  Returns whether a transfer started."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    r = ds[j, DS_BR_HEAD]
    if r < 0:
        return False
    p = np.int64(prompt[r])
    b = _ceil_div(p + 1, bs, shift)
    if not (ds[j, DS_WT_BLOCKS] < cf[CF_WAIT_LIMIT] and b <= ci[CI_CAP_D] - ds[j, U_USED]):
        return False
    ds[j, DS_BR_HEAD] = rq[r, RQ_LINK]
    if ds[j, DS_BR_HEAD] < 0:
        ds[j, DS_BR_TAIL] = -1
    _acc(df, ds, j, now)
    ds[j, U_USED] += b
    ds[j, DS_X_REQ] = r
    df[j, DF_X_UNTIL] = now + (cf[CF_LINK_LATENCY] + p * cf[CF_KV_BYTES] / cf[CF_LINK_BPS])
    df[j, DF_XFER] += df[j, DF_X_UNTIL] - now
    tq[T_X_END, r] = df[j, DF_X_UNTIL]
    _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], df[j, DF_X_UNTIL])
    return True


@njit(cache=True, inline="always")
def _swap_out(j, L, d, need, now, ci, prompt, rq, ctx0, gen, hpos, ds, df, ls, hist, fin_key, fin_id):
    """R8: swap out lane ``L``'s most recently admitted requests until the blocks its step needs fit (to the
    front of the swapped queue, newest first, so several victims keep their order).  Returns (the step's new
    blocks, victims)."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    preempted = 0
    while ls[L, LS_N_DEC] > 0 and ds[j, U_USED] + need > ci[CI_CAP_D]:
        v = ls[L, LS_TAIL]
        s_v = ctx0[v]
        if _mod(s_v + d - 1, bs, shift) == 0:
            need -= 1
        _acc(df, ds, j, now)
        ds[j, U_USED] -= _ceil_div(s_v + d - 1, bs, shift)
        hist[L, _mod(s_v, bs, shift)] -= 1
        ls[L, LS_CTX_BASE] -= s_v
        ls[L, LS_N_DEC] -= 1
        _leave_span(ci[CI_D_SKEW], ls, L, s_v)
        ls[L, LS_FIN_N] = _heap_remove(fin_key, fin_id, hpos, L, ls[L, LS_FIN_N], hpos[v])
        p_ = rq[v, RQ_PREV]
        ls[L, LS_TAIL] = p_
        if p_ >= 0:
            rq[p_, RQ_NEXT] = -1
        else:
            ls[L, LS_HEAD] = -1
        rq[v, RQ_PREV] = -1
        gen[v] = s_v + d - np.int64(prompt[v])
        rq[v, RQ_SWAPS] += 1
        preempted += 1
        rq[v, RQ_LINK] = ds[j, DS_SW_HEAD]
        ds[j, DS_SW_HEAD] = v
        if ds[j, DS_SW_TAIL] < 0:
            ds[j, DS_SW_TAIL] = v
    return need, preempted


@njit(cache=True, inline="always")
def _admit(j, L, mm, d, need, now, ci, prompt, output, rq, tq, ctx0, gen, hpos, ds, df, ls, hist, fin_key, fin_id):
    """R7: into lane ``L`` (lane ``mm`` of decode instance ``j``) at decode count ``d``: swapped requests first,
    FCFS, while their blocks fit; then moved ones, FCFS, while the lane holds no more than the smallest other
    lane.  Returns the step's new blocks."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    pp = ci[CI_PP]
    max_batch = ci[CI_D_MAX_BATCH]
    while ds[j, DS_SW_HEAD] >= 0 and ls[L, LS_N_DEC] < max_batch:
        r = ds[j, DS_SW_HEAD]
        c = np.int64(prompt[r]) + gen[r]
        if ds[j, U_USED] + need + _ceil_div(c, bs, shift) > ci[CI_CAP_D]:
            break
        ds[j, DS_SW_HEAD] = rq[r, RQ_LINK]
        if ds[j, DS_SW_HEAD] < 0:
            ds[j, DS_SW_TAIL] = -1
        _acc(df, ds, j, now)
        ds[j, U_USED] += _ceil_div(c - 1, bs, shift)
        if _mod(c - 1, bs, shift) == 0:
            need += 1
        _enter(L, r, c - d, float(d + np.int64(output[r]) - gen[r]), bs, shift, ci[CI_D_SKEW], rq, ctx0, hpos, ls,
               hist, fin_key, fin_id)
    others = max_batch
    for kk in range(pp):
        if kk != mm and ls[j * pp + kk, LS_N_DEC] < others:
            others = ls[j * pp + kk, LS_N_DEC]
    while ds[j, DS_WT_HEAD] >= 0 and ls[L, LS_N_DEC] < max_batch and ls[L, LS_N_DEC] <= others:
        r = ds[j, DS_WT_HEAD]
        ds[j, DS_WT_HEAD] = rq[r, RQ_LINK]
        if ds[j, DS_WT_HEAD] < 0:
            ds[j, DS_WT_TAIL] = -1
        p = np.int64(prompt[r])
        ds[j, DS_WT_BLOCKS] -= _ceil_div(p + 1, bs, shift)
        if _mod(p, bs, shift) == 0:
            # the reserved slot of its first step becomes this step's need
            _acc(df, ds, j, now)
            ds[j, U_USED] -= 1
            need += 1
        tq[T_DC_START, r] = now
        _enter(L, r, p + 1 - d, float(d + np.int64(output[r]) - 1), bs, shift, ci[CI_D_SKEW], rq, ctx0, hpos, ls,
               hist, fin_key, fin_id)
    return need


@njit(cache=True, inline="always")
def _launch(j, L, mm, d, need, preempted, now, ci, cf, prompt, rq, ctx0, ds, df, stage_free, ls, lf, hist, fin_key,
            tf, ti):
    """R9: launch lane ``L``'s step (with ``pp = 1`` and nothing that could join, a series of steps up to the next
    finish or the last whose blocks fit, or, with a step table (``tf``, ``ti``), the last its linear piece prices
    exactly; with ``pp > 1`` through the pipeline's stages).  Returns an error code."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    pp = ci[CI_PP]
    cap_d = ci[CI_CAP_D]
    error = 0
    nd = ls[L, LS_N_DEC]
    _acc(df, ds, j, now)
    ds[j, U_USED] += need
    if ds[j, U_USED] > cap_d:
        error = ERR_BLOCKS
    k_lin = np.int64(2**62)
    kv_max = np.int64(0)
    if ci[CI_D_TABLE]:
        # the table's price of nd decodes with these contexts; the first step of a run of e + f i, exact for
        # k_lin steps (steptable.table_decode_run), as the continuous engine's _schedule_table
        ctx_int = ls[L, LS_CTX_BASE] + nd * d
        if ci[CI_D_SKEW]:
            s_max, s_min = _lane_span(rq, ctx0, ls, L)
            kv_max = s_max + d
            kv_min = s_min + d
        else:
            kv_max = (ctx_int + nd - 1) // nd   # any value >= the mean: unused without the skew correction
            kv_min = kv_max
        step, f_run, k_lin = table_decode_run(tf, ti, nd, ctx_int, kv_max, kv_min)
    else:
        a_d, b_d, c_d = _decode_coefs(cf, nd)
        step = a_d + b_d * float(ls[L, LS_CTX_BASE] + nd * d) + c_d * nd
        f_run = b_d * nd
    k = 1
    if pp == 1:
        e = step
        f = f_run
        # a series needs a bridge head that stays unacceptable: this launch may have emptied the
        # waiting queue, so check it as the next boundary will (blocks only shrink until a finish)
        head_ok = False
        if ds[j, DS_BR_HEAD] >= 0:
            hb = _ceil_div(np.int64(prompt[ds[j, DS_BR_HEAD]]) + 1, bs, shift)
            head_ok = ds[j, DS_WT_BLOCKS] < cf[CF_WAIT_LIMIT] and hb <= cap_d - ds[j, U_USED]
        if ci[CI_JUMPS] != 0 and preempted == 0 and not head_ok:
            k_max = min(np.int64(fin_key[L, 0]) - d, k_lin)
            if k_max > 1:
                k = 1 + _steps_fitting(hist, L, bs, shift, nd, d + 1, cap_d - ds[j, U_USED], k_max - 1)
        end = now + _run_time(e, f, k)
        df[j, A_BUSY] += end - now
    else:
        overhead = cf[CF_PIPE_OVERHEAD]
        e = (step - overhead) / pp + overhead
        f = 0.0
        begin = now
        for stage in range(pp):
            if stage_free[j, stage] > begin:
                begin = stage_free[j, stage]
            stage_free[j, stage] = begin + e
            begin = begin + e
        end = begin
        df[j, A_BUSY] += e
    if ci[CI_D_TABLE]:
        table_record_run(tf, kv_max, k)
    ds[j, DS_STEPS] += k
    ls[L, LS_BUSY] = 1
    lf[L, LF_START] = now
    lf[L, LF_END] = end
    ls[L, LS_K] = k
    lf[L, LF_E] = e
    lf[L, LF_F] = f
    ds[j, DS_IN_FLIGHT] += 1
    ds[j, DS_LAST_LANE] = mm
    return error


@njit(cache=True, _nrt=False)
def _event_loop(join_order, entry_s, prompt, output, ci, cf, rq, tq, ctx0, gen, hpos, ps, pf, ds, df, stage_free,
                ls, lf, hist, fin_key, fin_id, pev_key, pev_id, pev_pos, dev_key, dev_id, dev_pos, tf_p, ti_p, tf_d,
                ti_d):
    """The events: joins (R1), prefill step boundaries (R3-R5) and decode controllers' actions (R6-R11), in time
    order (R12).  Compiled without reference counting (it allocates nothing), so the helpers it inlines cost no
    count updates for the arrays they take.  Returns the error code."""
    m_join = join_order.size
    pp = ci[CI_PP]
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    inf = np.inf
    pev_n = 0
    dev_n = 0
    error = 0
    now = 0.0
    ptr = 0
    rr_p = 0
    rr_d = 0
    while True:
        t_join = entry_s[join_order[ptr]] if ptr < m_join else inf
        t_p = pev_key[0, 0] if pev_n > 0 else inf
        t_d = dev_key[0, 0] if dev_n > 0 else inf
        if t_join == inf and t_p == inf and t_d == inf:
            break
        if t_join <= t_p and t_join <= t_d:
            # ---------------------------------------------------- R1: a request joins a prefill instance
            if t_join < now:
                error = ERR_TIME_BACKWARDS
            now = t_join
            r = join_order[ptr]
            ptr += 1
            rr_p, pev_n = _join(r, now, rr_p, pev_n, ci, rq, ps, pev_key, pev_id, pev_pos)
            continue

        if t_p <= t_d:
            # ---------------------------------------------------- a prefill instance reaches a step boundary
            i = pev_id[0, 0]
            if t_p < now:
                error = ERR_TIME_BACKWARDS
            now = t_p
            if ps[i, PS_STEP_N] > 0:
                rr_d, dev_n = _first_tokens(i, now, rr_d, dev_n, ci, prompt, output, rq, tq, ps, pf, ds, df, ls, lf,
                                            dev_key, dev_id, dev_pos)
            pev_n = _prefill_step(i, now, pev_n, ci, cf, prompt, rq, tq, ps, pf, pev_key, pev_id, pev_pos, tf_p,
                                  ti_p)
            continue

        # -------------------------------------------------------- R11: a decode instance's controller acts
        j = dev_id[0, 0]
        if t_d < now:
            error = ERR_TIME_BACKWARDS
        now = t_d
        if ds[j, DS_X_REQ] >= 0:
            pev_n = _transfer_end(j, now, pev_n, ci, prompt, rq, ps, pf, ds, pev_key, pev_id, pev_pos)
        err = _complete_lanes(j, now, ci, rq, tq, ctx0, hpos, ds, df, ls, lf, hist, fin_key, fin_id)
        if err:
            error = err
        if _start_transfer(j, now, dev_n, ci, cf, prompt, rq, tq, ds, df, dev_key, dev_id, dev_pos):
            continue
        # R7-R9: launch every lane with nothing in flight, in cyclic order after the lane launched last
        after = ds[j, DS_LAST_LANE]
        for step_k in range(1, pp + 1):
            mm = (after + step_k) % pp
            L = j * pp + mm
            if ls[L, LS_BUSY] != 0:
                continue
            d = ls[L, LS_DCOUNT]
            need = hist[L, _mod(1 - d, bs, shift)] if ls[L, LS_N_DEC] > 0 else 0
            need, preempted = _swap_out(j, L, d, need, now, ci, prompt, rq, ctx0, gen, hpos, ds, df, ls, hist,
                                        fin_key, fin_id)
            # (R7 after R8: a victim cannot fit again in the launch that swapped it out, it heads the swapped queue)
            need = _admit(j, L, mm, d, need, now, ci, prompt, output, rq, tq, ctx0, gen, hpos, ds, df, ls, hist,
                          fin_key, fin_id)
            if ls[L, LS_N_DEC] == 0:
                continue
            err = _launch(j, L, mm, d, need, preempted, now, ci, cf, prompt, rq, ctx0, ds, df, stage_free, ls, lf,
                          hist, fin_key, tf_d, ti_d)
            if err:
                error = err
        # the controller's next event: the earliest lane completion (none: idle until a request reaches it)
        t_next = inf
        for mm in range(pp):
            L = j * pp + mm
            if ls[L, LS_BUSY] != 0 and lf[L, LF_END] < t_next:
                t_next = lf[L, LF_END]
        if t_next < inf:
            _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], t_next)
        else:
            dev_n = _heap_remove(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j])
        if error:
            break
    for k in range(ci[CI_P]):
        _acc(pf, ps, k, now)
    for k in range(ci[CI_D]):
        _acc(df, ds, k, now)
    return error


@njit(cache=True)
def run_disaggregated(join_order, entry_s, prompt_tokens, output_tokens, n_prefill, n_decode, pp, block_size,
                      cap_p, cap_d, prefill_max_batch, prefill_max_tokens, decode_max_batch, waiting_limit_blocks,
                      prefill_router, decode_router, link_latency_s, kv_bytes_per_token, link_bytes_per_s, pcoef,
                      dcoef, pipe_overhead_s, jumps, tf_p, ti_p, tf_d, ti_d):
    """Simulate; see the module docstring.  ``join_order``: accepted requests sorted by join time; ``tf_p``,
    ``ti_p`` and ``tf_d``, ``ti_d``: the prefill and decode pools' packed step tables
    (:meth:`workbench.sim.steptable.StepTable.pack`; ``ti[TI_DEC_NMAX] == 0``: none, the coefficients price the
    pool's steps), whose scratch slots the run writes (the largest value asked of each axis).

    Returns per request (prefill instance, decode instance, prefill start, first token, transfer end, first
    decode launch, last token, swaps), per prefill instance (busy_s, block_seconds, steps), per decode instance
    (busy_s, block_seconds, steps, transfer_s) and an error code."""
    n = entry_s.size
    P = n_prefill
    D = n_decode
    NL = D * pp
    bs = block_size

    ci = np.empty(CI_N, np.int64)
    ci[CI_P] = P
    ci[CI_D] = D
    ci[CI_PP] = pp
    ci[CI_BS] = bs
    ci[CI_SHIFT] = _pow2_shift(bs)
    ci[CI_CAP_P] = cap_p
    ci[CI_CAP_D] = cap_d
    ci[CI_P_MAX_BATCH] = prefill_max_batch
    ci[CI_P_MAX_TOKENS] = prefill_max_tokens
    ci[CI_D_MAX_BATCH] = decode_max_batch
    ci[CI_P_ROUTER] = prefill_router
    ci[CI_D_ROUTER] = decode_router
    ci[CI_JUMPS] = 1 if jumps else 0
    ci[CI_P_TABLE] = 1 if ti_p[TI_DEC_NMAX] > 0 else 0
    ci[CI_D_TABLE] = 1 if ti_d[TI_DEC_NMAX] > 0 else 0
    ci[CI_D_SKEW] = 1 if ci[CI_D_TABLE] and ti_d[TI_SKEW] else 0
    cf = np.zeros(CF_N)
    cf[:13] = dcoef
    cf[C_PA] = pcoef[0]
    cf[C_PB] = pcoef[1]
    cf[C_PC] = pcoef[2]
    cf[CF_WAIT_LIMIT] = waiting_limit_blocks
    cf[CF_LINK_LATENCY] = link_latency_s
    cf[CF_KV_BYTES] = kv_bytes_per_token
    cf[CF_LINK_BPS] = link_bytes_per_s
    cf[CF_PIPE_OVERHEAD] = pipe_overhead_s

    # per request
    rq = np.full((n, RQ_N), -1, np.int32)
    rq[:, RQ_SWAPS] = 0
    tq = np.full((5, n), np.nan)
    hpos = np.full(n, -1, np.int32)        # position in its lane's finish heap
    ctx0 = np.zeros(n, np.int64)           # S_r: the context of its step at lane decode count d is S_r + d
    gen = np.zeros(n, np.int64)            # tokens generated, kept while swapped out

    # prefill instances and their event heap
    ps = np.zeros((P, PS_N), np.int64)
    for col in (PS_Q_HEAD, PS_Q_TAIL, PS_STEP_HEAD):
        ps[:, col] = -1
    pf = np.zeros((P, PF_N))
    pev_key = np.empty((1, P), np.float64)
    pev_id = np.empty((1, P), np.int64)
    pev_pos = np.full(P, -1, np.int64)

    # decode instances, their pipeline stages and their event heap
    ds = np.zeros((D, DS_N), np.int64)
    for col in (DS_BR_HEAD, DS_BR_TAIL, DS_WT_HEAD, DS_WT_TAIL, DS_SW_HEAD, DS_SW_TAIL, DS_X_REQ):
        ds[:, col] = -1
    ds[:, DS_LAST_LANE] = pp - 1
    df = np.zeros((D, DF_N))
    stage_free = np.zeros((D, pp))
    dev_key = np.empty((1, D), np.float64)
    dev_id = np.empty((1, D), np.int64)
    dev_pos = np.full(D, -1, np.int64)

    # lanes (micro-batches): lane j * pp + m of decode instance j
    ls = np.zeros((NL, LS_N), np.int64)
    ls[:, LS_HEAD] = -1
    ls[:, LS_TAIL] = -1
    lf = np.zeros((NL, LF_N))
    hist = np.zeros((NL, bs), np.int64)    # the lane's requests by S_r mod block_size
    hcap = max(1, min(decode_max_batch, cap_d, n))
    fin_key = np.empty((NL, hcap), np.float64)
    fin_id = np.empty((NL, hcap), np.int64)

    error = _event_loop(join_order, entry_s, prompt_tokens, output_tokens, ci, cf, rq, tq, ctx0, gen, hpos, ps, pf,
                        ds, df, stage_free, ls, lf, hist, fin_key, fin_id, pev_key, pev_id, pev_pos, dev_key, dev_id,
                        dev_pos, tf_p, ti_p, tf_d, ti_d)
    finish_s = tq[T_FINISH]
    for r in range(n):
        if rq[r, RQ_PF] >= 0 and np.isnan(finish_s[r]):
            error = ERR_LEFT if error == 0 else error
    return (rq[:, RQ_PF].copy(), rq[:, RQ_DC].copy(), tq[T_PF_START], tq[T_FIRST], tq[T_X_END], tq[T_DC_START],
            finish_s, rq[:, RQ_SWAPS].copy(), pf[:, A_BUSY].copy(), pf[:, A_BLOCK_S].copy(), ps[:, PS_STEPS].copy(),
            df[:, A_BUSY].copy(), df[:, A_BLOCK_S].copy(), ds[:, DS_STEPS].copy(), df[:, DF_XFER].copy(), error)


@njit(cache=True)
def table_alone_s(tf, ti, tokens, prefill):
    """Per value of ``tokens``: a step table's price of a prefill step of one prompt that long (``prefill``), or
    of a decode step of one request with that context (a request served alone: the SLO ceiling,
    :func:`workbench.sim.disagg.slo_attainable_share`)."""
    out = np.empty(tokens.size)
    for i in range(tokens.size):
        x = tokens[i]
        if prefill:
            out[i] = table_step_s(tf, ti, int(x), 1, 0, x * x, 0, 0.0, 0.0, 0.0)
        else:
            out[i] = table_step_s(tf, ti, 0, 0, 0, 0.0, 1, x, x, x)
    return out
