# The two commands of the README: `make demo` runs TaskSync, `make test` runs every test.
# Both set up what they need on a fresh machine.

VENV ?= .venv
PYTHON ?= python3

.PHONY: demo test venv bench soak image image-archive

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	bash scripts/ensure-web-deps.sh
	@echo "TaskSync demo: http://127.0.0.1:8005/?user_id=alice (two tabs; ?user_id=bob for another user)"
	$(VENV)/bin/tasksync serve --dev

test:
	bash scripts/test.sh

# Benchmarks against real peers (issue 8): about 14 minutes; rewrites bench/results and the
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
