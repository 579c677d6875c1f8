# Two commands a user needs: `make run` (set up + run the experiment suite) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# exact versions of every package (transitive ones too): installs take them as pip constraints; `make lock` refreshes
LOCK   := requirements/lock.txt
PIP_INSTALL := $(PY) -m pip install --quiet -c $(LOCK)
# one pytest worker per core (pytest-xdist), a test handed to whichever worker is free
PYTEST_ARGS ?= -n auto --dist worksteal

.PHONY: setup run test bench lab lock clean

# a changed pyproject.toml or lock reinstalls (packages whose version the lock changed are replaced)
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m workbench suite $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_simulator.py
	$(PY) benchmarks/bench_continuous.py
	$(PY) benchmarks/bench_prefix_caching.py
	$(PY) benchmarks/bench_disagg.py
	$(PY) benchmarks/bench_roofline.py
	$(PY) benchmarks/bench_autoscaling.py

# JupyterLab on notebooks/: each notebook listed once (the .ipynb; its paired .py is hidden, jupytext keeps it
# in sync on save), --allow-root when run as root (containers), and flags passed through:
# make lab ARGS="--no-browser --port 8890"
LAB_FLAGS := --ContentsManager.hide_globs='["__pycache__", "*.pyc", "*.py", ".ipynb_checkpoints"]'
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

lab: $(STAMP)
	$(PIP_INSTALL) -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_FLAGS) $(ROOT_FLAG) $(ARGS)

# Refresh the lock: a fresh venv in a temporary folder, an unpinned install of pyproject.toml's dependencies (dev and
# lab extras too), `pip freeze --all` into $(LOCK), environment.yml's pins rewritten; then `make test`, and commit both.
lock:
	$(PYTHON) requirements/refresh_lock.py

clean:
	rm -rf $(VENV) data/cache
