# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Step 2: GPU scaling
#
# `max_requests` requests served by every scheduler of `schedulers` on 1, 2, 4, 8, 16, 32, 64 and 100 GPUs (those up to `max_gpus`), static and continuous batching side by side. The best GPU count and the capacity-per-GPU answers are about `multi_bin_dynamic` (the first scheduler when it is not run); every scheduler's capacity is listed.
#
# **Best GPU count**: the smallest GPU count whose goodput is within 1% of the best goodput. (The seed project took the raw maximum, which on a saturating trace picks the largest pool for a gain in the noise.) **Scaling efficiency**: throughput per GPU relative to 1 GPU.
#
# **Capacity** (with `capacity_search`): the largest arrival rate each GPU count sustains within the SLA target. **Capacity scaling efficiency**: capacity(n) / (n x capacity(1)), 1 = ideal linear scaling. **Best GPU count by capacity per GPU**: the highest capacity per GPU (counts within 1% of it: the fewest GPUs). More GPUs should never give less capacity on the same trace; the analysis checks it and lists any exception.
#
# The schedulers, in one sentence each:
#
# - **static_fifo**: one FIFO queue; an idle GPU takes up to a fixed batch size (8) of waiting requests.
# - **dynamic_no_bins**: one FIFO queue; the batch size is the smaller of a memory bound and an SLA controller's choice, adapted after every batch.
# - **multi_bin_dynamic**: requests are split into K equal-mass bins by predicted output length, a batch holds requests of one bin only, and each bin has its own memory and SLA controllers.
# - **multi_bin_fixed** (not used in the three steps): the Multi-Bin Batching paper's model, K bins with batches of exactly the fixed size, served first formed, first served.
# - **continuous_fcfs**: continuous (iteration-level) batching as vLLM does it: requests join and leave the running batch every step, FCFS admission under `max_num_seqs`, the token budget and the KV cache.
# - **continuous_sla**: continuous batching whose running-batch size limit is set by Pang et al.'s Algorithms 1 (memory) and 2 (SLA on time per output token).
#
# **Latency models.** Static schedulers run on the static engine's batch-time grid (a formula, labelled Qwen3-1.7B on an RTX 4080, not measured); continuous schedulers run on the step-time profile named by `latency` (default `opt-13b-a100`: OPT-13B on one 80 GB A100, validated against measured vLLM runs) with that hardware's memory. The plan below says which model each scheduler used, and so does every plot title. Capacity of the continuous schedulers uses the TTFT/TPOT criterion (DistServe's SLO attainment) at the same attainment target. With `replications` > 1 every test runs once per seed; the tables and plots show means with 95% confidence intervals (error bars).
#
# The default trace is **synthetic**: a BurstGPT-like stand-in generated from the real trace's published statistics (the real BurstGPT CSVs cannot be shipped). Every result row and plot title says so; pass `dataset` to use a real BurstGPT file.

# %% tags=["parameters"]
# Parameters (papermill overrides them: -p name value)
max_requests = 1_000_000  # requests per test (step 1: the largest volume)
max_gpus = 100  # GPU counts above this are skipped
use_real_timestamps = False  # True: keep the trace's own inter-arrival times
rps_scaling = 200.0  # divide the trace's timestamps by this (stress mode)
d_sla = 1.0  # end-to-end latency SLA per request, seconds
dataset = None  # None: the embedded synthetic BurstGPT-like trace; or azure_conv, azure_code, burstgpt, or a CSV path
k_bins = 4  # bins of the multi-bin schedulers
seed = 42  # seeds the simulation and the synthetic trace
results_dir = None  # None: results/default at the defaults, else results/<parameters that differ>; one parameter set per folder
executor = None  # None: process pool if >1 test is queued; "serial", "process:N", "dask://host:port"
capacity_search = True  # also search capacity: the largest arrival rate at which the SLA target holds
capacity_attainment = 0.9  # capacity target: this share of requests within d_sla (0.95: out of reach, see below)
schedulers = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "continuous_fcfs", "continuous_sla")  # or "a,b,c"
latency = "opt-13b-a100"  # step-time profile of the continuous schedulers ("grid": static engine's grid only); static ones keep the grid
replications = 1  # seeds per test (seed, seed+1, ...): >1 gives means with 95% confidence intervals

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import analysis
from workbench.study.runs import experiments
from workbench.study.answers import plots

experiments.notebook_setup()  # log lines (one per finished test), compact tables

params = experiments.StepParams.from_namespace(globals())  # the parameters cell above, validated
plan = experiments.plan_step2(params)
display(Markdown(plan.describe()))
plan.table()

# %% [markdown]
# ## Run
#
# Each finished test is checkpointed in `step2_gpu_scaling.csv` before the next starts.

# %%
results = plan.run()
experiments.brief(results)

# %% [markdown]
# ## Plots
#
# The dashed green line marks the best GPU count (its legend says when it misses the SLA or is the largest count tested); the violation panel shows the 5% target and the floor no load can go below; every axis starts at 0.

# %%
plots.plot_gpu_scaling(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Capacity against GPU count
#
# **Capacity is not replayed throughput.** A replay runs the trace at one load (`rps_scaling`), so it only tells whether the pool keeps up at that load: once it does, throughput equals the offered load whatever the GPUs or bins, and nothing queues to tell them apart. Capacity replays the *same* trace faster or slower (same request mix, same bursts) and bisects for the highest load at which at least `capacity_attainment` of the requests still finish within `d_sla`. So where the replayed throughput above reaches the offered load and flattens, capacity still tells the pools apart (the commentary at the end says whether it does in this run).
#
# **Why the target is 0.9, not 0.95.** Two things cap the attainment any load can give on this trace. First, some requests are too long to finish within `d_sla` even alone on an idle GPU; the share that could, the *attainable share*, is printed below from the rows. Second, the trace's timestamps are whole seconds, as in BurstGPT, so many arrivals share their instant with another, and replaying the trace slower never separates them. On one GPU, requests that arrive together are batched together (or wait for each other) at any load, and a short request batched with a long one misses the SLA; on several GPUs the dynamic schedulers share simultaneous arrivals out over the idle GPUs (`spread_idle`), while `static_fifo` still stacks them on one. A configuration that misses the target even at the lowest load the search tries is listed below as *unreachable*, with the best attainment the search measured: that is a finding in itself, the SLA this policy cannot keep on this trace at any load.

# %%
display(Markdown(analysis.capacity_markdown(results)))
analysis.capacity_table(results)

# %% [markdown]
# Left: capacity against GPUs (log-log); the dotted line is ideal linear scaling from the 1-GPU capacity, the dashed one the replayed throughput. Right: capacity per GPU, with the scaling efficiency on the right axis; the dashed line marks the best GPU count by capacity per GPU, the dash-dotted one the best by the goodput rule.

# %%
plots.plot_gpu_capacity(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Summary and commentary
#
# Computed from this run's rows when the cell runs (the rules are in `analysis.json` under `rules`); a "best" that misses the SLA or sits at the edge of the range tested says so.

# %%
result = plan.finish(results)  # all_results.csv + analysis.json, written atomically
display(Markdown(analysis.step_markdown(result, plan.step)))
display(Markdown(analysis.commentary(results, plan.step)))
