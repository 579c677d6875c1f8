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
# # Fidelity: the continuous engine against measured vLLM runs
#
# Three real vLLM serving runs of OPT-13B on one A100-80GB (DistServe's alignment data: 100 requests at
# 1/s, 200 at 2/s, 350 at 3.5/s; the last one saturates) are replayed through the continuous-batching
# engine (`continuous_fcfs`, vLLM v0.2 rules) with the serving setup of `setup.json` beside the CSVs
# (max_num_seqs 256, max_num_batched_tokens 16384, block size 16, KV blocks derived from
# gpu_memory_utilization 0.95; the formula is in the file) and compared request by request.
#
# 1. **Published profile, unchanged**: DistServe's step-time profile of this model and GPU
#    (`opt-13b-a100`), fitted on isolated steps.
# 2. **Calibrate on two runs, predict the third**, each way round. `wb.calibrate` refits the step-time
#    model jointly to the training runs (never one run at a time) by least squares on the measured
#    timelines: it replays the runs to learn which steps each request lived through, fits the step
#    coefficients (prefill: fixed, per token, per token squared; decode: fixed, per context token, per
#    request, in two batch-size regimes) non-negatively to measured TTFT and decode time (E2E - TTFT),
#    and repeats until the schedule settles. The cell that runs it prints what was fitted and what was
#    held.
# 3. **Calibrate on all three**: the model to use for this setup.
#
# Targets (issue 8), for the *predicted* runs: mean E2E within 20% and mean TTFT within 30% on every run
# below saturation, the saturated run's mean E2E within 25%. For orientation: BLIS reports a 6.8% median
# error on mean E2E over 38 real vLLM runs; Vidur several hundred percent on the same runs. The three
# runs here differ from each other by more than the model does (see the last section).

# %% tags=["parameters"]
# Parameters (papermill overrides them: -p name value)
results_dir = "results/default"  # where the CSV and the figures go
data_dir = "data/groundtruth/distserve_opt13b_a100_vllm"  # the measured runs and their setup.json
runs = ["vllm-100-1", "vllm-200-2", "vllm-350-3.5"]  # run files (without .csv) in data_dir; or "a,b,c"
profile = "opt-13b-a100"  # the published step-time profile (workbench.sim.profiles.profile_names())
thresholds = "fit"  # decode-regime boundaries tried by calibrate: "fit", None (keep the published one) or a list
max_iter = 8  # fixed-point iterations of calibrate

# %%
from pathlib import Path

import pandas as pd

import workbench as wb
from workbench.study import fidelity
from workbench.study.calibration import cross_validate, replay_table
from workbench.sim.profiles import get_profile

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
results = Path(results_dir)
results.mkdir(parents=True, exist_ok=True)
run_names = [r.strip() for r in runs.split(",")] if isinstance(runs, str) else list(runs)
measured_runs = [wb.load_serving_log(Path(data_dir) / f"{name}.csv") for name in run_names]
step = get_profile(profile)
print(step.describe())
pd.DataFrame([{"run": r.name, "requests": len(r.trace), "rate_rps": round(r.rate_rps, 2),
               "saturated": fidelity.is_saturated(r), "measured mean TTFT s": r.measured.ttft_s.mean(),
               "measured mean E2E s": r.measured.e2e_s.mean()} for r in measured_runs])

# %%
cfg = measured_runs[0].config
print("setup:", {k: getattr(cfg, k) for k in ("scheduler", "num_gpus", "max_num_seqs", "max_num_batched_tokens",
                                             "chunked_prefill", "block_size", "kv_blocks")})

# %% [markdown]
# ## 1. The published profile, unchanged

# %%
published = replay_table(step, measured_runs, label=f"{profile} (published)")
fidelity.summary_table(published).round(3)

# %%
fidelity.plot_cdfs(measured_runs, {"published profile": step}, results_dir=results,
                   filename="fidelity_vllm_published.png", title="published profile, unchanged")

# %% [markdown]
# ## 2. Calibrate on two runs, predict the third

# %%
predicted, fitted_by_held_out = cross_validate(
    step, measured_runs, thresholds=thresholds, max_iter=max_iter)
for held_out, model in fitted_by_held_out.items():
    print(f"--- predicting {held_out}:")
    print(model.fit_report.describe())
fidelity.summary_table(predicted).round(3)

# %%
targets = fidelity.check_targets(predicted, measured_runs)
targets

# %%
fidelity.plot_cdfs(measured_runs, {"published profile": step, "calibrated on the other runs": fitted_by_held_out},
                   results_dir=results, filename="fidelity_vllm_calibrated.png",
                   title="each run predicted by a model calibrated on the others")

# %% [markdown]
# ## 3. Calibrated on all runs

# %%
all_runs = wb.calibrate(step, measured_runs, thresholds=thresholds, max_iter=max_iter)
print(all_runs.fit_report.describe())
all_runs.fit_report.coefficients.assign(before_ms=lambda t: t.before * 1e3, after_ms=lambda t: t.after * 1e3)

# %%
in_sample = replay_table(all_runs, measured_runs, label="calibrated on all runs")
table = fidelity.summary_table(published, predicted, in_sample)
table.to_csv(results / "fidelity_vllm.csv", index=False)
targets.to_csv(results / "fidelity_vllm_targets.csv", index=False)
print(f"wrote {results / 'fidelity_vllm.csv'} and {results / 'fidelity_vllm_targets.csv'}")
table.round(3)

# %% [markdown]
# ## Reading the tables
#
# - The published profile was fitted on isolated steps. In these serving runs, decode steps at batch sizes
#   of 10-40 took longer than it predicts, so it underestimates E2E as load grows, and the saturated run's
#   queueing (its TTFT) almost entirely.
# - Calibration fits the step coefficients jointly to the training runs. The per-request overheads (a fixed
#   and a per-prompt-token delay before a request joins the queue) are kept only when they lower the
#   simulated error by at least 2%; the per-token overhead is held at its prior (zero) because in vLLM v0.2
#   that CPU work happens inside the engine loop and is part of the step time. The fit report above says
#   what was kept in each fit.
# - The runs disagree with each other: calibrated on all three, the model still misses each by up to ~13%
#   on mean E2E; the medium-load run sits on the slow side, the light one on the fast side. A model fitted on
#   the two slower runs over-predicts the light run, the case the 20% E2E target is hardest on.
# - Predicting the saturated run from the two lighter ones means extrapolating the decode cost from batch
#   sizes of ~25 to ~70. Where the decode regimes split is chosen by the training error, and the lighter
#   runs barely tell the candidates apart: with other, equally defensible settings of `calibrate` (slower
#   damping, a weaker prior) the choice flips and the saturated prediction moves from about +10% to about
#   +40% on mean E2E. Treat that prediction as uncertain by that much.
# - At the default parameters, when this notebook was written: predicted mean E2E +23% (light), -19%
#   (medium), +9% (saturated); mean TTFT +22% (light), -15% (medium). Four of the five targets are met;
#   the light run's E2E is not. The `targets` table above is the current verdict.
