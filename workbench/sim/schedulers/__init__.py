"""Scheduler registry.

A scheduler is a small class that turns a :class:`~workbench.sim.config.SimConfig`
into an :class:`EngineSpec`: how requests are grouped (bins), how big a batch
may be (fixed, fixed-and-full, or the SLA/memory controller), and which bin an
idle GPU serves next.  The compiled engine (:mod:`workbench.sim.static_engine`) implements
those mechanisms once; a new policy that combines them is one file here plus
one ``@register`` line, and sweeps name policies by string.

A scheduler also names its engine: ``engine = "static"`` (request-level
batches, :mod:`workbench.sim.static_engine`, configured by ``engine_spec``) or
``engine = "continuous"`` (iteration-level steps,
:mod:`workbench.sim.continuous_engine`, configured by ``continuous_spec``
returning a :class:`ContinuousSpec`), or ``engine = "disaggregated"`` (prefill and
decode instances on separate GPUs, :mod:`workbench.sim.disagg_engine`, configured by
the SimConfig's ``prefill_*``/``decode_*`` fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# batch-size rules understood by the engine
BATCH_UP_TO = 0        # take up to `fixed_batch` waiting requests
BATCH_EXACT = 1        # wait for exactly `fixed_batch` (partial only when the bin can never fill)
BATCH_DYNAMIC = 2      # min(b_mem, b_sla) from the per-bin controllers

# bin-selection policies understood by the engine
BIN_POLICIES = {"oldest": 0, "round_robin": 1, "longest_queue": 2}
FIRST_FORMED = 3       # Multi-Bin Batching's "first formed, first served"


@dataclass(frozen=True)
class EngineSpec:
    uses_bins: bool
    batch_rule: int
    bin_policy: int


@dataclass(frozen=True)
class ContinuousSpec:
    uses_bins: bool
    policy: int          # workbench.sim.continuous_engine.POLICY_*
    jumps: bool = True   # whether runs of identical decode steps may be simulated in one event


class Scheduler:
    """Base class: subclasses set ``name`` and implement :meth:`engine_spec` (static engine)
    or set ``engine = "continuous"`` and implement :meth:`continuous_spec`."""

    name: str = ""
    description: str = ""
    engine: str = "static"

    def engine_spec(self, cfg) -> EngineSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def continuous_spec(self, cfg) -> ContinuousSpec:  # pragma: no cover - abstract
        raise NotImplementedError


SCHEDULERS: dict[str, type[Scheduler]] = {}
# engine -> the method a scheduler of it must implement (the disaggregated engine reads the SimConfig's fields)
SPEC_METHODS = {"static": "engine_spec", "continuous": "continuous_spec", "disaggregated": None}


def register(name: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    # checked before anything is registered: a name that is not text would break every sorted list of names
    if not isinstance(name, str) or not name.strip():
        from workbench import checks

        raise checks.InvalidType(f"register: name must be a non-empty text, got {name!r}")

    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        from workbench import checks

        if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
            raise checks.InvalidType(f"register: {name} must be a Scheduler subclass (with engine_spec or "
                                     f"continuous_spec), got {cls!r}")
        checks.choice(cls.engine, f"register: {name}.engine", tuple(SPEC_METHODS))
        method = SPEC_METHODS[cls.engine]
        if method is not None and getattr(cls, method) is getattr(Scheduler, method):
            raise checks.InvalidType(f"register: {name} ({cls.__name__}) runs the {cls.engine} engine and must "
                                     f"implement {method}(self, cfg)")
        if name in SCHEDULERS:
            raise ValueError(f"scheduler {name!r} is already registered")
        cls.name = name
        SCHEDULERS[name] = cls
        return cls
    return wrap


def get_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(sorted(SCHEDULERS))}") from None


from workbench.sim.schedulers import static_fifo, dynamic_no_bins, multi_bin_dynamic, multi_bin_fixed  # noqa: E402,F401  (registration)
from workbench.sim.schedulers import continuous_fcfs, continuous_sla, continuous_multi_bin  # noqa: E402,F401
from workbench.sim.schedulers import disaggregated  # noqa: E402,F401
