"""The disaggregated engine with step tables (kernel profiles, roofline; workbench/sim/steptable.py): hand-computed
cases on a table written by hand, every logged step priced by hand, the skew correction of a lane whose contexts
differ, the engine against the step-by-step replay, invariants, grids, and simulate() end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import workbench as wb
from workbench.sim import disagg
from workbench.sim.disagg_steplog import replay_disagg
from workbench.sim.steptable import SkewTable, StepTable

from test_disagg import assert_engine_matches_replay, random_settings as linear_settings

# A table written by hand (not StepTable.from_linear): seconds of a step of prefill pieces l_i and decodes of
# contexts ctx_j, n of them:
#   max(0.01 if pieces, 0.02 if decodes) + 1e-4 x (sum(l) + n) + 2e-3 x (pieces + n) + 1e-8 x sum(l^2)
#   + 1e-6 x sum(ctx)
# the token and sequence parts as 1-D tables, the decode attention as nd x kv_mean on a 4-D grid (multilinear
# interpolation of a bilinear function is exact); with SKEW, plus 0.5 x (attention at the longest context -
# attention at the mean) = 0.5e-6 x n x (max(ctx) - mean(ctx)) for n >= 2.
TOKEN_S, SEQ_S, QUAD_S, CTX_S = 1e-4, 2e-3, 1e-8, 1e-6
FIXED_P, FIXED_D = 0.01, 0.02
ALPHA = 0.5


def hand_table(*, skew: bool = False, max_context: float = 1e5, extrapolate: bool = False) -> StepTable:
    pc, kp, nd, kv = [0.0, 1e4], [0.0, 1.0], [0.0, 1000.0], [0.0, max_context]
    attention = np.zeros((2, 2, 2, 2))
    for k, n in enumerate(nd):
        for m, x in enumerate(kv):
            attention[:, :, k, m] = CTX_S * n * x
    sk = None
    if skew:
        sk = SkewTable(pc_values=[0.0], n_edges=[0.0, 1e6], rate_edges=[-0.01, 1.01], kv_max_edges=[0.0, 1e9],
                       kp_edges=[-1.0, 1e9], alpha=np.full((1, 1, 1, 1, 1), ALPHA), alpha_default=ALPHA)
    return StepTable(token_grid=[0.0, 1e4], token_s=[0.0, 1e4 * TOKEN_S], seq_grid=[0.0, 1e3],
                     seq_s=[0.0, 1e3 * SEQ_S], pc_grid=pc, kp_grid=kp, nd_grid=nd, kv_grid=kv, attention_s=attention,
                     prefill_quad_s=QUAD_S, fixed_prefill_s=FIXED_P, fixed_decode_s=FIXED_D, skew=sk,
                     extrapolate=extrapolate, kind="kernel-profile", source="written by hand for these tests")


def hand_prefill_s(lengths) -> float:
    l = np.asarray(lengths, dtype=float)
    return FIXED_P + TOKEN_S * l.sum() + SEQ_S * l.size + QUAD_S * (l * l).sum()


def hand_decode_s(contexts, skew: bool = False) -> float:
    c = np.asarray(contexts, dtype=float)
    n = c.size
    t = FIXED_D + TOKEN_S * n + SEQ_S * n + CTX_S * c.sum()
    if skew and n >= 2:
        t += ALPHA * CTX_S * n * (c.max() - c.mean())
    return t


def model(table: StepTable, **fields) -> wb.StepTimeModel:
    # the coefficients only summarise the table (descriptions, warnings); deliberately far from it, so a pool that
    # priced its steps from them instead of the table would fail every comparison below
    return wb.StepTimeModel(prefill=(0.5, 0.0, 0.0), decode=(0.5, 0.0, 0.0), table=table, name="hand table",
                            **fields)


TABLE = model(hand_table())
SKEWED = model(hand_table(skew=True))
# 1000 bytes of KV per token over 8 Gbit/s (1e9 bytes/s) after a 1 ms latency
HAND = dict(scheduler="disaggregated", model_mem_gb=1.0, kv_gb_per_token=1e-6, gpu_mem_gb=10.0,
            gpu_memory_utilization=1.0, mem_margin_gb=0.0, kv_link_gbps=8.0, kv_link_latency_s=0.001,
            ttft_sla_s=1.0, tpot_sla_s=0.5)


def xfer_s(prompt):
    return 0.001 + prompt * 1000 / 1e9


def sim(arrival, prompt, output, latency=TABLE, **fields):
    trace = wb.Trace.from_arrays(np.asarray(arrival, float), np.asarray(prompt), np.asarray(output))
    return wb.simulate(trace, wb.SimConfig(**{**HAND, **fields}), latency=latency)


# ------------------------------------------------------------------ hand-computed cases
def test_the_table_prices_as_written_by_hand():
    # the table against its own formula (so the cases below test the engine, not the table)
    for pieces, contexts in (([100], []), ([100, 50], []), ([], [101]), ([], [101, 301, 7])):
        for skew, m in ((False, TABLE), (True, SKEWED)):
            want = hand_prefill_s(pieces) if pieces else hand_decode_s(contexts, skew)
            assert m.step_time_s(pieces, None, contexts) == pytest.approx(want, rel=1e-12)


def test_one_request_prefill_transfer_decode_by_hand():
    r = sim([0.0], [100], [3]).requests.iloc[0]
    prefill = FIXED_P + TOKEN_S * 100 + SEQ_S + QUAD_S * 100 ** 2            # 0.0321 s: the first token
    end = prefill + xfer_s(100) + hand_decode_s([101]) + hand_decode_s([102])
    assert r.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert r.e2e_s == pytest.approx(end, rel=1e-12)


def test_two_prompts_in_one_prefill_step_are_two_pieces():
    # the step's price counts its prompts (the sequence part) and their squares separately, not one 150-token prompt
    res = sim([0.0, 0.0], [100, 50], [2, 2])
    a, b = res.requests.iloc[0], res.requests.iloc[1]
    first = FIXED_P + TOKEN_S * 150 + 2 * SEQ_S + QUAD_S * (100 ** 2 + 50 ** 2)
    assert a.ttft_s == pytest.approx(first, rel=1e-12) and b.ttft_s == pytest.approx(first, rel=1e-12)
    end = first + xfer_s(100) + xfer_s(50) + hand_decode_s([101, 51])
    assert a.e2e_s == pytest.approx(end, rel=1e-12) and b.e2e_s == pytest.approx(end, rel=1e-12)
    assert res.summary["prefill_steps"] == 1 and res.summary["decode_steps"] == 1


@pytest.mark.parametrize("skewed", [False, True])
def test_a_lane_of_different_contexts_gets_the_skew_corrected_price(skewed):
    # A (prompt 100) and B (prompt 300) share one prefill step and one decode lane for their last two tokens:
    # contexts (101, 301) then (102, 302); with the skew table each step costs 0.5e-6 x 2 x (301 - 201) more
    m = SKEWED if skewed else TABLE
    res = sim([0.0, 0.0], [100, 300], [3, 3], latency=m)
    first = hand_prefill_s([100, 300])
    steps = [m.step_time_s(context_lengths=[101, 301]), m.step_time_s(context_lengths=[102, 302])]
    assert steps[0] == pytest.approx(hand_decode_s([101, 301], skew=skewed), rel=1e-12)
    if skewed:   # the correction: alpha x (attention at 301 - attention at the mean 201) = 0.5 x 1e-6 x 2 x 100
        assert steps[0] - hand_decode_s([101, 301]) == pytest.approx(1e-4, rel=1e-9)
    end = first + xfer_s(100) + xfer_s(300) + sum(steps)
    np.testing.assert_allclose(res.requests.e2e_s, [end, end], rtol=1e-12)


def test_the_lane_follows_its_longest_context_when_it_leaves():
    # one lane, one series of decode steps each: A (prompt 300, 3 tokens) leaves after 2 steps; then B (100) and
    # C (50) decode on: the longest context is B's from then on (the lane's span recomputed)
    res = sim([0.0, 0.0, 0.0], [300, 100, 50], [3, 6, 6], latency=SKEWED)
    start = hand_prefill_s([300, 100, 50]) + xfer_s(300) + xfer_s(100) + xfer_s(50)
    a_end = start + sum(hand_decode_s([301 + i, 101 + i, 51 + i], skew=True) for i in range(2))
    c_end = a_end + sum(hand_decode_s([103 + i, 53 + i], skew=True) for i in range(3))
    np.testing.assert_allclose(res.requests.e2e_s, [a_end, c_end, c_end], rtol=1e-12)
    assert res.summary["decode_steps"] == 5


def test_pipelined_decode_splits_a_table_step_into_stages():
    o = 0.004
    res = sim([0.0, 0.0], [100, 100], [3, 3], latency=model(hand_table(), pipeline_overhead_s=o), decode_pp=2)
    a, b = res.requests.iloc[0], res.requests.iloc[1]

    def tau(ctx):   # a stage: (step - o) / 2 + o
        return (hand_decode_s([ctx]) - o) / 2 + o

    t0 = hand_prefill_s([100, 100]) + 2 * xfer_s(100)
    assert a.e2e_s == pytest.approx(t0 + 2 * tau(101) + 2 * tau(102), rel=1e-12)
    assert b.e2e_s == pytest.approx(t0 + 2 * tau(101) + 3 * tau(102), rel=1e-12)


def test_each_pool_is_linear_or_a_table_independently():
    linear = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.02, 1e-4, 1e-3))
    trace = ([0.0], [100], [3])
    mixed = sim(*trace, latency={"prefill": linear, "decode": TABLE}).requests.iloc[0]
    first = 0.01 + 0.001 * 100
    assert mixed.ttft_s == pytest.approx(first, rel=1e-12)
    assert mixed.e2e_s == pytest.approx(first + xfer_s(100) + hand_decode_s([101]) + hand_decode_s([102]), rel=1e-12)
    other = sim(*trace, latency={"prefill": TABLE, "decode": linear}).requests.iloc[0]
    decode = (0.02 + 1e-4 * 101 + 1e-3) + (0.02 + 1e-4 * 102 + 1e-3)
    assert other.e2e_s == pytest.approx(hand_prefill_s([100]) + xfer_s(100) + decode, rel=1e-12)


# ------------------------------------------------------------------ every logged step priced by hand
def random_settings(rng, prefill_table, decode_table):
    """tests/test_disagg.py's random deployments, the pools priced by these tables (None: its coefficients; a
    pool priced by a table gets coefficients far from it, which must not be used)."""
    s = linear_settings(rng)
    if prefill_table is not None:
        s = dataclasses.replace(s, prefill_table=prefill_table, prefill_coef=(0.5, 0.0, 0.0))
    if decode_table is not None:
        s = dataclasses.replace(s, decode_table=decode_table, decode_coef=(0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 2**62))
    return s


def random_requests(rng, n, span):
    arrival = np.sort(rng.uniform(0, span, n))
    return arrival, rng.integers(1, 200, n), rng.integers(1, 80, n)


@pytest.mark.parametrize("skew", [False, True])
def test_every_logged_step_is_priced_as_written_by_hand(skew):
    rng = np.random.default_rng(11 + skew)
    arrival, prompt, output = random_requests(rng, 150, 1.0)
    table = hand_table(skew=skew)
    s = dataclasses.replace(random_settings(rng, table, table), decode_pp=1, decode_replicas=1,
                            decode_max_batch_size=12, prefill_replicas=1, prefill_max_batch_size=6)
    ref = assert_engine_matches_replay(arrival, prompt, output, s)
    log = replay_disagg(arrival, prompt, output, s, record_membership=True)
    # prefill rows (instance, start, end, requests, sum_l, sum_l2): the prompts of the step, by hand
    assert len(log.prefill_steps) > 10 and (log.prefill_steps[:, 3] > 1).sum() > 5   # steps of several prompts
    for _, start, end, count, sum_l, sum_l2 in log.prefill_steps:
        want = FIXED_P + TOKEN_S * sum_l + SEQ_S * count + QUAD_S * sum_l2
        assert end - start == pytest.approx(want, rel=1e-12, abs=1e-15)
    # decode rows: the contexts of the step's requests from the log alone (prompt + tokens so far: one from the
    # prefill, one per earlier decode step the request was in)
    contexts = [[] for _ in range(len(log.decode_steps))]
    for r, rows in enumerate(log.decode_steps_of):
        for i, row in enumerate(rows):
            contexts[row].append(prompt[r] + 1 + i)
    assert max(len(c) for c in contexts) >= 2
    spread = 0
    for (_, _, launch, end, n, sum_ctx), ctx in zip(log.decode_steps, contexts):
        assert len(ctx) == n and sum(ctx) == sum_ctx
        spread += max(ctx) > min(ctx)
        assert end - launch == pytest.approx(hand_decode_s(ctx, skew=skew), rel=1e-12)
    assert spread > 10     # lanes of different contexts were priced (with their skew correction when on)
    np.testing.assert_array_equal(log.finish_s, ref.finish_s)


# ------------------------------------------------------------------ the engine against the replay, invariants
@st.composite
def tables(draw):
    """Random tables on small grids, non-decreasing on every axis (extrapolating), with or without a skew
    correction."""
    def grid(n, top):
        return np.concatenate([[0.0], np.cumsum(draw(st.lists(st.floats(1.0, top), min_size=n - 1,
                                                              max_size=n - 1)))])
    sizes = [draw(st.integers(2, 3)) for _ in range(4)]
    pc, kp, nd, kv = (grid(n, top) for n, top in zip(sizes, (500.0, 1.0, 16.0, 300.0)))
    values = np.array(draw(st.lists(st.floats(0.0, 1e-3), min_size=int(np.prod(sizes)),
                                    max_size=int(np.prod(sizes))))).reshape(sizes)
    for axis in range(4):   # non-decreasing along every axis: extrapolated steps stay > 0
        values = np.cumsum(values, axis=axis)
    sk = None
    if draw(st.booleans()):
        alpha = np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=8, max_size=8))).reshape(1, 2, 2, 2, 1)
        sk = SkewTable(pc_values=[0.0], n_edges=[0, 4, 1e6], rate_edges=[-0.01, 0.3, 1.01],
                       kv_max_edges=[0, float(draw(st.integers(20, 300))), 1e9], kp_edges=[-1, 1e9],
                       alpha=alpha, alpha_default=0.1)
    return StepTable(token_grid=grid(3, 300.0), token_s=np.cumsum(draw(st.lists(st.floats(0.0, 1e-3), min_size=3,
                                                                                max_size=3))),
                     seq_grid=[0.0, 20.0], seq_s=[0.0, 1e-4], pc_grid=pc, kp_grid=kp, nd_grid=nd, kv_grid=kv,
                     attention_s=values, skew=sk, extrapolate=True, prefill_quad_s=draw(st.floats(0.0, 1e-8)),
                     fixed_prefill_s=draw(st.floats(1e-3, 1e-2)), fixed_decode_s=draw(st.floats(1e-3, 1e-2)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 80), span=st.floats(0.05, 2.0), prefill=tables(),
       decode=tables(), which=st.sampled_from(["both", "prefill", "decode"]))
def test_engine_matches_the_replay_with_tables(seed, n, span, prefill, decode, which):
    rng = np.random.default_rng(seed)
    arrival, prompt, output = random_requests(rng, n, span)
    s = random_settings(rng, prefill if which != "decode" else None, decode if which != "prefill" else None)
    assert_engine_matches_replay(arrival, prompt, output, s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), prefill=tables(), decode=tables(),
       pp=st.sampled_from([1, 2]), blocks=st.integers(3, 40))
def test_every_request_completes_or_is_rejected_with_a_reason(seed, n, prefill, decode, pp, blocks):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, rng.uniform(0.05, 3), n))
    prompt, output = rng.integers(1, 300, n), rng.integers(1, 60, n)
    trace = wb.Trace.from_arrays(arrival, prompt, output)
    cfg = wb.SimConfig(**{**HAND, "block_size": 16, "decode_kv_blocks": blocks, "prefill_max_tokens": 256,
                          "decode_pp": pp, "decode_max_batch_size": int(rng.integers(1, 16)),
                          "ttft_sla_s": 0.05, "tpot_sla_s": 0.01})   # (limits at the tables' scale)
    res = wb.simulate(trace, cfg, latency={"prefill": model(prefill), "decode": model(decode)})
    req = res.requests
    status = req.status.astype(str)
    done = (status == "completed").to_numpy()
    assert np.all(done | status.str.startswith("rejected: ").to_numpy())
    assert res.summary["completed"] + res.summary["rejected"] == n
    assert np.all(np.isfinite(req.e2e_s[done])) and np.all(np.isnan(req.e2e_s[~done]))
    assert np.all(req.ttft_s[done] <= req.e2e_s[done] + 1e-12)
    assert np.all(req.ttft_s[done] > 0)


# ------------------------------------------------------------------ grids, gradients, simulate() end to end
def test_steps_outside_a_grid_are_refused_after_the_run_naming_the_pool():
    narrow = model(hand_table(max_context=150.0))
    with pytest.raises(ValueError, match=r"decode pool on this trace formed steps outside the kernel-profile "
                                         r"table's grid: decode context \(tokens\) up to 159, the grid ends at 150"):
        sim([0.0], [140], [20], latency={"prefill": TABLE, "decode": narrow})
    # an extrapolating table runs (and logs how far)
    wide = model(hand_table(max_context=150.0, extrapolate=True))
    res = sim([0.0], [140], [20], latency={"prefill": TABLE, "decode": wide})
    assert res.requests.e2e_s.iloc[0] == pytest.approx(
        hand_prefill_s([140]) + xfer_s(140) + sum(hand_decode_s([c]) for c in range(141, 160)), rel=1e-12)


def test_replay_with_gradients_refuses_a_table():
    s = disagg.settings_of(wb.SimConfig(**HAND), TABLE, TABLE)
    with pytest.raises(ValueError, match="gradients=True: .* prefill pool is priced by a step table"):
        replay_disagg([0.0], [10], [3], s, gradients=True)


def test_slo_attainable_share_prices_a_request_alone_from_the_tables():
    trace = wb.Trace.from_arrays([0.0, 0.0], [100, 2000], [11, 11])
    # alone: TTFT = the prefill step of the prompt; TPOT = a decode step at prompt + 5.5 plus the transfer / 10
    ttft = [hand_prefill_s([100]), hand_prefill_s([2000])]
    tpot = [hand_decode_s([105.5]) + xfer_s(100) / 10, hand_decode_s([2005.5]) + xfer_s(2000) / 10]
    assert ttft[0] < 0.1 < ttft[1] and tpot[0] < 0.023 < tpot[1]
    cfg = wb.SimConfig(**{**HAND, "ttft_sla_s": 0.1, "tpot_sla_s": 0.023})
    assert disagg.slo_attainable_share(trace, cfg, TABLE, TABLE) == 0.5
    assert disagg.slo_attainable_share(trace, cfg.replace(tpot_sla_s=tpot[1] * 1.001), TABLE, TABLE) == 0.5
    assert disagg.slo_attainable_share(trace, cfg.replace(ttft_sla_s=ttft[1] * 1.001), TABLE, TABLE) == 0.5
    assert disagg.slo_attainable_share(trace, cfg.replace(tpot_sla_s=tpot[0] * 0.999), TABLE, TABLE) == 0.0
    assert disagg.slo_attainable_share(trace, cfg.replace(ttft_sla_s=ttft[1] * 1.001, tpot_sla_s=tpot[1] * 1.001),
                                       TABLE, TABLE) == 1.0


def test_rooflines_and_profile_names_run_end_to_end():
    trace = wb.Trace.from_arrays([0.0, 0.05, 0.1, 0.3], [100, 2000, 50, 800], [20, 5, 40, 10])
    cfg = wb.SimConfig(scheduler="disaggregated", prefill_tp=2, decode_tp=1, model="opt-13b", gpu_mem_gb=80)
    roofline = wb.StepTimeModel.roofline("opt-13b", "a100-80gb", tp=2)
    res = wb.simulate(trace, cfg, latency={"prefill": roofline, "decode": "opt-13b@a100-80gb"})
    assert res.pool_latency["prefill"].kind == res.pool_latency["decode"].kind == "roofline"
    req = res.requests
    assert (req.status.astype(str) == "completed").all() and (req.ttft_s <= req.e2e_s).all()
    # the first request is prefilled alone on an idle instance: its TTFT is the roofline's price of its prompt
    assert req.ttft_s.iloc[0] == pytest.approx(roofline.prefill_time_s([100]) + roofline.token_overhead_s, rel=1e-9)
    # the same name resolves to the same tables
    again = wb.simulate(trace, cfg, latency="opt-13b@a100-80gb")
    np.testing.assert_allclose(again.requests.e2e_s, req.e2e_s, rtol=1e-12)
