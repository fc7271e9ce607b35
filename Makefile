# The README's commands. On a CUDA machine: make demo TORCH="torch" (any CUDA build >= 2.4).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
SHARDS ?= shapes|00000...shapes|00003
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export SYNGROUND_HOME := $(CURDIR)
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test ui

$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The instance's SQLite storage is created here, by one process: runs started at once on a fresh
# instance would race to create it and could break it for good (README: "When something goes wrong").
setup: $(BIN)/dagster
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m synground_assets.ops.cli instance

# (a) Materialize the whole generation graph of the default recipe over four shards, then summarise.
demo: setup
	$(BIN)/dagster asset materialize -m synground_assets.definitions --select 'group:generation' \
		--partition-range '$(SHARDS)'
	$(BIN)/python -m synground_assets.ops.cli summary

# (b) The test suite.
test: setup
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml
