# Wirewatch developer tasks. The virtual environment is created and filled on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv

venv: $(STAMP)

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) scripts/demo.py

test: $(STAMP)
	$(VPY) -m pytest

lint: $(STAMP)
	$(VPY) -m ruff check .
