# make quickstart : set up everything (venv, offline data) and run the quickstart sweep (main job)
# make test       : set up everything and run the tests (TensorFlow backend, then JAX for backend-agnostic parts)
# make test-long  : the longest end-to-end checks, left out of make test
# make reproduce  : every claim of the paper at CPU scale (flags/claims/, one worker per core, resumable) -> docs/findings.md
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-tf test-jax test-long bench reproduce

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

quickstart: setup
	$(BIN)/mk-sweep --flagfile=flags/quickstart.flags

test: setup test-tf test-jax

# Two pytest workers (pytest-xdist; a test file stays on one worker): most of a test's time is single-threaded
# tracing and model building, so two processes use both cores.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile

test-tf: setup
	KERAS_BACKEND=tensorflow $(PYTEST) -m "not long"

test-jax: setup
	KERAS_BACKEND=jax $(PYTEST) -m "backend_agnostic and not long"

# the longest end-to-end checks (pairing over every treatment, resume in both epochs), both backends
test-long: setup
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q -m long
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "backend_agnostic and long"

reproduce: setup
	BIN=$(BIN) bash scripts/reproduce.sh

bench: setup
	$(BIN)/python benchmarks/input_pipeline.py
