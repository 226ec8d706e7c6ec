# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin

export PATH := $(BIN):$(PATH)
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MVT_DATA_DIR ?= $(CURDIR)/data
export MVT_DUCKDB_PATH ?= $(MVT_DATA_DIR)/warehouse/mvt.duckdb
export MVT_REPORTS_DIR ?= $(MVT_DATA_DIR)/reports

# Sample data of the demo (override: make demo USERS=50000 DAYS=14)
USERS ?= 20000
DAYS ?= 7
SEED ?= 42
START ?= 2026-11-10

.PHONY: install install-spark setup demo test test-faults test-spark ui clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo ">> creating $(VENV) with $(PYTHON) and installing mvt_pipeline[dev]"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# dbt-spark and pyspark, for MVT_WAREHOUSE=spark and its tests (Java 17 must be installed)
install-spark: $(VENV)/.installed-spark

$(VENV)/.installed-spark: $(VENV)/.installed
	@echo ">> installing mvt_pipeline[spark] (dbt-spark, pyspark)"
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $@

# DAGSTER_HOME (telemetry off, one warehouse writer at a time) and the dbt manifest.
setup: install
	$(BIN)/mvt setup

demo: setup
	$(BIN)/mvt demo --users $(USERS) --days $(DAYS) --seed $(SEED) --start-date $(START)

test: setup
	@$(BIN)/python -m pytest -q --durations=15; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi; \
	exit $$status

test-faults: setup
	$(BIN)/python -m pytest -q -m faults_full mvt_pipeline_tests/test_faults.py

# The dbt models on Spark equal to DuckDB's, and a Dagster night on Spark (a skipped test fails here).
test-spark: install-spark setup
	MVT_REQUIRE_SPARK=1 $(BIN)/python -m pytest -q -m spark mvt_pipeline_tests/test_spark.py

ui: setup
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data/raw data/lake data/warehouse data/reports data/truth.json dbt/target dbt/logs $(DAGSTER_HOME)
