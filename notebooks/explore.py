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
# # Live explorer
#
# Move a widget and the workbench re-simulates the trace (its first `num_requests` requests) with the
# compiled engine and redraws four panels: the latency CDF against the SLA, the mean wait per bin,
# each GPU's busy share, and the load-latency plane where every run so far leaves a point (labelled
# with its GPU count). The line under the figure says how long the simulation and the drawing took.
#
# Every scheduler runs on one hardware model, as in the step notebooks: the `opt-13b-a100` step-time profile
# (static batches in step mode) with that GPU's memory, judged on time to first token (the TTFT limit widget)
# and time per output token; 90% of the requests within both limits is the target, and the title says whether
# the run meets it. Only the knobs the chosen scheduler reads are live: K for the multi-bin schedulers, the
# batch size for `static_fifo` and `multi_bin_fixed`, `b_max` and the latency budget for the SLA controllers
# (`dynamic_no_bins`, `multi_bin_dynamic`); the title names only those.
# `Explorer(..., step_profile="seed-grid")` explores the seed study's formula grid instead.
#
# Traces and their load: `synthetic` is the synthetic BurstGPT-like trace (not measured traffic), replayed at its
# timestamps divided by 10, as the steps do (about 2.6 requests/s); `azure_conv` and `azure_code` are one real
# hour of two Azure LLM services (Splitwise, 2023), replayed at the rate they were recorded at (about 5.5 and
# 2.6 requests/s). The `load x` widget multiplies either, and the title gives the rate replayed. The first view
# is `multi_bin_dynamic` on 48 GPUs, a pool that meets the target on the synthetic trace; slide the GPUs down to
# see where it stops meeting it (step 2 answers that for the whole trace).
#
# The explorer needs a live kernel (JupyterLab: `make lab`); a rendered copy (HTML) has no live widgets, so the
# last cell keeps the first run's figure as a still image.

# %% tags=["parameters"]
num_requests = 100_000
traces = ("synthetic", "azure_conv", "azure_code")
seed = 0

# %%
from workbench.study.explore import Explorer

explorer = Explorer(traces, num_requests=num_requests, seed=seed)
explorer.show()

# %% [markdown]
# The first run as a still image (what a rendered copy of this notebook shows; the live figure is above).

# %%
from IPython.display import Image

Image(explorer.last_image)
