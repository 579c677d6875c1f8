"""What the rows say: ``analysis.json``, the step figures and tables, the scheduler ranking, ``index.html``, the
column dictionary, the disaggregation and prefix-caching studies' tables and figures.  Reads the results
folder through ``store``; runs nothing (the sweeps are ``runs``')."""
