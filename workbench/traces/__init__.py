"""Traces: what arrives at the service (loaders with caches, the synthetic BurstGPT-like trace)."""
