# The two commands a newcomer runs: `make train` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup train test lint format quality quality-lstm quality-unet quality-rawnet2 quality-puzzle bench clean

setup: $(STAMP)

# Reinstall only when the dependency spec changes: a second `make test` installs nothing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,sweep,cluster]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Real training of each landed family's default recipe, printed beside its baselines. Not part of `make test`.
# One family: `make quality-unet ARGS="experiment=unet_full"` (ARGS are that family's Hydra overrides).
quality: quality-lstm quality-unet quality-rawnet2 quality-puzzle

quality-lstm: $(STAMP)
	$(BIN)/python scripts/quality_lstm.py $(ARGS)

quality-unet: $(STAMP)
	$(BIN)/python scripts/quality_unet.py $(ARGS)

quality-rawnet2: $(STAMP)
	$(BIN)/python scripts/quality_rawnet2.py $(ARGS)

quality-puzzle: $(STAMP)
	$(BIN)/python scripts/quality_puzzle_cnn.py $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
