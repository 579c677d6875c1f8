"""Any model on any GPU: the tables and figures of ``notebooks/hardware.ipynb``.

* :func:`fit_table`: for each model, GPU and tensor-parallel degree, whether the weights and one request's KV
  cache fit (vLLM's memory rule, :func:`workbench.hardware.roofline.kv_blocks`) and how many KV tokens are left.
* :func:`capacity_table`: one replica of each model on each GPU at the smallest TP that fits, its capacity at the
  SLA (:func:`workbench.capacity`: the largest rate at which ``attainment`` of the requests meet both the TTFT
  and the TPOT limit), per GPU and per dollar; priced by the roofline, and also by a measured profile or a
  kernel profile where the workbench has one for that pair, each row saying which (``kind``).
* :func:`validated_errors`: each kind's error on the measured runs the workbench ships (median |error of the
  mean E2E|), drawn as a band around its estimates: the roofline over all eleven runs, the kernel profiles over
  LLMServingSim's two runs, the measured DistServe profile over its three vLLM runs.
* :func:`plot_steps`: the roofline's step times beside the measured profiles of the same deployments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench import checks
from workbench.study.present.figures import finish_figure
from workbench.study.store.folders import NotebookParams

NOTEBOOK = "hardware"
OUTPUTS = ("hardware_fit.csv", "hardware_capacity.csv", "hardware_steps.csv", "hardware_errors.csv",
           "hardware_fit.png", "hardware_capacity.png", "hardware_steps.png")
KINDS = ("roofline", "kernel-profile", "measured")
# measured profiles the workbench validates against measured runs (the others are BLIS's fits, taken as published)
VALIDATED_MEASURED = ("opt-13b-a100",)
KIND_STYLE = {"roofline": {"hatch": "", "alpha": 0.85}, "kernel-profile": {"hatch": "//", "alpha": 0.85},
              "measured": {"hatch": "xx", "alpha": 0.85}}
# measured step profiles of catalogued pairs (registered profile names), and kernel-profile bundles
MEASURED_PAIRS = {("llama-3.1-8b", "h100-sxm", 1): "llama-3.1-8b-h100", ("opt-13b", "a100-80gb", 1): "opt-13b-a100",
                  ("qwen3-14b", "h100-sxm", 1): "qwen3-14b-h100", ("llama-3.1-70b", "h100-sxm", 4): "llama-3.3-70b-h100-tp4"}


@dataclass(frozen=True)
class HardwareParams(NotebookParams):
    """The hardware notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs = NOTEBOOK, OUTPUTS

    dataset: str = "azure_conv"        # the trace (a dataset name or a CSV)
    num_requests: int = 2000           # its first requests
    models: tuple[str, ...] = ("llama-3.1-8b", "qwen3-30b-a3b", "qwen3-32b", "llama-3.1-70b")
    gpus: tuple[str, ...] = ("l4", "a10g", "l40s", "rtx-4090", "rtx-pro-6000", "a100-80gb", "h100-sxm", "h200",
                             "b200", "mi300x")
    tp: tuple[int, ...] = (1, 2, 4, 8)
    ttft_sla_s: float = 2.0
    tpot_sla_s: float = 0.1
    attainment: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048   # vLLM 0.19's runs and kernel profiles (their grid ends at 2,048 tokens)
    gpu_memory_utilization: float = 0.9
    prices: str = ""   # "h100-sxm=2.5,l4=0.5": dollars per GPU-hour replacing the catalogue's list prices
    results_dir: str = "results/default"

    def __post_init__(self):
        from workbench.hardware.catalog import get_gpu, get_model_arch
        from workbench.traces import datasets

        datasets.check_name_or_file(self.dataset)
        object.__setattr__(self, "num_requests", checks.integer(self.num_requests, "num_requests", low=2))
        object.__setattr__(self, "models", tuple(get_model_arch(m).name for m in checks.names(self.models, "models")))
        object.__setattr__(self, "gpus", tuple(get_gpu(g).key for g in checks.names(self.gpus, "gpus")))
        object.__setattr__(self, "tp", checks.integers(self.tp, "tp", low=1, high=64))
        self._check_sla()
        object.__setattr__(self, "gpu_memory_utilization", checks.number(
            self.gpu_memory_utilization, "gpu_memory_utilization", low=0, low_open=True, high=1))
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=1))
        self.price_table()   # validates prices
        checks.path(self.results_dir, "results_dir", expected="a folder path")

    def price_table(self) -> dict[str, float]:
        """GPU -> $/GPU-hour: the catalogue's list price, replaced by ``prices`` where given."""
        from workbench.hardware.catalog import get_gpu, parse_prices

        given = parse_prices(self.prices)
        return {g: given.get(g, get_gpu(g).price_per_hour) for g in self.gpus}

    def trace(self):
        from workbench.traces.trace import load_trace

        return load_trace(self.dataset, use_real_timestamps=True).head(self.num_requests)

    def setup_text(self, trace) -> str:
        return (f"Trace *{trace.label}* ({len(trace):,} requests at {trace.mean_rate_rps:.2f} requests/s). Every "
                f"deployment serves it with vLLM V1's rules (chunked prefill, up to {self.max_num_seqs} requests "
                f"and {self.max_num_batched_tokens:,} tokens a step, gpu_memory_utilization "
                f"{self.gpu_memory_utilization:g}); SLA: TTFT <= {self.ttft_sla_s:g} s and TPOT <= "
                f"{self.tpot_sla_s * 1e3:g} ms for {self.attainment:.0%} of the requests. Step times: the roofline "
                "(estimated from each model's config.json and each GPU's spec sheet), and a measured or "
                "kernel profile where the workbench has one; every row and label says which.")

    def memory_fields(self, model: str, gpu: str, tp: int) -> dict:
        from workbench.sim.profiles import roofline_memory_fields

        return roofline_memory_fields(model, gpu, tp, gpu_memory_utilization=self.gpu_memory_utilization,
                                      max_num_batched_tokens=self.max_num_batched_tokens,
                                      max_num_seqs=self.max_num_seqs)


# ---------------------------------------------------------------------------------------------- what fits
def fit_table(params: HardwareParams) -> pd.DataFrame:
    """One row per model, GPU and TP: ``fits``, the weights per GPU, the KV tokens a replica holds, and why it
    does not fit (vLLM's memory rule at ``gpu_memory_utilization`` and ``max_num_batched_tokens``)."""
    from workbench.hardware.roofline import DoesNotFit, kv_blocks, kv_memory

    rows = []
    for model in params.models:
        for gpu in params.gpus:
            for tp in params.tp:
                options = dict(tp=tp, gpu_memory_utilization=params.gpu_memory_utilization,
                               max_num_batched_tokens=params.max_num_batched_tokens, max_num_seqs=params.max_num_seqs)
                budget = kv_memory(model, gpu, **options)
                row = {"model": model, "gpu": gpu, "tp": tp, "weights_gb_per_gpu": budget["weights"] / 1e9,
                       "usable_gb_per_gpu": budget["usable"] / 1e9, "fits": True, "kv_tokens": 0, "why_not": ""}
                try:
                    row["kv_tokens"] = 16 * kv_blocks(model, gpu, **options)
                except DoesNotFit as exc:
                    row.update(fits=False, why_not=str(exc).split(": ", 1)[-1].split(";")[0])
                except ValueError as exc:   # e.g. a TP degree the heads do not divide
                    row.update(fits=False, why_not=str(exc))
                rows.append(row)
    return pd.DataFrame(rows)


def smallest_tp(fits: pd.DataFrame) -> pd.DataFrame:
    """Per model and GPU, the smallest TP that fits (NaN: none of those tried) and its KV tokens."""
    ok = fits[fits.fits].sort_values("tp").groupby(["model", "gpu"], sort=False).first()[["tp", "kv_tokens"]]
    grid = fits[["model", "gpu"]].drop_duplicates().set_index(["model", "gpu"])
    return grid.join(ok).reset_index()


def plot_fit(fits: pd.DataFrame, title: str, results_dir=None, filename: str = "hardware_fit.png") -> Figure:
    """Model x GPU: the smallest TP at which the model fits, shaded by the KV tokens a replica then holds."""
    table = smallest_tp(fits)
    models, gpus = list(dict.fromkeys(table.model)), list(dict.fromkeys(table.gpu))
    tp = table.pivot(index="model", columns="gpu", values="tp").reindex(index=models, columns=gpus)
    kv = table.pivot(index="model", columns="gpu", values="kv_tokens").reindex(index=models, columns=gpus)
    fig = Figure(figsize=(1.1 * len(gpus) + 3, 0.6 * len(models) + 2.2), layout="constrained")
    ax = fig.subplots()
    shade = np.log10(kv.to_numpy(float).clip(min=1))
    image = ax.imshow(np.where(np.isfinite(tp.to_numpy(float)), shade, np.nan), cmap="Greens", aspect="auto")
    for i in range(len(models)):
        for j in range(len(gpus)):
            value = tp.iat[i, j]
            text = f"TP {int(value)}\n{kv.iat[i, j] / 1e3:,.0f}k tok" if np.isfinite(value) else "does not fit"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(gpus)), gpus, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    fig.colorbar(image, ax=ax, label="log10 KV tokens per replica")
    return finish_figure(fig, title, results_dir, filename)


# ---------------------------------------------------------------------------------------------- capacity
def step_models(params: HardwareParams, model: str, gpu: str, tp: int) -> list[tuple[str, str, object]]:
    """(kind, label, step model) for a deployment: the roofline always; the measured profile (registered) and the
    kernel profile (LLMServingSim's bundle) where the workbench has one."""
    from workbench.study.fidelity.roofline_fit import KERNEL_FOLDERS, KERNEL_PROFILES
    from workbench.sim.profiles import get_profile
    from workbench.sim.steptime import StepTimeModel

    out = [("roofline", f"{model}@{gpu}/tp{tp}", StepTimeModel.roofline(
        model, gpu, tp, max_num_seqs=params.max_num_seqs, max_num_batched_tokens=params.max_num_batched_tokens))]
    measured = MEASURED_PAIRS.get((model, gpu, tp))
    if measured:
        out.append(("measured", measured, get_profile(measured)))
    for folder, pair in KERNEL_FOLDERS.items():
        bundle = KERNEL_PROFILES / folder / "bf16" / f"tp{tp}"
        if pair == (model, gpu) and bundle.is_dir():
            out.append(("kernel-profile", f"kernel profile {folder} tp{tp}", StepTimeModel.from_kernel_profiles(
                bundle.parent, tp=tp, allow_extrapolation=True)))
    return out


class _quiet_grid_warnings:
    """Keeps the kernel-profile table's 'outside the grid, extrapolated' warning to one log line per deployment
    (a capacity search probes a dozen loads)."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("workbench.sim.steptable")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def capacity_table(trace, params: HardwareParams, fits: pd.DataFrame, errors: dict | None = None) -> pd.DataFrame:
    """One row per model, GPU (at its smallest fitting TP) and kind of step model: the capacity of one replica
    at the SLA (requests/s), per GPU, the price and requests per dollar, and the kind's validated error
    (``errors``: kind -> relative error, the band)."""
    from workbench.sim.config import SimConfig
    from workbench.study.runs.capacity import CapacityError, capacity

    prices = params.price_table()
    rows = []
    for _, deployment in smallest_tp(fits).dropna(subset=["tp"]).iterrows():
        model, gpu, tp = deployment.model, deployment.gpu, int(deployment.tp)
        cfg = SimConfig(scheduler="continuous_fcfs", num_gpus=1, chunked_prefill=True,
                        max_num_seqs=params.max_num_seqs, max_num_batched_tokens=params.max_num_batched_tokens,
                        ttft_sla_s=params.ttft_sla_s, tpot_sla_s=params.tpot_sla_s,
                        **params.memory_fields(model, gpu, tp))
        for kind, label, step in step_models(params, model, gpu, tp):
            band = (errors or {}).get(kind, np.nan)
            if kind == "measured" and label not in VALIDATED_MEASURED:   # BLIS's fits: not validated here
                band = np.nan
            row = {"model": model, "gpu": gpu, "tp": tp, "kind": kind, "step_model": label,
                   "kv_tokens": int(deployment.kv_tokens), "price_per_gpu_hour": prices[gpu],
                   "capacity_rps": np.nan, "capacity_error": "", "validated_error": band}
            try:
                with _quiet_grid_warnings():   # said once per deployment below, not at every probe
                    result = capacity(trace, cfg, criterion="slo", ttft_s=params.ttft_sla_s,
                                      tpot_s=params.tpot_sla_s, attainment=params.attainment, latency=step,
                                      resolution=0.03)
                row["capacity_rps"] = result.capacity_rps
            except CapacityError as exc:
                row["capacity_error"] = str(exc).split(";")[0]
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["capacity_per_gpu_rps"] = table.capacity_rps / table.tp
        dollars_per_hour = table.price_per_gpu_hour * table.tp
        table["requests_per_dollar"] = table.capacity_rps * 3600.0 / dollars_per_hour
    return table


def plot_capacity(table: pd.DataFrame, title: str, results_dir=None, filename: str = "hardware_capacity.png") -> Figure:
    """Capacity per GPU and requests per dollar, per model and GPU; bars by kind (roofline plain, kernel
    profile hatched, measured cross-hatched), each with its kind's validated error as a band (error bar)."""
    models = list(dict.fromkeys(table.model))
    fig = Figure(figsize=(12, 2.9 * len(models) + 1), layout="constrained")
    axes = fig.subplots(len(models), 2, squeeze=False)
    colors = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(table.gpu))}
    width = 0.8 / len(KINDS)
    for r, model in enumerate(models):
        sub = table[table.model == model]
        gpus = list(dict.fromkeys(sub.gpu))
        labels = [f"{g}\nTP{int(sub[sub.gpu == g].tp.iloc[0])}" for g in gpus]
        for c, (column, ylabel) in enumerate((("capacity_per_gpu_rps", "requests/s per GPU"),
                                              ("requests_per_dollar", "requests per dollar"))):
            ax = axes[r, c]
            for k, kind in enumerate(KINDS):
                for i, g in enumerate(gpus):
                    row = sub[(sub.gpu == g) & (sub.kind == kind)]
                    if row.empty or not np.isfinite(row[column].iloc[0]):
                        continue
                    value, band = float(row[column].iloc[0]), float(row.validated_error.iloc[0])
                    x = i + (k - 1) * width
                    ax.bar(x, value, width, color=colors[g], edgecolor="black", lw=0.4, **KIND_STYLE[kind])
                    if np.isfinite(band):
                        ax.errorbar(x, value, yerr=band * value, color="black", capsize=3, lw=0.8)
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}: {ylabel}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
    for kind in KINDS:   # legend entries (the figure's one legend gathers the labelled artists)
        axes[0, 0].bar([0], [0], 0, color="white", edgecolor="black", label=f"{kind} step times", **KIND_STYLE[kind])
    axes[0, 0].errorbar([0], [0], yerr=[0], color="black", capsize=3, label="band: the kind's validated error of mean E2E")
    return finish_figure(fig, title, results_dir, filename)


# ---------------------------------------------------------------------------------------------- errors
def validated_errors() -> tuple[dict, pd.DataFrame]:
    """kind -> median |relative error of the mean E2E| over the measured runs it was validated on, and the
    per-run rows (kind, run, error): the roofline over every shipped run, the kernel profiles over
    LLMServingSim's two vLLM 0.19 runs, the measured DistServe profile ``opt-13b-a100`` over its three vLLM runs."""
    from workbench.study.fidelity.roofline_runs import replay_runs
    from workbench.study.fidelity.kernel_runs import fidelity_table

    rows = []
    roofline = replay_runs()
    for _, r in roofline[roofline.metric == "e2e_s"].iterrows():
        rows.append({"kind": "roofline", "run": r.run, "error": r.error})
    kernel = fidelity_table()
    for _, r in kernel[(kernel.metric == "e2e_s") & (kernel.statistic == "mean")].iterrows():
        rows.append({"kind": "kernel-profile", "run": r.run, "error": r.workbench_error})
    rows += _measured_profile_errors()
    table = pd.DataFrame(rows)
    return table.assign(abs_error=table.error.abs()).groupby("kind").abs_error.median().to_dict(), table


def _measured_profile_errors() -> list[dict]:
    import glob

    from workbench.paths import DATA_DIR
    from workbench.sim.profiles import get_profile
    from workbench.sim.simulate import simulate
    from workbench.traces.serving_log import load_serving_log

    rows = []
    for path in sorted(glob.glob(str(DATA_DIR / "groundtruth" / "distserve_opt13b_a100_vllm" / "*.csv"))):
        run = load_serving_log(path)
        sim = simulate(run.trace, run.config, latency=get_profile("opt-13b-a100")).requests
        rows.append({"kind": "measured", "run": run.name,
                     "error": sim.e2e_s.mean() / run.measured.e2e_s.mean() - 1})
    return rows


# ---------------------------------------------------------------------------------------------- step times
def step_comparisons() -> pd.DataFrame:
    """The roofline against every measured profile of a catalogued deployment
    (:func:`workbench.study.fidelity.roofline_runs.profile_comparisons`)."""
    from workbench.study.fidelity.roofline_runs import profile_comparisons

    return profile_comparisons()


def plot_steps(comparisons: pd.DataFrame, title: str, results_dir=None, filename: str = "hardware_steps.png") -> Figure:
    """Per measured profile: decode step time against batch size (context 1,024) and prefill step time against
    prompt length (one prompt), measured (black) and roofline (colour), with the +-20% target band around the
    measured one."""
    from workbench.study.fidelity.roofline_runs import STEP_TARGET

    profiles = list(dict.fromkeys(comparisons.profile))
    fig = Figure(figsize=(3.2 * len(profiles), 6), layout="constrained")
    axes = fig.subplots(2, len(profiles), squeeze=False)
    for c, name in enumerate(profiles):
        sub = comparisons[comparisons.profile == name]
        for r, (kind, fixed, xcol, xlabel) in enumerate((("decode", 1024, "batch", "decodes per step"),
                                                          ("prefill", 1, "tokens", "prompt tokens (one prompt)"))):
            part = sub[(sub.kind == kind) & ((sub.tokens if kind == "decode" else sub.batch) == fixed)]
            part = part.sort_values(xcol)
            ax = axes[r, c]
            x = part[xcol].to_numpy()
            measured = part.measured_s.to_numpy() * 1e3
            ax.fill_between(x, measured * (1 - STEP_TARGET), measured * (1 + STEP_TARGET), color="grey", alpha=0.2,
                            label=f"measured +-{STEP_TARGET:.0%}" if (r, c) == (0, 0) else None)
            ax.plot(x, measured, color="black", marker="o", ms=3, label="measured" if (r, c) == (0, 0) else None)
            ax.plot(x, part.roofline_s.to_numpy() * 1e3, color="C1", marker="s", ms=3,
                    label="roofline" if (r, c) == (0, 0) else None)
            ax.set_xscale("log", base=2)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("step time (ms)")
            ax.set_title(f"{name}: {kind}", fontsize=8)
            ax.grid(alpha=0.3)
    return finish_figure(fig, title, results_dir, filename)


def findings(fits: pd.DataFrame, table: pd.DataFrame, errors: dict) -> list[str]:
    """Sentences computed from the results (the notebook's commentary)."""
    lines = []
    small = smallest_tp(fits)
    none = small[small.tp.isna()]
    for model in dict.fromkeys(none.model):
        gpus = ", ".join(none[none.model == model].gpu)
        lines.append(f"{model} fits on none of {gpus} at TP up to {max(fits.tp)}.")
    roof = table[(table.kind == "roofline") & np.isfinite(table.capacity_rps)] if len(table) else table
    for model in dict.fromkeys(roof.model) if len(roof) else ():
        sub = roof[roof.model == model]
        best_gpu = sub.loc[sub.capacity_per_gpu_rps.idxmax()]
        best_dollar = sub.loc[sub.requests_per_dollar.idxmax()]
        lines.append(f"{model}: the most requests per GPU on {best_gpu.gpu} (TP {best_gpu.tp}, "
                     f"{best_gpu.capacity_per_gpu_rps:.3g} req/s per GPU), the most per dollar on {best_dollar.gpu} "
                     f"(TP {best_dollar.tp}, {best_dollar.requests_per_dollar:,.0f} requests per dollar at "
                     f"${best_dollar.price_per_gpu_hour:.2f}/GPU-hour) [roofline].")
    for kind in KINDS:
        if kind in errors:
            lines.append(f"{kind} step times: median error of the mean E2E {errors[kind]:.0%} on the measured runs "
                         "it was validated on (the band).")
    return lines


__all__ = ["HardwareParams", "KINDS", "NOTEBOOK", "OUTPUTS", "capacity_table", "findings", "fit_table", "plot_capacity",
           "plot_fit", "plot_steps", "smallest_tp", "step_comparisons", "step_models", "validated_errors"]
