"""Fitting the roofline's efficiencies once, across the measured data the workbench ships.

What is compared (each a *group* of points; every group weighs the same in the fit):

* **kernel profiles** (``data/groundtruth/llmservingsim_vllm019/kernel_profiles``: vLLM 0.19 kernels measured
  on the RTX 4090 and the RTX PRO 6000, per layer): a dense layer's kernels (QKV, output and MLP projections,
  norms, rotary, activation) summed, against the roofline's linear layers plus ``layer_s``, by token count;
  the attention kernel of pure-prefill and pure-decode batches against the roofline's attention; the output
  head by sequences.  These set the compute and bandwidth shares;
* **step-time profiles**: DistServe's (``data/groundtruth/distserve_*/profiler-*.json``: OPT-13B and OPT-66B on
  A100-80GB, vLLM v0.2 and DistServe's engine, TP 1-8) and BLIS's (``data/step_profiles``: the bf16 entries
  of catalogued models on H100 and A100-80GB), each evaluated on the steps the roofline is judged on
  (:func:`step_grid`: prefill steps of 1-256 prompts of 64-4,096 tokens, decode steps of 1-256 requests at
  contexts of 64-4,096 tokens the deployment's KV cache holds), against the roofline's whole step.  These set
  the engines' kernel speeds (GEMMs and attention apart), the fixed costs (per layer, per step, per sequence),
  the all-reduce's, and with the kernel profiles how sharply a GEMM turns from memory- to compute-bound.

The residual of a point is ``log(roofline / measured)``, divided by the square root of its group's size; the
loss is robust (``soft_l1``, scale 0.1: a group's outliers beyond ~10% count linearly).  Quantised BLIS entries
(fp8, w4a16, w8a8), models outside the catalogue, and entries that put a one-request decode step or a
4,096-token prefill below what the GPUs need at their peaks (``Roofline.at_peak``: a fit artefact, not a step
time; e.g. Llama-3.3-70B on eight H100s at 10 us per prompt token, whose FLOPs take 18 us at peak) are left
out; attention kernels shorter than :data:`MIN_KERNEL_US` (whose time is their launch, held by ``layer_s``)
are not compared.

Then each engine's serving overheads (per step, per sequence, per context token: the server's loop and
streaming, which an isolated-step profile does not hold) are fitted to its measured runs whose queue kept up
(:func:`fit_serving_overheads`).  ``benchmarks/roofline_targets.py --refit`` re-runs both (about 15 s).

The runs are what the fitted roofline is judged on (``benchmarks/roofline_targets.py``): the serving fit
sees three numbers per engine, and leaving each run out of it moves its prediction by the figures ``--loo``
prints.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from workbench.hardware.catalog import get_model_arch
from workbench.hardware.roofline import Efficiencies, Roofline, StepStats
from workbench.paths import DATA_DIR
from workbench.study.fidelity.kernel_runs import SHIPPED_RUNS

log = logging.getLogger(__name__)

KERNEL_PROFILES = DATA_DIR / "groundtruth" / "llmservingsim_vllm019" / "kernel_profiles"
# kernel-profile folder -> (catalogue model, catalogue GPU)
KERNEL_FOLDERS = {
    "RTX4090/meta-llama/Llama-3.1-8B": ("llama-3.1-8b", "rtx-4090"),
    "RTXPRO6000/meta-llama/Llama-3.1-8B": ("llama-3.1-8b", "rtx-pro-6000"),
    "RTXPRO6000/Qwen/Qwen3-32B": ("qwen3-32b", "rtx-pro-6000"),
    "RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507": ("qwen3-30b-a3b", "rtx-pro-6000"),
}
DENSE_KERNELS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "act_fn", "rotary_emb", "qk_norm")
# DistServe's profiles: (file, model id in it, catalogue model)
DISTSERVE_FILES = (   # (file, the engine it was measured on)
    (DATA_DIR / "groundtruth" / "distserve_opt13b_a100_vllm" / "profiler-a100-80g.vllm.json", "vllm-v0.2"),
    (DATA_DIR / "groundtruth" / "distserve_opt13b_a100_disagg" / "profiler-a100-80g.distserve.json", "distserve"),
)
KERNEL_ENGINE = "vllm-v1"   # the kernel profiles were taken with vLLM 0.19
BLIS_ENGINE = "vllm-v1"     # BLIS's entries come from vLLM 0.8.4-0.11 (the V1 engine is the default from 0.8)
DISTSERVE_MODELS = {"facebook/opt-13b": "opt-13b", "facebook/opt-66b": "opt-66b"}
BLIS_GPUS = {"H100": "h100-sxm", "A100-80": "a100-80gb"}
QUANTISED = ("fp8", "w4a16", "w8a8", "quantized")
# bounds of the fitted parameters (efficiencies in (0, 1]; fixed costs >= 0)
BOUNDS = {"gemm_compute": (0.05, 1.0), "attention_compute": (0.02, 1.0), "memory": (0.2, 1.0), "kv_memory": (0.1, 1.0),
          "link": (0.02, 1.0), "ridge_exponent": (1.0, 16.0),
          "allreduce_s": (0.0, 2e-3), "layer_s": (0.0, 1e-3), "step_s": (0.0, 0.05), "sequence_s": (0.0, 1e-3)}
LOSS_SCALE = 0.1
MIN_KERNEL_US = 50.0
MIN_CHUNK = 512
FLOOR_CONTEXT = 64   # the context of the one-request decode step a BLIS entry is checked on


@dataclass(frozen=True)
class Group:
    """Measured times of one source (a kernel table, a step profile), the steps they are of, and which part of
    the roofline they are compared with (``part``: ``dense_layer``, ``attention``, ``head`` or ``step``)."""

    name: str
    source: str
    model: str
    gpu: str
    tp: int
    stats: StepStats
    measured_s: np.ndarray
    part: str
    engine: str = "vllm-v1"


def _predict(group: Group, efficiencies: Efficiencies) -> np.ndarray:
    roofline = Roofline(group.model, group.gpu, group.tp, efficiencies=efficiencies).isolated()
    if group.part == "step":
        return roofline.time_s(group.stats)
    parts = roofline.parts(group.stats)
    layers = roofline.model.layers
    if group.part == "dense_layer":
        return parts["gemm"] / layers + efficiencies.layer_s
    if group.part == "attention":
        return (parts["prefill_attention"] + parts["decode_attention"]) / layers
    if group.part == "head":
        return parts["head"]
    raise ValueError(f"unknown part {group.part!r}")


# ---------------------------------------------------------------------------------------- the groups
def _kernel_groups() -> list[Group]:
    groups = []
    for folder, (model, gpu) in KERNEL_FOLDERS.items():
        base = KERNEL_PROFILES / folder / "bf16"
        arch = get_model_arch(model)
        for tp_dir in sorted(base.glob("tp*")):
            tp = int(tp_dir.name[2:])
            where = f"{folder} tp{tp}"
            dense = pd.read_csv(tp_dir / "dense.csv")
            if not arch.is_moe:   # a MoE model's MLP is in moe.csv, compared by tests, not fitted
                wide = dense.pivot_table(index="tokens", columns="layer", values="time_us")
                kernels = [k for k in DENSE_KERNELS if k in wide.columns]
                norms = 2 * wide["layernorm"] if "layernorm" in wide.columns else 0.0
                per_layer = (wide[kernels].sum(axis=1) + norms).dropna()
                tokens = per_layer.index.to_numpy(dtype=np.float64)
                groups.append(Group(f"kernels {where}: dense layer", str(tp_dir / "dense.csv"), model, gpu, tp,
                                    StepStats.of(prefill_tokens=tokens), per_layer.to_numpy() * 1e-6,
                                    "dense_layer", KERNEL_ENGINE))
            att = pd.read_csv(tp_dir / "attention.csv")
            # a small attention kernel's time is its launch and ramp-up (8-10 us whatever its size), which the
            # roofline's layer_s holds; the kernel's own roofline is compared where the kernel is long enough
            att = att[att.time_us >= MIN_KERNEL_US]
            # FlashAttention spreads a prefill over query tiles: a chunk of fewer than MIN_CHUNK tokens against a
            # long cached context leaves most SMs idle (a 16-token chunk over 16k cached tokens runs at a tenth of
            # the bandwidth), an occupancy effect outside any roofline; those shots are not compared
            prefill = att[(att.n_decode == 0) & (att.prefill_chunk >= MIN_CHUNK)]
            decode = att[(att.prefill_chunk == 0) & (att.n_decode > 0)]
            l, p = prefill.prefill_chunk.to_numpy(float), prefill.kv_prefill.to_numpy(float)
            groups.append(Group(f"kernels {where}: prefill attention", str(tp_dir / "attention.csv"), model, gpu,
                                tp, StepStats.of(prefill_tokens=l, prefill_pairs=l * (p + (l + 1) / 2),
                                                 prefill_kv_tokens=p + l, prefill_sequences=np.ones_like(l)),
                                prefill.time_us.to_numpy() * 1e-6, "attention", KERNEL_ENGINE))
            n, kv = decode.n_decode.to_numpy(float), decode.kv_decode.to_numpy(float)
            groups.append(Group(f"kernels {where}: decode attention", str(tp_dir / "attention.csv"), model, gpu,
                                tp, StepStats.of(decode_sequences=n, decode_context=n * kv),
                                decode.time_us.to_numpy() * 1e-6, "attention", KERNEL_ENGINE))
            seq = pd.read_csv(tp_dir / "per_sequence.csv")
            head = seq[seq.layer == "lm_head"]
            s = head.sequences.to_numpy(float)
            groups.append(Group(f"kernels {where}: output head", str(tp_dir / "per_sequence.csv"), model, gpu, tp,
                                StepStats.of(decode_sequences=s, decode_context=s),
                                head.time_us.to_numpy() * 1e-6, "head", KERNEL_ENGINE))
    return groups


def step_grid(model: str, gpu: str, tp: int) -> tuple[StepStats, list[dict]]:
    """The steps a step-time profile of ``model`` on ``gpu`` at ``tp`` is compared on: those its roofline is
    judged on (:func:`workbench.study.fidelity.roofline_runs.comparison_steps`: prefill steps of 1-256 prompts of
    64-4,096 tokens up to 16,384 in all, decode steps of 1-256 requests at contexts of 64-4,096 tokens), without
    the decode steps whose KV cache the deployment cannot hold (vLLM's blocks at ``gpu_memory_utilization``
    0.9; a profiler never measured them, its fit only extrapolates there).  Returns the steps' sums and their
    descriptions (for ``StepTimeModel.step_time_s``)."""
    from workbench.hardware.roofline import kv_blocks
    from workbench.study.fidelity.roofline_runs import comparison_steps

    capacity = 16 * kv_blocks(model, gpu, tp=tp, gpu_memory_utilization=0.9, min_tokens=0)
    table = comparison_steps(max_kv_tokens=capacity)
    steps = [{"context_lengths": [L] * n} if kind == "decode" else {"prompt_lengths": [L] * n}
             for kind, n, L in table[["kind", "batch", "tokens"]].itertuples(index=False)]
    stats = [StepStats.of_step(**s) for s in steps]
    fields = {f.name: np.array([getattr(s, f.name) for s in stats]) for f in dataclasses.fields(StepStats)}
    return StepStats(**fields), steps


def _profile_group(name: str, source: str, model: str, gpu: str, tp: int, step, engine: str) -> Group:
    stats, steps = step_grid(model, gpu, tp)
    measured = np.array([step.step_time_s(**s) for s in steps])
    return Group(name, source, model, gpu, tp, stats, measured, "step", engine)


def _distserve_groups() -> list[Group]:
    from workbench.sim.profiles import distserve_profile

    groups = []
    for path, engine in DISTSERVE_FILES:
        document = json.loads(path.read_text())
        for model_id, by_tp in document.items():
            for tp in sorted(by_tp, key=int):
                step = distserve_profile(path, model=model_id, tp=int(tp))
                groups.append(_profile_group(f"DistServe profile {model_id} A100-80GB tp{tp} ({engine})", str(path),
                                             DISTSERVE_MODELS[model_id], "a100-80gb", int(tp), step, engine))
    return groups


def _blis_groups() -> list[Group]:
    from workbench.hardware.catalog import UnknownName
    from workbench.sim.profiles import BLIS_DEFAULTS, blis_entries, blis_profile

    seen, groups = set(), []
    for entry in blis_entries():
        model_id, gpu, tp = str(entry.get("id")), str(entry.get("GPU")), int(entry.get("tensor_parallelism", 1))
        if any(q in model_id.lower() for q in QUANTISED) or gpu not in BLIS_GPUS or (model_id, gpu, tp) in seen:
            continue
        try:
            model = get_model_arch(model_id.split("/")[-1]).name
        except UnknownName:
            continue
        seen.add((model_id, gpu, tp))
        step = blis_profile(model=model_id, gpu=gpu, tp=tp)   # the lowest best_loss among refits
        # BLIS fits its betas jointly with per-request overheads to end-to-end latencies; some entries put a
        # one-request decode step, or a prefill of 4,096 tokens, below the time the GPUs need at their peaks (the
        # weights read once at peak bandwidth; the FLOPs at peak compute): not a step time, left out
        floor = Roofline(model, BLIS_GPUS[gpu], tp).at_peak()
        for what, step_s, args in (("a one-request decode step", step.decode_time_s([FLOOR_CONTEXT]),
                                    {"context_lengths": [FLOOR_CONTEXT]}),
                                   ("a prefill of 4,096 tokens", step.prefill_time_s([4096]),
                                    {"prompt_lengths": [4096]})):
            floor_s = floor.step_time_s(**args)
            if step_s < floor_s:
                log.info("BLIS %s %s tp%d: %s of %.3g ms is below the %.3g ms the GPUs need at their peaks; left "
                         "out", model_id, gpu, tp, what, step_s * 1e3, floor_s * 1e3)
                break
        else:
            groups.append(_profile_group(f"BLIS {model_id} {gpu} tp{tp}", str(BLIS_DEFAULTS), model,
                                         BLIS_GPUS[gpu], tp, step, BLIS_ENGINE))
    return groups


@lru_cache(maxsize=1)
def fit_groups() -> tuple[Group, ...]:
    """Every group the fit compares (kernel profiles, DistServe profiles, BLIS entries)."""
    return tuple(_kernel_groups() + _distserve_groups() + _blis_groups())


# ---------------------------------------------------------------------------------------- the fit
# shared by every engine (what the GPU's kernels reach), and per engine (its kernels' speed against vLLM 0.19's,
# its fixed costs); vLLM V1's compute_factor is 1 by definition (its kernels set gemm/attention_compute)
SHARED = ("gemm_compute", "attention_compute", "memory", "kv_memory", "link", "ridge_exponent")
PER_ENGINE = ("gemm_factor", "attention_factor", "allreduce_s", "layer_s", "step_s", "sequence_s")
FACTORS = ("gemm_factor", "attention_factor")
ENGINE_BOUNDS = {"gemm_factor": (0.3, 1.5), "attention_factor": (0.1, 1.5)}


def _stated(value: float) -> float:
    """A fitted value as the constants state it: two significant digits, and 0 below a nanosecond (a fixed
    cost the fit drove to its bound)."""
    return float(f"{value:.2g}") if abs(value) >= 1e-9 else 0.0


def _layout(engines) -> list[tuple[str, str | None]]:
    """The fitted parameters in order: (name, engine or None for a shared one)."""
    layout = [(p, None) for p in SHARED]
    for engine in engines:
        layout += [(p, engine) for p in PER_ENGINE if not (p in FACTORS and engine == KERNEL_ENGINE)]
    return layout


def _unpack(x, layout, start: dict) -> dict:
    """Engine -> Efficiencies from a parameter vector (``start`` gives what is not fitted)."""
    shared = {name: float(v) for (name, engine), v in zip(layout, x) if engine is None}
    out = {}
    for engine, base in start.items():
        own = {name: float(v) for (name, e), v in zip(layout, x) if e == engine}
        out[engine] = dataclasses.replace(base, **shared, **own)
    return out


def residuals(efficiencies, groups=None) -> np.ndarray:
    """``log(roofline / measured) / sqrt(group size)`` of every point, groups in order (``efficiencies``: engine
    -> Efficiencies, or one Efficiencies for every group)."""
    groups = fit_groups() if groups is None else groups
    pick = (lambda g: efficiencies[g.engine]) if isinstance(efficiencies, dict) else (lambda g: efficiencies)
    out = [np.log(_predict(g, pick(g)) / g.measured_s) / math.sqrt(g.measured_s.size) for g in groups]
    return np.concatenate(out)


def fit_isolated(groups=None, start: dict | None = None) -> dict:
    """Engine -> Efficiencies minimising the robust loss over ``groups`` (default :func:`fit_groups`): the shared
    GPU efficiencies and each engine's own terms jointly (serving overheads as in ``start``, not fitted here),
    rounded to two significant digits."""
    from scipy.optimize import least_squares

    from workbench.hardware.roofline import ENGINE_EFFICIENCIES

    groups = fit_groups() if groups is None else tuple(groups)
    start = dict(ENGINE_EFFICIENCIES if start is None else start)
    engines = [e for e in start if any(g.engine == e for g in groups)]
    start = {e: start[e] for e in engines}
    layout = _layout(engines)
    bounds = [ENGINE_BOUNDS.get(name, BOUNDS.get(name)) for name, _ in layout]
    low, high = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    scale = np.maximum(high, 1e-9)
    x0 = np.clip([getattr(start[engine or engines[0]], name) for name, engine in layout], low, high)
    result = least_squares(lambda z: residuals(_unpack(z * scale, layout, start), groups), x0 / scale,
                           bounds=(low / scale, high / scale), loss="soft_l1", f_scale=LOSS_SCALE, x_scale="jac")
    fitted = [_stated(v) for v in result.x * scale]
    log.info("roofline fit (cost %.4g, %d points): %s", result.cost, sum(g.measured_s.size for g in groups),
             dict(zip((f"{n}[{e or 'all'}]" for n, e in layout), fitted)))
    return _unpack(fitted, layout, start)


# ------------------------------------------------------------------------- serving overheads, from the runs
SERVING = ("serving_step_s", "serving_sequence_s", "serving_context_s")
SERVING_METRICS = ("e2e_s", "tpot_s")
# the starting points tried (in units of 1 ms per step, 10 us per sequence, 10 ns per context token)
SERVING_GRID = ((0.0, 2.0, 5.0), (0.0, 10.0, 20.0, 40.0), (0.0, 10.0, 20.0, 40.0))
# the measured runs of each engine (workbench.study.fidelity.roofline_runs.measured_runs campaigns); of
# LLMServingSim's, only the shipped ones: measurements added later are scored, never fitted to
ENGINE_CAMPAIGNS = {"vllm-v1": "llmservingsim", "vllm-v0.2": "vllm", "distserve": "disaggregated"}


def serving_loss(efficiencies, runs) -> float:
    """The robust loss of measured ``runs`` replayed: ``soft_l1`` (scale :data:`LOSS_SCALE`) of
    ``log(simulated mean / measured mean)`` of each run's E2E and TPOT, summed (every run weighs the same)."""
    from workbench.study.fidelity.roofline_runs import replay_runs

    table = replay_runs(runs(efficiencies))
    table = table[table.metric.isin(SERVING_METRICS)]
    z = (np.log(table.roofline_mean / table.measured_mean) / LOSS_SCALE) ** 2
    return float((2.0 * (np.sqrt(1.0 + z) - 1.0)).sum() * LOSS_SCALE ** 2)


def serving_runs(engine: str, run_names=None) -> list[str]:
    """The names of the runs ``engine``'s serving overheads are fitted to: its measured runs (``run_names``:
    only these) whose queue kept up.  A run whose median TTFT over its last third of requests is more than
    ``DIVERGENCE_RATIO`` times that of its first third (the workbench's rule for a prefill side that did not
    keep up, :func:`workbench.study.fidelity.calibration_disagg.diverged`) measures how long it lasted as much
    as its steps, and is left out."""
    from workbench.study.fidelity.roofline_runs import measured_runs
    from workbench.study.fidelity.calibration_disagg import diverged

    return [r.run.name for r in measured_runs((ENGINE_CAMPAIGNS[engine],), llmservingsim_runs=SHIPPED_RUNS)
            if (run_names is None or r.run.name in run_names) and not diverged(r.run)]


def fit_serving_overheads(engine: str, efficiencies: Efficiencies, run_names=None) -> Efficiencies:
    """``efficiencies`` with the serving overheads of ``engine`` (``serving_step_s``, ``serving_sequence_s``)
    that minimise :func:`serving_loss` over :func:`serving_runs`, rounded to two significant digits; zero when
    none of the engine's runs kept up (nothing to fit them to).  The loss of a replayed run is a step function of
    the overheads (whole steps and requests move), on which a local search stalls where it starts: the best point
    of :data:`SERVING_GRID` starts Nelder-Mead."""
    from scipy.optimize import minimize

    from workbench.study.fidelity.roofline_runs import measured_runs

    names = serving_runs(engine, run_names)
    if not names:
        log.info("%s: no measured run kept up; serving overheads stay 0", engine)
        return dataclasses.replace(efficiencies, **{name: 0.0 for name in SERVING})
    campaign = ENGINE_CAMPAIGNS[engine]

    def runs(e):
        return [r for r in measured_runs((campaign,), efficiencies={engine: e}, llmservingsim_runs=SHIPPED_RUNS)
                if r.run.name in names]

    unit = np.array([1e-3, 1e-5, 1e-8])   # ms per step, 10 us per sequence, 10 ns per context token

    def loss(z):
        if np.any(z < 0):
            return 1e9
        return serving_loss(dataclasses.replace(efficiencies, **dict(zip(SERVING, z * unit))), runs)

    grid = [np.array(z, dtype=float) for z in itertools.product(*SERVING_GRID)]
    start = min(grid, key=loss)
    step = np.array([1.0, 5.0, 5.0])
    result = minimize(loss, start, method="Nelder-Mead",
                      options={"xatol": 0.02, "fatol": 1e-5,
                               "initial_simplex": [start] + [start + step * e for e in np.eye(3)]})
    fitted = np.maximum(result.x, 0) * unit
    log.info("%s serving overheads: %s (loss %.4g, %d evaluations)", engine, dict(zip(SERVING, fitted)), result.fun,
             result.nfev)
    return dataclasses.replace(efficiencies, **{n: _stated(v) for n, v in zip(SERVING, fitted)})


def fit_all() -> dict:
    """Engine -> Efficiencies: :func:`fit_isolated` over every group, then each engine's serving overheads over
    its runs (:func:`fit_serving_overheads`).  What :data:`~workbench.hardware.roofline.ENGINE_EFFICIENCIES`
    states."""
    isolated = fit_isolated()
    return {engine: fit_serving_overheads(engine, e) for engine, e in isolated.items()}


def group_errors(efficiencies=None, groups=None) -> pd.DataFrame:
    """Per group: points, median and 90th percentile of |roofline / measured - 1|, and the median signed error
    (``efficiencies``: engine -> Efficiencies, default the stated ones)."""
    from workbench.hardware.roofline import ENGINE_EFFICIENCIES

    efficiencies = ENGINE_EFFICIENCIES if efficiencies is None else efficiencies
    groups = fit_groups() if groups is None else groups
    rows = []
    for g in groups:
        ratio = _predict(g, efficiencies[g.engine]) / g.measured_s - 1
        rows.append({"group": g.name, "engine": g.engine, "model": g.model, "gpu": g.gpu, "tp": g.tp,
                     "points": ratio.size,
                     "median_error": float(np.median(ratio)), "median_abs_error": float(np.median(np.abs(ratio))),
                     "p90_abs_error": float(np.percentile(np.abs(ratio), 90))})
    return pd.DataFrame(rows)


__all__ = ["ENGINE_CAMPAIGNS", "Group", "fit_all", "fit_groups", "fit_isolated", "fit_serving_overheads",
           "group_errors", "residuals", "serving_loss", "serving_runs", "step_grid"]
