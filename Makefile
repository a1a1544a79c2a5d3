# One command to install and run the quickstart, one to install and run the tests.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: install quickstart test benchmark clean

install: $(VENV)/.installed

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
