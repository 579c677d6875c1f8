"""Compiled iteration-level core: replicas running continuous-batching steps (vLLM semantics).

Each replica (one GPU or one tensor-parallel group; ``num_gpus`` of them) runs engine *steps* back to
back while it has work.  ``chunked_prefill=False`` follows vLLM v0.2.3 (the version behind the measured
runs in ``data/groundtruth/``; DistServe's baseline), ``chunked_prefill=True`` the v1 engine (vLLM >= 0.8,
``vllm/v1/core/sched/scheduler.py``).  Sources are cited as ``file::function``; v0.2.3 files are those of
the released wheel (``vllm/core/scheduler.py``, ``vllm/core/block_manager.py``, ``vllm/core/policy.py``,
``vllm/worker/model_runner.py``), v1 files those of vLLM's main branch.  The rules, one by one:

Arrival and routing
  1. A request joins at ``arrival_s + a0 + a1 * prompt_tokens`` (the step-time model's arrival overhead:
     HTTP, tokenisation); joins are processed in time order (ties: trace order).  At its join it is routed
     to a replica: ``round_robin`` cycles over the replicas in join order; ``least_outstanding`` picks the
     replica with the fewest requests routed to it and not finished (waiting + running); ``least_kv`` the
     one with the fewest KV blocks in use (as of its last completed step) plus the blocks the requests
     already waiting on it will need (``ceil((prompt + generated) / block_size)`` each), so a burst is
     spread before any of it is admitted; ``prefix_affinity`` (with prefix caching) the replica whose cache
     holds the longest prefix of the prompt (registered blocks of rule 13, whole nodes while they are
     complete, as of the join: blocks taken by steps started before it are evicted; ties: fewer outstanding
     requests, then lower index) unless that replica has more than
     ``prefix_affinity_margin`` outstanding requests over the least loaded one, or no prefix cached: then
     the least loaded (``least_outstanding``'s choice).  This is the cache-aware routing of SGLang's router
     (match on a mirror of each worker's radix tree, fall back to the shortest queue when the load is
     unbalanced by more than ``balance_abs_threshold``) and of llm-d's prefix-cache scorer with a load
     scorer.  Ties go to the lowest replica index.
  2. Requests that can never be served are rejected before the engine runs, with a reason: the KV blocks
     a request holds at its last step, ``ceil((prompt + output - 1) / block_size)`` (``ceil(prompt /
     block_size)`` for a 1-token output), exceed ``kv_blocks`` (vLLM would run it until it preempts itself
     for good); without chunked prefill, a prompt longer than ``max_num_batched_tokens`` (v0.2.3
     ``Scheduler._schedule``: ``num_prompt_tokens > self.prompt_limit``, ``prompt_limit = min(max_model_len,
     max_num_batched_tokens)``, ignored) or one whose blocks leave fewer than the watermark free in an
     empty cache (``BlockSpaceManager.can_allocate`` returns ``AllocStatus.NEVER``: ``total - required <
     watermark_blocks``, ignored).

Scheduling a step (at every step boundary, after the joins at that instant)
  3. The waiting queue is FCFS (``continuous_multi_bin``: see rule 12); a preempted request goes back to
     its front.  The running list is in admission order, which under FCFS is vLLM v0.2's priority order
     (``policy.py::FCFS.get_priority = now - arrival_time``, re-sorted every step in ``_schedule``: running
     requests always arrived before waiting ones, and preemption takes them from the end) and v1's list
     order.
  4. ``chunked_prefill=False`` (v0.2.3 ``Scheduler._schedule``): if requests wait, prefills are admitted
     from the head of the queue, each one's whole token sequence ``T = prompt + generated`` (a preempted
     request recomputes its generated tokens too: ``model_runner.py::_prepare_prompt`` feeds
     ``seq_data.get_token_ids()``), until one does not fit, in vLLM's order of tests: a preempted request
     with ``T > max_num_batched_tokens`` or ``ceil(T / block_size) > kv_blocks - watermark`` is *dropped*
     (vLLM marks it ``FINISHED_IGNORED`` and returns it truncated; reported with status "dropped after
     preemption"); then the blocks it needs must leave at least the watermark free (``can_allocate``:
     ``free - required >= watermark_blocks``, else ``LATER``: stop); then the step's *padded* tokens
     ``(admitted + 1) * max(T)`` must stay within ``max_num_batched_tokens``; then the running requests
     within the sequence limit (``max_num_seqs``, or the policy's limit); then the padding
     ``(admitted + 1) * max(T) - sum(T)`` within ``max_paddings``.  If any was admitted the step is
     prefill-only.  Otherwise the step is a decode step of every running request.
  5. ``chunked_prefill=True`` (v1 ``Scheduler.schedule``): the running requests are scheduled first, in
     list order: every decode takes one token of the budget, then the request whose prompt is partly
     computed (at most one, always the last in the list: a chunk is only cut when the budget runs out)
     gets its next chunk, ``min(remaining, budget left)`` tokens.  Then, only if no request was preempted
     in this step, waiting requests are admitted FCFS, each taking ``min(T - cached, remaining budget)``
     tokens, while the budget lasts, the running requests stay within the sequence limit and the blocks
     fit (``kv_cache_manager.py::allocate_slots`` returns ``None``: stop); with ``reserve_full_isl`` the
     blocks of the request's whole sequence ``T`` must be free, not only its first chunk's (vLLM 0.19's
     ``scheduler_reserve_full_isl``, on by default there: ``schedule`` passes
     ``allocate_slots(..., full_sequence_must_fit=self.scheduler_reserve_full_isl)``).  Decodes and prefill
     chunks share the step.
  6. The output token comes from the step that completes a prefill (a partial chunk samples nothing):
     the first token of a new request, the *next* token of a preempted one (``T`` covers the tokens it
     had).  A request finishes when it has all its output tokens; the others decode one token per step.

KV cache
  7. Capacity ``kv_blocks`` blocks of ``block_size`` tokens (when ``None``: ``SimConfig.kv_capacity_tokens
     // block_size``; vLLM v1 reserves one more, its null block, so ``kv_blocks = num_gpu_blocks - 1``
     there).  A request's KV holds the tokens computed so far: the prefilled ones while prefilling,
     ``prompt + generated`` once decoding (the slot of the token being fed is allocated when the step is
     scheduled), in ``ceil(tokens / block_size)`` blocks, so it needs a new block every ``block_size``
     decode steps.  Admission keeps a watermark of ``int(kv_watermark * kv_blocks)`` blocks free
     (``SimConfig.kv_watermark``, default vLLM's own: 0.01 for v0.2, ``BlockSpaceManager(watermark=0.01)``;
     none for v1, whose ``allocate_slots`` applies its optional ``watermark`` only to waiting or preempted
     requests and only when another request is already scheduled in the step, as here).
  8. Preemption by recompute when the running requests' blocks do not fit.  v0.2.3 (``_schedule``, decode
     branch): running requests are visited in priority order; before each, if no block is free
     (``can_append_slot``: one free block per sequence, whether or not it needs one now), the *last* one
     (lowest priority, latest arrival: ``self.running.pop(-1)``) is preempted, repeatedly, and when none
     is left after it the request itself (``else: self._preempt(seq_group)``); then it takes its block if
     its next token starts one.  v1 (``schedule``, running loop): a request whose ``allocate_slots`` fails
     preempts ``self.running.pop()`` (the last in the list), repeatedly, itself when it is the last; a
     request that needs no new block never triggers it.  A preempted request's blocks are freed
     (``_preempt_by_recompute`` / ``_preempt_request``: ``num_computed_tokens = 0``), it goes back to the
     FRONT of the waiting queue (``waiting.insert(0, ...)`` / ``prepend_request``; several victims keep
     their order) and KEEPS its generated tokens: when admitted again its prefill covers prompt + generated
     tokens (less any cached prefix, rule 13) and samples its next token (rule 6); its first-token time is
     kept.  Each preemption is counted.

Step time (:class:`workbench.sim.steptime.StepTimeModel`)
  9. prefill part ``b_p * sum(l) + c_p * sum(l * (p + l))`` over the prompt pieces computed in the step
     (``l`` tokens computed now, ``p`` the tokens already in the KV cache before them: earlier chunks and
     prefix-cache hits), decode part ``b_d * sum(ctx) + c_d * n`` over the ``n`` decodes (``ctx`` = prompt +
     tokens generated so far, cached or not; the large-batch coefficients when ``n >= threshold``), plus
     the fixed cost ``a_p`` or ``a_d``, ``max(a_p, a_d)`` for a mixed step.  (v0.2.3 pads a prefill batch to
     its longest prompt; the padding is bounded by ``max_paddings`` and not timed here.)  A tabulated model
     (kernel profiles, roofline: :mod:`workbench.sim.steptable`) prices the step from its tables instead:
     tokens ``sum(l) + n``, sequences ``pieces + n``, attention at ``(sum(l), sum(p), n, mean ctx)`` with
     the skew correction from the longest and shortest ``ctx`` (tracked per replica, only for a table with
     one), plus ``c * sum(l * (p + l))`` and the fixed cost (``_schedule_table``).
  10. The token overhead is added to every reported token time and does not delay steps:
      ``ttft = first-token step end - arrival + o``, ``e2e = last step end - arrival + output * o``,
      ``tpot = (e2e - ttft) / (output - 1)`` (NaN for one output token), ``queue = start of the first
      step that included it - arrival``.

Policies
  11. ``continuous_sla`` (Pang et al., Algorithms 1 and 2): the running batch may hold at most
      ``min(clamp(b_mem), clamp(b_sla))`` requests, ``clamp(b) = min(max(b, N_decode), B_max)``; ``B_max``
      is ``max_num_seqs`` (the engine's batch cap) and ``B_min`` is ``b_min``.  Algorithm 2 runs after
      every step containing decodes: ``tau`` is the mean decode-step time (the time per output token of
      each running request) of the last ``ctrl_window`` such steps and ``b_bar`` their mean number of
      decodes, compared with ``D = sla_budget_fraction * tpot_sla_s`` and hold band ``eps =
      ctrl_eps_fraction * D``.  Algorithm 1 is the static engine's reading: ``b_mem`` is the largest ``b``
      with ``b mu + theta sqrt(b) sigma <= kv_blocks * block_size``, ``mu, sigma`` the mean and std-dev of
      prompt+output tokens of the replica's completed requests, recomputed only while requests both wait
      and run.  Runs of decode steps (see Speed) are used only while nobody waits on the replica, and the
      controller is updated once per step of the run.
  12. ``continuous_multi_bin``: the waiting queue is split into K bins by predicted output length (same
      predictor and equal-mass edges as the static multi-bin).  A replica admits in *rounds*: a round takes
      the bin whose head request joined earliest (ties: trace order) and covers the requests waiting in
      it at that moment (plus preempted ones put back in front of it); admission takes only from the
      round's bin, FCFS, and when the round is used up the next round starts.  So a running batch fills
      with similar-length requests, and no bin waits longer than one round per other bin.  Its running
      list stays in admission order (the victim of rule 8 is the most recently admitted request).

Prefix caching (``prefix_caching=True``; vLLM's automatic prefix caching, v1 ``kv_cache_manager.py`` and
``block_pool.py``; with ``chunked_prefill=False`` the scheduling rules stay v0.2.3's and the cache is v1's:
vLLM never had this pair, and v0.2's admission tests (rule 4) keep counting all of ``T``)
  13. Only full blocks are cached, keyed by the chain of everything up to the block's last token
      (``kv_cache_utils.py::hash_block_tokens``): blocks of the trace's prompt prefixes belong to nodes of
      the prefix tree of :mod:`workbench.sim.prefix_tree` (the mapping from ``prefix_block_tokens`` hash
      blocks onto engine blocks is stated there), every other block (the end of a prompt not covered by
      hashes, its last partial block, generated tokens) is the request's own.  A block is registered in
      the cache when it is allocated for tokens that fill it (``allocate_slots`` ->
      ``cache_blocks(request, num_computed + num_new)``), so a request admitted later in the same step
      already hits it.  Bookkeeping is per node and replica: how many of its leading blocks are
      registered and how many running requests hold it; never per token.
  14. Admission looks up the longest cached prefix, whole node by whole node, then the request's own
      blocks kept from a preemption (``get_computed_blocks`` -> ``find_longest_cache_hit`` over the
      request's block hashes, which include its generated tokens): it stops at the first block not
      registered, and never covers the whole sequence: at most ``(T - 1) // block_size`` blocks (``NOTE:
      When all tokens hit the cache, we must recompute the last token``), so a fully cached prompt whose
      length is a multiple of ``block_size`` recomputes its whole last block (an empty prompt, which vLLM
      refuses and the workbench serves, looks nothing up).  The prefill computes ``T -
      hit`` tokens; ``res.requests["cached_tokens"]`` is the hit of a request's first admission (vLLM's
      ``num_cached_tokens``).
  15. Cached blocks nobody holds are *free*: they count as free blocks for every test above and sit in
      one LRU queue per replica with the never-used ones (``FreeKVCacheBlockQueue``); a new block is taken
      from its front (``get_new_blocks`` -> ``popleft``) and evicted from the cache if it held one; blocks
      a request releases (finished or preempted) go to its back, its last block first
      (``KVCacheManager.free``: "free the blocks in reverse order so that the tail blocks are evicted
      first"), so a prefix is evicted leaf first; never-used blocks are not preferred over cached ones.
      Requests finishing in the same step release in running-list order (vLLM's), decodes finishing
      together in trace order (the same under FCFS without a per-token arrival overhead).  A
      hit on free cached blocks takes them out of the queue (``touch``) and costs free blocks like new
      ones (``get_num_blocks_to_allocate`` counts "evictable computed blocks").  Two simplifications,
      both only when two requests compute the same new prefix blocks at once: vLLM does not de-duplicate
      (``block_pool.py``: "we don't de-duplicate the blocks in the cache"), here a request whose chunk
      reaches blocks another request registered meanwhile shares them; and a node's registered blocks
      stay in use while anyone holds any of the node (per-node rather than per-block reference counts;
      the same count of blocks as vLLM when a fully cached prompt recomputes its last block).

Autoscaling (``SimConfig.autoscaler``; the control loop is :mod:`workbench.sim.autoscale`, the policies
:mod:`workbench.sim.autoscaling`)
  16. The pool has ``max_replicas`` slots, each in one phase: *active* (routed to), *starting* (a cold start:
      provisioned, serving nothing), *draining* (takes no new request, finishes every request routed to it,
      waiting or running, then leaves) or *off*.  The first ``num_gpus`` are active at time 0.  Routing (rule
      1) chooses among the active replicas only, in index order (round robin cycles over them).  At each
      control instant (every ``autoscale_interval_s``, before the events at that instant) the policy's target
      is applied: more replicas take back draining ones first (warm: they serve again at once), then start
      the lowest free slots, active after ``cold_start_s``; fewer cancel starting ones first (the latest to be
      ready first), then drain active ones (the fewest outstanding requests first, ties the highest index); a
      drained replica leaves at the end of its last step (or at once if it had nothing).  This is Kubernetes'
      order (``controller_utils.go::ActivePods``: not-ready pods are deleted before ready ones) and graceful
      shutdown of a vLLM server (it stops taking requests and finishes those it has).  A replica that leaves
      takes its KV cache (and prefix cache) with it; one started in its slot later begins empty, its
      controllers (rule 11) at their start values.  Every replica is billed from its start to its leaving,
      cold start included.  No request is moved between replicas.

Data-parallel lock step (``SimConfig.dp_lockstep``: the ``num_gpus`` replicas are the ranks of one vLLM v1
data-parallel group, as vLLM runs a mixture-of-experts model with expert parallelism across them)
  17. The ranks run every step together.  A step boundary is the group's: when the steps in flight have all
      ended (they end together), every rank completes its step (rule 6) and schedules its next one by rules
      3-9, unchanged, from its own queue and KV cache, and all start at that instant.  A rank with nothing to
      run while another has work runs a dummy step; when no rank has work the group is idle: a request joining
      an idle group starts a step at once, one joining during a step waits for the boundary (vLLM
      ``vllm/v1/engine/core.py::DPEngineCoreProc.run_busy_loop``: ``execute_dummy_batch()`` while
      ``engines_running``, the dummy being ``gpu_worker.py::Worker.execute_dummy_batch`` -> ``_dummy_run(1)``,
      one token; LLMServingSim ``serving/__main__.py``: the ``dp_pending`` barrier, where a step is generated
      once every member has scheduled, and an idle member's 1-token dummy batch).  Every rank's forward is
      padded to the group's largest step, ``N_max`` tokens (prefill tokens + decodes; a dummy counts 1):
      ``vllm/v1/worker/dp_utils.py::coordinate_batch_across_dp`` all-reduces the ranks' token counts and each
      runs ``max(num_tokens_across_dp)``.  The ``N_max - N`` padding tokens are
      dummy decodes that the token-dependent part of the step computes (dense layers, MoE, their collectives)
      and attention does not see (LLMServingSim ``serving/__main__.py::_pad_batch_to_max``: "attention
      continues to see only the real decodes"): a step table adds ``token_s(N_max) - token_s(N)``
      (:func:`workbench.sim.steptable.table_token_s`), a linear model prices them as decodes at its
      per-decode coefficient, ``c_d * (N_max - N)`` (``c_d`` of the regime of the padded decode count).  The
      LM head and sampler run on the real sequences only (vLLM ``gpu_model_runner.py::execute_model`` computes
      logits at ``logits_indices``, one per real request, and ``_dummy_run`` computes none), so the padding
      adds no per-sequence time (LLMServingSim's ``_pad_batch_to_max`` counts the dummies in the LM head's
      sequences too) and a dummy step is one decode of context 1 without the per-sequence part
      (``table_step_s - seq_s(1)``; ``a_d + b_d + c_d`` for a linear model).  The group's step takes the
      longest padded time of its ranks, ``max`` over ranks of (own step time + padding), and so does every
      rank's step in the records (busy time, step log, the SLA controller's decode-step time of rule 11).
      Runs of decode steps (see Speed) are off: every step is an event.  Routing (rule 1) is unchanged (vLLM's
      DP front end picks the least loaded rank, ``waiting * 4 + running``; LLMServingSim's default router the
      least loaded instance).  Not with autoscaling, nor with v0.2 (``chunked_prefill=False``): vLLM v0.2.3
      has no data-parallel engine.

Records: per request the replica, the start of its first step, the end of the step that produced its
first token and of its last step, its preemptions and cached prompt tokens; per replica the busy time
and the block-seconds of KV in use (exact for single steps; within a run of decode steps, the trapezoid
between its first and last step's blocks); and a log of the first ``log_capacity`` scheduling decisions
(one row per step or run of decode steps, with the prefill pieces' ``sum(l * (p + l))`` and the first
step's context sum, which calibration uses; in lock step (rule 17) a dummy step is a row with no prefill piece
and no decode, and a step's row has the group's start and end).

Speed: decode-only steps with nothing joining are run in one event: with ``n`` decodes the context sum
grows by ``n`` per step, so ``k`` steps take ``k E + F k (k - 1) / 2`` seconds (``E`` the first step's
time, ``F = b_d n``; a step table gives ``E``, ``F`` and how many steps its linear piece lasts,
``steptable.table_decode_run``, and the run ends there too), running totals keep the context sum and blocks in use (shared prefix blocks counted
once), a heap keyed by the decode-step count at which each request finishes gives the next finish, and a
histogram of context length modulo ``block_size`` gives the blocks each step needs.  A run ends at the
next finish, before the first step that would preempt (v1: its new blocks exceed the free ones; v0.2:
they use up the free blocks unless the last running request takes the last one, rule 8), or when a
request joins the replica (the run is cut after the step in flight).  With prefix caching, the first
step's blocks are taken from the LRU queue when it is scheduled (before any admission of that step), the
later steps' when the run ends, or earlier when the ``prefix_affinity`` router looks at the cache.  The
per-step work therefore does not grow with the batch.

Code layout: the state lives in a few 2-D arrays with named columns (``RQ_*`` per request, ``RS_*``/``RF_*``
per replica, ``CI_*``/``CF_*`` settings, ``LP_*`` the event loop's own); :func:`run_continuous` allocates it
(:func:`allocate`) and calls :func:`_event_loop` once (an autoscaled run calls it up to each control
instant, then :func:`observe` and :func:`resize`), which allocates nothing and is compiled without reference counting, so the helpers it inlines (routing,
completing a step, scheduling the next one) cost nothing for the arrays they take.  The prefix-cache
helpers (``lru_*``, ``cache_*``) and the heaps are module-level functions other engines can import.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from workbench.sim.controllers import memory_limit, sla_update, token_stats_add, window_mean
from workbench.sim.routers import ROUTERS  # noqa: F401  (the registry by name: simulate() reads the code here)
from workbench.sim.routers import (LEAST_KV as R_LEAST_KV, LEAST_OUTSTANDING as R_LEAST_OUTSTANDING,
                                   PREFIX_AFFINITY as R_PREFIX_AFFINITY, ROUND_ROBIN as R_ROUND_ROBIN)
from workbench.sim.steptable import (TI_DEC_NMAX, TI_SKEW, table_decode_run, table_record_run, table_seq_s,
                                     table_step_s, table_token_s)

POLICY_FCFS, POLICY_SLA, POLICY_MULTI_BIN = 0, 1, 2

ST_NEW, ST_WAITING, ST_PREFILL, ST_DECODE, ST_DONE, ST_DROPPED = 0, 1, 2, 3, 4, 5
KIND_NONE, KIND_DECODE_RUN, KIND_STEP, KIND_DUMMY = 0, 1, 2, 3   # KIND_DUMMY: a lock-step rank's dummy step (rule 17)

# columns of the step log (one row per scheduling decision: one step, or a run of k decode steps)
S_REPLICA, S_K, S_PREFILL_TOKENS, S_PREFILL_REQS, S_DECODES, S_BLOCKS, S_PREEMPTED = range(7)
F_START, F_END, F_PREFILL_QUAD, F_CONTEXT = range(4)   # float log: sum(l * (p + l)); first step's sum(ctx)

ERR_TIME_BACKWARDS = 1
ERR_BLOCKS = 2
ERR_STUCK = 3
ERR_LEFT = 4
ERR_HEAP = 5
ERR_CACHE = 6

C_PA, C_PB, C_PC, C_DA, C_DB, C_DC, C_LA, C_LB, C_LC, C_LT, C_A0, C_A1, C_TOK = range(13)
# float settings: the 13 step-time coefficients, then the SLA controller's
CF_BUDGET, CF_EPS, CF_ALPHA, CF_DELTA, CF_THETA = range(13, 18)
CF_N = 18
# integer settings
(CI_REPLICAS, CI_BINS, CI_BS, CI_SHIFT, CI_CAP, CI_POLICY, CI_ROUTER, CI_CHUNKED, CI_CACHING, CI_JUMPS, CI_MAX_SEQS,
 CI_MAX_TOKENS, CI_MAX_PADDINGS, CI_WATERMARK, CI_B_MIN, CI_B_MAX, CI_WINDOW, CI_MARGIN, CI_NODES, CI_TABLE,
 CI_SKEW, CI_FULL_ISL, CI_LOCKSTEP) = range(23)
CI_N = 23

# (The engine's state lives in a few 2-D arrays with named columns: every array passed to a compiled helper
# costs a reference-count update per call, and numba inlines functions of at most ~30 arguments.)
# per-request inputs, int32: prompt tokens, output tokens, bin
RIN_PROMPT, RIN_OUTPUT, RIN_BIN = range(3)
# per-request int32 state, one row per request
(RQ_REPLICA, RQ_STATE, RQ_NEXT, RQ_PREV, RQ_RNEXT, RQ_DONE, RQ_GEN, RQ_PREEMPT, RQ_CACHED,
 RQ_REACH) = range(10)
RQ_N = 10
# per-request float64, one ROW per time (so each is a contiguous array): start of its first step, end of the step
# giving its first token, end of its last step
T_SCHED, T_FIRST, T_FINISH = range(3)
# per-replica int64 state
(RS_WAITING, RS_WAIT_BLOCKS, RS_OUTSTANDING, RS_RUN_HEAD, RS_RUN_TAIL, RS_PARTIAL, RS_DCOUNT, RS_N_DEC,
 RS_CTX_BASE, RS_USED, RS_FIN_N, RS_STEPS, RS_KIND, RS_RUN_K, RS_WITH_DEC, RS_N_PF, RS_DEC_START,
 RS_BLOCKS_AT_START, RS_LOG_ROW, RS_ACTIVE_BIN, RS_ROUND_LEFT, RS_B_SLA, RS_B_MEM, RS_POPPED, RS_WIN_N,
 RS_RELEASED, RS_S_MAX, RS_S_MIN, RS_S_STALE, RS_PHASE, RS_STEP_TOKENS) = range(31)
RS_N = 31
# per-replica float64 state (continuous_sla's controllers: RF_TOK_N to RF_B_HIGH; autoscaling: the rest)
(RF_T_START, RF_RUN_E, RF_RUN_F, RF_BUSY, RF_BLOCK_S, RF_TOK_N, RF_TOK_MEAN, RF_TOK_M2, RF_B_LOW,
 RF_B_HIGH, RF_PROVISIONED, RF_READY, RF_DRAINED, RF_LEFT, RF_BUSY_MARK) = range(15)
RF_N = 15
# a replica's phase (autoscaling, rule 16): serving and routed to; cold-starting; draining (finishes what it
# has, takes nothing new); not provisioned.  Without autoscaling every replica is active for the whole run.
PH_ACTIVE, PH_STARTING, PH_DRAINING, PH_OFF = 0, 1, 2, 3
# the event loop's own state, kept between calls (the autoscaled run stops it at every control instant)
LP_EV_N, LP_N_LOG, LP_PTR, LP_RR, LP_ERROR = range(5)
LP_N = 5
# what observe() reports at a control instant: replicas by phase, then sums over the active replicas
(OB_ACTIVE, OB_STARTING, OB_DRAINING, OB_OUTSTANDING, OB_WAITING, OB_KV_USED, OB_BUSY_S, OB_ARRIVED,
 OB_DRAINING_OUTSTANDING) = range(9)
OB_N = 9
# waiting queues (one per replica and bin): head, tail, length
Q_HEAD, Q_TAIL, Q_LEN = range(3)
# prefix cache (rules 13-15): per replica and node, int32: registered leading blocks, running requests holding
# it, its record in the free queue; per request, int32: its own blocks kept cached after a preemption, record
C_CNT, C_REF, C_REC = range(3)
O_CNT, O_REC = range(2)
# LRU queue of free blocks (rule 15): records of consecutive blocks with one owner, per replica
L_PREV, L_NEXT, L_OWNER, L_COUNT = range(4)
LM_HEAD, LM_TAIL, LM_FREE = range(3)
OWNER_NONE = -1   # blocks that hold nothing the cache can reuse


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
def _pow2_shift(b):
    """log2(b) when b is a power of two, else -1: the ``shift`` that _ceil_div and _mod take."""
    shift = -1
    if b & (b - 1) == 0:
        shift = 0
        while (1 << shift) < b:
            shift += 1
    return shift


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
def _steps_without_preemption(hist, w, bs, shift, n, d, free, k_max, v02, tail_phase):
    """Largest k <= k_max such that none of the k decode steps from decode count d preempts (rule 8).

    v1: the blocks needed over the k steps fit in ``free``.  v0.2: a step preempts unless a block is
    free before every running request, i.e. its cumulative need stays below ``free``, or reaches it
    exactly with the last running request taking the last block; ``tail_phase`` is that request's
    context at decode count 0 modulo ``block_size`` (its step ``d + j`` needs a block when
    ``(tail_phase + d + j - 1) mod block_size == 0``).  The caller has checked the first step."""
    if not v02:
        return _steps_fitting(hist, w, bs, shift, n, d, free, k_max)
    k = _steps_fitting(hist, w, bs, shift, n, d, free - 1, k_max) if free >= 1 else 0
    if k < k_max and _blocks_over(hist, w, bs, shift, n, d, k + 1) == free \
            and _mod(tail_phase + d + k - 1, bs, shift) == 0:
        k += 1
    return k


@njit(cache=True, inline="always")
def _needs_block(s_r, d, bs, shift):
    """Whether a decode whose context at decode count d is ``s_r + d`` starts a new block at that step."""
    return _mod(s_r + d - 1, bs, shift) == 0


# ---------------------------------------------------------------- waiting queues and the running list
@njit(cache=True, inline="always")
def _span_add(ci, rs, g, s_r):
    """A decode with context base ``s_r`` joins replica ``g``: the longest and shortest bases (step tables with
    the skew correction only; kept while not stale)."""
    if ci[CI_SKEW] and rs[g, RS_S_STALE] == 0:
        if rs[g, RS_N_DEC] == 0:
            rs[g, RS_S_MAX] = s_r
            rs[g, RS_S_MIN] = s_r
        else:
            rs[g, RS_S_MAX] = max(rs[g, RS_S_MAX], s_r)
            rs[g, RS_S_MIN] = min(rs[g, RS_S_MIN], s_r)


@njit(cache=True, inline="always")
def _span_remove(ci, rs, g, s_r):
    """A decode with context base ``s_r`` leaves: the span is stale if it was the longest or the shortest."""
    if ci[CI_SKEW] and (s_r >= rs[g, RS_S_MAX] or s_r <= rs[g, RS_S_MIN]):
        rs[g, RS_S_STALE] = 1


@njit(cache=True, inline="always")
def list_span(rq, ctx0, head, next_col, state_col, state):
    """(longest, shortest) context base ``ctx0`` of the requests of a linked list (first ``head``, each one's
    next in column ``next_col`` of ``rq``), of those whose column ``state_col`` holds ``state`` when
    ``state_col >= 0``: what the skew correction of a step table needs when the longest or shortest has left
    (this engine's running lists, the disaggregated engine's decode lanes)."""
    hi = np.int64(-2**62)   # (bases are often negative: S_r = context - decode count)
    lo = np.int64(2**62)
    r = head
    while r >= 0:
        if state_col < 0 or rq[r, state_col] == state:
            hi = max(hi, ctx0[r])
            lo = min(lo, ctx0[r])
        r = rq[r, next_col]
    return hi, lo


@njit(cache=True, inline="always")
def _span(ci, rq, ctx0, rs, g):
    """(longest, shortest) context base of replica ``g``'s decodes, recomputed from the running list when stale
    (a walk of at most ``max_num_seqs`` requests, needed only when the longest or shortest left)."""
    if rs[g, RS_S_STALE]:
        rs[g, RS_S_MAX], rs[g, RS_S_MIN] = list_span(rq, ctx0, rs[g, RS_RUN_HEAD], RQ_RNEXT, RQ_STATE, ST_DECODE)
        rs[g, RS_S_STALE] = 0
    return rs[g, RS_S_MAX], rs[g, RS_S_MIN]


@njit(cache=True, inline="always")
def _q_push_back(qs, rq, qi, r):
    if qs[qi, Q_TAIL] >= 0:
        rq[qs[qi, Q_TAIL], RQ_NEXT] = r
    else:
        qs[qi, Q_HEAD] = r
    qs[qi, Q_TAIL] = r
    rq[r, RQ_NEXT] = -1
    qs[qi, Q_LEN] += 1


@njit(cache=True, inline="always")
def _q_push_front(qs, rq, qi, r):
    rq[r, RQ_NEXT] = qs[qi, Q_HEAD]
    qs[qi, Q_HEAD] = r
    if qs[qi, Q_TAIL] < 0:
        qs[qi, Q_TAIL] = r
    qs[qi, Q_LEN] += 1


@njit(cache=True, inline="always")
def _q_pop_front(qs, rq, qi):
    r = qs[qi, Q_HEAD]
    qs[qi, Q_HEAD] = rq[r, RQ_NEXT]
    if qs[qi, Q_HEAD] < 0:
        qs[qi, Q_TAIL] = -1
    qs[qi, Q_LEN] -= 1
    rq[r, RQ_NEXT] = -1
    return r


@njit(cache=True, inline="always")
def _run_append(rs, rq, g, r):
    rq[r, RQ_PREV] = rs[g, RS_RUN_TAIL]
    rq[r, RQ_RNEXT] = -1
    if rs[g, RS_RUN_TAIL] >= 0:
        rq[rs[g, RS_RUN_TAIL], RQ_RNEXT] = r
    else:
        rs[g, RS_RUN_HEAD] = r
    rs[g, RS_RUN_TAIL] = r


@njit(cache=True, inline="always")
def _run_remove(rs, rq, g, r):
    p_, n_ = rq[r, RQ_PREV], rq[r, RQ_RNEXT]
    if p_ >= 0:
        rq[p_, RQ_RNEXT] = n_
    else:
        rs[g, RS_RUN_HEAD] = n_
    if n_ >= 0:
        rq[n_, RQ_PREV] = p_
    else:
        rs[g, RS_RUN_TAIL] = p_
    rq[r, RQ_PREV] = -1
    rq[r, RQ_RNEXT] = -1


@njit(cache=True, _nrt=False)
def _pick_queue(policy, g, K, qs, rs, join_s):
    """Index of the waiting queue admission takes from (the replica must have waiting requests)."""
    if policy != POLICY_MULTI_BIN:
        return g * K
    a = g * K + rs[g, RS_ACTIVE_BIN]
    if rs[g, RS_ROUND_LEFT] > 0 and qs[a, Q_LEN] > 0:
        return a
    best = g * K
    best_t = np.inf
    best_r = -1
    for j in range(K):
        qi = g * K + j
        if qs[qi, Q_LEN] > 0:
            h = qs[qi, Q_HEAD]
            if join_s[h] < best_t or (join_s[h] == best_t and h < best_r):   # ties: trace order
                best_t = join_s[h]
                best_r = h
                best = qi
    rs[g, RS_ACTIVE_BIN] = best - g * K
    rs[g, RS_ROUND_LEFT] = qs[best, Q_LEN]
    return best


# ---------------------------------------------------------------- the LRU queue of free blocks (rule 15)
# ``lru[g, i]`` is record ``i`` of replica ``g``: a run of ``L_COUNT`` consecutive free blocks with one owner
# (``OWNER_NONE``, a prefix-tree node ``< n_nodes``, or ``n_nodes + r``: request ``r``'s own cached blocks),
# in a doubly linked list from the front (taken first) to the back; unused records form a free list.
# ``cn[g, node, C_REC]`` / ``own[r, O_REC]`` is one more than an owner's record (0: not in the queue, so
# the tables start as zeros, which the operating system gives without touching memory).
@njit(cache=True)
def lru_init(num_replicas, records, kv_blocks):
    """Every replica's queue holds ``kv_blocks`` never-used blocks in one record."""
    lru = np.empty((num_replicas, records, 4), np.int32)
    lm = np.empty((num_replicas, 3), np.int64)
    for g in range(num_replicas):
        for i in range(records):
            lru[g, i, L_PREV] = -1
            lru[g, i, L_NEXT] = i + 1 if i + 1 < records else -1
            lru[g, i, L_OWNER] = OWNER_NONE
            lru[g, i, L_COUNT] = 0
        lm[g, LM_FREE] = 1 if records > 1 else -1
        lru[g, 0, L_NEXT] = -1
        lru[g, 0, L_COUNT] = kv_blocks
        lm[g, LM_HEAD] = 0
        lm[g, LM_TAIL] = 0
    return lru, lm


@njit(cache=True, _nrt=False)
def _lru_remove(lru, lm, g, i):
    """Remove record ``i`` from replica ``g``'s list and recycle it; returns its neighbours."""
    p_, n_ = lru[g, i, L_PREV], lru[g, i, L_NEXT]
    if p_ >= 0:
        lru[g, p_, L_NEXT] = n_
    else:
        lm[g, LM_HEAD] = n_
    if n_ >= 0:
        lru[g, n_, L_PREV] = p_
    else:
        lm[g, LM_TAIL] = p_
    lru[g, i, L_NEXT] = lm[g, LM_FREE]
    lru[g, i, L_PREV] = -1
    lru[g, i, L_OWNER] = OWNER_NONE
    lru[g, i, L_COUNT] = 0
    lm[g, LM_FREE] = i
    return p_, n_


@njit(cache=True, _nrt=False)
def lru_unlink(lru, lm, cn, own, n_nodes, g, i):
    """Take record ``i`` out of replica ``g``'s queue (its blocks are no longer free) and recycle it.  Two runs
    of unused blocks it leaves side by side become one, so such runs never outnumber the other records."""
    owner = lru[g, i, L_OWNER]
    if owner >= n_nodes:
        own[owner - n_nodes, O_REC] = 0
    elif owner >= 0:
        cn[g, owner, C_REC] = 0
    p_, n_ = _lru_remove(lru, lm, g, i)
    if p_ >= 0 and n_ >= 0 and lru[g, p_, L_OWNER] == OWNER_NONE and lru[g, n_, L_OWNER] == OWNER_NONE:
        lru[g, p_, L_COUNT] += lru[g, n_, L_COUNT]
        _lru_remove(lru, lm, g, n_)


@njit(cache=True, _nrt=False)
def lru_append(lru, lm, cn, own, n_nodes, g, owner, count):
    """Put ``count`` blocks of ``owner`` at the back of replica ``g``'s queue; False if out of records."""
    if count <= 0:
        return True
    tail = lm[g, LM_TAIL]
    if owner == OWNER_NONE and tail >= 0 and lru[g, tail, L_OWNER] == OWNER_NONE:
        lru[g, tail, L_COUNT] += count
        return True
    i = lm[g, LM_FREE]
    if i < 0:
        return False
    lm[g, LM_FREE] = lru[g, i, L_NEXT]
    lru[g, i, L_PREV] = tail
    lru[g, i, L_NEXT] = -1
    lru[g, i, L_OWNER] = owner
    lru[g, i, L_COUNT] = count
    if tail >= 0:
        lru[g, tail, L_NEXT] = i
    else:
        lm[g, LM_HEAD] = i
    lm[g, LM_TAIL] = i
    if owner >= n_nodes:
        own[owner - n_nodes, O_REC] = i + 1
    elif owner >= 0:
        cn[g, owner, C_REC] = i + 1
    return True


@njit(cache=True, _nrt=False)
def lru_take(lru, lm, cn, own, n_nodes, g, m):
    """Allocate ``m`` blocks from the front of replica ``g``'s queue, evicting what they cached (an owner
    loses its trailing blocks first).  Returns the blocks it could not find (0 unless the state is broken)."""
    while m > 0:
        i = lm[g, LM_HEAD]
        if i < 0:
            return m
        count = lru[g, i, L_COUNT]
        take = count if count < m else m
        owner = lru[g, i, L_OWNER]
        if owner >= n_nodes:
            own[owner - n_nodes, O_CNT] -= take
        elif owner >= 0:
            cn[g, owner, C_CNT] -= take
        m -= take
        if take == count:
            lru_unlink(lru, lm, cn, own, n_nodes, g, i)
        else:
            lru[g, i, L_COUNT] = count - take
    return 0


# ---------------------------------------------------------------- prefix cache (rules 13-15)
@njit(cache=True, _nrt=False)
def cache_hit_blocks(path_off, path_node, node_blocks, cn, own, g, r):
    """Leading blocks of request ``r``'s sequence registered in replica ``g``'s cache (rule 14): whole nodes of
    its path while they are complete, then the registered part of the first incomplete one; after a complete
    path, its own blocks kept from a preemption."""
    h = 0
    for j in range(path_off[r], path_off[r + 1]):
        n = path_node[j]
        c = cn[g, n, C_CNT]
        h += c
        if c < node_blocks[n]:
            return h
    if own[r, O_REC] > 0:
        h += own[r, O_CNT]
    return h


@njit(cache=True, _nrt=False)
def cached_prefix_blocks(path_off, path_node, node_blocks, cn, g, r):
    """Blocks of request ``r``'s prompt prefix in replica ``g``'s cache, whole nodes only (the router's view)."""
    h = 0
    for j in range(path_off[r], path_off[r + 1]):
        n = path_node[j]
        c = cn[g, n, C_CNT]
        if c < node_blocks[n]:
            return h + c
        h += c
    return h


@njit(cache=True, _nrt=False)
def cache_hold(path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm, n_nodes, g, r, reach,
               b_from, b_to, commit):
    """Request ``r`` (holding the first ``reach`` nodes of its path and blocks ``[0, b_from)``) extends its KV
    to blocks ``[0, b_to)``.  Returns (free blocks it takes, its new reach): nodes it starts holding that
    nobody held leave the free queue with all their registered blocks (a hit on evictable blocks), blocks
    past a node's registered ones and its own blocks are new (taken from the queue's front).  With
    ``commit`` the state is updated (all hits before the new blocks are taken, as ``allocate_slots``);
    a cost of -1 means the state is broken."""
    cost = 0
    new = 0
    start = path_off[r]
    npath = path_off[r + 1] - start
    j = reach - 1 if reach > 0 else 0
    while j < npath:
        n = path_node[start + j]
        first = node_first[n]
        if first >= b_to:
            break
        c = cn[g, n, C_CNT]
        if j >= reach:
            if cn[g, n, C_REF] == 0:
                cost += c
                if commit and cn[g, n, C_REC] > 0:
                    lru_unlink(lru, lm, cn, own, n_nodes, g, cn[g, n, C_REC] - 1)
            if commit:
                cn[g, n, C_REF] += 1
        lo = max(b_from, first + c)
        hi = min(first + node_blocks[n], b_to)
        if hi > lo:
            new += hi - lo
            if commit:
                cn[g, n, C_CNT] = hi - first
        j += 1
    pb = path_blocks[r]
    if b_to > pb:
        lo = max(b_from, pb)
        if own[r, O_REC] > 0:
            cost += own[r, O_CNT]
            lo = max(lo, pb + own[r, O_CNT])
            if commit:
                lru_unlink(lru, lm, cn, own, n_nodes, g, own[r, O_REC] - 1)
                own[r, O_CNT] = 0
        if b_to > lo:
            new += b_to - lo
    if commit and new > 0:
        if lru_take(lru, lm, cn, own, n_nodes, g, new) != 0:
            return -1, j
    return cost + new, max(reach, j)


@njit(cache=True, _nrt=False)
def cache_release(path_off, path_node, path_blocks, cn, own, lru, lm, n_nodes, g, r, reach, kv_tokens, bs, shift,
                  keep_own):
    """Request ``r`` frees its KV (``kv_tokens`` tokens).  Its blocks go to the back of the free queue last
    block first: its own (kept cached after a preemption, ``keep_own``; else reusable by nobody), then the
    nodes nobody holds any more, deepest first.  Returns the blocks that became free (-1: broken state)."""
    pb = path_blocks[r]
    mine = _ceil_div(kv_tokens, bs, shift) - pb
    if mine < 0:
        mine = 0
    ok = True
    if keep_own:
        if own[r, O_REC] > 0:
            return -1          # its blocks from an earlier preemption must have been hit or evicted by now
        full = (kv_tokens >> shift if shift >= 0 else kv_tokens // bs) - pb
        if full < 0:
            full = 0
        ok &= lru_append(lru, lm, cn, own, n_nodes, g, OWNER_NONE, mine - full)
        own[r, O_CNT] = full
        ok &= lru_append(lru, lm, cn, own, n_nodes, g, n_nodes + r, full)
    else:
        ok &= lru_append(lru, lm, cn, own, n_nodes, g, OWNER_NONE, mine)
    freed = mine
    start = path_off[r]
    for j in range(reach - 1, -1, -1):
        n = path_node[start + j]
        cn[g, n, C_REF] -= 1
        if cn[g, n, C_REF] == 0:
            ok &= lru_append(lru, lm, cn, own, n_nodes, g, n, cn[g, n, C_CNT])
            freed += cn[g, n, C_CNT]
    return freed if ok else -1


# ---------------------------------------------------------------- requests entering and leaving a replica
@njit(cache=True, inline="always")
def _route(ci, rr, r, now, rs, rf, hist, path_off, path_node, node_blocks, cn, own, lru, lm, act):
    """The replica a joining request goes to (rule 1) among the active ones (``act[:act[R]]``, by index; all of
    them without autoscaling), and the next round-robin position (-1: broken state)."""
    router = ci[CI_ROUTER]
    n_act = act[ci[CI_REPLICAS]]
    if router == R_ROUND_ROBIN:
        return act[rr], (rr + 1 if rr + 1 < n_act else 0)
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    if router == R_PREFIX_AFFINITY:
        best = act[0]
        best_blocks = -1
        least = act[0]
        for j in range(n_act):
            h = act[j]
            if rs[h, RS_KIND] == KIND_DECODE_RUN and rs[h, RS_RUN_K] > rs[h, RS_POPPED]:
                # the cache as of now: the blocks of the steps of the run started so far are taken (rule 15)
                i = _steps_to_reach(rf[h, RF_RUN_E], rf[h, RF_RUN_F], rs[h, RS_RUN_K], now - rf[h, RF_T_START])
                popped = rs[h, RS_POPPED]
                if i > popped:
                    if lru_take(lru, lm, cn, own, ci[CI_NODES], h,
                                _blocks_over(hist, h, bs, shift, rs[h, RS_N_DEC], rs[h, RS_DCOUNT] + popped,
                                             i - popped)) != 0:
                        return -1, rr
                    rs[h, RS_POPPED] = i
            if rs[h, RS_OUTSTANDING] < rs[least, RS_OUTSTANDING]:
                least = h
            blocks = cached_prefix_blocks(path_off, path_node, node_blocks, cn, h, r)
            if blocks > best_blocks or (blocks == best_blocks
                                        and rs[h, RS_OUTSTANDING] < rs[best, RS_OUTSTANDING]):
                best = h
                best_blocks = blocks
        if best_blocks <= 0 or rs[best, RS_OUTSTANDING] > rs[least, RS_OUTSTANDING] + ci[CI_MARGIN]:
            return least, rr
        return best, rr
    g = act[0]
    best_load = np.inf
    for j in range(n_act):
        h = act[j]
        if router == R_LEAST_OUTSTANDING:
            load = float(rs[h, RS_OUTSTANDING])
        else:
            load = float(rs[h, RS_USED] + rs[h, RS_WAIT_BLOCKS])
            if rs[h, RS_KIND] == KIND_DECODE_RUN and rs[h, RS_RUN_K] > 1:
                # blocks the steps of the run completed before now have taken
                i = _steps_to_reach(rf[h, RF_RUN_E], rf[h, RF_RUN_F], rs[h, RS_RUN_K], now - rf[h, RF_T_START])
                if i > 1:
                    load += float(_blocks_over(hist, h, bs, shift, rs[h, RS_DEC_START], rs[h, RS_DCOUNT], i - 1))
        if load < best_load:
            best_load = load
            g = h
    return g, rr


@njit(cache=True, inline="always")
def _release(g, r, kv_tokens, keep_own, ci, rq, path_off, path_node, path_blocks, cn, own, lru, lm):
    """Free request ``r``'s KV (``kv_tokens`` tokens) on replica ``g``; returns the blocks freed (-1: broken)."""
    if not ci[CI_CACHING]:
        return _ceil_div(kv_tokens, ci[CI_BS], ci[CI_SHIFT])
    freed = cache_release(path_off, path_node, path_blocks, cn, own, lru, lm, ci[CI_NODES], g, r, rq[r, RQ_REACH],
                          kv_tokens, ci[CI_BS], ci[CI_SHIFT], keep_own)
    rq[r, RQ_REACH] = 0
    return freed


@njit(cache=True, _nrt=False)
def _preempt(v, g, d, ci, rin, rq, ctx0, hpos, rs, qs, hist, fin_key, fin_id, path_off, path_node, path_blocks, cn,
             own, lru, lm):
    """Preemption by recompute (rule 8): ``v`` leaves the running list, frees its blocks and goes back to the
    FRONT of its waiting queue with its generated tokens.  Returns the blocks freed (-1: broken state)."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    if rq[v, RQ_STATE] == ST_DECODE:
        s_v = ctx0[v]
        kv = s_v + d - 1
        rq[v, RQ_GEN] = s_v + d - rin[v, RIN_PROMPT]
        hist[g, _mod(s_v, bs, shift)] -= 1
        rs[g, RS_CTX_BASE] -= s_v
        rs[g, RS_N_DEC] -= 1
        _span_remove(ci, rs, g, s_v)
        rs[g, RS_FIN_N] = _heap_remove(fin_key, fin_id, hpos, g, rs[g, RS_FIN_N], hpos[v])
    else:
        kv = np.int64(rq[v, RQ_DONE])
        if rs[g, RS_PARTIAL] == v:
            rs[g, RS_PARTIAL] = -1
    freed = _release(g, v, kv, True, ci, rq, path_off, path_node, path_blocks, cn, own, lru, lm)
    rs[g, RS_USED] -= freed
    rq[v, RQ_PREEMPT] += 1
    rq[v, RQ_DONE] = 0
    _run_remove(rs, rq, g, v)
    rq[v, RQ_STATE] = ST_WAITING
    _q_push_front(qs, rq, g * ci[CI_BINS] + rin[v, RIN_BIN], v)
    rs[g, RS_WAITING] += 1
    rs[g, RS_WAIT_BLOCKS] += _ceil_div(np.int64(rin[v, RIN_PROMPT]) + rq[v, RQ_GEN], bs, shift)
    if ci[CI_POLICY] == POLICY_MULTI_BIN and rin[v, RIN_BIN] == rs[g, RS_ACTIVE_BIN]:
        rs[g, RS_ROUND_LEFT] += 1
    return freed


@njit(cache=True, _nrt=False)
def _decode_walk(g, d, ci, rin, rq, ctx0, hpos, rs, qs, hist, fin_key, fin_id, path_off, path_node, path_blocks, cn,
                 own, lru, lm):
    """Rule 8, request by request: the running decodes in list order take their blocks; when a block is
    missing (v0.2: before any request, once none is free; v1: for a request that needs one) the last running
    request is preempted, repeatedly, the request itself when it is the last.  Returns (preemptions, error)."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    v02 = not ci[CI_CHUNKED]
    caching = ci[CI_CACHING]
    free = ci[CI_CAP] - rs[g, RS_USED]
    pending = 0
    preempted = 0
    r = rs[g, RS_RUN_HEAD]
    while r >= 0 and rq[r, RQ_STATE] == ST_DECODE:
        needs = _needs_block(ctx0[r], d, bs, shift)
        want = 1 if (v02 or needs) else 0
        itself = False
        while free < want:
            v = rs[g, RS_RUN_TAIL]
            if caching and pending > 0:
                if lru_take(lru, lm, cn, own, ci[CI_NODES], g, pending) != 0:
                    return preempted, ERR_CACHE
                pending = 0
            freed = _preempt(v, g, d, ci, rin, rq, ctx0, hpos, rs, qs, hist, fin_key, fin_id, path_off, path_node,
                             path_blocks, cn, own, lru, lm)
            if freed < 0:
                return preempted, ERR_CACHE
            free += freed
            preempted += 1
            if v == r:
                itself = True
                break
        if itself:
            break
        if needs:
            free -= 1
            pending += 1
        r = rq[r, RQ_RNEXT]
    if caching and pending > 0:
        if lru_take(lru, lm, cn, own, ci[CI_NODES], g, pending) != 0:
            return preempted, ERR_CACHE
    return preempted, 0


@njit(cache=True, inline="always")
def _admit(r, g, qi, now, tokens, upto, hit_tokens, cost, ci, rq, tq, rs, qs, path_off, path_node, node_first,
           node_blocks, path_blocks, cn, own, lru, lm):
    """Admit request ``r`` (the head of queue ``qi``) with its KV computed up to ``upto`` tokens after this step
    (``tokens`` = prompt + generated to prefill, ``hit_tokens`` served by the cache).  False if broken."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    _q_pop_front(qs, rq, qi)
    rs[g, RS_WAITING] -= 1
    rs[g, RS_WAIT_BLOCKS] -= _ceil_div(tokens, bs, shift)
    rs[g, RS_ROUND_LEFT] -= 1
    ok = True
    if ci[CI_CACHING]:
        taken, reach = cache_hold(path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm,
                                  ci[CI_NODES], g, r, 0, 0, _ceil_div(upto, bs, shift), True)
        ok = taken == cost
        rq[r, RQ_REACH] = reach
    rs[g, RS_USED] += cost
    rq[r, RQ_DONE] = upto
    if np.isnan(tq[T_SCHED, r]):
        tq[T_SCHED, r] = now
        rq[r, RQ_CACHED] = hit_tokens
    rq[r, RQ_STATE] = ST_PREFILL
    _run_append(rs, rq, g, r)
    return ok


@njit(cache=True, inline="always")
def _drop(r, g, qi, tokens, ci, rq, rs, qs):
    """v0.2 ignores a preempted request that can no longer be admitted (rule 4): it leaves, reported."""
    _q_pop_front(qs, rq, qi)
    rs[g, RS_WAITING] -= 1
    rs[g, RS_WAIT_BLOCKS] -= _ceil_div(tokens, ci[CI_BS], ci[CI_SHIFT])
    rs[g, RS_ROUND_LEFT] -= 1
    rs[g, RS_OUTSTANDING] -= 1
    rq[r, RQ_STATE] = ST_DROPPED


@njit(cache=True, inline="always")
def _admission(g, r, tokens, budget, ci, path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru,
               lm):
    """Admitting ``r`` (``tokens`` to prefill, at most ``budget`` of them computed now): (tokens served by the
    cache (rule 14), KV tokens after the step, free blocks it takes (hits on free cached blocks included))."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    if not ci[CI_CACHING]:
        upto = min(tokens, budget)
        return 0, upto, _ceil_div(upto, bs, shift)
    h = cache_hit_blocks(path_off, path_node, node_blocks, cn, own, g, r)
    most = (tokens - 1) >> shift if shift >= 0 else (tokens - 1) // bs
    if most < 0:
        most = 0   # an empty prompt (0 tokens): nothing to look up
    hit = (h if h < most else most) * bs
    upto = hit + min(tokens - hit, budget)
    cost, _ = cache_hold(path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm, ci[CI_NODES], g,
                         r, 0, 0, _ceil_div(upto, bs, shift), False)
    return hit, upto, cost


# ---------------------------------------------------------------- a step (or a run of decode steps) ends
@njit(cache=True, inline="always")
def _complete(g, now, ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, hist, fin_key, fin_id, log_i, win_t, win_b, path_off,
              path_node, path_blocks, cn, own, lru, lm):
    """Apply what the step (or run of ``k`` decode steps) that ends now did on replica ``g``: time, KV blocks,
    finished decodes (rule 6), completed prefills, the SLA controller (rule 11).  Returns an error code."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    caching = ci[CI_CACHING]
    error = 0
    k = rs[g, RS_RUN_K]
    rf[g, RF_BUSY] += now - rf[g, RF_T_START]
    rs[g, RS_STEPS] += k
    d0 = rs[g, RS_DCOUNT]
    if rs[g, RS_WITH_DEC]:
        grown = _blocks_over(hist, g, bs, shift, rs[g, RS_N_DEC], d0, k)
        first_blocks = rs[g, RS_BLOCKS_AT_START] + hist[g, _mod(1 - d0, bs, shift)]
        rs[g, RS_USED] += grown
        rf[g, RF_BLOCK_S] += 0.5 * (first_blocks + rs[g, RS_BLOCKS_AT_START] + grown) * (now - rf[g, RF_T_START])
        rs[g, RS_DCOUNT] = d0 + k
        popped = rs[g, RS_POPPED]
        if caching and k > popped:
            # the blocks of the run's steps not yet taken from the free queue (rule 15)
            if lru_take(lru, lm, cn, own, ci[CI_NODES], g,
                        _blocks_over(hist, g, bs, shift, rs[g, RS_N_DEC], d0 + popped, k - popped)) != 0:
                error = ERR_CACHE
    else:
        rf[g, RF_BLOCK_S] += rs[g, RS_BLOCKS_AT_START] * (now - rf[g, RF_T_START])
    if rs[g, RS_USED] > ci[CI_CAP]:
        error = ERR_BLOCKS
    if rs[g, RS_LOG_ROW] >= 0:
        log_i[rs[g, RS_LOG_ROW], S_BLOCKS] = rs[g, RS_USED]
    d = rs[g, RS_DCOUNT]
    # decodes that produced their last token
    while rs[g, RS_FIN_N] > 0 and fin_key[g, 0] <= d:
        r = fin_id[g, 0]
        if fin_key[g, 0] != d:
            error = ERR_HEAP
        rs[g, RS_FIN_N] = _heap_remove(fin_key, fin_id, hpos, g, rs[g, RS_FIN_N], 0)
        s_r = ctx0[r]
        freed = _release(g, r, s_r + d - 1, False, ci, rq, path_off, path_node, path_blocks, cn, own, lru, lm)
        if freed < 0:
            error = ERR_CACHE
        rs[g, RS_USED] -= freed
        hist[g, _mod(s_r, bs, shift)] -= 1
        rs[g, RS_CTX_BASE] -= s_r
        rs[g, RS_N_DEC] -= 1
        _span_remove(ci, rs, g, s_r)
        tq[T_FINISH, r] = now
        rq[r, RQ_STATE] = ST_DONE
        rs[g, RS_OUTSTANDING] -= 1
        _run_remove(rs, rq, g, r)
        token_stats_add(rf[:, RF_TOK_N], rf[:, RF_TOK_MEAN], rf[:, RF_TOK_M2], g,
                        float(rin[r, RIN_PROMPT]) + float(rin[r, RIN_OUTPUT]))   # Welford, of completed requests
    # prefill pieces of this step: the last n_pf requests of the running list, in list order (the order in
    # which vLLM frees requests that finish together)
    r = rs[g, RS_RUN_TAIL]
    for _ in range(rs[g, RS_N_PF] - 1):
        r = rq[r, RQ_PREV]
    for _ in range(rs[g, RS_N_PF]):
        following = rq[r, RQ_RNEXT]
        tokens = np.int64(rin[r, RIN_PROMPT]) + rq[r, RQ_GEN]
        if rq[r, RQ_DONE] == tokens:
            if np.isnan(tq[T_FIRST, r]):
                tq[T_FIRST, r] = now
            if rs[g, RS_PARTIAL] == r:
                rs[g, RS_PARTIAL] = -1
            rq[r, RQ_GEN] += 1   # the step that completes a prefill samples the next token (rule 6)
            if rq[r, RQ_GEN] >= rin[r, RIN_OUTPUT]:
                freed = _release(g, r, tokens, False, ci, rq, path_off, path_node, path_blocks, cn, own, lru, lm)
                if freed < 0:
                    error = ERR_CACHE
                rs[g, RS_USED] -= freed
                tq[T_FINISH, r] = now
                rq[r, RQ_STATE] = ST_DONE
                rs[g, RS_OUTSTANDING] -= 1
                _run_remove(rs, rq, g, r)
                token_stats_add(rf[:, RF_TOK_N], rf[:, RF_TOK_MEAN], rf[:, RF_TOK_M2], g,
                                float(rin[r, RIN_PROMPT]) + float(rin[r, RIN_OUTPUT]))
            else:
                s_r = tokens + 1 - d
                ctx0[r] = s_r
                hist[g, _mod(s_r, bs, shift)] += 1
                rs[g, RS_CTX_BASE] += s_r
                _span_add(ci, rs, g, s_r)
                rs[g, RS_N_DEC] += 1
                rq[r, RQ_STATE] = ST_DECODE
                rs[g, RS_FIN_N] = _heap_push(fin_key, fin_id, hpos, g, rs[g, RS_FIN_N],
                                             float(d + rin[r, RIN_OUTPUT] - rq[r, RQ_GEN]), r)
        r = following
    if ci[CI_POLICY] == POLICY_SLA and rs[g, RS_WITH_DEC]:
        for j in range(k):   # Algorithm 2 after every step of the run (runs only when nobody waits)
            tau, b_bar = window_mean(win_t, win_b, rs[:, RS_WIN_N], g, rf[g, RF_RUN_E] + rf[g, RF_RUN_F] * j,
                                     float(rs[g, RS_DEC_START]), ci[CI_WINDOW])
            rs[g, RS_B_SLA] = sla_update(rf[:, RF_B_LOW], rf[:, RF_B_HIGH], rs[:, RS_RELEASED], g, tau, b_bar,
                                         cf[CF_BUDGET], cf[CF_EPS], cf[CF_ALPHA], cf[CF_DELTA], ci[CI_B_MIN],
                                         ci[CI_B_MAX], 0, False)   # Algorithm 2 as written
    return error


# ---------------------------------------------------------------- deciding a replica's next step
@njit(cache=True, inline="always")
def _schedule(g, now, ci, cf, rin, join_s, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, path_off, path_node,
              node_first, node_blocks, path_blocks, cn, own, lru, lm, tf, ti):
    """Decide replica ``g``'s next step (rules 3-9).  Returns (kind, k, e, f, prefill tokens, prefill pieces,
    decodes, preemptions, sum(l * (p + l)), first step's context sum, error); kind ``KIND_NONE``: idle."""
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    cap = ci[CI_CAP]
    chunked = ci[CI_CHUNKED]
    caching = ci[CI_CACHING]
    policy = ci[CI_POLICY]
    max_tokens = ci[CI_MAX_TOKENS]
    watermark = ci[CI_WATERMARK]
    K = ci[CI_BINS]
    error = 0
    d = rs[g, RS_DCOUNT]
    running = rs[g, RS_N_DEC] + (1 if rs[g, RS_PARTIAL] >= 0 else 0)
    limit = ci[CI_MAX_SEQS]
    if policy == POLICY_SLA:
        if rs[g, RS_WAITING] > 0 and running > 0 and rf[g, RF_TOK_N] >= 2:
            rs[g, RS_B_MEM] = memory_limit(rf[:, RF_TOK_N], rf[:, RF_TOK_MEAN], rf[:, RF_TOK_M2], g, cap * bs,
                                           cf[CF_THETA], rs[g, RS_B_MEM])
        b_max = ci[CI_B_MAX]
        lim_mem = min(max(rs[g, RS_B_MEM], rs[g, RS_N_DEC]), b_max)
        lim_sla = min(max(rs[g, RS_B_SLA], rs[g, RS_N_DEC]), b_max)
        limit = min(limit, min(lim_mem, lim_sla))
    preempted = 0
    pf_tokens = 0
    pf_reqs = 0
    pf_lin = 0.0
    pf_quad = 0.0
    pf_hist = 0   # sum of the prefill pieces' cached context (a step table's kp axis)
    take_decode = True
    if not chunked and rs[g, RS_WAITING] > 0:
        # v0.2 (rule 4): a prefill-only step if any prompt can be admitted
        free = cap - rs[g, RS_USED]
        sum_t = 0
        max_t = 0
        while rs[g, RS_WAITING] > 0:
            qi = _pick_queue(policy, g, K, qs, rs, join_s)
            r = qs[qi, Q_HEAD]
            tokens = np.int64(rin[r, RIN_PROMPT]) + rq[r, RQ_GEN]
            if rq[r, RQ_GEN] > 0 and (tokens > max_tokens or _ceil_div(tokens, bs, shift) > cap - watermark):
                _drop(r, g, qi, tokens, ci, rq, rs, qs)
                continue
            hit, upto, cost = _admission(g, r, tokens, tokens, ci, path_off, path_node, node_first, node_blocks,
                                         path_blocks, cn, own, lru, lm)
            if free - cost < watermark:
                break
            new_max = max(max_t, tokens)
            if (pf_reqs + 1) * new_max > max_tokens or running + pf_reqs + 1 > limit \
                    or (pf_reqs + 1) * new_max - (sum_t + tokens) > ci[CI_MAX_PADDINGS]:
                break
            if not _admit(r, g, qi, now, tokens, tokens, hit, cost, ci, rq, tq, rs, qs, path_off, path_node,
                          node_first, node_blocks, path_blocks, cn, own, lru, lm):
                error = ERR_CACHE
            free -= cost
            computed = tokens - hit
            pf_tokens += computed
            pf_lin += computed
            pf_quad += float(computed) * float(tokens)
            pf_hist += hit
            pf_reqs += 1
            sum_t += tokens
            max_t = new_max
        take_decode = pf_reqs == 0
    need = 0
    if take_decode and rs[g, RS_N_DEC] > 0:
        # blocks for this step's decodes (rule 8); the request-by-request walk only when one must be preempted
        need = hist[g, _mod(1 - d, bs, shift)]
        free = cap - rs[g, RS_USED]
        if chunked:
            fits = free >= need
        else:
            fits = free > need or (free == need and need >= 1
                                   and _needs_block(ctx0[rs[g, RS_RUN_TAIL]], d, bs, shift))
        if fits:
            if caching and need > 0:
                if lru_take(lru, lm, cn, own, ci[CI_NODES], g, need) != 0:
                    error = ERR_CACHE
        else:
            preempted, err = _decode_walk(g, d, ci, rin, rq, ctx0, hpos, rs, qs, hist, fin_key, fin_id, path_off,
                                          path_node, path_blocks, cn, own, lru, lm)
            if err:
                error = err
            need = hist[g, _mod(1 - d, bs, shift)] if rs[g, RS_N_DEC] > 0 else 0
        running = rs[g, RS_N_DEC] + (1 if rs[g, RS_PARTIAL] >= 0 else 0)
    if chunked:
        # v1 (rule 5): the partly computed prompt's next chunk, then (no preemption) new admissions
        budget = max_tokens - rs[g, RS_N_DEC]
        free = cap - rs[g, RS_USED] - need
        pr = rs[g, RS_PARTIAL]
        if pr >= 0 and budget > 0:
            done = np.int64(rq[pr, RQ_DONE])
            tokens = np.int64(rin[pr, RIN_PROMPT]) + rq[pr, RQ_GEN]
            chunk = min(tokens - done, budget)
            b_from = _ceil_div(done, bs, shift)
            b_to = _ceil_div(done + chunk, bs, shift)
            if caching:
                cost, _ = cache_hold(path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm,
                                     ci[CI_NODES], g, pr, rq[pr, RQ_REACH], b_from, b_to, False)
            else:
                cost = b_to - b_from
            if cost > free:
                # it is the last in the running list: the victim is itself
                if _preempt(pr, g, d, ci, rin, rq, ctx0, hpos, rs, qs, hist, fin_key, fin_id, path_off, path_node,
                            path_blocks, cn, own, lru, lm) < 0:
                    error = ERR_CACHE
                preempted += 1
                running -= 1
            else:
                if caching:
                    taken, reach = cache_hold(path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru,
                                              lm, ci[CI_NODES], g, pr, rq[pr, RQ_REACH], b_from, b_to, True)
                    if taken != cost:
                        error = ERR_CACHE
                    rq[pr, RQ_REACH] = reach
                rs[g, RS_USED] += cost
                free -= cost
                budget -= chunk
                pf_tokens += chunk
                pf_lin += chunk
                pf_quad += float(chunk) * float(done + chunk)
                pf_hist += done
                rq[pr, RQ_DONE] = done + chunk
                pf_reqs += 1
        if preempted == 0:
            while rs[g, RS_WAITING] > 0 and budget > 0 and running + 1 <= limit:
                qi = _pick_queue(policy, g, K, qs, rs, join_s)
                r = qs[qi, Q_HEAD]
                tokens = np.int64(rin[r, RIN_PROMPT]) + rq[r, RQ_GEN]
                hit, upto, cost = _admission(g, r, tokens, budget, ci, path_off, path_node, node_first, node_blocks,
                                             path_blocks, cn, own, lru, lm)
                # v1's optional watermark: only once another request is scheduled in the step (rule 7); with
                # reserve_full_isl the blocks of the whole sequence must be free, not only the first chunk's
                whole = cost
                if ci[CI_FULL_ISL]:
                    whole += _ceil_div(tokens, bs, shift) - _ceil_div(upto, bs, shift)
                if whole + (watermark if rs[g, RS_N_DEC] + pf_reqs > 0 else 0) > free:
                    break
                if not _admit(r, g, qi, now, tokens, upto, hit, cost, ci, rq, tq, rs, qs, path_off, path_node,
                              node_first, node_blocks, path_blocks, cn, own, lru, lm):
                    error = ERR_CACHE
                if upto < tokens:
                    rs[g, RS_PARTIAL] = r
                chunk = upto - hit
                free -= cost
                budget -= chunk
                pf_tokens += chunk
                pf_lin += chunk
                pf_quad += float(chunk) * float(upto)
                pf_hist += hit
                pf_reqs += 1
                running += 1
    nd = rs[g, RS_N_DEC] if take_decode else 0   # v0.2: a prefill step holds no decodes
    if pf_reqs == 0 and nd == 0:
        if rs[g, RS_WAITING] > 0 and preempted == 0:
            error = ERR_STUCK
        return KIND_NONE, 0, 0.0, 0.0, 0, 0, 0, preempted, 0.0, 0.0, error
    rs[g, RS_POPPED] = 1   # the first step's blocks were taken from the free queue above
    if ci[CI_TABLE]:
        return _schedule_table(g, ci, rq, ctx0, hist, rs, fin_key, tf, ti, d, nd, pf_tokens, pf_reqs, pf_hist, pf_quad,
                               preempted, error)
    ctx = 0.0
    if nd > 0:
        a_d, b_d, c_d = _decode_coefs(cf, nd)
        ctx = float(rs[g, RS_CTX_BASE] + nd * d)
        var_d = b_d * ctx + c_d * nd
    else:
        a_d = 0.0
        b_d = 0.0
        var_d = 0.0
    if pf_reqs > 0:
        fixed = max(cf[C_PA], a_d) if nd > 0 else cf[C_PA]
        e = fixed + cf[C_PB] * pf_lin + cf[C_PC] * pf_quad + var_d
        return KIND_STEP, 1, e, 0.0, pf_tokens, pf_reqs, nd, preempted, pf_quad, ctx, error
    e = a_d + var_d
    f = b_d * nd
    k, stuck = _run_length(g, ci, ctx0, rs, hist, fin_key, nd, d, preempted)
    if stuck:
        error = ERR_BLOCKS
    return KIND_DECODE_RUN, k, e, f, pf_tokens, pf_reqs, nd, preempted, pf_quad, ctx, error


@njit(cache=True, inline="always")
def _run_length(g, ci, ctx0, rs, hist, fin_key, nd, d, preempted):
    """Decode steps a run may take from decode count ``d`` (see Speed): up to the next finish, before the first
    step that would preempt; 1 without runs.  Returns (steps, whether not even one step fits)."""
    if not ci[CI_JUMPS] or preempted > 0 or (ci[CI_POLICY] == POLICY_SLA and rs[g, RS_WAITING] > 0):
        # (continuous_sla: its limit changes every step, so a waiting request could be admitted at any
        # boundary; runs only while nobody waits)
        return 1, False
    k = _steps_without_preemption(hist, g, ci[CI_BS], ci[CI_SHIFT], nd, d, ci[CI_CAP] - rs[g, RS_USED],
                                  int(fin_key[g, 0]) - d, not ci[CI_CHUNKED], ctx0[rs[g, RS_RUN_TAIL]])
    if k < 1:
        return 1, True
    return k, False


@njit(cache=True, inline="always")
def _schedule_table(g, ci, rq, ctx0, hist, rs, fin_key, tf, ti, d, nd, pf_tokens, pf_reqs, pf_hist, pf_quad,
                    preempted, error):
    """Rule 9 with a step table (:mod:`workbench.sim.steptable`): the step's time from the table; a decode-only
    step starts a run of at most as many steps as the table stays linear over.  Returns what ``_schedule``
    returns."""
    ctx_int = rs[g, RS_CTX_BASE] + nd * d
    ctx = float(ctx_int)
    kv_max = 0
    kv_min = 0
    if nd > 0:
        if ci[CI_SKEW]:
            s_max, s_min = _span(ci, rq, ctx0, rs, g)
            kv_max = s_max + d
            kv_min = s_min + d
        else:
            kv_max = (ctx_int + nd - 1) // nd   # any value >= the mean: unused without the skew correction
            kv_min = kv_max
    if pf_reqs > 0:
        e = table_step_s(tf, ti, pf_tokens, pf_reqs, pf_hist, pf_quad, nd, ctx, float(kv_max), float(kv_min))
        return KIND_STEP, 1, e, 0.0, pf_tokens, pf_reqs, nd, preempted, pf_quad, ctx, error
    e, f, k_lin = table_decode_run(tf, ti, nd, ctx_int, kv_max, kv_min)
    k, stuck = _run_length(g, ci, ctx0, rs, hist, fin_key, nd, d, preempted)
    if stuck:
        error = ERR_BLOCKS
    k = min(k, k_lin)
    table_record_run(tf, kv_max, k)
    return KIND_DECODE_RUN, k, e, f, pf_tokens, pf_reqs, nd, preempted, pf_quad, ctx, error


@njit(cache=True, inline="always")
def _log_step(log_f, log_i, n_log, rs, g, start, end, pf_quad, ctx, k, pf_tokens, pf_reqs, nd, preempted):
    """Replica ``g``'s step (or run of ``k`` decode steps) as row ``n_log`` of the step log, which
    ``rs[g, RS_LOG_ROW]`` then names, while the log has room (else the row stays -1).  Returns the rows
    written."""
    if n_log >= log_f.shape[0]:
        return n_log
    log_f[n_log, F_START] = start
    log_f[n_log, F_END] = end
    log_f[n_log, F_PREFILL_QUAD] = pf_quad
    log_f[n_log, F_CONTEXT] = ctx
    log_i[n_log, S_REPLICA] = g
    log_i[n_log, S_K] = k
    log_i[n_log, S_PREFILL_TOKENS] = pf_tokens
    log_i[n_log, S_PREFILL_REQS] = pf_reqs
    log_i[n_log, S_DECODES] = nd
    log_i[n_log, S_BLOCKS] = rs[g, RS_USED]
    log_i[n_log, S_PREEMPTED] = preempted
    rs[g, RS_LOG_ROW] = n_log
    return n_log + 1


# ---------------------------------------------------------------- data-parallel lock step (rule 17)
@njit(cache=True, _nrt=False)
def _lockstep_start(now, ci, cf, rs, rf, ev_key, ev_id, ev_pos, ev_n, log_f, log_i, n_log, tf, ti):
    """Start the group's step at ``now`` (rule 17).  Every rank has scheduled by rules 3-9 (``RS_KIND``, its own
    step time in ``RF_RUN_E``, its tokens in ``RS_STEP_TOKENS``; the events of those with a step wait at +inf).
    No rank with work: the group goes idle.  Otherwise the idle ranks run a dummy step, every rank's step is
    padded to the group's largest token count, and all end together after the longest padded step.  Returns
    (events in the heap, rows of the step log)."""
    R = ci[CI_REPLICAS]
    busy = False
    for h in range(R):
        if rs[h, RS_KIND] != KIND_NONE:
            busy = True
    if not busy:
        for h in range(R):
            if ev_pos[h] >= 0:
                ev_n = _heap_remove(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[h])
        return ev_n, n_log
    table = ci[CI_TABLE]
    # a dummy step: one decode token of context 1, no LM head or sampler (vLLM's _dummy_run(1))
    if table:
        dummy_s = table_step_s(tf, ti, 0, 0, 0, 0.0, 1, 1.0, 1.0, 1.0) - table_seq_s(tf, ti, 1)
    else:
        a_d, b_d, c_d = _decode_coefs(cf, 1)
        dummy_s = a_d + b_d + c_d
    n_max = 0
    for h in range(R):
        if rs[h, RS_KIND] == KIND_NONE:
            rs[h, RS_KIND] = KIND_DUMMY
            rs[h, RS_RUN_K] = 1
            rs[h, RS_WITH_DEC] = 0
            rs[h, RS_DEC_START] = 0
            rs[h, RS_N_PF] = 0
            rs[h, RS_BLOCKS_AT_START] = rs[h, RS_USED]
            rs[h, RS_STEP_TOKENS] = 1
            rf[h, RF_T_START] = now
            rf[h, RF_RUN_E] = dummy_s
            if ev_pos[h] < 0:
                ev_n = _heap_push(ev_key, ev_id, ev_pos, 0, ev_n, np.inf, h)
            rs[h, RS_LOG_ROW] = -1   # its row's end is the group's, set below
            n_log = _log_step(log_f, log_i, n_log, rs, h, now, np.inf, 0.0, 0.0, 1, 0, 0, 0, 0)
        n_max = max(n_max, rs[h, RS_STEP_TOKENS])
    # every rank's forward runs n_max tokens: the padding is dummy decodes of the token-dependent part only
    group_s = 0.0
    for h in range(R):
        tokens = rs[h, RS_STEP_TOKENS]
        t = rf[h, RF_RUN_E]
        pad = n_max - tokens
        if pad > 0:
            if table:
                t += table_token_s(tf, ti, n_max) - table_token_s(tf, ti, tokens)
            else:
                nd = 1 if rs[h, RS_KIND] == KIND_DUMMY else rs[h, RS_DEC_START]
                _, _, c_d = _decode_coefs(cf, nd + pad)
                t += c_d * pad
        group_s = max(group_s, t)
    end = now + group_s
    for h in range(R):
        rf[h, RF_RUN_E] = group_s
        rf[h, RF_RUN_F] = 0.0
        _heap_set(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[h], end)
        if rs[h, RS_LOG_ROW] >= 0:
            log_f[rs[h, RS_LOG_ROW], F_END] = end
    return ev_n, n_log


# ---------------------------------------------------------------- the engine

@njit(cache=True, _nrt=False)
def _event_loop(join_order, join_s, ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, win_t, win_b,
                path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm, ev_key, ev_id, ev_pos,
                log_f, log_i, tf, ti, act, lp, lpf, t_stop):
    """The events: joins (rule 1), step boundaries of every replica and, with autoscaling, replicas becoming
    ready or leaving (rule 16), in time order, up to (not including) ``t_stop``; the loop's own state is kept
    in ``lp``/``lpf`` so a later call resumes it.  Compiled without reference counting (it allocates nothing),
    so the helpers it inlines cost no count updates for the arrays they take.  Returns (rows of the step log,
    error code)."""
    m = join_order.size
    K = ci[CI_BINS]
    bs = ci[CI_BS]
    shift = ci[CI_SHIFT]
    ev_n = lp[LP_EV_N]
    n_log = lp[LP_N_LOG]
    error = lp[LP_ERROR]
    now = lpf[0]
    ptr = lp[LP_PTR]
    rr = lp[LP_RR]
    while ptr < m or ev_n > 0:
        t_join = join_s[join_order[ptr]] if ptr < m else np.inf
        t_event = ev_key[0, 0] if ev_n > 0 else np.inf
        if t_join >= t_stop and t_event >= t_stop:
            break
        if t_join <= t_event:
            # ---------------------------------------------------- a request joins and is routed
            if t_join < now:
                error = ERR_TIME_BACKWARDS
            now = t_join
            r = join_order[ptr]
            ptr += 1
            g, rr = _route(ci, rr, r, now, rs, rf, hist, path_off, path_node, node_blocks, cn, own, lru, lm, act)
            if g < 0:
                error = ERR_CACHE
                break
            rq[r, RQ_REPLICA] = g
            rq[r, RQ_STATE] = ST_WAITING
            _q_push_back(qs, rq, g * K + rin[r, RIN_BIN], r)
            rs[g, RS_WAITING] += 1
            rs[g, RS_WAIT_BLOCKS] += _ceil_div(np.int64(rin[r, RIN_PROMPT]), bs, shift)
            rs[g, RS_OUTSTANDING] += 1
            if ev_pos[g] < 0:
                rs[g, RS_KIND] = KIND_NONE           # idle: decide at this instant, after same-time joins
                rf[g, RF_T_START] = now
                ev_n = _heap_push(ev_key, ev_id, ev_pos, 0, ev_n, now, g)
            elif rs[g, RS_KIND] == KIND_DECODE_RUN and rs[g, RS_RUN_K] > 1:
                # cut the run after the step in flight, so the request is seen at the next boundary
                e, f = rf[g, RF_RUN_E], rf[g, RF_RUN_F]
                i = _steps_to_reach(e, f, rs[g, RS_RUN_K], now - rf[g, RF_T_START])
                if i < rs[g, RS_RUN_K]:
                    rs[g, RS_RUN_K] = i
                    end = rf[g, RF_T_START] + _run_time(e, f, i)
                    _heap_set(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g], end)
                    if rs[g, RS_LOG_ROW] >= 0:
                        log_f[rs[g, RS_LOG_ROW], F_END] = end
                        log_i[rs[g, RS_LOG_ROW], S_K] = i
            continue

        # -------------------------------------------------------- a replica reaches a step boundary
        g = ev_id[0, 0]
        if t_event < now:
            error = ERR_TIME_BACKWARDS
        now = t_event
        if rs[g, RS_PHASE] == PH_STARTING:
            # ---------------------------------------------------- a cold start ends: routed to from now on
            rs[g, RS_PHASE] = PH_ACTIVE
            rf[g, RF_READY] = now
            rf[g, RF_BUSY_MARK] = rf[g, RF_BUSY]
            ev_n = _heap_remove(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g])
            rr = rebuild_active(rs, act, rr)
            continue
        if rs[g, RS_KIND] != KIND_NONE:
            err = _complete(g, now, ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, hist, fin_key, fin_id, log_i, win_t, win_b,
                            path_off, path_node, path_blocks, cn, own, lru, lm)
            if err:
                error = err
        preempted = 0
        while True:
            kind, k, e, f, pf_tokens, pf_reqs, nd, more, pf_quad, ctx, err = _schedule(
                g, now, ci, cf, rin, join_s, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, path_off,
                path_node, node_first, node_blocks, path_blocks, cn, own, lru, lm, tf, ti)
            preempted += more
            if err:
                error = err
            # every running request was preempted and nothing else was scheduled: vLLM's next schedule() call,
            # at the same instant (an empty step runs no model), admits from the waiting queue
            if kind != KIND_NONE or more == 0 or rs[g, RS_WAITING] == 0 or error:
                break
        if kind == KIND_NONE and not ci[CI_LOCKSTEP]:
            rs[g, RS_KIND] = KIND_NONE
            ev_n = _heap_remove(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g])
            if rs[g, RS_PHASE] == PH_DRAINING and rs[g, RS_OUTSTANDING] == 0:
                if leave(g, now, ci, rs, rf, cn, own, lru, lm) != 0:   # drained: it leaves (rule 16)
                    error = ERR_CACHE
            if error:
                break
            continue
        rs[g, RS_KIND] = kind
        rs[g, RS_RUN_K] = k
        rf[g, RF_RUN_E] = e
        rf[g, RF_RUN_F] = f
        rs[g, RS_WITH_DEC] = 1 if nd > 0 else 0
        rs[g, RS_DEC_START] = nd
        rs[g, RS_BLOCKS_AT_START] = rs[g, RS_USED]
        rs[g, RS_N_PF] = pf_reqs
        rf[g, RF_T_START] = now
        end = now + _run_time(e, f, k)
        if ci[CI_LOCKSTEP]:
            # rule 17: the group's step is priced once every rank at this boundary has scheduled (k == 1)
            rs[g, RS_STEP_TOKENS] = pf_tokens + nd
            end = np.inf
        _heap_set(ev_key, ev_id, ev_pos, 0, ev_n, ev_pos[g], end)
        rs[g, RS_LOG_ROW] = -1
        if kind != KIND_NONE:
            n_log = _log_step(log_f, log_i, n_log, rs, g, now, end, pf_quad, ctx, k, pf_tokens, pf_reqs, nd,
                              preempted)
        if ci[CI_LOCKSTEP] and ev_key[0, 0] != now:
            # the last rank of the group at this boundary has scheduled (the others' events wait at +inf)
            ev_n, n_log = _lockstep_start(now, ci, cf, rs, rf, ev_key, ev_id, ev_pos, ev_n, log_f, log_i, n_log,
                                          tf, ti)
        if error:
            break
    lp[LP_EV_N] = ev_n
    lp[LP_N_LOG] = n_log
    lp[LP_ERROR] = error
    lp[LP_PTR] = ptr
    lp[LP_RR] = rr
    lpf[0] = now
    return n_log, error


# ---------------------------------------------------------------- the engine
@njit(cache=True)
def finish_heap_capacity(max_num_seqs, kv_blocks, num_requests, caching):
    """Slots of a replica's finish heap: its running decodes, at most ``max_num_seqs`` and (each holding a block
    of its own) at most the blocks, unless prefix caching lets requests share every block they hold."""
    if caching:
        return max(1, min(max_num_seqs, num_requests))
    return max(1, min(max_num_seqs, kv_blocks, num_requests))


@njit(cache=True)
def lru_records(kv_blocks, n_nodes, num_requests):
    """Records of a replica's LRU queue (rule 15): at most one live record per node and per request's own
    blocks, and runs of unused blocks never side by side; never more than the blocks (plus the spare two)."""
    return min(kv_blocks, n_nodes + 2 * num_requests + 2) + 2


def table_bytes(*, num_requests: int, num_replicas: int, n_bins: int, block_size: int, max_num_seqs: int,
                kv_blocks: int, window: int, caching: bool, n_nodes: int, log_capacity: int) -> int:
    """Bytes of the tables :func:`run_continuous` allocates whose size the configuration sets (per replica,
    per replica and bin or prefix-tree node, the step log), as it allocates them; the per-request arrays
    (about 90 bytes a request) are left out: they grow with the trace, not with the settings."""
    heap = finish_heap_capacity(max_num_seqs, kv_blocks, num_requests, caching)
    per_replica = (8 * (RS_N + RF_N + 3)        # rs, rf, the replica event heap
                   + 24 * n_bins                 # waiting queues
                   + 8 * block_size              # hist
                   + 16 * heap                   # fin_key, fin_id
                   + 16 * window)                # win_t, win_b
    if caching:
        per_replica += 12 * n_nodes + 16 * lru_records(kv_blocks, n_nodes, num_requests) + 24   # cn, lru, lm
    return num_replicas * per_replica + (4 * 8 + 7 * 8) * log_capacity


# ---------------------------------------------------------------- autoscaling (rule 16)
@njit(cache=True, _nrt=False)
def rebuild_active(rs, act, rr):
    """``act[:n]``: the active replicas by index, ``act[R] = n``; returns the round-robin position kept in range."""
    R = rs.shape[0]
    n = 0
    for g in range(R):
        if rs[g, RS_PHASE] == PH_ACTIVE:
            act[n] = g
            n += 1
    act[R] = n
    return rr if rr < n else 0


@njit(cache=True, _nrt=False)
def leave(g, now, ci, rs, rf, cn, own, lru, lm):
    """Replica ``g`` (empty) stops being provisioned at ``now``; its KV cache goes with it, so a replica started
    later in its slot begins with an empty cache.  Returns an error code."""
    rs[g, RS_PHASE] = PH_OFF
    rf[g, RF_LEFT] = now
    if ci[CI_CACHING]:
        cap = ci[CI_CAP]
        if lru_take(lru, lm, cn, own, ci[CI_NODES], g, cap) != 0:
            return ERR_CACHE
        if not lru_append(lru, lm, cn, own, ci[CI_NODES], g, OWNER_NONE, cap):
            return ERR_CACHE
    return 0


@njit(cache=True, _nrt=False)
def _provision(g, now, ci, rs, rf):
    """Replica ``g`` is provisioned at ``now``: a fresh server (controllers at their start values)."""
    rf[g, RF_PROVISIONED] = now
    rf[g, RF_READY] = np.nan
    rf[g, RF_DRAINED] = np.nan
    rf[g, RF_LEFT] = np.nan
    rs[g, RS_KIND] = KIND_NONE
    rs[g, RS_B_SLA] = (ci[CI_B_MIN] + ci[CI_B_MAX]) // 2
    rs[g, RS_B_MEM] = ci[CI_B_MAX]
    rf[g, RF_B_LOW] = float(ci[CI_B_MIN])
    rf[g, RF_B_HIGH] = float(ci[CI_B_MAX])
    rf[g, RF_TOK_N] = 0.0
    rf[g, RF_TOK_MEAN] = 0.0
    rf[g, RF_TOK_M2] = 0.0
    rs[g, RS_WIN_N] = 0
    rs[g, RS_RELEASED] = 0
    rs[g, RS_ACTIVE_BIN] = 0
    rs[g, RS_ROUND_LEFT] = 0
    rf[g, RF_BUSY_MARK] = rf[g, RF_BUSY]


@njit(cache=True)
def observe(now, rs, rf, lp, obs):
    """Fill ``obs`` (``OB_*``) with what an autoscaler sees at ``now``: replicas by phase; over the active ones
    the requests routed and not finished, those of them waiting, the KV blocks in use (as of their last
    completed step) and the seconds they spent running steps since the last call; requests joined so far."""
    obs[:] = 0.0
    for g in range(rs.shape[0]):
        phase = rs[g, RS_PHASE]
        if phase == PH_STARTING:
            obs[OB_STARTING] += 1
        if phase != PH_ACTIVE and phase != PH_DRAINING:
            continue
        busy = rf[g, RF_BUSY] + (now - rf[g, RF_T_START] if rs[g, RS_KIND] != KIND_NONE else 0.0)
        if phase == PH_DRAINING:
            obs[OB_DRAINING] += 1
            obs[OB_DRAINING_OUTSTANDING] += rs[g, RS_OUTSTANDING]
        else:
            obs[OB_ACTIVE] += 1
            obs[OB_OUTSTANDING] += rs[g, RS_OUTSTANDING]
            obs[OB_WAITING] += rs[g, RS_WAITING]
            obs[OB_KV_USED] += rs[g, RS_USED]
            obs[OB_BUSY_S] += busy - rf[g, RF_BUSY_MARK]
        rf[g, RF_BUSY_MARK] = busy
    obs[OB_ARRIVED] = lp[LP_PTR]


@njit(cache=True)
def resize(target, now, cold_start_s, ci, rs, rf, act, lp, ev_key, ev_id, ev_pos, cn, own, lru, lm):
    """Bring the active and starting replicas to ``target`` at ``now`` (rule 16).  Up: draining replicas are
    taken back first (the most outstanding first: warm, and the longest to drain), then the lowest free slots
    cold-start (ready after ``cold_start_s``).  Down: starting replicas are cancelled first (the latest to be
    ready first), then active ones drain (the fewest outstanding first, ties the highest index); one with
    nothing to do leaves at once.  Returns (started, taken back, cancelled, drained, left at once, error)."""
    R = rs.shape[0]
    current = 0
    for g in range(R):
        if rs[g, RS_PHASE] == PH_ACTIVE or rs[g, RS_PHASE] == PH_STARTING:
            current += 1
    started = 0
    undrained = 0
    cancelled = 0
    drained = 0
    left = 0
    error = 0
    need = target - current
    while need > 0:   # take back a draining replica
        pick = -1
        for g in range(R):
            if rs[g, RS_PHASE] == PH_DRAINING and (pick < 0 or rs[g, RS_OUTSTANDING] > rs[pick, RS_OUTSTANDING]):
                pick = g
        if pick < 0:
            break
        rs[pick, RS_PHASE] = PH_ACTIVE
        undrained += 1
        need -= 1
    for g in range(R):   # cold-start free slots
        if need <= 0:
            break
        if rs[g, RS_PHASE] != PH_OFF:
            continue
        _provision(g, now, ci, rs, rf)
        if cold_start_s > 0:
            rs[g, RS_PHASE] = PH_STARTING
            lp[LP_EV_N] = _heap_push(ev_key, ev_id, ev_pos, 0, lp[LP_EV_N], now + cold_start_s, g)
        else:
            rs[g, RS_PHASE] = PH_ACTIVE
            rf[g, RF_READY] = now
        started += 1
        need -= 1
    excess = current - target
    while excess > 0:   # cancel a cold start
        pick = -1
        for g in range(R):
            if rs[g, RS_PHASE] == PH_STARTING and (pick < 0 or ev_key[0, ev_pos[g]] >= ev_key[0, ev_pos[pick]]):
                pick = g
        if pick < 0:
            break
        lp[LP_EV_N] = _heap_remove(ev_key, ev_id, ev_pos, 0, lp[LP_EV_N], ev_pos[pick])
        if leave(pick, now, ci, rs, rf, cn, own, lru, lm) != 0:
            error = ERR_CACHE
        cancelled += 1
        excess -= 1
    while excess > 0:   # drain an active replica
        pick = -1
        for g in range(R):
            if rs[g, RS_PHASE] == PH_ACTIVE and (pick < 0 or rs[g, RS_OUTSTANDING] <= rs[pick, RS_OUTSTANDING]):
                pick = g
        if pick < 0:
            break
        rs[pick, RS_PHASE] = PH_DRAINING
        rf[pick, RF_DRAINED] = now
        drained += 1
        excess -= 1
        if ev_pos[pick] < 0 and rs[pick, RS_OUTSTANDING] == 0:
            if leave(pick, now, ci, rs, rf, cn, own, lru, lm) != 0:
                error = ERR_CACHE
            left += 1
    lp[LP_RR] = rebuild_active(rs, act, lp[LP_RR])
    if act[R] == 0:
        error = ERR_STUCK
    return started, undrained, cancelled, drained, left, error


# ---------------------------------------------------------------- the engine's state, and a fixed pool's run
@njit(cache=True)
def allocate(join_s, prompt_tokens, output_tokens, bin_id, n_bins, num_replicas, initial_replicas, router, policy,
             jumps, chunked, caching, max_num_seqs, max_batched_tokens, max_paddings, watermark_blocks, block_size,
             kv_blocks, coef, b_min, b_max, budget_s, eps_s, alpha, delta, window, theta, affinity_margin, n_nodes,
             log_capacity, ti, reserve_full_isl, dp_lockstep):
    """The engine's state for a run (see :func:`run_continuous`): ``num_replicas`` slots, the first
    ``initial_replicas`` active from time 0 (the others not provisioned; ``dp_lockstep``: the replicas are one
    data-parallel group, rule 17, with no runs of decode steps).  Returns (ci, cf, rin, rq, tq, ctx0,
    hpos, rs, rf, qs, hist, fin_key, fin_id, win_t, win_b, cn, own, lru, lm, ev_key, ev_id, ev_pos, log_f,
    log_i, act, lp, lpf)."""
    n = join_s.size
    R = num_replicas
    K = n_bins
    bs = block_size
    shift = _pow2_shift(bs)
    cap = kv_blocks

    ci = np.empty(CI_N, np.int64)
    ci[CI_REPLICAS] = R
    ci[CI_BINS] = K
    ci[CI_BS] = bs
    ci[CI_SHIFT] = shift
    ci[CI_CAP] = cap
    ci[CI_POLICY] = policy
    ci[CI_ROUTER] = router
    ci[CI_CHUNKED] = chunked
    ci[CI_CACHING] = caching
    ci[CI_JUMPS] = 0 if dp_lockstep else jumps
    ci[CI_MAX_SEQS] = max_num_seqs
    ci[CI_MAX_TOKENS] = max_batched_tokens
    ci[CI_MAX_PADDINGS] = max_paddings
    ci[CI_WATERMARK] = watermark_blocks
    ci[CI_B_MIN] = b_min
    ci[CI_B_MAX] = b_max
    ci[CI_WINDOW] = window
    ci[CI_MARGIN] = affinity_margin
    ci[CI_NODES] = n_nodes
    ci[CI_FULL_ISL] = reserve_full_isl
    ci[CI_LOCKSTEP] = dp_lockstep
    ci[CI_TABLE] = 1 if ti[TI_DEC_NMAX] > 0 else 0
    ci[CI_SKEW] = 1 if ci[CI_TABLE] and ti[TI_SKEW] else 0
    cf = np.empty(CF_N)
    cf[:13] = coef
    cf[CF_BUDGET] = budget_s
    cf[CF_EPS] = eps_s
    cf[CF_ALPHA] = alpha
    cf[CF_DELTA] = delta
    cf[CF_THETA] = theta

    # per request
    rin = np.empty((n, 3), np.int32)
    for r in range(n):
        rin[r, RIN_PROMPT] = prompt_tokens[r]
        rin[r, RIN_OUTPUT] = output_tokens[r]
        rin[r, RIN_BIN] = bin_id[r]
    rq = np.zeros((n, RQ_N), np.int32)
    for r in range(n):
        rq[r, RQ_REPLICA] = -1
        rq[r, RQ_NEXT] = -1
        rq[r, RQ_PREV] = -1
        rq[r, RQ_RNEXT] = -1
    tq = np.full((3, n), np.nan)
    hpos = np.full(n, -1, np.int32)         # position in its replica's finish heap
    ctx0 = np.zeros(n, np.int64)            # S_r: context at decode count d is S_r + d

    # per replica
    rs = np.zeros((R, RS_N), np.int64)
    rs[:, RS_RUN_HEAD] = -1
    rs[:, RS_RUN_TAIL] = -1
    rs[:, RS_PARTIAL] = -1
    rs[:, RS_LOG_ROW] = -1
    rs[:, RS_B_SLA] = (b_min + b_max) // 2
    rs[:, RS_B_MEM] = b_max
    rs[initial_replicas:, RS_PHASE] = PH_OFF
    rf = np.zeros((R, RF_N))
    rf[:, RF_B_LOW] = float(b_min)
    rf[:, RF_B_HIGH] = float(b_max)
    rf[:, RF_DRAINED] = np.nan
    rf[:, RF_LEFT] = np.nan
    rf[initial_replicas:, RF_PROVISIONED] = np.nan
    rf[initial_replicas:, RF_READY] = np.nan
    qs = np.full((R * K, 3), -1, np.int64)
    qs[:, Q_LEN] = 0
    hist = np.zeros((R, bs), np.int64)      # decodes by S_r mod block_size
    heap_cap = finish_heap_capacity(max_num_seqs, cap, n, caching)
    fin_key = np.empty((R, heap_cap), np.float64)
    fin_id = np.empty((R, heap_cap), np.int64)
    win_t = np.zeros((R, window))
    win_b = np.zeros((R, window))

    # prefix cache (rules 13-15): per replica and node, per request's own blocks, the LRU queue of free blocks
    if caching:
        cn = np.zeros((R, n_nodes, 3), np.int32)
        own = np.zeros((n, 2), np.int32)
        lru, lm = lru_init(R, lru_records(cap, n_nodes, n), cap)
    else:
        cn = np.zeros((1, 1, 3), np.int32)
        own = np.zeros((1, 2), np.int32)
        lru, lm = lru_init(1, 1, 0)

    log_f = np.empty((log_capacity, 4), np.float64)
    log_i = np.empty((log_capacity, 7), np.int64)

    # replica event heap; the active replicas; the event loop's state
    ev_key = np.empty((1, R), np.float64)
    ev_id = np.empty((1, R), np.int64)
    ev_pos = np.full(R, -1, np.int64)
    act = np.zeros(R + 1, np.int64)
    rebuild_active(rs, act, 0)
    lp = np.zeros(LP_N, np.int64)
    lpf = np.zeros(1)
    return (ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, win_t, win_b, cn, own, lru, lm,
            ev_key, ev_id, ev_pos, log_f, log_i, act, lp, lpf)


@njit(cache=True)
def unfinished_error(rq, error):
    """``error``, or ``ERR_LEFT`` if a request accepted for service neither finished nor was dropped."""
    for r in range(rq.shape[0]):
        state = rq[r, RQ_STATE]
        if state != ST_DONE and state != ST_NEW and state != ST_DROPPED:
            return ERR_LEFT if error == 0 else error
    return error


@njit(cache=True)
def run_continuous(join_order, join_s, prompt_tokens, output_tokens, bin_id, n_bins, num_replicas, router, policy,
                   jumps, chunked, caching, max_num_seqs, max_batched_tokens, max_paddings, watermark_blocks,
                   block_size, kv_blocks, coef, b_min, b_max, budget_s, eps_s, alpha, delta, window, theta,
                   affinity_margin, path_off, path_node, node_first, node_blocks, path_blocks, log_capacity, tf, ti,
                   reserve_full_isl, dp_lockstep):
    """Simulate a fixed pool of ``num_replicas``; see the module docstring.  ``join_order``: accepted requests
    sorted by join time; the ``path_*``/``node_*`` arrays: the prefix tree of :mod:`workbench.sim.prefix_tree`
    (used with ``caching``).

    Returns the per-request int32 table (``RQ_*`` columns: replica, state, preemptions, cached tokens, ...)
    and float64 times (``T_*``), per replica (busy_s, block_seconds, steps), the step log (float: ``F_*``
    columns; int: ``S_*`` columns) and an error code."""
    (ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, win_t, win_b, cn, own, lru, lm,
     ev_key, ev_id, ev_pos, log_f, log_i, act, lp, lpf) = allocate(
        join_s, prompt_tokens, output_tokens, bin_id, n_bins, num_replicas, num_replicas, router, policy, jumps,
        chunked, caching, max_num_seqs, max_batched_tokens, max_paddings, watermark_blocks, block_size, kv_blocks,
        coef, b_min, b_max, budget_s, eps_s, alpha, delta, window, theta, affinity_margin, node_first.size,
        log_capacity, ti, reserve_full_isl, dp_lockstep)
    n_log, error = _event_loop(join_order, join_s, ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id,
                               win_t, win_b, path_off, path_node, node_first, node_blocks, path_blocks, cn, own, lru,
                               lm, ev_key, ev_id, ev_pos, log_f, log_i, tf, ti, act, lp, lpf, np.inf)
    error = unfinished_error(rq, error)
    return (rq, tq, rf[:, RF_BUSY].copy(), rf[:, RF_BLOCK_S].copy(), rs[:, RS_STEPS].copy(), log_f[:n_log],
            log_i[:n_log], error)
