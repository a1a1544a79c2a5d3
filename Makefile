# One command to install and run the quickstart, one to install and run the tests.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: install system-packages test-system-packages board-system-packages edge-board quickstart test benchmark clean

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

install: $(VENV)/.installed system-packages

# $(call apt_install,COMMAND,PACKAGE): install the Debian PACKAGE unless COMMAND is already there.
apt_install = @command -v $(1) >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(2); }

# Debian packages the project needs: the AArch64 cross compiler (edge-arm builds) ...
system-packages:
	$(call apt_install,aarch64-linux-gnu-gcc,gcc-aarch64-linux-gnu)

# ... for the tests, a headless browser that loads the dashboard ...
test-system-packages: board-system-packages
	$(call apt_install,chromium,chromium)

# ... and the emulated AArch64 board: QEMU user-mode emulation, binfmt_misc, a Debian root builder.
board-system-packages:
	@{ command -v qemu-aarch64-static && { command -v debootstrap || test -x /usr/sbin/debootstrap; } \
	   && command -v update-binfmts; } >/dev/null || { $(SUDO) apt-get update -qq \
	   && $(SUDO) apt-get install -y -qq qemu-user-static debootstrap binfmt-support; }

# An emulated AArch64 board (Debian arm64 root with TVM, run under QEMU), built once and reused.
edge-board: install board-system-packages
	$(SUDO) $(PYTHON) -m dlas_dse board build

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	@# ask LLVM about this CPU once (cached per CPU), so that `list` and `grid --dry-run` need not import TVM
	$(PYTHON) -m dlas_dse devices >/dev/null
	touch $@

quickstart: install
	$(PYTHON) -m dlas_dse optimize --study quickstart

test: install test-system-packages
	$(PYTHON) -m pytest -v

benchmark: install
	$(PYTHON) benchmarks/quickstart.py

clean:
	rm -rf $(VENV) results
