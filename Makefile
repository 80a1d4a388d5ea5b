# make demo: create the environment, fine-tune a tiny model on the bundled clips, synthesise from that run.
# make test: the test suite (CPU only, a few minutes).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install demo test
install: $(VENV)/.installed

demo: install
	run=$$($(BIN)/python -m finetune model=f5tts_tiny data=demo train=demo optim=demo vocoder=griffinlim | tail -n 1); \
	echo "$$run"; \
	$(BIN)/python -m infer run=$${run#run: }

test: install
	$(BIN)/python -m pytest -n 2 tests
