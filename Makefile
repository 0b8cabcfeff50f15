# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
DEMO_PASSWORD ?= demo-password
PYTEST_ARGS ?=

.PHONY: run test serve lint format demo migrate clean

# A stamp per extra, so the install reruns only when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

migrate: $(VENV)/.installed
	$(BIN)/lims db upgrade

demo: migrate
	$(BIN)/lims demo --password "$(DEMO_PASSWORD)"

## Set up everything and serve the app with SQLite on http://127.0.0.1:5000
run: demo
	@echo "Log in at http://$(HOST):$(PORT) as admin, tech.rh, manager.rh or researcher.auh, password: $(DEMO_PASSWORD)"
	$(BIN)/lims run --host $(HOST) --port $(PORT)

## Install with the test extra and run the whole suite
test: $(VENV)/.installed-test
	$(BIN)/ruff check lims tests migrations/env.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Production: the same app under gunicorn (configure with LIMS_CONFIG)
serve: migrate
	$(BIN)/lims serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check lims tests migrations/env.py
	$(BIN)/ruff format --check lims tests migrations/env.py

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix lims tests migrations/env.py
	$(BIN)/ruff format lims tests migrations/env.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
