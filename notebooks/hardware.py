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
# # Any model on any GPU: what fits, how much it serves, what it costs
#
# One trace, several models and GPUs. For each pair the workbench needs step times; it has measured ones for
# very few (DistServe's OPT-13B on A100, BLIS's fits on H100/A100, LLMServingSim's kernel profiles on the
# RTX 4090 and RTX PRO 6000), so every other pair is priced by the **roofline**
# (`wb.StepTimeModel.roofline`): each model's config.json facts and each GPU's spec-sheet peaks
# (`data/hardware/`), at efficiencies fitted once across the measured data the workbench ships and never to a
# run. Every row, label and bar says which kind of step times it rests on, and draws that kind's validated
# error (on the measured runs) as a band.
#
# 1. **What fits**: the smallest tensor-parallel degree at which each model's weights and one request's KV
#    cache fit each GPU (vLLM's memory rule), and the KV cache a replica then holds.
# 2. **Capacity per GPU and per dollar** at the SLA: the largest rate one replica serves with `attainment` of
#    the requests within the TTFT and TPOT limits (`wb.capacity`), divided by its GPUs and by its price.
# 3. **Where the estimates come from**: the roofline's step times beside the measured profiles of the same
#    deployments, and each kind's error on the measured runs.

# %% tags=["parameters"]
dataset = "azure_conv"        # the trace: a dataset name or a CSV
num_requests = 2000           # its first requests
models = ["llama-3.1-8b", "qwen3-30b-a3b", "qwen3-32b", "llama-3.1-70b"]   # catalogued names or config.json paths
gpus = ["l4", "a10g", "l40s", "rtx-4090", "rtx-pro-6000", "a100-80gb", "h100-sxm", "h200", "b200", "mi300x"]
tp = [1, 2, 4, 8]             # tensor-parallel degrees tried (the smallest that fits is used)
ttft_sla_s = 2.0
tpot_sla_s = 0.1
attainment = 0.9
max_num_seqs = 256
max_num_batched_tokens = 2048  # vLLM 0.19's runs and kernel profiles
gpu_memory_utilization = 0.9
prices = ""                   # your own dollars per GPU-hour as gpu and price pairs (see HardwareParams) else list prices
results_dir = "results/default"

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from workbench.study.runs import hardware as hw
from workbench.study.present.console import notebook_setup

notebook_setup()  # plain log lines, each warning once, compact tables
params = hw.HardwareParams.from_namespace(globals())   # the parameters above, validated
results = params.claim_results_dir()   # refused before anything runs if it holds another hardware report
trace = params.trace()
display(Markdown(params.setup_text(trace)))

# %% [markdown]
# ## 1. Which model fits on which GPU, at which TP
# A replica of `tp` GPUs holds the weights split over its GPUs, the activation peak of vLLM's profiling step on
# each, and the KV cache in what is left of `gpu_memory_utilization` of each GPU's memory
# (`workbench.hardware.roofline.kv_blocks`, vLLM's `determine_available_memory` and `get_num_blocks`). It fits
# when that cache holds at least one request of `max_num_batched_tokens` tokens.

# %%
fits = hw.fit_table(params)
fits.to_csv(results / "hardware_fit.csv", index=False)
hw.plot_fit(fits, f"Smallest TP at which each model fits, and the KV tokens a replica then holds\n"
            f"vLLM's memory rule, gpu_memory_utilization {params.gpu_memory_utilization:g} [catalogue facts]",
            results_dir=results)

# %% [markdown]
# ## 2. Capacity per GPU and per dollar at the SLA
# One replica of each model on each GPU at its smallest fitting TP. Plain bars: roofline step times; hatched:
# LLMServingSim's kernel profiles (where the workbench has them); cross-hatched: a measured profile (BLIS's fit,
# not validated here, or DistServe's). The error bars are each kind's median error of the mean E2E on the
# measured runs it was validated on (section 3).

# %%
errors, error_runs = hw.validated_errors()
error_runs.to_csv(results / "hardware_errors.csv", index=False)
table = hw.capacity_table(trace, params, fits, errors)
table.to_csv(results / "hardware_capacity.csv", index=False)
display(hw.plot_capacity(table, f"Capacity of one replica at the SLA (TTFT <= {params.ttft_sla_s:g} s, TPOT <= "
                         f"{params.tpot_sla_s * 1e3:g} ms for {params.attainment:.0%}), per GPU and per dollar\n"
                         f"{trace.label}; bars by kind of step times (roofline / kernel-profile / measured)",
                         results_dir=results))
display(table[["model", "gpu", "tp", "kind", "step_model", "capacity_rps", "capacity_per_gpu_rps",
               "price_per_gpu_hour", "requests_per_dollar", "validated_error", "capacity_error"]])

# %% [markdown]
# ## 3. Where each estimate comes from
# The roofline's step times beside the measured profiles of the same deployments (decode steps at a context of
# 1,024 tokens; prefill steps of one prompt), with a +-20% band around the measured ones; and each kind's
# error of the mean E2E on every measured run the workbench ships.

# %%
steps = hw.step_comparisons()
steps.to_csv(results / "hardware_steps.csv", index=False)
display(hw.plot_steps(steps, "Step times: measured profiles (black) and the roofline of the same deployment "
                      "(orange)\n[measured] DistServe's isolated steps and BLIS's fits; [roofline] config.json + "
                      "spec sheets", results_dir=results))
display(error_runs)
display(Markdown("\n".join(f"* {line}" for line in hw.findings(fits, table, errors))))
