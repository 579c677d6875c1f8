"""On top of the study: the suite (``suite``: the notebooks in order through papermill, their sweeps run first,
``index.html`` at the end), which may import every layer below it."""
