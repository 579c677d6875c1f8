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
#    coefficients non-negatively to measured TTFT and decode time (E2E - TTFT), and repeats until the
#    schedule settles. The same method, with the same settings, in each of the three folds:
#    - **fitted**: the per-token terms of a prefill step (per prompt token, per prompt token squared) and of
#      a decode step (per context token, per running request): the work that grows with the batch, where
#      serving adds per-request CPU work (scheduling, block tables, sampling, detokenisation) that an
#      isolated-step profile does not see; and a per-request arrival delay (fixed + per prompt token) only
#      if it lowers the simulated error by 2% or more;
#    - **held at the published profile**: the fixed cost of a prefill and of a decode step. A batch of one
#      is what an isolated-step profile measures best, and two serving runs at batch sizes of 15-70 cannot
#      tell a fixed cost from a per-request one: fitted, it extrapolates to the light run's batches of ~5
#      too slow;
#    - **kept**: the published decode-regime boundary (batch 95), which these runs barely reach;
#    - **how the runs weigh**: each training run and each metric the same (not each request: the
#      350-request run would dominate), and every coefficient pays for leaving the published value with
#      weight `(0.15 / 0.5)^2 = 0.09`: real runs differ from each other by about 15% at the same batch
#      sizes, so aim for the middle of the runs rather than for one of them, and trust a published
#      per-token coefficient to within 50%.
#
#    The cell that runs it prints what was fitted and what was held.
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
thresholds = None  # decode-regime boundaries tried by calibrate: None (keep the published one), "fit" or a list
max_iter = 8  # fixed-point iterations of calibrate
prior_weights = [0.03, 0.05, 0.15, 0.3]  # other prior weights whose cross-validated targets are shown ([]: none)

# %%
import pandas as pd

import workbench as wb
from workbench.study.fidelity import vllm_runs
from workbench.study.fidelity.calibration import cross_validate, replay_table
from workbench.sim.profiles import get_profile

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
params = vllm_runs.FidelityParams.from_namespace(globals())  # the parameters above, validated
profile, thresholds, max_iter, prior_weights = params.profile, params.thresholds, params.max_iter, params.prior_weights
results = params.claim_results_dir()  # refused before anything runs if it holds another fidelity report
measured_runs = [wb.load_serving_log(path) for path in params.run_paths()]
step = get_profile(profile)
print(step.describe())
pd.DataFrame([{"run": r.name, "requests": len(r.trace), "rate_rps": round(r.rate_rps, 2),
               "saturated": vllm_runs.is_saturated(r), "measured mean TTFT s": r.measured.ttft_s.mean(),
               "measured mean E2E s": r.measured.e2e_s.mean()} for r in measured_runs])

# %%
cfg = measured_runs[0].config
print("setup:", {k: getattr(cfg, k) for k in ("scheduler", "num_gpus", "max_num_seqs", "max_num_batched_tokens",
                                             "chunked_prefill", "block_size", "kv_blocks")})

# %% [markdown]
# ## 1. The published profile, unchanged

# %%
published = replay_table(step, measured_runs, label=f"{profile} (published)")
vllm_runs.summary_table(published).round(3)

# %%
vllm_runs.plot_cdfs(measured_runs, {"published profile": step}, results_dir=results,
                    filename="fidelity_vllm_published.png", title="published profile, unchanged")

# %% [markdown]
# ## 2. Calibrate on two runs, predict the third

# %%
predicted, fitted_by_held_out = cross_validate(
    step, measured_runs, thresholds=thresholds, max_iter=max_iter)
for held_out, model in fitted_by_held_out.items():
    print(f"--- predicting {held_out}:")
    print(model.fit_report.describe())
vllm_runs.summary_table(predicted).round(3)

# %%
targets = vllm_runs.check_targets(predicted, measured_runs)
targets

# %%
vllm_runs.plot_cdfs(measured_runs, {"published profile": step, "calibrated on the other runs": fitted_by_held_out},
                    results_dir=results, filename="fidelity_vllm_calibrated.png",
                    title="each run predicted by a model calibrated on the others")

# %% [markdown]
# ### Does the verdict hang on the prior weight?
# The same cross-validation with other weights on the published profile (the default is 0.09).

# %%
checked = vllm_runs.sensitivity(step, measured_runs, "prior_weight", prior_weights, thresholds=thresholds,
                                max_iter=max_iter)
checked.pivot_table(index="prior_weight", columns=["run", "metric"], values="mean_rel_error").round(3)

# %% [markdown]
# ## 3. Calibrated on all runs

# %%
all_runs = wb.calibrate(step, measured_runs, thresholds=thresholds, max_iter=max_iter)
print(all_runs.fit_report.describe())
all_runs.fit_report.coefficients.assign(before_ms=lambda t: t.before * 1e3, after_ms=lambda t: t.after * 1e3)

# %%
in_sample = replay_table(all_runs, measured_runs, label="calibrated on all runs")
table = vllm_runs.summary_table(published, predicted, in_sample)
table.to_csv(results / "fidelity_vllm.csv", index=False)
targets.to_csv(results / "fidelity_vllm_targets.csv", index=False)
print(f"wrote {results / 'fidelity_vllm.csv'} and {results / 'fidelity_vllm_targets.csv'}")
table.round(3)

# %% [markdown]
# ## Reading the tables
#
# - The published profile was fitted on isolated steps. In these serving runs, decode steps at batch sizes
#   of 10-70 took longer than it predicts, so it underestimates E2E as load grows, and the saturated run's
#   queueing (its TTFT) almost entirely. At the light run's batch sizes (~5) it is close (-4% on mean E2E).
# - The runs disagree with each other: fitted to each run alone (fixed costs held), the decode step's
#   per-token terms (per context token and per request, scaled together) came out 1.62x the published
#   ones on the light run, 1.93x on the medium one and 1.60x on the saturated one (measured before issue
#   14's v0.2 rules). The medium run is the slow one; calibrated on all three, the model still misses
#   it by -15% on mean E2E and the saturated run by +10%. That is why the fit aims for the middle of the
#   training runs (equal weight per run, a prior toward the published profile) rather than at one run.
# - Predicted from the other two (default settings, with the v0.2.3 rules of issue 14: padded prefill
#   batches, the 1% watermark, preempted requests keeping their tokens): mean E2E +4% (light), -16%
#   (medium), +7% (saturated); mean TTFT +23% (light), -13% (medium). All five targets are met. (Before
#   issue 14: +3%, -16%, +12%; +21%, -9%.) The `targets` table above is the current verdict.
# - What changed the verdict, measured before issue 14: with the fixed step costs fitted instead of held,
#   the light run's E2E is over-predicted by +23-25% (the miss of the previous version); holding them
#   brings it to +3% whatever the other settings. Choosing the regime boundary by training error instead of
#   keeping 95 changes nothing at these settings. Fitting per-request relative errors instead of
#   per-run-scaled absolute ones made the medium run miss (-25% to -29%); tying the decode step's
#   per-context and per-request terms to one factor did not help the saturated run (+16% to +37%).
# - The saturated run is the fragile one: near saturation E2E is dominated by queueing, which reacts
#   steeply to the decode step time at batch ~60-70, an extrapolation from the lighter runs' batches of
#   5-25. Its predicted E2E moves by several points with the prior weight, not monotonically: +18% at
#   0.03, +25.2% at 0.05 (just over its 25% limit), +7% at 0.09, +2% at 0.15, -3% at 0.2, -9% at 0.3; the
#   other targets hold from 0.03 to 0.2, and at 0.3 the light run's TTFT misses (+34%). Treat the
#   saturated prediction as uncertain by about +-20%.
# - Left as is: the KV-cache size (4046 blocks) is the estimate derived in `setup.json`, not fitted. Even
#   calibrated on all three runs, the saturated run's TTFT is under-predicted (-20%) and its E2E
#   over-predicted (+10%): real requests queued longer and then decoded faster than simulated, as they
#   would with a smaller running batch. A smaller KV cache would do that, but nothing in vLLM's memory
#   profiling supports a reserve that large (about 450 blocks fewer, 6 GB more than the ~2 GB activation
#   peak of a 16384-token profiling pass), so it is reported, not tuned.
