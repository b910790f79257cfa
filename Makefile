# The two commands of the README, and the pieces they are made of.
#   make run    set up, start the sandbox tenant and Azurite, run the sweep and a provisioning batch, stop both
#   make test   set up, then ruff, mypy and pytest (which first makes sure Debian's chromium is installed)

PYTHON ?= python3
# A shell that sets PYTHONDONTWRITEBYTECODE makes every process (each xdist worker, each `exoprov` the tests
# start) compile the project from source and pytest rewrite every test module again: about 25 s of CPU per
# suite. The caches land in __pycache__/, which git ignores.
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE   := node_modules/.installed

.PHONY: setup run test lint typecheck pytest durations chromium bench sandbox clean

setup: $(STAMP) $(NODE)

# Reinstall whenever a dependency list changes; the stamp keeps repeated runs fast.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("exoprov needs Python 3.11 or 3.12, found " + sys.version.split()[0]) if sys.version_info[:2] not in ((3, 11), (3, 12)) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Azurite (the storage emulator) for the queues, pinned in package-lock.json; runs on Node 20.
$(NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run:
	@$(MAKE) --no-print-directory -j2 setup
	$(BIN)/python -m sandbox.demo

# Python's packages, Azurite's and the chromium check install side by side, and the linters and the type check run as
# soon as Python's are in (a fresh clone: about 15 s less than one after the other); then the suite, alone, with its
# output live. `run` and `test` each call make again: name one of them per `make -j` command, or both install at once.
test:
	@$(MAKE) --no-print-directory -j4 lint typecheck $(NODE) chromium
	@$(MAKE) --no-print-directory pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# Twelve processes on two cores: much of the suite waits (leases, deadlines, subprocess workers), so more of them
# overlap. They share two Azurites, an account each (tests/storage_accounts.py), so a process more costs only its
# start and collection (about 1 s of CPU). Measured on 2 cores (pytest alone, in the order of tests/durations.py):
# 10 processes 85 s, 11 79 to 80 s, 12 77 to 78 s, 13 78 to 85 s, 14 87 s.
# loadgroup, not load: the browser tests share one Chromium on one worker (xdist_group "chromium");
# --no-loadscope-reorder keeps the order of tests/durations.py.
pytest: setup chromium
	$(BIN)/pytest -n 12 --dist loadgroup --no-loadscope-reorder

# The suite once more, writing each long test's seconds and CPU seconds to tests/durations.json: the next runs start
# the long ones first, busy and waiting ones in turn (see tests/durations.py). Worth it after adding or renaming long
# tests; commit the file.
durations: setup chromium
	$(BIN)/pytest -n 12 --dist loadgroup --no-loadscope-reorder --record-durations

# The readiness page tests open the page in Debian's chromium (Playwright's browser download is not reachable).
# A cheap check when it is there; installs it with apt-get (as root or by sudo -n) when not. Not needed by `make run`.
chromium:
	@scripts/ensure-chromium

# Benchmarks against the sandbox (about 10 minutes; the serial pipeline is the slow part).
# Not part of `make test`: it measures, it does not assert. Writes bench/RESULTS.md.
bench: setup
	$(BIN)/python -m bench.run

sandbox: $(STAMP)
	$(BIN)/exoprov sandbox

clean:
	rm -rf $(VENV) node_modules .run build *.egg-info .mypy_cache .ruff_cache .pytest_cache
