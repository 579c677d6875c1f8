"""Random bad input through the public API, run as a script in its own process (issue 13).

``tests/test_bad_input_fuzz.py`` runs this file in a subprocess, so a segfault or a hang in a compiled engine
fails that test instead of killing pytest.  Hypothesis feeds random finite and non-finite arrays, dtypes and
parameter values through ``Trace``, ``simulate`` (every registered scheduler and router, the disaggregated
scheduler's fields, routers and per-pool latencies too: read from the registries at run time, so ones added
later are covered; prefix caching on and off, traces with and without random prefix hashes, good or careless),
``capacity`` and ``calibrate`` (vLLM runs, chunked prefill and prefix caching too, and disaggregated runs).
Each call must
either raise a ``ValueError``/``TypeError`` whose message names the argument or field at fault, or return a
result whose invariants hold: every request completed or rejected (none lost, none twice), finite times for
the completed ones, finite summary rates.  Anything else (another exception type, an anonymous message, a
crash, a hang) fails.  A watchdog (``faulthandler``) ends the process with a traceback if one call hangs.

Prints one JSON line: the number of examples per target, how their outcomes split, and how often the
prefix cache was really exercised (``exercised``: results with prefix caching on a trace with hashes, with
the ``prefix_affinity`` router, with cache hits).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import math
import sys
import warnings
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.continuous_engine import ROUTERS
from workbench.sim.disagg_steplog import DISAGG_ROUTERS
from workbench.sim.metrics import STATUS_COMPLETED
from workbench.sim.schedulers import SCHEDULERS
from workbench.traces.serving_log import ServingLog

HANG_S = 60.0          # one call taking longer is a hang
EXAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 60
SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))

# what an error may name: the arguments and fields of the public API
NAMES = ({f.name for f in dataclasses.fields(wb.SimConfig)} | {f.name for f in dataclasses.fields(wb.StepTimeModel)}
         | {"arrival_s", "prompt_tokens", "output_tokens", "prefix_hashes", "prefix_block_tokens", "trace",
            "latency", "config", "step_log", "source",
            "synthetic", "factor", "attainment", "criterion", "resolution", "scale_bounds", "start", "max_probes",
            "scan_factor", "ttft_s", "tpot_s", "capacity", "runs", "cfg", "max_iter", "tol", "damping",
            "prior_weight", "max_evaluations", "budget_s", "seed", "stages", "proxy", "free", "hold",
            "max_training_error", "samples", "measured", "request",
            "calibrate", "kv_capacity_tokens", "b_min/b_max", "gpu_mem_gb", "LatencyModel",
            "prefill_replicas/prefill_tp/decode_replicas/decode_tp/decode_pp"})
outcomes: Counter = Counter()
exercised: Counter = Counter()   # results that ran the prefix cache (so the test can check it was really fuzzed)


def _target(function: str, scheduler: str) -> str:
    """Outcomes are counted per function and engine ("simulate disaggregated"), so each engine's paths show."""
    engine = SCHEDULERS[scheduler].engine
    return f"{function} {engine}" if function == "simulate" or engine == "disaggregated" else function


def _named(message: str) -> bool:
    return any(name in message for name in NAMES)


def attempt(target: str, call):
    """Run ``call``; return its result, or None for a clear error. Anything else raises AssertionError."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if not _named(message):
            raise AssertionError(f"{target}: an error that names no argument or field: {type(exc).__name__}: "
                                 f"{message}") from exc
        outcomes[f"{target}: clear {type(exc).__name__}"] += 1
        return None
    except Exception as exc:
        raise AssertionError(f"{target}: {type(exc).__name__} (not a clear ValueError/TypeError): {exc}") from exc
    finally:
        faulthandler.cancel_dump_traceback_later()
    outcomes[f"{target}: result"] += 1
    return result


# ---------------------------------------------------------------- strategies

SPECIAL = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300, 1e-300, -0.0]
clean_times, clean_counts = st.floats(0, 1e4), st.integers(0, 3000)
times = st.one_of(clean_times, st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True))
counts = st.one_of(clean_counts, st.integers(-100, 2**40), st.sampled_from([0.5, math.nan, math.inf, 1e12]))
DTYPES = ["float64", "float32", "int64", "int32", "uint8", "bool", "complex128", "object", "str"]


def as_dtype(values: list, dtype: str):
    if dtype == "list":
        return values
    if dtype == "str":
        return np.array([str(v) for v in values])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return np.array(values).astype(dtype)
        except (OverflowError, ValueError, TypeError):
            return np.array(values, dtype=object)


@st.composite
def raw_arrays(draw, max_size: int = 25):
    n = draw(st.integers(0, max_size))
    ragged = draw(st.integers(0, 20)) == 0    # now and then, arrays of different lengths
    sizes = [n, n + (1 if ragged else 0), n]
    kinds = [draw(st.sampled_from(DTYPES + ["list"])) if draw(st.integers(0, 3)) == 0 else "list" for _ in range(3)]
    clean = draw(st.booleans())   # half the draws hold only valid values (then dtype and length decide)
    arrival = draw(st.lists(clean_times if clean else times, min_size=sizes[0], max_size=sizes[0]))
    prompt = draw(st.lists(clean_counts if clean else counts, min_size=sizes[1], max_size=sizes[1]))
    output = draw(st.lists(clean_counts if clean else counts, min_size=sizes[2], max_size=sizes[2]))
    return as_dtype(arrival, kinds[0]), as_dtype(prompt, kinds[1]), as_dtype(output, kinds[2])


hash_values = st.one_of(st.integers(-3, 3), st.sampled_from([2**63 - 1, -2**63, 2**63, 2**70, 1.0, 2.5, math.nan,
                                                               True, "7", "x", None, [1]]))
GOOD_BLOCK_TOKENS, BAD_BLOCK_TOKENS = [1, 16, 512, "512", 7.0], [None, 0, -1, 2.5, math.nan, True, "abc"]


@st.composite
def raw_prefix_hashes(draw, n: int):
    """prefix_hashes as a careless user may give them: ragged lists of any values, the wrong count of lists,
    a flat list, text, a numpy array; or None."""
    # (hypothesis leans to the first choices: the valid shapes come first)
    kind = draw(st.sampled_from(["lists", "array", "lists", "none", "flat", "text", "short", "long"]))
    if kind == "none":
        return None
    if kind == "flat":
        return draw(st.lists(hash_values, max_size=n))
    if kind == "text":
        return "1,2,3"
    count = n - 1 if kind == "short" else n + 1 if kind == "long" else n
    clean = not draw(st.booleans())   # half the draws hold only integers (the count and the prompts decide)
    lists = [draw(st.lists(st.integers(-3, 3) if clean or draw(st.integers(0, 2)) else hash_values, max_size=6))
             for _ in range(max(count, 0))]
    if kind == "array":
        return [np.asarray([v for v in item if isinstance(v, int) and -2**63 <= v < 2**63], np.int64)
                for item in lists]
    return lists


@st.composite
def prefix_structure(draw, prompt: list):
    """Hashes consistent with ``prompt`` (each request a path in a small tree of full blocks, its partial last
    block under a hash of its own), or now and then random ones (which a trace may refuse by name)."""
    block_tokens = draw(st.sampled_from([1, 7, 16, 512]))
    hashes = []
    for i, tokens in enumerate(prompt):
        full = min(tokens // block_tokens, 6)
        chain = draw(st.lists(st.integers(-2, 2), min_size=0, max_size=full))
        if len(chain) == tokens // block_tokens and tokens % block_tokens and draw(st.booleans()):
            chain.append(10**6 + i)   # the partial last block: never shared
        hashes.append(chain)
    if draw(st.integers(0, 5)) == 0:
        hashes = [draw(st.lists(st.integers(0, 2), max_size=4)) for _ in prompt]
    return hashes, block_tokens


@st.composite
def good_traces(draw, max_size: int = 25):
    """Valid traces: what the invariants are checked on (bad ones are the Trace target's business); most of
    them with prefix hashes."""
    n = draw(st.integers(1, max_size))
    gaps = draw(st.lists(st.one_of(st.floats(0, 5), st.just(0.0)), min_size=n, max_size=n))
    prompt = draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 600), min_size=n, max_size=n))
    if draw(st.integers(0, 4)) == 3:   # now and then a 0-token output (the iteration-level engines refuse it)
        output[draw(st.integers(0, n - 1))] = 0
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3, 1e6]))
    if draw(st.integers(0, 3)):
        hashes, block_tokens = draw(prefix_structure(prompt))
        trace = attempt("Trace.from_arrays", lambda: wb.Trace.from_arrays(
            np.cumsum(gaps) * scale, prompt, output, source="fuzz", prefix_hashes=hashes,
            prefix_block_tokens=block_tokens))
        if trace is not None:
            return trace
    return wb.Trace.from_arrays(np.cumsum(gaps) * scale, prompt, output, source="fuzz")


def field_values(good, bad=()):
    return st.one_of(st.sampled_from(list(good)), st.sampled_from(list(bad) or [None]))


CONFIG_FIELDS = {
    "num_gpus": field_values([1, 2, 3], [0, -1, 2.5, "2", True, math.nan, 10**6]),
    "k_bins": field_values([1, 2, 4], [0, 1.5, "four", 10**5]),
    "batch_size": field_values([1, 4, 8], [0, -3, "8"]),
    "b_min": field_values([1, 2], [0]), "b_max": field_values([4, 32], [0, 2**40]),
    "d_sla_s": field_values([0.5, 1.0, 1e4], [0, -1, math.nan, math.inf, "1"]),
    "block_size": field_values([1, 3, 16, 4096], [0, 2**31 - 1, 2.5]),
    "max_num_seqs": field_values([1, 2, 8, 256], [0, "256", -1]),
    "max_num_batched_tokens": field_values([8, 512, 16384], [0]),
    "chunked_prefill": field_values([True, False, "false"], ["no", 2]),
    "kv_blocks": field_values([None, 1, 2, 50, 10**6], [0, -2, 1.5]),
    "ttft_sla_s": field_values([0.1, 1.0, 1e3], [0, math.nan]),
    "tpot_sla_s": field_values([0.01, 0.05, 50.0], [0, -0.1]),
    "gpu_mem_gb": field_values([16.0, 80.0], [16e9, 0]),
    "ctrl_window": field_values([1, 8], [0]), "mem_theta": field_values([0.0, 2.0, 1e6], [-1]),
    "predictor": field_values(["oracle", "noisy", "prompt_power_law"], ["magic"]),
    "predictor_sigma": field_values([0.0, 0.5, 9.0], [-1, 1e9]),
    "spread_idle": field_values([True, False], ["yes"]),
    # disaggregated deployments (their num_gpus is derived: a num_gpus drawn above may conflict)
    "prefill_replicas": field_values([1, 2, 3], [0, "two", 2.5, 10**6]),
    "prefill_tp": field_values([1, 2, 4], [0, "2", -1, 10**5]),
    "decode_replicas": field_values([1, 2], [0, -1, True]),
    "decode_tp": field_values([1, 2], [0, 1.5]),
    "decode_pp": field_values([1, 2, 3], [0, "1", 2**20]),
    "prefill_max_batch_size": field_values([1, 4, 128], [0, 2.5]),
    "prefill_max_tokens": field_values([64, 2048, 8192], [0, -5]),
    "decode_max_batch_size": field_values([1, 8, 1024], [0, 2**40]),
    "prefill_kv_blocks": field_values([None, 1, 8, 10**6], [0, 1.5, "x"]),
    "decode_kv_blocks": field_values([None, 1, 8, 10**6], [0, -3]),
    "decode_waiting_block_fraction": field_values([0.05, 1.0, 1e-9], [0, 1.5, math.nan]),
    "kv_link_gbps": field_values([2400.0, 1e-3, 1e-200, "100"], [0, -1, 300e9, math.inf]),
    "kv_link_latency_s": field_values([0.0, 1e-5, 1.0], [-1, 1e3, math.nan]),
    "prefill_router": field_values(sorted(DISAGG_ROUTERS), ["least_kv", None]),
    "decode_router": field_values(sorted(DISAGG_ROUTERS), ["random"]),
    "prefix_caching": field_values([True, False, "true"], ["yes", 2, None]),
    "kv_watermark": field_values([None, 0.0, 0.01, 0.5], [1.0, -0.01, math.nan, "high", True]),
    "max_paddings": field_values([0, 1, 256], [-1, 2.5, "many"]),
    "prefix_affinity_margin": field_values([0, 1, 16], [-1, 0.5, math.inf]),
}
DISAGGREGATED_FIELDS = sorted(name for name in CONFIG_FIELDS if name.startswith(("prefill_", "decode_", "kv_link")))


@st.composite
def configs(draw):
    """A SimConfig's keyword arguments: a registered scheduler and router, and some fields, good or bad."""
    engine = draw(st.sampled_from(sorted({cls.engine for cls in SCHEDULERS.values()})))   # each engine alike
    scheduler = draw(st.sampled_from(sorted(n for n, cls in SCHEDULERS.items() if cls.engine == engine)))
    kwargs = {"scheduler": scheduler, "router": draw(st.sampled_from(sorted(ROUTERS)))}
    names = sorted(CONFIG_FIELDS)
    if engine != "continuous":
        # mostly its own fields; the continuous engine's router and prefix cache now and then (refused by name)
        names = (DISAGGREGATED_FIELDS if engine == "disaggregated" else []) + names
        kwargs["router"] = kwargs["router"] if draw(st.integers(0, 3)) == 0 else "round_robin"
        kwargs["prefix_caching"] = draw(st.integers(0, 7)) == 0
    else:
        # prefix_affinity needs prefix caching: on for it but now and then (to see it refused), mostly on else
        kwargs["prefix_caching"] = draw(st.integers(0, 7)) > 0 if kwargs["router"] == "prefix_affinity" \
            else draw(st.integers(0, 3)) > 0
    for name in draw(st.lists(st.sampled_from(names), max_size=5, unique=True)):
        kwargs[name] = draw(CONFIG_FIELDS[name])
    return kwargs


coefficient = st.one_of(st.floats(0, 0.05), st.sampled_from([0.0, 1e-9, -1e-6, 20.0, math.nan, math.inf]))
POOL_LATENCIES = [  # the disaggregated forms (one model per pool), good and careless
    {"prefill": "opt-13b-a100-distserve", "decode": "opt-13b-a100-distserve"}, {"prefill": "opt-13b-a100"},
    {"prefill": "opt-13b-a100", "decode": "opt-13b-a100", "link": 1}, {"prefill": None, "decode": "opt-13b-a100"},
    {"prefill": "opt-13b-a100-distserve", "decode": "nope"}, {0: "opt-13b-a100"}, {}]
step_models = st.builds(  # StepTimeModel arguments: prefill, decode, arrival and token overheads, pipeline overhead
    lambda p, d, o, t, q: (p, d, o, t, q), st.tuples(coefficient, coefficient, coefficient),
    st.tuples(coefficient, coefficient, coefficient), st.tuples(coefficient, coefficient),
    st.one_of(st.floats(0, 0.01), st.just(math.nan)),
    st.one_of(st.floats(0, 0.02), st.sampled_from([0.0, -1e-3, math.nan, "0.007", 50.0])))
latencies = st.one_of(
    st.none(), st.sampled_from(["grid", "opt-13b-a100", "llama-3.1-8b-h100", "no-such-profile", 0.02,
                                "opt-13b-a100-distserve", *POOL_LATENCIES]),
    step_models, st.tuples(step_models, step_models),
    st.builds(lambda b, p, q: ("grid", b, p, q), st.floats(0, 0.1), st.floats(0, 1e-3), st.floats(0, 2)))


def make_latency(spec):
    if isinstance(spec, tuple) and spec[0] == "grid":   # built here, in attempt: (0, 0, q) is refused
        return wb.LatencyModel(base_s=spec[1], per_token_s=spec[2], batch_penalty=spec[3])
    if isinstance(spec, tuple):
        if len(spec) == 2:   # a dict of two pools' models
            return {"prefill": make_latency(spec[0]), "decode": make_latency(spec[1])}
        prefill, decode, arrival, token, pipeline = spec
        return wb.StepTimeModel(prefill=prefill, decode=decode, arrival_overhead_s=arrival, token_overhead_s=token,
                                pipeline_overhead_s=pipeline)
    return spec


# ---------------------------------------------------------------- invariants

def check_result(res, trace) -> None:
    n = len(trace)
    requests = res.requests
    assert len(requests) == n, f"{len(requests)} request rows for {n} requests"
    completed = res.status == STATUS_COMPLETED
    assert int(completed.sum()) + int((~completed).sum()) == n
    assert res.summary["completed"] + res.summary["rejected"] == n, res.summary
    finish, arrival = res.finish_s[completed], res.arrival_s[completed]
    assert np.isfinite(finish).all(), "a completed request without a finite finish time"
    assert (finish >= arrival - 1e-9 * np.maximum(1.0, np.abs(arrival))).all(), "a request finished before it came"
    assert np.isnan(res.finish_s[~completed]).all(), "a rejected request has a finish time"
    if res.continuous is not None:
        for column in ("ttft_s", "e2e_s"):
            values = np.asarray(res.continuous[column])[completed]
            assert np.isfinite(values).all() and (values >= -1e-9).all(), f"{column}: {values}"
        if res.engine == "static":          # step mode's token streams: no prefix cache (static schedulers refuse one)
            assert "cached_tokens" not in res.continuous and not res.config.prefix_caching
            return
        if res.engine == "disaggregated":   # no prefix cache (a config asking for one is refused)
            assert "cached_tokens" not in res.continuous and not res.config.prefix_caching
            check_rates(res)
            return
        cached = np.asarray(res.continuous["cached_tokens"])
        prompt = np.asarray(trace.prompt_tokens)
        bs = res.config.block_size
        assert (cached >= 0).all() and (cached % bs == 0).all(), "cached tokens not in whole blocks"
        assert (cached[prompt > 0] < prompt[prompt > 0]).all() and (cached[prompt == 0] == 0).all(), \
            "a cache hit covered a whole prompt (its last token is always computed)"
        rate = res.summary["prefix_hit_rate"]
        assert math.isnan(rate) or 0 <= rate < 1, rate
        if not res.config.prefix_caching:
            assert not cached.any(), "cached tokens without prefix caching"
        elif trace.has_prefixes:
            exercised["prefix caching, trace with hashes"] += 1
            exercised["prefix_affinity router"] += res.config.router == "prefix_affinity"
            exercised["cache hits"] += bool(cached.any())
    check_rates(res)


def check_rates(res) -> None:
    for key in ("throughput_rps", "goodput_rps", "offered_rps"):
        if key in res.summary:
            assert not math.isinf(res.summary[key]), (key, res.summary[key])


def check_capacity(found) -> None:
    assert math.isfinite(found.capacity_rps) and found.capacity_rps > 0, found
    assert found.probes and all(math.isfinite(p.scaling) for p in found.probes)


# ---------------------------------------------------------------- targets

@SETTINGS
@given(arrays=raw_arrays(), scale=st.sampled_from([1.0, 0.5, 1e-300, 1e300, math.nan, -1.0, "2"]),
       synthetic=st.sampled_from([False, True, "no", "true", 1, None]))
def fuzz_trace(arrays, scale, synthetic):
    trace = attempt("Trace.from_arrays", lambda: wb.Trace.from_arrays(*arrays, synthetic=synthetic))
    if trace is None:
        return
    assert trace.arrival_s.dtype == np.float64 and np.isfinite(trace.arrival_s).all()
    assert (trace.prompt_tokens >= 0).all() and (trace.output_tokens >= 0).all()
    assert trace.is_synthetic in (True, False)
    scaled = attempt("Trace.time_scaled", lambda: trace.time_scaled(scale))
    if scaled is not None:
        assert np.isfinite(scaled.arrival_s).all()


@settings(SETTINGS, max_examples=2 * EXAMPLES)   # cheap: no simulation
@given(n=st.integers(0, 12), data=st.data())
def fuzz_trace_hashes(n, data):
    """Valid arrays with careless prefix hashes and block sizes: a clear error, or a trace whose hashes are
    one int64 list per request, never more blocks than the prompt has, kept in order by sorting and slicing."""
    arrival = data.draw(st.lists(st.floats(0, 100), min_size=n, max_size=n))
    prompt = data.draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n))
    hashes = data.draw(raw_prefix_hashes(n))
    block_tokens = data.draw(st.sampled_from(GOOD_BLOCK_TOKENS if data.draw(st.integers(0, 2)) else BAD_BLOCK_TOKENS))
    trace = attempt("Trace.from_arrays", lambda: wb.Trace.from_arrays(
        arrival, prompt, [1] * n, prefix_hashes=hashes, prefix_block_tokens=block_tokens))
    if trace is None or not trace.has_prefixes:
        return
    exercised["Trace with hashes"] += 1
    assert len(trace.prefix_hashes) == len(trace) and trace.prefix_hashes.ids.dtype == np.int64
    assert isinstance(trace.prefix_block_tokens, int) and trace.prefix_block_tokens >= 1
    blocks = -(-trace.prompt_tokens.astype(np.int64) // trace.prefix_block_tokens)
    assert (trace.prefix_hashes.counts <= blocks).all()
    order = np.argsort(arrival, kind="stable")   # the hashes follow their requests through the sort
    for i, j in enumerate(order):
        assert list(trace.prefix_hashes[i]) == [int(v) for v in hashes[j]]
    half = trace.head(max(1, n // 2))
    assert len(half.prefix_hashes) == len(half) and half.prefix_block_tokens == trace.prefix_block_tokens


@SETTINGS
@given(trace=good_traces(), config=configs(), latency=latencies, step_log=st.sampled_from([0, 5, 100_000, -1]))
def fuzz_simulate(trace, config, latency, step_log):
    cfg = attempt("SimConfig", lambda: wb.SimConfig(**config))
    model = attempt("StepTimeModel", lambda: make_latency(latency))
    if cfg is None or (model is None and latency is not None):
        return
    res = attempt(_target("simulate", cfg.scheduler), lambda: wb.simulate(trace, cfg, latency=model,
                                                                            step_log=step_log))
    if res is not None:
        check_result(res, trace)


@SETTINGS
@given(arrays=raw_arrays(max_size=12), scheduler=st.sampled_from(sorted(SCHEDULERS)),
       router=st.sampled_from(sorted(ROUTERS)))
def fuzz_simulate_raw(arrays, scheduler, router):
    """Bad arrays never reach an engine: they stop at the Trace, whatever the scheduler and router."""
    trace = attempt("Trace.from_arrays", lambda: wb.Trace.from_arrays(*arrays))
    if trace is None:
        return
    res = attempt(_target("simulate", scheduler),
                  lambda: wb.simulate(trace, wb.SimConfig(scheduler=scheduler, router=router)))
    if res is not None:
        check_result(res, trace)


@settings(SETTINGS, max_examples=max(10, EXAMPLES // 2))
@given(trace=good_traces(), scheduler=st.sampled_from(sorted(n for n, c in SCHEDULERS.items()
                                                          if c.engine == "continuous")),
       router=st.sampled_from(sorted(ROUTERS)), num_gpus=st.integers(1, 3), block_size=st.sampled_from([1, 3, 16]),
       kv_blocks=st.sampled_from([None, 4, 40, 400, 10**5]), chunked=st.booleans(),
       watermark=st.sampled_from([None, 0.0, 0.01, 0.3, 0.99]), max_paddings=st.sampled_from([0, 16, 256]),
       margin=st.sampled_from([0, 1, 16]), max_num_seqs=st.sampled_from([1, 4, 256]),
       latency=st.sampled_from([None, "llama-3.1-8b-h100"]))
def fuzz_prefix_caching(trace, scheduler, router, num_gpus, block_size, kv_blocks, chunked, watermark, max_paddings,
                        margin, max_num_seqs, latency):
    """Valid settings only, prefix caching on (every router, tiny caches that evict and preempt): the engine
    must serve or name a reason, and the cache invariants of check_result must hold."""
    cfg = attempt("SimConfig", lambda: wb.SimConfig(
        scheduler=scheduler, router=router, num_gpus=num_gpus, block_size=block_size, kv_blocks=kv_blocks,
        chunked_prefill=chunked, prefix_caching=True, kv_watermark=watermark, max_paddings=max_paddings,
        prefix_affinity_margin=margin, max_num_seqs=max_num_seqs, max_num_batched_tokens=max(max_num_seqs, 512)))
    if cfg is None:
        return
    res = attempt(_target("simulate", scheduler), lambda: wb.simulate(trace, cfg, latency=latency))
    if res is not None:
        check_result(res, trace)


CAPACITY_ARGUMENTS = {  # name -> (good values, bad values)
    "attainment": ([0.5, 0.9, 1.0, "0.9"], [0, 1.5, math.nan, "x"]),
    "criterion": (["attainment", "p99_latency", "slo"], ["mean", None]),
    "scale_bounds": ([(1 / 1024, 1024.0), (0.5, 2.0), (1e-3, 1.0)], [(1e-300, 1.0), (2.0, 1.0), (0, 1), "1,2"]),
    "resolution": ([0.01, 0.2], [0, 1.0, math.nan]),
    "latency": ([None, "opt-13b-a100", "grid"], ["nope", 3]),
}


@st.composite
def capacity_arguments(draw):
    """Every argument good, or one of them bad (a draw of all-random values would nearly always be refused)."""
    bad = draw(st.sampled_from([None, None, None, *CAPACITY_ARGUMENTS]))
    return {name: draw(st.sampled_from(bad_values if name == bad else good))
            for name, (good, bad_values) in CAPACITY_ARGUMENTS.items()}


@settings(SETTINGS, max_examples=max(10, EXAMPLES // 3))
@given(trace=good_traces(max_size=15), scheduler=st.sampled_from(sorted(SCHEDULERS)), arguments=capacity_arguments())
def fuzz_capacity(trace, scheduler, arguments):
    found = attempt(_target("capacity", scheduler),
                    lambda: wb.capacity(trace, wb.SimConfig(scheduler=scheduler), max_probes=40, **arguments))
    if found is not None:
        check_capacity(found)


@settings(SETTINGS, max_examples=max(6, EXAMPLES // 6))
@given(n=st.one_of(st.integers(10, 40), st.integers(1, 9)), seed=st.integers(0, 10),
       poison=st.sampled_from([None, None, math.nan, math.inf, -1.0]),
       budget=st.sampled_from([1, 2, 1, "1", 0, 2.5]), kv_blocks=st.sampled_from([64, 4046, 4046, 1]),
       single=st.booleans(), chunked=st.booleans(), caching=st.booleans(), disaggregated=st.booleans(),
       pools=st.sampled_from(POOL_LATENCIES[:3] + [None]))
def fuzz_calibrate(n, seed, poison, budget, kv_blocks, single, chunked, caching, disaggregated, pools):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, 600, n)
    hashes = [list(rng.integers(0, 2, p // 16)) for p in prompt] if caching else None  # whole 16-token blocks
    trace = wb.Trace.from_arrays(np.sort(rng.uniform(0, 5, n)), prompt, rng.integers(1, 80, n),
                                 prefix_hashes=hashes, prefix_block_tokens=16 if caching else None)
    ttft = rng.uniform(0.02, 0.5, n)
    e2e = ttft + (trace.output_tokens - 1) * 0.03
    tpot = np.where(trace.output_tokens > 1, (e2e - ttft) / np.maximum(trace.output_tokens - 1, 1), np.nan)
    if poison is not None:
        e2e[rng.integers(0, n)] = poison
    import pandas as pd

    measured = pd.DataFrame({"request_id": np.arange(n), "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e})
    step = wb.StepTimeModel(prefill=(0.02, 1.4e-4, 8e-9), decode=(0.023, 6e-7, 6e-5))
    if disaggregated:   # a DistServe deployment, calibrated per pool (pools: a dict, None = one model for both)
        cfg = wb.SimConfig(scheduler="disaggregated", model="opt-13b", gpu_mem_gb=80.0, prefill_kv_blocks=kv_blocks,
                           decode_kv_blocks=kv_blocks)
        step = pools if pools is not None else step
    else:
        cfg = wb.SimConfig(scheduler="continuous_fcfs", kv_blocks=kv_blocks, chunked_prefill=chunked,
                           prefix_caching=caching)
    run = ServingLog("fuzz", None, trace, measured, cfg, None)
    # the disaggregated calibration's budget is its iterations, the vLLM one's its simulations (x 100; a
    # rough fit of these random times is accepted: the fuzz is about the input, not the fit)
    options = dict(max_iter=budget) if disaggregated else dict(
        max_evaluations=budget * 100 if isinstance(budget, (int, float)) else budget + "00", max_training_error=0.5)
    fitted = attempt(_target("calibrate", cfg.scheduler),
                     lambda: wb.calibrate(step, run if single else [run], **options))
    if fitted is None:
        return
    for model in fitted.values() if isinstance(fitted, dict) else [fitted]:
        assert np.isfinite(model.coefficients()).all() and math.isfinite(model.pipeline_overhead_s)
    if not disaggregated:
        assert math.isfinite(fitted.fit_report.cost) and fitted.fit_report.training_e2e_error() <= 0.5
    else:
        assert np.isfinite(fitted.fit_report.iterations.simulated_rss).all()


def every_scheduler_and_router() -> None:
    """Each registered scheduler and router once on a valid trace and once on each bad-but-valid-looking input
    (so coverage never rests on sampling alone)."""
    trace = wb.Trace.from_arrays([0.0, 0.1, 0.1, 3.0], [10, 3000, 0, 200], [5, 1, 40, 0])
    served = wb.Trace.from_arrays([0.0, 0.1, 0.1, 3.0], [10, 3000, 0, 200], [5, 1, 40, 2])
    shared = wb.Trace.from_arrays([0.0, 0.1, 0.1, 3.0, 3.5], [40, 3000, 0, 200, 40], [5, 1, 40, 2, 3],
                                  prefix_hashes=[[1, 2], [7], [], [1, 2, 3], [1, 2]], prefix_block_tokens=16)
    for scheduler in sorted(SCHEDULERS):
        if SCHEDULERS[scheduler].engine == "disaggregated":   # its own routers, instances and KV blocks
            deployments = [dict(prefill_router=p, decode_router=d, prefill_replicas=2, decode_replicas=1, decode_pp=pp,
                                prefill_kv_blocks=64, decode_kv_blocks=64, block_size=16)
                           for p in sorted(DISAGG_ROUTERS) for d in sorted(DISAGG_ROUTERS) for pp in (1, 2)]
            # the continuous engine's prefix cache and routers: refused by name, never ignored
            deployments += [dict(prefix_caching=True), dict(router="prefix_affinity")]
        elif SCHEDULERS[scheduler].engine == "static":   # no router, no KV cache: refused by name, never ignored
            deployments = [dict(num_gpus=2), dict(num_gpus=2, prefix_caching=True), dict(router="least_kv")]
        else:
            deployments = [dict(router=router, num_gpus=2, kv_blocks=64, block_size=16, prefix_caching=caching)
                           for router in sorted(ROUTERS) for caching in (False, True)]
        for deployment in deployments:
            cfg = attempt("SimConfig", lambda: wb.SimConfig(scheduler=scheduler, **deployment))
            if cfg is None:
                continue   # prefix_affinity without prefix caching, a continuous setting elsewhere: refused by name
            target = _target("simulate", scheduler)
            for good in (served, shared):
                res = attempt(target, lambda: wb.simulate(good, cfg))
                if res is not None:
                    check_result(res, good)
            attempt(target, lambda: wb.simulate(trace, cfg))   # a 0-token output: refused or served
            attempt(target, lambda: wb.simulate(served.to_frame(), cfg))
    light = wb.Trace.from_arrays(np.arange(40) * 2.0, np.full(40, 200), np.full(40, 20), source="light load")
    for scheduler in sorted(SCHEDULERS):
        slo = SCHEDULERS[scheduler].engine != "static"
        found = attempt(_target("capacity", scheduler),
                        lambda: wb.capacity(light, wb.SimConfig(scheduler=scheduler), attainment=0.9,
                                            criterion="slo" if slo else "attainment", resolution=0.1))
        if found is not None:
            check_capacity(found)


def warm_up() -> None:
    """Compile the engines before the hang watchdog starts timing calls: a cold compile of the continuous
    engine takes tens of seconds of CPU, more on a loaded machine, and is not a hang."""
    faulthandler.dump_traceback_later(10 * HANG_S, exit=True)
    trace = wb.Trace.from_arrays([0.0, 1.0], [40, 20], [3, 2], prefix_hashes=[[1, 2], [1]], prefix_block_tokens=16)
    wb.simulate(trace, wb.SimConfig(scheduler="continuous_fcfs", prefix_caching=True, kv_blocks=64))
    wb.simulate(trace, wb.SimConfig(scheduler="static_fifo"))
    faulthandler.cancel_dump_traceback_later()


def main() -> None:
    warm_up()
    every_scheduler_and_router()
    for target in (fuzz_trace, fuzz_trace_hashes, fuzz_simulate, fuzz_prefix_caching, fuzz_simulate_raw, fuzz_capacity,
                   fuzz_calibrate):
        target()
    print(json.dumps({"examples": EXAMPLES, "schedulers": sorted(SCHEDULERS), "routers": sorted(ROUTERS),
                      "disaggregated_routers": sorted(DISAGG_ROUTERS), "outcomes": dict(sorted(outcomes.items())),
                      "exercised": dict(sorted(exercised.items()))}))


if __name__ == "__main__":
    main()
