"""``simulate`` for the ``disaggregated`` scheduler: the pools' step-time models, the engine's settings, the result.

The rules are in :mod:`workbench.sim.disagg_engine` (compiled) and
:mod:`workbench.sim.disagg_steplog` (the same rules step by step, in Python).
This module turns a :class:`~workbench.sim.config.SimConfig` and a latency
argument into their :class:`~workbench.sim.disagg_steplog.DisaggSettings`, runs
the engine and assembles the :class:`~workbench.sim.simulate.SimResult`.

The latency of a disaggregated deployment is a step-time model per pool:

* ``{"prefill": model, "decode": model}``: each a :class:`StepTimeModel` or a
  registered profile name (resolved at that pool's TP degree);
* one :class:`StepTimeModel`: used by both pools as given;
* a profile name: resolved at each pool's TP degree
  (:func:`workbench.sim.profiles.get_profile` with ``tp=``; a roofline name
  ``<model>@<gpu>`` gives the roofline's step table);
* ``None``: :data:`workbench.sim.profiles.DEFAULT_DISAGG_PROFILE` per TP.

The prefill pool uses its model's prefill coefficients and arrival overhead and
its per-token overhead for the first token; the decode pool its decode
coefficients (both batch regimes), ``pipeline_overhead_s`` and per-token
overhead for the other tokens.  A pool whose model carries a step table
(kernel profiles, roofline: :mod:`workbench.sim.steptable`) is priced from the
table instead of its coefficients (rules R3 and R9), each pool independently;
a run whose steps leave a table's grid is refused after it, as in the other
engines (:meth:`~workbench.sim.steptable.StepTable.check_seen`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from workbench import checks
from workbench.sim import disagg_engine as deng
from workbench.sim.disagg_steplog import DisaggSettings, rejection
from workbench.sim.routers import DISAGG_ROUTERS
from workbench.sim.metrics import (STATUS_COMPLETED, STATUS_REJECTED_BUDGET, STATUS_REJECTED_KV, offered_rate_rps,
                                   summarize_continuous)
from workbench.sim.steptime import StepTimeModel

log = logging.getLogger(__name__)

POOLS = ("prefill", "decode")


def _resolve(value, tp: int, what: str) -> StepTimeModel:
    from workbench.sim import profiles

    if isinstance(value, StepTimeModel):
        return value
    if isinstance(value, str):
        profiles.check_profile(value, what, hint="or pass a wb.StepTimeModel")
        try:
            return profiles.get_profile(value, tp=tp)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}; pass a wb.StepTimeModel for this pool, or choose a TP degree the "
                             "profile has") from None
    raise checks.InvalidType(f"{what}: must be a wb.StepTimeModel or a step-time profile name "
                             f"({', '.join(profiles.profile_names())}), got {type(value).__name__}")


def pool_models(latency, cfg) -> tuple[StepTimeModel, StepTimeModel]:
    """The (prefill, decode) step-time models of ``cfg``'s pools from a latency argument (module docstring)."""
    from workbench.sim import profiles

    if latency is None:
        latency = profiles.DEFAULT_DISAGG_PROFILE
    if isinstance(latency, dict):
        unknown = sorted(repr(k) for k in latency if k not in POOLS)
        missing = [p for p in POOLS if p not in latency]
        if unknown or missing:
            raise ValueError("latency: a disaggregated deployment takes a dict with the keys 'prefill' and 'decode' "
                             "(a StepTimeModel or profile name each); "
                             + "; ".join(([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                                         + ([f"missing {', '.join(map(repr, missing))}"] if missing else [])))
        return (_resolve(latency["prefill"], cfg.prefill_tp, "latency['prefill']"),
                _resolve(latency["decode"], cfg.decode_tp, "latency['decode']"))
    if isinstance(latency, (StepTimeModel, str)):
        return _resolve(latency, cfg.prefill_tp, "latency"), _resolve(latency, cfg.decode_tp, "latency")
    raise checks.InvalidType(f"latency: the disaggregated scheduler takes {{'prefill': ..., 'decode': ...}}, a "
                             f"StepTimeModel, a profile name or None, not a {type(latency).__name__}")


def settings_of(cfg, prefill: StepTimeModel, decode: StepTimeModel) -> DisaggSettings:
    """The settings of ``cfg``'s deployment with these pool models (shared by engine and replay): plain numbers,
    and each pool's step table if its model has one (then its coefficients, the table's linear summary, are
    not used to price steps)."""
    dl = decode.decode_large if decode.decode_large is not None else decode.decode
    threshold = decode.decode_large_threshold if decode.decode_large is not None else 2**62
    return DisaggSettings(
        prefill_replicas=cfg.prefill_replicas, decode_replicas=cfg.decode_replicas, decode_pp=cfg.decode_pp,
        block_size=cfg.block_size, prefill_kv_blocks=cfg.prefill_kv_blocks_effective,
        decode_kv_blocks=cfg.decode_kv_blocks_effective, prefill_max_batch_size=cfg.prefill_max_batch_size,
        prefill_max_tokens=cfg.prefill_max_tokens, decode_max_batch_size=cfg.decode_max_batch_size,
        decode_waiting_block_fraction=cfg.decode_waiting_block_fraction,
        prefill_router=DISAGG_ROUTERS[cfg.prefill_router], decode_router=DISAGG_ROUTERS[cfg.decode_router],
        kv_link_latency_s=cfg.kv_link_latency_s, kv_link_bytes_per_s=cfg.kv_link_bytes_per_s,
        kv_bytes_per_token=cfg.kv_gb_per_token_effective * 1e9,
        pipeline_overhead_s=decode.pipeline_overhead_s, prefill_coef=tuple(prefill.prefill),
        decode_coef=(*decode.decode, *dl, threshold), arrival_overhead_s=tuple(prefill.arrival_overhead_s),
        prefill_table=prefill.table, decode_table=decode.table)


def entry_times(arrival_s, prompt_tokens, s: DisaggSettings) -> np.ndarray:
    """When each request joins a prefill queue: arrival + a0 + a1 x prompt (R1)."""
    a0, a1 = s.arrival_overhead_s
    arrival = np.asarray(arrival_s, dtype=np.float64)
    return arrival + a0 + a1 * np.asarray(prompt_tokens, dtype=np.float64)


def run_engine(arrival_s, prompt_tokens, output_tokens, s: DisaggSettings, *, jumps: bool = True) -> dict:
    """Run the compiled engine on plain arrays; a dict of its per-request and per-instance records.  A pool
    priced by a step table whose grid the run's steps left is refused after the run (unless the table
    extrapolates: then logged), naming the axis and how far."""
    from workbench.sim.simulate import SimulationError

    prompt = np.ascontiguousarray(prompt_tokens)
    output = np.ascontiguousarray(output_tokens)
    entry = entry_times(arrival_s, prompt, s)
    reason = rejection(prompt, output, s)
    accepted = np.flatnonzero(reason == 0)
    order = accepted   # joins in time order, ties in trace order (R1); a trace is sorted by arrival already
    if accepted.size > 1 and (s.arrival_overhead_s[1] or np.any(np.diff(entry[accepted]) < 0)):
        order = accepted[np.argsort(entry[accepted], kind="stable")]
    dc = np.array(s.decode_coef[:6] + (s.decode_coef[6],), dtype=np.float64)
    # the layout StepTimeModel.coefficients() gives the continuous engine's decode helpers
    dcoef = np.zeros(13)
    dcoef[3:6], dcoef[6:9], dcoef[9] = dc[0:3], dc[3:6], float(min(dc[6], 2.0**62))
    (tf_p, ti_p), (tf_d, ti_d) = s.table_arrays("prefill"), s.table_arrays("decode")
    (pf_inst, dc_inst, pf_start, first, x_end, dc_start, finish, swaps, p_busy, p_block_s, p_steps, d_busy,
     d_block_s, d_steps, d_xfer, error) = deng.run_disaggregated(
        np.asarray(order, dtype=np.int64), entry, prompt, output, s.prefill_replicas, s.decode_replicas,
        s.decode_pp, s.block_size, s.prefill_kv_blocks, s.decode_kv_blocks, s.prefill_max_batch_size,
        s.prefill_max_tokens, s.decode_max_batch_size, s.decode_waiting_block_fraction * s.decode_kv_blocks,
        s.prefill_router, s.decode_router, s.kv_link_latency_s, s.kv_bytes_per_token, s.kv_link_bytes_per_s,
        np.array(s.prefill_coef, dtype=np.float64), dcoef, s.pipeline_overhead_s, bool(jumps), tf_p, ti_p, tf_d,
        ti_d)
    if error:
        raise SimulationError(f"disaggregated engine invariant violated (code {error}) for {s}")
    for table, tf, pool in ((s.prefill_table, tf_p, "prefill"), (s.decode_table, tf_d, "decode")):
        if table is not None:
            table.check_seen(tf, f"the disaggregated engine's {pool} pool on this trace")
    return {"reason": reason, "entry_s": entry, "prefill_instance": pf_inst, "decode_instance": dc_inst,
            "prefill_start_s": pf_start, "first_token_s": first, "transfer_end_s": x_end,
            "decode_start_s": dc_start, "finish_s": finish, "swaps": swaps, "prefill_busy_s": p_busy,
            "prefill_block_seconds": p_block_s, "prefill_steps": p_steps, "decode_busy_s": d_busy,
            "decode_block_seconds": d_block_s, "decode_steps": d_steps, "transfer_busy_s": d_xfer}


def shortest_step_s(s: DisaggSettings) -> float:
    """The shortest step either pool takes: a one-token prefill, or a pipeline stage of a one-request decode step
    (what event times must still resolve; see :func:`workbench.sim.simulate.check_time_horizon`)."""
    return min(s.prefill_time_s(1.0, 1.0), s.stage_s(s.decode_time_s(1, 1.0)))


def engine_table_bytes(s: DisaggSettings, n: int) -> float:
    """Bytes of the compiled engine's tables sized by the deployment (not by the trace): per lane (decode
    instance x pipeline stage) a histogram of ``block_size`` entries and a finish heap of min(decode_max_batch_size,
    decode_kv_blocks, requests) entries, per decode instance its stages, per prefill instance its queues."""
    lanes = s.decode_replicas * s.decode_pp
    heap = max(1, min(s.decode_max_batch_size, s.decode_kv_blocks, n))
    return 8.0 * lanes * (s.block_size + 2 * heap + 12) + 8.0 * s.decode_replicas * (s.decode_pp + 25) \
        + 8.0 * s.prefill_replicas * 16


def check_engine_inputs(arrival_s, prompt, output, s: DisaggSettings, prefill_model: StepTimeModel) -> None:
    """What ``simulate`` checks before the compiled engine runs (as for the continuous engine): the arrays
    (dtype, finite join times), the prefill model's curvature over the served prompts, that event times resolve
    the shortest step up to the last join plus every KV transfer, and the size of the engine's tables."""
    from workbench.sim.simulate import (_TIME_RESOLUTION, _check_engine_arrays, _check_prefill_curvature,
                                        _check_tables, _check_times)

    entry = entry_times(arrival_s, prompt, s)
    served = rejection(prompt, output, s) == 0
    _check_prefill_curvature(prefill_model, prompt, served)
    _check_engine_arrays(np.ascontiguousarray(entry, dtype=np.float64), np.asarray(prompt), np.asarray(output),
                         np.zeros(entry.size, np.int32), 1)
    shortest = shortest_step_s(s)
    last = float(entry[served].max()) if served.any() else 0.0
    _check_times(last, shortest, "trace")
    # the KV transfers add to the time line (one at a time per decode instance): all of them at most
    moved = served & (np.asarray(output) > 1)
    with np.errstate(over="ignore"):
        transfers = s.kv_link_latency_s * np.count_nonzero(moved) + float(np.sum(
            np.asarray(prompt, dtype=np.float64)[moved])) * s.kv_bytes_per_token / s.kv_link_bytes_per_s
    if not np.isfinite(last + transfers) or (last + transfers) * _TIME_RESOLUTION > shortest:
        raise ValueError(
            f"kv_link_gbps: moving the KV cache of the trace's prompts over a {s.kv_link_bytes_per_s * 8e-9:g} Gbit/s "
            f"link takes {transfers:.3g} s in all, so event times could no longer resolve the shortest step "
            f"({shortest:.3g} s); is kv_link_gbps in Gbit/s (2400 for NVLink 3's 300 GB/s)?")
    _check_tables(engine_table_bytes(s, entry.size),
                  f"decode_replicas={s.decode_replicas} x decode_pp={s.decode_pp} lanes x (block_size={s.block_size} "
                  f"+ a heap of min(decode_max_batch_size, decode_kv_blocks)="
                  f"{min(s.decode_max_batch_size, s.decode_kv_blocks)})")


def simulate_disaggregated(trace, cfg, latency, t0: float):
    """``simulate`` for ``scheduler="disaggregated"`` (see the module docstring and the engine's rules)."""
    from workbench.sim.simulate import SimResult, SimulationError, warn_if_slo_dwarfs_service

    prefill_model, decode_model = pool_models(latency, cfg)
    output = np.asarray(trace.output_tokens)
    if output.size and output.min() < 1:
        raise ValueError("the disaggregated engine needs output_tokens >= 1 for every request (the first token comes "
                         f"from the prefill); {int(np.count_nonzero(output < 1))} request(s) have 0")
    s = settings_of(cfg, prefill_model, decode_model)
    arrival_s = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
    prompt = np.asarray(trace.prompt_tokens)
    check_engine_inputs(arrival_s, prompt, output, s, prefill_model)
    warn_if_slo_dwarfs_service(trace, cfg, prefill_model, decode_step=decode_model,
                               prefill_tokens=cfg.prefill_max_tokens, decode_batch=cfg.decode_max_batch_size)
    rec = run_engine(arrival_s, prompt, output, s)
    status = np.full(arrival_s.size, STATUS_COMPLETED, np.int8)
    status[rec["reason"] == 1] = STATUS_REJECTED_KV
    status[rec["reason"] == 2] = STATUS_REJECTED_BUDGET
    served = ~np.isnan(rec["finish_s"])
    if not np.array_equal(served, status == STATUS_COMPLETED):
        raise SimulationError("a request was dropped or a rejected request was served")
    streams = request_times(arrival_s, prompt, output, rec, cfg, prefill_model, decode_model)
    summary = summarize_disaggregated(arrival_s, output, status, streams, rec, cfg)
    wall = time.perf_counter() - t0
    summary["sim_wall_s"] = wall
    summary["sim_requests_per_s"] = arrival_s.size / wall if wall > 0 else float("nan")
    log.debug("simulated %d requests disaggregated (%dx%d prefill + %dx%dx%d decode GPUs) in %.3f s",
              arrival_s.size, cfg.prefill_replicas, cfg.prefill_tp, cfg.decode_replicas, cfg.decode_tp,
              cfg.decode_pp, wall)
    streams.update({key: rec[key] for key in ("prefill_busy_s", "decode_busy_s", "prefill_block_seconds",
                                              "decode_block_seconds", "transfer_busy_s")})
    return SimResult(
        config=cfg, latency=decode_model, trace_label=getattr(trace, "label", "trace"),
        trace_fingerprint=getattr(trace, "fingerprint", ""), synthetic=bool(getattr(trace, "is_synthetic", False)),
        arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=output, start_s=streams["start_s"],
        finish_s=arrival_s + streams["e2e_s"], bin=np.zeros(arrival_s.size, np.int32),
        batch_id=np.full(arrival_s.size, -1, np.int32), status=status, batch_float=np.empty((0, 3)),
        batch_int=np.empty((0, 6), np.int32), bin_edges=None, summary=summary, engine="disaggregated",
        continuous=streams, pool_latency={"prefill": prefill_model, "decode": decode_model})


def request_times(arrival_s, prompt, output, rec: dict, cfg, prefill_model, decode_model) -> dict:
    """Per-request TTFT/TPOT/E2E/queue, KV transfer and decode admission wait from the engine's records (R4, R10)."""
    tok_p, tok_d = prefill_model.token_overhead_s, decode_model.token_overhead_s
    ttft_s = rec["first_token_s"] - arrival_s + tok_p
    e2e_s = rec["finish_s"] - arrival_s + tok_p + (output - 1) * tok_d
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(output > 1, (e2e_s - ttft_s) / np.maximum(output - 1, 1), np.nan)
    moved = output > 1
    kv_transfer_s = np.where(moved & ~np.isnan(rec["finish_s"]), cfg.kv_transfer_s(prompt), np.nan)
    decode_queue_s = rec["decode_start_s"] - rec["first_token_s"] - kv_transfer_s
    return {"ttft_s": ttft_s, "tpot_s": tpot_s, "e2e_s": e2e_s, "queue_s": rec["prefill_start_s"] - arrival_s,
            "start_s": rec["prefill_start_s"], "preemptions": rec["swaps"], "kv_transfer_s": kv_transfer_s,
            "decode_queue_s": decode_queue_s, "prefill_instance": rec["prefill_instance"],
            "decode_instance": rec["decode_instance"], "replica": rec["decode_instance"],
            "first_token_step_end_s": rec["first_token_s"], "last_step_end_s": rec["finish_s"]}


def summarize_disaggregated(arrival_s, output, status, streams: dict, rec: dict, cfg) -> dict:
    """The continuous engine's summary plus per-pool utilisation, KV transfer and decode admission wait.

    ``gpu_utilization_mean`` weighs each instance by its GPUs (a decode instance's busy time is the stage time of
    its micro-batches, so every one of its ``decode_tp x decode_pp`` GPUs is busy that long);
    ``prefill_utilization_mean`` / ``decode_utilization_mean`` are each pool's mean busy share of the makespan,
    ``prefill_kv_utilization_mean`` / ``decode_kv_utilization_mean`` its time-average share of KV blocks in use,
    ``kv_utilization_mean`` both pools' blocks together; ``transfer_busy_share`` the share of the makespan a
    decode instance spends moving KV (mean over instances).  ``kv_transfer_*`` and ``decode_queue_*`` are over
    requests that decoded (output > 1)."""
    P, D = cfg.prefill_replicas, cfg.decode_replicas
    cap_p, cap_d = cfg.prefill_kv_blocks_effective, cfg.decode_kv_blocks_effective
    busy = np.concatenate([rec["prefill_busy_s"], rec["decode_busy_s"]])
    summary = summarize_continuous(
        arrival_s=arrival_s, ttft_s=streams["ttft_s"], tpot_s=streams["tpot_s"], e2e_s=streams["e2e_s"],
        queue_s=streams["queue_s"], preemptions=streams["preemptions"], status=status, output_tokens=output,
        busy_s=busy, block_seconds=np.concatenate([rec["prefill_block_seconds"], rec["decode_block_seconds"]]),
        kv_blocks=1, num_replicas=P + D, ttft_sla_s=cfg.ttft_sla_s, tpot_sla_s=cfg.tpot_sla_s)
    makespan = summary["makespan_s"]
    nan = float("nan")
    if makespan > 0:
        gpu_seconds = rec["prefill_busy_s"].sum() * cfg.prefill_tp + \
            rec["decode_busy_s"].sum() * cfg.decode_tp * cfg.decode_pp
        summary["gpu_utilization_mean"] = float(gpu_seconds / (cfg.num_gpus * makespan))
        summary["prefill_utilization_mean"] = float(rec["prefill_busy_s"].sum() / (P * makespan))
        summary["decode_utilization_mean"] = float(rec["decode_busy_s"].sum() / (D * makespan))
        summary["prefill_kv_utilization_mean"] = float(rec["prefill_block_seconds"].sum() / (P * cap_p * makespan))
        summary["decode_kv_utilization_mean"] = float(rec["decode_block_seconds"].sum() / (D * cap_d * makespan))
        block_seconds = rec["prefill_block_seconds"].sum() + rec["decode_block_seconds"].sum()
        summary["kv_utilization_mean"] = float(block_seconds / ((P * cap_p + D * cap_d) * makespan))
        summary["transfer_busy_share"] = float(rec["transfer_busy_s"].sum() / (D * makespan))
    else:
        for key in ("gpu_utilization_mean", "prefill_utilization_mean", "decode_utilization_mean",
                    "prefill_kv_utilization_mean", "decode_kv_utilization_mean", "kv_utilization_mean",
                    "transfer_busy_share"):
            summary[key] = nan
    for name in ("kv_transfer", "decode_queue"):
        values = streams[f"{name}_s"]
        values = values[~np.isnan(values)]
        summary[f"{name}_mean_s"] = float(values.mean()) if values.size else nan
        quantiles = (50, 90, 99)    # one partition of a fresh array for the three (a fleet search runs hundreds)
        found = np.percentile(values, quantiles, overwrite_input=True) if values.size else [nan] * len(quantiles)
        for q, value in zip(quantiles, found):
            summary[f"{name}_p{q}_s"] = float(value)
    summary["offered_rps"] = offered_rate_rps(arrival_s)
    summary["engine_steps"] = int(rec["prefill_steps"].sum() + rec["decode_steps"].sum())
    summary["prefill_steps"] = int(rec["prefill_steps"].sum())
    summary["decode_steps"] = int(rec["decode_steps"].sum())
    summary["k_bins_effective"] = 1
    summary["num_gpus"] = int(cfg.num_gpus)
    return summary


def slo_attainable_share(trace, cfg, prefill: StepTimeModel, decode: StepTimeModel) -> float:
    """Share of requests meeting both ``cfg.ttft_sla_s`` and ``cfg.tpot_sla_s`` when served alone: a prefill step
    of the prompt (plus the arrival and token overheads) for TTFT; for TPOT one request's decode step at its mean
    context (prompt + output / 2), through every pipeline stage, plus the KV transfer spread over its tokens;
    requests the deployment rejects (R2) miss.  No load can do better (the capacity search's ceiling).  A pool
    with a step table is priced from it."""
    s = settings_of(cfg, prefill, decode)
    prompt = np.asarray(trace.prompt_tokens, dtype=np.float64)
    output = np.asarray(trace.output_tokens, dtype=np.float64)
    a0, a1 = s.arrival_overhead_s
    if s.prefill_table is not None:
        prefill_s = deng.table_alone_s(*s.priced_tables["prefill"], prompt, True)
    else:
        pa, pb, pc = s.prefill_coef
        prefill_s = pa + pb * prompt + pc * prompt * prompt
    ttft = a0 + a1 * prompt + prefill_s + prefill.token_overhead_s
    if s.decode_table is not None:
        step = deng.table_alone_s(*s.priced_tables["decode"], prompt + output / 2.0, False)
    else:
        da, db, dc = s.decode_coef[0:3] if s.decode_coef[6] > 1 else s.decode_coef[3:6]
        step = da + db * (prompt + output / 2.0) + dc
    cycle = s.decode_pp * np.vectorize(s.stage_s)(step) if s.decode_pp > 1 else step
    transfer = cfg.kv_transfer_s(prompt) / np.maximum(output - 1, 1)
    tpot = cycle + transfer + decode.token_overhead_s
    served = rejection(trace.prompt_tokens, trace.output_tokens, s) == 0
    ok = served & (ttft <= cfg.ttft_sla_s) & ((tpot <= cfg.tpot_sla_s) | (output <= 1))
    return float(np.count_nonzero(ok)) / len(prompt)


__all__ = ["POOLS", "check_engine_inputs", "engine_table_bytes", "entry_times", "pool_models", "request_times",
           "run_engine", "settings_of", "shortest_step_s", "simulate_disaggregated", "slo_attainable_share",
           "summarize_disaggregated"]
