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
# # A day of changing load: what a fleet sized for the peak, a plan per hour and reactive autoscaling cost
#
# Real services swing several-fold between night and afternoon. The day here is the **synthetic** BurstGPT-like
# trace replayed over BurstGPT's published hour-of-day profile (busiest hour 14.9 times the quietest; the
# `peak_to_trough` parameter reshapes it), its requests and their within-hour burstiness kept
# (`wb.traces.synthetic.day_trace`). One GPU type and deployment (`latency`), one SLA, three ways to serve it,
# each simulated over the whole day with the continuous engine, replicas coming and going as the policy says
# (cold starts billed, draining replicas finishing their requests before they leave):
#
# 1. **The plan**: for each hour, the fewest replicas whose capacity at the SLA (`wb.capacity`, on the hour's
#    own requests) covers the hour's highest arrival rate.
# 2. **peak fleet**: the plan's largest count, all day. **plan schedule**: the plan's count per hour, replicas
#    started a cold start ahead. **reactive**: Kubernetes-style target tracking of the arrival rate per replica
#    (Knative's rps metric) at `target_load` of a replica's capacity, scale-down stabilised over
#    `scale_down_after_s`.
# 3. **Per hour**: GPU-hours, dollars and the share of the hour's requests meeting the SLA, per strategy.

# %% tags=["parameters"]
num_requests = 1_000_000       # requests over the day
peak_to_trough = None          # the busiest hour's rate over the quietest's; None: BurstGPT's own (14.9)
seed = 0
latency = "opt-13b-a100"       # the replicas' step times: a profile name or <model>@<gpu>[/tpN]
gpu = None                     # the catalogued GPU they run on (its price); None: the profile's
gpus_per_replica = None        # None: the profile's TP
price_per_gpu_hour = None      # dollars; None: the catalogue's list price
ttft_sla_s = 2.0
tpot_sla_s = 0.1
attainment = 0.9
chunked_prefill = True
max_num_batched_tokens = 2048
cold_start_s = 120.0
autoscale_interval_s = 15.0
scale_down_after_s = 300.0
reactive_metric = "rps"        # the reactive policy's metric: rps or concurrency
target_load = 0.8              # its target: the metric at this share of a replica's capacity
capacity_requests = 30_000     # most requests of an hour its capacity searches replay
results_dir = "results/default"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import autoscaling as answers
from workbench.study.present.console import notebook_setup
from workbench.study.runs import autoscaling as day
from workbench.study.store.files import write_csv_atomic

notebook_setup()  # plain log lines, each warning once, compact tables
params = day.AutoscalingParams.from_namespace(globals())   # the parameters above, validated
results = params.claim_results_dir()   # refused before anything runs if it holds another day's results
trace = params.trace()
display(Markdown(params.setup_text(trace)))

# %% [markdown]
# ## 1. The plan: replicas per hour
# Each hour's capacities are searched on that hour's own requests at a constant rate (their bursts and sizes
# kept), one replica count at a time; the hour gets the fewest replicas covering its highest rate.

# %%
load = day.hourly_load(trace, params.profile())
plan, curves = day.provisioning_plan(trace, load, params)
busiest = int(plan.hour[plan.replicas.idxmax()])
target = day.reactive_target(params, curves[busiest], int(plan.replicas.max()))
write_csv_atomic(results / "autoscaling_plan.csv", plan)
display(plan.set_index("hour")[["requests", "mean_rps", "peak_rps", "replicas", "capacity_rps", "headroom"]].T.round(2))
display(Markdown(f"Reactive target: {target['target']:.3g} ({target['metric']} per replica): at "
                 f"{params.target_load:.0%} of their capacity on the busiest hour's requests ({busiest}h), "
                 f"{target['replicas']} replicas hold {target['concurrency_per_replica']:.3g} requests each, "
                 f"{target['e2e_mean_s']:.3g} s end to end."))

# %% [markdown]
# ## 2. The day, three ways
# Each strategy serves the whole day in the continuous engine; the autoscaled ones change their replica count
# every `autoscale_interval_s` as their policy says.

# %%
configs = day.strategy_configs(params, plan, target)
runs = day.serve_day(trace, configs, params.step_model())
hourly = day.hourly_table(runs, params, load)
timeline = day.timeline(runs, trace)
summary = day.summary_table(hourly, runs, params)
for name, frame in (("hourly", hourly), ("timeline", timeline), ("summary", summary)):
    write_csv_atomic(results / f"autoscaling_{name}.csv", frame)
answers.plot_day(timeline, plan, day.STRATEGIES,
                 f"Load and replicas over the day [{trace.label}]\n{params.latency} replicas; SLA TTFT <= "
                 f"{params.ttft_sla_s:g} s, TPOT <= {params.tpot_sla_s * 1e3:g} ms", results_dir=results)

# %% [markdown]
# ## 3. Cost and attainment per hour

# %%
answers.plot_hourly(hourly, params.attainment,
                    f"Dollars and SLA attainment per hour ({params.gpus_per_replica} x {params.gpu} per replica at "
                    f"${params.price:.2f} per GPU-hour)\n[{trace.label}]", results_dir=results)
display(answers.day_table(summary))
display(Markdown("\n".join(f"* {line}" for line in answers.findings(summary, hourly, plan, params.attainment))))
