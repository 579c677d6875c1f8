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
# # Which scheduler keeps the SLA?
#
# Every registered scheduler on the same trace, the same hardware model and the same SLA: a request
# meets the SLA when its time to first token (TTFT) and its mean time per output token after the first
# (TPOT) are both within their limits. All schedulers are timed by one step-time profile (`latency`),
# so static and continuous batching differ only in how they schedule.
#
# 1. **Capacity** of each scheduler on each GPU count: the largest offered rate at which `attainment`
#    of the requests meet the SLA (the trace replayed faster or slower).
# 2. **Load-latency curves** on `curve_gpus` GPUs, from light load to past saturation: attainment,
#    latency percentiles, TTFT and TPOT against the offered rate, one line per scheduler.
# 3. A **ranking** by what the trace needs: the fewest GPUs whose capacity covers the rate the trace is replayed
#    at (step 2's answer, on the same tests), then the capacity per GPU on those GPUs. Schedulers whose order is
#    within the capacity search's 1% resolution (and, with `replications` > 1, the seeds' 95% intervals: Student t
#    cut to the quantity's range) share a rank; one sentence per scheduler says where it breaks.
#
# The GPU counts are step 2's (1 to 100 by default), so the ranking is at the pool sizes the trace needs. A scheduler
# that varies a close one (`continuous_sla` and `continuous_multi_bin` vary `continuous_fcfs`, `multi_bin_fixed`
# varies `multi_bin_dynamic`) is searched only at the counts that decide the GPUs it needs (`needed_only`): from the
# count its reference needs, down to the largest count that falls short and up to the fewest that covers the load,
# and on `curve_gpus`; its capacity line has those points. Trace,
# hardware model, SLA and capacity target are the step notebooks' (same parameters, same tests): run by the suite,
# this notebook reuses step 2's capacities and adds the schedulers the steps do not run. Each (test, seed) is
# checkpointed: a rerun skips what is done.

# %% tags=["parameters"]
dataset = None                # None: the synthetic BurstGPT-like trace; or azure_conv, azure_code, a CSV path
num_requests = 20_000         # the suite passes its max_requests: then the capacities are step 2's tests, reused
curve_requests = None         # requests of the load-latency curves; None: num_requests (the suite: 20,000)
schedulers = None             # None: every registered scheduler
latency = "opt-13b-a100"      # the step-time profile every scheduler is timed by
gpu_counts = None             # None: step 2's GPU counts, 1 to 100; or e.g. "8,16,32"
curve_gpus = 4
load_points = 8
ttft_sla_s = 1.0
tpot_sla_s = 0.05
d_sla_s = 1.0                 # budget of the static SLA controller (service time of one batch)
attainment = 0.9
k_bins = 4
rps_scaling = 10.0            # the trace's timestamps / this (as the steps')
use_real_timestamps = False
replications = 1
seed = 42
results_dir = None
executor = None               # None: a local process pool; "serial", "process:N", "dask://host:port"
needed_only = True            # continuous_sla, continuous_multi_bin, multi_bin_fixed only around the GPUs they need

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import compare_plots
from workbench.study.runs import compare, experiments
from workbench.study.store.files import display_path

experiments.notebook_setup()  # one log line per finished case, compact tables
namespace = {k: v for k, v in globals().items() if not k.startswith("_")}
if namespace.get("schedulers") is None:
    namespace.pop("schedulers")
params = compare.CompareParams.from_namespace(namespace)
result = compare.run_comparison(params)
display(Markdown(f"Results in `{display_path(result.results_dir)}`; trace rate at x1: "
                 f"{result.base_rate_rps:.3g} requests/s."))

# %% [markdown]
# ## Load-latency curves
#
# Each panel one metric against the offered load on `curve_gpus` GPUs (log scale), one line per scheduler in its
# colour: the share meeting the SLA with the target (grey dash-dot), goodput with the offered rate as its upper
# bound (dashed), p99 and p50 end-to-end latency, p99 TTFT and TPOT with their limits (black: TTFT dotted, TPOT
# dash-dot-dot). The loads run from 1/16 of the lowest capacity found on `curve_gpus` GPUs to twice the highest, so
# every curve goes from light load to past its scheduler's saturation. A line that another hides, for all or part
# of its length, is drawn dashed on top and named under its panel. The curves replay the first `curve_requests`
# requests of the trace (the title says how many); the capacities and the ranking all `num_requests`.

# %%
compare_plots.plot_load_latency(result, result.results_dir)

# %% [markdown]
# ## Capacity against GPU count
#
# Left: each scheduler's capacity; right: capacity per GPU. A scheduler with no point on a GPU count it was searched
# on meets the target at no load there (named under the left panel); one searched around its need (`needed_only`)
# has points only on the counts searched. The ranking below reads, per scheduler, the fewest GPUs whose capacity
# covers the replayed rate.

# %%
compare_plots.plot_capacity(result, result.results_dir)

# %% [markdown]
# ## Ranking by the GPUs each scheduler needs, and where each scheduler breaks

# %%
display(compare_plots.ranking_table(result))
display(Markdown("\n".join(f"- {text}" for text in result.sentences.values())))
