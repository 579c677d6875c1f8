"""Data-parallel lock step (rule 17 of the continuous engine, ``SimConfig.dp_lockstep``): hand-computed steps, the
independent reference, invariants of the step log, and the MoE run of the kernel-profile campaign."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.steptable import StepTable

sys.path.insert(0, os.path.dirname(__file__))
from test_continuous import ROUTER_NAMES, assert_matches_reference, conversation_hashes, random_trace  # noqa: E402

STEP = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.002))


def trace_of(arrival_s, prompt, output):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source="test")


def lockstep_cfg(**kw):
    base = dict(scheduler="continuous_fcfs", num_gpus=2, chunked_prefill=True, router="least_outstanding",
                dp_lockstep=True, max_num_batched_tokens=2048, max_num_seqs=8, kv_blocks=1000)
    return wb.SimConfig(**{**base, **kw})


def steps_of(res):
    return res.steps.sort_values(["start_s", "replica"]).reset_index(drop=True)


# ---------------------------------------------------------------- hand-computed cases
def test_padded_decode_and_dummy_set_the_pace_and_a_mid_step_join_waits():
    """Linear model: prefill 0.01 + 0.001 l, decode 0.002 + 0.002 n (c_d = 0.002 per decode); a padding token
    costs c_d.  B (prompt 10, 3 tokens) joins at 0 and goes to rank 0; A (prompt 100, 2 tokens) joins at 0.0005,
    during the first step, and goes to rank 1 (least outstanding), where it waits for the group's boundary.

    0     - 0.022  rank 0 prefills B: 0.02;  rank 1 dummy: 0.002 + 0.002 + 9 padding x 0.002 = 0.022 (the max)
    0.022 - 0.224  rank 0 decodes B: 0.004 + 99 x 0.002 = 0.202 (the max);  rank 1 prefills A: 0.11
    0.224 - 0.228  both decode one token: 0.004; B (3 tokens) and A (2 tokens) are done
    """
    tr = trace_of([0.0, 0.0005], [10, 100], [3, 2])
    res = wb.simulate(tr, lockstep_cfg(), latency=STEP, step_log=100)
    r = res.requests
    assert list(r.gpu) == [0, 1]
    np.testing.assert_allclose(r.ttft_s, [0.022, 0.224 - 0.0005], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.228, 0.228 - 0.0005], rtol=1e-12)
    np.testing.assert_allclose(r.queue_s, [0.0, 0.022 - 0.0005], rtol=1e-12)
    steps = steps_of(res)
    np.testing.assert_allclose(steps.start_s, [0, 0, 0.022, 0.022, 0.224, 0.224], rtol=1e-12)
    np.testing.assert_allclose(steps.end_s, [0.022, 0.022, 0.224, 0.224, 0.228, 0.228], rtol=1e-12)
    assert list(steps.prefill_tokens) == [10, 0, 0, 100, 0, 0]
    assert list(steps.decodes) == [0, 0, 1, 0, 1, 1]      # rank 1's first step is a dummy (no request)
    assert res.summary["engine_steps"] == 6               # dummy steps are forward passes too
    np.testing.assert_allclose(res.continuous["busy_s"], [0.228, 0.228], rtol=1e-12)
    # the same trace on independent replicas: A starts at its join, B's decodes are not held back
    free = wb.simulate(tr, lockstep_cfg(dp_lockstep=False), latency=STEP).requests
    np.testing.assert_allclose(free.ttft_s, [0.02, 0.11], rtol=1e-12)


def test_prefill_rank_sets_the_pace_and_an_idle_group_starts_at_once():
    """c_d = 0.0005: rank 0 decoding one token padded to 100 takes 0.0025 + 99 x 0.0005 = 0.052, less than rank 1's
    100-token prefill (0.11), so both take 0.11.  C joins at 1.0, after the group went idle: its step starts at
    once, beside a dummy step on the other rank.

    0      - 0.02    rank 0 prefills B (0.02); rank 1 dummy 0.0025 + 9 x 0.0005 = 0.007.  A joins at 0.001
    0.02   - 0.13    rank 0 decodes B, padded: 0.052; rank 1 prefills A: 0.11
    0.13   - 0.1325  both decode (0.0025): B done; A (2 tokens) done
    1.0    - 1.05    C (prompt 40, 1 token, rank 0: outstanding 0 and 0, the lower index) prefills 0.05; dummy 0.022
    """
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.0005))
    tr = trace_of([0.0, 0.001, 1.0], [10, 100, 40], [3, 2, 1])
    res = wb.simulate(tr, lockstep_cfg(), latency=step, step_log=100)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.02, 0.13 - 0.001, 0.05], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.1325, 0.1325 - 0.001, 0.05], rtol=1e-12)
    steps = steps_of(res)
    np.testing.assert_allclose(steps.start_s, [0, 0, 0.02, 0.02, 0.13, 0.13, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(steps.end_s, [0.02, 0.02, 0.13, 0.13, 0.1325, 0.1325, 1.05, 1.05], rtol=1e-12)


def padding_table():
    """A step table whose parts are easy to add by hand: token_s 1 ms per token, seq_s 0.3 ms per sequence,
    attention 0.5 ms per decode, fixed costs 10 ms (prefill) and 2 ms (decode)."""
    pc = kp = np.array([0.0, 4096.0])
    nd = np.array([0.0, 256.0])
    kv = np.array([0.0, 16384.0])
    attention = np.broadcast_to(0.0005 * nd[None, None, :, None], (2, 2, 2, 2))
    return StepTable(token_grid=[0.0, 4096.0], token_s=[0.0, 4.096], seq_grid=[0.0, 256.0], seq_s=[0.0, 0.0768],
                     pc_grid=pc, kp_grid=kp, nd_grid=nd, kv_grid=kv, attention_s=attention, fixed_prefill_s=0.01,
                     fixed_decode_s=0.002, kind="roofline", source="test")


def test_a_table_pads_the_token_part_only():
    """The padding adds token_s(N_max) - token_s(N): not the per-sequence part (LM head and sampler run on the real
    sequences) and not attention.  B (prompt 4, 3 tokens) at 0 on rank 0, A (prompt 100, 2 tokens) at 0.001 on rank
    1.  A step of one decode: 0.002 + 0.001 + 0.0003 + 0.0005 = 0.0038; a dummy the same without seq_s: 0.0035.

    0      - 0.0143  rank 0 prefills 4: 0.01 + 0.004 + 0.0003; rank 1 dummy 0.0035 + 3 x 0.001 = 0.0065
    0.0143 - 0.1246  rank 0 decodes B: 0.0038 + 99 x 0.001 = 0.1028 (with padded sequences it would be 0.1325);
                     rank 1 prefills A: 0.01 + 0.1 + 0.0003 = 0.1103 (the max)
    0.1246 - 0.1284  both decode: 0.0038
    """
    model = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.0018), table=padding_table(),
                             name="padding test table")
    res = wb.simulate(trace_of([0.0, 0.001], [4, 100], [3, 2]), lockstep_cfg(), latency=model, step_log=100)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.0143, 0.1246 - 0.001], rtol=1e-9)
    np.testing.assert_allclose(r.e2e_s, [0.1284, 0.1284 - 0.001], rtol=1e-9)
    np.testing.assert_allclose(steps_of(res).end_s, [0.0143, 0.0143, 0.1246, 0.1246, 0.1284, 0.1284], rtol=1e-9)


def test_a_group_of_one_is_an_independent_replica():
    """One rank: no padding, no dummy; only the runs of decode steps are off, which change no time."""
    tr = random_trace(300, 3, rate=60.0)
    cfg = lockstep_cfg(num_gpus=1, max_num_seqs=12, max_num_batched_tokens=400, kv_blocks=60, block_size=8)
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))
    lock = wb.simulate(tr, cfg, latency=step)
    free = wb.simulate(tr, cfg.replace(dp_lockstep=False), latency=step)
    assert lock.summary["preemptions_total"] > 0 and lock.summary["engine_steps"] == free.summary["engine_steps"]
    assert len(lock.steps) > len(free.steps)   # every step logged on its own
    for key in ("ttft_s", "e2e_s", "queue_s"):
        np.testing.assert_allclose(lock.continuous[key], free.continuous[key], rtol=1e-9)
    np.testing.assert_array_equal(lock.continuous["preemptions"], free.continuous["preemptions"])


@pytest.mark.parametrize("kw,message", [
    (dict(chunked_prefill=False), "vLLM v0.2"),
    (dict(scheduler="multi_bin_dynamic", chunked_prefill=False, router="round_robin", max_num_batched_tokens=16384,
          max_num_seqs=256, kv_blocks=None), "static batch"),
    (dict(scheduler="disaggregated", num_gpus=None, chunked_prefill=False, router="round_robin",
          max_num_batched_tokens=16384, max_num_seqs=256, kv_blocks=None), "DistServe"),
    (dict(autoscaler="threshold", max_replicas=4), "autoscaler"),
])
def test_where_lock_step_does_not_apply_is_refused(kw, message):
    with pytest.raises(ValueError, match="dp_lockstep") as err:
        lockstep_cfg(**kw)
    assert message in str(err.value)


# ---------------------------------------------------------------- the reference and invariants
@pytest.mark.parametrize("replicas,router,kv_blocks,seed,caching", [
    (2, "least_outstanding", 45, 0, False),
    (3, "round_robin", 1000, 1, False),
    (2, "least_kv", 60, 2, True),
    (3, "prefix_affinity", 80, 3, True),
])
def test_engine_matches_the_step_by_step_reference(replicas, router, kv_blocks, seed, caching):
    tr = random_trace(250, seed, rate=60.0 * replicas)
    if caching:
        tr = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens,
                                  prefix_hashes=conversation_hashes(tr, 32, seed), prefix_block_tokens=32)
    cfg = lockstep_cfg(num_gpus=replicas, router=router, max_num_seqs=12, max_num_batched_tokens=400, block_size=8,
                       kv_blocks=kv_blocks, prefix_caching=caching)
    res = assert_matches_reference(tr, cfg)
    if kv_blocks < 100:
        assert res.summary["preemptions_total"] > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), replicas=st.integers(1, 3),
       router=st.sampled_from(tuple(ROUTER_NAMES)), block_size=st.sampled_from((1, 4, 8, 12)),
       kv_tokens=st.integers(100, 1500), max_num_seqs=st.integers(1, 12), caching=st.booleans(),
       budget=st.integers(40, 500), large=st.booleans())
def test_engine_matches_the_reference_everywhere(seed, n, replicas, router, block_size, kv_tokens, max_num_seqs,
                                                 caching, budget, large):
    if router == "prefix_affinity" and not caching:
        router = "least_outstanding"
    tr = random_trace(n, seed, rate=150.0, max_prompt=120, mean_out=12)
    if caching:
        tr = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens,
                                  prefix_hashes=conversation_hashes(tr, 8, seed, n_conversations=6),
                                  prefix_block_tokens=8)
    cfg = lockstep_cfg(num_gpus=replicas, router=router, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max(budget, max_num_seqs), block_size=block_size,
                       kv_blocks=max(1, kv_tokens // block_size), prefix_caching=caching, prefix_affinity_margin=2)
    # the large-batch decode regime from 4 decodes: a padded step may cross it
    step_kw = dict(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))
    if large:
        step_kw.update(decode_large=(0.004, 2e-6, 1e-4), decode_large_threshold=4)
    assert_matches_reference(tr, cfg, step_kw)


@pytest.mark.filterwarnings("ignore::workbench.BinningWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120),
       scheduler=st.sampled_from(("continuous_fcfs", "continuous_sla", "continuous_multi_bin")),
       replicas=st.integers(1, 4), router=st.sampled_from(("round_robin", "least_outstanding", "least_kv")),
       block_size=st.sampled_from((1, 4, 16)), kv_tokens=st.integers(64, 4000), max_num_seqs=st.integers(1, 20),
       table=st.booleans())
def test_invariants(seed, n, scheduler, replicas, router, block_size, kv_tokens, max_num_seqs, table):
    """Every request completes or is rejected with a reason; at every group boundary every rank runs a step (a
    dummy if it has nothing), all with the same start and end, one after the other."""
    tr = random_trace(n, seed, rate=100.0)
    kv_blocks = max(1, kv_tokens // block_size)
    cfg = lockstep_cfg(scheduler=scheduler, num_gpus=replicas, router=router, block_size=block_size,
                       kv_blocks=kv_blocks, max_num_seqs=max_num_seqs, max_num_batched_tokens=max(max_num_seqs, 200),
                       k_bins=3, b_max=16)
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4),
                            table=padding_table() if table else None)
    res = wb.simulate(tr, cfg, latency=step, step_log=100_000)
    r, s = res.requests, res.summary
    assert s["completed"] + s["rejected"] == n == len(r)
    assert r.status[r.status != "completed"].astype(str).str.startswith("rejected").all()   # with a reason
    peak = -(-(tr.prompt_tokens.astype(np.int64) + tr.output_tokens - 1) // block_size)
    np.testing.assert_array_equal(r.status == "completed", peak <= kv_blocks)
    steps = res.steps
    assert len(steps) < 100_000 and (len(steps) > 0 or s["completed"] == 0)
    boundaries = steps.groupby("start_s")
    for start, group in boundaries:
        assert sorted(group.replica) == list(range(replicas))                # every rank, once
        assert group.end_s.nunique() == 1 and group.end_s.iloc[0] > start      # one end for all
    starts = np.sort(steps.start_s.unique())
    ends = steps.groupby("start_s").end_s.first().loc[starts].to_numpy()
    assert np.all(starts[1:] >= ends[:-1])                                     # group steps never overlap
    np.testing.assert_allclose(res.continuous["busy_s"], (ends - starts).sum(), rtol=1e-9)
    assert np.all(steps["kv_blocks_used"] <= kv_blocks)
    assert s["engine_steps"] == len(steps)


# ---------------------------------------------------------------- the data-parallel MoE run
def test_the_moe_runs_ranks_replay_in_lock_step():
    from workbench.study.fidelity.kernel_runs import replay, run_setup

    setup = run_setup("RTXPRO6000/Qwen3-30B-A3B-Instruct-2507")
    assert setup.config.dp_lockstep and setup.config.num_gpus == 2 and "lock step" in setup.notes
    assert not run_setup("RTXPRO6000/Llama-3.1-8B").config.dp_lockstep     # one instance, no group
    per_request, wall = replay(setup)
    assert len(per_request) == len(setup.trace) and np.isfinite(per_request.e2e_s).all()
    res = wb.simulate(setup.trace, setup.config, latency=setup.step, step_log=1_000_000)
    steps = res.steps
    both = steps.groupby("start_s").agg(ranks=("replica", "nunique"), ends=("end_s", "nunique"))
    assert (both.ranks == 2).all() and (both.ends == 1).all()
    # ranks idle while the other works run dummy steps, and the steps are longer than on independent replicas
    assert ((steps.prefill_requests == 0) & (steps.decodes == 0)).any()
    free = wb.simulate(setup.trace, setup.config.replace(dp_lockstep=False), latency=setup.step)
    assert res.summary["tpot_mean_s"] > free.summary["tpot_mean_s"]
