"""How good is the roofline: its step times against the measured profiles of the same deployments, and its
replay of every measured serving run the workbench ships, with nothing fitted to the runs.

* :func:`step_comparison`: roofline vs a measured step-time profile on decode steps of 1-256 requests at
  contexts of 64-4,096 tokens (those whose KV cache fits the deployment's) and prefill steps of 1-256 prompts
  of 64-4,096 tokens (as many as fit in ``max_num_batched_tokens``), the relative error of each step;
* :func:`replay_runs`: each measured run simulated with the roofline of its model and GPU, its mean, p50 and
  p90 TTFT, TPOT and E2E against the measured ones: the three vLLM v0.2 runs and the six DistServe
  (disaggregated) runs of OPT-13B on A100-80GB, and LLMServingSim's two vLLM 0.19 runs of Llama-3.1-8B (set
  up as :mod:`workbench.study.fidelity.kernel_runs` sets them up for the kernel-profile replay).

``benchmarks/roofline_targets.py`` prints both and the issue's targets.

Against DistServe's two OPT-13B A100 profiles (isolated steps timed on vLLM v0.2 and on DistServe's engine),
every compared step is within 20%.  BLIS's H100 entries are least-squares fits of ``b0 + b1 x prefill tokens +
b2 x decodes`` to serving latencies, jointly with per-request overheads, not timed steps; what a roofline that
also fits the other data reaches of them, and why no more (figures from ``benchmarks/roofline_targets.py``):

* ``llama-3.1-8b-h100`` (vLLM 0.11): prefill 100%, decode 40%.  The entry charges 304 us per decoding request
  and nothing for context: 84 ms for 256 requests, where the H100 at its peaks needs 5.7 ms (at 64 tokens of
  context) and vLLM 0.19's per-sequence kernels (sampler and output head) add about 1 us per extra sequence
  (the RTX PRO 6000 kernel profile: 739 us at 1 sequence, 936 us at 192); BLIS's own entry for the same model
  and GPU at TP 2 (vLLM 0.8.4) charges 2.8 us.  Only steps of up to 8 requests come within 20%.
* ``llama-3.3-70b-h100-tp4`` (vLLM 0.8.4): prefill 36%, decode 0%.  A one-request decode step of 12.7 ms is
  1.22 times the 10.4 ms in which the four GPUs read their 35 GB of weights at peak bandwidth, leaving 2.3 ms for
  every fixed cost of 80 layers and 160 all-reduces, while vLLM V1's other entries put 3 ms and more of fixed
  cost on a step (Qwen3-14B's one-request step is 13.6 ms, 1.63 times its floor): the shared constants give
  15.4 ms (+22%).  Its prefill, 76 us per prompt token of which the GEMMs' FLOPs take 35 us at peak, implies an
  all-reduce at about 0.3 of NVLink's bandwidth; the other tensor-parallel BLIS entries imply less (Qwen2.5-7B at
  TP 2 is slower per token than at TP 1) and DistServe's A100 profiles about 0.2-0.4, and the shared fit (0.18)
  makes this entry's prefill 23% slow at the median.
* ``qwen3-14b-h100`` (vLLM 0.11): prefill 79%, decode 85%.  With no context term, its decode of 64 requests at
  4,096 tokens takes 15.3 ms where reading the weights and the KV cache takes 21.4 ms at peak bandwidth (below
  the floor, ``below_floor``), and the longest contexts in general come out slow by the KV read BLIS leaves out.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from workbench import checks
from workbench.paths import DATA_DIR

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)
# measured profiles of deployments the catalogue also has: registered profile -> (model, GPU, tp, engine, whether
# the profile holds the serving overheads).  DistServe's profiler times isolated steps; BLIS fits its betas to
# end-to-end latencies of serving runs.
MEASURED_PROFILES = {
    "opt-13b-a100": ("opt-13b", "a100-80gb", 1, "vllm-v0.2", False),
    "opt-13b-a100-distserve": ("opt-13b", "a100-80gb", 1, "distserve", False),
    "llama-3.1-8b-h100": ("llama-3.1-8b", "h100-sxm", 1, "vllm-v1", True),
    "llama-3.3-70b-h100-tp4": ("llama-3.1-70b", "h100-sxm", 4, "vllm-v1", True),
    "qwen3-14b-h100": ("qwen3-14b", "h100-sxm", 1, "vllm-v1", True),
}
E2E_TARGET = 0.15       # median |error of mean E2E| over the runs
STEP_TARGET = 0.20      # |error| of a step against the measured profile


def comparison_steps(max_num_batched_tokens: int = 16384, max_kv_tokens: float = float("inf")) -> pd.DataFrame:
    """The steps compared: ``kind`` (prefill/decode), ``batch`` (requests), ``tokens`` (prompt length or
    context); decode steps whose contexts exceed ``max_kv_tokens`` (the deployment's KV cache) cannot happen and
    are left out."""
    rows = [{"kind": "decode", "batch": n, "tokens": L} for n in DECODE_BATCHES for L in LENGTHS
            if n * L <= max_kv_tokens]
    rows += [{"kind": "prefill", "batch": n, "tokens": L} for n in DECODE_BATCHES for L in LENGTHS
             if n * L <= max_num_batched_tokens]
    return pd.DataFrame(rows)


def step_comparison(measured, roofline, max_num_batched_tokens: int = 16384,
                    max_kv_tokens: float = float("inf"), floor=None) -> pd.DataFrame:
    """Every step of :func:`comparison_steps` priced by both models (StepTimeModels): ``measured_s``,
    ``roofline_s``, ``error`` (roofline / measured - 1); with ``floor`` (a ``Roofline`` at its peaks,
    ``Roofline.at_peak()``) also ``floor_s``, the least time the deployment's GPUs need for the step, and
    ``below_floor``: the measured time is more than :data:`STEP_TARGET` under it, so no physical model comes
    within the target there."""
    steps = comparison_steps(max_num_batched_tokens, max_kv_tokens)
    measured_s, roofline_s, floor_s = [], [], []
    for kind, n, L in steps[["kind", "batch", "tokens"]].itertuples(index=False):
        args = {"context_lengths": [L] * n} if kind == "decode" else {"prompt_lengths": [L] * n}
        measured_s.append(measured.step_time_s(**args))
        roofline_s.append(roofline.step_time_s(**args))
        floor_s.append(np.nan if floor is None else floor.step_time_s(**args))
    steps["measured_s"], steps["roofline_s"] = measured_s, roofline_s
    steps["error"] = steps.roofline_s / steps.measured_s - 1
    if floor is not None:
        steps["floor_s"] = floor_s
        steps["below_floor"] = steps.measured_s * (1 + STEP_TARGET) < steps.floor_s
    return steps


def roofline_of_profile(name: str):
    """The roofline StepTimeModel a measured profile of :data:`MEASURED_PROFILES` is compared with: same model,
    GPU, TP and engine, with the serving overheads only when the profile holds them."""
    import dataclasses

    from workbench.hardware.roofline import ENGINE_EFFICIENCIES, step_model

    model, gpu, tp, engine, serving = MEASURED_PROFILES[name]
    e = ENGINE_EFFICIENCIES[engine]
    if not serving:
        e = dataclasses.replace(e, serving_step_s=0.0, serving_sequence_s=0.0, serving_context_s=0.0)
    return step_model(model, gpu, tp=tp, engine=engine, efficiencies=e,
                      name=f"{model}@{gpu}/tp{tp} ({engine}{'' if serving else ', isolated steps'})")


def profile_comparisons() -> pd.DataFrame:
    """:func:`step_comparison` of every profile of :data:`MEASURED_PROFILES` with its roofline
    (:func:`roofline_of_profile`), column ``profile``."""
    from workbench.sim.profiles import get_profile

    from workbench.hardware.roofline import Roofline, kv_blocks

    frames = []
    for name, (model, gpu, tp, engine, _) in MEASURED_PROFILES.items():
        capacity = 16 * kv_blocks(model, gpu, tp=tp, gpu_memory_utilization=0.9)   # vLLM's default
        frames.append(step_comparison(get_profile(name), roofline_of_profile(name), max_kv_tokens=capacity,
                                      floor=Roofline(model, gpu, tp).at_peak()).assign(
            profile=name, model=model, gpu=gpu, tp=tp, engine=engine))
    return pd.concat(frames, ignore_index=True)


def profile_summary(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per profile and step kind: median and largest |error|, the share of steps within :data:`STEP_TARGET`, and
    (when the comparisons have it) how many measured steps lie below the GPUs' floor (``below_floor``)."""
    comparisons = comparisons.assign(abs_error=comparisons.error.abs())
    if "below_floor" not in comparisons:
        comparisons = comparisons.assign(below_floor=False)
    grouped = comparisons.groupby(["profile", "kind"])
    return grouped.agg(steps=("error", "size"), median_error=("error", "median"),
                       median_abs_error=("abs_error", "median"), max_abs_error=("abs_error", "max"),
                       within_target=("abs_error", lambda e: float((e <= STEP_TARGET).mean())),
                       below_floor=("below_floor", "sum")).reset_index()


# ---------------------------------------------------------------------------------------- the runs
@dataclass(frozen=True)
class MeasuredRun:
    """A measured run, the roofline that replays it, and which campaign it belongs to."""

    campaign: str
    run: object          # a ServingLog
    latency: object      # a StepTimeModel, or {"prefill": ..., "decode": ...}


# LLMServingSim's hardware names -> the GPU catalogue's
LLMSERVINGSIM_GPUS = {"RTX4090": "rtx-4090", "RTXPRO6000": "rtx-pro-6000"}
# each campaign's serving engine (the roofline's efficiencies of that engine replay it)
CAMPAIGN_ENGINES = {"vllm": "vllm-v0.2", "disaggregated": "distserve", "llmservingsim": "vllm-v1"}


def measured_runs(campaigns=("vllm", "disaggregated", "llmservingsim"), efficiencies=None,
                  llmservingsim_runs=None) -> list[MeasuredRun]:
    """Every measured run the workbench ships, each with the roofline of its deployment and serving engine
    (tables for the continuous engine; for the disaggregated engine the tables' linear fits, the form the
    DistServe engine's serving constants were fitted in: replayed with the tables instead, the six runs' mean
    E2E errors move by 0.2-2.4 points, median 4.5% -> 4.6%); ``efficiencies``: engine -> Efficiencies replacing
    the stated ones.  LLMServingSim's runs: those named in ``llmservingsim_runs``, default every measured one in
    its campaign folders (:func:`workbench.study.fidelity.kernel_runs.measured_run_names`: measurements added
    there are scored too), each with :func:`llmservingsim_roofline`."""
    from workbench.hardware.roofline import ENGINE_EFFICIENCIES, step_model

    stated = dict(ENGINE_EFFICIENCIES, **(efficiencies or {}))

    def roofline(model, gpu, *, campaign, **options):
        engine = CAMPAIGN_ENGINES[campaign]
        return step_model(model, gpu, engine=engine, efficiencies=stated[engine], **options)

    out = []
    if "vllm" in campaigns:
        step = roofline("opt-13b", "a100-80gb", tp=1, campaign="vllm")
        for path in sorted(glob.glob(str(DATA_DIR / "groundtruth" / "distserve_opt13b_a100_vllm" / "*.csv"))):
            out.append(MeasuredRun("vLLM v0.2, OPT-13B, A100-80GB", _load(path), step))
    if "disaggregated" in campaigns:
        for path in sorted(glob.glob(str(DATA_DIR / "groundtruth" / "distserve_opt13b_a100_disagg" / "*.csv"))):
            run = _load(path)
            c = run.config
            pools = {"prefill": roofline("opt-13b", "a100-80gb", tp=c.prefill_tp, table=False, campaign="disaggregated",
                                         max_num_seqs=c.prefill_max_batch_size,
                                         max_num_batched_tokens=c.prefill_max_tokens),
                     "decode": roofline("opt-13b", "a100-80gb", tp=c.decode_tp, table=False, campaign="disaggregated",
                                        max_num_seqs=min(c.decode_max_batch_size, 512))}
            out.append(MeasuredRun("DistServe (disaggregated), OPT-13B, A100-80GB", run, pools))
    if "llmservingsim" in campaigns:
        from workbench.study.fidelity.kernel_runs import measured_run_names

        for name in measured_run_names() if llmservingsim_runs is None else llmservingsim_runs:
            run = _load(name, llmservingsim=True)
            out.append(MeasuredRun(f"vLLM 0.19 (LLMServingSim), {run.model_id.rsplit('/', 1)[-1]}", run,
                                   llmservingsim_roofline(run, stated[CAMPAIGN_ENGINES["llmservingsim"]])))
    return out


def llmservingsim_roofline(run, efficiencies=None):
    """The roofline StepTimeModel of one of LLMServingSim's runs (a :class:`~workbench.study.fidelity.kernel_runs.
    KernelRun`, measured or not): its model (from the catalogue by its Hugging Face id), GPU, TP and expert
    parallelism, over its batch limits, at vLLM V1's stated efficiencies (or ``efficiencies``)."""
    from workbench.hardware.catalog import get_model_arch
    from workbench.hardware.roofline import ENGINE_EFFICIENCIES, step_model

    engine = CAMPAIGN_ENGINES["llmservingsim"]
    gpu = checks.choice(run.hardware, "hardware", LLMSERVINGSIM_GPUS,
                        hint="add LLMServingSim's name of the GPU to roofline_runs.LLMSERVINGSIM_GPUS")
    return step_model(get_model_arch(run.model_id).name, LLMSERVINGSIM_GPUS[gpu], tp=run.tp, ep=run.ep,
                      engine=engine, efficiencies=ENGINE_EFFICIENCIES[engine] if efficiencies is None else efficiencies,
                      max_num_seqs=run.config.max_num_seqs, max_num_batched_tokens=run.config.max_num_batched_tokens)


@lru_cache(maxsize=32)
def _load(path: str, llmservingsim: bool = False):
    """A shipped run, read once (the fit replays them many times): a serving log, or one of LLMServingSim's runs
    set up as :func:`workbench.study.fidelity.kernel_runs.run_setup` sets it up (its trace, measured times and
    vLLM 0.19 engine settings; its kernel-profile model is not used here)."""
    from workbench.traces.serving_log import load_serving_log

    if llmservingsim:
        from workbench.study.fidelity.kernel_runs import run_setup

        return run_setup(path)
    return load_serving_log(path)


def replay_runs(runs=None, efficiencies=None) -> pd.DataFrame:
    """Each run replayed with its roofline: one row per run and metric (ttft_s, tpot_s, e2e_s) with the measured
    and simulated mean, p50, p90 and the relative error of the mean."""
    from workbench.sim.simulate import SlaScaleWarning, simulate

    rows = []
    for item in (measured_runs(efficiencies=efficiencies) if runs is None else runs):
        run = item.run
        with warnings.catch_warnings():   # kernel_runs' setups carry generous SLAs on purpose: the warning is noise
            warnings.simplefilter("ignore", SlaScaleWarning)
            sim = simulate(run.trace, run.config, latency=item.latency).requests
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            m = run.measured[metric].to_numpy(np.float64)
            s = sim[metric].to_numpy(np.float64)
            ok = np.isfinite(m) & np.isfinite(s)
            rows.append({"campaign": item.campaign, "run": run.name, "metric": metric, "requests": int(ok.sum()),
                         "measured_mean": m[ok].mean(), "roofline_mean": s[ok].mean(),
                         "error": s[ok].mean() / m[ok].mean() - 1,
                         "measured_p50": np.percentile(m[ok], 50), "roofline_p50": np.percentile(s[ok], 50),
                         "measured_p90": np.percentile(m[ok], 90), "roofline_p90": np.percentile(s[ok], 90)})
    return pd.DataFrame(rows)


__all__ = ["E2E_TARGET", "MEASURED_PROFILES", "STEP_TARGET", "MeasuredRun", "comparison_steps",
           "llmservingsim_roofline", "measured_runs", "profile_comparisons", "profile_summary", "replay_runs",
           "step_comparison"]
