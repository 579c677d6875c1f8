"""``schedule``: a replica count per period from a provisioning plan, started a cold start ahead."""

from __future__ import annotations

import math

from workbench.sim.autoscaling import Autoscaler, Observation, register


@register("schedule")
class Schedule(Autoscaler):
    """Follows ``replica_schedule``: entry ``i`` is the replica count for ``[i, i + 1) x schedule_interval_s``
    (the last entry holds after the schedule ends), e.g. the count per hour of a provisioning plan.  It asks
    for the larger of this period's count and the count of the period ``cold_start_s`` ahead, so replicas
    started for the next period are ready when it begins, and it drops to the new period's count at its
    start.  Not stabilised (a plan is not a noisy signal)."""

    stabilized = False

    @classmethod
    def check(cls, cfg) -> None:
        if not cfg.replica_schedule:
            raise ValueError("replica_schedule: the schedule autoscaler needs the replica count of each period of "
                             "schedule_interval_s, e.g. (4, 4, 6, 8) for four hours; it is empty")

    @classmethod
    def default_max_replicas(cls, cfg) -> int | None:
        return max(max(cfg.replica_schedule), cfg.num_gpus)

    def count_at(self, t_s: float) -> int:
        schedule = self.cfg.replica_schedule
        period = math.floor(t_s / self.cfg.schedule_interval_s)
        return schedule[min(max(period, 0), len(schedule) - 1)]

    def desired(self, obs: Observation) -> int:
        return max(self.count_at(obs.time_s), self.count_at(obs.time_s + self.cfg.cold_start_s))
