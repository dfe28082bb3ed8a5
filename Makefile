# Perseus: everything a newcomer needs is `make demo` and `make test`.
# Both create their own virtualenv in .venv with the interpreter named by PYTHON.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint snapshots screenshots bench clean

# Two stamps: the demo needs only the runtime (a newcomer's first paint should
# not wait for pytest, mypy and ruff); everything else adds the dev tools.
$(BIN)/.runtime: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Perseus needs Python 3.11+; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: $(BIN)/.runtime
	$(BIN)/perseus demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

snapshots: $(BIN)/.installed
	$(BIN)/pytest tests/tui --snapshot-update

screenshots: $(BIN)/.installed
	$(BIN)/python -m perseus_cli.apps.screenshots screenshots

bench: $(BIN)/.installed
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
