# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv from requirements.lock (hash-pinned) the first time.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo run test test-slow test-repeat lint fmt bench mutate

$(STAMP): requirements.lock
	$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "polyd needs Python >= 3.11"'
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## run the daemon live against the built-in venue simulator
	$(BIN)/python -m orchestrator --demo $(ARGS)

run: $(STAMP)  ## run the daemon with the settings in the environment / .env
	$(BIN)/python -m orchestrator $(ARGS)

# Two workers share the tests (a file with a module-scoped fixture stays on one: xdist_group).
# The suite mostly waits on sockets and subprocesses, so two workers halve it on two cores.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)  ## the whole default test suite
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup) $(ARGS)

test-slow: $(STAMP)  ## soak and long fuzz runs
	$(BIN)/python -m pytest -m slow $(ARGS)

test-repeat: $(STAMP)  ## `make test` over and over in fresh clones: ARGS="--runs 10 --hog"
	$(BIN)/python -m tools.repeat_suite $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

mutate: $(STAMP)  ## mutation testing of the money-critical modules (slow; not in `make test`)
	$(BIN)/python -m tools.mutate $(ARGS)
