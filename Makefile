# Two entry points for a fresh machine: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench

install: $(VENV)/.installed

# torch comes first, pinned to the build this machine keeps on disk, so pip never fetches a CUDA wheel.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The demo is a study: synthetic data -> family -> merge search -> selection on val -> table with intervals.
demo: install
	PATH=$(abspath $(BIN)):$$PATH OMP_NUM_THREADS=1 $(BIN)/python -m study run studies/demo.yml

test: install
	$(BIN)/ruff check .
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -p no:cacheprovider

bench: install
	$(BIN)/python -m benchmarks.merge_speed --quick
