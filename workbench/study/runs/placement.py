"""``best_placement``: how to split a GPU budget between prefill and decode, ranked against colocating.

For a trace and a TTFT/TPOT SLO (both limits met by ``attainment`` of the
requests), every way of placing the model on at most ``gpus`` GPUs is ranked by
its goodput per GPU: the largest arrival rate of the trace (scaled in time, as
:func:`workbench.study.runs.capacity.capacity` does, ``criterion="slo"``) at
which the placement meets the SLO, divided by the GPUs it uses.

* disaggregated (DistServe): ``prefill_replicas`` instances of TP ``prefill_tp``
  and ``decode_replicas`` instances of TP ``decode_tp`` x PP ``decode_pp``;
* colocated continuous batching (vLLM, ``continuous_fcfs``): as many replicas of
  TP ``t`` as fit, for each TP degree ``t``.

The search follows DistServe's placement algorithm for high node affinity
(OSDI'24 Algorithm 1; ``simdistserve/benchmarks/search_configs.py`` enumerates
the configurations, ``search_binary.py`` bisects each one's per-GPU rate):

1. *Per-pool goodput* (``simu_prefill`` / ``simu_decode`` in the paper): for each
   prefill TP degree, the capacity of one prefill instance judged on TTFT alone
   (TPOT limit lifted, ``ample`` decode instances behind it so nothing backs up);
   for each decode (TP, PP), the capacity of one decode instance judged on TPOT
   alone behind ``ample`` prefill instances.
2. *Estimate* every placement within the budget: ``min(prefill_replicas x
   prefill goodput, decode_replicas x decode goodput)``.  It is an estimate, not
   a bound: ``n`` instances behind one router meet an attainment target at more
   than ``n`` times one instance's rate (their queues pool), a prefill pool that
   is not ample smooths the arrivals its decode pool sees, and each goodput is a
   grid point up to ``resolution`` below the true one.  So a placement's
   verified goodput can exceed its estimate (on the DistServe sample at TTFT
   0.2 s and TPOT 0.1 s, ``1xP(tp4) + 3xD(tp1)``: estimate 15.4, verified 16.8
   requests/s, 9% more); ``table.attrs["estimate_low_by"]`` is the most by which
   a verified placement exceeded its estimate in this search.
3. *Verify*, best estimate per GPU first, with the full capacity search of the
   placement (both pools, KV transfers, both limits at once), hinted by the
   estimate.  **Pruning**: a placement is not searched once its estimate per
   GPU is below the best verified goodput per GPU divided by ``prune_margin``
   (the default 1.1 allows the estimate to be 10% low).  Pruned placements stay
   in the table with their estimate, ``status="pruned"`` and no rank (their
   goodput is not known, so they are not ranked against verified ones).  The
   per-pool step also prunes: a pool configuration with no goodput alone makes
   no placement.

Colocated placements are searched in full at each TP degree (one search each).
Every search is :func:`~workbench.study.runs.capacity.capacity`'s grid search
(the bracket) on the grid anchored at the trace's own rate, so a placement's
goodput does not depend on where its search started; each is given a hint, as
the steps give theirs: a placement's estimate, or the previous TP degree's
answer times the ratio of GPUs (capacity grows about linearly with them).
Both kinds use the same step-time profile (resolved at each TP degree), so the
comparison isolates the placement.  The DistServe paper's low node-affinity
variant (prefill and decode stages of a segment sharing nodes) is not modelled:
the engine has one KV link speed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.simulate import SlaScaleWarning, _validate_trace
from workbench.sim.steptime import StepTimeModel
from workbench.study.runs.capacity import CapacityError, capacity

log = logging.getLogger(__name__)

UNLIMITED_S = 1e9   # a limit no request reaches: judges a pool on the other limit alone
MAX_GPUS = 256      # the estimate step lists every split: ~2.6 x gpus^2 placements (170,000 at 256 GPUs)


def _memory_fields(model: str) -> dict:
    """SimConfig memory fields for ``model`` (a memory preset name or a Hugging Face name like
    ``facebook/opt-13b``) on A100-80GB GPUs as DistServe's engine uses them."""
    from workbench.sim import profiles
    from workbench.sim.memory import MODELS

    preset = model.split("/")[-1].lower()
    if preset not in MODELS:
        raise ValueError(f"model: no memory preset for {model!r} (presets: {', '.join(MODELS)}); pass "
                         "base_config=wb.SimConfig(model_mem_gb=..., kv_gb_per_token=..., gpu_mem_gb=...) for it")
    fields = dict(profiles.PROFILE_MEMORY["opt-13b-a100-distserve"])
    fields["model"] = preset
    return fields


def _degrees(function, keep=()) -> tuple[int, ...]:
    """The TP degrees of 1, 2, 4, 8 at which ``function`` gives a model (a ValueError: it has none there; an
    error of a type in ``keep`` is raised, not taken for a missing degree)."""
    degrees = []
    for tp in (1, 2, 4, 8):
        try:
            function(tp)
            degrees.append(tp)
        except keep:
            raise
        except ValueError:
            pass
    return tuple(degrees)


def _tp_resolver(profile, model: str, name: str):
    """A function tp -> StepTimeModel from a profile argument (path to a DistServe JSON, a registered profile
    name, or a StepTimeModel used at every degree), and the TP degrees it has.  Each degree's model is built
    once (the search asks for it at every placement)."""
    from workbench.sim import profiles

    if profile is None:
        profile = profiles.DEFAULT_DISAGG_PROFILE
    if isinstance(profile, StepTimeModel):
        return (lambda tp: profile), (1, 2, 4, 8)
    if callable(profile):   # tp -> StepTimeModel; the degrees it answers
        function = profile

        @functools.cache
        def checked(tp: int) -> StepTimeModel:
            return checks.instance(function(tp), f"{name}({tp})", StepTimeModel, expected="a StepTimeModel")

        return checked, _degrees(checked, keep=checks.InvalidType)
    if not isinstance(profile, (str, os.PathLike)):
        raise checks.InvalidType(f"{name}: must be a DistServe profile file, a registered profile name, a "
                                 f"StepTimeModel or a function tp -> StepTimeModel, got {type(profile).__name__}")
    if str(profile) not in profiles.PROFILES:
        path = Path(profile)
        if not path.is_file():
            raise ValueError(f"{name}: {str(profile)!r} is neither a registered profile "
                             f"({', '.join(profiles.PROFILES)}) nor a DistServe profile file")
        resolve = functools.cache(lambda tp: profiles.distserve_profile(path, model=model, tp=tp))
        degrees = _degrees(resolve)
        if not degrees:  # the file's own error (no such model, invalid JSON, ...) says why
            resolve(1)
        return resolve, degrees
    profile = str(profile)
    resolve = functools.cache(lambda tp: profiles.get_profile(profile, tp=tp))
    return resolve, _degrees(resolve)


def _fits(cfg_fields: dict, base: SimConfig) -> bool:
    try:
        base.replace(**cfg_fields)
        return True
    except ValueError:
        return False


def _search(trace, cfg, latency, attainment, hint_rps: float | None, resolution: float):
    """capacity(criterion='slo') of one placement; None when no load meets the SLO.  The search is the
    grid search of :func:`~workbench.study.runs.capacity.capacity` (``method="auto"``: the bracket for these
    engines), on the grid anchored at the trace's own rate, so a placement's answer does not depend on the
    hint; ``hint_rps`` (where its capacity probably lies) only saves simulations."""
    hint = {"hint_rps": hint_rps} if hint_rps is not None and hint_rps > 0 else {}
    try:
        with warnings.catch_warnings():
            if UNLIMITED_S in (cfg.ttft_sla_s, cfg.tpot_sla_s):   # lifted on purpose: no unit mistake to warn of
                warnings.simplefilter("ignore", SlaScaleWarning)
            return capacity(trace, cfg, criterion="slo", attainment=attainment, latency=latency,
                            resolution=resolution, method="auto", **hint)
    except CapacityError as exc:
        log.debug("placement %s: %s", cfg, exc)   # the table says it: status "no load meets the SLO"
        return None


def _scaled_hint(found, ratio: float) -> float | None:
    """A neighbouring search's capacity times ``ratio`` (the ratio of GPUs or instances: a placement's capacity
    grows about linearly with them); None when that search found none."""
    return found.capacity_rps * ratio if found is not None and found.capacity_rps > 0 else None


def best_placement(trace, gpus: int, *, model: str = "facebook/opt-13b", profile=None, ttft_s: float = 0.2,
                   tpot_s: float = 0.1, attainment: float = 0.9, tp_degrees=None, pp_degrees=(1, 2),
                   colocated: bool = True, colocated_profile=None, disaggregated: bool = True,
                   base_config: SimConfig | None = None, resolution: float = 0.02, prune_margin: float = 1.1,
                   ample: int = 4) -> pd.DataFrame:
    """Every disaggregated placement and colocated TP degree within ``gpus`` GPUs, ranked by goodput per GPU.

    ``profile``: a DistServe profile file, a registered profile name, a StepTimeModel or a function tp ->
    StepTimeModel (default: DistServe's OPT-13B A100 profile), resolved at each TP degree (``tp_degrees``:
    default all the profile has);
    ``pp_degrees``: decode pipeline depths tried.  ``colocated_profile``: the colocated replicas' step times
    (same forms; default ``profile``: both kinds on the same kernels, so the comparison isolates the placement;
    ``"opt-13b-a100"`` times them as the measured vLLM engine).  ``colocated`` / ``disaggregated``: search that
    kind (both by default).  ``base_config``: the other SimConfig fields (memory, routers,
    KV link, batch limits; default: ``model``'s memory preset on A100-80GB GPUs); its ``router`` routes the
    colocated replicas, and a setting the disaggregated engine does not have (``prefix_caching``,
    ``chunked_prefill``, ``kv_watermark``, ``max_paddings``) is refused, as it would favour one side.  Columns: ``kind``,
    ``placement`` (e.g. ``2xP(tp2) + 1xD(tp1,pp2)``), the instance counts and degrees, ``gpus``,
    ``goodput_rps`` (capacity at the SLO), ``goodput_per_gpu``, ``estimate_rps`` (disaggregated: from the
    per-pool goodputs), ``status`` (``searched``, ``pruned``, ``no load meets the SLO``), ``rank`` (1 = the most
    goodput per GPU among the placements searched; none for a pruned one).  The per-pool goodputs are in
    ``table.attrs["pool_goodput"]``, the search time in ``attrs["search_s"]``, ``prune_margin`` in
    ``attrs["prune_margin"]`` and the largest verified goodput over estimate, less 1, in
    ``attrs["estimate_low_by"]`` (NaN when no disaggregated placement was verified).
    See the module docstring for the search and where it prunes.
    """
    t0 = time.perf_counter()
    trace = _validate_trace(trace)
    gpus = checks.integer(gpus, "gpus", low=2, high=MAX_GPUS, high_why="the search enumerates every prefill/decode "
                          "split, O(gpus^2) placements; search one node's or one rack's GPUs and replicate",
                          hint="a disaggregated placement needs a prefill and a decode GPU")
    checks.instance(model, "model", str, expected="a model name such as 'facebook/opt-13b'")
    ttft_s = checks.number(ttft_s, "ttft_s", low=0, low_open=True, unit="s")
    tpot_s = checks.number(tpot_s, "tpot_s", low=0, low_open=True, unit="s")
    attainment = checks.number(attainment, "attainment", low=0, low_open=True, high=1,
                               hint="the share of requests that must meet both limits, e.g. 0.9")
    if tp_degrees is not None:
        tp_degrees = checks.integers(tp_degrees, "tp_degrees", low=1, high=MAX_GPUS)
    pp_degrees = checks.integers(pp_degrees, "pp_degrees", low=1, high=MAX_GPUS)
    colocated = checks.boolean(colocated, "colocated")
    disaggregated = checks.boolean(disaggregated, "disaggregated")
    if not (colocated or disaggregated):
        raise ValueError("colocated/disaggregated: both False leaves nothing to search; set one of them True")
    if base_config is not None:
        checks.instance(base_config, "base_config", SimConfig, expected="a SimConfig, or None for the model's preset")
    resolution = checks.number(resolution, "resolution", low=0, high=1, low_open=True, high_open=True,
                               hint="the relative gap between pass and fail at which each capacity search stops")
    prune_margin = checks.number(prune_margin, "prune_margin", low=1,
                                 hint="1 prunes at the best verified goodput per GPU; 1.1 allows estimates 10% low")
    ample = checks.integer(ample, "ample", low=1, high=64, hint="instances of the other pool behind a pool measured "
                           "alone")
    resolve, available = _tp_resolver(profile, model, "profile")
    resolve_colocated = resolve if colocated_profile is None else \
        _tp_resolver(colocated_profile, model, "colocated_profile")[0]
    for tp in tp_degrees or ():
        try:
            resolve(tp)
        except ValueError as exc:
            raise ValueError(f"tp_degrees: the profile has no TP {tp} ({exc}); it has "
                             f"{', '.join(map(str, available)) or 'none of 1, 2, 4, 8'}: choose among those, or pass "
                             "a StepTimeModel or a function tp -> StepTimeModel as profile") from None
    tps = tuple(t for t in (tp_degrees or available) if t <= gpus)
    if not tps:
        raise ValueError(f"tp_degrees: none of {tp_degrees or available} fits in {gpus} GPUs")
    base = base_config if base_config is not None else SimConfig(**_memory_fields(model))
    colocated_base = base.replace(ttft_sla_s=ttft_s, tpot_sla_s=tpot_s)   # its router routes the colocated replicas
    try:   # a continuous-engine setting the disaggregated engine lacks (prefix caching, chunked prefill) is refused:
        # it would favour one side of the comparison
        # the colocated replicas' own router and limits stay theirs; the pools have their own fields for these
        base = base.replace(scheduler="disaggregated", ttft_sla_s=ttft_s, tpot_sla_s=tpot_s, num_gpus=None,
                            **{name: SimConfig.__dataclass_fields__[name].default
                               for name in ("router", "max_num_seqs", "max_num_batched_tokens", "kv_blocks")})
    except ValueError as exc:
        raise ValueError(f"base_config: {exc}") from None
    top = max(tps)

    # 1. per-pool goodput of one instance (the other pool ample, the other limit lifted)
    # (each search hinted by the previous degree's answer times the ratio of GPUs)
    pool_goodput = {}
    previous = None   # (GPUs of the instance, its search) of the last pool configuration searched
    for tp in tps if disaggregated else ():
        cfg = {"prefill_replicas": 1, "prefill_tp": tp, "decode_replicas": ample, "decode_tp": top, "decode_pp": 1}
        if not _fits(cfg, base):
            continue
        res = _search(trace, base.replace(**cfg, tpot_sla_s=UNLIMITED_S),
                      {"prefill": resolve(tp), "decode": resolve(top)}, attainment,
                      _scaled_hint(previous[1], tp / previous[0]) if previous else None, resolution)
        previous = (tp, res)
        pool_goodput[("prefill", tp, 1)] = res.capacity_rps if res else 0.0
    previous = None
    for tp in tps if disaggregated else ():
        for pp in pp_degrees:
            if tp * pp > gpus - 1:
                continue
            cfg = {"prefill_replicas": ample, "prefill_tp": top, "decode_replicas": 1, "decode_tp": tp, "decode_pp": pp}
            if not _fits(cfg, base):
                continue
            res = _search(trace, base.replace(**cfg, ttft_sla_s=UNLIMITED_S),
                          {"prefill": resolve(top), "decode": resolve(tp)}, attainment,
                          _scaled_hint(previous[1], tp * pp / previous[0]) if previous else None, resolution)
            previous = (tp * pp, res)
            pool_goodput[("decode", tp, pp)] = res.capacity_rps if res else 0.0

    # 2. every placement within the budget, with its estimate
    rows = []
    for (pool, tp_p, _), g_p in pool_goodput.items():
        if pool != "prefill" or g_p <= 0:
            continue
        for (pool_d, tp_d, pp_d), g_d in pool_goodput.items():
            if pool_d != "decode" or g_d <= 0:
                continue
            for n_p in range(1, gpus // tp_p + 1):
                for n_d in range(1, (gpus - n_p * tp_p) // (tp_d * pp_d) + 1):
                    used = n_p * tp_p + n_d * tp_d * pp_d
                    estimate = min(n_p * g_p, n_d * g_d)
                    rows.append({"kind": "disaggregated", "prefill_replicas": n_p, "prefill_tp": tp_p,
                                 "decode_replicas": n_d, "decode_tp": tp_d, "decode_pp": pp_d, "tp": np.nan,
                                 "replicas": n_p + n_d, "gpus": used, "estimate_rps": estimate,
                                 "estimate_per_gpu": estimate / used})
    table = pd.DataFrame(rows, columns=["kind", "prefill_replicas", "prefill_tp", "decode_replicas", "decode_tp",
                                        "decode_pp", "tp", "replicas", "gpus", "estimate_rps", "estimate_per_gpu"])

    # 3. verify, best estimate per GPU first; prune below the best verified goodput per GPU
    best = 0.0
    goodput, status = [], []
    order = table.sort_values(["estimate_per_gpu", "gpus"], ascending=[False, True]).index if len(table) else []
    results = {}
    for idx in order:
        row = table.loc[idx]
        if row.estimate_per_gpu < best / prune_margin:
            results[idx] = (np.nan, "pruned")
            continue
        cfg = base.replace(prefill_replicas=int(row.prefill_replicas), prefill_tp=int(row.prefill_tp),
                           decode_replicas=int(row.decode_replicas), decode_tp=int(row.decode_tp),
                           decode_pp=int(row.decode_pp))
        res = _search(trace, cfg, {"prefill": resolve(int(row.prefill_tp)), "decode": resolve(int(row.decode_tp))},
                      attainment, row.estimate_rps, resolution)
        if res is None:
            results[idx] = (0.0, "no load meets the SLO")
            continue
        results[idx] = (res.capacity_rps, "searched")
        best = max(best, res.capacity_rps / row.gpus)
    for idx in table.index:
        g, st = results.get(idx, (np.nan, "pruned"))
        goodput.append(g)
        status.append(st)
    table["goodput_rps"] = goodput
    table["status"] = status

    # colocated continuous batching at each TP degree
    colo = []
    if colocated:
        per_gpu_mem = {k: getattr(base, k) for k in ("gpu_mem_gb", "mem_margin_gb")}
        previous = None   # (GPUs used, search) of the last TP degree: the next one's hint, scaled by GPUs
        for tp in tps:
            replicas = gpus // tp
            try:
                cfg = colocated_base.replace(scheduler="continuous_fcfs", num_gpus=replicas,
                                   gpu_mem_gb=tp * per_gpu_mem["gpu_mem_gb"],
                                   mem_margin_gb=tp * per_gpu_mem["mem_margin_gb"])
            except ValueError as exc:
                log.info("colocated tp=%d does not fit: %s", tp, exc)
                continue
            res = _search(trace, cfg, resolve_colocated(tp), attainment,
                          _scaled_hint(previous[1], replicas * tp / previous[0]) if previous else None, resolution)
            previous = (replicas * tp, res)
            colo.append({"kind": "colocated", "prefill_replicas": np.nan, "prefill_tp": np.nan,
                         "decode_replicas": np.nan, "decode_tp": np.nan, "decode_pp": np.nan, "tp": tp,
                         "replicas": replicas, "gpus": replicas * tp, "estimate_rps": np.nan,
                         "estimate_per_gpu": np.nan, "goodput_rps": res.capacity_rps if res else 0.0,
                         "status": "searched" if res else "no load meets the SLO"})
    table = pd.concat([table, pd.DataFrame(colo)], ignore_index=True) if colo else table
    table["goodput_per_gpu"] = table["goodput_rps"] / table["gpus"]
    table["placement"] = [_label(r) for r in table.itertuples()]
    table = table.sort_values(["goodput_per_gpu", "estimate_per_gpu", "gpus"], ascending=[False, False, True],
                              na_position="last").reset_index(drop=True)
    # ranked: the placements whose goodput is known (searched, or no load meets the SLO); pruned ones are listed
    # after them by their estimate, unranked
    verified = (table.status != "pruned").to_numpy()
    table["rank"] = pd.array(np.where(verified, np.cumsum(verified), 0), dtype="Int64")
    table.loc[~verified, "rank"] = pd.NA
    columns = ["rank", "kind", "placement", "gpus", "goodput_rps", "goodput_per_gpu", "estimate_rps", "status",
               "prefill_replicas", "prefill_tp", "decode_replicas", "decode_tp", "decode_pp", "tp", "replicas",
               "estimate_per_gpu"]
    table = table[columns]
    table.attrs["pool_goodput"] = {f"{pool} tp{tp}" + (f" pp{pp}" if pool == "decode" else ""): g
                                   for (pool, tp, pp), g in pool_goodput.items()}
    table.attrs["search_s"] = time.perf_counter() - t0
    table.attrs["slo"] = {"ttft_s": ttft_s, "tpot_s": tpot_s, "attainment": attainment}
    table.attrs["prune_margin"] = prune_margin
    checked = table[(table.status == "searched") & (table.kind == "disaggregated") & (table.estimate_rps > 0)]
    table.attrs["estimate_low_by"] = float((checked.goodput_rps / checked.estimate_rps).max() - 1) if len(checked) \
        else float("nan")
    log.debug("best_placement on %d GPUs: %d placements, %d searched, %.1f s", gpus, len(table),
             int((table.status == "searched").sum()), table.attrs["search_s"])
    return table


def _label(r) -> str:
    if r.kind == "colocated":
        return f"{int(r.replicas)}x colocated (tp{int(r.tp)})"
    pp = f",pp{int(r.decode_pp)}" if r.decode_pp > 1 else ""
    return (f"{int(r.prefill_replicas)}xP(tp{int(r.prefill_tp)}) + "
            f"{int(r.decode_replicas)}xD(tp{int(r.decode_tp)}{pp})")


__all__ = ["best_placement"]
