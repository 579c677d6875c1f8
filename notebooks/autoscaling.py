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
# (`wb.traces.synthetic.day_trace`). One deployment (`model` on `tp` x `gpu`, served as `wb.plan_fleet` serves a
# colocated fleet: vLLM V1, least-outstanding routing), one SLA, three ways to serve it,
# each simulated over the whole day with the continuous engine, replicas coming and going as the policy says
# (cold starts billed, draining replicas finishing their requests before they leave):
#
# 1. **The plan**: for each hour, the cheapest fleet for the hour's highest arrival rate (`wb.plan_fleet` on
#    the hour's own requests; `planner="capacity"`: the fewest replicas whose `wb.capacity` covers it).
# 2. **peak fleet**: the plan's largest count, all day. **plan schedule**: the plan's count per hour, replicas
#    started a cold start ahead. **reactive**: Kubernetes-style target tracking of the arrival rate per replica
#    (Knative's rps metric) at `target_load` of a replica's capacity, scale-down stabilised over
#    `scale_down_after_s`.
# 3. **Per hour**: GPU-hours, dollars and the share of the hour's requests meeting the SLA, per strategy.

# %% tags=["parameters"]
num_requests = 1_000_000       # requests over the day
peak_to_trough = None          # the busiest hour's rate over the quietest's; None: BurstGPT's own (14.9)
seed = 0
model = "opt-13b"              # a catalogued model (or a config.json path)
gpu = "a100-80gb"              # a catalogued GPU
tp = 1                         # GPUs of one replica
price_per_gpu_hour = None      # dollars; None: the catalogue's list price
ttft_sla_s = 2.0
tpot_sla_s = 0.1
attainment = 0.9
max_num_seqs = 256
max_num_batched_tokens = 2048
gpu_memory_utilization = 0.9
planner = "plan_fleet"         # the plan per hour: plan_fleet (wb.plan_fleet) or capacity (wb.capacity)
cold_start_s = 120.0
autoscale_interval_s = 15.0
scale_down_after_s = 300.0
reactive_metric = "rps"        # the reactive policy's metric: rps or concurrency
target_load = 0.8              # its target: the metric at this share of a replica's capacity
capacity_requests = None       # most requests of an hour the plan replays; None: all of them
results_dir = "results/default"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.answers import autoscaling as answers
from workbench.study.answers.findings import trace_record, write_findings
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
# For each hour the cheapest fleet for its highest rate (`wb.plan_fleet`: the fewest replicas that meet the SLA
# at that load, simulated on the hour's own requests at a constant rate, their bursts and sizes kept; and
# their capacity). The whole hour is replayed: a shorter window, starting from an empty pool, passes a fleet
# that falls behind for good when the load stays that high for hours.

# %%
load = day.hourly_load(trace, params.profile())
plan, samples = day.provisioning_plan(trace, load, params)
busiest = int(plan.hour[plan.replicas.idxmax()])
target = day.reactive_target(params, samples[busiest], int(plan.replicas.max()),
                             float(plan.capacity_rps[plan.replicas.idxmax()]))
write_csv_atomic(results / "autoscaling_plan.csv", plan)
display(plan.set_index("hour")[["requests", "mean_rps", "peak_rps", "replicas", "capacity_rps", "headroom",
                                "dollars_per_hour"]].T.round(2))
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
day_title = (f"Load and replicas over the day [{trace.label}]\n{params.model} on {params.tp} x {params.gpu} "
             f"({params.step_source()} step times); SLA TTFT <= {params.ttft_sla_s:g} s, TPOT <= "
             f"{params.tpot_sla_s * 1e3:g} ms")
answers.plot_day(timeline, plan, day.STRATEGIES, day_title, results_dir=results)

# %% [markdown]
# ## 3. Cost and attainment per hour

# %%
hourly_title = (f"Dollars and SLA attainment per hour ({params.gpus_per_replica} x {params.gpu} per replica at "
                f"${params.price:.2f} per GPU-hour)\n[{trace.label}]")
display(answers.plot_hourly(hourly, params.attainment, hourly_title, results_dir=results))
display(answers.day_table(summary))

# %% [markdown]
# ## What the day says

# %%
question = "What do a fleet sized for the peak, a plan per hour and reactive autoscaling cost over a day?"
answer = answers.answer(summary, params.attainment)
lines = answers.findings(summary, hourly, plan, params.attainment)
write_findings(results, day.NOTEBOOK, question=question, answer=answer, findings=lines,
               traces=[trace_record(trace, "over one day of BurstGPT's hour-of-day profile")],
               figures={"autoscaling_day.png": "The arrival rate and the plan's capacity per hour; each strategy's "
                                               "replicas provisioned (billed) and active, over the day",
                        "autoscaling_hourly.png": "Dollars and the share of each hour's requests meeting the SLA, per "
                                                  "hour and strategy"})
display(Markdown(f"**{question}** {answer}\n\n" + "\n".join(f"* {line}" for line in lines)))
