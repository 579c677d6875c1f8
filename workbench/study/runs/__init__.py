"""Running experiments: capacity search, checkpointed sweeps, the steps' plans, the placement search, the
scheduler comparison, the disaggregation and prefix-caching sweeps.  May read answers (step 3 runs at step 2's
best GPU count; a step ends by writing its answers), never the reverse: ``answers`` reads what runs wrote."""
