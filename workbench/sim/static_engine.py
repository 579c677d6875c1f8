"""Compiled discrete-event core: a pool of GPUs serving static batches.

Events are arrivals (in trace order) and batch completions (a binary heap
keyed by finish time, ties by GPU index).  Completions at the same instant as
an arrival are handled first.  After every event, idle GPUs take batches while
one can be formed (work conserving); idle GPUs are used in the order they
became idle, which spreads load evenly.

Requests wait in per-bin FIFO queues.  Because a bin's queue is always a
contiguous run of that bin's requests in arrival order, the queues are index
ranges ``order[head[j]:tail[j]]`` into one array: admitting and dispatching are
O(1) per request, choosing a bin is O(K) per batch.

Batch-size rules (see :mod:`workbench.sim.schedulers`):

* ``BATCH_UP_TO``: up to ``fixed_batch`` waiting requests.
* ``BATCH_EXACT``: exactly ``fixed_batch``; a partial batch only once every
  request of its bin has arrived.
* ``BATCH_DYNAMIC``: ``clamp(min(b_mem[j], b_sla[j]), b_min, b_max)`` with one
  controller pair per bin, after Pang, Li & Wang (arXiv 2503.05248); both are
  compiled functions of :mod:`workbench.sim.controllers`, called at every
  completed batch of the bin:

  - Algorithm 2 (SLA).  ``tau`` is the mean *service time* of the bin's last
    ``window`` completed batches and ``b_bar`` their mean size; the budget
    ``D`` is ``sla_budget_fraction * d_sla_s`` and ``eps`` a hold band.  If
    ``tau > D + eps``: ``b_high = max(b_bar, b_low + alpha)``, ``b_low =
    max(b_low - delta, b_min)``; if ``tau < D - eps``: ``b_low = min(b_bar,
    b_high - alpha)``, ``b_high = min(b_high + delta, b_max)``; otherwise the
    interval closes around ``b_bar`` with width ``alpha``.  ``b_sla =
    floor((b_low + b_high) / 2)``, so it never exceeds ``b_max - ceil(alpha/2)``.
    Service time rather than end-to-end latency is fed back because it is
    what the batch size controls: feeding back queueing delay makes batches
    shrink under overload, which lowers throughput and deepens the overload.
  - Infeasible budget (our choice among the two the issue allows: stop
    shrinking, not a per-output-token budget).  When the controller already
    sits at its smallest interval (``b_low = b_min``, ``b_bar <= b_min +
    alpha``) and ``tau`` still exceeds ``D + eps``, no batch size can meet the
    budget: the service time of a static batch is set by its longest request,
    and in a bin of long requests even a batch of one misses.  The controller
    then *releases* the bin: the interval jumps to ``[b_max - alpha, b_max]``
    and over-budget feedback is ignored for ``ctrl_retry_batches`` completed
    batches of the bin, after which it tries shrinking again (0 = never); a
    batch under budget ends the release at once.  Shrinking there would buy no
    request its SLA and only cut throughput (issue 9: 93% of the GPU in the
    longest bin at batch 2.7, 8.4 req/s against static_fifo's 14.1).
  - Algorithm 1 (memory), adapted from a running decode set to a static
    batch: with ``mu`` and ``sigma`` the running mean and std-dev of
    prompt+output tokens of the bin's completed requests, a batch of ``b``
    holds ``b mu +- sqrt(b) sigma`` tokens, and ``b_mem`` is the largest ``b``
    with ``b mu + theta sqrt(b) sigma <= capacity`` (the reserve ``theta sqrt(b)
    sigma`` plays the part of the paper's buffer ``L0``).  It is recomputed at
    every completed batch of the bin (the statistics change only then), on any
    number of GPUs; the first batches, before two requests have completed,
    use ``b_max``.  The N_decode clamp of the paper has no counterpart here
    (no request joins a running static batch).

With ``spread_idle`` (dynamic rule only), when ``m > 1`` GPUs are idle a
batch takes at most ``ceil(waiting / m)`` of its bin's waiting requests, so
requests that arrive together (BurstGPT timestamps have 1 s resolution, and
about half of all arrivals share their instant with another) are spread over
the idle GPUs instead of being stacked in one batch on one GPU while the
others idle.  A load-balancing front end does the same; under load at most
one GPU is idle at a time and the rule has no effect.

Every batch is also cut so that its tokens fit the KV capacity; requests that
could never fit are rejected before the engine runs.

Two ways of timing a batch:

* grid mode (``step_mode=False``, a :class:`~workbench.sim.latency.LatencyModel`):
  ``base_s + per_token_s * longest * (1 + batch_penalty * (b - 1) / b)``
  with ``longest`` the batch's largest prompt+output; every request finishes
  with its batch.
* step mode (``step_mode=True``, the flat vector of a
  :class:`~workbench.sim.steptime.StepTimeModel` in ``step_coef``): the batch
  takes :func:`~workbench.sim.static_steps.static_batch_time_s` of its size,
  ``sum(prompt)``, ``sum(prompt^2)`` and longest output (one prefill of all
  prompts, then lock-step decodes padded to the longest output), and the GPU
  is busy that long.  Tokens stream: every request's first token comes at the
  end of the prefill (``first_token_s``), its last after its own ``output - 1``
  decode steps of the padded batch, i.e. the same closed form with its own
  output instead of the longest (``finish_s``); a step table (``tf``, ``ti`` from
  ``StepTable.pack``; ``ti`` all zero for a plain model) prices it with
  :func:`~workbench.sim.static_steps.static_batch_table_s` instead.  The SLA controller still
  feeds back the batch's service time (its GPU time) against
  ``sla_budget_fraction * d_sla_s``.
"""

from __future__ import annotations


import numpy as np
from numba import njit

from workbench.sim.controllers import memory_limit, sla_initial_limit, sla_update, token_stats_add, window_mean
from workbench.sim.static_steps import static_batch_table_s, static_batch_time_s
from workbench.sim.steptable import TI_DEC_NMAX

BATCH_UP_TO, BATCH_EXACT, BATCH_DYNAMIC = 0, 1, 2
POLICY_OLDEST, POLICY_ROUND_ROBIN, POLICY_LONGEST, POLICY_FIRST_FORMED = 0, 1, 2, 3

# columns of the two batch record matrices: times and token sums (float64), small integers (int32)
F_START, F_SERVICE, F_TOKENS = range(3)
I_GPU, I_BIN, I_SIZE, I_MAXLEN, I_LIMIT, I_FIRST = range(6)

ERR_TIME_BACKWARDS = 1
ERR_LEFT_IN_QUEUE = 2


@njit(cache=True, inline="always")
def _heap_push(heap_t, heap_g, size, t, g):
    i = size
    heap_t[i] = t
    heap_g[i] = g
    while i > 0:
        parent = (i - 1) // 2
        if heap_t[parent] < heap_t[i] or (heap_t[parent] == heap_t[i] and heap_g[parent] < heap_g[i]):
            break
        heap_t[i], heap_t[parent] = heap_t[parent], heap_t[i]
        heap_g[i], heap_g[parent] = heap_g[parent], heap_g[i]
        i = parent
    return size + 1


@njit(cache=True, inline="always")
def _heap_pop(heap_t, heap_g, size):
    g = heap_g[0]
    size -= 1
    heap_t[0] = heap_t[size]
    heap_g[0] = heap_g[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and (heap_t[right] < heap_t[left]
                             or (heap_t[right] == heap_t[left] and heap_g[right] < heap_g[left])):
            child = right
        if heap_t[i] < heap_t[child] or (heap_t[i] == heap_t[child] and heap_g[i] < heap_g[child]):
            break
        heap_t[i], heap_t[child] = heap_t[child], heap_t[i]
        heap_g[i], heap_g[child] = heap_g[child], heap_g[i]
        i = child
    return g, size


@njit(cache=True, inline="always")
def _choose_bin(policy, n_bins, head, tail, end, order, arrival_s, batch_rule, fixed_batch, next_rr):
    """Bin an idle GPU serves next, or -1 if no batch can be formed now."""
    best = -1
    best_key = np.inf
    for step in range(n_bins):
        j = (next_rr + step) % n_bins if policy == POLICY_ROUND_ROBIN else step
        waiting = tail[j] - head[j]
        if waiting <= 0:
            continue
        if batch_rule == BATCH_EXACT:
            if waiting >= fixed_batch:
                key = arrival_s[order[head[j] + fixed_batch - 1]]   # when its batch became full
            elif tail[j] == end[j]:
                key = arrival_s[order[tail[j] - 1]]                 # can never fill: serve partial
            else:
                continue
        elif policy == POLICY_OLDEST:
            key = arrival_s[order[head[j]]]
        elif policy == POLICY_LONGEST:
            key = -float(waiting)
        else:  # round robin: first eligible bin in cyclic order
            return j
        if key < best_key:
            best_key = key
            best = j
    return best


@njit(cache=True)
def run_engine(arrival_s, prompt_tokens, output_tokens, bin_id, accepted, n_bins, num_gpus,
               batch_rule, fixed_batch, policy,
               base_s, per_token_s, batch_penalty, kv_capacity_tokens,
               b_min, b_max, budget_s, eps_s, alpha, delta, window, theta, spread_idle, retry_batches,
               step_mode, step_coef, tf, ti):
    """Simulate; returns (batch_of, start_s, finish_s, first_token_s) per request, the two batch
    record matrices (views of their first rows) and an error code.  ``first_token_s`` is NaN in
    grid mode (see the module docstring for the two modes)."""
    n = arrival_s.size
    table = ti[TI_DEC_NMAX] > 0
    # per-bin FIFO queues as index ranges into `order`
    offsets = np.zeros(n_bins + 1, np.int64)
    for r in range(n):
        if accepted[r]:
            offsets[bin_id[r] + 1] += 1
    for j in range(n_bins):
        offsets[j + 1] += offsets[j]
    order = np.empty(offsets[n_bins], np.int32)
    fill = offsets[:n_bins].copy()
    for r in range(n):
        if accepted[r]:
            order[fill[bin_id[r]]] = r
            fill[bin_id[r]] += 1
    head = offsets[:n_bins].copy()
    tail = offsets[:n_bins].copy()
    end = offsets[1:].copy()

    batch_of = np.full(n, -1, np.int32)
    start_s = np.full(n, np.nan)
    finish_s = np.full(n, np.nan)
    first_token_s = np.full(n, np.nan)
    # at most one batch per accepted request; pages never written stay virtual (not resident)
    max_batches = max(offsets[n_bins], 1)
    batch_f = np.empty((max_batches, 3), np.float64)
    batch_i = np.empty((max_batches, 6), np.int32)

    # controller state, one per bin
    b_low = np.full(n_bins, float(b_min))
    b_high = np.full(n_bins, float(b_max))
    b_sla = np.full(n_bins, sla_initial_limit(b_min, b_max), np.int64)
    released = np.zeros(n_bins, np.int64)
    b_mem = np.full(n_bins, b_max, np.int64)
    win_service = np.zeros((n_bins, window))
    win_size = np.zeros((n_bins, window))
    win_count = np.zeros(n_bins, np.int64)
    tok_n = np.zeros(n_bins)
    tok_mean = np.zeros(n_bins)
    tok_m2 = np.zeros(n_bins)

    # GPU pool
    heap_t = np.empty(num_gpus)
    heap_g = np.empty(num_gpus, np.int64)
    heap_n = 0
    idle = np.arange(num_gpus)
    idle_head = 0
    idle_n = num_gpus
    gpu_batch = np.full(num_gpus, -1, np.int64)

    now = 0.0
    i = 0
    queued = 0
    nb = 0
    next_rr = 0
    error = 0
    while heap_n > 0 or i < n:
        next_c = heap_t[0] if heap_n > 0 else np.inf
        next_a = arrival_s[i] if i < n else np.inf
        if next_c <= next_a:
            if next_c < now:
                error = ERR_TIME_BACKWARDS
            now = next_c
            g, heap_n = _heap_pop(heap_t, heap_g, heap_n)
            bid = gpu_batch[g]
            gpu_batch[g] = -1
            idle[(idle_head + idle_n) % num_gpus] = g
            idle_n += 1
            if batch_rule == BATCH_DYNAMIC:
                j = batch_i[bid, I_BIN]
                size = batch_i[bid, I_SIZE]
                # a request's output length is known once it has been served
                first = batch_i[bid, I_FIRST]
                for m in range(size):
                    r = order[first + m]
                    token_stats_add(tok_n, tok_mean, tok_m2, j, float(prompt_tokens[r]) + float(output_tokens[r]))
                b_mem[j] = memory_limit(tok_n, tok_mean, tok_m2, j, kv_capacity_tokens, theta, b_mem[j])
                tau, b_bar = window_mean(win_service, win_size, win_count, j, batch_f[bid, F_SERVICE], size, window)
                b_sla[j] = sla_update(b_low, b_high, released, j, tau, b_bar, budget_s, eps_s, alpha,
                                      delta, b_min, b_max, retry_batches)
        else:
            if next_a < now:
                error = ERR_TIME_BACKWARDS
            now = next_a
            while i < n and arrival_s[i] <= now:
                if accepted[i]:
                    tail[bin_id[i]] += 1
                    queued += 1
                i += 1

        # dispatch while a GPU is idle and a batch can be formed
        while idle_n > 0 and queued > 0:
            j = _choose_bin(policy, n_bins, head, tail, end, order, arrival_s, batch_rule, fixed_batch, next_rr)
            if j < 0:
                break
            if policy == POLICY_ROUND_ROBIN:
                next_rr = (j + 1) % n_bins
            if batch_rule == BATCH_DYNAMIC:
                limit = min(b_mem[j], b_sla[j])
                limit = min(max(limit, b_min), b_max)
                if spread_idle and idle_n > 1:
                    # several GPUs idle: share the waiting requests out rather than
                    # stacking them on one GPU (shorter batches, nobody waits longer)
                    limit = max(1, min(limit, (tail[j] - head[j] + idle_n - 1) // idle_n))
            else:
                limit = fixed_batch
            # FIFO, stop at the first request that would overflow the KV cache
            start = head[j]
            count = 0
            tokens = 0
            longest = 0
            sum_prompt = 0.0
            sum_prompt_sq = 0.0
            max_output = 0.0
            max_prompt = 0.0
            min_prompt = np.inf
            while count < limit and start + count < tail[j]:
                r = order[start + count]
                s = np.int64(prompt_tokens[r]) + np.int64(output_tokens[r])
                if tokens + s > kv_capacity_tokens:
                    break
                tokens += s
                if s > longest:
                    longest = s
                if step_mode:
                    p = float(prompt_tokens[r])
                    sum_prompt += p
                    sum_prompt_sq += p * p
                    if output_tokens[r] > max_output:
                        max_output = float(output_tokens[r])
                    max_prompt = max(max_prompt, p)
                    min_prompt = min(min_prompt, p)
                count += 1
            if step_mode and table:
                service = static_batch_table_s(tf, ti, count, sum_prompt, sum_prompt_sq, max_output, max_prompt,
                                               min_prompt)
            elif step_mode:
                service = static_batch_time_s(step_coef, count, sum_prompt, sum_prompt_sq, max_output)
            else:
                service = base_s + per_token_s * longest * (1.0 + batch_penalty * (count - 1.0) / count)
            g = idle[idle_head]
            idle_head = (idle_head + 1) % num_gpus
            idle_n -= 1
            batch_f[nb, F_START] = now
            batch_f[nb, F_SERVICE] = service
            batch_f[nb, F_TOKENS] = tokens
            batch_i[nb, I_GPU] = g
            batch_i[nb, I_BIN] = j
            batch_i[nb, I_SIZE] = count
            batch_i[nb, I_MAXLEN] = longest
            batch_i[nb, I_LIMIT] = limit
            batch_i[nb, I_FIRST] = start
            done_s = now + service
            if step_mode:
                if table:
                    first_s = now + static_batch_table_s(tf, ti, count, sum_prompt, sum_prompt_sq, 1.0, max_prompt,
                                                         min_prompt)
                else:
                    first_s = now + static_batch_time_s(step_coef, count, sum_prompt, sum_prompt_sq, 1.0)
                for m in range(count):
                    r = order[start + m]
                    batch_of[r] = nb
                    start_s[r] = now
                    first_token_s[r] = first_s
                    if table:
                        finish_s[r] = now + static_batch_table_s(tf, ti, count, sum_prompt, sum_prompt_sq,
                                                                 float(output_tokens[r]), max_prompt, min_prompt)
                    else:
                        finish_s[r] = now + static_batch_time_s(step_coef, count, sum_prompt, sum_prompt_sq,
                                                                float(output_tokens[r]))
            else:
                for m in range(count):
                    r = order[start + m]
                    batch_of[r] = nb
                    start_s[r] = now
                    finish_s[r] = done_s
            head[j] += count
            queued -= count
            gpu_batch[g] = nb
            heap_n = _heap_push(heap_t, heap_g, heap_n, done_s, g)
            nb += 1
    if queued != 0:
        error = ERR_LEFT_IN_QUEUE
    return batch_of, start_s, finish_s, first_token_s, batch_f[:nb], batch_i[:nb], error
