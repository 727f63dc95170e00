# recpipe - `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
DATA ?= ../shared/datasets/ml-latest-small

.DEFAULT_GOAL := help
.PHONY: help venv test test-unit test-integration test-e2e test-infra test-training-container lint typecheck validate build demo bench evaluate deploy clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml dev/pyproject.toml layers/recpipe/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./dev -e '.[dev,train]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the package, dev and training extras

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check layers dev functions tests
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint ## lint, type check, unit, integration, infra and e2e tests
	$(BIN)/pytest tests -q -p no:cacheprovider --ignore=tests/training_container

test-training-container: $(STAMP) ## the SageMaker training job in the image's Python and packages (cached in .cache/)
	$(BIN)/pytest tests/training_container -q -s -p no:cacheprovider

test-unit: $(STAMP) ## unit tests only (no network)
	$(BIN)/pytest tests/unit -q

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

test-e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

test-infra: $(STAMP)
	$(BIN)/pytest tests/infra -q

validate: $(STAMP) ## sam validate --lint (offline)
	$(BIN)/sam validate --lint --template template.yaml

build: $(STAMP) ## sam build (zip packages, no container)
	$(BIN)/sam build --template template.yaml

demo: $(STAMP) ## the whole pipeline on the local stack (ARGS=--once to run the scenario and exit)
	$(BIN)/recpipe demo $(ARGS)

bench: $(STAMP) ## serving, stream and retrain benchmarks (JSON under bench/results)
	mkdir -p bench/results
	$(BIN)/recpipe bench serving --candidates 100,500,1000 --requests 2000 --json bench/results/serving.json
	$(BIN)/recpipe bench stream --events 20000 --json bench/results/stream.json
	$(BIN)/recpipe bench retrain --json bench/results/retrain.json

evaluate: $(STAMP) ## offline evaluation on MovieLens (DATA=dir)
	$(BIN)/recpipe evaluate --data movielens:$(DATA) --protocol stream --k 10 --json bench/results/eval-stream.json
	$(BIN)/recpipe evaluate --data movielens:$(DATA) --protocol random --k 10 --json bench/results/eval-random.json

deploy: build ## sam deploy (CONFIG_ENV=dev|prod)
	$(BIN)/sam deploy --config-env $${CONFIG_ENV:-dev}

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
