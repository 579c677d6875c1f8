"""Simulation: the scenario (config), the compiled engines, schedulers, latency models and metrics."""
