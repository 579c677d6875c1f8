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
# # Fidelity: calibrate on one measured vLLM run, predict the others
#
# The question a researcher asks first: does the simulator predict *my* deployment? The workflow: take one
# measured run of the server (one model, one GPU, one config), `wb.calibrate` the step-time model on it,
# then predict other workloads and loads. Here on the shipped runs:
#
# 1. **DistServe's vLLM runs** (OPT-13B, one A100-80GB, vLLM v0.2 rules; 100 requests at 1/s, 200 at 2/s,
#    350 at 3.5/s, the last saturated; setup in `setup.json` beside the CSVs): calibrate on each run alone,
#    from the published profile of this model and GPU (`opt-13b-a100`), predict the other two.
# 2. **LLMServingSim's vLLM 0.19 runs** (Llama-3.1-8B on an RTX 4090 and an RTX PRO 6000, vLLM v1: chunked
#    prefill; 300 ShareGPT requests at about 10/s, both overloaded; read from vLLM's own per-request log,
#    `requests.jsonl`, and `meta.json`): calibrate on the first 150 requests, predict the last 150, from a
#    *proxy* start (the same model's BLIS profile on another GPU).
#
# `wb.calibrate` is a MAP fit on per-stage mean and p90 TTFT, TPOT and E2E: the terms the start has move within a
# stated prior around it (this server's own profile: +-50%; a proxy's shape at the run's size: a factor e), so
# what the run cannot separate keeps the start's ratios; each training run gets a *run factor* on its step times
# (runs of one server differ by about 15%), so one run is not fitted to its own noise and two runs that disagree
# are fitted to their compromise. Each term's status (fitted: the run pins it; prior: the start's shape decides;
# held) and the reason are printed. The fit is refused when a run's own model (the server's times its run factor)
# misses the run's mean E2E by more than 5% of the step time (times the run's amplification: how much its queue
# multiplies a step-time error). The target for held-out runs: none off by more than 30% on mean E2E where
# the server was not overloaded.

# %% tags=["parameters"]
# Parameters (papermill overrides them: -p name value)
results_dir = "results/default"  # where the CSVs and the figures go
data_dir = "data/groundtruth/distserve_opt13b_a100_vllm"  # DistServe's measured runs and their setup.json
runs = ["vllm-100-1", "vllm-200-2", "vllm-350-3.5"]  # run files (without .csv) in data_dir; or "a,b,c"
profile = "opt-13b-a100"  # the start for DistServe's runs (workbench.sim.profiles.profile_names())
llmservingsim_dir = "data/groundtruth/llmservingsim_vllm019/runs"  # LLMServingSim's runs, one folder per GPU
llmservingsim_runs = ["RTX4090", "RTXPRO6000"]  # GPU folders in llmservingsim_dir; or "a,b"
llmservingsim_start = "llama-3.1-8b-h100"  # their start: a proxy (the same model on another GPU)
split = 150  # LLMServingSim runs: calibrate on this many first requests, predict the rest
max_evaluations = 800  # simulations each calibration may run
seed = 0  # seed of the calibrations' starting points

# %%
import pandas as pd

import workbench as wb
from workbench.sim.profiles import get_profile
from workbench.study.fidelity import vllm_runs

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
pd.set_option("display.max_colwidth", 120)
params = vllm_runs.FidelityParams.from_namespace(globals())  # the parameters above, validated
results = params.claim_results_dir()  # refused before anything runs if it holds another fidelity report
options = {"max_evaluations": params.max_evaluations, "seed": params.seed}
measured_runs = [wb.load_serving_log(path) for path in params.run_paths()]
start = get_profile(params.profile)
print(start.describe())
pd.DataFrame([{"run": r.name, "requests": len(r.trace), "rate_rps": round(r.rate_rps, 2),
               "saturated": vllm_runs.is_saturated(r), "measured mean TTFT s": r.measured.ttft_s.mean(),
               "measured mean E2E s": r.measured.e2e_s.mean()} for r in measured_runs])

# %% [markdown]
# ## 1. DistServe's runs: the published profile, unchanged

# %%
published = vllm_runs.published_table(start, measured_runs, f"{params.profile} (published)")
published.pivot_table(index="run", columns="metric", values="mean_rel_error", sort=False).round(3)

# %%
vllm_runs.plot_cdfs(measured_runs, {"published profile": start}, results_dir=results,
                    filename="fidelity_vllm_published.png", title="published profile, unchanged")

# %% [markdown]
# ## 2. Calibrate on one run, predict the other two
# What each calibration identified: fitted terms with their standard errors, held terms with the reason.

# %%
one_run, reports, refused = vllm_runs.one_run_workflow(start, measured_runs, **options)
for name, report in reports.items():
    print(f"--- calibrated on {name}" + (" (REFUSED)" if name in refused else ""))
    print(report.describe() if report is not None else refused[name])

# %% [markdown]
# Relative error of the mean E2E: one row per training run, one column per run (the server's model, without
# run factors: the diagonal is what the run's own noise left out of the server's model, the rest are predictions).

# %%
vllm_runs.error_matrix(one_run).round(3)

# %%
vllm_runs.error_matrix(one_run, "ttft_s").round(3)

# %% [markdown]
# Each training run's factor: how much slower (> 1) or faster its step times were than the fitted server's.

# %%
vllm_runs.run_factors_table(reports).round(3)

# %%
models = {name: report.after for name, report in reports.items() if name not in refused}  # the fitted models
light = measured_runs[0].name
if light in models:
    vllm_runs.plot_cdfs(measured_runs, {"published profile": start, f"calibrated on {light}": models[light]},
                        results_dir=results, filename="fidelity_vllm_calibrated.png",
                        title=f"calibrated on {light} alone")
    # one light load: the decode step at heavier batches rests on the profile's shape (the prior), and says so
    print(reports[light].decode_steps().round(4))

# %% [markdown]
# ## 2b. Calibrate on two runs, predict the third
# The metric the notebook used before issue 21 (with three runs or more): each run predicted from the others.
# The runs' disagreement shows in their run factors.

# %%
if len(measured_runs) >= 3:
    others, other_reports, other_refused = vllm_runs.leave_one_out_workflow(start, measured_runs, **options)
    for name, report in other_reports.items():
        print(f"--- calibrated on {name}" + (f": REFUSED {other_refused[name]}" if name in other_refused else ""))
        if report is not None:
            print(report.describe())
else:
    others, other_reports = pd.DataFrame(columns=one_run.columns), {}
vllm_runs.run_factors_table(other_reports).round(3)

# %% [markdown]
# Every fold's held-out mean-E2E error beside main's before issue 21 (`MAIN_ERRORS`: main's calibrate on this
# engine, whose fits missed the medium run they were trained on by -12% alone and -16% beside the light run).

# %%
vllm_runs.against_main(one_run, others).round(3)

# %% [markdown]
# ## 3. LLMServingSim's runs: calibrate on the first requests, predict the rest
# Both runs are overloaded (about 10 requests/s: the RTX 4090's KV cache fills, the RTX PRO 6000 runs at
# `max_num_seqs`), so the last requests wait behind the first: the prediction is of a growing queue.
# LLMServingSim's own prediction of the whole run (from kernel profiles, `validation/summary.txt`) is off
# by +0.5% and -1.8% on mean E2E.

# %%
proxy = get_profile(params.llmservingsim_start)
split_tables, split_reports = [], {}
for gpu in params.llmservingsim_runs:
    run = wb.load_serving_log(params.llmservingsim_path(gpu))
    table, report, why = vllm_runs.split_workflow(proxy, run, params.split, **options)
    split_reports[f"{run.name}[:{params.split}]"] = report
    print(f"--- {run.name}: calibrated on its first {params.split} requests" + (f": REFUSED {why}" if why else ""))
    print(report.describe() if report is not None else "")
    split_tables.append(table)
split_table = pd.concat(split_tables, ignore_index=True)
split_table.pivot_table(index="run", columns="metric", values="mean_rel_error", sort=False).round(3)

# %% [markdown]
# ## 4. Against the targets, and what was written

# %%
table = pd.concat([published, one_run, others, split_table], ignore_index=True)
targets = vllm_runs.check_targets(pd.concat([one_run, others, split_table], ignore_index=True))
terms = vllm_runs.terms_table({**reports, **split_reports})
table.to_csv(results / "fidelity_vllm.csv", index=False)
targets.to_csv(results / "fidelity_vllm_targets.csv", index=False)
terms.to_csv(results / "fidelity_vllm_terms.csv", index=False)
print(f"wrote {results / 'fidelity_vllm.csv'}, fidelity_vllm_targets.csv and fidelity_vllm_terms.csv")
targets.round(3)

# %% [markdown]
# ## Reading the tables
#
# - Each run is reproduced by its own model (the server's times its run factor) within its bound. DistServe's
#   three runs disagree: fitted together, their run factors are 0.92 (light), 1.09 (medium) and 1.01
#   (saturated), up to 18% apart at the same batch sizes; so what is predicted from one run carries its
#   level, and the saturated run's queue, which multiplies a step-time error by 2-3 in its E2E and 10 or more
#   in its TTFT, amplifies any error. Measured with seed 0 (the tests
#   check it): calibrated on one run, mean E2E -29.9%/-25.8% from the light run (main before issue 21:
#   -29.1%/-23.9%), +4.1%/+11.5% from the medium one (+5.0%/+16.3%), +1.5%/-18.2% from the saturated one
#   (+3.8%/-15.4%); calibrated on two, the light run +9.2% (+4.4%), the medium -14.8% (-16.0%), the saturated
#   -0.9% (+6.5%). Five folds are better than main's, two within 2 points, two worse by 2.8 and 4.8 points,
#   both trained on the saturated run, whose setup makes the fits queue too little and decode too slowly
#   (TTFT -39%, TPOT +11%; a KV cache of about 3,500 blocks rather than setup.json's estimated 4,046 would
#   reproduce both). Over seeds 0-4 the held-out errors move by up to 10 points (the starting points of the
#   search), and main's calibrate moves as much with its own settings (damping 0.6 instead of 0.5: +26% instead of
#   +16% from the medium run to the saturated one), so differences of a few points are within the noise.
#   No run below saturation is off by more than the 30%.
# - One load stage cannot tell a decode step's fixed cost from its cost per context token, nor either from the
#   run's own level (its run factor): the fixed cost stays at the published profile (an isolated-step
#   profile measures a batch of one best; it moves only when load stages pin it), and the terms the run does
#   not pin keep status "prior" with the reason. The report's decode step by batch says how far a fit may be
#   trusted: within a few percent at the batches the run measured, growing beyond them.
# - LLMServingSim's runs are overloaded: the last 150 requests queue behind the first, and an error of the step
#   time compounds in their TTFT. The start is a proxy (another GPU), so its CPU overheads (BLIS fits them
#   behind an HTTP server, 6 ms per output token on the A100 profile) are not evidence about this in-process
#   engine: they start at 0 and enter only if the run asks for them.
