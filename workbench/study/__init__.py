"""The study layer: capacity search, checkpointed sweeps, the stress-test steps, analysis, plots, the suite."""
