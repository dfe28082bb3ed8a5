# Perseus: everything a newcomer needs is `make demo` and `make test`.
# Both create their own virtualenv in .venv with the interpreter named by PYTHON.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit checks lint snapshots screenshots bench clean

# Python caches compiled modules in __pycache__ even where the environment asks
# it not to: the suite starts hundreds of `perseus` processes and four workers,
# and without the cache each compiles the project's sources (and pytest
# rewrites every test module) again, a sixth of the suite's CPU.
unexport PYTHONDONTWRITEBYTECODE

# pytest-xdist workers; the suite waits on real Redis and real processes more
# than it computes, so a couple of workers per core keeps both cores busy.
JOBS ?= 4

# Two stamps: the demo needs only the application (the library plus the `app`
# extra: a newcomer's first paint should not wait for pytest, mypy and ruff);
# everything else installs the dev tools, which include the `app` extra, in
# one pip run (a second run resolves and builds Perseus again: seconds), and
# so stands for the demo's stamp too.
define NEW_VENV
@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Perseus needs Python 3.11+; run make PYTHON=python3.11 ...")'
$(PYTHON) -m venv $(VENV)
endef

# pip installs uv, and uv installs Perseus: about 6 s on a fresh clone where
# pip alone took 28 s (a quarter of `make test` on two cores). Where uv has no
# wheel or cannot reach the index, pip does it all, as before. Both compile
# bytecode as they install (uv when asked to), and compileall does the
# checkout's own modules: otherwise the suite's first processes (four workers
# and the agents they start) each compile the same modules at once.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
define INSTALL
$(PIP) uv && $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '$(1)' \
	|| $(PIP) -e '$(1)'
$(BIN)/python -m compileall -q -j 0 perseus_core perseus_tui perseus_cli tests bench
endef

$(BIN)/.runtime: pyproject.toml
	$(NEW_VENV)
	$(call INSTALL,.[app])
	@touch $@

$(BIN)/.installed: pyproject.toml
	$(NEW_VENV)
	$(call INSTALL,.[dev])
	@touch $(BIN)/.runtime $@

# The demo installs `perseus` into the virtualenv, which is not on PATH: say
# how to reach it afterwards (unless a `perseus` already is on PATH).
PATH_HINT = perseus is $(BIN)/perseus; to have it on your PATH, run: . $(BIN)/activate \
	(or install it for good: pipx install 'perseus-network[app]')

demo: $(BIN)/.runtime
	@$(BIN)/perseus demo; status=$$?; \
	command -v perseus >/dev/null 2>&1 || echo "$(PATH_HINT)"; \
	exit $$status

# The checks that take a second; `lint` adds mypy, `test` runs mypy beside the suite.
checks: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

lint: checks
	$(BIN)/mypy

# The whole suite on the redis-server found (README: "Which Redis the tests
# run on"), and beside it the version-dependent tests on the other major (6.2
# or 7.x; tests/other_major.py) on a worker and ports of their own: they
# mostly wait for clusters and failovers, so side by side they cost the suite
# a few seconds where one after the other they took 15-17 s. (Measured on a
# fresh clone, quiet: 172 s one after the other, 161 s beside it on two
# workers, 157 s on one; the suite on three workers instead of four, 174 s.)
#
# mypy (10 s of one core on a fresh clone, with no cache) checks the types
# beside them too. What the other two found is printed after the suite, and
# any of the three failing fails `make test`.
test: checks
	@echo "$(BIN)/mypy and the other major's tests (beside the suite)"; \
	$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & mypy=$$!; \
	$(BIN)/python -m tests.other_major -n 1 --dist loadgroup > $(VENV)/other_major.out 2>&1 & other=$$!; \
	$(BIN)/pytest -n $(JOBS) --dist loadgroup; suite=$$?; \
	wait $$mypy; typed=$$?; wait $$other; majors=$$?; \
	cat $(VENV)/mypy.out $(VENV)/other_major.out; \
	[ $$suite -eq 0 ] && [ $$typed -eq 0 ] && [ $$majors -eq 0 ]

# The pure-logic tests alone (no Redis, no processes): seconds, for a quick loop.
unit: $(BIN)/.installed
	$(BIN)/pytest -m unit -n 2

snapshots: $(BIN)/.installed
	$(BIN)/pytest tests/tui --snapshot-update

screenshots: $(BIN)/.installed
	$(BIN)/python -m perseus_cli.apps.screenshots screenshots

bench: $(BIN)/.installed
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
