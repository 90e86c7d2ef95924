# The two commands: `make demo` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml setup.py tycoon/bus/_batchverify.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A fresh market every time (a resumed one would find its agents done).
demo: $(STAMP)
	rm -rf .tycoon-demo
	$(BIN)/tycoon up --duration 60 --hosts 4 --agents 3 --state .tycoon-demo

# Three pytest-xdist workers on two cores: most of a test's time is spent waiting on servers
# and subprocesses. Tests that must not overlap share an xdist_group (loadgroup runs a group
# on one worker, one test at a time). `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

# Pure tests only: no nats-server, no cgroups, nothing slow (~54 s on a shared 2-core VM).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not nats and not cgroups and not slow and not faults and not hostile"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for b in bus bank auctioneer sls best_response agent sim bundles; do \
		$(BIN)/python benchmarks/$$b.py || exit 1; done
	$(BIN)/python benchmarks/scale.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .tycoon-demo
