"""The control loop of an autoscaled run: the continuous engine stopped at every control instant, a policy
asked for a replica count, the count applied (rule 16 of :mod:`workbench.sim.continuous_engine`).

At each instant ``t = k x autoscale_interval_s`` (k = 1, 2, ...), before the events at ``t``:

1. the engine has run every event before ``t`` (:func:`~workbench.sim.continuous_engine._event_loop` with
   ``t_stop = t``), including cold starts that ended and drained replicas that left;
2. :func:`~workbench.sim.continuous_engine.observe` reads the pool into an
   :class:`~workbench.sim.autoscaling.Observation`, and the policy returns the count it wants;
3. the count is bounded to ``[min_replicas, max_replicas]`` and, for a stabilised policy, held by Kubernetes'
   scale-down stabilisation (``horizontal.go::stabilizeRecommendationWithBehaviors`` with the default
   behaviour: a rise is taken at once; a fall only to the highest count recommended over the last
   ``scale_down_after_s``, and never above the current count);
4. :func:`~workbench.sim.continuous_engine.resize` applies it.

The run ends when every request has joined and none is left on any replica, and not before
``autoscale_until_s`` (the pool is then recorded, and billed, to that time).  Records: one row per control
instant (:data:`CONTROL_COLUMNS`) and one per phase change of a replica (:data:`EVENT_COLUMNS`: time, replica
slot, phase before and after), from which the replicas' lives, the replica-seconds (billed from start to
leaving) and the counts over time follow (:func:`workbench.sim.metrics.replica_lives`).
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from workbench.sim import continuous_engine as ceng
from workbench.sim.autoscaling import Observation, get_autoscaler, metric_total

log = logging.getLogger(__name__)

PHASE_NAMES = {ceng.PH_ACTIVE: "active", ceng.PH_STARTING: "starting", ceng.PH_DRAINING: "draining",
               ceng.PH_OFF: "off"}
CONTROL_COLUMNS = ("time_s", "desired", "target", "replicas", "active", "starting", "draining", "outstanding",
                   "waiting", "kv_used_fraction", "busy_fraction", "arrival_rps", "metric_per_replica")
EVENT_COLUMNS = ("time_s", "replica", "phase_from", "phase_to")


class Stabilizer:
    """The HPA's scale-down stabilisation: the recommendations of the last ``window_s`` seconds; a count
    falls only to the highest of them (a rise is taken at once)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        # the recommendations that can still be the window's highest: counts falling from front to back
        self._recent: deque[tuple[float, int]] = deque()

    def target(self, t_s: float, recommended: int, current: int) -> int:
        while self._recent and self._recent[-1][1] <= recommended:
            self._recent.pop()
        self._recent.append((t_s, recommended))
        while self._recent[0][0] < t_s - self.window_s:
            self._recent.popleft()
        if recommended >= current:
            return recommended
        return min(current, self._recent[0][1])


def run_autoscaled(cfg, engine_args: tuple) -> tuple:
    """Run the continuous engine under ``cfg``'s autoscaler.  ``engine_args``: the arguments of
    :func:`~workbench.sim.continuous_engine.run_continuous`, in its order (``num_replicas`` is taken from
    ``cfg``: ``max_replicas`` slots, ``num_gpus`` active at time 0).  Returns what ``run_continuous`` returns,
    then the records: (control rows as a dict of arrays, phase events as a dict of arrays, end of the run)."""
    (join_order, join_s, prompt, output, bin_id, n_bins, _, router, policy_code, jumps, chunked, caching,
     max_num_seqs, max_tokens, max_paddings, watermark, block_size, kv_blocks, coef, b_min, b_max, budget, eps,
     alpha, delta, window, theta, margin, path_off, path_node, node_first, node_blocks, path_blocks, log_capacity,
     tf, ti, full_isl, lockstep) = engine_args
    slots = cfg.max_replicas_effective
    (ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key, fin_id, win_t, win_b, cn, own, lru, lm,
     ev_key, ev_id, ev_pos, log_f, log_i, act, lp, lpf) = ceng.allocate(
        join_s, prompt, output, bin_id, n_bins, slots, cfg.num_gpus, router, policy_code, jumps, chunked, caching,
        max_num_seqs, max_tokens, max_paddings, watermark, block_size, kv_blocks, coef, b_min, b_max, budget, eps,
        alpha, delta, window, theta, margin, node_first.size, log_capacity, ti, full_isl, lockstep)
    autoscaler = get_autoscaler(cfg.autoscaler)
    policy = autoscaler(cfg)
    stabilizer = Stabilizer(cfg.scale_down_after_s) if autoscaler.stabilized else None
    interval = cfg.autoscale_interval_s
    m = join_order.size
    control = {name: [] for name in CONTROL_COLUMNS}
    events = {name: [] for name in EVENT_COLUMNS}
    phases = rs[:, ceng.RS_PHASE].copy()
    for g in np.flatnonzero(phases == ceng.PH_ACTIVE):
        _event(events, 0.0, g, ceng.PH_OFF, ceng.PH_ACTIVE)
    obs = np.zeros(ceng.OB_N)
    arrived = 0.0
    error = 0
    k = 1
    while True:
        t = k * interval
        n_log, error = ceng._event_loop(join_order, join_s, ci, cf, rin, rq, tq, ctx0, hpos, rs, rf, qs, hist, fin_key,
                                        fin_id, win_t, win_b, path_off, path_node, node_first, node_blocks,
                                        path_blocks, cn, own, lru, lm, ev_key, ev_id, ev_pos, log_f, log_i, tf, ti,
                                        act, lp, lpf, t)
        _changes_in_loop(events, phases, rs, rf)
        done = lp[ceng.LP_PTR] >= m and not rs[:, ceng.RS_OUTSTANDING].any()
        if error or (done and t >= cfg.autoscale_until_s):
            break
        ceng.observe(t, rs, rf, lp, obs)
        active = int(obs[ceng.OB_ACTIVE])
        seen = Observation(
            time_s=t, interval_s=interval, replicas=active + int(obs[ceng.OB_STARTING]), active=active,
            starting=int(obs[ceng.OB_STARTING]), draining=int(obs[ceng.OB_DRAINING]),
            outstanding=float(obs[ceng.OB_OUTSTANDING]), waiting=float(obs[ceng.OB_WAITING]),
            kv_used_fraction=float(obs[ceng.OB_KV_USED]) / (active * kv_blocks),
            busy_fraction=min(1.0, float(obs[ceng.OB_BUSY_S]) / (active * interval)),
            arrival_rps=(obs[ceng.OB_ARRIVED] - arrived) / interval)
        arrived = obs[ceng.OB_ARRIVED]
        desired = int(policy.desired(seen))
        target = min(max(desired, cfg.min_replicas), slots)
        if stabilizer is not None:
            target = stabilizer.target(t, target, seen.replicas)
        *_, error = ceng.resize(target, t, cfg.cold_start_s, ci, rs, rf, act, lp, ev_key, ev_id, ev_pos, cn, own,
                                lru, lm)
        _changes_at(events, phases, rs, t)
        starting = int(np.count_nonzero(phases == ceng.PH_STARTING))
        now_active = int(np.count_nonzero(phases == ceng.PH_ACTIVE))
        for name, value in (("time_s", t), ("desired", desired), ("target", target),
                            ("replicas", now_active + starting), ("active", now_active), ("starting", starting),
                            ("draining", int(np.count_nonzero(phases == ceng.PH_DRAINING))),
                            ("outstanding", seen.outstanding), ("waiting", seen.waiting),
                            ("kv_used_fraction", seen.kv_used_fraction), ("busy_fraction", seen.busy_fraction),
                            ("arrival_rps", seen.arrival_rps),
                            ("metric_per_replica", metric_total(seen, cfg.autoscale_metric) / active)):
            control[name].append(value)
        if error:
            break
        k += 1
    error = ceng.unfinished_error(rq, error)
    end_s = max(float(lpf[0]), cfg.autoscale_until_s)   # the last event, or the end of the period recorded
    n_log = int(lp[ceng.LP_N_LOG])
    log.debug("autoscaled run (%s): %d control instants, %d phase changes, ends at %.1f s", cfg.autoscaler,
              len(control["time_s"]), len(events["time_s"]), end_s)
    records = ({name: np.asarray(values, dtype=np.float64) for name, values in control.items()},
               {name: np.asarray(values) for name, values in events.items()}, end_s)
    return (rq, tq, rf[:, ceng.RF_BUSY].copy(), rf[:, ceng.RF_BLOCK_S].copy(), rs[:, ceng.RS_STEPS].copy(),
            log_f[:n_log], log_i[:n_log], error, *records)


def _event(events: dict, t_s: float, g: int, before: int, after: int) -> None:
    events["time_s"].append(float(t_s))
    events["replica"].append(int(g))
    events["phase_from"].append(PHASE_NAMES[before])
    events["phase_to"].append(PHASE_NAMES[after])


def _changes_in_loop(events: dict, phases: np.ndarray, rs: np.ndarray, rf: np.ndarray) -> None:
    """Record what the event loop changed since the last look: cold starts that ended (at their ready time) and
    drained replicas that left (at their leaving time); nothing else changes a phase there."""
    now = rs[:, ceng.RS_PHASE]
    for g in np.flatnonzero(now != phases):
        before, after = int(phases[g]), int(now[g])
        t_s = rf[g, ceng.RF_READY] if after == ceng.PH_ACTIVE else rf[g, ceng.RF_LEFT]
        _event(events, t_s, g, before, after)
        phases[g] = after


def _changes_at(events: dict, phases: np.ndarray, rs: np.ndarray, t_s: float) -> None:
    """Record what a resize at ``t_s`` changed (a cancelled start or an empty replica's drain shows as its
    leaving: starting -> off, active -> off through draining)."""
    now = rs[:, ceng.RS_PHASE]
    for g in np.flatnonzero(now != phases):
        before, after = int(phases[g]), int(now[g])
        if before == ceng.PH_ACTIVE and after == ceng.PH_OFF:   # drained with nothing to finish: left at once
            _event(events, t_s, g, before, ceng.PH_DRAINING)
            before = ceng.PH_DRAINING
        _event(events, t_s, g, before, after)
        phases[g] = after
