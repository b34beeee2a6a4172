# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Every Python package they install is pinned, with its hashes, in uv.lock; uv itself is pinned
# in requirements/uv.txt. See docs/dependencies.md.
VENV ?= .venv
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
BIN := $(VENV)/bin

# uv: the project's virtualenv, the machine's interpreter, never a downloaded one.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

.PHONY: run test lint lock lock-check bench clean

$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes --no-deps -r requirements/uv.txt
	touch $(UV)

## lock-check: fail when uv.lock no longer matches pyproject.toml (either way round)
lock-check: $(UV)
	$(UV) lock --check

## run: start the gateway (an embedded redis-server when no Redis is configured or reachable)
run: $(UV)
	$(UV) sync --locked --inexact --no-default-groups
	@if [ -z "$$REDIS_URL$$REDIS_HOST$$REDIS_SENTINELS" ]; then scripts/system-deps.sh redis-server; fi
	$(BIN)/notify-gateway serve

## test: lint, type-check and run the whole test suite against real redis-server processes
test: lock-check
	$(UV) sync --locked --group test
	scripts/system-deps.sh redis-server chromium nginx haproxy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway clients/python/notify_wire clients/python/notify_publisher bench
	$(BIN)/python -m pytest

## bench: benchmark the gateway against the naive baseline (docs/benchmarks.md); BENCH_ARGS=--full
## adds 50k idle and 100k concurrent connections, BENCH_ARGS=--quick is the smoke-test size
bench: lock-check
	$(UV) sync --locked --group test --group bench
	scripts/system-deps.sh redis-server
	$(BIN)/python -m bench $(BENCH_ARGS)

## lock: re-resolve every dependency to the newest release pyproject.toml allows, then `make test`
lock: $(UV)
	$(UV) lock --upgrade

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
