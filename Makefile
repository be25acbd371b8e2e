# astra-stac: `make demo` serves the API with demo scenes; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= .astra

.PHONY: demo test lint install system-deps bench load clean

$(BIN)/astra-stac: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "astra-stac needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: system-deps $(BIN)/astra-stac

system-deps:
	@PYTHON=$(PYTHON) scripts/install-system-deps.sh

demo: install
	$(BIN)/astra-stac serve --demo --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_items.py

# Load and soak (~15 minutes): the mix of scene details, search, assets and tiles at 64
# connections against `astra-stac serve` on 100,000 scenes; see benchmarks/bench_load.py.
load: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_load.py

clean:
	rm -rf $(VENV) $(DATA_DIR) *.egg-info
