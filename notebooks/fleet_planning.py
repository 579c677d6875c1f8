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
# # The cheapest fleet that keeps the SLA: GPU type, count, TP, colocated or disaggregated
#
# Step 2 answers "how many GPUs" for one GPU type at one load. This notebook answers what to buy or rent for a
# load: for every GPU type listed, every tensor-parallel degree, colocated replicas (vLLM V1) or prefill and
# decode pools apart (DistServe), the fewest GPUs that keep the SLA at the trace's rate, and what they cost per
# hour and per million output tokens (`wb.plan_fleet`).
#
# 1. **Memory first**: a candidate whose weights and one request's KV cache do not fit its GPUs is rejected
#    before anything runs (vLLM's rule).
# 2. **A bound prunes**: the fewest replicas that *could* meet the SLA (GPU work and KV cache against the
#    deadlines, in bursts of the trace), never more than the simulator needs; a candidate whose bound already
#    costs more than a fleet confirmed by simulation is not simulated.
# 3. **Simulation confirms** the rest, cheapest bound first: the fewest replicas (or the prefill/decode split)
#    meeting the SLA, then each fleet's capacity and headroom.
#
# Every row says where its step times come from: a measured profile where the workbench has one, else the
# roofline (estimated from the model's config.json and the GPU's spec sheet, not measured).

# %% tags=["parameters"]
dataset = "synthetic"         # the trace: a dataset name or a CSV
num_requests = 20000          # its first requests
rps_scaling = 200.0           # arrivals divided by this
rate_rps = 0.0                # > 0: replay the trace at this rate instead of its own
model = "llama-3.1-8b"        # a catalogued model or a config.json path
gpus = ["a100-80gb", "h100-sxm", "l40s", "l4"]   # catalogued GPU names
tp = [1, 2, 4, 8]             # tensor-parallel degrees tried
topologies = ["colocated", "disaggregated"]
ttft_sla_s = 2.0
tpot_sla_s = 0.1
attainment = 0.9
prices = ""                   # your own dollars per GPU-hour as gpu and price pairs (see FleetParams), else list prices
max_gpus = 64                 # the largest fleet considered
max_num_seqs = 256
max_num_batched_tokens = 2048
gpu_memory_utilization = 0.9
results_dir = "results/default"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import fleet as answers
from workbench.study.present.console import notebook_setup
from workbench.study.runs import fleet

notebook_setup()  # plain log lines, each warning once, compact tables
params = fleet.FleetParams.from_namespace(globals())   # the parameters above, validated
results = params.claim_results_dir()   # refused before anything runs if it holds another fleet plan
trace = params.trace()
display(Markdown(params.setup_text(trace)))

# %% [markdown]
# ## 1. Every candidate, cheapest first
# Those that meet the SLA first, by cost per hour; then every other with why it fails: it does not fit in
# memory, misses TTFT or TPOT (even alone on an idle replica, or at `max_gpus`), needs more than `max_gpus`
# by the bound, or is pruned (its bound alone costs more than a fleet already confirmed).

# %%
plan = params.plan(trace)
plan.table.to_csv(results / "fleet_plan.csv", index=False)
plan.trials.to_csv(results / "fleet_trials.csv", index=False)
display(Markdown(f"**{plan.verdict}** ({len(plan.trials)} simulations, {plan.search_s:.0f} s)"))
display(plan.table[["rank", "gpu", "topology", "fleet", "gpus", "dollars_per_hour",
                    "dollars_per_million_output_tokens", "capacity_rps", "headroom", "slo_attainment",
                    "step_source", "bound_gpus", "status", "reason"]])

# %% [markdown]
# ## 2. The cheapest fleet per GPU type, and what decides it
# What decides each answer is read from the roofline's terms at the fleet's operating point: the phase (prefill
# or decode) that takes most of the GPUs' time, and whether that phase's time is memory traffic (weights and
# KV reads: **bandwidth**) or arithmetic (**compute**); **memory** when the KV cache runs full (or the weights
# set the TP); and which limit fails with one replica (or instance) fewer.

# %%
display(answers.plot_per_gpu(plan.table, f"The cheapest fleet meeting the SLA per GPU type and topology "
                             f"(hatched: disaggregated)\n{trace.label} at {plan.rate_rps:.3g} requests/s; "
                             f"{params.model}; TTFT <= {params.ttft_sla_s:g} s, TPOT <= "
                             f"{params.tpot_sla_s * 1e3:g} ms for {params.attainment:.0%}", results_dir=results))
display(Markdown("\n".join(f"* {line}" for line in answers.answer_lines(plan.table))))

# %% [markdown]
# ## 3. The cost frontier
# Every fleet simulated at the load (the search's and a few sizes around each GPU type's answer): cost per hour
# against p99 TTFT and against the share of requests meeting the SLA. The frontier joins the fleets that no
# other beats on both.

# %%
points = fleet.frontier(plan, trace)
points.to_csv(results / "fleet_frontier.csv", index=False)
answers.plot_frontier(points, plan.table, ttft_s=params.ttft_sla_s, attainment=params.attainment,
                      title=f"Cost per hour against p99 TTFT and SLO attainment at {plan.rate_rps:.3g} requests/s\n"
                            f"{trace.label}; {params.model}", results_dir=results)

# %% [markdown]
# ## 4. The neighbour check
# The planner's cheapest answer, checked by simulating its neighbours at the load: one replica (or one instance
# of either pool) fewer, and the next cheaper GPU type (as many as the same dollars buy, and that type's own
# cheapest fleet). Each must miss the SLA or cost more.

# %%
neighbours = fleet.neighbour_check(plan, trace)
neighbours.to_csv(results / "fleet_neighbours.csv", index=False)
best = plan.cheapest
display(Markdown("\n".join(f"* {line}" for line in answers.neighbour_lines(
    neighbours, best["fleet"] if best else "", best["dollars_per_hour"] if best else 0.0, params.attainment))))
