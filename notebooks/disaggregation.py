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
# # How should the GPUs be split between prefill and decode?
#
# For a trace and an SLO (TTFT and TPOT limits met by 90% of the requests), `wb.best_placement` ranks every
# way of serving OPT-13B on a GPU budget by goodput per GPU: disaggregated placements (prefill instances
# and decode instances of any TP, decode optionally pipelined; DistServe) and colocated continuous
# batching (vLLM) at each TP degree. This notebook asks who should serve, disaggregated or colocated, as the SLO
# tightens (both limits scaled together, as in DistServe's SLO-scale figures) on two traces:
#
# - the **DistServe request sample**: the ShareGPT requests of the measured DistServe runs;
# - the **Azure conversation trace** (Splitwise, 2023): longer prompts (mean ~1,150 tokens).
#
# and then, on the DistServe sample, with the TTFT and TPOT limits scaled apart, which tests the usual argument
# for disaggregation: that it gains where one limit is tight and the other loose.
#
# Step times: DistServe's profile of its engine at each TP degree plus the serving costs calibrated on the
# measured DistServe runs (`notebooks/fidelity_disagg.ipynb`), which are CPU work that does not depend on
# the TP degree. Colocated batching is timed twice: on the same kernels (the comparison isolates the
# placement) and on vLLM's measured profile (`opt-13b-a100`, validated in `notebooks/fidelity_vllm.ipynb`:
# the system DistServe was compared with), both with the same serving costs added. The measured runs are
# drawn as points: the highest measured rate that met the SLO (the runs sample only a few rates and last
# 25-100 s, so it is a bound from below for a short burst), next to the same deployments simulated on the
# whole sample.

# %% tags=["parameters"]
# Parameters (papermill overrides them: -p name value)
results_dir = "results/default"  # where the CSVs and the figures go
gpus = 8  # the GPU budget
azure_requests = None  # requests of the Azure conversation trace (its first ones): None takes all 19366
slo_scales = [2.0, 1.5, 1.0, 0.75, 0.5]  # multiply TTFT 0.2 s and TPOT 0.1 s
limit_scales = [0.5, 1.0, 2.0]  # each limit by its own scale, on the DistServe sample ([]: skip)
attainment = 0.9  # share of requests that must meet both limits
profile = "opt-13b-a100-distserve"  # step-time profile, resolved at each TP degree
vllm_profile = "opt-13b-a100"  # colocated replicas timed as the measured vLLM engine too ("": skip)
disagg_dir = "data/groundtruth/distserve_opt13b_a100_disagg"  # measured DistServe runs (and the calibration)
vllm_dir = "data/groundtruth/distserve_opt13b_a100_vllm"  # measured colocated vLLM runs (1 GPU)
calibrate_serving_costs = True  # add the serving costs calibrated on the DistServe runs (False: profile alone)

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

import workbench as wb
from workbench.sim.profiles import get_profile
from workbench.study.answers import disaggregation
from workbench.study.answers.findings import trace_record, write_findings
from workbench.study.runs import disaggregation as runner
from workbench.study.fidelity.calibration_disagg import with_fitted_changes
from workbench.study.present.console import notebook_setup

notebook_setup()  # plain log lines, each warning once, compact tables
params = runner.DisaggregationParams.from_namespace(globals())  # the parameters above, validated
gpus, azure_requests, slo_scales, attainment = params.gpus, params.azure_requests, params.slo_scales, params.attainment
profile, vllm_profile, calibrate_serving_costs = params.profile, params.vllm_profile, params.calibrate_serving_costs
results = params.claim_results_dir()  # refused before anything runs if it holds another run's tables
distserve_runs = [wb.load_serving_log(p) for p in params.run_files("disagg_dir")]
vllm_runs = [wb.load_serving_log(p) for p in params.run_files("vllm_dir")]
fitted = wb.calibrate({"prefill": profile, "decode": profile}, distserve_runs) if calibrate_serving_costs else None


def timed(name):
    """tp -> the profile ``name`` at that TP degree, with the calibrated serving costs added."""
    if fitted is None:
        return lambda tp: get_profile(name, tp=tp)
    return lambda tp: with_fitted_changes(fitted.fit_report, get_profile(name, tp=tp))


step_model = timed(profile)
colocated_profiles = {"same kernels": None, **({"vLLM kernels": timed(vllm_profile)} if vllm_profile else {})}
sample = max(distserve_runs, key=lambda r: len(r.trace)).trace
azure = wb.load_trace("azure_conv", num_requests=azure_requests, use_real_timestamps=True)
traces = {"DistServe sample": sample, "Azure conversation": azure}
display(Markdown(params.setup_text(traces)))
if fitted is not None:   # the serving costs added to the profile (the change to each coefficient)
    display(fitted.fit_report.parameters[["name", "pool", "change", "status"]])

# %% [markdown]
# ## The ranking at the base SLO (TTFT 0.2 s, TPOT 0.1 s) on the DistServe sample
# Ranked by goodput per GPU among the placements whose goodput was searched; pruned placements (their estimate
# too low to beat the best verified one) are listed after them, unranked, with their estimate.

# %%
ranking = wb.best_placement(sample, gpus, profile=step_model, ttft_s=runner.BASE_TTFT_S, tpot_s=runner.BASE_TPOT_S,
                            attainment=attainment)
print("per-pool goodput of one instance (requests/s): "
      + ", ".join(f"{k} {v:.2f}" for k, v in ranking.attrs["pool_goodput"].items()))
display(Markdown(disaggregation.estimate_line(ranking, ranking.attrs["prune_margin"])))
disaggregation.readable(ranking.head(12), disaggregation.RANKING_COLUMNS)

# %% [markdown]
# ## As the SLO tightens

# %%
sweeps = {label: runner.slo_sweep(trace, gpus, slo_scales, attainment=attainment, profile=step_model,
                                  colocated_profiles=colocated_profiles)
          for label, trace in traces.items()}
table = pd.concat([t.assign(trace=label) for label, t in sweeps.items()], ignore_index=True)
table.to_csv(results / "disaggregation.csv", index=False)
disaggregation.readable(table, disaggregation.SWEEP_COLUMNS)

# %%
measured = disaggregation.measured_goodput(distserve_runs + vllm_runs, slo_scales, attainment=attainment)
deployments = {}
for r in distserve_runs + vllm_runs:
    deployments.setdefault(disaggregation._layout(r.config), r)
vllm_model = timed(vllm_profile or profile)
latencies = {name: (vllm_model(1) if r.config.scheduler != "disaggregated" else
                    {"prefill": step_model(r.config.prefill_tp), "decode": step_model(r.config.decode_tp)})
             for name, r in deployments.items()}
simulated = pd.concat([runner.simulated_goodput(sample, {name: r.config}, slo_scales, latencies[name],
                                                attainment=attainment)
                       for name, r in deployments.items()], ignore_index=True)
points = measured.merge(simulated, on=["slo_scale", "deployment", "gpus"])
points.to_csv(results / "disaggregation_measured.csv", index=False)
disaggregation.readable(points, disaggregation.POINT_COLUMNS)

# %%
disaggregation.plot_goodput_vs_slo(sweeps, measured, simulated, gpus=gpus, attainment=attainment, results_dir=results)

# %% [markdown]
# Who wins, per trace and kernel set (disaggregated over colocated goodput per GPU, from the loosest SLO to the
# tightest; goodputs within the capacity search's 2% resolution are tied):

# %%
winners = disaggregation.winner_lines(sweeps)
display(Markdown("\n".join(f"- {line}" for line in winners)))

# %% [markdown]
# ## With the TTFT and TPOT limits scaled apart (DistServe sample)
# Disaggregation is usually argued for where the two limits pull apart: a tight TPOT needs decode steps free of
# prefill interruptions, a tight TTFT needs prefill capacity that is not busy decoding, and colocated continuous
# batching (vLLM v0.2 runs prefill steps first) trades one for the other on the same GPUs. Here each limit has its
# own scale; the diagonal is the sweep above.

# %%
limits = pd.DataFrame()
if params.limit_scales:
    limits = runner.limits_sweep(sample, gpus, params.limit_scales, params.limit_scales, attainment=attainment,
                                 profile=step_model, colocated_profiles=colocated_profiles,
                                 reuse=sweeps["DistServe sample"])
    limits.to_csv(results / "disaggregation_limits.csv", index=False)
disaggregation.plot_limits(limits, gpus=gpus, trace="DistServe sample", results_dir=results) if len(limits) else None

# %%
limit_lines = disaggregation.limits_lines(limits) if len(limits) else []
display(Markdown("\n".join(f"- {line}" for line in limit_lines) or "No limits sweep (limit_scales is empty)."))

# %% [markdown]
# ## What the results say

# %%
question = "How should the GPUs be split between prefill and decode: disaggregated or colocated?"
answer = disaggregation.answer(sweeps)
base = points[points.slo_scale == 1.0]
measured_lines = [f"{row.deployment} at the base SLO: measured {row.measured_goodput_per_gpu:.2f} requests/s per GPU "
                  f"(a lower bound: runs of 25-100 s at a few rates), simulated {row.simulated_goodput_per_gpu:.2f}."
                  for row in base.itertuples()]
prompts = {label: float(t.prompt_tokens.mean()) for label, t in traces.items()}
findings = [*winners, *limit_lines, disaggregation.prefill_share_line(sweeps, prompts),
            disaggregation.estimate_line(ranking, ranking.attrs["prune_margin"]), *measured_lines]
findings = [line for line in findings if line]
write_findings(results, runner.NOTEBOOK, question=question, answer=answer, findings=findings,
               traces=[trace_record(sample, "at its measured runs' arrival times, scaled by each capacity search"),
                       trace_record(azure, "at its recorded rate, scaled by each capacity search")],
               figures={"disaggregation.png": "Goodput per GPU of the best disaggregated and colocated placements as "
                                              "the SLO tightens, with the measured deployments",
                        **({"disaggregation_limits.png": "Disaggregated / colocated goodput per GPU with the TTFT and "
                                                         "TPOT limits scaled apart"} if len(limits) else {})})
shown = set(winners) | set(limit_lines)   # said above, under their tables
display(Markdown(f"**{question}** {answer}\n\n" + "\n".join(f"- {line}" for line in findings if line not in shown)))
