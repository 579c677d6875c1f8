# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # What do prefix caching and cache-aware routing buy?
#
# vLLM (v0.6 on, and the v1 engine always) keeps the KV blocks of prompt prefixes it has computed and
# reuses them: a prefill computes only the tokens not cached. On a real conversation service much of every
# prompt is an earlier prompt plus its answer, so the cache can serve a large share of the prefill work, if
# the request lands on the replica that holds its prefix and the cache is large enough to keep it.
#
# The trace is Mooncake's one-hour sample of Kimi's conversation service (`mooncake_conv`: 12,031 requests,
# mean prompt 12,035 tokens, with the hashes of every prompt's 512-token blocks). The engine follows vLLM
# v1 rule by rule (chunked prefill, automatic prefix caching with an LRU pool of free blocks, recompute
# preemption keeping generated tokens: `workbench.sim.continuous_engine`), timed by BLIS's fitted step model
# of Llama-3.1-8B on one H100 (vLLM v0.11).
#
# 1. **KV-cache size**: prefix hit rate and mean/p99 time to first token (TTFT) against the KV cache per
#    replica (in tokens throughout: blocks of 16 tokens x 16), at the trace's rate. Caching off and on are
#    compared with the same cache-blind router (least_outstanding), so only the cache differs; caching on with
#    prefix_affinity (the replica caching the longest prefix, unless it has `affinity_margin` more requests
#    than the least loaded) shows what routing by cached prefix adds.
# 2. **Routers**: round_robin, least_outstanding, least_kv and prefix_affinity on 4 and 8 replicas: hit rate,
#    TTFT, goodput at the trace's rate, and capacity (the largest rate at which `attainment` of the requests
#    meet both the TTFT and the TPOT limit); each cache-blind router with caching off too.
# 3. **Why caching raises capacity**: each router run both ways, at the load where caching on just meets the
#    target: preemptions, and the prefill work done against the trace's prompt tokens.

# %% tags=["parameters"]
dataset = "mooncake_conv"     # a trace with prefix hashes: mooncake_conv or mooncake_synthetic
num_requests = None           # None: the whole trace
time_scale = 1.0              # x the trace's real rate
profile_model = "meta-llama/llama-3.1-8b-instruct"   # BLIS step-time model (GPU H100, TP 1)
kv_blocks = 26_000            # KV blocks of 16 tokens per replica: (80 GB x 0.9 - 16 GB) / 128 KiB per token
kv_sweep_blocks = [8_000, 12_000, 16_000, 26_000, 40_000, 64_000, 128_000]   # 128K to 2M tokens
sweep_replicas = 8
replicas = [4, 8]
routers = ["round_robin", "least_outstanding", "least_kv", "prefix_affinity"]
max_num_batched_tokens = 8192
max_num_seqs = 256
ttft_sla_s = 2.0
tpot_sla_s = 0.1
attainment = 0.9
affinity_margin = 16
capacity_search = True
results_dir = "results/default"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import prefix_caching as pc
from workbench.study.runs import prefix_caching as runner
from workbench.study.present.console import notebook_setup

notebook_setup()  # plain log lines, each warning once, compact tables
params = runner.PrefixCachingParams.from_namespace(globals())   # the parameters above, validated
results = params.claim_results_dir()   # refused before anything runs if it holds another prefix-caching report
trace, step, cfg = params.trace(), params.step_model(), params.config()
display(Markdown(params.setup_text(trace, step)))

# %% [markdown]
# ## 1. Hit rate and TTFT against the KV cache per replica
# On `sweep_replicas` replicas: least_outstanding with caching off and on, prefix_affinity with caching on. A
# request whose prompt and output cannot fit a replica's cache at all is rejected (the table counts them: the
# longest Mooncake prompt has 126K tokens, so 128,000 tokens, 8,000 blocks, is the smallest cache that serves
# the whole trace).

# %%
sweep = runner.kv_sweep(trace, cfg, step, params.kv_sweep_blocks)
sweep.to_csv(results / "prefix_caching_kv.csv", index=False)
kv_title = (f"Prefix hit rate and TTFT against the KV cache per replica ({params.dataset}, {len(trace):,} "
            f"requests)\n{params.sweep_replicas} replicas at the trace's rate; {step.name}")
pc.plot_kv_sweep(sweep, kv_title, results_dir=results)

# %%
pc.kv_table(sweep)

# %% [markdown]
# ## 2. Routers on 4 and 8 replicas

# %%
table = runner.router_table(trace, cfg, step, routers=params.routers, replicas=params.replicas,
                            attainment=params.attainment, search_capacity=params.capacity_search)
table.to_csv(results / "prefix_caching_routers.csv", index=False)
routers_title = (f"Routers with prefix caching on {params.dataset} ({len(trace):,} requests)\nTTFT <= "
                 f"{params.ttft_sla_s:g} s, TPOT <= {params.tpot_sla_s * 1e3:g} ms for {params.attainment:.0%} of the "
                 f"requests; {step.name}")
pc.plot_routers(table, routers_title, results_dir=results)

# %%
pc.routers_table(table)

# %% [markdown]
# ## 3. Why caching raises capacity
# Each router run with caching on and off, both at the load where caching on just meets the target (its
# capacity): the requests preempted, and the prompt tokens the replicas computed (prefill steps, recomputation
# after preemption included) over the trace's prompt tokens. Without preemption that is 1 - the hit rate; a
# preempted request recomputes its prompt and everything it generated, unless it finds its blocks still cached.

# %%
at_cap = runner.at_capacity(trace, table, cfg, step)
at_cap.to_csv(results / "prefix_caching_at_capacity.csv", index=False)
pc.at_capacity_table(at_cap) if len(at_cap) else print("no capacity searched (capacity_search=False)")

# %% [markdown]
# ## What the results say

# %%
from workbench.study.answers.findings import trace_record, write_findings

question = "What do prefix caching and cache-aware routing buy?"
resolution = runner.CAPACITY_RESOLUTION  # capacities closer than this are tied
answer = pc.answer(sweep, table, at_cap, resolution=resolution)
lines = pc.findings(sweep, table, at_cap, resolution=resolution)
write_findings(results, runner.NOTEBOOK, question=question, answer=answer, findings=lines,
               traces=[trace_record(trace, f"at {params.time_scale:g} x its recorded rate")],
               figures={"prefix_caching_kv.png": kv_title, "prefix_caching_routers.png": routers_title})
display(Markdown(f"**{question}** {answer}\n\n" + "\n".join(f"- {line}" for line in lines)))
