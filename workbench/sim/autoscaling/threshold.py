"""``threshold``: reactive target tracking, Kubernetes' Horizontal Pod Autoscaler on a serving metric."""

from __future__ import annotations

from collections import deque

from workbench.sim.autoscaling import Autoscaler, Observation, ceil_replicas, metric_total, register


@register("threshold")
class Threshold(Autoscaler):
    """Reactive: holds ``autoscale_metric`` near ``autoscale_target`` per replica.  The metric's total over the
    active replicas, averaged over the samples of the last ``autoscale_window_s`` (Knative's stable window),
    is divided by the target: ``desired = ceil(total / target)``, the HPA's ``ceil(current x metric /
    target)`` (``replica_calculator.go``); within the tolerance band (``|metric / target - 1| <=
    autoscale_tolerance``, the HPA's 0.1) the count is kept.  Scale-down is stabilised by the control loop."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._samples: deque[tuple[float, float]] = deque()
        self._sum = 0.0   # of the samples in the window (kept as they come and go)

    @classmethod
    def default_max_replicas(cls, cfg) -> int | None:
        return None   # a reactive policy needs its ceiling (a GPU quota) stated

    def desired(self, obs: Observation) -> int:
        cfg = self.cfg
        value = metric_total(obs, cfg.autoscale_metric)
        self._samples.append((obs.time_s, value))
        self._sum += value
        while len(self._samples) > 1 and self._samples[0][0] <= obs.time_s - cfg.autoscale_window_s:
            self._sum -= self._samples.popleft()[1]
        if len(self._samples) == 1:
            self._sum = value   # no rounding carried over from samples that left
        total = self._sum / len(self._samples)
        if obs.active > 0 and abs(total / obs.active / cfg.autoscale_target - 1.0) <= cfg.autoscale_tolerance:
            return obs.replicas
        return ceil_replicas(total / cfg.autoscale_target)
