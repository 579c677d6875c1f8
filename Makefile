# Two commands a user needs: `make run` (set up + run the experiment suite) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# one pytest worker per core (pytest-xdist), a test handed to whichever worker is free
PYTEST_ARGS ?= -n auto --dist worksteal

.PHONY: setup run test bench lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
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

lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) data/cache
