"""Step tables (workbench.sim.steptable): exactness, the decode-run closed form, monotonicity, and the engines
with a table against the same engines with the plain linear model it encodes."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.paths import REPO_ROOT
from workbench.sim.steptable import SkewTable, StepTable, decode_run_py, step_time_py

PLAIN = wb.StepTimeModel(prefill=(0.02, 1.4e-4, 8e-9), decode=(0.023, 5.9e-7, 6e-5), name="plain")
TABLED = replace(PLAIN, table=StepTable.from_linear(PLAIN.prefill, PLAIN.decode), name="plain as a table")
PRO6000_LLAMA = (REPO_ROOT / "data" / "groundtruth" / "llmservingsim_vllm019" / "kernel_profiles" / "RTXPRO6000"
                 / "meta-llama" / "Llama-3.1-8B" / "bf16")


def test_linear_table_prices_steps_as_the_linear_model():
    for args in (([100, 50], [0, 20], [300, 400, 500]), ([7], None, ()), ((), None, [10, 2000])):
        assert TABLED.step_time_s(*args) == pytest.approx(PLAIN.step_time_s(*args), rel=1e-12)
    # by hand: one 100-token piece after 0, decodes of 300 and 500: max(a_p, a_d) = 0.023,
    # 1.4e-4 x 100 + 8e-9 x 100 x 100 + 5.9e-7 x 800 + 6e-5 x 2
    assert TABLED.step_time_s([100], [0], [300, 500]) == pytest.approx(
        0.023 + 0.014 + 8e-5 + 4.72e-4 + 1.2e-4, rel=1e-12)


# ---------------------------------------------------------------- random tables (hypothesis)
def _grid(draw, n, top):
    steps = draw(st.lists(st.floats(1.0, top), min_size=n - 1, max_size=n - 1))
    return np.concatenate([[0.0], np.cumsum(steps)])


@st.composite
def tables(draw, monotone=False, skew=True):
    sizes = [draw(st.integers(2, 4)) for _ in range(4)]
    pc, kp, nd, kv = (_grid(draw, n, top) for n, top in zip(sizes, (500.0, 4000.0, 64.0, 4000.0)))
    values = np.array(draw(st.lists(st.floats(0.0, 1e-3), min_size=int(np.prod(sizes)),
                                    max_size=int(np.prod(sizes))))).reshape(sizes)
    if monotone:   # non-decreasing along every axis
        for axis in range(4):
            values = np.cumsum(values, axis=axis)
    tok = _grid(draw, 3, 3000.0) + 1
    tok_s = np.cumsum(draw(st.lists(st.floats(0.0, 1e-3), min_size=3, max_size=3)))
    sk = None
    if skew and draw(st.booleans()):
        alpha = np.array(draw(st.lists(st.floats(-0.5, 2.0), min_size=8, max_size=8))).reshape(1, 2, 2, 2, 1)
        sk = SkewTable(pc_values=[0.0], n_edges=[0, 4, 1e6], rate_edges=[-0.01, 0.3, 1.01],
                       kv_max_edges=[0, float(draw(st.integers(20, 3000))), 1e9], kp_edges=[-1, 1e9],
                       alpha=alpha, alpha_default=0.1)
    return StepTable(token_grid=tok, token_s=tok_s, seq_grid=[0.0, 300.0], seq_s=[0.0, 1e-4], pc_grid=pc,
                     kp_grid=kp, nd_grid=nd, kv_grid=kv, attention_s=values, skew=sk, extrapolate=True,
                     fixed_decode_s=draw(st.floats(0.0, 1e-2)))


@settings(max_examples=150, deadline=None)
@given(tables(), st.integers(1, 40), st.integers(1, 5000), st.integers(0, 3000), st.integers(0, 3000))
def test_decode_run_closed_form_is_the_step_by_step_sum(table, n, shortest, spread, extra):
    """Step i of a run (every context i tokens longer) costs e + f i, for i < k_max, exactly as the step
    priced on its own: so k steps in one event (k e + f k (k - 1) / 2) are the sum of the k steps."""
    kv_min = shortest
    kv_max = shortest + spread
    if n == 1:
        kv_max = kv_min
    ctx = kv_min + kv_max + (n - 2) * kv_min + min(extra * (n - 2), (n - 2) * spread) if n >= 2 else kv_min
    tf, ti = table.pack(64)
    e, f, k = decode_run_py(tf, ti, n, ctx, kv_max, kv_min)
    assert k >= 1
    total = 0.0
    for i in range(min(k, 60)):
        step = step_time_py(tf, ti, 0, 0, 0, 0.0, n, float(ctx + n * i), float(kv_max + i), float(kv_min + i))
        assert e + f * i == pytest.approx(step, rel=1e-9, abs=1e-15)
        total += step
    m = min(k, 60)
    assert m * e + f * m * (m - 1) / 2 == pytest.approx(total, rel=1e-9, abs=1e-14)


@settings(max_examples=150, deadline=None)
@given(tables(monotone=True, skew=False), st.integers(1, 2000), st.integers(0, 2000), st.integers(1, 30),
       st.integers(1, 4000), st.integers(1, 500))
def test_step_time_grows_with_tokens_and_contexts(table, prompt, history, n, context, more):
    """Grid values non-decreasing along every axis (and no skew correction, whose buckets jump): a step never
    gets cheaper with more prompt tokens, more cached context, or longer decode contexts."""
    tf, ti = table.pack(64)

    def t(l, p, ctx):
        return step_time_py(tf, ti, l, 1 if l else 0, p, float(l * (p + l)), len(ctx), float(sum(ctx)),
                            float(max(ctx, default=0)), float(min(ctx, default=0)))

    base = [context] * n
    assert t(prompt + more, history, base) >= t(prompt, history, base) - 1e-15
    assert t(prompt, history + more, base) >= t(prompt, history, base) - 1e-15
    assert t(prompt, history, [c + more for c in base]) >= t(prompt, history, base) - 1e-15
    assert t(0, 0, [c + more for c in base]) >= t(0, 0, base) - 1e-15


def test_bad_tables_are_refused():
    ok = dict(token_grid=[1.0, 2.0], token_s=[0.0, 1e-3], seq_grid=[1.0], seq_s=[0.0], pc_grid=[0.0, 1.0],
              kp_grid=[0.0], nd_grid=[0.0, 1.0], kv_grid=[0.0, 1.0], attention_s=np.zeros((2, 1, 2, 2)))
    StepTable(**ok)
    with pytest.raises(ValueError, match="token_grid: grid values must increase strictly"):
        StepTable(**{**ok, "token_grid": [2.0, 1.0]})
    with pytest.raises(ValueError, match=r"attention_s: expected an array of shape \(2, 1, 2, 2\)"):
        StepTable(**{**ok, "attention_s": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="seconds >= 0"):
        StepTable(**{**ok, "token_s": [0.0, -1.0]})
    with pytest.raises(ValueError, match="decode_large"):
        wb.StepTimeModel(prefill=(0.01, 0, 0), decode=(0.01, 0, 0), decode_large=(0.01, 0, 0),
                         decode_large_threshold=4, table=StepTable(**ok))


# ---------------------------------------------------------------- the engines: table path vs plain path
def _quiet_simulate(trace, cfg, latency):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wb.simulate(trace, cfg, latency=latency)


@pytest.mark.parametrize("settings_", [
    dict(scheduler="continuous_fcfs", num_gpus=3),
    dict(scheduler="continuous_fcfs", num_gpus=2, chunked_prefill=True, max_num_batched_tokens=2048,
         max_num_seqs=64, kv_blocks=2000, router="least_kv"),
    dict(scheduler="continuous_sla", num_gpus=2, chunked_prefill=True, max_num_batched_tokens=4096),
    dict(scheduler="continuous_multi_bin", num_gpus=2, k_bins=3),
])
def test_continuous_engine_table_path_equals_plain_path(settings_):
    trace = wb.load_trace(num_requests=3000).time_scaled(0.05)
    cfg = wb.SimConfig(**settings_)
    a = _quiet_simulate(trace, cfg, PLAIN)
    b = _quiet_simulate(trace, cfg, TABLED)
    for key in ("ttft_s", "tpot_s", "e2e_s", "queue_s"):
        x, y = a.continuous[key], b.continuous[key]
        assert np.array_equal(np.isnan(x), np.isnan(y))
        ok = ~np.isnan(x)
        assert np.allclose(y[ok], x[ok], rtol=1e-9, atol=1e-12), key
    assert a.summary["engine_steps"] == b.summary["engine_steps"]
    assert a.summary["preemptions_total"] == b.summary["preemptions_total"]


def test_continuous_engine_with_prefix_caching_table_equals_plain():
    trace = wb.load_trace("mooncake_synthetic").head(600)
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, chunked_prefill=True, prefix_caching=True,
                       router="prefix_affinity", max_num_batched_tokens=8192, kv_blocks=20000)
    a = _quiet_simulate(trace, cfg, PLAIN)
    b = _quiet_simulate(trace, cfg, TABLED)
    assert np.allclose(b.continuous["e2e_s"], a.continuous["e2e_s"], rtol=1e-9)
    assert a.summary["prefix_hit_rate"] == b.summary["prefix_hit_rate"] > 0


@pytest.mark.parametrize("scheduler", ["multi_bin_dynamic", "static_fifo"])
def test_static_step_mode_table_equals_plain(scheduler):
    trace = wb.load_trace(num_requests=3000).time_scaled(0.05)
    cfg = wb.SimConfig(scheduler=scheduler, num_gpus=2)
    a = _quiet_simulate(trace, cfg, PLAIN)
    b = _quiet_simulate(trace, cfg, TABLED)
    for key in ("ttft_s", "e2e_s"):
        assert np.allclose(b.continuous[key], a.continuous[key], rtol=1e-9, atol=1e-12)


def test_static_step_mode_prices_a_batch_from_the_kernel_table():
    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    trace = wb.Trace.from_arrays([0.0, 0.0], [300, 500], [3, 2])
    res = _quiet_simulate(trace, wb.SimConfig(scheduler="static_fifo", batch_size=2), m)
    # one prefill of both prompts, then lock-step decodes: the longest output (3) needs 2 decode steps of
    # 2 requests at contexts (301, 501) and (302, 502); the first token at the prefill's end
    prefill = m.step_time_s([300, 500], [0, 0], [])
    d1, d2 = m.decode_time_s([301, 501]), m.decode_time_s([302, 502])
    assert res.continuous["ttft_s"] == pytest.approx([prefill, prefill], rel=1e-9)
    assert res.continuous["e2e_s"] == pytest.approx([prefill + d1 + d2, prefill + d1], rel=1e-9)


def test_runs_of_decode_steps_equal_single_steps_with_a_kernel_table(monkeypatch):
    """The continuous engine's runs of decode steps (one event for k steps, the table's closed form) give the
    same times as simulating every decode step as its own event, with a kernel-profile table and its skew."""
    from workbench.sim.schedulers import continuous_fcfs

    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    assert m.table.skew is not None
    trace = wb.load_trace(num_requests=1500).time_scaled(0.3)
    trace = wb.Trace.from_arrays(trace.arrival_s, np.minimum(trace.prompt_tokens, 4000),
                                 np.minimum(trace.output_tokens, 1000))
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, chunked_prefill=True, max_num_batched_tokens=2048,
                       max_num_seqs=128, kv_blocks=6000, reserve_full_isl=True)
    runs = _quiet_simulate(trace, cfg, m)
    original = continuous_fcfs.ContinuousFcfs.continuous_spec
    monkeypatch.setattr(continuous_fcfs.ContinuousFcfs, "continuous_spec",
                        lambda self, c: dataclasses.replace(original(self, c), jumps=False))
    steps = _quiet_simulate(trace, cfg, m)
    assert runs.summary["engine_steps"] == steps.summary["engine_steps"]
    assert np.allclose(runs.continuous["e2e_s"], steps.continuous["e2e_s"], rtol=1e-9)
    assert np.allclose(runs.continuous["ttft_s"], steps.continuous["ttft_s"], rtol=1e-9)


JIT_SCRIPT = """
import hashlib, json, warnings, numpy as np, workbench as wb
warnings.simplefilter("ignore")
rng = np.random.default_rng(5)
n = 250
arr = np.cumsum(rng.exponential(1/40, n)); arr -= arr[0]
tr = wb.Trace.from_arrays(arr, rng.integers(1, 3000, n), rng.geometric(1/40, n), source="t")
m = wb.StepTimeModel.from_kernel_profiles(%r)
out = {}
for name, cfg in (("v1", wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, chunked_prefill=True,
                                      max_num_batched_tokens=512, max_num_seqs=32, kv_blocks=600, block_size=16,
                                      reserve_full_isl=True, prefix_caching=True)),
                  ("v02", wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, max_num_batched_tokens=2048,
                                       max_num_seqs=32, kv_blocks=600)),
                  ("static", wb.SimConfig(scheduler="static_fifo", num_gpus=2, batch_size=4))):
    trace = tr if name != "static" else wb.Trace.from_arrays(arr, np.minimum(tr.prompt_tokens, 500),
                                                             tr.output_tokens, source="t")   # 4 x 500: in the grid
    c = wb.simulate(trace, cfg, latency=m).continuous
    h = hashlib.sha256(b"".join(np.ascontiguousarray(c[k]).tobytes() for k in ("ttft_s", "e2e_s", "preemptions")))
    out[name] = [h.hexdigest(), int(c["preemptions"].sum())]
print(json.dumps(out))
""" % (str(PRO6000_LLAMA),)


def test_uncompiled_table_path_gives_identical_results():
    from conftest import run_script_json

    compiled = run_script_json(JIT_SCRIPT, disable_jit=False)
    assert compiled["v1"][1] > 0   # preemption (and the decode span's recomputation) is exercised
    assert run_script_json(JIT_SCRIPT, disable_jit=True) == compiled


# ---------------------------------------------------------------- the packed fast paths vs a plain interpolation
def _ref_bracket(grid, x):
    """Where x lies on the grid: (lo, t), the first value below it, linear extrapolation past the last two."""
    if grid.size <= 1 or x <= grid[0]:
        return 0, 0.0
    lo = grid.size - 2 if x >= grid[-1] else int(np.searchsorted(grid, x, side="right")) - 1
    return lo, (x - grid[lo]) / (grid[lo + 1] - grid[lo])


def _ref_interp(grid, values, x):
    lo, t = _ref_bracket(grid, x)
    return values[lo] + (t * (values[lo + 1] - values[lo]) if t else 0.0)


def _ref_attention(table, pc, kp, nd, kv):
    """Multilinear interpolation written out over the 16 corners (numpy brackets, no packed arrays)."""
    axes = [_ref_bracket(g, x) for g, x in ((table.pc_grid, pc), (table.kp_grid, kp), (table.nd_grid, nd),
                                             (table.kv_grid, kv))]
    total = 0.0
    for corner in np.ndindex(2, 2, 2, 2):
        weight, index = 1.0, []
        for up, (lo, t), n in zip(corner, axes, table.attention_s.shape):
            weight *= t if up else 1.0 - t
            index.append(min(lo + up, n - 1))
        total += weight * table.attention_s[tuple(index)]
    return total


def _ref_bucket(edges, x):
    i = 0
    while i < len(edges) - 1 and x > edges[i + 1]:
        i += 1
    return min(i, len(edges) - 2)


def _ref_step_s(table, pieces, prefixes, contexts):
    """The module docstring's step formula, term by term, on the StepTable's own arrays."""
    l, p, ctx = (np.asarray(a, float) for a in (pieces, prefixes, contexts))
    pc, kp, nd = l.sum(), p.sum(), ctx.size
    fixed = max(table.fixed_prefill_s if l.size else 0.0, table.fixed_decode_s if nd else 0.0)
    t = (fixed + _ref_interp(table.token_grid, table.token_s, pc + nd)
         + _ref_interp(table.seq_grid, table.seq_s, l.size + nd) + table.prefill_quad_s * float((l * (p + l)).sum()))
    kv = ctx.mean() if nd else 0.0
    t_mean = _ref_attention(table, pc, kp, nd, kv)
    t += t_mean
    sk = table.skew
    if nd >= 2 and ctx.max() > kv and sk is not None:
        if pc in list(sk.pc_values):
            gap = ctx.max() - ctx.min()
            rate = min(max((kv - ctx.min()) / gap if gap > 0 else 0.5, 0.0), 1.0)
            alpha = sk.alpha[list(sk.pc_values).index(pc), _ref_bucket(sk.n_edges, nd),
                             _ref_bucket(sk.rate_edges, rate), _ref_bucket(sk.kv_max_edges, ctx.max()),
                             _ref_bucket(sk.kp_edges, kp)]
        else:
            alpha = sk.alpha_default
        t_max = _ref_attention(table, pc, kp, nd, ctx.max())
        if alpha != 0 and t_max > t_mean:
            t += alpha * (t_max - t_mean)
    return t


@st.composite
def separable_tables(draw):
    """Attention A(pc, kp) + D(nd, kv), D(0, 0) = 0 (what a roofline writes): the packed table's two bilinear
    lookups replace the 16-corner one."""
    table = draw(tables())
    a = np.array(draw(st.lists(st.floats(0.0, 1e-3), min_size=table.pc_grid.size * table.kp_grid.size,
                               max_size=table.pc_grid.size * table.kp_grid.size)))
    d = np.array(draw(st.lists(st.floats(0.0, 1e-3), min_size=table.nd_grid.size * table.kv_grid.size,
                               max_size=table.nd_grid.size * table.kv_grid.size)))
    a = a.reshape(table.pc_grid.size, table.kp_grid.size)
    d = d.reshape(table.nd_grid.size, table.kv_grid.size)
    d[0, 0] = 0.0
    return replace(table, attention_s=a[:, :, None, None] + d[None, None, :, :],
                   prefill_quad_s=draw(st.floats(0.0, 1e-8)), fixed_prefill_s=draw(st.floats(0.0, 1e-2)))


@settings(max_examples=200, deadline=None)
@given(st.one_of(tables(), separable_tables()), st.sampled_from([0, 64, 4096]),
       st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 3000)), max_size=3),
       st.lists(st.integers(1, 5000), max_size=70), st.booleans())
def test_packed_lookups_equal_plain_interpolation(table, max_tokens, pieces, contexts, as_float):
    """The packed table's shortcuts (dense reads of whole token, sequence, prefill and decode counts up to the
    engine's budgets; a separable attention table read as two bilinear tables) price every step as the formula
    interpolated directly on the StepTable's arrays, within 1e-9; inside the budgets and past them."""
    from workbench.sim.steptable import TI_SEP

    if not pieces and not contexts:
        contexts = [100]
    l = [a for a, _ in pieces]
    p = [b for _, b in pieces]
    tf, ti = table.pack(64, max_tokens)
    sep = bool(np.allclose(table.attention_s, table.attention_s[:, :, :1, :1] + table.attention_s[:1, :1]
                           - table.attention_s[:1, :1, :1, :1], rtol=0, atol=1e-15))
    if sep:
        assert ti[TI_SEP] == 1
    ctx = np.asarray(contexts, float)
    count = float if as_float else int   # the engines pass whole numbers as either
    got = step_time_py(tf, ti, count(sum(l)), len(l), float(sum(p)), float(sum(a * (b + a) for a, b in pieces)),
                       len(ctx), float(ctx.sum()), float(ctx.max(initial=0)), float(ctx.min()) if ctx.size else 0.0)
    assert got == pytest.approx(_ref_step_s(table, l, p, ctx), rel=1e-9, abs=1e-15)
    assert table.step_time_s(l, p, contexts) == pytest.approx(got, rel=1e-12, abs=1e-15)
