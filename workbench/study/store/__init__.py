"""Results storage: atomic writes and the folder lock (``files``), one parameter set per folder (``folders``),
checkpoints of one row per test (``checkpoints``), replication summaries over rows (``replications``).
Imports only ``workbench.checks`` and ``workbench.paths``: everything else in the study reads and writes
through it."""
