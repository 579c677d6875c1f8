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
      a stage is slower than that (see the fidelity notebook).
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
step in flight when a request reaches the instance's bridge.  Swapped and
waiting requests cannot enter during such a series: blocks only shrink until
the next finish.  With ``decode_pp > 1`` every micro-batch is an event.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workbench.sim.continuous_engine import (_blocks_over, _ceil_div, _decode_coefs, _heap_push, _heap_remove,
                                             _heap_set, _mod, _pow2_shift, _run_time, _steps_fitting,
                                             _steps_to_reach)

ERR_TIME_BACKWARDS = 1
ERR_BLOCKS = 2
ERR_HEAP = 3
ERR_LEFT = 4

C_PA, C_PB, C_PC = 0, 1, 2   # prefill coefficients in StepTimeModel.coefficients()


@njit(cache=True, inline="always")
def _acc(block_s, last_t, used, k, now):
    """Integrate an instance's KV blocks in use up to ``now`` (call before changing ``used[k]``)."""
    block_s[k] += used[k] * (now - last_t[k])
    last_t[k] = now


@njit(cache=True, inline="always")
def _route_to(router, rr, n, outstanding):
    """R1/R5's choice of instance: round robin (router 0; ``rr`` is the next in turn) or the fewest outstanding
    requests, lowest index on a tie (router 1).  Returns (instance, next rr)."""
    if router == 0:
        return rr, rr + 1 if rr + 1 < n else 0
    best = 0
    for h in range(1, n):
        if outstanding[h] < outstanding[best]:
            best = h
    return best, rr


@njit(cache=True)
def run_disaggregated(join_order, entry_s, prompt_tokens, output_tokens, n_prefill, n_decode, pp, block_size,
                      cap_p, cap_d, prefill_max_batch, prefill_max_tokens, decode_max_batch, waiting_limit_blocks,
                      prefill_router, decode_router, link_latency_s, kv_bytes_per_token, link_bytes_per_s, pcoef,
                      dcoef, pipe_overhead_s, jumps):
    """Simulate; see the module docstring.  ``join_order``: accepted requests sorted by join time.

    Returns per request (prefill instance, decode instance, prefill start, first token, transfer end, first
    decode launch, last token, swaps), per prefill instance (busy_s, block_seconds, steps), per decode instance
    (busy_s, block_seconds, steps, transfer_s) and an error code."""
    n = entry_s.size
    m_join = join_order.size
    P = n_prefill
    D = n_decode
    NL = D * pp
    bs = block_size
    shift = _pow2_shift(bs)
    inf = np.inf

    # per request
    pf_inst = np.full(n, -1, np.int32)
    dc_inst = np.full(n, -1, np.int32)
    pf_start = np.full(n, np.nan)
    first_s = np.full(n, np.nan)
    x_end = np.full(n, np.nan)
    dc_start = np.full(n, np.nan)
    finish_s = np.full(n, np.nan)
    swaps = np.zeros(n, np.int32)
    link = np.full(n, -1, np.int32)        # next in whichever queue holds the request (one at a time)
    run_prev = np.full(n, -1, np.int32)    # lane lists, in admission order
    run_next = np.full(n, -1, np.int32)
    hpos = np.full(n, -1, np.int32)        # position in its lane's finish heap
    ctx0 = np.zeros(n, np.int64)           # S_r: the context of its step at lane decode count d is S_r + d
    gen = np.zeros(n, np.int64)            # tokens generated, kept while swapped out

    # prefill instances
    pq_head = np.full(P, -1, np.int64)
    pq_tail = np.full(P, -1, np.int64)
    pq_len = np.zeros(P, np.int64)
    pb_head = np.full(P, -1, np.int64)     # the step in flight: its first request and count (linked by `link`)
    pb_n = np.zeros(P, np.int64)
    p_used = np.zeros(P, np.int64)
    p_out = np.zeros(P, np.int64)
    p_busy = np.zeros(P)
    p_block_s = np.zeros(P)
    p_last = np.zeros(P)
    p_steps = np.zeros(P, np.int64)
    pev_key = np.empty((1, P), np.float64)
    pev_id = np.empty((1, P), np.int64)
    pev_pos = np.full(P, -1, np.int64)
    pev_n = 0

    # decode instances
    br_head = np.full(D, -1, np.int64)
    br_tail = np.full(D, -1, np.int64)
    wt_head = np.full(D, -1, np.int64)
    wt_tail = np.full(D, -1, np.int64)
    wt_blocks = np.zeros(D, np.int64)
    sw_head = np.full(D, -1, np.int64)
    sw_tail = np.full(D, -1, np.int64)
    d_used = np.zeros(D, np.int64)
    d_out = np.zeros(D, np.int64)
    x_req = np.full(D, -1, np.int64)
    x_until = np.zeros(D)
    last_lane = np.full(D, pp - 1, np.int64)
    stage_free = np.zeros((D, pp))
    in_flight = np.zeros(D, np.int64)
    d_busy = np.zeros(D)
    d_block_s = np.zeros(D)
    d_last = np.zeros(D)
    d_steps = np.zeros(D, np.int64)
    d_xfer = np.zeros(D)
    dev_key = np.empty((1, D), np.float64)
    dev_id = np.empty((1, D), np.int64)
    dev_pos = np.full(D, -1, np.int64)
    dev_n = 0

    # lanes (micro-batches): lane j * pp + m of decode instance j
    ln_head = np.full(NL, -1, np.int64)
    ln_tail = np.full(NL, -1, np.int64)
    n_dec = np.zeros(NL, np.int64)
    ctx_base = np.zeros(NL, np.int64)      # sum of S_r over the lane
    dcount = np.zeros(NL, np.int64)        # steps the lane has run
    hist = np.zeros((NL, bs), np.int64)    # the lane's requests by S_r mod block_size
    hcap = max(1, min(decode_max_batch, cap_d, n))
    fin_key = np.empty((NL, hcap), np.float64)
    fin_id = np.empty((NL, hcap), np.int64)
    fin_n = np.zeros(NL, np.int64)
    ln_busy = np.zeros(NL, np.bool_)
    ln_end = np.zeros(NL)
    ln_start = np.zeros(NL)
    ln_k = np.zeros(NL, np.int64)
    ln_e = np.zeros(NL)
    ln_f = np.zeros(NL)

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
            i, rr_p = _route_to(prefill_router, rr_p, P, p_out)
            pf_inst[r] = i
            link[r] = -1
            if pq_tail[i] >= 0:
                link[pq_tail[i]] = r
            else:
                pq_head[i] = r
            pq_tail[i] = r
            pq_len[i] += 1
            p_out[i] += 1
            if pev_pos[i] < 0 and pb_n[i] == 0:
                pev_n = _heap_push(pev_key, pev_id, pev_pos, 0, pev_n, now, i)
            continue

        if t_p <= t_d:
            # ---------------------------------------------------- a prefill instance reaches a step boundary
            i = pev_id[0, 0]
            if t_p < now:
                error = ERR_TIME_BACKWARDS
            now = t_p
            if pb_n[i] > 0:
                # R4: the step's prompts produce their first token; R5: route each to a decode instance
                r = pb_head[i]
                for _ in range(pb_n[i]):
                    nxt = link[r]
                    first_s[r] = now
                    p_out[i] -= 1
                    if output_tokens[r] == 1:
                        finish_s[r] = now
                        _acc(p_block_s, p_last, p_used, i, now)
                        p_used[i] -= _ceil_div(np.int64(prompt_tokens[r]), bs, shift)
                    else:
                        j, rr_d = _route_to(decode_router, rr_d, D, d_out)
                        dc_inst[r] = j
                        d_out[j] += 1
                        link[r] = -1
                        if br_tail[j] >= 0:
                            link[br_tail[j]] = r
                        else:
                            br_head[j] = r
                        br_tail[j] = r
                        if x_req[j] < 0 and in_flight[j] == 0:
                            if dev_pos[j] < 0:      # idle: its controller acts now (after same-time prefill events)
                                dev_n = _heap_push(dev_key, dev_id, dev_pos, 0, dev_n, now, j)
                        elif pp == 1 and x_req[j] < 0:
                            L = j
                            if ln_k[L] > 1:
                                # cut the series of decode steps after the step in flight
                                s_i = _steps_to_reach(ln_e[L], ln_f[L], ln_k[L], now - ln_start[L])
                                if s_i < ln_k[L]:
                                    d_steps[j] -= ln_k[L] - s_i
                                    ln_k[L] = s_i
                                    cut_end = ln_start[L] + _run_time(ln_e[L], ln_f[L], s_i)
                                    d_busy[j] -= ln_end[L] - cut_end
                                    ln_end[L] = cut_end
                                    _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], ln_end[L])
                    r = nxt
                pb_n[i] = 0
            # R3: the next prefill step
            tokens = np.int64(0)
            sq = np.int64(0)
            need = np.int64(0)
            count = 0
            head = pq_head[i]
            r = head
            while r >= 0:
                p = np.int64(prompt_tokens[r])
                b = _ceil_div(p, bs, shift)
                if count + 1 > prefill_max_batch or tokens + p > prefill_max_tokens or p_used[i] + need + b > cap_p:
                    break
                tokens += p
                sq += p * p
                need += b
                count += 1
                pf_start[r] = now
                r = link[r]
            if count > 0:
                pq_head[i] = r
                if r < 0:
                    pq_tail[i] = -1
                pq_len[i] -= count
                pb_head[i] = head
                pb_n[i] = count
                _acc(p_block_s, p_last, p_used, i, now)
                p_used[i] += need
                dt = pcoef[C_PA] + pcoef[C_PB] * float(tokens) + pcoef[C_PC] * float(sq)
                p_busy[i] += dt
                p_steps[i] += 1
                _heap_set(pev_key, pev_id, pev_pos, 0, pev_n, pev_pos[i], now + dt)
            else:
                pev_n = _heap_remove(pev_key, pev_id, pev_pos, 0, pev_n, pev_pos[i])
            continue

        # -------------------------------------------------------- R11: a decode instance's controller acts
        j = dev_id[0, 0]
        if t_d < now:
            error = ERR_TIME_BACKWARDS
        now = t_d
        if x_req[j] >= 0:
            # R6: the transfer ends: the request waits here; the prefill instance frees the prompt's blocks
            r = x_req[j]
            x_req[j] = -1
            link[r] = -1
            if wt_tail[j] >= 0:
                link[wt_tail[j]] = r
            else:
                wt_head[j] = r
            wt_tail[j] = r
            p = np.int64(prompt_tokens[r])
            wt_blocks[j] += _ceil_div(p + 1, bs, shift)
            i = pf_inst[r]
            _acc(p_block_s, p_last, p_used, i, now)
            p_used[i] -= _ceil_div(p, bs, shift)
            if pq_len[i] > 0 and pev_pos[i] < 0 and pb_n[i] == 0:
                pev_n = _heap_push(pev_key, pev_id, pev_pos, 0, pev_n, now, i)
        # R10: lanes whose step has completed (by now) produce their tokens
        for mm in range(pp):
            L = j * pp + mm
            if not ln_busy[L] or ln_end[L] > now:
                continue
            ln_busy[L] = False
            in_flight[j] -= 1
            k = ln_k[L]
            d0 = dcount[L]
            _acc(d_block_s, d_last, d_used, j, now)
            if k > 1:
                grown = _blocks_over(hist, L, bs, shift, n_dec[L], d0 + 1, k - 1)
                d_block_s[j] += 0.5 * grown * (now - ln_start[L])   # the blocks grew through the series
                d_used[j] += grown
            if d_used[j] > cap_d:
                error = ERR_BLOCKS
            d = d0 + k
            dcount[L] = d
            while fin_n[L] > 0 and fin_key[L, 0] <= d:
                r = fin_id[L, 0]
                if fin_key[L, 0] != d:
                    error = ERR_HEAP
                fin_n[L] = _heap_remove(fin_key, fin_id, hpos, L, fin_n[L], 0)
                s_r = ctx0[r]
                d_used[j] -= _ceil_div(s_r + d - 1, bs, shift)
                hist[L, _mod(s_r, bs, shift)] -= 1
                ctx_base[L] -= s_r
                n_dec[L] -= 1
                finish_s[r] = now
                d_out[j] -= 1
                p_, n_ = run_prev[r], run_next[r]
                if p_ >= 0:
                    run_next[p_] = n_
                else:
                    ln_head[L] = n_
                if n_ >= 0:
                    run_prev[n_] = p_
                else:
                    ln_tail[L] = p_
        # R6: move the bridge's head if it is acceptable
        r = br_head[j]
        if r >= 0:
            p = np.int64(prompt_tokens[r])
            b = _ceil_div(p + 1, bs, shift)
            if wt_blocks[j] < waiting_limit_blocks and b <= cap_d - d_used[j]:
                br_head[j] = link[r]
                if br_head[j] < 0:
                    br_tail[j] = -1
                _acc(d_block_s, d_last, d_used, j, now)
                d_used[j] += b
                x_req[j] = r
                x_until[j] = now + (link_latency_s + p * kv_bytes_per_token / link_bytes_per_s)
                d_xfer[j] += x_until[j] - now
                x_end[r] = x_until[j]
                _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], x_until[j])
                continue
        # R7-R9: launch every lane with nothing in flight, in cyclic order after the lane launched last
        after = last_lane[j]
        for step_k in range(1, pp + 1):
            mm = (after + step_k) % pp
            L = j * pp + mm
            if ln_busy[L]:
                continue
            d = dcount[L]
            need = hist[L, _mod(1 - d, bs, shift)] if n_dec[L] > 0 else 0
            preempted = 0
            # R8: swap out the most recently admitted until this step's new blocks fit
            while n_dec[L] > 0 and d_used[j] + need > cap_d:
                v = ln_tail[L]
                s_v = ctx0[v]
                if _mod(s_v + d - 1, bs, shift) == 0:
                    need -= 1
                _acc(d_block_s, d_last, d_used, j, now)
                d_used[j] -= _ceil_div(s_v + d - 1, bs, shift)
                hist[L, _mod(s_v, bs, shift)] -= 1
                ctx_base[L] -= s_v
                n_dec[L] -= 1
                fin_n[L] = _heap_remove(fin_key, fin_id, hpos, L, fin_n[L], hpos[v])
                p_ = run_prev[v]
                ln_tail[L] = p_
                if p_ >= 0:
                    run_next[p_] = -1
                else:
                    ln_head[L] = -1
                run_prev[v] = -1
                gen[v] = s_v + d - np.int64(prompt_tokens[v])
                swaps[v] += 1
                preempted += 1
                link[v] = sw_head[j]            # to the front: victims go newest first, so order is kept
                sw_head[j] = v
                if sw_tail[j] < 0:
                    sw_tail[j] = v
            # (R7 after R8: a victim cannot fit again in the launch that swapped it out, it heads the swapped queue)
            # R7: swapped requests first, while their blocks fit
            while sw_head[j] >= 0 and n_dec[L] < decode_max_batch:
                r = sw_head[j]
                c = np.int64(prompt_tokens[r]) + gen[r]
                if d_used[j] + need + _ceil_div(c, bs, shift) > cap_d:
                    break
                sw_head[j] = link[r]
                if sw_head[j] < 0:
                    sw_tail[j] = -1
                _acc(d_block_s, d_last, d_used, j, now)
                d_used[j] += _ceil_div(c - 1, bs, shift)
                if _mod(c - 1, bs, shift) == 0:
                    need += 1
                s_r = c - d
                ctx0[r] = s_r
                hist[L, _mod(s_r, bs, shift)] += 1
                ctx_base[L] += s_r
                n_dec[L] += 1
                fin_n[L] = _heap_push(fin_key, fin_id, hpos, L, fin_n[L],
                                      float(d + np.int64(output_tokens[r]) - gen[r]), r)
                run_prev[r] = ln_tail[L]
                run_next[r] = -1
                if ln_tail[L] >= 0:
                    run_next[ln_tail[L]] = r
                else:
                    ln_head[L] = r
                ln_tail[L] = r
            # R7: then moved requests, while the lane holds no more than the smallest other lane
            others = decode_max_batch
            for kk in range(pp):
                if kk != mm and n_dec[j * pp + kk] < others:
                    others = n_dec[j * pp + kk]
            while wt_head[j] >= 0 and n_dec[L] < decode_max_batch and n_dec[L] <= others:
                r = wt_head[j]
                wt_head[j] = link[r]
                if wt_head[j] < 0:
                    wt_tail[j] = -1
                p = np.int64(prompt_tokens[r])
                wt_blocks[j] -= _ceil_div(p + 1, bs, shift)
                if _mod(p, bs, shift) == 0:
                    # the reserved slot of its first step becomes this step's need
                    _acc(d_block_s, d_last, d_used, j, now)
                    d_used[j] -= 1
                    need += 1
                dc_start[r] = now
                s_r = p + 1 - d
                ctx0[r] = s_r
                hist[L, _mod(s_r, bs, shift)] += 1
                ctx_base[L] += s_r
                n_dec[L] += 1
                fin_n[L] = _heap_push(fin_key, fin_id, hpos, L, fin_n[L],
                                      float(d + np.int64(output_tokens[r]) - 1), r)
                run_prev[r] = ln_tail[L]
                run_next[r] = -1
                if ln_tail[L] >= 0:
                    run_next[ln_tail[L]] = r
                else:
                    ln_head[L] = r
                ln_tail[L] = r
            nd = n_dec[L]
            if nd == 0:
                continue
            _acc(d_block_s, d_last, d_used, j, now)
            d_used[j] += need
            if d_used[j] > cap_d:
                error = ERR_BLOCKS
            a_d, b_d, c_d = _decode_coefs(dcoef, nd)
            step = a_d + b_d * float(ctx_base[L] + nd * d) + c_d * nd
            k = 1
            if pp == 1:
                e = step
                f = b_d * nd
                # a series needs a bridge head that stays unacceptable: this launch may have emptied the
                # waiting queue, so check it as the next boundary will (blocks only shrink until a finish)
                head_ok = False
                if br_head[j] >= 0:
                    hb = _ceil_div(np.int64(prompt_tokens[br_head[j]]) + 1, bs, shift)
                    head_ok = wt_blocks[j] < waiting_limit_blocks and hb <= cap_d - d_used[j]
                if jumps and preempted == 0 and not head_ok:
                    k_max = np.int64(fin_key[L, 0]) - d
                    if k_max > 1:
                        k = 1 + _steps_fitting(hist, L, bs, shift, nd, d + 1, cap_d - d_used[j], k_max - 1)
                end = now + _run_time(e, f, k)
                d_busy[j] += end - now
            else:
                e = (step - pipe_overhead_s) / pp + pipe_overhead_s
                f = 0.0
                begin = now
                for stage in range(pp):
                    if stage_free[j, stage] > begin:
                        begin = stage_free[j, stage]
                    stage_free[j, stage] = begin + e
                    begin = begin + e
                end = begin
                d_busy[j] += e
            d_steps[j] += k
            ln_busy[L] = True
            ln_start[L] = now
            ln_end[L] = end
            ln_k[L] = k
            ln_e[L] = e
            ln_f[L] = f
            in_flight[j] += 1
            last_lane[j] = mm
        # the controller's next event: the earliest lane completion (none: idle until a request reaches it)
        t_next = inf
        for mm in range(pp):
            L = j * pp + mm
            if ln_busy[L] and ln_end[L] < t_next:
                t_next = ln_end[L]
        if t_next < inf:
            _heap_set(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j], t_next)
        else:
            dev_n = _heap_remove(dev_key, dev_id, dev_pos, 0, dev_n, dev_pos[j])
        if error:
            break
    for k in range(P):
        _acc(p_block_s, p_last, p_used, k, now)
    for k in range(D):
        _acc(d_block_s, d_last, d_used, k, now)
    for r in range(n):
        if pf_inst[r] >= 0 and np.isnan(finish_s[r]):
            error = ERR_LEFT if error == 0 else error
    return (pf_inst, dc_inst, pf_start, first_s, x_end, dc_start, finish_s, swaps,
            p_busy, p_block_s, p_steps, d_busy, d_block_s, d_steps, d_xfer, error)
