# The two commands of the README: `make demo` runs TaskSync, `make test` runs every test.
# Both set up what they need on a fresh machine.

VENV ?= .venv
PYTHON ?= python3

.PHONY: demo test venv bench soak image image-archive lock lock-upgrade test-lowest

# The locked versions (requirements/lock.txt, hashes checked), then TaskSync itself with nothing
# resolved again; pyproject.toml keeps the ranges, for whoever installs the package.
$(VENV)/.installed: requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -r requirements/lock.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/pip check
	touch $@

venv: $(VENV)/.installed

# requirements/lock.txt and requirements/lowest.txt again from pyproject.toml's ranges (uv);
# lock-upgrade also moves every pin to the newest version the ranges allow.
lock:
	bash scripts/lock.sh
lock-upgrade:
	bash scripts/lock.sh --upgrade

# The transport, slow-consumer and stall tests at the lowest versions pyproject.toml allows
# (make test runs them too).
test-lowest:
	bash scripts/test-lowest.sh

# The demo needs TaskSync's runtime packages only, not the test and benchmark extras of `venv`;
# when `make test` has installed those already, this finds everything in place.
DEMO_INSTALLED = $(VENV)/.installed-runtime
# make demo PORT=8006 when 8005 is taken.
PORT ?= 8005

$(DEMO_INSTALLED): pyproject.toml
	@echo "make demo: installing TaskSync's runtime packages into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --progress-bar on -e .
	touch $@

# The server prints the demo's address once it listens; Ctrl-C stops it at once.
demo: $(DEMO_INSTALLED)
	bash scripts/ensure-web-deps.sh
	$(VENV)/bin/tasksync serve --dev --port $(PORT)

test:
	bash scripts/test.sh

# The static checks: ruff and mypy (pyproject.toml), the web client's ESLint and tsc. `make test`
# runs them first; scripts/lint.sh says which failed.
.PHONY: lint
lint: venv
	bash scripts/ensure-web-deps.sh
	bash scripts/lint.sh

# The loop while editing: the unit and service tests, with only the Python packages of `venv`
# (no apt, Go, Chromium or helm; no Redis either), one pytest worker per core: most of their time
# is tasksync processes starting and stopping, which overlap well. tests/plugins needs nothing
# more but would take the run past two minutes on two cores: run it by path when a change
# touches plugins.
.PHONY: test-fast
test-fast: venv
	$(VENV)/bin/python -m pytest tests/unit tests/service -q -n auto

# Benchmarks against real peers: about 14 minutes; rewrites bench/results and the
# results block of docs/performance.md.
bench: venv
	$(VENV)/bin/python -m bench.run

# The reliability suite's long soak (minutes, not CI's seconds).
soak: venv
	TASKSYNC_SOAK_SECONDS=$${TASKSYNC_SOAK_SECONDS:-300} $(VENV)/bin/python -m pytest tests/reliability/test_soak.py -s

# The container image ghcr.io/tasksync/tasksync:<version> (Containerfile), built with podman, also
# on a machine with no container registry (docs/operations.md, "Building the image");
# image-archive also saves it as an OCI archive for containerd and prints where.
image: venv
	bash scripts/image/build.sh
image-archive: venv
	bash scripts/image/build.sh --oci-archive
