# The two commands of the README: `make demo` runs TaskSync, `make test` runs every test.
# Both set up what they need on a fresh machine.

VENV ?= .venv
PYTHON ?= python3

.PHONY: demo test venv bench soak

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/tasksync serve --dev

test:
	bash scripts/test.sh
