"""Running experiments: capacity search, checkpointed sweeps, the steps' plans, replications, results folders, the suite."""
