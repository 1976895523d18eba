# The two commands of the README:
#   make demo   set everything up, start Kafka and Redis, run three workers on a batch of tasks
#   make test   set everything up and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint up down clean

setup: $(VENV)/.installed
	@bash scripts/install-system.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,notebook]"
	@touch $@

demo: setup
	$(BIN)/yadtq demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

up: setup
	$(BIN)/yadtq up

down:
	$(BIN)/yadtq down

clean:
	rm -rf $(VENV) build .pytest_cache
