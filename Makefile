# Two commands do all set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

## run: start the gateway (an embedded redis-server when no Redis is configured or reachable)
run: $(STAMP)
	@if [ -z "$$REDIS_URL$$REDIS_HOST" ]; then scripts/system-deps.sh redis-server; fi
	$(BIN)/notify-gateway serve

## test: lint, type-check and run the whole test suite against real redis-server processes
test: $(STAMP)
	scripts/system-deps.sh redis-server chromium nginx haproxy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway clients bench
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: benchmark the gateway against the naive baseline (docs/benchmarks.md); BENCH_ARGS=--full
## adds 50k idle and 100k concurrent connections, BENCH_ARGS=--quick is the smoke-test size
bench: $(BENCH_STAMP)
	scripts/system-deps.sh redis-server
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
