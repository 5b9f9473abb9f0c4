# Two commands for a fresh machine: `make demo` (main job on MNIST-1D) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-all bench venv clean

$(VENV)/.installed-%: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed-test
	$(PY) experiments/demo.py

test: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Each script writes results/bench/<name>.json; report.py regenerates README's Benchmarks section.
bench: $(VENV)/.installed-bench
	$(PY) bench/batch_acquisition.py
	$(PY) bench/gmm_fit.py
	$(PY) bench/mc_dropout_scoring.py
	$(PY) bench/mnist1d_generation.py
	$(PY) bench/sn_overhead.py
	$(PY) bench/train_throughput.py
	$(PY) bench/report.py --readme README.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
