# Fresh machine: `make demo` installs everything and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system system-test demo test clean

system:
	bash scripts/install-system.sh

system-test:
	bash scripts/install-system.sh test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[torch,text,hub,serve,scale,fast,dev]"
	touch $(STAMP)

install: system $(STAMP)

demo: install
	$(BIN)/curato demo

test: system-test $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) curato-demo .bench
