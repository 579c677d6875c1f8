"""A day of traffic: a provisioning plan per hour, and three ways to serve the day, simulated (``notebooks/autoscaling``).

The day is :func:`workbench.traces.synthetic.day_trace` (the synthetic BurstGPT-like requests over BurstGPT's
hour-of-day profile, optionally reshaped to another peak-to-trough ratio).  One deployment: replicas of
``model`` on ``tp`` GPUs of type ``gpu``, served as the fleet planner serves a colocated fleet
(:func:`workbench.study.runs.fleet.colocated_config`: vLLM V1, arrivals to the replica with the fewest
outstanding requests, the KV cache by vLLM's memory rule; step times measured where the workbench has them,
else the roofline), one SLA.

1. **The plan** (:func:`provisioning_plan`): for each hour, the cheapest fleet for the hour's highest arrival
   rate, on the hour's own requests (:func:`hour_sample`: the synthetic trace's timestamps have BurstGPT's
   1-s resolution, so its bursts, requests arriving in the same second, are larger in busier source days, and
   a fleet sized on other requests misjudges the hour).  ``planner="plan_fleet"`` asks :func:`wb.plan_fleet`
   (the fewest replicas that meet the SLA at that load, simulated, and their capacity);
   ``planner="capacity"`` searches :func:`workbench.capacity` replica count by replica count
   (:class:`CapacityCurve`) and takes the fewest whose capacity covers the rate.
2. **Three ways to serve the day**, each the whole day simulated (:func:`serve_day`): ``peak fleet`` (the plan's
   largest count all day), ``plan schedule`` (the ``schedule`` autoscaler following the plan, replicas started
   a cold start ahead of each hour) and ``reactive`` (the ``threshold`` autoscaler holding the arrival rate per
   replica at ``target_load`` of a replica's capacity, Knative's rps metric; or, with ``reactive_metric =
   "concurrency"``, the requests in the system per replica at that load, measured by simulation and Little's
   law).  Cold starts of ``cold_start_s`` are billed.
3. **Per hour** (:func:`hourly_table`): GPU-hours (replica-seconds in the hour, times the GPUs of a replica),
   dollars (at the GPU's price per hour) and the share of the hour's arrivals meeting the SLA, per strategy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.metrics import attainment_per_interval, count_at, seconds_per_interval
from workbench.study.store.folders import NotebookParams

log = logging.getLogger(__name__)

NOTEBOOK = "autoscaling"
OUTPUTS = ("autoscaling_plan.csv", "autoscaling_hourly.csv", "autoscaling_timeline.csv", "autoscaling_summary.csv",
           "autoscaling_day.png", "autoscaling_hourly.png", "autoscaling_findings.json")
STRATEGIES = ("peak fleet", "plan schedule", "reactive")
REACTIVE_METRICS = ("rps", "concurrency")
PLANNERS = ("plan_fleet", "capacity")
HOUR_S = 3600.0
DAY_S = 86_400.0
TIMELINE_STEP_S = 300.0   # the timeline's resolution (load and replicas every 5 minutes)
SAMPLE_WINDOW_S = 600.0   # an hour's own swings are removed over windows this long (hour_sample)


@dataclass(frozen=True)
class AutoscalingParams(NotebookParams):
    """The autoscaling notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs = NOTEBOOK, OUTPUTS

    num_requests: int = 1_000_000        # requests over the day
    peak_to_trough: float | None = None  # busiest hour's rate over the quietest's; None: BurstGPT's own (14.9)
    seed: int = 0
    model: str = "opt-13b"               # a catalogued model (or a config.json path)
    gpu: str = "a100-80gb"               # a catalogued GPU
    tp: int = 1                          # GPUs of one replica
    price_per_gpu_hour: float | None = None   # None: the catalogue's list price
    ttft_sla_s: float = 2.0
    tpot_sla_s: float = 0.1
    attainment: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    gpu_memory_utilization: float = 0.9
    planner: str = "plan_fleet"          # plan_fleet or capacity
    cold_start_s: float = 120.0
    autoscale_interval_s: float = 15.0
    scale_down_after_s: float = 300.0
    reactive_metric: str = "rps"         # what the reactive policy holds at its target: rps or concurrency
    target_load: float = 0.8             # its target: the metric's value at this share of a replica's capacity
    capacity_requests: int | None = None   # most requests of an hour the plan replays; None: all of them
    results_dir: str = "results/default"

    def __post_init__(self):
        from workbench.hardware.catalog import get_gpu, get_model_arch
        from workbench.study.runs import fleet

        object.__setattr__(self, "num_requests", checks.integer(self.num_requests, "num_requests", low=1_000,
                                                                high=10**9))
        object.__setattr__(self, "peak_to_trough", checks.number(
            self.peak_to_trough, "peak_to_trough", low=1, high=1e4, none=True,
            hint="the busiest hour's rate over the quietest hour's; None keeps BurstGPT's own (14.9)"))
        object.__setattr__(self, "seed", checks.integer(self.seed, "seed", low=0))
        arch = get_model_arch(self.model)
        if not str(self.model).endswith(".json"):
            object.__setattr__(self, "model", arch.name)
        object.__setattr__(self, "gpu", get_gpu(self.gpu).key)
        object.__setattr__(self, "tp", checks.integer(self.tp, "tp", low=1, high=64))
        object.__setattr__(self, "price_per_gpu_hour", checks.number(
            self.price_per_gpu_hour, "price_per_gpu_hour", low=0, low_open=True, none=True, unit="USD/h",
            sane_high=1000, sane_hint="a price per GPU-hour in dollars"))
        if self.price_per_gpu_hour is None and get_gpu(self.gpu).price_per_hour is None:
            raise ValueError(f"price_per_gpu_hour: the catalogue has no price for {self.gpu}; give one "
                             "(dollars per GPU-hour)")
        for name in ("ttft_sla_s", "tpot_sla_s", "cold_start_s", "autoscale_interval_s", "scale_down_after_s"):
            low_open = name in ("ttft_sla_s", "tpot_sla_s", "autoscale_interval_s")
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=low_open,
                                                         unit="s"))
        for name in ("attainment", "target_load", "gpu_memory_utilization"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=True, high=1,
                                                         what="a share in (0, 1]"))
        checks.choice(self.reactive_metric, "reactive_metric", REACTIVE_METRICS)
        checks.choice(self.planner, "planner", PLANNERS)
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=1))
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens: with chunked prefill (vLLM V1) it must be >= max_num_seqs, "
                             f"got {self.max_num_batched_tokens} < {self.max_num_seqs}")
        object.__setattr__(self, "capacity_requests", checks.integer(
            self.capacity_requests, "capacity_requests", low=500, high=10**9, none=True,
            hint="None replays each hour's requests in full (a shorter window, from an empty pool, misjudges a "
                 "load near what the replicas sustain)"))
        checks.path(self.results_dir, "results_dir", expected="a folder path")
        why = fleet.fits(self.settings(), self.gpu_spec(), self.tp)
        if why:
            raise ValueError(f"model/gpu/tp: {self.model} on {self.tp} x {self.gpu} does not fit: {why}")

    @property
    def gpus_per_replica(self) -> int:
        return self.tp

    @property
    def price(self) -> float:
        """Dollars per GPU-hour."""
        return self.gpu_spec().price_per_hour

    def gpu_spec(self):
        """The catalogued GPU, at ``price_per_gpu_hour`` when given."""
        from workbench.hardware.catalog import get_gpu

        return get_gpu(self.gpu, price_per_hour=self.price_per_gpu_hour)

    def settings(self):
        """What the fleet planner shares with this study: the model, the SLA, vLLM V1's settings."""
        from workbench.study.runs import fleet

        return fleet.FleetSettings(model=self.model, ttft_s=self.ttft_sla_s, tpot_s=self.tpot_sla_s,
                                   attainment=self.attainment, max_gpus=fleet.MAX_GPUS,
                                   max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                                   gpu_memory_utilization=self.gpu_memory_utilization)

    def step_model(self):
        """The replicas' step times: measured where the workbench has a profile of that model, GPU and TP, else
        the roofline (as the fleet planner chooses)."""
        from workbench.study.runs import fleet

        return fleet.step_model(self.settings(), self.gpu_spec(), self.tp, "colocated")[0]

    def step_source(self) -> str:
        from workbench.study.runs import fleet

        return fleet.step_model(self.settings(), self.gpu_spec(), self.tp, "colocated")[1]

    def config(self, num_gpus: int = 1, **changes):
        """The serving setup every strategy shares, the fleet planner's colocated fleet (``changes``: its
        autoscaler)."""
        from workbench.study.runs import fleet

        return fleet.colocated_config(self.settings(), self.gpu_spec(), self.tp, num_gpus).replace(**changes)

    def trace(self):
        from workbench.traces.synthetic import day_trace

        return day_trace(self.num_requests, seed=self.seed, peak_to_trough=self.peak_to_trough)

    def profile(self):
        from workbench.traces.synthetic import daily_profile

        return daily_profile(self.num_requests / DAY_S, peak_to_trough=self.peak_to_trough)

    def setup_text(self, trace) -> str:
        profile = self.profile()
        hourly = profile.mean_rates(HOUR_S)
        return (f"Trace *{trace.label}*: {len(trace):,} requests over a day, {profile.mean_rate_rps:.2f} requests/s "
                f"on average, its busiest hour {hourly.max() / hourly.min():.3g} times its quietest. Replicas: "
                f"{self.model} on {self.tp} x {self.gpu} at ${self.price:.2f} per GPU-hour, {self.step_source()} "
                f"step times (`{self.step_model().name}`), vLLM V1 (chunked prefill, up to {self.max_num_seqs} "
                f"requests and {self.max_num_batched_tokens:,} tokens a step), arrivals to the replica with the "
                f"fewest outstanding requests. SLA: TTFT <= {self.ttft_sla_s:g} s and TPOT <= "
                f"{self.tpot_sla_s * 1e3:g} ms for {self.attainment:.0%} of the requests. Plan: "
                f"{'wb.plan_fleet' if self.planner == 'plan_fleet' else 'wb.capacity'} per hour. Cold start "
                f"{self.cold_start_s:g} s (billed); control every {self.autoscale_interval_s:g} s.")


# ---------------------------------------------------------------------------------------------- the load
def hourly_load(trace, profile) -> pd.DataFrame:
    """Per hour of the day: requests that arrive in it, their mean rate, and the profile's highest rate in it
    (scaled to the trace's requests)."""
    counts = np.bincount(np.minimum(trace.arrival_s // HOUR_S, 23).astype(np.int64), minlength=24)
    scaled = profile.with_total(len(trace))
    return pd.DataFrame({"hour": np.arange(24), "requests": counts, "mean_rps": counts / HOUR_S,
                         "peak_rps": scaled.peak_rates(HOUR_S)[:24]})


def hour_sample(trace, hour: int, params: AutoscalingParams):
    """The requests arriving in ``hour`` (all of them, or its first ``capacity_requests``), at a constant rate:
    their own swings over 10-minute windows removed, their burstiness and sizes kept.  What the plan for that
    hour replays, faster or slower.  A whole hour, because a shorter window starting from an empty pool
    misjudges a load close to what the replicas sustain: on the default day, 22 minutes of the busiest hour
    passed 10 replicas that, held at that load for the afternoon, fell behind for good (0% of the requests in
    time by 15h); the whole hour asks for 11, which keep the SLA all day."""
    from workbench.traces.rate_profile import RateProfile, replay_over_profile
    from workbench.traces.trace import Trace

    index = np.flatnonzero((trace.arrival_s >= hour * HOUR_S) & (trace.arrival_s < (hour + 1) * HOUR_S))
    index = index[:params.capacity_requests] if params.capacity_requests else index
    if index.size < 2:
        raise ValueError(f"hour {hour}: {index.size} request(s) arrive in it, too few to plan for; raise "
                         "num_requests")
    requests = Trace.from_arrays(trace.arrival_s[index], trace.prompt_tokens[index], trace.output_tokens[index],
                                 source=f"hour {hour}", synthetic=trace.is_synthetic)
    return replay_over_profile(requests, RateProfile.constant(1.0, float(index.size), "constant rate"),
                               source_window_s=SAMPLE_WINDOW_S)


class CapacityCurve:
    """Capacity at the SLA of ``n`` replicas on ``sample`` (requests/s), searched once per ``n``
    (:func:`workbench.capacity`, criterion ``slo``); 0 where no load meets the SLA."""

    def __init__(self, params: AutoscalingParams, sample, step=None):
        self.params = params
        self.sample = sample
        self.step = step if step is not None else params.step_model()
        self._found: dict[int, float] = {}

    def __call__(self, n: int) -> float:
        """Raises :class:`~workbench.study.runs.capacity.CeilingError` when no load meets the SLA on any number of
        replicas (the requests alone miss it)."""
        from workbench.study.runs.capacity import CapacityError, CeilingError, capacity

        if n not in self._found:
            per_replica = self.per_replica()
            try:
                found = capacity(self.sample, self.params.config(num_gpus=n), criterion="slo",
                                 attainment=self.params.attainment, latency=self.step,
                                 hint_rps=per_replica * n if per_replica else None)
                self._found[n] = found.capacity_rps
            except CeilingError:   # the requests alone miss it: no count of replicas helps
                raise
            except CapacityError as exc:   # no load meets the SLA on n replicas
                log.info("%d replica(s): %s", n, exc)
                self._found[n] = 0.0
        return self._found[n]

    def per_replica(self) -> float | None:
        """The best capacity per replica found so far (None before any)."""
        return max((c / k for k, c in self._found.items() if c > 0), default=None)


def cheapest_replicas(rate_rps: float, curve: CapacityCurve, per_replica_guess: float | None = None,
                      limit: int = 100_000) -> int:
    """The fewest replicas whose capacity covers ``rate_rps`` (``planner="capacity"``).  Starts at the rate over
    a replica's capacity (``per_replica_guess``, e.g. from the previous hour) and steps to the smallest count
    that passes while one fewer does not."""
    guess = curve.per_replica() or per_replica_guess
    n = max(1, math.ceil(rate_rps / guess)) if guess else 1
    while curve(n) < rate_rps:
        if n >= limit:
            raise ValueError(f"no pool of up to {limit:,} replicas serves {rate_rps:.3g} requests/s within the SLA")
        n += 1
    while n > 1 and curve(n - 1) >= rate_rps:
        n -= 1
    return n


def fleet_for_hour(sample, rate_rps: float, params: AutoscalingParams, step, guess: float | None) -> dict:
    """The plan of one hour: the cheapest fleet of the deployment for ``rate_rps`` on the hour's requests
    (``replicas``, ``capacity_rps``, ``slo_attainment`` at the rate when the planner simulated it)."""
    if params.planner == "plan_fleet":
        from workbench.study.runs.fleet import MAX_GPUS, plan_fleet

        plan = plan_fleet(sample, model=params.model, gpus=(params.gpu_spec(),), ttft_s=params.ttft_sla_s,
                          tpot_s=params.tpot_sla_s, attainment=params.attainment, topologies=("colocated",),
                          tp=(params.tp,), max_gpus=MAX_GPUS, rate_rps=rate_rps, headroom=True,
                          max_num_seqs=params.max_num_seqs, max_num_batched_tokens=params.max_num_batched_tokens,
                          gpu_memory_utilization=params.gpu_memory_utilization)
        if plan.cheapest is None:
            raise ValueError(f"no fleet serves the hour: {plan.verdict}")
        best = plan.cheapest
        return {"replicas": int(best["replicas"]), "capacity_rps": float(best["capacity_rps"]),
                "slo_attainment_at_peak": float(best["slo_attainment"]), "per_replica": None}
    curve = CapacityCurve(params, sample, step)
    n = cheapest_replicas(rate_rps, curve, guess)
    return {"replicas": n, "capacity_rps": curve(n), "slo_attainment_at_peak": math.nan,
            "per_replica": curve.per_replica()}


def provisioning_plan(trace, load: pd.DataFrame, params: AutoscalingParams) -> tuple[pd.DataFrame, dict]:
    """Per hour: the cheapest fleet for the hour's highest rate on the hour's own requests
    (:func:`fleet_for_hour`: replicas, their capacity, the headroom).  Returns the plan and each hour's sample."""
    step = params.step_model()
    samples, rows, guess = {}, [], None
    for hour, rate in zip(load.hour, load.peak_rps):
        samples[int(hour)] = hour_sample(trace, int(hour), params)
        try:
            found = fleet_for_hour(samples[int(hour)], float(rate), params, step, guess)
        except ValueError as exc:
            raise ValueError(f"hour {int(hour)} ({float(rate):.3g} requests/s at its busiest, planner="
                             f"{params.planner!r}): {exc}") from exc
        guess = found.pop("per_replica") or guess
        rows.append(found)
    plan = pd.concat([load.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    plan["gpus"] = plan.replicas * params.gpus_per_replica
    plan["dollars_per_hour"] = plan.gpus * params.price
    return plan.assign(headroom=plan.capacity_rps / plan.peak_rps - 1), samples


def reactive_target(params: AutoscalingParams, sample, replicas: int, capacity_rps: float) -> dict:
    """The reactive policy's target when ``replicas`` serve ``target_load`` of their capacity (``capacity_rps``)
    on ``sample`` (the busiest hour's requests): the arrival rate per replica (``rps``), or the requests in the
    system per replica (``concurrency``: waiting + running), from a simulation at that load (Little's law:
    rate x mean end-to-end time / replicas)."""
    from workbench.sim.simulate import simulate

    rate = params.target_load * capacity_rps
    res = simulate(sample.time_scaled(rate / sample.mean_rate_rps), params.config(num_gpus=replicas),
                   latency=params.step_model())
    s = res.summary
    concurrency = s["offered_rps"] * s["e2e_mean_s"] / replicas
    target = rate / replicas if params.reactive_metric == "rps" else concurrency
    return {"metric": params.reactive_metric, "target": target, "replicas": replicas, "rate_rps": rate,
            "concurrency_per_replica": concurrency, "e2e_mean_s": s["e2e_mean_s"],
            "slo_attainment": s["slo_attainment"]}


# ---------------------------------------------------------------------------------------------- the day
def strategy_configs(params: AutoscalingParams, plan: pd.DataFrame, target: dict) -> dict:
    """The three pools: the peak fleet (fixed), the plan's schedule, reactive target tracking (its ceiling: twice
    the plan's peak, a quota it never needs to hit)."""
    peak = int(plan.replicas.max())
    first = int(plan.replicas.iloc[0])
    common = dict(cold_start_s=params.cold_start_s, autoscale_interval_s=params.autoscale_interval_s,
                  autoscale_until_s=DAY_S)   # the pool recorded (and billed) to the end of the day
    return {
        "peak fleet": params.config(num_gpus=peak),
        "plan schedule": params.config(num_gpus=first, autoscaler="schedule",
                                       replica_schedule=tuple(int(n) for n in plan.replicas), **common),
        "reactive": params.config(num_gpus=first, autoscaler="threshold", autoscale_metric=target["metric"],
                                  autoscale_target=target["target"], max_replicas=2 * peak,
                                  scale_down_after_s=params.scale_down_after_s, **common),
    }


def serve_day(trace, configs: dict, step) -> dict:
    """Each strategy's simulation of the whole day."""
    from workbench.sim.simulate import simulate

    out = {}
    for name, cfg in configs.items():
        out[name] = simulate(trace, cfg, latency=step, step_log=0)
        log.info("%s: %s", name, {k: out[name].summary.get(k) for k in ("slo_attainment", "replica_hours",
                                                                        "sim_wall_s")})
    return out


def _replica_spans(res) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every replica's provisioned time: the lives of an autoscaled run, the whole day for a
    fixed pool."""
    if res.autoscaling is not None:
        lives = res.replica_lives
        return lives.provisioned_s.to_numpy(), lives.left_s.to_numpy()
    n = res.config.num_gpus
    return np.zeros(n), np.full(n, DAY_S)


def hourly_table(runs: dict, params: AutoscalingParams, load: pd.DataFrame) -> pd.DataFrame:
    """One row per strategy and hour: requests, replica-hours and GPU-hours billed in the hour (the day's 24 hours;
    a tail of requests finishing after midnight is not billed), dollars, mean replicas, SLO attainment."""
    rows = []
    for name, res in runs.items():
        start, end = _replica_spans(res)
        seconds = seconds_per_interval(start, end, HOUR_S, DAY_S)
        met = res.requests.met_sla.to_numpy()
        per_hour = attainment_per_interval(np.minimum(res.arrival_s, DAY_S - 1e-9), met, HOUR_S, num_intervals=24)
        gpu_hours = seconds * params.gpus_per_replica / HOUR_S
        rows.append(pd.DataFrame({
            "strategy": name, "hour": np.arange(24), "requests": per_hour.offered.to_numpy(),
            "mean_rps": load.mean_rps.to_numpy(), "replicas_mean": seconds / HOUR_S, "gpu_hours": gpu_hours,
            "cost_usd": gpu_hours * params.price, "met_slo": per_hour.met_slo.to_numpy(),
            "slo_attainment": per_hour.attainment.to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def timeline(runs: dict, trace, step_s: float = TIMELINE_STEP_S) -> pd.DataFrame:
    """Every ``step_s`` of the day: the arrival rate over the step, and each strategy's replicas provisioned
    (starting, active or draining) and active at its end."""
    edges = np.arange(0.0, DAY_S + step_s, step_s)
    counts = np.histogram(trace.arrival_s, bins=edges)[0]
    frame = pd.DataFrame({"time_s": edges[1:], "arrival_rps": counts / step_s})
    for name, res in runs.items():
        column = name.replace(" ", "_")
        if res.autoscaling is None:
            frame[f"{column}_provisioned"] = frame[f"{column}_active"] = res.config.num_gpus
        else:
            frame[f"{column}_provisioned"] = count_at(frame.time_s, res.replica_events)
            frame[f"{column}_active"] = count_at(frame.time_s, res.replica_events, ("active",))
    return frame


def summary_table(hourly: pd.DataFrame, runs: dict, params: AutoscalingParams) -> pd.DataFrame:
    """One row per strategy over the day: GPU-hours, dollars, SLO attainment, hours under the attainment target,
    replicas (mean, max), cold starts, and the share of the peak fleet's GPU-hours and dollars."""
    rows = []
    for name in runs:
        h = hourly[hourly.strategy == name]
        s = runs[name].summary
        rows.append({"strategy": name, "gpu_hours": h.gpu_hours.sum(), "cost_usd": h.cost_usd.sum(),
                     "slo_attainment": h.met_slo.sum() / max(h.requests.sum(), 1),
                     "hours_below_target": int((h.slo_attainment < params.attainment).sum()),
                     "replicas_mean": h.replicas_mean.mean(), "replicas_max": int(s.get("replicas_max",
                                                                                        runs[name].config.num_gpus)),
                     "cold_starts": int(s.get("cold_starts", 0)), "sim_wall_s": s["sim_wall_s"]})
    table = pd.DataFrame(rows)
    peak = table.set_index("strategy").loc["peak fleet"]
    return table.assign(share_of_peak_cost=table.cost_usd / peak.cost_usd)
