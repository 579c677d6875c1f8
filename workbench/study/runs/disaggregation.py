"""Running the disaggregation study (``notebooks/disaggregation``): the best disaggregated and colocated placements
as the SLO tightens, and the measured deployments simulated.

``slo_sweep`` runs :func:`workbench.best_placement` at each SLO scale (TTFT and
TPOT limits both multiplied by the scale, as in DistServe's SLO-scale figures)
and keeps the best disaggregated placement and the best colocated one;
``limits_sweep`` does the same with the two limits scaled separately (a grid of
TTFT scales x TPOT scales), which tests whether disaggregation gains where the
limits pull apart; ``simulated_goodput`` searches the goodput of the measured
deployments themselves, so the figure (:mod:`workbench.study.answers.disaggregation`)
can draw the measured points next to the simulated ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.study.store.folders import NotebookParams

log = logging.getLogger(__name__)

NOTEBOOK = "disaggregation"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("disaggregation.csv", "disaggregation_limits.csv", "disaggregation_measured.csv", "disaggregation.png",
           "disaggregation_limits.png", "disaggregation_findings.json")
BASE_TTFT_S, BASE_TPOT_S = 0.2, 0.1   # DistServe's OPT-13B SLO (its alignment runs), scaled by the sweeps


@dataclass(frozen=True)
class DisaggregationParams(NotebookParams):
    """The disaggregation notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs = NOTEBOOK, OUTPUTS
    results_dir: str = "results/default"
    gpus: int = 8
    azure_requests: int | None = None
    slo_scales: tuple[float, ...] = (2.0, 1.5, 1.0, 0.75, 0.5)
    limit_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    attainment: float = 0.9
    profile: str = "opt-13b-a100-distserve"
    vllm_profile: str = "opt-13b-a100"
    disagg_dir: str = "data/groundtruth/distserve_opt13b_a100_disagg"
    vllm_dir: str = "data/groundtruth/distserve_opt13b_a100_vllm"
    calibrate_serving_costs: bool = True

    def __post_init__(self):
        from workbench.sim import profiles
        from workbench.study.runs.placement import MAX_GPUS

        checks.path(self.results_dir, "results_dir", expected="a folder path")
        object.__setattr__(self, "gpus", checks.integer(self.gpus, "gpus", low=2, high=MAX_GPUS))
        object.__setattr__(self, "azure_requests", checks.integer(self.azure_requests, "azure_requests", low=2,
                                                                  high=10**7, none=True,
                                                                  hint="None takes the whole trace"))
        scales = checks.numbers(self.slo_scales, "slo_scales", low=0)
        if 0 in scales:
            raise ValueError(f"slo_scales: each scale multiplies the TTFT and TPOT limits and must be > 0, got "
                             f"{self.slo_scales!r}")
        object.__setattr__(self, "slo_scales", scales)
        limit_scales = checks.numbers(self.limit_scales, "limit_scales", low=0, empty=True)
        if 0 in limit_scales:
            raise ValueError(f"limit_scales: each scale multiplies the TTFT or the TPOT limit and must be > 0, got "
                             f"{self.limit_scales!r}")
        object.__setattr__(self, "limit_scales", tuple(limit_scales))
        object.__setattr__(self, "attainment", checks.number(self.attainment, "attainment", low=0, low_open=True,
                                                             high=1))
        checks.choice(self.profile, "profile", profiles.profile_names())
        if self.vllm_profile != "":
            checks.choice(self.vllm_profile, "vllm_profile", profiles.profile_names(), hint='or "" to skip it')
        for name in ("disagg_dir", "vllm_dir"):
            if not self.run_files(name):
                raise FileNotFoundError(f"{name}: {self._folder(name)} holds no measured runs (*.csv)")
        object.__setattr__(self, "calibrate_serving_costs",
                           checks.boolean(self.calibrate_serving_costs, "calibrate_serving_costs"))

    def _folder(self, name: str) -> Path:
        from workbench.study.store.files import resolve_user_path

        checks.path(getattr(self, name), name, expected="a folder path")
        return resolve_user_path(getattr(self, name))

    def run_files(self, name: str) -> list[Path]:
        """The measured runs' CSV files in the folder ``name`` (``"disagg_dir"`` or ``"vllm_dir"``)."""
        return sorted(self._folder(name).glob("*.csv"))

    def identity(self) -> dict:
        """Every parameter but the folder; the data folders by their path (inside the repository: relative)."""
        from workbench.study.store.files import display_path

        identity = super().identity()
        for name in ("disagg_dir", "vllm_dir"):
            identity[name] = display_path(self._folder(name))
        return identity

    def setup_text(self, traces: dict) -> str:
        """The setup, said once: the traces, the step times of each kind of placement, and the SLO."""
        described = "; ".join(f"*{label}*: {len(t):,} requests, mean prompt {t.prompt_tokens.mean():,.0f} and output "
                              f"{t.output_tokens.mean():,.0f} tokens" for label, t in traces.items())
        costs = (" plus the serving costs calibrated on the measured DistServe runs (the fit is the table below)"
                 if self.calibrate_serving_costs else " alone (no serving costs added)")
        colocated = (f"; colocated replicas also on vLLM's measured profile `{self.vllm_profile}`"
                     if self.vllm_profile else "")
        return (f"Traces: {described}. Step times: `{self.profile}` at each TP degree{costs}, for disaggregated "
                f"and colocated placements alike{colocated}. Budget: {self.gpus} GPUs. SLO: TTFT <= {BASE_TTFT_S:g} s "
                f"and TPOT <= {BASE_TPOT_S * 1e3:g} ms for {self.attainment:.0%} of the requests, both limits "
                f"multiplied by each SLO scale ({', '.join(f'{v:g}' for v in self.slo_scales)})"
                + (f"; then, on the DistServe sample, each limit by its own scale "
                   f"({', '.join(f'{v:g}' for v in self.limit_scales)})." if self.limit_scales else "."))


def _best_per_kind(trace, gpus: int, ttft_s: float, tpot_s: float, attainment: float, profile,
                   colocated_profiles: dict, placement_options: dict) -> list[dict]:
    """The best disaggregated placement and the best colocated one per kernel set, at one pair of limits."""
    from workbench.study.runs.placement import best_placement

    tables = []
    for k, (label, colocated_profile) in enumerate(colocated_profiles.items()):
        table = best_placement(trace, gpus, colocated_profile=colocated_profile, disaggregated=k == 0, ttft_s=ttft_s,
                               tpot_s=tpot_s, attainment=attainment, profile=profile, **placement_options)
        tables.append(table.assign(kind=table.kind.where(table.kind != "colocated", f"colocated, {label}")))
    everything = pd.concat(tables, ignore_index=True)
    rows = []
    for kind in ["disaggregated", *(f"colocated, {label}" for label in colocated_profiles)]:
        part = everything[(everything.kind == kind) & (everything.status == "searched")]
        part = part[part.goodput_rps > 0].sort_values("goodput_per_gpu", ascending=False)
        best = part.iloc[0] if len(part) else None
        rows.append({"ttft_s": ttft_s, "tpot_s": tpot_s, "kind": kind,
                     "placement": best.placement if best is not None else "none meets the SLO",
                     "gpus": best.gpus if best is not None else np.nan,
                     "prefill_gpus": (best.prefill_replicas * best.prefill_tp
                                      if best is not None and kind == "disaggregated" else np.nan),
                     "goodput_rps": best.goodput_rps if best is not None else 0.0,
                     "goodput_per_gpu": best.goodput_per_gpu if best is not None else 0.0,
                     "search_s": sum(t.attrs["search_s"] for t in tables)})
    return rows


def slo_sweep(trace, gpus: int, scales, *, ttft_s: float = BASE_TTFT_S, tpot_s: float = BASE_TPOT_S,
              attainment: float = 0.9, profile=None, colocated_profiles: dict | None = None,
              **placement_options) -> pd.DataFrame:
    """One row per SLO scale and kind: the best disaggregated placement, and the best colocated one for each of
    ``colocated_profiles`` (label -> step times as ``best_placement`` takes them; None = ``profile``, the same
    kernels as the disaggregated instances), with its goodput per GPU; both limits multiplied by the scale."""
    colocated_profiles = colocated_profiles or {"same kernels": None}
    rows = []
    for scale in scales:
        for row in _best_per_kind(trace, gpus, ttft_s * scale, tpot_s * scale, attainment, profile,
                                  colocated_profiles, placement_options):
            rows.append({"slo_scale": scale, **row})
        log.debug("SLO scale %g done", scale)
    return pd.DataFrame(rows)


def limits_sweep(trace, gpus: int, ttft_scales, tpot_scales, *, ttft_s: float = BASE_TTFT_S,
                 tpot_s: float = BASE_TPOT_S, attainment: float = 0.9, profile=None,
                 colocated_profiles: dict | None = None, reuse: pd.DataFrame | None = None,
                 **placement_options) -> pd.DataFrame:
    """As :func:`slo_sweep`, with the TTFT limit multiplied by each of ``ttft_scales`` and the TPOT limit by each of
    ``tpot_scales`` independently (one row per pair and kind, columns ``ttft_scale`` and ``tpot_scale``).  Pairs
    of equal scales that ``reuse`` (a :func:`slo_sweep` table of the same trace and options) holds are taken
    from it, not searched again."""
    colocated_profiles = colocated_profiles or {"same kernels": None}
    rows = []
    for a in ttft_scales:
        for b in tpot_scales:
            known = reuse[reuse.slo_scale == a] if reuse is not None and a == b else None
            if known is not None and len(known):
                found = known.drop(columns="slo_scale").to_dict("records")
            else:
                found = _best_per_kind(trace, gpus, ttft_s * a, tpot_s * b, attainment, profile, colocated_profiles,
                                       placement_options)
            rows += [{"ttft_scale": a, "tpot_scale": b, **row} for row in found]
    return pd.DataFrame(rows)


def simulated_goodput(trace, configs: dict, scales, latency, *, ttft_s: float = BASE_TTFT_S,
                      tpot_s: float = BASE_TPOT_S,
                      attainment: float = 0.9) -> pd.DataFrame:
    """Per deployment (``configs``: name -> SimConfig) and SLO scale: its simulated goodput (capacity search)."""
    from workbench.study.runs.capacity import CapacityError, capacity

    rows = []
    for name, cfg in configs.items():
        for scale in scales:
            try:
                found = capacity(trace, cfg, criterion="slo", attainment=attainment, latency=latency,
                                 ttft_s=ttft_s * scale, tpot_s=tpot_s * scale, resolution=0.02)
                rate = found.capacity_rps
            except CapacityError:
                rate = 0.0
            rows.append({"slo_scale": scale, "deployment": name, "gpus": cfg.num_gpus, "simulated_goodput_rps": rate,
                         "simulated_goodput_per_gpu": rate / cfg.num_gpus})
    return pd.DataFrame(rows)


__all__ = ["BASE_TPOT_S", "BASE_TTFT_S", "DisaggregationParams", "NOTEBOOK", "OUTPUTS", "limits_sweep",
           "simulated_goodput", "slo_sweep"]
