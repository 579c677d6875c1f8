"""Simulation: the scenario (config), the compiled engines, schedulers, latency models and metrics."""

from workbench.sim import jit_cache

jit_cache.install()   # before any engine module is imported: numba caches compiled code per machine, not per clone
