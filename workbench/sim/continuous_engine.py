"""Compiled iteration-level core: replicas running continuous-batching steps (vLLM semantics).

Each replica (one GPU or one tensor-parallel group; ``num_gpus`` of them) runs
engine *steps* back to back while it has work.  The rules, one by one:

Arrival and routing
  1. A request joins at ``arrival_s + a0 + a1 * prompt_tokens`` (the step-time
     model's arrival overhead: HTTP, tokenisation); joins are processed in
     time order (ties: trace order).  At its join it is routed to a replica:
     ``round_robin`` cycles over the replicas in join order;
     ``least_outstanding`` picks the replica with the fewest requests routed
     to it and not finished (waiting + running); ``least_kv`` picks the one
     with the fewest KV blocks in use (as of its last completed step) plus
     the blocks the prompts already waiting on it will need, so a burst is
     spread before any of it is admitted.  Ties go to the lowest replica
     index.
  2. Requests that can never be served are rejected before the engine runs,
     with a reason: the KV blocks a request holds at its peak,
     ``ceil((prompt + output - 1) / block_size)`` (``ceil(prompt / block_size)``
     for a 1-token output), exceed ``kv_blocks``; or, without chunked
     prefill, its prompt exceeds ``max_num_batched_tokens`` (vLLM v0.2 ignores
     such prompts).

Scheduling a step (at every step boundary, after the joins at that instant)
  3. The waiting queue is FCFS (``continuous_multi_bin``: see rule 12).
  4. ``chunked_prefill=False`` (vLLM v0.2): if requests wait, prefills are
     admitted from the head of the queue while the step's prompt tokens stay
     within ``max_num_batched_tokens``, the running requests within the
     sequence limit (``max_num_seqs``, or the policy's limit) and the prompt's
     blocks ``ceil(prompt / block_size)`` within the free KV blocks; the first
     request that does not fit stops admission.  If any was admitted the step
     is prefill-only.  Otherwise the step is a decode step of every running
     request.
  5. ``chunked_prefill=True`` (vLLM v1): every running decode takes one token
     of the budget first; then the request whose prompt is partly computed
     (at most one: a chunk is only cut when the budget runs out) gets its next
     chunk, then waiting requests are admitted FCFS, each taking
     ``min(remaining prompt, remaining budget)`` tokens, while the budget,
     the sequence limit and the free blocks allow.  No request is admitted in
     a step in which a preemption happened.  Decodes and prefill chunks share
     the step.
  6. The first output token comes from the step that completes the prompt.
     A request with one output token finishes there; the others decode one
     token per step.

KV cache
  7. Capacity ``kv_blocks`` blocks of ``block_size`` tokens (when ``None``:
     ``SimConfig.kv_capacity_tokens // block_size``).  A request holds
     ``ceil(tokens in its KV / block_size)`` blocks: the computed prompt
     tokens while prefilling, ``prompt + generated`` once decoding (the slot
     for the token being fed is reserved before the step), so it needs a new
     block every ``block_size`` decode steps.  No watermark is kept.
  8. When the blocks a decode step needs are not free, the most recently
     admitted running request is preempted, repeatedly, until they are (it
     may be the one that needed the block).  Preemption is by recompute: its
     blocks are freed, it goes back to the FRONT of the waiting queue (several
     victims keep their admission order), and its generated tokens are lost
     and computed again.  Its first-token time is kept (the user already saw
     that token).

Step time (:class:`workbench.sim.steptime.StepTimeModel`)
  9. prefill part ``b_p * sum(l) + c_p * sum(l * (p + l))`` over the prompt
     pieces (``p`` the tokens already computed), decode part
     ``b_d * sum(ctx) + c_d * n`` over the ``n`` decodes (``ctx`` = prompt +
     tokens generated so far; the large-batch coefficients when ``n >=
     threshold``), plus the fixed cost ``a_p`` or ``a_d``, ``max(a_p, a_d)``
     for a mixed step.
  10. The token overhead is added to every reported token time and does not
      delay steps: ``ttft = first-token step end - arrival + o``,
      ``e2e = last step end - arrival + output * o``,
      ``tpot = (e2e - ttft) / (output - 1)`` (NaN for one output token),
      ``queue = start of the first step that included it - arrival``.

Policies
  11. ``continuous_sla`` (Pang et al., Algorithms 1 and 2): the running
      batch may hold at most ``min(clamp(b_mem), clamp(b_sla))`` requests,
      ``clamp(b) = min(max(b, N_decode), B_max)``; ``B_max`` is
      ``max_num_seqs`` (the engine's batch cap) and ``B_min`` is ``b_min``.  Algorithm 2 runs after
      every step containing decodes: ``tau`` is the mean decode-step time (the
      time per output token of each running request) of the last
      ``ctrl_window`` such steps and ``b_bar`` their mean number of decodes,
      compared with ``D = sla_budget_fraction * tpot_sla_s`` and hold band
      ``eps = ctrl_eps_fraction * D``.  Algorithm 1 is the static engine's
      reading: ``b_mem`` is the largest ``b`` with ``b mu + theta sqrt(b)
      sigma <= kv_blocks * block_size``, ``mu, sigma`` the mean and std-dev of
      prompt+output tokens of the replica's completed requests, recomputed
      only while requests both wait and run.  Runs of decode steps (see
      Speed) are used only while nobody waits on the replica, and the
      controller is updated once per step of the run.
  12. ``continuous_multi_bin``: the waiting queue is split into K bins by
      predicted output length (same predictor and equal-mass edges as the
      static multi-bin).  A replica admits in *rounds*: a round takes the
      bin whose head request joined earliest (ties: trace order) and covers the requests waiting
      in it at that moment (plus preempted ones put back in front of it);
      admission takes only from the round's bin, FCFS, and when the round is
      used up the next round starts.  So a running batch fills with
      similar-length requests, and no bin waits longer than one round per
      other bin.

Records: per request the replica, the start of its first step, the end of
the step that produced its first token and of its last step, and its
preemptions; per replica the busy time and the block-seconds of KV in use
(exact for single steps; within a run of decode steps, the trapezoid between
its first and last step's blocks); and a log of the first ``log_capacity``
scheduling decisions (one row per step or run of decode steps).

Speed: decode-only steps with nothing joining are run in one event: with
``n`` decodes the context sum grows by ``n`` per step, so ``k`` steps take
``k E + F k (k - 1) / 2`` seconds (``E`` the first step's time, ``F = b_d n``),
running totals keep the context sum and blocks in use, a heap keyed by the
decode-step count at which each request finishes gives the next finish, and
a histogram of context length modulo ``block_size`` gives the blocks each
step needs.  A run ends at the next finish, when blocks run out, or when a
request joins the replica (the run is cut after the step in flight).  The
per-step work therefore does not grow with the batch.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from workbench.sim.controllers import memory_limit, sla_update, token_stats_add, window_mean

POLICY_FCFS, POLICY_SLA, POLICY_MULTI_BIN = 0, 1, 2
ROUTERS = {"round_robin": 0, "least_outstanding": 1, "least_kv": 2}

ST_NEW, ST_WAITING, ST_PREFILL, ST_DECODE, ST_DONE = 0, 1, 2, 3, 4
KIND_NONE, KIND_DECODE_RUN, KIND_STEP = 0, 1, 2

# columns of the step log (one row per scheduling decision: one step, or a run of k decode steps)
S_REPLICA, S_K, S_PREFILL_TOKENS, S_PREFILL_REQS, S_DECODES, S_BLOCKS, S_PREEMPTED = range(7)

ERR_TIME_BACKWARDS = 1
ERR_BLOCKS = 2
ERR_STUCK = 3
ERR_LEFT = 4
ERR_HEAP = 5

C_PA, C_PB, C_PC, C_DA, C_DB, C_DC, C_LA, C_LB, C_LC, C_LT, C_A0, C_A1, C_TOK = range(13)


# ---------------------------------------------------------------- indexed binary heaps (key, id)
# Row ``w`` of the 2-D arrays ``hk`` (keys) and ``hid`` (ids) is one heap; ``pos[id]`` is an id's index
# in its heap.  Rows are addressed by index rather than passed as views, which would cost a reference
# count update per call.
# (The comparisons and swaps are written out in the loops: a helper taking the arrays would cost a
# reference-count increment and decrement per call, which dominated the engine's time.)
@njit(cache=True, inline="always")
def _sift_up(hk, hid, pos, w, i):
    key = hk[w, i]
    ident = hid[w, i]
    while i > 0:
        parent = (i - 1) >> 1
        pk = hk[w, parent]
        if pk < key or (pk == key and hid[w, parent] < ident):
            break
        hk[w, i] = pk
        hid[w, i] = hid[w, parent]
        pos[hid[w, i]] = i
        i = parent
    hk[w, i] = key
    hid[w, i] = ident
    pos[ident] = i


@njit(cache=True, inline="always")
def _sift_down(hk, hid, pos, w, size, i):
    key = hk[w, i]
    ident = hid[w, i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        ck = hk[w, child]
        cid = hid[w, child]
        if child + 1 < size:
            rk = hk[w, child + 1]
            rid = hid[w, child + 1]
            if rk < ck or (rk == ck and rid < cid):
                child += 1
                ck = rk
                cid = rid
        if key < ck or (key == ck and ident < cid):
            break
        hk[w, i] = ck
        hid[w, i] = cid
        pos[cid] = i
        i = child
    hk[w, i] = key
    hid[w, i] = ident
    pos[ident] = i


@njit(cache=True, inline="always")
def _heap_push(hk, hid, pos, w, size, key, ident):
    hk[w, size] = key
    hid[w, size] = ident
    pos[ident] = size
    _sift_up(hk, hid, pos, w, size)
    return size + 1


@njit(cache=True, inline="always")
def _heap_remove(hk, hid, pos, w, size, i):
    """Remove the entry at index ``i`` of heap ``w``; returns the new size."""
    pos[hid[w, i]] = -1
    size -= 1
    if i != size:
        hk[w, i] = hk[w, size]
        hid[w, i] = hid[w, size]
        pos[hid[w, i]] = i
        _sift_up(hk, hid, pos, w, i)
        _sift_down(hk, hid, pos, w, size, pos[hid[w, i]])
    return size


@njit(cache=True, inline="always")
def _heap_set(hk, hid, pos, w, size, i, key):
    hk[w, i] = key
    _sift_up(hk, hid, pos, w, i)
    _sift_down(hk, hid, pos, w, size, pos[hid[w, i]])


# ---------------------------------------------------------------- small pure helpers
@njit(cache=True, inline="always")
def _ceil_div(a, b, shift):
    """ceil(a / b) for a >= 0; a shift when b is a power of two (shift >= 0): integer division is slow."""
    if shift >= 0:
        return (a + b - 1) >> shift
    return (a + b - 1) // b


@njit(cache=True, inline="always")
def _mod(a, b, shift):
    """a mod b (Python semantics, also for a < 0); a mask when b is a power of two."""
    if shift >= 0:
        return a & (b - 1)
    return a % b


@njit(cache=True, inline="always")
def _decode_coefs(coef, n):
    if n >= coef[C_LT]:
        return coef[C_LA], coef[C_LB], coef[C_LC]
    return coef[C_DA], coef[C_DB], coef[C_DC]


@njit(cache=True, inline="always")
def _run_time(e, f, k):
    """Seconds of k decode steps whose times are e, e + f, e + 2f, ..."""
    return k * e + f * (k * (k - 1) / 2.0)


@njit(cache=True, inline="always")
def _steps_to_reach(e, f, k_max, span):
    """Smallest i in [1, k_max] with _run_time(e, f, i) >= span (k_max if none)."""
    if span <= e:
        return 1
    if f > 0:
        half = f / 2.0
        lin = e - half
        i = int(math.ceil((-lin + math.sqrt(lin * lin + 4.0 * half * span)) / (2.0 * half)))
    else:
        i = int(math.ceil(span / e))
    i = min(max(i, 1), k_max)
    while i > 1 and _run_time(e, f, i - 1) >= span:
        i -= 1
    while i < k_max and _run_time(e, f, i) < span:
        i += 1
    return i


@njit(cache=True, inline="always")
def _blocks_over(hist, w, bs, shift, n, d, k):
    """New blocks the n decodes need over k steps starting at decode count d.

    Step ``d + j`` needs ``hist[(1 - d - j) mod bs]``; the phase is stepped down
    instead of taking a modulo per step (integer division is the slow part)."""
    if shift >= 0:
        total = (k >> shift) * n
        rest = k & (bs - 1)
    else:
        total = (k // bs) * n
        rest = k % bs
    phase = _mod(1 - d, bs, shift)
    for _ in range(rest):
        total += hist[w, phase]
        phase = phase - 1 if phase > 0 else bs - 1
    return total


@njit(cache=True, inline="always")
def _steps_fitting(hist, w, bs, shift, n, d, free, k_max):
    """Largest k <= k_max such that the blocks needed over k steps fit in ``free``."""
    if n == 0:
        return k_max
    cycles = free // n
    if cycles * bs >= k_max:
        return k_max
    k = cycles * bs
    left = free - cycles * n
    phase = _mod(1 - d, bs, shift)   # the phase of step d + k: k is a multiple of bs
    for _ in range(bs):
        if k >= k_max:
            break
        need = hist[w, phase]
        if need > left:
            break
        left -= need
        k += 1
        phase = phase - 1 if phase > 0 else bs - 1
    return k


@njit(cache=True, inline="always")
def _pick_queue(policy, g, K, q_head, q_len, active_bin, round_left, join_s):
    """Index of the waiting queue admission takes from (the replica must have waiting requests)."""
    if policy != POLICY_MULTI_BIN:
        return g * K
    a = g * K + active_bin[g]
    if round_left[g] > 0 and q_len[a] > 0:
        return a
    best = g * K
    best_t = np.inf
    best_r = -1
    for j in range(K):
        qi = g * K + j
        if q_len[qi] > 0:
            h = q_head[qi]
            if join_s[h] < best_t or (join_s[h] == best_t and h < best_r):   # ties: trace order
                best_t = join_s[h]
                best_r = h
                best = qi
    active_bin[g] = best - g * K
    round_left[g] = q_len[best]
    return best


# ---------------------------------------------------------------- preemption
@njit(cache=True, inline="always")
def _requeue_front(v, g, K, policy, bs, shift, prompt_tokens, bin_id, state, run_prev, run_next, run_head,
                   run_tail, nxt, q_head, q_tail, q_len, waiting, wait_blocks, active_bin, round_left):
    """Preemption by recompute: ``v``, the tail of replica ``g``'s running list, goes back to the FRONT of its
    waiting queue (rule 8); the caller has already freed its blocks."""
    p_ = run_prev[v]
    run_tail[g] = p_
    if p_ >= 0:
        run_next[p_] = -1
    else:
        run_head[g] = -1
    run_prev[v] = -1
    state[v] = ST_WAITING
    qi = g * K + bin_id[v]
    nxt[v] = q_head[qi]
    q_head[qi] = v
    if q_tail[qi] < 0:
        q_tail[qi] = v
    q_len[qi] += 1
    waiting[g] += 1
    wait_blocks[g] += _ceil_div(np.int64(prompt_tokens[v]), bs, shift)
    if policy == POLICY_MULTI_BIN and bin_id[v] == active_bin[g]:
        round_left[g] += 1


# ---------------------------------------------------------------- the engine
@njit(cache=True)
def run_continuous(join_order, join_s, prompt_tokens, output_tokens, bin_id, n_bins, num_replicas, router,
                   policy, jumps, chunked, max_num_seqs, max_batched_tokens, block_size, kv_blocks, coef,
                   b_min, b_max, budget_s, eps_s, alpha, delta, window, theta, log_capacity):
    """Simulate; see the module docstring.  ``join_order``: accepted requests sorted by join time.

    Returns per request (replica, sched_s, first_s, finish_s, preemptions), per replica
    (busy_s, block_seconds, steps), the step log (float: start, end; int: S_* columns),
    its row count and an error code."""
    n = join_s.size
    m = join_order.size
    R = num_replicas
    K = n_bins
    bs = block_size
    shift = -1
    if bs & (bs - 1) == 0:
        shift = 0
        while (1 << shift) < bs:
            shift += 1
    cap = kv_blocks
    tok_o = coef[C_TOK]

    # per request
    replica = np.full(n, -1, np.int32)
    sched_s = np.full(n, np.nan)
    first_s = np.full(n, np.nan)
    finish_s = np.full(n, np.nan)
    preempt = np.zeros(n, np.int32)
    state = np.zeros(n, np.int8)
    nxt = np.full(n, -1, np.int32)          # waiting-queue links
    run_prev = np.full(n, -1, np.int32)     # running list, in admission order
    run_next = np.full(n, -1, np.int32)
    hpos = np.full(n, -1, np.int32)         # position in its replica's finish heap
    ctx0 = np.zeros(n, np.int64)            # S_r: context at decode count d is S_r + d
    done_pf = np.zeros(n, np.int32)         # prompt tokens computed (in KV) so far

    # per replica
    q_head = np.full(R * K, -1, np.int64)
    q_tail = np.full(R * K, -1, np.int64)
    q_len = np.zeros(R * K, np.int64)
    waiting = np.zeros(R, np.int64)
    wait_blocks = np.zeros(R, np.int64)
    outstanding = np.zeros(R, np.int64)
    run_head = np.full(R, -1, np.int64)
    run_tail = np.full(R, -1, np.int64)
    partial = np.full(R, -1, np.int64)
    dcount = np.zeros(R, np.int64)          # decode steps run so far
    n_dec = np.zeros(R, np.int64)
    ctx_base = np.zeros(R, np.int64)        # sum of S_r over decodes
    used = np.zeros(R, np.int64)
    hist = np.zeros((R, bs), np.int64)      # decodes by S_r mod block_size
    heap_cap = max(1, min(max_num_seqs, cap, n))
    fin_key = np.empty((R, heap_cap), np.float64)
    fin_id = np.empty((R, heap_cap), np.int64)
    fin_n = np.zeros(R, np.int64)
    busy_s = np.zeros(R)
    block_s = np.zeros(R)
    steps = np.zeros(R, np.int64)
    # the step (or decode run) in flight
    kind = np.zeros(R, np.int64)
    t_start = np.zeros(R)
    run_k = np.zeros(R, np.int64)
    run_e = np.zeros(R)
    run_f = np.zeros(R)
    with_dec = np.zeros(R, np.bool_)
    n_pf = np.zeros(R, np.int64)
    dec_start = np.zeros(R, np.int64)
    blocks_at_start = np.zeros(R, np.int64)
    log_row = np.full(R, -1, np.int64)
    # policies
    active_bin = np.zeros(R, np.int64)
    round_left = np.zeros(R, np.int64)
    b_low = np.full(R, float(b_min))
    b_high = np.full(R, float(b_max))
    b_sla = np.full(R, (b_min + b_max) // 2, np.int64)
    b_mem = np.full(R, b_max, np.int64)
    win_t = np.zeros((R, window))
    win_b = np.zeros((R, window))
    win_n = np.zeros(R, np.int64)
    no_release = np.zeros(R, np.int64)   # continuous_sla runs Algorithm 2 as written: never released
    tok_n = np.zeros(R)
    tok_mean = np.zeros(R)
    tok_m2 = np.zeros(R)

    # replica event heap
    ev_key = np.empty((1, R), np.float64)
    ev_id = np.empty((1, R), np.int64)
    ev_pos = np.full(R, -1, np.int64)
    ev_n = 0

    log_f = np.empty((log_capacity, 2), np.float64)
    log_i = np.empty((log_capacity, 7), np.int64)
    n_log = 0

    error = 0
    now = 0.0
    ptr = 0
    rr = 0
    while ptr < m or ev_n > 0:
        t_join = join_s[join_order[ptr]] if ptr < m else np.inf
        t_event = ev_key[0, 0] if ev_n > 0 else np.inf
        if t_join <= t_event:
            # ---------------------------------------------------- a request joins and is routed
            if t_join < now:
                error = ERR_TIME_BACKWARDS
            now = t_join
            r = join_order[ptr]
            ptr += 1
            if router == 0:
                g = rr
                rr = rr + 1 if rr + 1 < R else 0
            else:
                g = 0
                best = np.inf
                for h in range(R):
                    if router == 1:
                        load = float(outstanding[h])
                    else:
                        load = float(used[h] + wait_blocks[h])
                        if kind[h] == KIND_DECODE_RUN and run_k[h] > 1 and ev_pos[h] >= 0:
                            # blocks the steps of the run completed before now have taken
                            i = _steps_to_reach(run_e[h], run_f[h], run_k[h], now - t_start[h])
                            if i > 1:
                                load += float(_blocks_over(hist, h, bs, shift, dec_start[h], dcount[h], i - 1))
                    if load < best:
                        best = load
                        g = h
            replica[r] = g
            state[r] = ST_WAITING
            qi = g * K + bin_id[r]
            if q_tail[qi] >= 0:
                nxt[q_tail[qi]] = r
            else:
                q_head[qi] = r
            q_tail[qi] = r
            nxt[r] = -1
            q_len[qi] += 1
            waiting[g] += 1
            wait_blocks[g] += _ceil_div(np.int64(prompt_tokens[r]), bs, shift)
            outstanding[g] += 1
            if ev_pos[g] < 0:
                kind[g] = KIND_NONE           # idle: decide at this instant, after same-time joins
                t_start[g] = now
                ev_n = _heap_push(ev_key, ev_id, ev_pos, 0, ev_n, now, g)
            elif kind[g] == KIND_DECODE_RUN and run_k[g] > 1:
                # cut the run after the step in flight, so the request is seen at the next boundary
                i = _steps_to_reach(run_e[g], run_f[g], run_k[g], now - t_start[g])
                if i < run_k[g]:
                    run_k[g] = i
                    _heap_set(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g],
                              t_start[g] + _run_time(run_e[g], run_f[g], i))
                    if log_row[g] >= 0:
                        log_f[log_row[g], 1] = t_start[g] + _run_time(run_e[g], run_f[g], i)
                        log_i[log_row[g], S_K] = i
            continue

        # -------------------------------------------------------- a replica reaches a step boundary
        g = ev_id[0, 0]
        if t_event < now:
            error = ERR_TIME_BACKWARDS
        now = t_event
        if kind[g] != KIND_NONE:
            k = run_k[g]
            busy_s[g] += now - t_start[g]
            steps[g] += k
            d0 = dcount[g]
            if with_dec[g]:
                grown = _blocks_over(hist, g, bs, shift, n_dec[g], d0, k)
                first_blocks = blocks_at_start[g] + hist[g, _mod(1 - d0, bs, shift)]
                used[g] += grown
                block_s[g] += 0.5 * (first_blocks + blocks_at_start[g] + grown) * (now - t_start[g])
                dcount[g] = d0 + k
            else:
                block_s[g] += blocks_at_start[g] * (now - t_start[g])
            if used[g] > cap:
                error = ERR_BLOCKS
            if log_row[g] >= 0:
                log_i[log_row[g], S_BLOCKS] = used[g]
            d = dcount[g]
            # decodes that produced their last token
            while fin_n[g] > 0 and fin_key[g, 0] <= d:
                r = fin_id[g, 0]
                if fin_key[g, 0] != d:
                    error = ERR_HEAP
                fin_n[g] = _heap_remove(fin_key, fin_id, hpos, g, fin_n[g], 0)
                s_r = ctx0[r]
                used[g] -= _ceil_div(s_r + d - 1, bs, shift)
                hist[g, _mod(s_r, bs, shift)] -= 1
                ctx_base[g] -= s_r
                n_dec[g] -= 1
                finish_s[r] = now
                state[r] = ST_DONE
                outstanding[g] -= 1
                p_, n_ = run_prev[r], run_next[r]
                if p_ >= 0:
                    run_next[p_] = n_
                else:
                    run_head[g] = n_
                if n_ >= 0:
                    run_prev[n_] = p_
                else:
                    run_tail[g] = p_
                x = float(prompt_tokens[r]) + float(output_tokens[r])
                token_stats_add(tok_n, tok_mean, tok_m2, g, x)   # Welford, of completed requests
            # prefill pieces of this step: the last n_pf requests of the running list
            r = run_tail[g]
            for _ in range(n_pf[g]):
                prev = run_prev[r]
                if done_pf[r] == prompt_tokens[r]:
                    if np.isnan(first_s[r]):
                        first_s[r] = now
                    if partial[g] == r:
                        partial[g] = -1
                    if output_tokens[r] == 1:
                        used[g] -= _ceil_div(done_pf[r], bs, shift)
                        finish_s[r] = now
                        state[r] = ST_DONE
                        outstanding[g] -= 1
                        if prev >= 0:
                            run_next[prev] = run_next[r]
                        else:
                            run_head[g] = run_next[r]
                        if run_next[r] >= 0:
                            run_prev[run_next[r]] = prev
                        else:
                            run_tail[g] = prev
                        x = float(prompt_tokens[r]) + 1.0
                        token_stats_add(tok_n, tok_mean, tok_m2, g, x)   # Welford, of completed requests
                    else:
                        s_r = np.int64(prompt_tokens[r]) + 1 - d
                        ctx0[r] = s_r
                        hist[g, _mod(s_r, bs, shift)] += 1
                        ctx_base[g] += s_r
                        n_dec[g] += 1
                        state[r] = ST_DECODE
                        fin_n[g] = _heap_push(fin_key, fin_id, hpos, g, fin_n[g],
                                              float(d + output_tokens[r] - 1), r)
                r = prev
            if policy == POLICY_SLA and with_dec[g]:
                for j in range(k):   # Algorithm 2 after every step of the run (runs only when nobody waits)
                    tau, b_bar = window_mean(win_t, win_b, win_n, g, run_e[g] + run_f[g] * j,
                                             float(dec_start[g]), window)
                    b_sla[g] = sla_update(b_low, b_high, no_release, g, tau, b_bar, budget_s, eps_s, alpha,
                                          delta, b_min, b_max, 0, False)   # Algorithm 2 as written

        # -------------------------------------------------------- schedule the next step
        d = dcount[g]
        running = n_dec[g] + (1 if partial[g] >= 0 else 0)
        limit = max_num_seqs
        if policy == POLICY_SLA:
            if waiting[g] > 0 and running > 0 and tok_n[g] >= 2:
                b_mem[g] = memory_limit(tok_n, tok_mean, tok_m2, g, cap * bs, theta, b_mem[g])
            lim_mem = min(max(b_mem[g], n_dec[g]), b_max)
            lim_sla = min(max(b_sla[g], n_dec[g]), b_max)
            limit = min(limit, min(lim_mem, lim_sla))
        need = hist[g, _mod(1 - d, bs, shift)] if n_dec[g] > 0 else 0
        preempted = 0
        pf_tokens = 0
        pf_reqs = 0
        pf_lin = 0.0
        pf_quad = 0.0
        take_decode = True
        if not chunked and waiting[g] > 0:
            # v0.2: a prefill-only step if any prompt can be admitted
            while waiting[g] > 0:
                if policy == POLICY_MULTI_BIN:
                    qi = _pick_queue(policy, g, K, q_head, q_len, active_bin, round_left, join_s)
                else:
                    qi = g * K
                r = q_head[qi]
                p = np.int64(prompt_tokens[r])
                blocks = _ceil_div(p, bs, shift)
                if pf_tokens + p > max_batched_tokens or running + pf_reqs + 1 > limit or used[g] + blocks > cap:
                    break
                q_head[qi] = nxt[r]   # pop r from the front of its queue
                if q_head[qi] < 0:
                    q_tail[qi] = -1
                q_len[qi] -= 1
                nxt[r] = -1
                waiting[g] -= 1
                wait_blocks[g] -= blocks
                round_left[g] -= 1
                used[g] += blocks
                done_pf[r] = p
                state[r] = ST_PREFILL   # admitted: appended to the running list
                if np.isnan(sched_s[r]):
                    sched_s[r] = now
                run_prev[r] = run_tail[g]
                run_next[r] = -1
                if run_tail[g] >= 0:
                    run_next[run_tail[g]] = r
                else:
                    run_head[g] = r
                run_tail[g] = r
                pf_tokens += p
                pf_lin += p
                pf_quad += float(p) * float(p)
                pf_reqs += 1
            take_decode = pf_reqs == 0
        if take_decode and n_dec[g] > 0:
            # blocks for this step's decodes: preempt the most recently admitted until they fit
            while used[g] + need > cap:
                v = run_tail[g]
                if v < 0:
                    break
                preempted += 1
                preempt[v] += 1
                if state[v] == ST_DECODE:
                    s_v = ctx0[v]
                    if _mod(s_v + d - 1, bs, shift) == 0:
                        need -= 1
                    used[g] -= _ceil_div(s_v + d - 1, bs, shift)
                    hist[g, _mod(s_v, bs, shift)] -= 1
                    ctx_base[g] -= s_v
                    n_dec[g] -= 1
                    fin_n[g] = _heap_remove(fin_key, fin_id, hpos, g, fin_n[g], hpos[v])
                else:
                    used[g] -= _ceil_div(done_pf[v], bs, shift)
                    partial[g] = -1
                done_pf[v] = 0
                _requeue_front(v, g, K, policy, bs, shift, prompt_tokens, bin_id, state, run_prev, run_next,
                               run_head, run_tail, nxt, q_head, q_tail, q_len, waiting, wait_blocks, active_bin,
                               round_left)
            if n_dec[g] == 0:
                need = 0
            running = n_dec[g] + (1 if partial[g] >= 0 else 0)
        if chunked:
            budget = max_batched_tokens - n_dec[g]
            reserve = used[g] + need
            pr = partial[g]
            if pr >= 0 and budget > 0:
                p_done = done_pf[pr]
                chunk = min(np.int64(prompt_tokens[pr]) - p_done, budget)
                extra = _ceil_div(p_done + chunk, bs, shift) - _ceil_div(p_done, bs, shift)
                if reserve + extra > cap:
                    # the partly computed prompt is the most recently admitted: it is the victim
                    preempted += 1
                    preempt[pr] += 1
                    used[g] -= _ceil_div(p_done, bs, shift)
                    reserve -= _ceil_div(p_done, bs, shift)
                    done_pf[pr] = 0
                    partial[g] = -1
                    _requeue_front(pr, g, K, policy, bs, shift, prompt_tokens, bin_id, state, run_prev, run_next,
                                   run_head, run_tail, nxt, q_head, q_tail, q_len, waiting, wait_blocks,
                                   active_bin, round_left)
                    running -= 1
                else:
                    used[g] += extra
                    reserve += extra
                    budget -= chunk
                    pf_tokens += chunk
                    pf_lin += chunk
                    pf_quad += float(chunk) * float(p_done + chunk)
                    done_pf[pr] = p_done + chunk
                    pf_reqs += 1
            if preempted == 0:
                while waiting[g] > 0 and budget > 0 and running + 1 <= limit:
                    if policy == POLICY_MULTI_BIN:
                        qi = _pick_queue(policy, g, K, q_head, q_len, active_bin, round_left, join_s)
                    else:
                        qi = g * K
                    r = q_head[qi]
                    p = np.int64(prompt_tokens[r])
                    chunk = min(p, budget)
                    blocks = _ceil_div(chunk, bs, shift)
                    if reserve + blocks > cap:
                        break
                    q_head[qi] = nxt[r]   # pop r from the front of its queue
                    if q_head[qi] < 0:
                        q_tail[qi] = -1
                    q_len[qi] -= 1
                    nxt[r] = -1
                    waiting[g] -= 1
                    wait_blocks[g] -= _ceil_div(p, bs, shift)
                    round_left[g] -= 1
                    used[g] += blocks
                    reserve += blocks
                    done_pf[r] = chunk
                    if chunk < p:
                        partial[g] = r
                    state[r] = ST_PREFILL   # admitted: appended to the running list
                    if np.isnan(sched_s[r]):
                        sched_s[r] = now
                    run_prev[r] = run_tail[g]
                    run_next[r] = -1
                    if run_tail[g] >= 0:
                        run_next[run_tail[g]] = r
                    else:
                        run_head[g] = r
                    run_tail[g] = r
                    budget -= chunk
                    pf_tokens += chunk
                    pf_lin += chunk
                    pf_quad += float(chunk) * float(chunk)
                    pf_reqs += 1
                    running += 1
        nd = n_dec[g] if take_decode else 0   # v0.2: a prefill step holds no decodes
        if pf_reqs == 0 and nd == 0:
            if waiting[g] > 0:
                error = ERR_STUCK
            kind[g] = KIND_NONE
            ev_n = _heap_remove(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g])
            if error:
                break
            continue
        if nd > 0:
            a_d, b_d, c_d = _decode_coefs(coef, nd)
            ctx = ctx_base[g] + nd * d
            var_d = b_d * ctx + c_d * nd
        else:
            a_d = 0.0
            b_d = 0.0
            var_d = 0.0
        if pf_reqs > 0:
            fixed = max(coef[C_PA], a_d) if nd > 0 else coef[C_PA]
            e = fixed + coef[C_PB] * pf_lin + coef[C_PC] * pf_quad + var_d
            f = 0.0
            k = 1
            kind[g] = KIND_STEP
        else:
            e = a_d + var_d
            f = b_d * nd
            k = 1
            if jumps and preempted == 0 and (policy != POLICY_SLA or waiting[g] == 0):
                # (continuous_sla: its limit changes every step, so a waiting request could be admitted
                # at any boundary; runs only while nobody waits)
                k = int(fin_key[g, 0]) - d
                k = _steps_fitting(hist, g, bs, shift, nd, d, cap - used[g], k)
                if k < 1:
                    k = 1
                    error = ERR_BLOCKS
            kind[g] = KIND_DECODE_RUN
        run_k[g] = k
        run_e[g] = e
        run_f[g] = f
        with_dec[g] = nd > 0
        dec_start[g] = nd
        blocks_at_start[g] = used[g]
        n_pf[g] = pf_reqs
        t_start[g] = now
        end = now + _run_time(e, f, k)
        _heap_set(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g], end)
        if n_log < log_capacity:
            log_f[n_log, 0] = now
            log_f[n_log, 1] = end
            log_i[n_log, S_REPLICA] = g
            log_i[n_log, S_K] = k
            log_i[n_log, S_PREFILL_TOKENS] = pf_tokens
            log_i[n_log, S_PREFILL_REQS] = pf_reqs
            log_i[n_log, S_DECODES] = nd
            log_i[n_log, S_BLOCKS] = used[g]
            log_i[n_log, S_PREEMPTED] = preempted
            log_row[g] = n_log
            n_log += 1
        else:
            log_row[g] = -1
        if error:
            break
    for r in range(n):
        if state[r] != ST_DONE and state[r] != ST_NEW:
            error = ERR_LEFT if error == 0 else error
    return (replica, sched_s, first_s, finish_s, preempt, busy_s, block_s, steps,
            log_f[:n_log], log_i[:n_log], error)
