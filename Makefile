# One command to install and run the quickstart, one to install and run the tests.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: install system-packages quickstart test benchmark clean

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
SYSTEM_PACKAGES := gcc-aarch64-linux-gnu

install: $(VENV)/.installed system-packages

# Debian packages the project needs: the AArch64 cross compiler (edge-arm builds).
system-packages:
	@command -v aarch64-linux-gnu-gcc >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); }

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

quickstart: install
	$(PYTHON) -m dlas_dse optimize --study quickstart

test: install
	$(PYTHON) -m pytest -v

benchmark: install
	$(PYTHON) benchmarks/quickstart.py

clean:
	rm -rf $(VENV) results
