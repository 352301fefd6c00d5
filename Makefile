# The two commands: `make serve` and `make test`. Each sets itself up on a fresh machine.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
CONFIG ?= serve/config.yaml
# pip warns about every local index folder it skips; keep the output readable.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help serve test test-all bench fuzz models clean

help:
	@echo "make serve   start the server with the shipped models on http://127.0.0.1:8000"
	@echo "make test    install everything and run the test suite"
	@echo "make models  retrain and re-export the shipped default models"
	@echo "make fuzz    fuzz every parser of client bytes, FUZZ_SECONDS (600) each; findings in fuzz/out/"

$(PY):
	python3 -m venv $(VENV)

# Serving needs no torch: a separate stamp keeps `make serve` fast on a fresh machine.
$(VENV)/.serve-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[serve]" $(QUIET_PIP)
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[serve,train,test,loadtest]" $(QUIET_PIP)
	touch $@ $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(PY) -m serve --config $(CONFIG)

test: $(VENV)/.dev-installed
	$(PY) -m pytest

test-all: $(VENV)/.dev-installed
	$(PY) -m pytest -m "slow or not slow"

# The shipped default models, rebuilt from scratch (about 5 minutes on 2 cores).
DIGIT_MODELS := seresnet20_digits:seresnet20 resnext20_digits:resnext20_4x8d
models: $(VENV)/.dev-installed
	for pair in $(DIGIT_MODELS); do \
	  name=$${pair%%:*}; arch=$${pair##*:}; \
	  $(PY) -m resfam train $$arch --dataset digits --epochs 30 --seed 0 --out runs/$$name; \
	  $(PY) -m resfam export $$arch --checkpoint runs/$$name/best.pt --name $$name --version 1 --out models --force; \
	done

bench: $(VENV)/.dev-installed
	$(PY) -m pytest -m bench -s

# Coverage-guided fuzzing (fuzz/README.md): one target after another at the lowest CPU priority.
FUZZ_SECONDS ?= 600
fuzz: $(VENV)/.dev-installed
	nice -n 19 $(PY) fuzz/run.py --seconds $(FUZZ_SECONDS) --out fuzz/out

clean:
	rm -rf $(VENV) .pytest_cache runs
