"""The study layer: what runs the experiments, stores their rows, answers the questions and shows them.

Folders, bottom to top:

* :mod:`workbench.study.store`: results storage: atomic writes, the folder lock, one parameter set per
  folder (``folders``), checkpoints of one row per test (``checkpoints``: reading, merging, which rows the
  current simulator code computed), replication summaries over rows (``replications``);
* :mod:`workbench.study.present`: how things are shown: one colour per scheduler (``palette``), tables for
  reading (``tables``), shared sentences and the notebooks' titles (``text``), a figure's ending and its PNG
  (``figures``), what a notebook prints (``console``);
* :mod:`workbench.study.answers`: what the rows say, read from the results folder and never computed by
  running anything: ``analysis.json``, the step figures and tables, the comparison's ranking, ``index.html``,
  the column dictionary, the prefix-caching and disaggregation studies' tables and figures;
* :mod:`workbench.study.fidelity`: the engines against measured runs and queueing theory (calibration, the
  fidelity reports, validation), which run the simulator and present what they find;
* :mod:`workbench.study.runs`: running experiments: capacity search, checkpointed sweeps, the steps' plans,
  the placement search, the comparison, prefix-caching, disaggregation and hardware sweeps (the hardware
  study reads the roofline's validated errors from ``fidelity``).  A plan may read an
  earlier answer (step 3 runs at step 2's best GPU count) and a step ends by writing its answers, so
  ``runs`` sits above ``answers``; ``answers`` never imports ``runs``: it reads what they wrote;
* :mod:`workbench.study.orchestrate` (the suite) and :mod:`workbench.study.explore` (the live explorer, which
  runs and draws at once) on top, with the command line (``workbench.__main__``) and the package's API.

What each may import (besides itself); ``tests/test_layers.py`` parses every module's imports and fails on
any other (the same table, as data)::

    layer          may import
    store          foundation
    present        foundation, scenario, store
    answers        foundation, scenario, store, present
    fidelity       foundation, scenario, simulator, store, present
    runs           foundation, scenario, simulator, store, present, answers, fidelity
    top            everything

where *foundation* is ``workbench.checks`` and ``workbench.paths``; *scenario* is what a run is and what its
records mean: ``sim.config`` (the frozen ``SimConfig``), the registries by name (``sim.routers``,
``sim.schedulers``, ``sim.predictors``), the memory presets (``sim.memory``) and the metrics over a run's
records (``sim.metrics``), the model and GPU catalogues (``hardware.catalog``), which import only the foundation and each other (a scheduler's module also names
the engine code it runs as); *simulator* is the rest of ``workbench.sim`` (engines, step-time models,
``simulate()``, the step-by-step replays), ``workbench.traces`` and ``workbench.hardware`` (the model and GPU
catalogues and the roofline step-time model).
"""
