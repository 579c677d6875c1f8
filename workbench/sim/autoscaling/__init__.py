"""Autoscaling policies, registered by name like the schedulers (:mod:`workbench.sim.schedulers`).

A policy is a small class that, at every control instant of an autoscaled run (every
``SimConfig.autoscale_interval_s`` of simulated time), reads an :class:`Observation` of the pool and returns
the number of replicas it wants (active + starting).  Everything else is the engine's and its control loop's
(:mod:`workbench.sim.autoscale`, rule 16 of :mod:`workbench.sim.continuous_engine`), the same for every
policy: the bounds ``[min_replicas, max_replicas]``, the scale-down stabilisation of Kubernetes' HPA (a
stabilised policy's count only falls to the highest count it asked for over the last ``scale_down_after_s``),
cold starts of ``cold_start_s``, draining before removal, and the records.  A new policy is one file here and
one ``@register`` line; ``SimConfig(autoscaler="name")`` runs it.

Policies run in Python, not compiled: the engine stops at each control instant (5,760 of them in a day at
15 s), which costs far less than the events in between, and a policy needs no recompilation of the engine.

This package is part of the scenario (it imports only :mod:`workbench.checks`): ``SimConfig`` checks the
autoscaler's name and settings against it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from workbench import checks


class Observation(NamedTuple):
    """What a policy sees at a control instant (metrics over the *active* replicas, as a vLLM server exports
    them: ``vllm:num_requests_running``/``waiting``, ``vllm:gpu_cache_usage_perc``, sampled at that instant)."""

    time_s: float
    interval_s: float          # time since the previous control instant
    replicas: int              # active + starting: what the policy sets
    active: int
    starting: int
    draining: int
    outstanding: float         # requests routed to the active replicas and not finished (waiting + running)
    waiting: float             # of them, not yet admitted to a running batch
    kv_used_fraction: float    # KV blocks in use over the active replicas' blocks (as of their last step)
    busy_fraction: float       # share of the interval the active replicas spent running steps
    arrival_rps: float         # requests that joined per second over the interval


# The per-replica metrics a target-tracking policy may hold at a target: the total over the active replicas.
METRICS: dict[str, tuple[Callable[[Observation], float], str]] = {
    "concurrency": (lambda o: o.outstanding,
                    "requests in the system per replica, waiting + running (Knative's concurrency target; vLLM's "
                    "num_requests_running + num_requests_waiting)"),
    "waiting": (lambda o: o.waiting, "requests waiting to be admitted per replica (vLLM's num_requests_waiting; "
                                     "a queue-length target)"),
    "kv": (lambda o: o.kv_used_fraction * o.active, "share of the KV cache in use (vLLM's gpu_cache_usage_perc), "
                                                    "a utilisation in (0, 1]"),
    "busy": (lambda o: o.busy_fraction * o.active, "share of the time running steps (a GPU-busy utilisation in "
                                                   "(0, 1]; it saturates with a single running request)"),
    "rps": (lambda o: o.arrival_rps, "requests arriving per second per replica (Knative's rps metric): the load "
                                     "against what a replica sustains, which, unlike concurrency, does not grow "
                                     "with the queue when the pool falls behind"),
}
SHARE_METRICS = ("kv", "busy")


def metric_total(obs: Observation, metric: str) -> float:
    """The metric summed over the active replicas (its mean per replica times their number)."""
    return METRICS[metric][0](obs)


class Autoscaler:
    """Base class: subclasses set ``name`` (by :func:`register`) and implement :meth:`desired`.

    ``stabilized``: whether the HPA's scale-down stabilisation applies to it (a measured signal is noisy; a
    plan is not).  ``check(cfg)`` refuses settings the policy cannot use (called by ``SimConfig``), and
    ``default_max_replicas(cfg)`` is the pool's size when ``max_replicas`` is None (None: it must be given)."""

    name: str = ""
    stabilized: bool = True

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check(cls, cfg) -> None:
        """Refuse settings this policy cannot use (a ``ValueError`` naming the field)."""

    @classmethod
    def default_max_replicas(cls, cfg) -> int | None:
        return None

    def desired(self, obs: Observation) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


AUTOSCALERS: dict[str, type[Autoscaler]] = {}


def register(name: str) -> Callable[[type[Autoscaler]], type[Autoscaler]]:
    if not isinstance(name, str) or not name.strip():
        raise checks.InvalidType(f"register: name must be a non-empty text, got {name!r}")

    def wrap(cls: type[Autoscaler]) -> type[Autoscaler]:
        if not (isinstance(cls, type) and issubclass(cls, Autoscaler)):
            raise checks.InvalidType(f"register: {name} must be an Autoscaler subclass, got {cls!r}")
        if cls.desired is Autoscaler.desired:
            raise checks.InvalidType(f"register: {name} ({cls.__name__}) must implement desired(self, obs)")
        if name in AUTOSCALERS:
            raise ValueError(f"autoscaler {name!r} is already registered")
        cls.name = name
        AUTOSCALERS[name] = cls
        return cls
    return wrap


def get_autoscaler(name: str) -> type[Autoscaler]:
    return AUTOSCALERS[checks.choice(name, "autoscaler", sorted(AUTOSCALERS))]


def ceil_replicas(value: float) -> int:
    """``ceil`` that forgives float noise just above a whole number (8.000000001 replicas is 8)."""
    return int(math.ceil(value - 1e-9))


from workbench.sim.autoscaling import threshold, schedule  # noqa: E402,F401  (registration)

__all__ = ["AUTOSCALERS", "METRICS", "Autoscaler", "Observation", "ceil_replicas", "get_autoscaler", "metric_total",
           "register"]
