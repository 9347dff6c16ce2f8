# `make demo` and `make test` each create or refresh .venv, install the project, and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clusters lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# Real sshd, SLURM and Grid Engine daemons for the batch launchers' integration tests
# (scripts/clusters/README.md): installed and started here, ~25 s cold, ~3 s when up.
clusters:
	bash scripts/clusters/up.sh

test: $(STAMP) clusters
	$(VENV)/bin/ruff check src tests benchmarks examples datasets
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/allpairs_vectors.py
	$(PY) benchmarks/allpairs_executable.py
	$(PY) benchmarks/h5_memory.py
	$(PY) benchmarks/classify_digits.py
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
