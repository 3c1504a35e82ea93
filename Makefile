# Two entry points (see README.md):
#   make book   set up .venv and build the HTML book into _build/html (executes every chapter)
#   make test   set up .venv, lint, build the book beside nbval over every chapter, then the unit
#               and browser tests on every core (JOBS=1 runs them in one process)
#   make gpu-check-prepare, then make gpu-check on a GPU machine (README.md, Run on a GPU)
#   make lint   ruff check and ruff format --check (configured in pyproject.toml)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on machines that have it on disk; override for another build,
# e.g. `make book TORCH=torch` for the newest one.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# pytest-xdist workers for the unit and browser tests: one per core.
JOBS ?= auto

.PHONY: setup lint format browser book nbval test unit sync gpu-check-prepare gpu-check clean

LINTED := fslearn tests benchmarks conftest.py

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

# Debian's Chromium for the browser test; where it cannot be installed the test
# says why and skips (it fails instead under CI=true).
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will be skipped"; \
	else echo "warning: no chromium and no root apt-get; the browser test will be skipped"; fi

book: setup
	$(BIN)/jupyter-book build . --all -W -n --keep-going

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# Format the code in place (what `make lint` checks).
format: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

# The book build and nbval each execute every chapter on one thread, so they run side by side
# (their output is printed whole, one after the other); then the unit tests and the browser
# test, which reads the built book, share the cores.
test: setup lint browser
	$(MAKE) --no-print-directory -j2 --output-sync=target book nbval
	$(BIN)/python -m pytest tests -n $(JOBS)

# Every chapter, cell by cell, under nbval.
nbval: setup
	$(BIN)/python -m pytest chapters

unit: setup
	$(BIN)/python -m pytest tests -m "not browser" -n $(JOBS)

# Regenerate the paired .ipynb files after editing a chapter's .md.
sync: setup
	$(BIN)/jupytext --sync chapters/*.md

# The chapters as scripts for `make gpu-check`, which has no jupytext: bring build/gpu-check along.
gpu-check-prepare: setup
	$(BIN)/python benchmarks/gpu_check.py prepare --scripts build/gpu-check

# On a GPU machine with torch, pytest, numpy, matplotlib, tqdm and Pillow (no .venv, no
# network): tests, chapters and benchmarks on CUDA, recorded where chapters 7 and 8 read it.
# GPU_CHECK_ARGS= runs the chapters' full budgets; --compile adds torch.compile to the timing.
GPU_CHECK_ARGS ?= --short
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py run --device cuda $(GPU_CHECK_ARGS) \
	  --scripts build/gpu-check --out fslearn/results/gpu_validation.json

clean:
	rm -rf _build
