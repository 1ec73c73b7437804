# Two commands do everything on a fresh machine (see README.md):
#   make demo   -- build .venv, then run the whole workflow on the embedded demo data
#   make test   -- build .venv, then run the test suite
# torch==2.13.0 is installed first so that nothing pulls a CUDA build of torch.

PYTHON ?= python3
VENV ?= .venv
OUT ?= speciesvi_demo_output
BIN := $(VENV)/bin
STAMP := $(VENV)/.speciesvi-installed

.PHONY: demo test lint docs venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,doc]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m speciesvi.demo --output $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_layout.py

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build docs/generated $(OUT)
