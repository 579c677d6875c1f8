"""How things are shown: one colour per scheduler (``palette``), tables for reading (``tables``), shared
sentences and the notebooks' titles (``text``), a figure's ending and its PNG (``figures``), what a notebook
prints (``console``).  Below ``answers``, ``fidelity`` and ``runs``, which all show things."""
