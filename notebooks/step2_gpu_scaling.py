# ---
# jupyter:
#   jupytext:
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
# # Step 2: GPU scaling
#
# How many GPUs does the trace need? `max_requests` requests served by every scheduler of `schedulers` on 1, 2, 4, 8, 16, 32, 64 and 100 GPUs (those up to `max_gpus`). Every scheduler's answers are listed; the headline answers are about `multi_bin_dynamic` (the first scheduler when it is not run).
#
# **One target.** A pool meets the SLA target when at least `capacity_attainment` (90%) of its requests meet the SLA. Its **capacity** (with `capacity_search`) is the largest arrival rate at which it still does: the trace replayed faster or slower. **GPUs needed**, the answer: the fewest GPUs whose capacity covers the replayed rate, with the headroom that leaves (capacity / replayed rate - 1) and the largest count below it, which falls short. **Most capacity per GPU**, a second answer under its own name: the GPU count with the highest capacity / GPUs (counts tied within the search's 1% resolution: the fewest), and the count from which it is within 5% of the most says where more GPUs stop paying per GPU. More GPUs should never give less capacity on the same trace; the analysis checks it and lists any exception.
#
# **One hardware model, one SLA.** Every scheduler runs on the step-time profile `latency` (default `opt-13b-a100`: OPT-13B on one 80 GB A100, measured by DistServe and checked against measured vLLM runs) with that GPU's KV cache: the continuous schedulers step by step, the static ones in *step mode* (each batch one prefill, then lock-step decodes padded to its longest output). All are judged on the same SLA: a request meets it when its time to first token is at most `ttft_sla` and its time per output token at most `tpot_sla`. So the numbers here agree with `compare_schedulers`, which ranks every registered scheduler on the same model. `latency="seed-grid"` reproduces the seed study instead: its three static schedulers on its formula grid (Qwen3-1.7B on an RTX 4080, generated, not measured), judged on end-to-end latency within `d_sla`, at its load (`rps_scaling=200`).
#
# The default trace is **synthetic**: a BurstGPT-like stand-in generated from the real trace's published statistics (the real BurstGPT CSVs cannot be shipped). Every result row and plot title says so; pass `dataset` to use another trace.

# %% tags=["parameters"]
# Parameters (papermill overrides them: -p name value)
max_requests = 1_000_000  # requests per test (step 1: the largest volume)
max_gpus = 100  # GPU counts above this are skipped
latency = "opt-13b-a100"  # hardware model of every scheduler: a step-time profile, or "seed-grid" (the seed study)
ttft_sla = 1.0  # SLA on a step-time profile: time to first token, s
tpot_sla = 0.05  # SLA on a step-time profile: time per output token after the first, s
d_sla = 1.0  # seed-grid: end-to-end SLA, s; on a profile: the static SLA controller's batch-time budget, s
capacity_search = True  # also search capacity: the largest arrival rate at which the SLA target holds
capacity_attainment = 0.9  # capacity target: this share of requests within the SLA
schedulers = None  # None: static_fifo, dynamic_no_bins, multi_bin_dynamic, continuous_fcfs; or "a,b,c"
dataset = None  # None: the embedded synthetic BurstGPT-like trace; or azure_conv, azure_code, burstgpt, or a CSV path
rps_scaling = None  # divide the trace's timestamps by this; None: 10 on a profile, 200 on the seed grid
use_real_timestamps = False  # True: keep the trace's own inter-arrival times
k_bins = 4  # bins of the multi-bin schedulers
seed = 42  # seeds the simulation and the synthetic trace
replications = 1  # seeds per test (seed, seed+1, ...): >1 gives means with 95% intervals
results_dir = None  # None: results/default at the defaults, else results/<parameters that differ>; one parameter set per folder
executor = None  # None: process pool if >1 test is queued; "serial", "process:N", "dask://host:port"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import plots, sentences, tables
from workbench.study.runs import experiments

experiments.notebook_setup()  # plain log lines (one per finished test), each warning once

params = experiments.StepParams.from_namespace(globals())  # the parameters cell above, validated
plan = experiments.plan_step2(params)
display(Markdown(plan.describe()))
plan.table()

# %% [markdown]
# ## Run
#
# Each finished test is checkpointed in `step2_gpu_scaling.csv` before the next starts; tests step 1 already ran (1, 2 and 4 GPUs at the same volume) are reused.

# %%
results = plan.run()
experiments.brief(results)

# %% [markdown]
# ## Figure: the replayed load on 1 to 100 GPUs
#
# One line per scheduler, against the GPU count. The violation panel marks the target (at most 1 - `capacity_attainment` of the requests may miss the SLA) and the floor (dash-dot); the goodput and throughput panels the offered rate replayed (dashed black), which no pool can exceed, and a star on each scheduler's goodput line at the GPUs it needs. The p99 latency panel is logarithmic when it spans decades; with a step-time profile the last two panels show p99 TTFT and TPOT with their limits (dotted). Lines that coincide are drawn dashed on top of each other and named under the panel.

# %%
plots.plot_gpu_scaling(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Capacity against GPU count
#
# **Capacity is not replayed throughput.** A replay runs the trace at one load, so it only tells whether the pool keeps up at that load: once it does, throughput equals the offered load whatever the GPUs or bins, and nothing queues to tell them apart. Capacity replays the *same* trace faster or slower (same request mix, same bursts) and finds the highest load at which at least `capacity_attainment` of the requests still meet the SLA. Two things cap the share any load can reach: the *floor*, requests that miss the SLA even alone on an idle GPU (said below, from the rows), and arrivals that come in the same second (the trace's timestamps are whole seconds, as in BurstGPT), which wait for each other's batches at any load. A configuration that misses the target even at the lightest load the search tries is listed as *unreachable*, with the share it reached and the limit that binds: a finding in itself.

# %%
display(Markdown(sentences.capacity_markdown(results)))
tables.capacity_table(results)

# %% [markdown]
# Left: each scheduler's capacity against the GPU count (log scales when it spans decades), the replayed rate a pool must sustain, a star at the GPUs each scheduler needs, and, dotted in its colour, capacity proportional to the GPUs from its smallest pool with a capacity (a line above it: capacity per GPU grows with the pool, a larger pool absorbing the trace's bursts better). Right: capacity per GPU, with a star where each scheduler has the most; a scheduler with no point on a GPU count reaches the target at no load there (named under the left panel).

# %%
plots.plot_gpu_capacity(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Summary and commentary
#
# Computed from this run's rows when the cell runs (the rules are in `analysis.json` under `rules`); an answer that misses the target or sits at the edge of the range tested says so.

# %%
result = plan.finish(results)  # all_results.csv, analysis.json and index.html, written atomically
display(Markdown(sentences.step_markdown(result, plan.step)))
display(Markdown(sentences.commentary(results, plan.step)))
