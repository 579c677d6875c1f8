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
# # Step 1: request scaling
#
# How do the schedulers hold up as the number of requests grows? Request volumes go up in 10x steps from 1,000 to `max_requests` (`request_volumes` overrides the list); every scheduler of `schedulers` runs on 1 GPU and `multi_bin_dynamic` also on 2 and 4 GPUs, all with K = `k_bins`. At the largest volume every configuration also searches its capacity (the same tests as step 2's on these GPU counts, which step 2 then reuses).
#
# **One target.** A configuration meets the SLA target when at least `capacity_attainment` (90%) of its requests meet the SLA, counted (violating requests against the allowed count); it *breaks* at the first volume where it does not. The best configuration is, at the largest volume, one that meets the target on the fewest GPUs; when none does, the closest (the most capacity) is named and marked not valid: step 2 finds the pool the trace needs.
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
request_volumes = None  # e.g. [1_000, 5_000]: overrides the 10x steps

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import plots, sentences, tables
from workbench.study.runs import experiments

experiments.notebook_setup()  # plain log lines (one per finished test), each warning once

params = experiments.StepParams.from_namespace(globals())  # the parameters cell above, validated
plan = experiments.plan_step1(params, request_volumes=request_volumes)
display(Markdown(plan.describe()))
plan.table()

# %% [markdown]
# ## Run, one cell per request volume
#
# Each finished test is checkpointed in `step1_request_scaling.csv` before the next starts; rerunning a cell recomputes nothing that is already there. A cell whose volume is not in this run's list does nothing.

# %%
experiments.brief(plan.run(1_000))

# %%
experiments.brief(plan.run(10_000))

# %%
experiments.brief(plan.run(100_000))

# %%
experiments.brief(plan.run(1_000_000))

# %%
results = plan.run()  # every test of the step (runs any volume not covered above)
experiments.brief(results)

# %% [markdown]
# ## Figure: the schedulers as the volume grows
#
# One line per configuration: the scheduler's colour, a marker and dash per GPU count; the x axis (requests) is logarithmic. The violation panel marks the target (at most 1 - `capacity_attainment` of the requests may miss the SLA: the breaking point) and the floor (requests that miss the SLA even alone on an idle GPU). The throughput and goodput panels draw the **offered rate of each volume** (dashed black): each volume is the first N requests of the trace, so each covers another stretch of it and arrives at its own rate, and where a pool keeps up its throughput and goodput follow that rate up and down. With a step-time profile the last two panels show p99 TTFT and TPOT with their limits. The rates this run's volumes arrive at are said under the figure.

# %%
display(Markdown(sentences.offered_rates_sentence(results)))
plots.plot_request_scaling(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Capacity at the largest volume
#
# **Capacity is not replayed throughput.** A replay runs the trace at one load, so it only tells whether the pool keeps up at that load: once it does, throughput equals the offered load whatever the GPUs or bins, and nothing queues to tell them apart. Capacity replays the *same* trace faster or slower (same request mix, same bursts) and finds the highest load at which at least `capacity_attainment` of the requests still meet the SLA. Two things cap the share any load can reach: the *floor*, requests that miss the SLA even alone on an idle GPU (said below, from the rows), and arrivals that come in the same second (the trace's timestamps are whole seconds, as in BurstGPT), which wait for each other's batches at any load. A configuration that misses the target even at the lightest load the search tries is listed as *unreachable*, with the share it reached and the limit that binds: a finding in itself.

# %%
display(Markdown(sentences.capacity_markdown(results)))
tables.capacity_table(results)

# %% [markdown]
# One bar per configuration, in its scheduler's colour, labelled with its capacity; *unreachable* where no load meets the target.

# %%
plots.plot_step1_capacity(results, results_dir=plan.results_dir)

# %% [markdown]
# ## Summary and commentary
#
# Computed from this run's rows when the cell runs (the rules are in `analysis.json` under `rules`); an answer that misses the target or sits at the edge of the range tested says so.

# %%
result = plan.finish(results)  # all_results.csv, analysis.json and index.html, written atomically
display(Markdown(sentences.step_markdown(result, plan.step)))
display(Markdown(sentences.commentary(results, plan.step)))
