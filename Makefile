# make demo: create the environment, fine-tune a tiny model on the bundled clips, synthesise from that run.
# make test: the test suite (CPU only, a few minutes).
# make bench: the benchmarks, against upstream f5-tts where it has a side (about 40 minutes on 2 cores; not part of CI).
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

.PHONY: install demo test bench app
install: $(VENV)/.installed

demo: install
	run=$$($(BIN)/python -m finetune model=f5tts_tiny experiment=demo | tail -n 1); \
	echo "$$run"; \
	$(BIN)/python -m infer run=$${run#run: }

test: install
	@[ -x /usr/bin/chromium ] || echo "note: the web app's browser tests are skipped: no /usr/bin/chromium (install it: sudo apt-get install chromium)"
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10 tests

# make app [ARGS="runs=runs data_root=data port=7860"]: the web app on http://127.0.0.1:7860/
app: install
	$(BIN)/python -m finetune.app $(ARGS)

bench: install
	$(BIN)/python bench/train_throughput.py 2
	$(BIN)/python bench/infer_cold_start.py 2
	$(BIN)/python bench/load_memory.py
	$(BIN)/python bench/preflight.py
	$(BIN)/python bench/prepare_speed.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/lora.py
	$(BIN)/python bench/validation_cost.py f5tts_tiny,f5tts_small 8 2
	$(BIN)/python bench/slice_speed.py 10 3
	$(BIN)/python bench/kill_trials.py 20
