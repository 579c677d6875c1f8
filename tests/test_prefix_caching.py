"""Prefix caching: traces with prefix hashes, the prefix tree, hand cases of the cache rules, the infinite cache."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import workbench as wb
from workbench.sim.prefix_tree import prefix_tree
from conftest import execute_notebook


def trace_of(arrival_s, prompt, output, **kw):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), **kw)


def cfg_of(**kw):
    return wb.SimConfig(scheduler=kw.pop("scheduler", "continuous_fcfs"), prefix_caching=True, **kw)


# ---------------------------------------------------------------- traces with prefix hashes
def test_prefix_hashes_follow_sorting_slicing_and_scaling():
    tr = trace_of([2.0, 0.0, 1.0], [1100, 600, 520], [5, 6, 7], prefix_hashes=[[1, 2, 3], [1, 4], [1, 5]],
                  prefix_block_tokens=512)
    assert tr.prefix_block_tokens == 512 and tr.has_prefixes
    assert [list(h) for h in tr.prefix_hashes] == [[1, 4], [1, 5], [1, 2, 3]]   # sorted with the requests
    assert list(tr.prompt_tokens) == [600, 520, 1100]
    head = tr.head(2)
    assert [list(h) for h in head.prefix_hashes] == [[1, 4], [1, 5]] and head.prefix_block_tokens == 512
    scaled = tr.time_scaled(4.0)
    assert scaled.prefix_hashes is tr.prefix_hashes and scaled.fingerprint != tr.fingerprint
    other = trace_of([2.0, 0.0, 1.0], [1100, 600, 520], [5, 6, 7], prefix_hashes=[[1, 2, 3], [1, 4], [1, 6]],
                     prefix_block_tokens=512)
    assert other.fingerprint != tr.fingerprint   # the hashes are part of the trace's identity
    assert trace_of([0.0], [10], [1]).prefix_hashes is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(prefix_hashes=[[1]]), "go together"),
    (dict(prefix_block_tokens=512), "go together"),
    (dict(prefix_hashes=[[1], [2]], prefix_block_tokens=512),
     "prefix_hashes: must have one list per request, 1 in all, got 2"),
    (dict(prefix_hashes=[[1, 2, 3]], prefix_block_tokens=512), r"prefix_hashes\[0\] lists 3 blocks .* only 2 blocks"),
    (dict(prefix_hashes=[["a"]], prefix_block_tokens=512), r"prefix_hashes\[0\]\[0\]: must be an integer, got 'a'"),
    (dict(prefix_hashes=[[1]], prefix_block_tokens=0), "prefix_block_tokens: must be an integer >= 1"),
])
def test_bad_prefix_hashes_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trace_of([0.0], [1000], [3], **kwargs)


def test_a_hash_covering_different_tokens_is_refused():
    tr = trace_of([0.0, 1.0], [1000, 700], [3, 3], prefix_hashes=[[1, 2], [1, 2]], prefix_block_tokens=512)
    with pytest.raises(ValueError, match="requests 0 and 1 share the hash chain up to block 1 .* 488 and 188"):
        wb.simulate(tr, cfg_of(), latency=wb.StepTimeModel(prefill=(0.01, 0, 0), decode=(0.01, 0, 0)))


def test_mooncake_traces_load_by_name_with_their_hashes(tmp_path):
    conv = wb.load_trace("mooncake_conv", use_real_timestamps=True)
    assert len(conv) == 12_031 and conv.prefix_block_tokens == 512
    assert "Mooncake" in conv.label and 3530 < conv.arrival_s[-1] < 3540
    counts = conv.prefix_hashes.counts
    np.testing.assert_array_equal(counts, -(-conv.prompt_tokens.astype(np.int64) // 512))   # one per 512 tokens
    assert list(conv.prefix_hashes[0][:3]) == [0, 1, 2]
    synthetic = wb.load_trace("mooncake_synthetic", use_real_timestamps=True)
    assert len(synthetic) == 3_993 and synthetic.has_prefixes
    # the hashes survive the on-disk cache of parsed files: a fresh process reads them back from it
    code = ("import workbench as wb; t = wb.load_trace('mooncake_conv', use_real_timestamps=True); "
            "print(t.fingerprint, int(t.prefix_hashes.ids.sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [conv.fingerprint, str(int(conv.prefix_hashes.ids.sum()))]


def test_a_malformed_mooncake_line_names_the_file_line_and_key(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}\n'
                    '{"timestamp": 5, "input_length": 600, "output_length": -3, "hash_ids": [1, 2]}\n')
    with pytest.raises(wb.TraceFormatError, match=r"bad.jsonl: line 2, key 'output_length' = -3 is negative"):
        wb.load_trace(path)


# ---------------------------------------------------------------- the tree on engine blocks
def test_hash_blocks_map_onto_engine_blocks_by_their_last_token():
    # 512-token hash blocks; prompts of 1100 (blocks 0, 1 full, 2 partial: 76 tokens) and 600 (0 full, 1: 88)
    tr = trace_of([0.0, 1.0], [1100, 600], [2, 2], prefix_hashes=[[1, 2, 3], [1, 9]], prefix_block_tokens=512)
    tree = prefix_tree(tr, 16)
    # 16-token blocks: hash block 0 owns engine blocks 0-31, block 1 32-63; request 0's partial block (tokens
    # 1024-1099) owns floor(1100 / 16) - 64 = 4 blocks (64-67), request 1's (512-599): 5 (32-36)
    node = tree.path_node
    assert list(tree.node_first[node]) == [0, 32, 64, 0, 32]
    assert list(tree.node_blocks[node]) == [32, 32, 4, 32, 5]
    assert list(tree.path_blocks) == [68, 37]
    assert node[0] == node[3] and node[1] != node[4]       # the shared root, different second blocks
    # 12-token blocks straddle the 512-token boundaries: block 42 (tokens 504-515) ends in hash block 1
    tree = prefix_tree(tr, 12)
    assert list(tree.node_first[tree.path_node]) == [0, 42, 85, 0, 42]
    assert list(tree.node_blocks[tree.path_node]) == [42, 43, 6, 42, 8]   # 600 // 12 - 42 = 8


# ---------------------------------------------------------------- hand cases of the cache rules
STEP = wb.StepTimeModel(prefill=(0.01, 1e-3, 1e-5), decode=(0.002, 0.0, 0.0))


def test_a_later_request_with_the_same_prefix_computes_only_the_rest():
    """32-token hash blocks, 16-token engine blocks, one replica, no overlap.  Prefill 0.01 + 1e-3 l +
    1e-5 l (p + l) for l tokens computed after p in the cache; 2 output tokens each (one decode of 0.002).

    A (0 s): 70 tokens [1, 2, 99]: nothing cached: 0.01 + 0.07 + 1e-5 * 70 * 70 = 0.129.  Its blocks 0-3
       (hash blocks [1], [1, 2]) are cached; its last 6 tokens fill no block.
    B (1 s): 80 tokens [1, 2, 98]: 4 blocks = 64 tokens cached; computes 16 after 64:
       0.01 + 0.016 + 1e-5 * 16 * 80 = 0.0388.
    C (2 s): 64 tokens [1, 2]: all 4 blocks cached, but a hit never covers the whole prompt: at most
       (64 - 1) // 16 = 3 blocks = 48 tokens; it recomputes its whole last block: 0.01 + 0.016 +
       1e-5 * 16 * 64 = 0.03624.
    D (3 s): A's prompt again: 64 tokens cached ((70 - 1) // 16 = 4 blocks allowed), 6 computed:
       0.01 + 0.006 + 1e-5 * 6 * 70 = 0.0202.
    """
    tr = trace_of([0.0, 1.0, 2.0, 3.0], [70, 80, 64, 70], [2, 2, 2, 2],
                  prefix_hashes=[[1, 2, 99], [1, 2, 98], [1, 2], [1, 2, 99]], prefix_block_tokens=32)
    res = wb.simulate(tr, cfg_of(block_size=16, kv_blocks=100), latency=STEP)
    r = res.requests
    assert list(r.cached_tokens) == [0, 64, 48, 64]
    np.testing.assert_allclose(r.ttft_s, [0.129, 0.0388, 0.03624, 0.0202], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, r.ttft_s + 0.002, rtol=1e-12)
    assert res.summary["prefix_hit_rate"] == pytest.approx((64 + 48 + 64) / (70 + 80 + 64 + 70))
    # without caching every prompt is computed in full
    plain = wb.simulate(tr, cfg_of(block_size=16, kv_blocks=100).replace(prefix_caching=False), latency=STEP)
    assert list(plain.requests.cached_tokens) == [0, 0, 0, 0] and plain.summary["prefix_hit_rate"] == 0.0
    assert plain.requests.ttft_s[1] == pytest.approx(0.01 + 0.08 + 1e-5 * 80 * 80)


def test_a_request_admitted_later_in_the_same_step_hits_blocks_registered_in_it():
    """v1 registers a block when it is allocated (cache_blocks in allocate_slots): A and B (same 64-token prefix,
    arriving together) are admitted in one step; B finds A's 4 blocks.  One prefill piece of 70 tokens and one
    of 6 after 64: 0.01 + 0.076 + 1e-5 * (70 * 70 + 6 * 70) = 0.1392."""
    tr = trace_of([0.0, 0.0], [70, 70], [1, 1], prefix_hashes=[[1, 2, 3], [1, 2, 4]], prefix_block_tokens=32)
    res = wb.simulate(tr, cfg_of(block_size=16, kv_blocks=100, chunked_prefill=True), latency=STEP)
    assert list(res.requests.cached_tokens) == [0, 64]
    np.testing.assert_allclose(res.requests.ttft_s, [0.1392, 0.1392], rtol=1e-12)


def test_eviction_takes_free_blocks_in_lru_order_last_block_first():
    """10 blocks of 16 tokens, 16-token hash blocks, 1 output token each (a request ends with its prefill).

    A (0 s, 40 tokens [1, 2, 3]) takes blocks for [1], [1, 2] and its partial last block; freed, they go to the
    back of the free queue behind the 7 never used, last block first: [unused 8 (its partial block joins
    them), [1, 2], [1]].  B (1 s, 40 tokens [5, 6, 7]) likewise: [unused 5, [1, 2], [1], B's partial, [5, 6],
    [5]].  D (2 s, 96 tokens, 6 new blocks) takes the 5 unused ones and then [1, 2], A's last cached block:
    A's prefix keeps [1] only, B's is untouched.  So at 3 s A's prompt finds 16 tokens, B's 32 (both capped
    at (40 - 1) // 16 = 2 blocks)."""
    step = wb.StepTimeModel(prefill=(0.01, 1e-3, 0.0), decode=(0.002, 0.0, 0.0))
    cfg = cfg_of(block_size=16, kv_blocks=10)
    for last, cached in (([1, 2, 3], 16), ([5, 6, 7], 32)):
        tr = trace_of([0, 1, 2, 3], [40, 40, 96, 40], [1, 1, 1, 1], prefix_block_tokens=16,
                      prefix_hashes=[[1, 2, 3], [5, 6, 7], list(range(20, 26)), last])
        r = wb.simulate(tr, cfg, latency=step).requests
        assert list(r.cached_tokens) == [0, 0, 0, cached]
        assert r.ttft_s[3] == pytest.approx(0.01 + 1e-3 * (40 - cached))


def test_a_preempted_request_finds_its_own_blocks_again():
    """v1 caches a request's generated tokens too (its block hashes cover them).  block_size 4, 4 blocks; A
    (prompt 4, 6 tokens) and B (prompt 4, 8 tokens).  Prefill 0.01 + 0.001 per token, decode 0.002 + 0.001 per
    request.

    0-0.018 prefill both; 0.018-0.034 four decodes of both (contexts 5-8; the first takes a block each: 4 used)
    0.034 context 9: A needs a block, none is free: B (the last) is preempted with 5 tokens; its KV, 8 tokens
          = 2 full blocks, stays cached at the front of the free queue; A's new block evicts the second
          (last block first).  0.034-0.037 A's last decode; A frees its 3 blocks behind B's.
    0.037 B (9 tokens) finds its first block: 4 tokens cached, 5 computed: 0.01 + 0.005 = 0.015; then 2
          decodes of 0.003: B ends at 0.058.  Without prefix caching it recomputes all 9: 0.019, ends at 0.062."""
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    cfg = cfg_of(block_size=4, kv_blocks=4, chunked_prefill=True)
    tr = trace_of([0.0, 0.0], [4, 4], [6, 8])
    res = wb.simulate(tr, cfg, latency=step)
    assert list(res.requests.preemptions) == [0, 1]
    np.testing.assert_allclose(res.requests.e2e_s, [0.037, 0.058], rtol=1e-12)
    assert list(res.steps.prefill_tokens[res.steps.prefill_requests > 0]) == [8, 5]
    assert list(res.requests.cached_tokens) == [0, 0]   # vLLM's num_cached_tokens: the first admission's hit
    plain = wb.simulate(tr, cfg.replace(prefix_caching=False), latency=step)
    np.testing.assert_allclose(plain.requests.e2e_s, [0.037, 0.062], rtol=1e-12)


# ---------------------------------------------------------------- the infinite cache
def test_infinite_cache_hit_rate_is_the_reused_share_of_prompt_tokens():
    """With a cache that never evicts and requests that never overlap, a prompt's cached tokens are its leading
    hash blocks that an earlier prompt had (the longest common chain), rounded down to whole 16-token blocks,
    capped at (prompt - 1) // 16 blocks; computed here from the hashes alone, with sets of tuples."""
    tr = wb.load_trace("mooncake_conv", use_real_timestamps=True).head(1500)
    tr = wb.Trace.from_arrays(np.arange(len(tr)) * 1000.0, tr.prompt_tokens, tr.output_tokens,
                              prefix_hashes=tr.prefix_hashes, prefix_block_tokens=512)
    seen, expected = set(), []
    for p, hashes in zip(tr.prompt_tokens.tolist(), tr.prefix_hashes):
        chain, reused, still = (), 0, True
        for j, h in enumerate(hashes.tolist()):
            chain = chain + (h,)
            if still and chain in seen:
                reused = min(512 * (j + 1), p)
            else:
                still = False
            seen.add(chain)
        expected.append(min(reused // 16, (p - 1) // 16) * 16)
    step = wb.StepTimeModel(prefill=(0.01, 1e-6, 0.0), decode=(0.001, 0.0, 0.0))
    blocks = int(tr.prompt_tokens.sum() + tr.output_tokens.sum()) // 16 + len(tr)
    res = wb.simulate(tr, cfg_of(block_size=16, kv_blocks=blocks, chunked_prefill=True,
                                 max_num_batched_tokens=200_000), latency=step)
    assert res.summary["completed"] == len(tr)
    np.testing.assert_array_equal(res.requests.cached_tokens, expected)
    assert res.summary["prefix_hit_rate"] == pytest.approx(sum(expected) / tr.prompt_tokens.sum())
    assert 0.2 < res.summary["prefix_hit_rate"] < 0.5   # Mooncake: 37% over the whole hour, 27% in its first 1,500


# ---------------------------------------------------------------- routing
def test_prefix_affinity_follows_the_cache_unless_the_replica_is_overloaded():
    """Two replicas, 64-token prompts with the same prefix [1, 2] (4 blocks of 16).  A (0 s) finds no cache
    anywhere: the least loaded replica, 0 (lowest index).  X1-X5 (1.000-1.004 s, 200 tokens each, so they stay
    outstanding) find the prefix cached on replica 0 (registered when A, then X1, were scheduled); with a margin
    of 2, X1-X3 go there (0, 1, 2 outstanding against 0 on replica 1); X4 would make it 3 > 0 + 2: the least
    loaded replica, 1 (nothing cached there: 0 tokens); X5 finds the prefix on both replicas (X4's blocks are
    registered at its admission) and takes the one with fewer outstanding requests, 1.  A margin of 10 keeps
    them all on replica 0.  Cached tokens: 48 (4 blocks, at most (64 - 1) // 16 = 3)."""
    step = wb.StepTimeModel(prefill=(0.01, 1e-5, 0.0), decode=(0.002, 0.0, 0.0))
    tr = trace_of([0, 1.000, 1.001, 1.002, 1.003, 1.004], [64] * 6, [2] + [200] * 5, prefix_block_tokens=32,
                  prefix_hashes=[[1, 2]] * 6)
    cfg = cfg_of(num_gpus=2, router="prefix_affinity", block_size=16, kv_blocks=100, prefix_affinity_margin=2)
    r = wb.simulate(tr, cfg, latency=step).requests
    assert list(r.gpu) == [0, 0, 0, 0, 1, 1]
    assert list(r.cached_tokens) == [0, 48, 48, 48, 0, 48]
    r = wb.simulate(tr, cfg.replace(prefix_affinity_margin=10), latency=step).requests
    assert list(r.gpu) == [0] * 6 and list(r.cached_tokens) == [0] + [48] * 5


def test_prefix_affinity_needs_prefix_caching_and_fields_are_validated():
    with pytest.raises(ValueError, match="needs prefix_caching=True"):
        wb.SimConfig(router="prefix_affinity")
    with pytest.raises(ValueError, match=r"kv_watermark: must be a share of the KV blocks in \[0, 1\)"):
        wb.SimConfig(kv_watermark=1.5)
    with pytest.raises(ValueError, match="prefix_caching: must be True or False"):
        wb.SimConfig(prefix_caching="yes")
    with pytest.raises(ValueError, match="max_paddings: must be an integer >= 0"):
        wb.SimConfig(max_paddings=-1)
    with pytest.raises(ValueError, match="prefix_affinity_margin: must be an integer >= 0"):
        wb.SimConfig(prefix_affinity_margin=1.5)
    continuous = wb.SimConfig(scheduler="continuous_fcfs", kv_blocks=300)
    assert continuous.kv_watermark_blocks == 3
    assert continuous.replace(chunked_prefill=True).kv_watermark_blocks == 0
    assert continuous.replace(chunked_prefill=True, kv_watermark=0.02).kv_watermark_blocks == 6


# ---------------------------------------------------------------- the notebook
def test_notebook_runs_at_a_tiny_size_and_writes_its_tables_and_figures(tmp_path):
    import pandas as pd

    from workbench.study.answers import columns
    from workbench.study.orchestrate.suite import PREFIX_CACHING, SuiteOptions, notebook_parameters

    out = tmp_path / "out"
    assert notebook_parameters(SuiteOptions(validate=True), PREFIX_CACHING) == {
        "results_dir": str(SuiteOptions().results_path)}
    execute_notebook("prefix_caching", tmp_path / "nb.ipynb",
                     {"results_dir": str(out), "num_requests": 120, "replicas": [2], "sweep_replicas": 2,
                      "kv_sweep_blocks": [8_000, 30_000], "routers": ["round_robin", "prefix_affinity"],
                      "capacity_search": False})
    sweep = pd.read_csv(out / "prefix_caching_kv.csv")
    # per size: caching off and on with the same cache-blind router, and on with prefix_affinity (issue 20: the
    # "off" runs used another router than the "on" ones, so their difference mixed router and cache)
    assert list(zip(sweep.router, sweep.prefix_caching))[:3] == [
        ("least_outstanding", False), ("least_outstanding", True), ("prefix_affinity", True)]
    assert len(sweep) == 6 and (sweep.kv_tokens == 16 * sweep.kv_blocks).all()
    assert (sweep[~sweep.prefix_caching].prefix_hit_rate == 0).all()
    big = sweep[sweep.prefix_caching & (sweep.kv_blocks == 30_000) & (sweep.router == "prefix_affinity")].iloc[0]
    assert big.prefix_hit_rate > 0 and big.completed == 120
    routers = pd.read_csv(out / "prefix_caching_routers.csv")
    # round_robin on and off, prefix_affinity on (it needs the cache)
    assert list(zip(routers.router, routers.prefix_caching)) == [("round_robin", True), ("round_robin", False),
                                                                 ("prefix_affinity", True)]
    for csv in ("prefix_caching_kv.csv", "prefix_caching_routers.csv", "prefix_caching_at_capacity.csv"):
        assert columns.undocumented_columns(pd.read_csv(out / csv, nrows=1).columns) == [], csv
    for png in ("prefix_caching_kv.png", "prefix_caching_routers.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "nb.ipynb").read_text()
    assert "prefix_affinity serves" in text and "Prompt tokens served from the cache at their first admission" in text
    found = json.loads((out / "prefix_caching_findings.json").read_text())
    assert found["question"] == "What do prefix caching and cache-aware routing buy?" and found["answer"]
    assert found["traces"][0]["requests"] == 120 and not found["traces"][0]["synthetic"]
    # tables for reading (units, hit rates as percentages) and the setup said once: trace, hardware, SLA
    assert "prefix hit rate" in text and "mean TPOT (ms)" in text and "Hardware model: BLIS" in text
    assert "TTFT <= 2 s and TPOT <= 100 ms" in text
    # the folder records the notebook's parameters: another parameter set is refused there before computing
    with pytest.raises(Exception, match="prefix_caching"):
        execute_notebook("prefix_caching", tmp_path / "nb2.ipynb",
                         {"results_dir": str(out), "num_requests": 60, "capacity_search": False})


@pytest.mark.parametrize("kwargs, message", [
    (dict(routers="round_robin,nearest"), "routers: unknown 'nearest'"),
    (dict(kv_sweep_blocks="8000,0"), "kv_sweep_blocks: must be an integer >= 1, got '0'"),
    (dict(num_requests=2.5), "num_requests: must be an integer >= 2"),
    (dict(capacity_search="no"), "capacity_search: must be True or False"),
    (dict(capacity_search=False, attainment=0.5), "attainment=0.5 has no effect with capacity_search=False"),
    (dict(ttft_sla_s=0), "ttft_sla_s: must be > 0 s, got 0"),
    (dict(dataset="mooncake"), "dataset: 'mooncake' is neither a dataset name"),
])
def test_notebook_parameters_are_validated_before_anything_is_written(kwargs, message, tmp_path):
    from workbench.study.runs.prefix_caching import PrefixCachingParams

    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        PrefixCachingParams(**kwargs, results_dir=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    good = PrefixCachingParams(routers="round_robin, prefix_affinity", replicas="2,4", num_requests="100")
    assert good.routers == ("round_robin", "prefix_affinity") and good.replicas == (2, 4) and good.num_requests == 100


@pytest.mark.parametrize("chunked", [False, True])
def test_more_requests_can_run_than_there_are_blocks_when_they_share_them(chunked):
    """Ten requests with one fully cached 64-token prompt (4 blocks) fit a 6-block cache together: each holds
    the same 4 blocks (a whole-prompt hit recomputes its last block in place).  Their decodes then need blocks
    of their own and preempt each other; the engine matches the step-by-step reference."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_continuous import assert_matches_reference

    n = 10
    tr = trace_of(np.r_[0.0, np.full(n, 1.0)], np.full(n + 1, 64), np.r_[1, np.full(n, 5)],
                  prefix_hashes=[[1, 2]] * (n + 1), prefix_block_tokens=32)
    cfg = cfg_of(block_size=16, kv_blocks=6, chunked_prefill=chunked, max_num_seqs=16, kv_watermark=0.0)
    res = assert_matches_reference(tr, cfg)
    assert res.summary["completed"] == n + 1 and res.summary["preemptions_total"] > 0
    assert list(res.requests.cached_tokens) == [0] + [48] * n


# ---------------------------------------------------------------- the study's explanation and sentences
def test_at_capacity_counts_the_prefill_work_recomputation_included():
    """The hand case of test_a_preempted_request_finds_its_own_blocks_again: the prompts are 4 + 4 = 8 tokens; with
    caching the replicas compute 8 + 5 (B readmitted finds its first block), without it 8 + 9."""
    import pandas as pd

    from workbench.study.runs.prefix_caching import at_capacity

    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    cfg = cfg_of(block_size=4, kv_blocks=4, chunked_prefill=True, router="round_robin")
    tr = trace_of([0.0, 0.0], [4, 4], [6, 8])
    table = pd.DataFrame([{"num_gpus": 1, "router": "round_robin", "prefix_caching": True, "capacity_scaling": 1.0},
                          {"num_gpus": 1, "router": "round_robin", "prefix_caching": False,
                           "capacity_scaling": float("nan")}])
    rows = at_capacity(tr, table, cfg, step).set_index("prefix_caching")
    assert rows.loc[True, "prefill_tokens_computed"] == 13 and rows.loc[False, "prefill_tokens_computed"] == 17
    assert (rows.prompt_tokens_total == 8).all()
    assert rows.loc[True, "prefill_work_ratio"] == 13 / 8 and rows.loc[False, "prefill_work_ratio"] == 17 / 8
    assert list(rows.preemptions_total) == [1, 1]


def _hand_tables():
    """A kv sweep, a router table and an at-capacity table made by hand (numbers chosen to check each sentence)."""
    import pandas as pd

    sweep = pd.DataFrame([
        # kv_tokens, router, caching, hit rate, mean TTFT, p99 TTFT, preemptions
        (1_000, "least_outstanding", False, 0.0, 2.0, 9.0, 500),
        (1_000, "least_outstanding", True, 0.04, 1.0, 3.0, 20),
        (1_000, "prefix_affinity", True, 0.05, 0.9, 3.0, 20),
        (4_000, "least_outstanding", False, 0.0, 1.0, 2.0, 0),
        (4_000, "least_outstanding", True, 0.10, 0.95, 2.0, 0),
        (4_000, "prefix_affinity", True, 0.40, 0.70, 1.5, 0),
    ], columns=["kv_tokens", "router", "prefix_caching", "prefix_hit_rate", "ttft_mean_s", "ttft_p99_s",
                "preemptions_total"])
    table = pd.DataFrame([
        (4, "round_robin", True, 0.05, 0.5, 8.0), (4, "round_robin", False, 0.0, 0.6, 5.0),
        (4, "prefix_affinity", True, 0.08, 0.45, 8.1),
        (8, "round_robin", True, 0.05, 0.3, 16.0), (8, "round_robin", False, 0.0, 0.3, 15.0),
        (8, "prefix_affinity", True, 0.15, 0.25, 20.0),
    ], columns=["num_gpus", "router", "prefix_caching", "prefix_hit_rate", "ttft_mean_s", "capacity_rps"])
    at_cap = pd.DataFrame([
        (4, "round_robin", True, 8.0, 0.91, 10, 8, 0.1, 0.9), (4, "round_robin", False, 8.0, 0.05, 1_000, 300, 0.0, 3.0),
        (8, "round_robin", True, 16.0, 0.9, 0, 0, 0.1, 0.9), (8, "round_robin", False, 16.0, 0.8, 0, 0, 0.0, 1.0),
    ], columns=["num_gpus", "router", "prefix_caching", "offered_rps", "slo_attainment", "preemptions_total",
                "requests_preempted", "prefix_hit_rate", "prefill_work_ratio"])
    return sweep, table, at_cap


def test_findings_compare_the_cache_with_the_same_router_and_the_router_apart():
    from workbench.study.answers import prefix_caching as pc

    lines = pc.findings(*_hand_tables())
    # hit rates by cache size, in tokens (one unit everywhere)
    assert lines[0] == ("Prompt tokens served from the cache at their first admission, with 1,000 tokens of KV cache "
                        "per replica: 4.0% (least_outstanding), 5.0% (prefix_affinity); with 4,000 tokens: 10% "
                        "(least_outstanding), 40% (prefix_affinity).")
    # the cache alone: 1.0 -> 0.95 s is -5%; the router on top: 0.95 -> 0.70 s is -26%
    assert "caching alone (both runs routed by least_outstanding) changes the mean TTFT by -5% (1 s -> 0.95 s)" \
        in lines[1]
    assert "routing by cached prefix (prefix_affinity) instead changes it by -26% more (-> 0.7 s, hit rate 10% -> 40%)" \
        in lines[1]
    assert lines[2].startswith("At 1,000 tokens per replica requests are preempted 500 times without caching and 20 "
                               "times with it (both least_outstanding)")
    assert "On 4 replicas caching changes the capacity (without -> with): round_robin 5 -> 8 req/s, +60%." in lines
    # 15 -> 16 is +6.7%: more than the 2% resolution, so called
    assert "On 8 replicas caching changes the capacity (without -> with): round_robin 15 -> 16 req/s, +7%." in lines
    # the largest gain explained by the prefill work: 3.0 - 0.9 = 2.1 saved, hits 0.1, recomputation (3 - 1) - 0 = 2.0
    explained = next(line for line in lines if line.startswith("Where caching buys the most"))
    assert "(round_robin on 4 replicas), run both ways at 8 req/s" in explained
    assert "preempted 1,000 times (300 requests), the replicas compute 3.00 times" in explained
    assert "(2.10 x the prompt tokens), first-admission prefix hits account for 0.10 and recomputation avoided " \
           "after preemption for 2.00." in explained
    # 8.1 against 8.0 is within the 2% resolution: tied, not a win; 20 against 16 is +25%
    assert any("capacity 8.1 req/s against 8 for the best cache-blind router, round_robin: +1% (tied: within the "
               "capacity search's 2% resolution)" in line for line in lines)
    assert any("capacity 20 req/s against 16 for the best cache-blind router, round_robin: +25%." in line
               for line in lines)


def test_the_answer_says_what_caching_and_routing_buy():
    from workbench.study.answers import prefix_caching as pc

    sweep, table, at_cap = _hand_tables()
    text = pc.answer(sweep, table, at_cap)
    assert text.startswith("Caching changes the capacity by +7% to +60% (on 4 and 8 replicas, every router run both "
                           "ways)")
    # recomputation (2.0 and 0.0) against hits (0.1 and 0.1): not mostly recomputation everywhere, not mostly hits
    assert "mostly" not in text
    assert "At the trace's own rate it changes the mean TTFT by -5% (the same router, least_outstanding, at the " \
           "largest cache, 4,000 tokens per replica)." in text
    assert text.endswith("routing by cached prefix (prefix_affinity) changes the capacity on 4 replicas by +1% "
                         "(tied: within the capacity search's 2% resolution) and on 8 replicas by +25%.")
    at_cap.loc[at_cap.num_gpus == 8, "prefill_work_ratio"] = [0.9, 2.0]   # now recomputation dominates on 8 too
    assert "mostly by sparing preempted requests their recomputation" in pc.answer(sweep, table, at_cap)
