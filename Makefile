# Two commands: `make run` (the main job) and `make test` (the suite).
# Each builds .venv on first use: the CPU PyTorch wheel goes in first, so pip
# never resolves a CUDA build, then the project (editable) with its dev extra.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mbgen-installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mbgen run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/mbgen bench $(ARGS)

clean:
	rm -rf runs .pytest_cache
