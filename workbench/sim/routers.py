"""Request routers by name: the registry a scenario's ``router``, ``prefill_router`` and ``decode_router`` are
checked against (:class:`~workbench.sim.config.SimConfig`), and the integer code each engine branches on.

* ``round_robin``: each replica (instance) in turn;
* ``least_outstanding``: the fewest routed and unfinished requests, lowest index on a tie;
* ``least_kv``: the fewest KV blocks in use plus waiting (continuous engine);
* ``prefix_affinity``: the replica caching the longest prefix of the prompt, within a load margin (continuous
  engine, with prefix caching).

The rules themselves are the engines' (:mod:`workbench.sim.continuous_engine`, :mod:`workbench.sim.disagg_engine`
and its replay :mod:`workbench.sim.disagg_steplog`); this module only names them, so the scenario takes its
registries from here, not from an engine or a test replay.
"""

from __future__ import annotations

ROUND_ROBIN, LEAST_OUTSTANDING, LEAST_KV, PREFIX_AFFINITY = 0, 1, 2, 3

# the continuous (colocated) engine's routers
ROUTERS = {"round_robin": ROUND_ROBIN, "least_outstanding": LEAST_OUTSTANDING, "least_kv": LEAST_KV,
           "prefix_affinity": PREFIX_AFFINITY}
# the disaggregated engine routes arrivals to prefill instances and prefilled requests to decode instances by load
# alone (an instance holds no prefix cache to be affine to)
DISAGG_ROUTERS = {name: ROUTERS[name] for name in ("round_robin", "least_outstanding")}

__all__ = ["DISAGG_ROUTERS", "LEAST_KV", "LEAST_OUTSTANDING", "PREFIX_AFFINITY", "ROUND_ROBIN", "ROUTERS"]
