"""The continuous-batching engine: hand-computed cases, an independent reference, invariants."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.metrics import STATUS_DROPPED, STATUS_REJECTED_BUDGET, STATUS_REJECTED_KV

sys.path.insert(0, os.path.dirname(__file__))
from continuous_reference import reference  # noqa: E402
from conftest import assert_same_results, run_script_json

CONTINUOUS = ("continuous_fcfs", "continuous_sla", "continuous_multi_bin")
ROUTER_NAMES = ("round_robin", "least_outstanding", "least_kv", "prefix_affinity")


def trace_of(arrival_s, prompt, output):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source="test")


def cfg_of(**kw):
    return wb.SimConfig(scheduler=kw.pop("scheduler", "continuous_fcfs"), **kw)


def random_trace(n, seed, rate=40.0, max_prompt=300, mean_out=20):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    prompt = rng.integers(1, max_prompt, n)
    output = rng.geometric(1 / mean_out, n)
    return trace_of(arrival - arrival[0], prompt, output)


# ---------------------------------------------------------------- hand-computed cases
def test_one_request_alone():
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))
    res = wb.simulate(trace_of([0.0], [100], [5]), cfg_of(), latency=step)
    row = res.requests.iloc[0]
    prefill = 0.01 + 1e-4 * 100 + 1e-7 * 100 ** 2
    decodes = [0.005 + 1e-6 * ctx + 2e-4 for ctx in (101, 102, 103, 104)]
    assert row.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert row.e2e_s == pytest.approx(prefill + sum(decodes), rel=1e-12)
    assert row.tpot_s == pytest.approx(sum(decodes) / 4, rel=1e-12)
    assert row.queue_s == 0 and row.preemptions == 0 and row.met_sla
    assert row.latency_s == pytest.approx(row.e2e_s, rel=1e-12)
    # one prefill step and four decode steps, the decodes in one run
    assert res.summary["engine_steps"] == 5
    assert list(res.steps["steps"]) == [1, 4]


def test_one_token_output_finishes_at_its_prefill_and_has_no_tpot():
    step = wb.StepTimeModel(prefill=(0.01, 1e-3, 0), decode=(0.005, 0, 0))
    row = wb.simulate(trace_of([0.0], [10], [1]), cfg_of(), latency=step).requests.iloc[0]
    assert row.ttft_s == pytest.approx(0.02) and row.e2e_s == pytest.approx(0.02) and np.isnan(row.tpot_s)


STEP2 = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))


def test_two_requests_share_decode_steps_unchunked():
    # A: prompt 10, 3 tokens at t=0; B: prompt 20, 2 tokens at t=0.001.
    # 0-0.02 prefill A | 0.02-0.05 prefill B (prefills first) | 0.05-0.054 decode A,B (B done)
    # | 0.054-0.057 decode A (done)
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(), latency=STEP2)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.02, 0.049], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.057, 0.053], rtol=1e-12)
    np.testing.assert_allclose(r.queue_s, [0.0, 0.019], rtol=1e-12)
    np.testing.assert_allclose(r.tpot_s, [(0.057 - 0.02) / 2, 0.004], rtol=1e-12)


def test_chunked_prefill_mixes_decodes_and_prompt_in_one_step():
    # same input, v1: 0-0.02 prefill A | 0.02-0.051 decode A + prefill B, fixed cost max(0.01, 0.002)
    # | 0.051-0.055 decode A, B (both done)
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(chunked_prefill=True), latency=STEP2)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.02, 0.050], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.055, 0.054], rtol=1e-12)
    assert list(res.steps["decodes"]) == [0, 1, 2] and list(res.steps["prefill_tokens"]) == [10, 20, 0]


def test_chunked_prefill_splits_a_long_prompt_under_the_token_budget():
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 1e-5), decode=(0.002, 1e-5, 0.0))
    cfg = cfg_of(chunked_prefill=True, max_num_batched_tokens=16, max_num_seqs=4)
    row = wb.simulate(trace_of([0.0], [40], [2]), cfg, latency=step).requests.iloc[0]
    chunks = [(16, 0), (16, 16), (8, 32)]   # (tokens, prefix)
    ttft = sum(0.01 + 0.001 * l + 1e-5 * l * (p + l) for l, p in chunks)
    assert row.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert row.e2e_s == pytest.approx(ttft + 0.002 + 1e-5 * 41, rel=1e-12)
    # without chunking the prompt is longer than the budget: rejected with that reason
    res = wb.simulate(trace_of([0.0], [40], [2]), cfg.replace(chunked_prefill=False), latency=step)
    assert res.status[0] == STATUS_REJECTED_BUDGET and "max_num_batched_tokens" in str(res.requests.status[0])


def test_preemption_keeps_generated_tokens_and_recomputes_them():
    """vLLM v0.2.3, block_size 4, 4 blocks (watermark int(0.01 * 4) = 0).  A (prompt 4, 10 tokens) and B (prompt 4,
    6 tokens) arrive together.  Step times: prefill 0.01 + 0.001 * tokens, decode 0.002 + 0.001 * requests.

    0.000-0.018 prefill A, B (8 tokens; 1 block each)                              A, B: 1 token
    0.018-0.022 decode A, B (context 5: each starts a block; free 2 = need 2 and B,
                the last, takes the last block: no preemption)                     A, B: 2 tokens; 4 blocks used
    0.022-0.025 no block free: v0.2 preempts the last request, B (2 tokens kept,
                its 2 blocks freed), before A although A needs no block; A alone     A: 3
    0.025-0.041 prefill B: prompt + 2 generated = 6 tokens (2 blocks fit)          B: 3 (the recompute samples one)
    0.041-0.044 no block free: B preempted with 3 tokens; A alone                  A: 4
    0.044-0.061 prefill B, 7 tokens                                                B: 4
    0.061-0.064 B preempted with 4 tokens; A alone                                 A: 5
    0.064-0.082 prefill B, 8 tokens                                                B: 5
    0.082-0.085 none free: B preempted with 5 tokens (2 blocks); A takes a new one A: 6 (3 blocks)
    0.085-0.097 B needs ceil(9 / 4) = 3 blocks, 1 is free: it waits; A decodes 4 steps, the last taking the last
                block (the last running request may: no preemption)                A: 10, done
    0.097-0.116 prefill B, 9 tokens; its token 6 is its last                        B: done
    """
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    res = wb.simulate(trace_of([0.0, 0.0], [4, 4], [10, 6]), cfg_of(block_size=4, kv_blocks=4), latency=step)
    r = res.requests
    assert list(r.preemptions) == [0, 4]
    a_e2e = 0.018 + 0.004 + 0.003 + 0.016 + 0.003 + 0.017 + 0.003 + 0.018 + 0.003 + 4 * 0.003
    np.testing.assert_allclose(r.e2e_s, [a_e2e, a_e2e + 0.01 + 0.009], rtol=1e-12)
    np.testing.assert_allclose(r.ttft_s, [0.018, 0.018], rtol=1e-12)   # B's first token was already seen
    assert list(res.steps["prefill_tokens"][res.steps.prefill_requests > 0]) == [8, 6, 7, 8, 9]
    assert res.summary["preemptions_total"] == 4 and res.summary["requests_preempted"] == 1
    assert res.steps["kv_blocks_used"].max() <= 4


def test_v1_preempts_only_when_a_block_is_missing():
    """The same input with chunked prefill (vLLM v1): a request that needs no new block never preempts, and the
    victim (the last in the running list) keeps its tokens.  Budget 16384, no watermark.

    0.000-0.018 prefill A, B (1 block each); 0.018-0.022 decode both (context 5: a block each, 4 used)
    0.022-0.034 decode both, 3 steps (contexts 6-8: no new block)                       A, B: 5 tokens
    0.034 context 9: A needs a block, none is free: the last request, B, is preempted (5 tokens kept, 2 blocks
          freed); A takes one.  0.034-0.037 decode A; then B (9 tokens, 3 blocks) cannot fit beside A's 3 blocks:
    0.037-0.049 A decodes 4 more steps (contexts 10-13; the last takes the 4th block)   A: 10, done
    0.049-0.068 prefill B, 9 tokens (the 6th token, its last)
    """
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    res = wb.simulate(trace_of([0.0, 0.0], [4, 4], [10, 6]), cfg_of(block_size=4, kv_blocks=4, chunked_prefill=True),
                      latency=step)
    r = res.requests
    assert list(r.preemptions) == [0, 1]
    a_e2e = 0.018 + 4 * 0.004 + 0.003 + 4 * 0.003
    np.testing.assert_allclose(r.e2e_s, [a_e2e, a_e2e + 0.019], rtol=1e-12)


def test_watermark_refuses_an_admission_that_would_otherwise_fit():
    """200 blocks of 16: vLLM v0.2 keeps int(0.01 * 200) = 2 free when admitting.  A (prompt 3030: 190 blocks,
    3 tokens) runs; B (prompt 144: 9 blocks, 2 tokens) arrives at 0.001.  Prefill 0.01 + 1e-5 * tokens, decode 0.002.

    With the watermark: after A's prefill (0.0403) 10 blocks are free and 10 - 9 = 1 < 2: B waits for A's two
    decodes (0.0443), then prefills (0.01144) and decodes once.  Without (kv_watermark=0): B prefills at 0.0403."""
    step = wb.StepTimeModel(prefill=(0.01, 1e-5, 0.0), decode=(0.002, 0.0, 0.0))
    cfg = cfg_of(block_size=16, kv_blocks=200)
    tr = trace_of([0.0, 0.001], [3030, 144], [3, 2])
    assert cfg.kv_watermark_blocks == 2
    r = wb.simulate(tr, cfg, latency=step).requests
    np.testing.assert_allclose(r.ttft_s, [0.0403, 0.0443 + 0.01144 - 0.001], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.0443, 0.0443 + 0.01144 + 0.002 - 0.001], rtol=1e-12)
    r = wb.simulate(tr, cfg.replace(kv_watermark=0.0), latency=step).requests
    np.testing.assert_allclose(r.ttft_s, [0.0403, 0.0403 + 0.01144 - 0.001], rtol=1e-12)
    # then A and B decode together (B done), and A once more
    np.testing.assert_allclose(r.e2e_s, [0.05174 + 0.004, 0.05174 + 0.002 - 0.001], rtol=1e-12)


def test_v02_counts_padded_prompt_tokens_and_limits_padding():
    """vLLM v0.2.3 admits prompts while (admitted + 1) * longest <= max_num_batched_tokens and the padding
    (admitted + 1) * longest - sum <= max_paddings.  Prompts 100, 300, 60 arrive together; prefill 0.01 + 1e-4
    per token, decode 0.002, 2 tokens each.

    max_num_batched_tokens 1000, max_paddings 256: {100, 300} pads to 600 (padding 200); adding 60: 900 tokens,
    padding 440 > 256: the 60 waits for the next step.  With max_paddings 1000 all three go: 3 * 300 = 900."""
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.002, 0.0, 0.0))
    tr = trace_of([0.0, 0.0, 0.0], [100, 300, 60], [2, 2, 2])
    cfg = cfg_of(max_num_batched_tokens=1000)
    res = wb.simulate(tr, cfg, latency=step)
    assert list(res.steps.prefill_tokens[:2]) == [400, 60]
    np.testing.assert_allclose(res.requests.ttft_s, [0.05, 0.05, 0.05 + 0.016], rtol=1e-12)
    res = wb.simulate(tr, cfg.replace(max_paddings=1000), latency=step)
    assert list(res.steps.prefill_tokens[:1]) == [460]
    # the padded count, not the 460 real tokens, is held against the budget: 3 * 300 = 900 > 800
    res = wb.simulate(tr, cfg.replace(max_paddings=1000, max_num_batched_tokens=800), latency=step)
    assert list(res.steps.prefill_tokens[:2]) == [400, 60]


def test_a_preempted_request_over_the_prompt_limit_is_dropped_with_a_reason():
    """v0.2.3 ignores (FINISHED_IGNORED) a waiting request whose prompt + generated tokens exceed
    min(max_model_len, max_num_batched_tokens).  Budget 10 tokens, block_size 2, 10 blocks; A and B: prompt 8,
    8 tokens each (peak ceil(15 / 2) = 8 blocks: accepted).

    step 1 prefill A (4 blocks; two prompts would pad to 16 > 10); step 2 prefill B (4 blocks, 2 free);
    step 3 decode both (context 9: a block each, the last one taken by B, the last request); step 4 no block
    free: B preempted with 2 tokens (5 blocks freed); step 5 B's 10 tokens fit the budget: re-prefilled; step 6
    none free: B preempted with 3 tokens; step 7 B would need 8 + 3 = 11 > 10 tokens: dropped, reported."""
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.0))
    cfg = cfg_of(block_size=2, kv_blocks=10, max_num_batched_tokens=10, max_num_seqs=4)
    res = wb.simulate(trace_of([0.0, 0.0], [8, 8], [8, 8]), cfg, latency=step)
    assert list(res.status) == [0, 3]
    assert "dropped after preemption" in str(res.requests.status[1])
    assert res.summary["dropped"] == 1 and res.summary["completed"] == 1 and res.summary["rejected"] == 1
    assert list(res.requests.preemptions) == [0, 2]
    assert np.isnan(res.requests.e2e_s[1]) and not res.requests.met_sla[1]
    np.testing.assert_allclose(res.requests.ttft_s[1], 0.018 + 0.018, rtol=1e-12)
    assert list(res.steps.prefill_tokens[res.steps.prefill_requests > 0]) == [8, 8, 10]


def test_prompt_that_never_fits_is_rejected_with_a_reason():
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    cfg = cfg_of(block_size=4, kv_blocks=3)
    # peak blocks: ceil((13 + 1 - 1) / 4) = 4 > 3; ceil((4 + 9 - 1) / 4) = 3 fits; ceil((4 + 10 - 1) / 4) = 4
    res = wb.simulate(trace_of([0.0, 0.1, 0.2], [13, 4, 4], [1, 9, 10]), cfg, latency=step)
    assert list(res.status) == [STATUS_REJECTED_KV, 0, STATUS_REJECTED_KV]
    assert "KV-cache" in str(res.requests.status[0])
    assert res.summary["rejected"] == 2 and res.summary["completed"] == 1
    assert np.isnan(res.requests.ttft_s[0]) and res.requests.gpu[0] == -1 and not res.requests.met_sla[0]


def test_overheads_delay_joins_and_reported_tokens_not_steps():
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0),
                            arrival_overhead_s=(0.005, 0.001), token_overhead_s=0.0005)
    row = wb.simulate(trace_of([0.0], [10], [3]), cfg_of(), latency=step).requests.iloc[0]
    join = 0.005 + 0.001 * 10
    assert row.queue_s == pytest.approx(join)
    assert row.ttft_s == pytest.approx(join + 0.01 + 0.0005)
    assert row.e2e_s == pytest.approx(join + 0.01 + 2 * 0.002 + 3 * 0.0005)


def test_routers_spread_simultaneous_arrivals():
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0))
    tr = trace_of([0.0] * 4, [10] * 4, [3] * 4)
    for router in ("round_robin", "least_outstanding", "least_kv"):
        res = wb.simulate(tr, cfg_of(num_gpus=2, router=router), latency=step)
        assert sorted(res.requests.gpu) == [0, 0, 1, 1], router


def test_wrong_latency_model_for_the_engine():
    tr = trace_of([0.0], [10], [3])
    with pytest.raises(ValueError, match="StepTimeModel"):
        wb.simulate(tr, cfg_of(), latency=wb.LatencyModel.default())
    # a static scheduler given a StepTimeModel runs in step mode (issue: static and continuous judged alike)
    assert "ttft_s" in wb.simulate(tr, wb.SimConfig(scheduler="static_fifo"), latency=STEP2).requests
    try:
        from workbench.sim import profiles  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"latency=wb.StepTimeModel"):
            wb.simulate(tr, cfg_of())


@pytest.mark.parametrize("field,value,message", [
    ("max_num_seqs", 0, "max_num_seqs: must be an integer >= 1"),
    ("block_size", 2.5, "block_size: must be an integer"),
    ("kv_blocks", 0, "kv_blocks: must be an integer >= 1, or None"),
    ("router", "random", "router: unknown 'random'"),
    ("chunked_prefill", "yes", "chunked_prefill: must be True or False"),
    ("tpot_sla_s", 0.0, "tpot_sla_s: must be a finite number > 0"),
    ("ttft_sla_s", float("inf"), "ttft_sla_s: must be a finite number > 0"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        wb.SimConfig(**{field: value})
    with pytest.raises(ValueError, match="must be >= max_num_seqs"):
        wb.SimConfig(chunked_prefill=True, max_num_batched_tokens=8, max_num_seqs=16)
    help_text = wb.SimConfig.help()
    for name in ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "kv_blocks",
                 "router", "ttft_sla_s", "tpot_sla_s"):
        assert f"\n{name} (default" in help_text
    assert wb.SimConfig(block_size=16).kv_blocks_effective == wb.SimConfig().kv_capacity_tokens // 16


# ---------------------------------------------------------------- the independent reference
REF_STEP = dict(prefill=(0.012, 2e-5, 1e-8), decode=(0.006, 3e-7, 1e-4))


def conversation_hashes(trace, block_tokens, seed, n_system=3, n_conversations=25):
    """Prefix hashes like a chat service's: a system prompt, then a conversation's shared history, then the
    prompt's own partial block (each full block's hash names its tokens)."""
    rng = np.random.default_rng(seed)
    hashes = []
    for r, p in enumerate(trace.prompt_tokens):
        full = int(p) // block_tokens
        system, conversation = int(rng.integers(n_system)), int(rng.integers(n_conversations))
        chain = ([1000 + system] + [100_000 * (conversation + 1) + j for j in range(full - 1)])[:full]
        hashes.append(chain + ([10**9 + r] if p % block_tokens else []))
    return hashes


def assert_matches_reference(tr, cfg, step_kw=REF_STEP):
    kw = dict(replicas=cfg.num_gpus, router=cfg.router, chunked=cfg.chunked_prefill, max_num_seqs=cfg.max_num_seqs,
              max_num_batched_tokens=cfg.max_num_batched_tokens, block_size=cfg.block_size, kv_blocks=cfg.kv_blocks,
              watermark=cfg.kv_watermark, max_paddings=cfg.max_paddings, prefix_caching=cfg.prefix_caching,
              prefix_hashes=tr.prefix_hashes, prefix_block_tokens=tr.prefix_block_tokens,
              affinity_margin=cfg.prefix_affinity_margin, dp_lockstep=cfg.dp_lockstep)
    ref_step = {("large_threshold" if k == "decode_large_threshold" else k): v for k, v in step_kw.items()}
    ref = reference(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, **kw, **ref_step)
    res = wb.simulate(tr, cfg, latency=wb.StepTimeModel(**step_kw))
    c = res.continuous
    as_float = lambda xs: np.array([np.nan if x is None else x for x in xs])  # noqa: E731
    np.testing.assert_array_equal(c["replica"], ref["replica"])
    np.testing.assert_array_equal(c["preemptions"], ref["preemptions"])
    np.testing.assert_array_equal(c["cached_tokens"], ref["cached"])
    np.testing.assert_array_equal(res.status == STATUS_DROPPED, ref["dropped"])
    np.testing.assert_allclose(res.start_s, as_float(ref["sched"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c["first_token_step_end_s"], as_float(ref["first"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c["last_step_end_s"], as_float(ref["end"]), rtol=1e-9, atol=1e-12)
    return res


@pytest.mark.parametrize("chunked,replicas,router,kv_blocks,seed,caching", [
    (False, 1, "round_robin", 60, 0, False),
    (True, 1, "round_robin", 60, 1, False),
    (False, 3, "least_outstanding", 50, 2, False),
    (True, 2, "least_kv", 45, 3, False),
    (False, 2, "least_kv", 45, 6, False),
    (False, 2, "least_kv", 1000, 4, False),
    (True, 3, "round_robin", 1000, 5, False),
    (False, 1, "round_robin", 60, 0, True),
    (True, 1, "round_robin", 60, 1, True),
    (False, 3, "least_outstanding", 50, 2, True),
    (True, 2, "least_kv", 45, 3, True),
    (False, 2, "prefix_affinity", 1000, 4, True),
    (True, 3, "prefix_affinity", 1000, 5, True),
    (True, 2, "prefix_affinity", 80, 7, True),
    (False, 2, "prefix_affinity", 70, 8, True),
])
def test_engine_matches_the_step_by_step_reference(chunked, replicas, router, kv_blocks, seed, caching):
    tr = random_trace(300, seed, rate=60.0 * replicas)
    if caching:
        tr = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens,
                                  prefix_hashes=conversation_hashes(tr, 32, seed), prefix_block_tokens=32)
    block_size = 8 if seed % 2 == 0 else 12   # a power of two and not (12 straddles the 32-token hash blocks)
    cfg = cfg_of(num_gpus=replicas, router=router, chunked_prefill=chunked, max_num_seqs=12,
                 max_num_batched_tokens=400, block_size=block_size, kv_blocks=kv_blocks, prefix_caching=caching)
    res = assert_matches_reference(tr, cfg)
    if kv_blocks < 100:
        assert res.summary["preemptions_total"] > 0   # the case exercises preemption
    if caching:
        assert res.summary["prefix_hit_rate"] > 0.05


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 80), chunked=st.booleans(), replicas=st.integers(1, 3),
       router=st.sampled_from(tuple(ROUTER_NAMES)), block_size=st.sampled_from((1, 4, 8, 12)),
       kv_tokens=st.integers(100, 1500), max_num_seqs=st.integers(1, 12), caching=st.booleans(),
       watermark=st.sampled_from((None, 0.0, 0.05)), budget=st.integers(40, 500), hash_tokens=st.sampled_from((8, 32)))
def test_engine_matches_the_reference_everywhere(seed, n, chunked, replicas, router, block_size, kv_tokens,
                                                  max_num_seqs, caching, watermark, budget, hash_tokens):
    """Routers, chunking, preemption (tiny caches), drops (small budgets), watermarks and prefix caching at once."""
    if router == "prefix_affinity" and not caching:
        router = "least_outstanding"
    tr = random_trace(n, seed, rate=150.0, max_prompt=120, mean_out=12)
    if caching:
        tr = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens,
                                  prefix_hashes=conversation_hashes(tr, hash_tokens, seed, n_conversations=6),
                                  prefix_block_tokens=hash_tokens)
    cfg = cfg_of(num_gpus=replicas, router=router, chunked_prefill=chunked, max_num_seqs=max_num_seqs,
                 max_num_batched_tokens=max(budget, max_num_seqs), block_size=block_size,
                 kv_blocks=max(1, kv_tokens // block_size), prefix_caching=caching, kv_watermark=watermark,
                 max_paddings=64, prefix_affinity_margin=2)
    assert_matches_reference(tr, cfg)


# ---------------------------------------------------------------- invariants
@pytest.mark.filterwarnings("ignore::workbench.BinningWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), scheduler=st.sampled_from(CONTINUOUS),
       chunked=st.booleans(), replicas=st.integers(1, 3),
       router=st.sampled_from(("round_robin", "least_outstanding", "least_kv")),
       block_size=st.sampled_from((1, 4, 12, 16)), kv_tokens=st.integers(64, 4000), max_num_seqs=st.integers(1, 20))
def test_invariants(seed, n, scheduler, chunked, replicas, router, block_size, kv_tokens, max_num_seqs):
    tr = random_trace(n, seed, rate=100.0)
    kv_blocks = max(1, kv_tokens // block_size)
    cfg = cfg_of(scheduler=scheduler, num_gpus=replicas, router=router, chunked_prefill=chunked,
                 block_size=block_size, kv_blocks=kv_blocks, max_num_seqs=max_num_seqs,
                 max_num_batched_tokens=max(max_num_seqs, 200), k_bins=3, b_max=16)
    res = wb.simulate(tr, cfg, latency=wb.StepTimeModel(**REF_STEP))
    r, s = res.requests, res.summary
    done = r.status == "completed"
    # conservation: every request is completed or rejected with a reason, never both, never lost
    assert s["completed"] + s["rejected"] == n == len(r)
    peak = -(-(tr.prompt_tokens.astype(np.int64) + tr.output_tokens - 1) // block_size)
    prompt_blocks = -(-tr.prompt_tokens.astype(np.int64) // block_size)
    budget_ok = chunked | ((tr.prompt_tokens <= cfg.max_num_batched_tokens)
                           & (prompt_blocks <= kv_blocks - cfg.kv_watermark_blocks))
    dropped = r.status.cat.codes.to_numpy() == STATUS_DROPPED
    assert chunked or not dropped.any() or (r.preemptions[dropped] > 0).all()   # only preempted requests drop
    assert not (chunked and dropped.any())
    np.testing.assert_array_equal(done | dropped, (peak <= kv_blocks) & budget_ok)
    # causality per request
    assert np.all(r.queue_s[done] >= 0)
    assert np.all(r.ttft_s[done] > r.queue_s[done])
    assert np.all(r.ttft_s[done] <= r.e2e_s[done] + 1e-12)
    assert np.all(np.isnan(r.tpot_s[done]) == (r.output_tokens[done] == 1))
    assert np.all(r.gpu[done].between(0, replicas - 1))
    # memory and time, step by step, per replica
    steps = res.steps
    assert len(steps) > 0 or s["completed"] == 0
    assert np.all(steps["kv_blocks_used"] <= kv_blocks)
    assert np.all(steps["end_s"] > steps["start_s"])
    for _, per in steps.groupby("replica"):
        assert np.all(per["start_s"].to_numpy()[1:] >= per["end_s"].to_numpy()[:-1] - 1e-12)
        assert np.all(np.diff(per["start_s"].to_numpy()) >= 0)
    assert np.all(steps["decodes"] + steps["prefill_requests"] <= max_num_seqs)
    if s["makespan_s"] > 0:
        assert 0 <= s["kv_utilization_mean"] <= 1 and 0 <= s["gpu_utilization_mean"] <= 1 + 1e-9
    assert s["preemptions_total"] == r.preemptions.sum()


@pytest.mark.parametrize("scheduler,caching,chunked", [(s, False, False) for s in CONTINUOUS]
                         + [("continuous_fcfs", True, False), ("continuous_fcfs", True, True)])
def test_runs_of_decode_steps_equal_single_steps(scheduler, caching, chunked):
    """The event-saving runs of identical decode steps change nothing but the event count (with prefix caching
    too: shared prefix blocks counted once, kept tokens after preemption, the router's view of the cache)."""
    from dataclasses import replace

    from workbench.sim.schedulers import SCHEDULERS
    tr = random_trace(400, 11, rate=120.0)
    if caching:
        tr = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens,
                                  prefix_hashes=conversation_hashes(tr, 32, 11), prefix_block_tokens=32)
    cfg = cfg_of(scheduler=scheduler, num_gpus=2, router="prefix_affinity" if caching else "least_kv", block_size=8,
                 kv_blocks=200 if not caching else 120, max_num_seqs=24, b_max=24, tpot_sla_s=0.01, k_bins=3,
                 prefix_caching=caching, chunked_prefill=chunked, prefix_affinity_margin=3)
    step = wb.StepTimeModel(**REF_STEP)
    fast = wb.simulate(tr, cfg, latency=step)
    cls = SCHEDULERS[scheduler]
    original = cls.continuous_spec
    try:
        cls.continuous_spec = lambda self, c: replace(original(self, c), jumps=False)
        slow = wb.simulate(tr, cfg, latency=step)
    finally:
        cls.continuous_spec = original
    assert len(slow.steps) > len(fast.steps)
    assert fast.summary["engine_steps"] == slow.summary["engine_steps"]
    for key in ("ttft_s", "e2e_s", "queue_s"):
        np.testing.assert_allclose(fast.continuous[key], slow.continuous[key], rtol=1e-9)
    np.testing.assert_array_equal(fast.continuous["preemptions"], slow.continuous["preemptions"])
    np.testing.assert_array_equal(fast.continuous["replica"], slow.continuous["replica"])
    np.testing.assert_array_equal(fast.continuous["cached_tokens"], slow.continuous["cached_tokens"])
    if caching:
        assert fast.summary["preemptions_total"] > 0 and fast.summary["prefix_hit_rate"] > 0.05


def test_summary_metrics_by_hand():
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(ttft_sla_s=0.03, tpot_sla_s=0.01),
                      latency=STEP2)
    s = res.summary
    # makespan 0 -> 0.057; A: ttft 0.02 tpot 0.0185 (misses TPOT); B: ttft 0.049 (misses TTFT), tpot 0.004
    assert s["makespan_s"] == pytest.approx(0.057)
    assert s["throughput_tokens_per_s"] == pytest.approx(5 / 0.057)
    assert s["ttft_attainment"] == 0.5 and s["tpot_attainment"] == 0.5 and s["slo_attainment"] == 0.0
    assert s["goodput_rps"] == 0.0 and s["sla_violation_rate"] == 1.0
    assert s["ttft_mean_s"] == pytest.approx((0.02 + 0.049) / 2)
    assert s["e2e_p50_s"] == pytest.approx((0.057 + 0.053) / 2)
    # busy the whole makespan; KV: A holds 1 block from 0, B 2 blocks from 0.02 (block_size 16)
    assert s["gpu_utilization_mean"] == pytest.approx(1.0)
    blocks = cfg_of().kv_blocks_effective
    block_seconds = 1 * 0.02 + 3 * 0.03 + 3 * 0.004 + 1 * 0.003
    assert s["kv_utilization_mean"] == pytest.approx(block_seconds / (blocks * 0.057))


SCRIPT = """
import json, numpy as np, workbench as wb
rng = np.random.default_rng(3)
n = 800
arr = np.cumsum(rng.exponential(1/80, n)); arr -= arr[0]
tr = wb.Trace.from_arrays(arr, rng.integers(1, 500, n), rng.geometric(1/30, n), source="t")
step = wb.StepTimeModel(prefill=(0.012, 2e-5, 1e-8), decode=(0.006, 3e-7, 1e-4), decode_large=(0.01, 3e-7, 5e-5),
                        decode_large_threshold=8)
out = {}
for s in %r:
    for chunked in (False, True):
        r = wb.simulate(tr, wb.SimConfig(scheduler=s, num_gpus=2, k_bins=3, router="least_kv", block_size=8,
                                         kv_blocks=300, max_num_seqs=32, chunked_prefill=chunked), latency=step)
        c = r.continuous
        out[f"{s}/{chunked}"] = {k: c[k].tolist() for k in
                                 ("ttft_s", "e2e_s", "queue_s", "preemptions", "replica", "log_f", "log_i")}
hashes = [([7] + [1000 * (r %% 9) + j for j in range(p // 64)])[:p // 64] + ([10**6 + r] if p %% 64 else [])
          for r, p in enumerate(tr.prompt_tokens.tolist())]
cached = wb.Trace.from_arrays(arr, tr.prompt_tokens, tr.output_tokens, prefix_hashes=hashes, prefix_block_tokens=64)
for chunked in (False, True):
    r = wb.simulate(cached, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, router="prefix_affinity",
                                         prefix_caching=True, block_size=8, kv_blocks=300, max_num_seqs=32,
                                         chunked_prefill=chunked), latency=step)
    c = r.continuous
    out[f"cached/{chunked}"] = {k: c[k].tolist() for k in
                                ("ttft_s", "e2e_s", "preemptions", "replica", "cached_tokens", "log_i")}
r = wb.simulate(tr, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=3, router="least_outstanding", block_size=8,
                                 kv_blocks=300, max_num_seqs=32, chunked_prefill=True, dp_lockstep=True), latency=step)
out["lockstep"] = {k: r.continuous[k].tolist() for k in ("ttft_s", "e2e_s", "preemptions", "replica", "log_f", "log_i")}
print(json.dumps(out))
""" % (CONTINUOUS,)


def test_uncompiled_path_gives_the_same_results():
    """Every request's times, preemptions and replica and the step log, compiled and as plain Python: integers
    equal, times to 1e-9."""
    compiled = run_script_json(SCRIPT, disable_jit=False)
    assert any(sum(v["preemptions"]) for v in compiled.values())   # preemption is exercised
    assert sum(compiled["cached/True"]["cached_tokens"]) > 0 and sum(compiled["cached/False"]["cached_tokens"]) > 0
    assert_same_results(compiled, run_script_json(SCRIPT, disable_jit=True))


# ---------------------------------------------------------------- capacity under TTFT and TPOT limits
def test_capacity_slo_finds_the_largest_rate_meeting_both_limits():
    tr = random_trace(400, 21, rate=20.0, max_prompt=200, mean_out=15)
    step = wb.StepTimeModel(prefill=(0.01, 5e-5, 0.0), decode=(0.01, 1e-6, 2e-4))
    cfg = cfg_of(num_gpus=2)
    cap = wb.capacity(tr, cfg, criterion="slo", ttft_s=0.2, tpot_s=0.03, attainment=0.9, latency=step)
    assert cap.criterion == "slo" and cap.bounded
    at = wb.simulate(tr.time_scaled(cap.scaling), cfg.replace(ttft_sla_s=0.2, tpot_sla_s=0.03), latency=step)
    assert at.summary["slo_attainment"] >= 0.9 == cap.target
    above = wb.simulate(tr.time_scaled(cap.scaling_above), cfg.replace(ttft_sla_s=0.2, tpot_sla_s=0.03),
                        latency=step)
    assert above.summary["slo_attainment"] < 0.9
    assert cap.scaling_above / cap.scaling - 1 <= 0.01 + 1e-12


def test_capacity_slo_attainable_share_and_errors():
    # alone: ttft = 0.01 + 1e-3 * prompt, tpot = 0.01 + 1e-4 * (prompt + out / 2)
    step = wb.StepTimeModel(prefill=(0.01, 1e-3, 0.0), decode=(0.01, 1e-4, 0.0))
    tr = trace_of([0.0, 1.0, 2.0, 3.0], [10, 100, 10, 10], [2, 2, 300, 1])
    cfg = cfg_of(ttft_sla_s=0.05, tpot_sla_s=0.02)
    from workbench.study.runs.capacity import slo_attainable_share
    # request 1: ttft 0.11 > 0.05; request 2: tpot 0.01 + 1e-4 * 160 = 0.026 > 0.02; 0 and 3 meet both
    assert slo_attainable_share(tr, cfg, step) == 0.5
    with pytest.raises(wb.CapacityError, match="alone on an idle replica"):
        wb.capacity(tr, cfg, criterion="slo", attainment=0.9, latency=step)
    with pytest.raises(ValueError, match="needs latency=wb.StepTimeModel"):
        wb.capacity(tr, wb.SimConfig(), criterion="slo", latency=wb.LatencyModel.default())
    with pytest.raises(ValueError, match="criterion='slo'"):
        wb.capacity(tr, cfg, criterion="attainment", ttft_s=1.0, latency=step)


# ---------------------------------------------------------------- policies
def test_multi_bin_rounds_group_similar_lengths():
    # predicted (oracle) lengths: 0 and 2 long, 1 and 3 short; two sequences at a time.
    # FCFS runs {0, 1} then {2, 3}; multi-bin's first round is the bin of request 0: {0, 2}, then {1, 3}
    tr = trace_of([0.0, 0.0, 0.0, 0.0], [10, 10, 10, 10], [50, 3, 50, 3])
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0))
    kw = dict(max_num_seqs=2, predictor="oracle", k_bins=2)
    fcfs = wb.simulate(tr, cfg_of(**kw), latency=step).requests
    mb = wb.simulate(tr, cfg_of(scheduler="continuous_multi_bin", **kw), latency=step).requests
    assert list(fcfs.queue_s == 0) == [True, True, False, False]
    assert list(mb.queue_s == 0) == [True, False, True, False]
    assert list(mb.bin) == [1, 0, 1, 0]


def test_sla_controller_holds_the_decode_time_per_token():
    # decode step time 1 ms + 1 ms per request: the 11 ms target allows about 10 running requests
    rng = np.random.default_rng(5)
    n = 600
    tr = trace_of(np.sort(rng.uniform(0, 2.0, n)), np.full(n, 8), rng.integers(20, 60, n))
    step = wb.StepTimeModel(prefill=(0.001, 1e-5, 0.0), decode=(0.001, 0.0, 0.001))
    kw = dict(tpot_sla_s=0.011, b_min=1, b_max=64, max_num_seqs=64, ctrl_window=4)
    fcfs = wb.simulate(tr, cfg_of(**kw), latency=step)
    sla = wb.simulate(tr, cfg_of(scheduler="continuous_sla", **kw), latency=step)
    dec = sla.steps.query("decodes > 0 and prefill_requests == 0")
    settled = dec.iloc[len(dec) // 4:]
    step_s = (settled.end_s - settled.start_s) / settled.steps
    assert 0.008 <= step_s.mean() <= 0.014
    assert 7 <= settled.decodes.median() <= 13
    assert fcfs.steps.decodes.max() == 64   # without the controller the batch fills up
    assert sla.summary["tpot_mean_s"] < fcfs.summary["tpot_mean_s"]


def test_capacity_of_a_continuous_scheduler_needs_the_slo_criterion():
    with pytest.raises(ValueError, match="criterion='slo'"):
        wb.capacity(random_trace(20, 1), cfg_of(), latency=STEP2, criterion="attainment")
    # which is the default with a step-time model (issue 20: the library's defaults are the suite's)
    assert wb.capacity(random_trace(20, 1), cfg_of(), latency=STEP2).criterion == "slo"


def test_one_sequence_at_a_time_is_an_m_d_1_queue():
    """max_num_seqs=1 on one replica serves requests one by one: with Poisson arrivals and a constant
    service time S (prefill + (out - 1) decode steps), the mean wait is Pollaczek-Khinchine's
    rho S / (2 (1 - rho))."""
    rng = np.random.default_rng(12)
    n, rho = 20_000, 0.7
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.004, 0.0, 0.001))
    service_s = 0.01 + 1e-4 * 100 + 9 * 0.005
    arrival = np.cumsum(rng.exponential(service_s / rho, n))
    tr = trace_of(arrival - arrival[0], np.full(n, 100), np.full(n, 10))
    res = wb.simulate(tr, cfg_of(max_num_seqs=1), latency=step)
    np.testing.assert_allclose(res.requests.e2e_s - res.requests.queue_s, service_s, rtol=1e-9)
    theory = rho * service_s / (2 * (1 - rho))
    assert res.requests.queue_s.mean() == pytest.approx(theory, rel=0.08)
