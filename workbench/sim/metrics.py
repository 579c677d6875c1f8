"""Summary metrics: pure functions over the per-request and per-batch arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd

STATUS_COMPLETED = 0
STATUS_REJECTED_KV = 1
STATUS_REJECTED_BUDGET = 2
STATUS_DROPPED = 3
STATUS_LABELS = (
    "completed",
    "rejected: prompt+output tokens exceed the GPU's KV-cache capacity",
    "rejected: prompt exceeds max_num_batched_tokens without chunked prefill",
    "dropped after preemption: prompt+generated tokens exceed max_num_batched_tokens or the KV cache less "
    "its watermark (vLLM v0.2 ignores it)",
)
CONTINUOUS_PERCENTILES = (50, 90, 99)

LATENCY_PERCENTILES = (50, 95, 99)


def _nan_stats(values: np.ndarray, percentiles) -> tuple[float, list[float], float]:
    """Mean, percentiles and max; partitions ``values`` in place (pass a temporary)."""
    if values.size == 0:
        return float("nan"), [float("nan")] * len(percentiles), float("nan")
    mean, peak = float(values.mean()), float(values.max())
    return mean, [float(p) for p in np.percentile(values, percentiles, overwrite_input=True)], peak


def summarize(*, arrival_s, start_s, finish_s, status, output_tokens, batch_gpu, batch_service_s,
              batch_size, batch_bin, num_gpus: int, d_sla_s: float, n_bins: int) -> dict:
    """The metrics of one run.

    Definitions: the makespan runs from the first arrival (0) to the last
    completion (or the last arrival if that is later); throughput counts
    completed requests and their *output* tokens per second of makespan;
    ``goodput_rps`` counts only requests finished by their deadline
    (arrival + d_sla_s); ``sla_violation_rate`` is late plus rejected requests
    over all offered; GPU utilisation is busy time over the makespan.
    """
    offered = int(arrival_s.size)
    done = status == STATUS_COMPLETED
    completed = int(done.sum())
    rejected = offered - completed
    last = max(float(np.max(finish_s[done])) if completed else 0.0, float(arrival_s[-1]) if offered else 0.0)
    makespan = last - (float(arrival_s[0]) if offered else 0.0)
    latency = np.subtract(finish_s, arrival_s)
    if rejected:
        latency = latency[done]
    on_time = int(np.count_nonzero(latency <= d_sla_s))
    per_second = 1.0 / makespan if makespan > 0 else float("nan")

    lat_mean, (p50, p95, p99), lat_max = _nan_stats(latency, LATENCY_PERCENTILES)
    del latency
    queue_delay = np.subtract(start_s, arrival_s)
    q_mean, (q_p99,), _ = _nan_stats(queue_delay[done] if rejected else queue_delay, (99,))
    del queue_delay
    busy = np.bincount(batch_gpu, weights=batch_service_s, minlength=num_gpus)
    util = busy / makespan if makespan > 0 else np.zeros(num_gpus)
    num_batches = int(batch_size.size)

    summary = {
        "offered": offered,
        "completed": completed,
        "rejected": rejected,
        "makespan_s": makespan,
        "throughput_rps": completed * per_second,
        "throughput_tokens_per_s": float(output_tokens[done].sum()) * per_second,
        "goodput_rps": on_time * per_second,
        "sla_violation_rate": (offered - on_time) / offered if offered else float("nan"),
        "latency_mean_s": lat_mean,
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "latency_p99_s": p99,
        "latency_max_s": lat_max,
        "queue_delay_mean_s": q_mean,
        "queue_delay_p99_s": q_p99,
        "service_time_mean_s": float(batch_service_s.mean()) if num_batches else float("nan"),
        "gpu_utilization_mean": float(util.mean()),
        "gpu_utilization_min": float(util.min()),
        "gpu_utilization_max": float(util.max()),
        "num_batches": num_batches,
        "batch_size_mean": float(batch_size.mean(dtype=np.float64)) if num_batches else float("nan"),
        "batch_size_max": int(batch_size.max()) if num_batches else 0,
        "k_bins_effective": int(n_bins),
    }
    if n_bins > 1:
        per_bin_requests = np.bincount(batch_bin, weights=batch_size, minlength=n_bins)
        per_bin_batches = np.bincount(batch_bin, minlength=n_bins)
        for j in range(n_bins):
            summary[f"bin{j}_requests"] = int(per_bin_requests[j])
            summary[f"bin{j}_batch_size_mean"] = (
                float(per_bin_requests[j] / per_bin_batches[j]) if per_bin_batches[j] else float("nan"))
    return summary


def littles_law(arrival_s, finish_s, completed_mask) -> dict:
    """Little's law from the timeline: time-average number in system vs lambda x W.

    The time-average of N(t) over [0, T] equals the integral of N, which is the
    total time spent in system by all requests, divided by T; lambda = n / T.
    The identity holds exactly on the completed sample, so this is a check of
    the record's consistency (every request counted once, with finish >=
    arrival), computed independently from an event sweep of N(t).
    """
    a = np.asarray(arrival_s)[completed_mask]
    f = np.asarray(finish_s)[completed_mask]
    if a.size == 0:
        return {"L": float("nan"), "lambda_W": float("nan")}
    horizon = float(f.max() - a.min())
    times = np.concatenate([a, f])
    steps = np.concatenate([np.ones(a.size), -np.ones(f.size)])
    idx = np.argsort(times, kind="stable")
    times, steps = times[idx], steps[idx]
    n_in_system = np.cumsum(steps)
    area = float(np.sum(n_in_system[:-1] * np.diff(times)))
    lam = a.size / horizon
    return {"L": area / horizon, "lambda_W": lam * float(np.mean(f - a)), "lambda": lam,
            "W": float(np.mean(f - a))}


# ---------------------------------------------------------------- static engine: replay rate and per-bin metrics

def offered_rate_rps(arrival_s) -> float:
    """The arrival rate actually replayed: requests over the span from first to last arrival
    (as ``Trace.mean_rate_rps``); NaN when every request arrives at the same instant."""
    arrival_s = np.asarray(arrival_s, dtype=np.float64)
    if arrival_s.size == 0:
        return float("nan")
    span_s = float(arrival_s[-1] - arrival_s[0])
    return arrival_s.size / span_s if span_s > 0 else float("nan")


def static_bin_metrics(*, arrival_s, finish_s, status, request_bin, batch_bin, batch_service_s,
                       d_sla_s: float, n_bins: int, met=None) -> dict:
    """Per-bin metrics of a static-batch run, ``bin{j}_*`` keys for ``j < n_bins``:

    ``offered`` (requests assigned to the bin, rejected included),
    ``latency_mean_s`` and ``latency_p99_s`` (completed requests),
    ``sla_violation_rate`` (late or rejected over the bin's offered requests),
    and ``gpu_time_share`` (the bin's share of all GPU busy time).  A bin with
    no request has NaN metrics.  Empty dict when there is a single bin.
    ``met`` (step mode): per-request booleans that replace "finished within
    ``d_sla_s``" as the SLA test (see :func:`meets_slo`).
    """
    if n_bins <= 1:
        return {}
    done = status == STATUS_COMPLETED
    latency = np.subtract(finish_s, arrival_s)
    if met is None:
        on_time = done & (np.where(done, latency, np.inf) <= d_sla_s)
    else:
        on_time = done & np.asarray(met, dtype=bool)
    busy = np.bincount(batch_bin, weights=batch_service_s, minlength=n_bins)
    total_busy = float(busy.sum())
    out = {}
    for j in range(n_bins):
        members = request_bin == j
        offered = int(np.count_nonzero(members))
        served_lat = latency[members & done]
        out[f"bin{j}_offered"] = offered
        out[f"bin{j}_latency_mean_s"] = float(served_lat.mean()) if served_lat.size else float("nan")
        out[f"bin{j}_latency_p99_s"] = float(np.percentile(served_lat, 99)) if served_lat.size else float("nan")
        out[f"bin{j}_sla_violation_rate"] = (
            (offered - int(np.count_nonzero(on_time[members]))) / offered if offered else float("nan"))
        out[f"bin{j}_gpu_time_share"] = float(busy[j] / total_busy) if total_busy > 0 else float("nan")
    return out


def meets_slo(status, ttft_s, tpot_s, ttft_sla_s: float, tpot_sla_s: float) -> np.ndarray:
    """Per request: completed, ``ttft_s <= ttft_sla_s`` and ``tpot_s <= tpot_sla_s`` (NaN TPOT, a 1-token
    output, is judged on TTFT alone)."""
    done = status == STATUS_COMPLETED
    return done & (ttft_s <= ttft_sla_s) & ((tpot_s <= tpot_sla_s) | np.isnan(tpot_s))


def slo_attainment(ttft_s, tpot_s, ttft_limit_s: float, tpot_limit_s: float) -> float:
    """Share of requests with TTFT <= limit and TPOT <= limit (a 1-token answer is judged on TTFT)."""
    ttft_s, tpot_s = np.asarray(ttft_s), np.asarray(tpot_s)
    ok = (ttft_s <= ttft_limit_s) & ((tpot_s <= tpot_limit_s) | np.isnan(tpot_s))
    return float(ok.mean())


def summarize_static_steps(static_summary: dict, *, arrival_s, status, output_tokens, streams: dict, batch_gpu,
                           batch_service_s, batch_tokens, kv_capacity_tokens: int, num_gpus: int,
                           ttft_sla_s: float, tpot_sla_s: float) -> dict:
    """The summary of a static run in step mode: the static summary plus the continuous engine's SLO metrics.

    ``static_summary`` is :func:`summarize` over the same run (``finish_s`` = each
    request's reported last token).  On top of it come every key of
    :func:`summarize_continuous` computed from the per-request ``streams``
    (ttft/tpot/e2e/queue): ``slo_attainment``, ``ttft_*``/``tpot_*``/``e2e_*``
    percentiles and ``goodput_rps`` (DistServe's: requests per second meeting
    both ``ttft_sla_s`` and ``tpot_sla_s``), which replaces the static
    deadline goodput; ``sla_violation_rate = 1 - slo_attainment`` in step mode,
    so capacity and sweeps judge static and continuous schedulers alike.  The
    static deadline criterion (finish within ``d_sla_s``) stays available as
    ``deadline_goodput_rps`` and ``deadline_violation_rate``.
    ``kv_utilization_mean`` is the time-average share of the KV capacity
    reserved by running batches (a batch reserves prompt + output tokens of
    every member for its whole service time); ``gpu_utilization_mean`` is the
    static one (busy = each batch's full padded GPU time).
    """
    busy_s = np.bincount(batch_gpu, weights=batch_service_s, minlength=num_gpus)
    token_seconds = np.bincount(batch_gpu, weights=np.asarray(batch_tokens) * batch_service_s, minlength=num_gpus)
    slo = summarize_continuous(
        arrival_s=arrival_s, ttft_s=streams["ttft_s"], tpot_s=streams["tpot_s"], e2e_s=streams["e2e_s"],
        queue_s=streams["queue_s"], preemptions=streams["preemptions"], status=status,
        output_tokens=output_tokens, busy_s=busy_s, block_seconds=token_seconds, kv_blocks=kv_capacity_tokens,
        num_replicas=num_gpus, ttft_sla_s=ttft_sla_s, tpot_sla_s=tpot_sla_s)
    summary = dict(static_summary)
    summary["deadline_goodput_rps"] = static_summary["goodput_rps"]
    summary["deadline_violation_rate"] = static_summary["sla_violation_rate"]
    gpu_min, gpu_max = summary["gpu_utilization_min"], summary["gpu_utilization_max"]
    summary.update(slo)
    summary["gpu_utilization_min"], summary["gpu_utilization_max"] = gpu_min, gpu_max
    return summary


def summarize_continuous(*, arrival_s, ttft_s, tpot_s, e2e_s, queue_s, preemptions, status, output_tokens,
                         busy_s, block_seconds, kv_blocks: int, num_replicas: int,
                         ttft_sla_s: float, tpot_sla_s: float, replica_seconds: float | None = None) -> dict:
    """The metrics of one continuous-batching run (pure function of the per-request records).

    Definitions: the makespan runs from the first arrival to the last
    completion (or the last arrival if later); ``throughput_*`` count
    completed requests and their output tokens per second of makespan.  A
    request *meets the SLO* when it completed, ``ttft_s <= ttft_sla_s`` and
    ``tpot_s <= tpot_sla_s`` (a 1-token output has no TPOT and is judged on
    TTFT alone); ``goodput_rps`` is DistServe's goodput, such requests per
    second of makespan; ``slo_attainment`` their share of the offered
    requests (rejected ones miss), ``ttft_attainment`` / ``tpot_attainment``
    each limit alone; ``sla_violation_rate = 1 - slo_attainment`` and
    ``latency_*`` (= e2e) keep the static summary's names usable by sweeps.
    ``kv_utilization_mean`` is the time-average share of KV blocks in use
    over the makespan, averaged over replicas; ``gpu_utilization_mean`` the
    share of the makespan the replicas run steps.  An autoscaled run passes ``replica_seconds``, the
    replicas' provisioned seconds, which replaces ``makespan x num_replicas`` in both.
    """
    offered = int(arrival_s.size)
    done = status == STATUS_COMPLETED
    completed = int(done.sum())
    last_finish = float(np.max(arrival_s[done] + e2e_s[done])) if completed else 0.0
    first = float(arrival_s[0]) if offered else 0.0
    makespan = max(last_finish, float(arrival_s[-1]) if offered else 0.0) - first
    per_second = 1.0 / makespan if makespan > 0 else float("nan")
    ttft_ok = done & (ttft_s <= ttft_sla_s)
    tpot_ok = done & ((tpot_s <= tpot_sla_s) | np.isnan(tpot_s))
    both = ttft_ok & tpot_ok
    summary = {
        "offered": offered,
        "completed": completed,
        "rejected": offered - completed,
        "makespan_s": makespan,
        "throughput_rps": completed * per_second,
        "throughput_tokens_per_s": float(output_tokens[done].sum()) * per_second,
        "goodput_rps": int(both.sum()) * per_second,
        "slo_attainment": float(both.mean()) if offered else float("nan"),
        "ttft_attainment": float(ttft_ok.mean()) if offered else float("nan"),
        "tpot_attainment": float(tpot_ok.mean()) if offered else float("nan"),
    }
    summary["sla_violation_rate"] = 1.0 - summary["slo_attainment"]
    for name, values in (("ttft", ttft_s), ("tpot", tpot_s), ("e2e", e2e_s), ("queue", queue_s)):
        v = values[done]
        v = v[~np.isnan(v)]   # a fresh array: _nan_stats may partition it
        percentiles = CONTINUOUS_PERCENTILES + ((95,) if name == "e2e" else ())
        mean, pct, peak = _nan_stats(v, percentiles)
        summary[f"{name}_mean_s"] = mean
        for p, value in zip(percentiles, pct):
            summary[f"{name}_p{p}_s"] = value
        summary[f"{name}_max_s"] = peak
    for key in ("mean", "p50", "p95", "p99", "max"):
        summary[f"latency_{key}_s"] = summary[f"e2e_{key}_s"]
    summary["queue_delay_mean_s"] = summary["queue_mean_s"]
    summary["queue_delay_p99_s"] = summary["queue_p99_s"]
    horizon = makespan * num_replicas if replica_seconds is None else replica_seconds
    summary["kv_utilization_mean"] = float(np.sum(block_seconds)) / (kv_blocks * horizon) if horizon > 0 else float("nan")
    summary["gpu_utilization_mean"] = float(np.sum(busy_s)) / horizon if horizon > 0 else float("nan")
    summary["preemptions_total"] = int(preemptions.sum())
    summary["requests_preempted"] = int(np.count_nonzero(preemptions))
    return summary


# ------------------------------------------------------------------ autoscaled runs: replicas over time
PROVISIONED_PHASES = ("starting", "active", "draining")   # billed: from the start of a cold start to leaving


def replica_lives(events: pd.DataFrame, end_s: float) -> pd.DataFrame:
    """One row per life of a replica slot, from an autoscaled run's phase events (``time_s``, ``replica``,
    ``phase_from``, ``phase_to``; see :mod:`workbench.sim.autoscale`): ``provisioned_s`` (it left "off"),
    ``ready_s`` (it became active first; NaN if it never did: a cancelled cold start), ``drain_s`` (it last
    started draining; NaN if never), ``left_s`` (it went "off"; ``end_s`` if it was still there when the run
    ended, with ``at_end`` True) and ``seconds`` billed (``left_s - provisioned_s``)."""
    rows = []
    ordered = events.sort_values(["replica", "time_s"], kind="stable")
    for replica, group in ordered.groupby("replica", sort=True):
        life = None
        for t, before, after in zip(group["time_s"], group["phase_from"], group["phase_to"]):
            if before == "off":
                life = {"replica": int(replica), "provisioned_s": float(t), "ready_s": np.nan, "drain_s": np.nan,
                        "left_s": np.nan, "at_end": False}
            if life is None:
                raise ValueError(f"replica {replica}: a phase change from {before!r} at {t} s before it was started")
            if after == "active" and np.isnan(life["ready_s"]):
                life["ready_s"] = float(t)
            if after == "draining":
                life["drain_s"] = float(t)
            if after == "off":
                life["left_s"] = float(t)
                rows.append(life)
                life = None
        if life is not None:
            life["left_s"] = max(float(end_s), life["provisioned_s"])
            life["at_end"] = True
            rows.append(life)
    lives = pd.DataFrame(rows, columns=["replica", "provisioned_s", "ready_s", "drain_s", "left_s", "at_end"])
    lives["seconds"] = lives["left_s"] - lives["provisioned_s"]
    return lives


def seconds_per_interval(start_s, end_s, interval_s: float, horizon_s: float) -> np.ndarray:
    """How much of the spans ``[start_s[i], end_s[i])`` falls in each interval ``[j, j + 1) x interval_s`` up to
    ``horizon_s`` (the last interval may be shorter): e.g. the replica-seconds of each hour from the lives."""
    edges = np.r_[np.arange(0.0, horizon_s, interval_s), horizon_s] if horizon_s > 0 else np.zeros(1)
    start = np.clip(np.asarray(start_s, dtype=np.float64), 0.0, edges[-1])
    end = np.clip(np.asarray(end_s, dtype=np.float64), 0.0, edges[-1])
    # the covered length of [0, x) by all spans, at each edge: sum of min(x, end) - min(x, start)
    covered = np.array([np.sum(np.minimum(x, end) - np.minimum(x, start)) for x in edges])
    return np.diff(covered)


def count_at(times_s, events: pd.DataFrame, phases=PROVISIONED_PHASES) -> np.ndarray:
    """How many replicas are in one of ``phases`` at each time (after the changes at that instant)."""
    delta = (events["phase_to"].isin(phases).astype(int) - events["phase_from"].isin(phases).astype(int)).to_numpy()
    order = np.argsort(events["time_s"].to_numpy(), kind="stable")
    change_s = events["time_s"].to_numpy()[order]
    running = np.cumsum(delta[order])
    at = np.searchsorted(change_s, np.asarray(times_s, dtype=np.float64), side="right")
    return np.where(at > 0, running[np.maximum(at - 1, 0)], 0)


def attainment_per_interval(arrival_s, met, interval_s: float, num_intervals: int | None = None) -> pd.DataFrame:
    """Per interval of arrival time: requests arrived, those meeting the SLO and their share (NaN when none
    arrived)."""
    arrival_s = np.asarray(arrival_s, dtype=np.float64)
    index = (arrival_s // interval_s).astype(np.int64)
    n = int(index.max()) + 1 if index.size else 0
    n = max(n, num_intervals or 0)
    offered = np.bincount(index, minlength=n)
    meeting = np.bincount(index, weights=np.asarray(met, dtype=np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(offered > 0, meeting / np.maximum(offered, 1), np.nan)
    return pd.DataFrame({"interval": np.arange(n), "start_s": np.arange(n) * interval_s, "offered": offered,
                         "met_slo": meeting.astype(np.int64), "attainment": share})
