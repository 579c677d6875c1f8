"""The roofline step-time model: each part against a hand computation on a round-numbered model and GPU, the
engines' table and linear forms against the roofline, vLLM's KV-block rule, invariants, bad input."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.hardware.catalog import GPU, ModelArch
from workbench.hardware.roofline import (ENGINE_EFFICIENCIES, DoesNotFit, Efficiencies, Roofline, StepStats,
                                         activation_peak_bytes, kv_blocks, kv_memory, linear_fit, ridge)

# a round-numbered model and GPU: 2 layers, hidden 1024, 8 heads of 128 (MHA), SwiGLU MLP of 4096, 1000 tokens
TOY = ModelArch(name="toy", model_type="llama", layers=2, hidden_size=1024, heads=8, kv_heads=8, head_dim=128,
                intermediate_size=4096, vocab_size=1000)
# 100 TFLOP/s, 1000 GB/s, a 100 GB/s link, 10 GB of memory
CARD = GPU(key="card", name="card", dense_tflops=100.0, memory_gb=10.0, memory_bandwidth_gbps=1000.0,
           interconnect="link", interconnect_gbps=100.0, price_per_hour=1.0, device_memory_bytes=10e9)
# every share 1 and every fixed cost 0: the hand computations below are the spec sheet's
IDEAL = Efficiencies(gemm_compute=1, attention_compute=1, memory=1, kv_memory=1, link=1, allreduce_s=0, layer_s=0,
                     step_s=0, sequence_s=0)


def parts(tp=1, efficiencies=IDEAL, **stats):
    return {k: float(v) for k, v in Roofline(TOY, CARD, tp, 2, efficiencies).parts(StepStats.of(**stats)).items()}


def test_linear_layers_are_memory_bound_for_one_token_by_hand():
    # per layer: weights 4 x 1024^2 (attention) + 3 x 1024 x 4096 (MLP) = 16,777,216 values x 2 bytes at 1e12 B/s;
    # activations of one token: 12 passes over the hidden width (8 elementwise, 4 GEMM inputs/outputs), QKV out and
    # O in (2 x 1024 + 2 x 1024), gate/up out and down in (3 x 4096): 28,672 values x 2 bytes
    weights_s = 16_777_216 * 2 / 1e12
    act_s = (12 * 1024 + 4 * 1024 + 3 * 4096) * 2 / 1e12
    # compute: 2 x 16,777,216 FLOPs at 1e14 FLOP/s, far below
    assert 2 * 16_777_216 / 1e14 < weights_s
    assert parts(decode_sequences=1)["gemm"] == pytest.approx(2 * (weights_s + act_s), rel=1e-12)


def test_linear_layers_are_compute_bound_for_many_tokens_by_hand():
    tokens = 4096
    compute_s = 2 * tokens * 16_777_216 / 1e14        # 1.37 ms per layer; memory is 0.27 ms
    assert parts(prefill_tokens=tokens)["gemm"] == pytest.approx(2 * compute_s, rel=1e-12)


def test_a_gemm_near_the_ridge_is_slower_than_either_bound_by_hand():
    # ridge exponent 2: compute and memory time add as the sides of a right triangle
    assert float(ridge(3.0, 4.0, 2.0)) == pytest.approx(5.0)
    assert float(ridge(4.0, 3.0, 2.0)) == pytest.approx(5.0)
    assert float(ridge(3.0, 4.0, 1.0)) == pytest.approx(7.0)          # exponent 1: no overlap at all
    assert float(ridge(3.0, 4.0, math.inf)) == 4.0                    # the plain roofline
    assert float(ridge(0.0, 0.0, 2.0)) == 0.0
    # the toy layer at exponent 2: 64 tokens put its compute (2 x 64 x 16,777,216 FLOPs at 1e14 = 21 us) near
    # its weights' read (33.6 MB and the activations at 1e12 B/s = 37 us): the GEMM takes the hypotenuse
    e = dataclasses.replace(IDEAL, ridge_exponent=2.0)
    tokens = 64
    compute_s = 2 * tokens * 16_777_216 / 1e14
    memory_s = (16_777_216 * 2 + tokens * (12 * 1024 + 4 * 1024 + 3 * 4096) * 2) / 1e12
    assert parts(efficiencies=e, prefill_tokens=tokens)["gemm"] == pytest.approx(
        2 * math.hypot(compute_s, memory_s), rel=1e-12)
    assert parts(prefill_tokens=tokens)["gemm"] == pytest.approx(2 * max(compute_s, memory_s), rel=1e-12)


def test_the_floor_is_every_peak_and_no_fixed_cost():
    stated = Roofline("llama-3.1-8b", "h100-sxm", 1, 2, ENGINE_EFFICIENCIES["vllm-v1"])
    floor = stated.at_peak()
    e = floor.efficiencies
    assert (e.gemm_compute, e.attention_compute, e.memory, e.kv_memory, e.link) == (1, 1, 1, 1, 1)
    assert math.isinf(e.ridge_exponent) and e.step_s == e.layer_s == e.sequence_s == 0
    # the toy's floor of one decode: its weights (2 layers x 33.6 MB + the 2 MB head) read once at 1e12 B/s, plus
    # the activations, the KV cache and the logits
    toy = Roofline(TOY, CARD, 1, 2, ENGINE_EFFICIENCIES["vllm-v1"]).at_peak()
    assert toy.step_time_s(context_lengths=[1]) == pytest.approx(
        Roofline(TOY, CARD, 1, 2, IDEAL).step_time_s(context_lengths=[1]), rel=1e-12)
    for steps in ({"context_lengths": [100] * 8}, {"prompt_lengths": [512, 1024]}):
        assert floor.step_time_s(**steps) < stated.step_time_s(**steps)


def test_decode_attention_reads_the_kv_cache_by_hand():
    # 4 decodes of 1,000 tokens: 4,000 tokens x 2 (K, V) x 8 heads x 128 x 2 bytes, plus Q and O of 4 tokens
    memory_s = (4000 * 2 * 8 * 128 * 2 + 4 * 2 * 8 * 128 * 2) / 1e12
    assert 4000 * 4 * 8 * 128 / 1e14 < memory_s                     # compute: 4 x heads x head size per pair
    assert parts(decode_sequences=4, decode_context=4000)["decode_attention"] == pytest.approx(2 * memory_s)


def test_prefill_attention_counts_causal_pairs_by_hand():
    # one prompt of 2,048 tokens: 2048 x 2049 / 2 query-key pairs, 4 x 8 x 128 FLOPs each
    pairs = 2048 * 2049 / 2
    assert parts(prefill_tokens=2048)["prefill_attention"] == pytest.approx(2 * pairs * 4 * 8 * 128 / 1e14)
    # the same 2,048 tokens after 1,000 cached ones attend to them too: 2048 x (1000 + 2049 / 2) pairs
    stats = dict(prefill_tokens=2048, prefill_pairs=2048 * (1000 + 2049 / 2), prefill_kv_tokens=3048,
                 prefill_sequences=1)
    assert parts(**stats)["prefill_attention"] == pytest.approx(2 * 2048 * (1000 + 1024.5) * 4 * 8 * 128 / 1e14)


def test_output_head_by_hand():
    # 3 sequences emit a token: vocabulary x hidden weights read once (memory-bound), fp32 logits written
    expected = (1000 * 1024 * 2 + 3 * 1000 * 4) / 1e12
    assert parts(decode_sequences=3, decode_context=30)["head"] == pytest.approx(expected)


def test_tensor_parallel_all_reduces_by_hand():
    e = dataclasses.replace(IDEAL, allreduce_s=1e-5)
    # TP 4: per layer two ring all-reduces of 100 tokens x 1024 x 2 bytes, 2 x 3/4 of it over the 1e11 B/s link,
    # plus the logits of 100 sequences gathered: 3/4 x 100 x 1000 x 2 bytes, and one more all-reduce latency
    per_allreduce = 1e-5 + 2 * 3 / 4 * 100 * 1024 * 2 / 1e11
    expected = 2 * 2 * per_allreduce + 1e-5 + 3 / 4 * 100 * 1000 * 2 / 1e11
    assert parts(tp=4, efficiencies=e, decode_sequences=100, decode_context=100)["communication"] == \
        pytest.approx(expected)
    assert parts(tp=1, efficiencies=e, decode_sequences=100, decode_context=100)["communication"] == 0


def test_fixed_costs_by_hand():
    e = dataclasses.replace(IDEAL, layer_s=1e-4, step_s=2e-3, sequence_s=1e-5, serving_step_s=1e-3,
                            serving_sequence_s=2e-5, serving_context_s=1e-8)
    # 2 layers x 0.1 ms + 2 ms + 1 ms + 5 sequences x (10 + 20) us + 500 tokens of context x 10 ns
    assert parts(efficiencies=e, decode_sequences=5, decode_context=500)["overhead"] == \
        pytest.approx(2e-4 + 2e-3 + 1e-3 + 5 * 3e-5 + 500 * 1e-8)


def test_moe_reads_the_experts_the_tokens_touch():
    # 8 experts, 2 per token: one token touches 2; two touch 8 (1 - (6/8)^2) = 3.5 in expectation (uniform routing)
    moe = dataclasses.replace(TOY, name="moe", model_type="mixtral", experts=8, active_experts=2)
    expert_bytes = 3 * 1024 * 4096 * 2
    one = Roofline(moe, CARD, 1, 2, IDEAL).parts(StepStats.of(decode_sequences=1))["gemm"]
    two = Roofline(moe, CARD, 1, 2, IDEAL).parts(StepStats.of(decode_sequences=2))["gemm"]
    # the step of two tokens reads 1.5 more experts per layer (and a little more activation)
    assert float(two - one) == pytest.approx(2 * 1.5 * expert_bytes / 1e12, rel=0.01)


def test_expert_parallel_ranks_read_their_share_of_the_touched_experts_by_hand():
    # 8 experts, 2 per token, ep 2: one token on each of the two ranks; the group's 2 tokens touch 8 (1 - (6/8)^2)
    # = 3.5 experts in expectation, each rank holds 4 of the 8, so it reads 3.5 / 2 = 1.75 of them; alone
    # (ep 1) the one token reads its 2 experts
    moe = dataclasses.replace(TOY, name="moe", model_type="mixtral", experts=8, active_experts=2)
    expert_bytes = 3 * 1024 * 4096 * 2
    alone = Roofline(moe, CARD, 1, 2, IDEAL).terms(StepStats.of(decode_sequences=1))["gemm"][1]
    rank = Roofline(moe, CARD, 1, 2, IDEAL, ep=2).terms(StepStats.of(decode_sequences=1))["gemm"][1]
    assert float(alone - rank) == pytest.approx(2 * (2 - 1.75) * expert_bytes / 1e12, rel=1e-9)
    # the hidden states of 100 tokens all-gathered and reduce-scattered around each of the 2 MoE layers:
    # 2 x 2 x (ep - 1 = 1) x 100 x 1024 x 2 bytes over the 1e11 B/s link, plus a latency each
    e = dataclasses.replace(IDEAL, allreduce_s=1e-5)
    comm = Roofline(moe, CARD, 1, 2, e, ep=2).parts(StepStats.of(decode_sequences=100, decode_context=100))
    assert float(comm["communication"]) == pytest.approx(2 * 2 * (1e-5 + 100 * 1024 * 2 / 1e11))


def test_expert_parallelism_splits_the_experts_memory():
    # Qwen3-30B-A3B: 48 layers x 128 experts x 3 x 2048 x 768 bf16 values = 57.98e9 bytes of experts; at ep 2
    # each GPU holds half of them, so the KV cache gains 28.99e9 bytes
    one = kv_memory("qwen3-30b-a3b", "rtx-pro-6000", max_num_batched_tokens=2048, max_num_seqs=128)
    two = kv_memory("qwen3-30b-a3b", "rtx-pro-6000", max_num_batched_tokens=2048, max_num_seqs=128, ep=2)
    assert one["weights"] - two["weights"] == pytest.approx(48 * 128 * 3 * 2048 * 768 * 2 / 2, rel=1e-9)
    with pytest.raises(ValueError, match="no experts"):
        Roofline("llama-3.1-8b", "h100-sxm", ep=2)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        Roofline("qwen3-30b-a3b", "h100-sxm", ep=3)
    assert "/ep2" in wb.StepTimeModel.roofline("qwen3-30b-a3b", "rtx-pro-6000", ep=2).name


def test_table_prices_single_piece_steps_as_the_roofline():
    rng = np.random.default_rng(7)
    for model, gpu, tp in (("llama-3.1-8b", "rtx-4090", 1), ("qwen3-30b-a3b", "rtx-pro-6000", 2),
                           ("opt-13b", "a100-80gb", 1)):
        roofline = Roofline(model, gpu, tp, 2, ENGINE_EFFICIENCIES["vllm-v1"])
        table = roofline.table()
        for _ in range(200):
            pieces = int(rng.integers(0, 2))
            l = list(rng.integers(1, 8000, pieces))
            p = list(rng.integers(0, 20000, pieces))
            n = int(rng.integers(0 if pieces else 1, 300))
            ctx = list(rng.integers(1, 30000, n))
            exact = roofline.step_time_s(l, p, ctx)
            assert table.step_time_s(l, p, ctx) == pytest.approx(exact, rel=0.01), (model, l, p, ctx)


def test_table_prices_whole_prompts_as_the_roofline():
    # vLLM v0.2's prefill steps: several whole prompts, nothing cached (sum l^2 / 2 is exact then)
    roofline = Roofline("opt-13b", "a100-80gb", 1, 2, ENGINE_EFFICIENCIES["vllm-v0.2"])
    table = roofline.table()
    for prompts in ([100, 200, 300], [2048] * 8, [17, 4000]):
        assert table.step_time_s(prompts) == pytest.approx(roofline.step_time_s(prompts), rel=0.01)


def test_linear_fit_follows_the_roofline_where_it_is_linear():
    fitted = linear_fit(Roofline("llama-3.1-8b", "h100-sxm", 1), max_num_batched_tokens=4096)
    assert fitted["fit_median_error"] < 0.02
    assert fitted["fit_max_error"] < 0.35


def test_step_model_kinds_and_names():
    table = wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxm", tp=2)
    assert table.kind == "roofline" and table.name == "llama-3.1-8b@h100-sxm/tp2"
    linear = wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxm", tp=2, table=False)
    assert "roofline" in linear.name and "linear fit" in linear.name and "roofline" in linear.source
    old = wb.StepTimeModel.roofline("opt-13b", "a100-80gb", engine="vllm-v0.2")
    assert "vllm-v0.2" in old.name


def test_tensor_parallelism_speeds_up_large_steps():
    one = wb.StepTimeModel.roofline("llama-3.1-70b", "h100-sxm", tp=2).step_time_s([4096])
    four = wb.StepTimeModel.roofline("llama-3.1-70b", "h100-sxm", tp=4).step_time_s([4096])
    assert four < one


# ------------------------------------------------------------------------------------------------ KV cache
def test_kv_blocks_by_hand():
    # 10e9 bytes x 0.9 - weights (2 x (4 x 1024^2 + 3 x 1024 x 4096) + 2 x 1000 x 1024, x 2 bytes)
    # - activation peak (1024 tokens x (2 x 1024 + 3 x 4096) x 2 bytes + 2 x 8 sequences x 1000 x 4 bytes + reserve)
    weights = (2 * 16_777_216 + 2 * 1000 * 1024) * 2
    peak = 1024 * (2 * 1024 + 3 * 4096) * 2 + 2 * 8 * 1000 * 4 + 0.765e9
    per_block = 16 * 2 * 2 * 8 * 128 * 2
    expected = math.floor((10e9 * 0.9 - weights - peak) / per_block)
    assert activation_peak_bytes(TOY, max_num_batched_tokens=1024, max_num_seqs=8) == pytest.approx(peak)
    assert kv_blocks(TOY, CARD, gpu_memory_utilization=0.9, max_num_batched_tokens=1024, max_num_seqs=8) == expected


def test_kv_blocks_of_the_measured_deployments():
    # vLLM 0.19, Llama-3.1-8B, RTX 4090, 0.9, 2048 tokens, 256 sequences: 2588 blocks (meta.json; the one
    # startup that sets NON_TORCH_RESERVE_BYTES, so this holds by construction)
    assert kv_blocks("llama-3.1-8b", "rtx-4090", gpu_memory_utilization=0.9, max_num_batched_tokens=2048,
                     max_num_seqs=256) == 2588
    # independent: DistServe's vLLM v0.2 setup of OPT-13B on an A100-80GB at 0.95 (16,384 tokens) estimated 4046
    blocks = kv_blocks("opt-13b", "a100-80gb", gpu_memory_utilization=0.95, max_num_batched_tokens=16384)
    assert blocks == pytest.approx(4046, rel=0.02)


def test_a_model_that_does_not_fit_is_refused_with_the_numbers():
    with pytest.raises(DoesNotFit, match=r"llama-3.1-70b does not fit on h100-sxm at tp=1: .*141.1 GB"):
        wb.StepTimeModel.roofline("llama-3.1-70b", "h100-sxm")
    with pytest.raises(DoesNotFit, match="raise tp"):
        wb.simulate(wb.Trace.from_arrays([0.0], [10], [10]), wb.SimConfig(scheduler="continuous_fcfs"),
                    latency="llama-3.1-70b@l4")
    # at TP 2 it fits
    assert wb.StepTimeModel.roofline("llama-3.1-70b", "h100-sxm", tp=2).kind == "roofline"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dtype: unknown 'fp8'"):
        wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxm", dtype="fp8")
    with pytest.raises(ValueError, match="tp: llama-3.1-8b has 32 attention heads, which 3 GPUs"):
        wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxm", tp=3)
    with pytest.raises(ValueError, match="engine: unknown 'vllm'"):
        wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxm", engine="vllm")
    with pytest.raises(ValueError, match=r"unknown 'h100-sxn' \(closest: h100-sxm"):
        wb.StepTimeModel.roofline("llama-3.1-8b", "h100-sxn")


# ------------------------------------------------------------------------------------------------ invariants
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["llama-3.1-8b", "qwen3-30b-a3b", "opt-13b", "mixtral-8x7b"]),
       st.sampled_from([1, 2, 4]), st.integers(0, 8192), st.integers(0, 256), st.integers(1, 4096),
       st.integers(1, 512))
def test_more_work_never_takes_less_time(model, tp, tokens, decodes, context, more):
    roofline = Roofline(model, "h200", tp, 2, ENGINE_EFFICIENCIES["vllm-v1"])
    base = StepStats.of(prefill_tokens=tokens, decode_sequences=decodes, decode_context=decodes * context)
    more_tokens = StepStats.of(prefill_tokens=tokens + more, decode_sequences=decodes,
                               decode_context=decodes * context)
    more_context = StepStats.of(prefill_tokens=tokens, decode_sequences=decodes,
                                decode_context=decodes * (context + more))
    t = float(roofline.time_s(base))
    assert t > 0
    assert float(roofline.time_s(more_tokens)) >= t
    assert float(roofline.time_s(more_context)) >= t
