# rnnkit: set-up-included commands for a fresh machine (Python 3.11 and gcc are all it needs).
#
#   make demo    create .venv, install rnnkit[plots,fast,tensorboard], train a char-level LSTM on
#                tinyshakespeare (~3 min), sample, plot
#   make demo-adding  the adding problem: which cells learn 100-step dependencies
#   make test    create .venv, install rnnkit[test] (every extra + the test tools), run the suite on 2 workers,
#                the docstrings' examples, then the fused float32 comparisons as an AVX2 CPU would run them
#   make test-portable  the backend-parity tests under every CPU setting this machine can imitate
#   make test-slow  the few tests that take over a minute (not part of make test)
#   make bench   run the cell benchmarks, the bfloat16 section, the step latency and the two-core rows (after make demo or make test)
#   make clean   remove .venv, build outputs and runs/
#
# torch is installed first and pinned, from the local wheel that pip's config points at
# (/opt/wheels); rnnkit is then installed without build isolation, so pip never resolves
# torch itself (it would fetch a CUDA build). Stamp files make repeated runs skip set-up.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0

STAMP_BASE := $(VENV)/.stamp-base
STAMP_TEST := $(VENV)/.stamp-test
STAMP_BENCH := $(VENV)/.stamp-bench

.PHONY: demo demo-adding test test-portable test-slow bench clean

DEMO_RUN := runs/demo-charlm

# The char-LM demo: train (the packaged recipe src/rnnkit/recipes/charlm-demo.toml), then two samples, the validation
# curve and the loss-curve PNG; the checkpoint stays in $(DEMO_RUN)/checkpoints.
demo: $(STAMP_BASE)
	rm -rf $(DEMO_RUN)
	$(PY) -m rnnkit train charlm --config charlm-demo --out $(DEMO_RUN)
	@echo; echo "=== sample, temperature 0.5 ==="
	@$(PY) -m rnnkit generate --checkpoint $(DEMO_RUN) --prime "ROMEO:" --temperature 0.5 --length 500 --seed 1
	@echo; echo "=== sample, temperature 1.0 ==="
	@$(PY) -m rnnkit generate --checkpoint $(DEMO_RUN) --prime "ROMEO:" --temperature 1.0 --length 500 --seed 1
	@echo; echo "=== validation curve (val_bpc = bits per character) ==="
	@$(PY) -m rnnkit plot $(DEMO_RUN)

demo-adding: $(STAMP_BASE)
	$(PY) -m rnnkit experiment adding

test: $(STAMP_TEST)
	$(PY) -m pytest -n 2 -m "not slow" tests/
	$(PY) -m pytest --doctest-modules src/rnnkit
	$(PY) tests/portable_matrix.py --quick

# ISA x threads rows (tests/portable_matrix.py): torch, oneDNN, MKL and rnnkit's kernels as on other CPUs
test-portable: $(STAMP_TEST)
	$(PY) tests/portable_matrix.py

# the few tests over a minute on 2 cores (a cold inductor compile, a real SARIMA fit)
test-slow: $(STAMP_TEST)
	$(PY) -m pytest -m slow tests/

bench: $(STAMP_BENCH)
	@if [ -f benchmarks/bench_cells.py ]; then \
		$(PY) benchmarks/bench_cells.py && $(PY) benchmarks/bench_bf16.py && $(PY) benchmarks/bench_latency.py && \
		$(PY) benchmarks/bench_threads.py; \
	else \
		echo "make bench: benchmarks/bench_cells.py does not exist yet; nothing to run." >&2; exit 1; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_BASE): pyproject.toml | $(VENV)/bin/python
	$(PIP) install "setuptools>=68" wheel
	$(PIP) install "$(TORCH)"
	$(PIP) install --no-build-isolation -e ".[plots,fast,tensorboard]"  # core, demo PNG, kernel build, event files
	touch $@

# the benchmark's optional peer (the sru package; torch is already pinned, so pip keeps it)
$(STAMP_BENCH): $(STAMP_BASE) pyproject.toml
	$(PIP) install --no-build-isolation -e ".[bench]"
	touch $@

$(STAMP_TEST): $(STAMP_BASE) pyproject.toml
	$(PIP) install --no-build-isolation -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info runs .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
