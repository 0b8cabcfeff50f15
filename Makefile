# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
DEMO_PASSWORD ?= demo-password
PYTEST_ARGS ?=
# make bench (benchmarks/README.md): the data sets, generated when missing, and the run's size.
BENCH_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/bench
BENCH_SQLITE ?= instance/bench.sqlite
BENCH_ALIQUOTS ?= 1000000
BENCH_REPEAT ?= 200
BENCH_RESULTS ?= benchmarks/RESULTS.md
BENCH_ARGS ?=
LOAD_ARGS ?=

.PHONY: run test serve lint format demo migrate clean bench bench-load

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

## Every operation of issue 9 against a bare-SQL baseline, on PostgreSQL and SQLite; writes RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py --database-url "$(BENCH_PG_URL)" --generate-if-missing \
		--aliquots $(BENCH_ALIQUOTS) --repeat $(BENCH_REPEAT) --write --results "$(BENCH_RESULTS)" $(BENCH_ARGS)
	$(BIN)/python benchmarks/run.py --database-url "sqlite:///$(abspath $(BENCH_SQLITE))" --generate-if-missing \
		--aliquots $(BENCH_ALIQUOTS) --repeat $(BENCH_REPEAT) --write --results "$(BENCH_RESULTS)" $(BENCH_ARGS)

## 50 simulated users under gunicorn on each data set of make bench (on a scratch copy); writes RESULTS.md
bench-load: $(VENV)/.installed
	$(BIN)/python benchmarks/load.py --database-url "$(BENCH_PG_URL)" --users 50 --seconds 60 \
		--workers 3 --think 0,2 --scratch-copy --write $(LOAD_ARGS)
	$(BIN)/python benchmarks/load.py --database-url "sqlite:///$(abspath $(BENCH_SQLITE))" --users 50 \
		--seconds 60 --workers 3 --think 0,2 --scratch-copy --write $(LOAD_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check lims tests migrations/env.py
	$(BIN)/ruff format --check lims tests migrations/env.py

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix lims tests migrations/env.py
	$(BIN)/ruff format lims tests migrations/env.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
