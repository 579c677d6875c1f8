"""The study layer, by what a reader comes for.

* :mod:`workbench.study.runs`: running experiments (capacity search, sweeps, the steps, replications, folders, suite);
* :mod:`workbench.study.answers`: answers, tables and figures (analysis, comparison, plots, index.html, columns);
* :mod:`workbench.study.fidelity`: calibration and the reports against measured runs and queueing theory;
* :mod:`workbench.study.explore`: the live explorer for JupyterLab.
"""
