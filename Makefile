# Wirewatch developer tasks. The virtual environment is created and filled on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNELS_STAMP := $(VENV)/.kernels
# The sources appliance.jit fingerprints; a change to one makes the prebuilt module stale.
KERNEL_SOURCES := $(wildcard appliance/decode/*.py appliance/flows/*.py appliance/pcapio/*.py \
	appliance/live/*.py) appliance/jit.py appliance/build_kernels.py

.PHONY: demo test lint venv

venv: $(KERNELS_STAMP)

# Reinstall when the dependencies change.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Compile the packet-path kernels ahead of time (appliance/_kernels*.so), so that
# 'wirewatch capture' starts without importing numba.
# Without a C compiler the build fails, and the capture commands compile with numba's JIT.
$(KERNELS_STAMP): $(STAMP) $(KERNEL_SOURCES)
	$(VPY) -m appliance.build_kernels || echo "warning: the prebuilt kernels were not built;" \
		"capture commands will compile with numba's JIT" >&2
	touch $(KERNELS_STAMP)

demo: $(KERNELS_STAMP)
	$(VPY) scripts/demo.py

test: $(KERNELS_STAMP)
	$(VPY) -m pytest

lint: $(STAMP)
	$(VPY) -m ruff check .
